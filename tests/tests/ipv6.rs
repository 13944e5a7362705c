//! IPv6 over UDP against the real `icebreaker serve` listening on `[::1]`: coturn's
//! `turnutils_uclient` relaying to `turnutils_peer` on `::1`, a STUN Binding from an IPv6
//! socket, an Allocate that yields an IPv6 relayed address and relays both ways, and the peer
//! address policy on IPv6 spellings of loopback.
//!
//! A host without IPv6 on its loopback interface skips these tests (fails them under
//! `ICEBREAKER_REQUIRE_TOOLS`, which `scripts/test` sets), as does a missing coturn tool.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use icebreaker_ice::turn_client::{TurnClient, TurnClientConfig, TurnError, TurnEvent, TurnTiming};
use icebreaker_tests::{
    Server, TurnutilsPeer, UclientStats, have_tool, metric_reaching, missing, run_tool,
};
use icebreaker_wire::attr::XorMappedAddress;
use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method, TransactionId};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Longest uclient may run. Its runs take 4 to 7 seconds on loopback.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);
/// uclient clients (`-m`) and messages per client (`-n`), and the length of each message.
const CLIENTS: u64 = 4;
const MESSAGES: u64 = 50;
const LENGTH: u64 = 100;
/// Longest a STUN or TURN exchange may take on loopback, retransmissions included.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// What a relayed datagram may take to arrive on loopback.
const DATAGRAM_WAIT: Duration = Duration::from_secs(5);

const LOCALHOST: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A port free on `[::1]` a moment ago, or `None` (reported) when the host has no IPv6 on
/// its loopback interface.
fn free_ipv6_port() -> Option<u16> {
    match UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).and_then(|s| s.local_addr()) {
        Ok(addr) => Some(addr.port()),
        Err(e) => {
            missing("IPv6 on loopback", &format!("cannot bind [::1]: {e}"));
            None
        }
    }
}

/// A server on `[::1]` with user alice and `extra` flags, or `None` without IPv6.
fn ipv6_server(extra: &[&str]) -> Option<Server> {
    let port = free_ipv6_port()?;
    let mut flags = vec!["--user", "alice:secret"];
    flags.extend_from_slice(extra);
    Some(Server::start_on(SocketAddr::new(LOCALHOST, port), &flags))
}

/// Runs uclient in `mode` through `server` to `peer` on `::1`, and checks that every message
/// came back, over IPv6 relayed addresses, and that the server relayed each one.
fn uclient_relays_over_ipv6_without_loss(mode: &[&str]) {
    if !(have_tool("turnutils_uclient") && have_tool("turnutils_peer")) {
        return;
    }
    // uclient draws channel numbers from RFC 5766's range, and each client also makes and
    // deletes a probe allocation.
    let Some(server) = ipv6_server(&[
        "--allow-peer",
        "::1/128",
        "--allow-peer",
        "127.0.0.0/8",
        "--user-quota",
        "100",
        "--rfc5766-channels",
    ]) else {
        return;
    };
    let peer = TurnutilsPeer::start_on(LOCALHOST);
    let (clients, messages, length) = (
        CLIENTS.to_string(),
        MESSAGES.to_string(),
        LENGTH.to_string(),
    );
    let (peer_ip, peer_port) = (peer.ip.to_string(), peer.port.to_string());
    let server_port = server.addr.port().to_string();
    let mut args = vec!["-v"];
    args.extend_from_slice(mode);
    args.extend_from_slice(&[
        "-u",
        "alice",
        "-w",
        "secret",
        "-m",
        &clients,
        "-n",
        &messages,
        "-l",
        &length,
        "-e",
        &peer_ip,
        "-r",
        &peer_port,
        "-p",
        &server_port,
        "::1",
    ]);
    let ran = run_tool("turnutils_uclient", &args, TOOL_DEADLINE);
    let out = &ran.output;
    assert!(
        ran.success,
        "turnutils_uclient {mode:?} exited with {:?}:\n{out}",
        ran.code
    );
    let expected = CLIENTS * MESSAGES;
    assert_eq!(
        UclientStats::parse(out),
        UclientStats {
            sent: expected,
            received: expected,
            sent_bytes: expected * LENGTH,
            received_bytes: expected * LENGTH,
            lost: 0,
            send_dropped: 0,
        },
        "uclient {mode:?}:\n{out}"
    );
    // -v prints `IPv6. Received relay addr: ::1:PORT` for every allocation.
    let relays: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once("Received relay addr: "))
        .map(|(_, addr)| addr.trim())
        .collect();
    assert!(relays.len() >= CLIENTS as usize, "{out}");
    assert!(relays.iter().all(|a| a.starts_with("::1:")), "{out}");
    let to_peer = r#"icebreaker_turn_relayed_packets_total{direction="client_to_peer"}"#;
    let to_client = r#"icebreaker_turn_relayed_packets_total{direction="peer_to_client"}"#;
    for series in [to_peer, to_client] {
        let want = expected as f64;
        assert_eq!(metric_reaching(&server, series, want), want, "{series}");
    }
}

#[test]
fn uclient_relays_channel_data_over_ipv6_without_loss() {
    uclient_relays_over_ipv6_without_loss(&["-c"]);
}

#[test]
fn uclient_relays_send_indications_with_an_ipv6_relay_requested_without_loss() {
    // -x asks for an IPv6 relayed address with REQUESTED-ADDRESS-FAMILY.
    uclient_relays_over_ipv6_without_loss(&["-c", "-s", "-x"]);
}

#[test]
fn uclient_relays_over_tcp_on_ipv6_without_loss() {
    uclient_relays_over_ipv6_without_loss(&["-t", "-c"]);
}

#[test]
fn binding_from_ipv6_gets_the_socket_address_as_xor_mapped_address() {
    let Some(server) = ipv6_server(&[]) else {
        return;
    };
    let socket = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind [::1]");
    let local = socket.local_addr().expect("local address");
    socket
        .set_read_timeout(Some(Duration::from_millis(250)))
        .expect("read timeout");
    let id = TransactionId::new(*b"ipv6-binding");
    let mut request = [0u8; 64];
    let kind = MessageType::new(Method::BINDING, Class::Request);
    let mut writer = MessageWriter::new(&mut request, kind, id).expect("header fits");
    writer.add_fingerprint().expect("fingerprint fits");
    let len = writer.finish();

    let deadline = Instant::now() + EXCHANGE_DEADLINE;
    let mut buf = [0u8; 1500];
    let response = loop {
        assert!(
            Instant::now() < deadline,
            "no Binding response from {}",
            server.addr
        );
        // Retransmitted every 250 ms: a loopback datagram is not lost, but nothing is owed.
        socket.send_to(&request[..len], server.addr).expect("send");
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && from == server.addr
            && buf.get(8..20) == Some(&id.as_bytes()[..])
        {
            break &buf[..n];
        }
    };
    let message = Message::parse(response).expect("a STUN message");
    assert_eq!(message.class(), Class::Success);
    assert_eq!(message.method(), Method::BINDING);
    message.verify_fingerprint().expect("the request had one");
    assert_eq!(
        message.get::<XorMappedAddress>().expect("well formed"),
        Some(XorMappedAddress(local))
    );
    let bindings = r#"icebreaker_stun_binding_requests_total{transport="udp",family="ipv6"}"#;
    assert!(metric_reaching(&server, bindings, 1.0) >= 1.0);
}

/// A [`TurnClient`] driven over a blocking UDP socket with real time.
struct Turn {
    client: TurnClient,
    socket: UdpSocket,
    rng: ChaCha20Rng,
    /// Data peers sent through the relay: the peer and the bytes.
    received: Vec<(SocketAddr, Vec<u8>)>,
}

impl Turn {
    /// A client of `server` on a fresh `[::1]` socket, with user alice, retransmitting at
    /// 100 ms so that a loopback exchange never waits long.
    fn new(server: SocketAddr, seed: u64) -> Turn {
        let mut config = TurnClientConfig::new(server, "alice", "secret");
        config.timing = TurnTiming {
            initial_rto: Duration::from_millis(100),
            max_retransmits: 5,
        };
        Turn {
            client: TurnClient::new(config),
            socket: UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind [::1]"),
            rng: ChaCha20Rng::seed_from_u64(seed),
            received: Vec::new(),
        }
    }

    /// Drives the client until an event `wanted` matches, within [`EXCHANGE_DEADLINE`].
    fn until(&mut self, wanted: impl Fn(&TurnEvent) -> bool) -> TurnEvent {
        let deadline = Instant::now() + EXCHANGE_DEADLINE;
        loop {
            while let Some(event) = self.client.poll_event() {
                if wanted(&event) {
                    return event;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no awaited event within {EXCHANGE_DEADLINE:?}; client {:?}",
                self.client.state()
            );
            self.step(deadline);
        }
    }

    /// Sends what the client has to send, then waits for one datagram from the server or the
    /// client's next timer, but not past `deadline`.
    fn step(&mut self, deadline: Instant) {
        let server = self.client.server();
        while let Some(datagram) = self.client.poll_transmit() {
            self.socket.send_to(&datagram, server).expect("send");
        }
        let wake = self
            .client
            .poll_timeout()
            .map_or(deadline, |at| at.min(deadline));
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 2048];
        match self.socket.recv_from(&mut buf) {
            Ok((len, from)) if from == server => {
                let now = Instant::now();
                if let Some(data) = self.client.handle_input(now, &mut self.rng, &buf[..len]) {
                    self.received.push((data.peer, data.data.to_vec()));
                }
            }
            Ok(_) => {}
            Err(_) => self.client.handle_timeout(Instant::now(), &mut self.rng),
        }
    }

    /// Allocates: the relayed and mapped addresses.
    fn allocate(&mut self) -> (SocketAddr, Option<SocketAddr>) {
        self.client.allocate(Instant::now(), &mut self.rng);
        match self.until(|e| {
            matches!(
                e,
                TurnEvent::Allocated { .. } | TurnEvent::AllocationFailed(_)
            )
        }) {
            TurnEvent::Allocated {
                relayed, mapped, ..
            } => (relayed, mapped),
            other => panic!("Allocate over IPv6 failed: {other:?}"),
        }
    }

    /// Asks for a permission for `peer` and waits for the answer.
    fn create_permission(&mut self, peer: SocketAddr) -> Result<(), TurnError> {
        self.client
            .create_permission(Instant::now(), &mut self.rng, peer);
        let ip = peer.ip();
        match self.until(|e| match e {
            TurnEvent::PermissionCreated(created) => *created == ip,
            TurnEvent::PermissionFailed { peer, .. } => *peer == ip,
            _ => false,
        }) {
            TurnEvent::PermissionFailed { error, .. } => Err(error),
            _ => Ok(()),
        }
    }

    /// Sends `data` to `peer` through the relay.
    fn send_to(&mut self, peer: SocketAddr, data: &[u8]) {
        let datagram = self.client.send_to(peer, data).expect("a permission");
        self.socket
            .send_to(&datagram, self.client.server())
            .expect("send");
    }

    /// Waits for data from a peer, within [`DATAGRAM_WAIT`].
    fn receive(&mut self) -> (SocketAddr, Vec<u8>) {
        let deadline = Instant::now() + DATAGRAM_WAIT;
        while self.received.is_empty() {
            assert!(Instant::now() < deadline, "no data through the relay");
            self.step(deadline);
        }
        self.received.remove(0)
    }
}

#[test]
fn allocate_over_ipv6_relays_on_an_ipv6_address_both_ways() {
    let Some(server) = ipv6_server(&["--allow-peer", "::1/128", "--allow-peer", "127.0.0.0/8"])
    else {
        return;
    };
    let mut turn = Turn::new(server.addr, 1);
    let (relayed, mapped) = turn.allocate();
    assert!(relayed.is_ipv6(), "relayed address {relayed}");
    assert_eq!(relayed.ip(), LOCALHOST, "relayed address {relayed}");
    assert_ne!(relayed.port(), 0);
    assert_eq!(mapped, Some(turn.socket.local_addr().expect("local")));

    let peer = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind the peer");
    peer.set_read_timeout(Some(DATAGRAM_WAIT))
        .expect("read timeout");
    let peer_addr = peer.local_addr().expect("peer address");
    turn.create_permission(peer_addr)
        .expect("::1 is allowed by --allow-peer");

    turn.send_to(peer_addr, b"to the peer over IPv6");
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("data from the relay");
    assert_eq!(&buf[..n], b"to the peer over IPv6");
    assert_eq!(from, relayed, "the peer hears the relayed address");

    peer.send_to(b"back to the client", relayed)
        .expect("send to the relay");
    assert_eq!(turn.receive(), (peer_addr, b"back to the client".to_vec()));
}

#[test]
fn ipv6_spellings_of_loopback_are_refused_as_peers() {
    // No --allow-peer at all: the defaults decide.
    let Some(server) = ipv6_server(&[]) else {
        return;
    };
    let mut turn = Turn::new(server.addr, 2);
    let (relayed, _) = turn.allocate();
    assert!(relayed.is_ipv6(), "relayed address {relayed}");
    // Port 53: a local DNS resolver, the kind of service a relay must not reach.
    let loopback: [IpAddr; 3] = [
        LOCALHOST,
        "::ffff:127.0.0.1".parse().expect("literal"),
        "64:ff9b::7f00:1".parse().expect("literal"),
    ];
    for ip in loopback {
        let refused = turn.create_permission(SocketAddr::new(ip, 53));
        assert_eq!(
            refused.as_ref().map_err(TurnError::code),
            Err(Some(403)),
            "CreatePermission to {ip}: {refused:?}"
        );
    }
    let denied = r#"icebreaker_turn_peer_denied_total{reason="loopback"}"#;
    assert_eq!(metric_reaching(&server, denied, 3.0), 3.0);

    // Another allocation's relayed address on ::1 is a peer like any other.
    let mut other = Turn::new(server.addr, 3);
    let (other_relayed, _) = other.allocate();
    turn.create_permission(other_relayed)
        .expect("another allocation on the same server is allowed");
}
