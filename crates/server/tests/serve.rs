//! `icebreaker serve` end to end on loopback: the real binary, a STUN Binding, a TURN allocation
//! relaying to a UDP echo peer over Send/Data indications and over a channel, metrics, and a
//! drain on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::Server;

use icebreaker_wire::attr::{
    Data, ErrorCodeAttribute, Lifetime, Nonce, Realm, RequestedTransport, Username,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::{
    ChannelData, ChannelNumber, Class, ErrorCode, IntegrityKey, Message, MessageType,
    MessageWriter, Method, TransactionId, Transport, write_channel_data,
};

/// A client socket. Every exchange here expects an answer, which on loopback is lost only if
/// the server drops it: the generous wait only lets a machine loaded by other tests be slow.
fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn tid(n: u8) -> TransactionId {
    TransactionId::new([n; 12])
}

fn exchange(socket: &UdpSocket, to: SocketAddr, request: &[u8]) -> Vec<u8> {
    socket.send_to(request, to).expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer");
    buf[..n].to_vec()
}

/// A TURN client with long-term credentials.
struct TurnClient {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
    next: u8,
}

impl TurnClient {
    fn key(&self) -> IntegrityKey {
        IntegrityKey::long_term(
            KeyAlgorithm::Md5,
            &self.username,
            &self.realm,
            &self.password,
        )
    }

    /// Sends a signed request and returns the answer's bytes, whatever it says.
    fn send_signed(&mut self, method: Method, add: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        self.next += 1;
        let mut buf = [0u8; 1024];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(method, Class::Request),
            tid(self.next),
        )
        .expect("fits");
        add(&mut w);
        w.add(&Username(&self.username)).expect("fits");
        w.add(&Realm(&self.realm)).expect("fits");
        w.add(&Nonce(&self.nonce)).expect("fits");
        w.add_message_integrity(&self.key()).expect("fits");
        w.add_fingerprint().expect("fits");
        let len = w.finish();
        exchange(&self.socket, self.server, &buf[..len])
    }

    /// Sends a signed request and asserts a signed success.
    fn request(&mut self, method: Method, add: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        let reply = self.send_signed(method, add);
        let message = Message::parse(&reply).expect("a STUN answer");
        assert_eq!(message.class(), Class::Success, "{message:?}");
        message
            .verify_message_integrity(&self.key())
            .expect("signed");
        reply
    }

    /// Allocates as `username`, answering the 401 challenge: the client and its relayed
    /// address, or the error code of the signed Allocate.
    fn try_connect(
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Result<(TurnClient, SocketAddr), ErrorCode> {
        let socket = socket();
        let mut buf = [0u8; 256];
        let request = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut w = MessageWriter::new(&mut buf, request, tid(1)).expect("fits");
        w.add(&RequestedTransport::UDP).expect("fits");
        let len = w.finish();
        let challenge = exchange(&socket, server, &buf[..len]);
        let challenge = Message::parse(&challenge).expect("STUN");
        let code = challenge
            .get::<ErrorCodeAttribute>()
            .expect("valid")
            .map(|e| e.code);
        assert_eq!(code, Some(ErrorCode::UNAUTHENTICATED));
        let mut client = TurnClient {
            socket,
            server,
            username: username.into(),
            password: password.into(),
            realm: challenge
                .get::<Realm>()
                .expect("valid")
                .expect("REALM")
                .0
                .into(),
            nonce: challenge
                .get::<Nonce>()
                .expect("valid")
                .expect("NONCE")
                .0
                .into(),
            next: 1,
        };
        let reply = client.send_signed(Method::ALLOCATE, |w| {
            w.add(&RequestedTransport::UDP).expect("fits")
        });
        let message = Message::parse(&reply).expect("STUN");
        if let Some(error) = message.get::<ErrorCodeAttribute>().expect("valid") {
            return Err(error.code);
        }
        message
            .verify_message_integrity(&client.key())
            .expect("signed");
        let relayed = message
            .get::<XorRelayedAddress>()
            .expect("valid")
            .expect("XOR-RELAYED-ADDRESS")
            .0;
        Ok((client, relayed))
    }

    fn connect(server: SocketAddr, username: &str, password: &str) -> (TurnClient, SocketAddr) {
        TurnClient::try_connect(server, username, password)
            .unwrap_or_else(|code| panic!("Allocate as {username} failed with {code}"))
    }
}

#[test]
fn stun_binding_reports_the_mapped_address() {
    let server = Server::start(&["--user", "alice:secret"]);
    let client = socket();
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid(9),
    )
    .expect("fits");
    w.add_fingerprint().expect("fits");
    let len = w.finish();
    let reply = exchange(&client, server.addr, &buf[..len]);
    let message = Message::parse(&reply).expect("STUN");
    assert_eq!(message.class(), Class::Success);
    assert_eq!(
        message.get::<XorMappedAddress>(),
        Ok(Some(XorMappedAddress(client.local_addr().expect("bound"))))
    );
    message
        .verify_fingerprint()
        .expect("FINGERPRINT mirrors the request");
}

#[test]
fn turn_relays_to_a_peer_over_indications_and_a_channel() {
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let peer = icebreaker_tests::echo_peer([127, 0, 0, 1]);
    let (mut alice, relayed) = TurnClient::connect(server.addr, "alice", "secret");
    assert_eq!(relayed.ip(), server.addr.ip());

    alice.request(Method::CREATE_PERMISSION, |w| {
        w.add(&XorPeerAddress(peer)).expect("fits")
    });
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::SEND, Class::Indication),
        tid(50),
    )
    .expect("fits");
    w.add(&XorPeerAddress(peer)).expect("fits");
    w.add(&Data(b"hello through the relay")).expect("fits");
    let len = w.finish();
    let echoed = exchange(&alice.socket, server.addr, &buf[..len]);
    let data = Message::parse(&echoed).expect("a Data indication");
    assert_eq!(
        (data.method(), data.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(data.get::<XorPeerAddress>(), Ok(Some(XorPeerAddress(peer))));
    assert_eq!(
        data.get::<Data>(),
        Ok(Some(Data(b"hello through the relay")))
    );

    let channel = ChannelNumber::new(0x4001).expect("range");
    alice.request(Method::CHANNEL_BIND, |w| {
        w.add(&channel).expect("fits");
        w.add(&XorPeerAddress(peer)).expect("fits");
    });
    for i in 0..20u8 {
        let payload = [i; 100];
        let mut frame = [0u8; 128];
        let n =
            write_channel_data(&mut frame, channel, &payload, Transport::Datagram).expect("fits");
        let echoed = exchange(&alice.socket, server.addr, &frame[..n]);
        let parsed = ChannelData::parse(&echoed).expect("ChannelData back");
        assert_eq!((parsed.channel(), parsed.data()), (channel, &payload[..]));
    }

    assert!(server.metric("icebreaker_turn_allocations_created_total") >= 1.0);
    for direction in ["client_to_peer", "peer_to_client"] {
        let series = format!("icebreaker_turn_relayed_packets_total{{direction=\"{direction}\"}}");
        assert!(server.metric(&series) >= 21.0, "{series}");
    }

    let reply = alice.request(Method::REFRESH, |w| w.add(&Lifetime(0)).expect("fits"));
    assert_eq!(
        Message::parse(&reply).expect("STUN").get::<Lifetime>(),
        Ok(Some(Lifetime(0)))
    );
}

#[test]
fn loopback_peers_are_refused_by_default() {
    let server = Server::start(&["--user", "alice:secret"]);
    let peer = icebreaker_tests::echo_peer([127, 0, 0, 1]);
    let (mut alice, _) = TurnClient::connect(server.addr, "alice", "secret");
    alice.next += 1;
    let mut buf = [0u8; 512];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::CREATE_PERMISSION, Class::Request),
        tid(alice.next),
    )
    .expect("fits");
    w.add(&XorPeerAddress(peer)).expect("fits");
    w.add(&Username("alice")).expect("fits");
    w.add(&Realm(&alice.realm)).expect("fits");
    w.add(&Nonce(&alice.nonce)).expect("fits");
    w.add_message_integrity(&alice.key()).expect("fits");
    let len = w.finish();
    let reply = exchange(&alice.socket, server.addr, &buf[..len]);
    let message = Message::parse(&reply).expect("STUN");
    assert_eq!(
        message
            .get::<ErrorCodeAttribute>()
            .expect("valid")
            .map(|e| e.code),
        Some(ErrorCode::FORBIDDEN)
    );
    assert!(server.metric("icebreaker_turn_peer_denied_total{reason=\"loopback\"}") >= 1.0);
}

#[test]
fn no_arguments_means_a_generated_user_that_works() {
    let server = Server::start(&[]);
    let line = server
        .banner
        .iter()
        .find(|l| l.starts_with("user: icebreaker"))
        .expect("the generated credentials are printed");
    let password = line
        .split_whitespace()
        .nth(3)
        .expect("user: NAME password: PASSWORD");
    let json = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("iceServers: "))
        .expect("an iceServers snippet");
    let snippet: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(snippet["iceServers"][1]["credential"], password);
    let (_alice, relayed) = TurnClient::connect(server.addr, "icebreaker", password);
    assert_eq!(relayed.ip(), server.addr.ip());
}

#[test]
fn sigterm_drains_then_exits() {
    let mut server = Server::start(&["--user", "alice:secret"]);
    let (_alice, _) = TurnClient::connect(server.addr, "alice", "secret");
    let pid = server.child.id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // While draining, the server is not ready and refuses new allocations.
    thread::sleep(Duration::from_millis(300));
    let body = server.http_get("/readyz");
    assert!(body.starts_with("HTTP/1.1 503"), "{body}");
    let started = Instant::now();
    let status = server.child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// One Allocate as `username` from a fresh socket: `None` when it succeeds, else the code.
fn try_allocate(server: SocketAddr, username: &str, password: &str) -> Option<ErrorCode> {
    TurnClient::try_connect(server, username, password).err()
}

#[test]
fn sighup_reloads_users_and_limits_and_keeps_allocations() {
    let dir = std::env::temp_dir().join(format!("icebreaker-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("icebreaker.toml");
    std::fs::write(&file, "users = [\"alice:secret\"]\n").expect("write config");
    let server = Server::start(&["--config", file.to_str().expect("utf-8 path")]);

    let (mut alice, _) = TurnClient::connect(server.addr, "alice", "secret");
    assert_eq!(
        try_allocate(server.addr, "bob", "hunter2"),
        Some(ErrorCode::UNAUTHENTICATED)
    );
    std::fs::write(
        &file,
        "users = [\"alice:secret\", \"bob:hunter2\"]\nuser-quota = 1\n",
    )
    .expect("rewrite");
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );

    // The reload is asynchronous: bob gets in once the workers have the new users. Each try
    // before that is a failed authentication from 127.0.0.1, which the server tolerates 20 at
    // once and then 5 a second per worker (`auth_failure_rate`) before it stops answering the
    // source: on a slow reload, faster tries would be dropped. Three a second stay below.
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_allocate(server.addr, "bob", "hunter2").is_some() {
        assert!(
            Instant::now() < deadline,
            "bob was never accepted after SIGHUP"
        );
        thread::sleep(Duration::from_millis(300));
    }
    // The new quota holds: alice already has one allocation.
    assert_eq!(
        try_allocate(server.addr, "alice", "secret"),
        Some(ErrorCode::ALLOCATION_QUOTA_REACHED)
    );
    // Her allocation made before the reload is still there and refreshable.
    alice.request(Method::REFRESH, |w| w.add(&Lifetime(600)).expect("fits"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_server_on_the_same_address_refuses_to_start() {
    let server = Server::start(&["--user", "alice:secret"]);
    let output = Command::new(env!("CARGO_BIN_EXE_icebreaker"))
        .args([
            "serve",
            "--listen",
            &server.addr.to_string(),
            "--user",
            "a:b",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
}

/// The DF bits of the datagrams the relay sends from `relay` to `peer` while `send` runs, as a
/// raw socket sees them on loopback; `None` where raw sockets need a privilege this test lacks.
fn relayed_df_bits(relay: SocketAddr, peer: SocketAddr, send: impl FnOnce()) -> Option<Vec<bool>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let raw: UdpSocket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .ok()?
        .into();
    raw.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    send();
    let mut bits = Vec::new();
    let mut packet = [0u8; 2048];
    // A raw socket returns each IPv4 packet whole: header, then the UDP header.
    while let Ok(n) = raw.recv(&mut packet) {
        let header = usize::from(packet[0] & 0x0F) * 4;
        if n < header + 4 {
            continue;
        }
        let src_port = u16::from_be_bytes([packet[header], packet[header + 1]]);
        let dst_port = u16::from_be_bytes([packet[header + 2], packet[header + 3]]);
        if src_port == relay.port() && dst_port == peer.port() {
            bits.push(packet[6] & 0x40 != 0);
        }
    }
    Some(bits)
}

/// RFC 8656 §14: DF only when the client asks with DONT-FRAGMENT; Linux alone would set it on
/// nearly every datagram.
#[test]
fn dont_fragment_is_set_only_when_asked() {
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let peer = icebreaker_tests::echo_peer([127, 0, 0, 1]);
    let (mut alice, relayed) = TurnClient::connect(server.addr, "alice", "secret");
    alice.request(Method::CREATE_PERMISSION, |w| {
        w.add(&XorPeerAddress(peer)).expect("fits")
    });
    let send = |dont_fragment: bool| {
        let mut buf = [0u8; 256];
        let indication = MessageType::new(Method::SEND, Class::Indication);
        let mut w = MessageWriter::new(&mut buf, indication, tid(70)).expect("fits");
        w.add(&XorPeerAddress(peer)).expect("fits");
        if dont_fragment {
            w.add(&icebreaker_wire::attr::DontFragment).expect("fits");
        }
        w.add(&Data(b"df?")).expect("fits");
        let len = w.finish();
        exchange(&alice.socket, server.addr, &buf[..len]);
    };
    let Some(plain) = relayed_df_bits(relayed, peer, || send(false)) else {
        eprintln!("skipped: raw sockets need CAP_NET_RAW");
        return;
    };
    let asked = relayed_df_bits(relayed, peer, || send(true)).expect("raw socket");
    let plain_again = relayed_df_bits(relayed, peer, || send(false)).expect("raw socket");
    assert_eq!(
        (plain, asked, plain_again),
        (vec![false], vec![true], vec![false])
    );
}

/// Datagrams with and without DONT-FRAGMENT sent back to back, so that they may share one
/// received batch, each leave with their own DF bit.
#[test]
fn dont_fragment_follows_each_datagram_within_a_batch() {
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.1/32"]);
    let peer = icebreaker_tests::echo_peer([127, 0, 0, 1]);
    let (mut alice, relayed) = TurnClient::connect(server.addr, "alice", "secret");
    alice.request(Method::CREATE_PERMISSION, |w| {
        w.add(&XorPeerAddress(peer)).expect("fits")
    });
    let pattern = [false, true, true, false, true, false, false, true];
    let burst = || {
        for (i, dont_fragment) in pattern.iter().enumerate() {
            let mut buf = [0u8; 256];
            let indication = MessageType::new(Method::SEND, Class::Indication);
            let mut w = MessageWriter::new(&mut buf, indication, tid(80 + i as u8)).expect("fits");
            w.add(&XorPeerAddress(peer)).expect("fits");
            if *dont_fragment {
                w.add(&icebreaker_wire::attr::DontFragment).expect("fits");
            }
            w.add(&Data(&[i as u8; 8])).expect("fits");
            let len = w.finish();
            alice
                .socket
                .send_to(&buf[..len], server.addr)
                .expect("send");
        }
    };
    let Some(bits) = relayed_df_bits(relayed, peer, burst) else {
        eprintln!("skipped: raw sockets need CAP_NET_RAW");
        return;
    };
    assert_eq!(bits, pattern);
}
