//! Interop with a TURN client nobody here wrote: the webrtc-rs `turn` crate's `Client` against
//! the real `icebreaker serve` on loopback, over UDP.
//!
//! What that client does on the wire (turn 0.17, `src/client/`): Allocate without credentials,
//! then again with the realm and nonce of the 401 and an MD5 long-term MESSAGE-INTEGRITY. The
//! first `send_to` to a peer IP sends CreatePermission and waits for its answer; it then starts
//! a ChannelBind in the background and sends that first datagram (and any sent before the
//! binding is confirmed) as a Send indication. Once the ChannelBind succeeded, datagrams to that
//! peer go as ChannelData. A timer refreshes the allocation every half lifetime, with three
//! Refresh requests in a row each time (its retry loop stops only on an error, not on success:
//! a harmless quirk of the client); `close` on the relay conn sends Refresh with LIFETIME 0 and
//! does not wait for the answer. Dropping the relay conn without `close` stops the refresh timer
//! and sends nothing.
//!
//! A small UDP forwarder between client and server (the "tap") records every datagram, so the
//! tests can say which of these the client actually sent and what the server answered.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use icebreaker_tests::{Server, echo_peer};
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

/// The bound on every single await: a hang fails the test instead of blocking CI.
const STEP: Duration = Duration::from_secs(10);

const CREATE_PERMISSION_OK: &str =
    "icebreaker_turn_requests_total{method=\"CreatePermission\",result=\"success\"}";
const CHANNEL_BIND_OK: &str =
    "icebreaker_turn_requests_total{method=\"ChannelBind\",result=\"success\"}";
const REFRESH_OK: &str = "icebreaker_turn_requests_total{method=\"Refresh\",result=\"success\"}";
const ACTIVE: &str = "icebreaker_turn_allocations_active{family=\"ipv4\"}";
const TO_PEER: &str = "icebreaker_turn_relayed_packets_total{direction=\"client_to_peer\"}";
const TO_CLIENT: &str = "icebreaker_turn_relayed_packets_total{direction=\"peer_to_client\"}";
const BYTES_TO_PEER: &str = "icebreaker_turn_relayed_bytes_total{direction=\"client_to_peer\"}";
const BYTES_TO_CLIENT: &str = "icebreaker_turn_relayed_bytes_total{direction=\"peer_to_client\"}";

/// Awaits `future` for at most [`STEP`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no result within {STEP:?}"),
    }
}

/// Waits (at most [`STEP`]) until `series` has the value `want`: the server updates its
/// counters as it relays, a moment after the client may have seen the packet.
async fn wait_metric(server: &Server, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let got = server.metric(series);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server with the flags of these tests (one user, loopback peers allowed) plus `extra`.
fn start_server(extra: &[&str]) -> Server {
    let mut flags = vec!["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"];
    flags.extend_from_slice(extra);
    Server::start(&flags)
}

/// The relay ports of `server`, as `Server::start` chooses them from its listen port.
fn relay_range(server: &Server) -> RangeInclusive<u16> {
    let base = 20_000 + (server.addr.port() % 1_000) * 40;
    base..=base + 39
}

/// A webrtc-rs client of `turn_server` (an address), listening on its own loopback socket.
async fn client(turn_server: SocketAddr, user: &str, password: &str) -> Client {
    let socket = within("bind", UdpSocket::bind("127.0.0.1:0"))
        .await
        .expect("client socket");
    let config = ClientConfig {
        stun_serv_addr: turn_server.to_string(),
        turn_serv_addr: turn_server.to_string(),
        username: user.into(),
        password: password.into(),
        // Taken from the server's 401.
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(socket),
        vnet: None,
    };
    let client = within("Client::new", Client::new(config))
        .await
        .expect("client");
    within("listen", client.listen()).await.expect("listen");
    client
}

/// Sends `data` to `peer` through the relay and checks that the echo comes back whole, from
/// the peer.
async fn echo(relay: &impl Conn, peer: SocketAddr, data: &[u8]) {
    within("send_to", relay.send_to(data, peer))
        .await
        .expect("send_to through the relay");
    let mut buf = vec![0u8; 2_048];
    let (n, from) = within("recv_from (the echo)", relay.recv_from(&mut buf))
        .await
        .expect("recv_from through the relay");
    assert_eq!(from, peer, "the echo comes from the peer");
    assert!(buf[..n] == *data, "echo of {} bytes differs", data.len());
}

/// A payload of `len` bytes that differs from message to message.
fn payload(seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq * 31 + i) as u8).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// A UDP forwarder between one client and the server that records every datagram by kind.
struct Tap {
    /// Where the client should send.
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(Dir, String)>>>,
}

impl Tap {
    /// Starts forwarding to `server`; the tasks end with the test's runtime.
    async fn start(server: SocketAddr) -> Tap {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("tap front"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("tap back"));
        back.connect(server).await.expect("tap connect");
        let addr = front.local_addr().expect("tap address");
        let log: Arc<Mutex<Vec<(Dir, String)>>> = Arc::default();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();

        let (up_front, up_back, up_log, up_client) = (
            Arc::clone(&front),
            Arc::clone(&back),
            Arc::clone(&log),
            Arc::clone(&client),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = up_front.recv_from(&mut buf).await {
                *up_client.lock().unwrap() = Some(from);
                up_log.lock().unwrap().push((Dir::Up, label(&buf[..n])));
                let _ = up_back.send(&buf[..n]).await;
            }
        });
        let down_log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back.recv(&mut buf).await {
                down_log.lock().unwrap().push((Dir::Down, label(&buf[..n])));
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
        Tap { addr, log }
    }

    /// How many datagrams in direction `dir` had a label starting with `prefix`.
    fn count(&self, dir: Dir, prefix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, l)| *d == dir && l.starts_with(prefix))
            .count()
    }

    /// The record so far, one line per datagram, for failure messages.
    fn dump(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(d, l)| format!("{}{l}\n", if *d == Dir::Up { "C>S " } else { "S>C " }))
            .collect()
    }
}

/// What a datagram is: "ChannelData", "<Method> <class>" for STUN with " <code>" for an error
/// response and " lifetime=<s>" when it carries LIFETIME, or "other".
fn label(packet: &[u8]) -> String {
    if packet.len() >= 4 && packet[0] & 0xC0 == 0x40 {
        return "ChannelData".into();
    }
    if packet.len() < 20 || packet[0] & 0xC0 != 0 || packet[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return "other".into();
    }
    let typ = u16::from_be_bytes([packet[0], packet[1]]);
    let method = (typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80);
    let class = ((typ >> 4) & 1) | ((typ >> 7) & 2);
    let method = match method {
        0x001 => "Binding".to_string(),
        0x003 => "Allocate".into(),
        0x004 => "Refresh".into(),
        0x006 => "Send".into(),
        0x007 => "Data".into(),
        0x008 => "CreatePermission".into(),
        0x009 => "ChannelBind".into(),
        m => format!("method {m:#x}"),
    };
    let class = ["request", "indication", "success", "error"][usize::from(class)];
    let mut out = format!("{method} {class}");
    let mut at = 20;
    while at + 4 <= packet.len() {
        let attr = u16::from_be_bytes([packet[at], packet[at + 1]]);
        let len = usize::from(u16::from_be_bytes([packet[at + 2], packet[at + 3]]));
        let Some(value) = packet.get(at + 4..at + 4 + len) else {
            break;
        };
        match attr {
            0x0009 if len >= 4 => {
                let code = u16::from(value[2] & 7) * 100 + u16::from(value[3]);
                out += &format!(" {code}");
            }
            0x000D if len == 4 => {
                let lifetime = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                out += &format!(" lifetime={lifetime}");
            }
            _ => {}
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    out
}

/// Allocate, then echoes through the relay: the first datagram to each peer goes as a Send
/// indication (after CreatePermission), later ones over the channel the client bound in the
/// meantime, both sizes each way, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_send_indications_and_then_a_channel() {
    let server = start_server(&[]);
    let tap = Tap::start(server.addr).await;
    let client = client(tap.addr, "alice", "secret").await;
    let relay = within("allocate", client.allocate())
        .await
        .expect("allocate");

    let relayed = relay.local_addr().expect("relayed address");
    assert_eq!(relayed.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert!(
        relay_range(&server).contains(&relayed.port()),
        "relayed {relayed} outside {:?}",
        relay_range(&server)
    );
    wait_metric(&server, ACTIVE, 1.0).await;

    // Two peers on two IPs, so two permissions; the first datagram to one is 1200 bytes, to
    // the other 100, so both sizes go as a Send indication.
    let peers = [echo_peer([127, 0, 0, 1]), echo_peer([127, 0, 0, 2])];
    let sizes = [1_200, 100];
    let (mut seq, mut bytes) = (0, 0);
    for (peer, first) in peers.iter().zip(sizes) {
        let indications = tap.count(Dir::Up, "Send indication");
        echo(&relay, *peer, &payload(seq, first)).await;
        seq += 1;
        bytes += first;
        assert_eq!(
            tap.count(Dir::Up, "Send indication"),
            indications + 1,
            "the first datagram to {peer} goes as a Send indication:\n{}",
            tap.dump()
        );
    }
    assert_eq!(
        tap.count(Dir::Up, "CreatePermission request"),
        2,
        "{}",
        tap.dump()
    );

    // The bindings complete in the background; until the client has seen both succeed it may
    // still send indications. Keep echoing until each peer has been reached over its channel.
    let mut on_channel = [false; 2];
    while on_channel != [true; 2] {
        assert!(
            seq < 100,
            "the client never switched to ChannelData:\n{}",
            tap.dump()
        );
        for (i, peer) in peers.iter().enumerate() {
            let before = tap.count(Dir::Up, "ChannelData");
            let len = sizes[seq % 2];
            echo(&relay, *peer, &payload(seq, len)).await;
            seq += 1;
            bytes += len;
            on_channel[i] |= tap.count(Dir::Up, "ChannelData") > before;
        }
    }

    // Now every datagram goes over the channels, both ways, in both sizes.
    let (up, down, ind) = (
        tap.count(Dir::Up, "ChannelData"),
        tap.count(Dir::Down, "ChannelData"),
        tap.count(Dir::Up, "Send indication"),
    );
    for _ in 0..3 {
        for peer in &peers {
            for len in [100, 1_200] {
                echo(&relay, *peer, &payload(seq, len)).await;
                seq += 1;
                bytes += len;
            }
        }
    }
    assert_eq!(tap.count(Dir::Up, "ChannelData"), up + 12, "{}", tap.dump());
    assert_eq!(
        tap.count(Dir::Down, "ChannelData"),
        down + 12,
        "{}",
        tap.dump()
    );
    assert_eq!(tap.count(Dir::Up, "Send indication"), ind, "{}", tap.dump());

    // Every datagram went exactly one way or the other, and the server agrees.
    let sent = seq as f64;
    assert_eq!(
        tap.count(Dir::Up, "Send indication") + tap.count(Dir::Up, "ChannelData"),
        seq,
        "{}",
        tap.dump()
    );
    assert_eq!(
        tap.count(Dir::Down, "Data indication") + tap.count(Dir::Down, "ChannelData"),
        seq,
        "{}",
        tap.dump()
    );
    wait_metric(&server, CREATE_PERMISSION_OK, 2.0).await;
    wait_metric(&server, CHANNEL_BIND_OK, 2.0).await;
    assert_eq!(tap.count(Dir::Down, "ChannelBind success"), 2);
    wait_metric(&server, TO_PEER, sent).await;
    wait_metric(&server, TO_CLIENT, sent).await;
    wait_metric(&server, BYTES_TO_PEER, bytes as f64).await;
    wait_metric(&server, BYTES_TO_CLIENT, bytes as f64).await;
    assert_eq!(tap.count(Dir::Down, "other"), 0, "{}", tap.dump());
    assert_eq!(
        tap.count(Dir::Down, "ChannelBind error"),
        0,
        "{}",
        tap.dump()
    );

    within("close", relay.close()).await.expect("close");
    within("client close", client.close())
        .await
        .expect("client close");
}

/// The client refreshes its allocation every half lifetime, and that keeps it alive: with a
/// 3 s lifetime, it survives 7 s, still relays, while a second allocation whose relay conn was
/// dropped (which stops the refresh timer and sends nothing) expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_keep_the_allocation_alive() {
    let server = start_server(&["--max-lifetime", "3", "--default-lifetime", "3"]);
    let peer = echo_peer([127, 0, 0, 1]);
    let tap = Tap::start(server.addr).await;
    let client = client(tap.addr, "alice", "secret").await;
    let relay = within("allocate", client.allocate())
        .await
        .expect("allocate");
    assert_eq!(tap.count(Dir::Down, "Allocate success lifetime=3"), 1);

    let abandoned = self::client(server.addr, "alice", "secret").await;
    let abandoned_relay = within("allocate", abandoned.allocate())
        .await
        .expect("allocate");
    drop(abandoned_relay);
    wait_metric(&server, ACTIVE, 2.0).await;

    echo(&relay, peer, &payload(0, 100)).await;
    tokio::time::sleep(Duration::from_secs(7)).await;

    // The abandoned one expired; this one was refreshed at 1.5 s, 3 s, 4.5 s...
    wait_metric(&server, ACTIVE, 1.0).await;
    wait_metric(
        &server,
        "icebreaker_turn_allocations_deleted_total{reason=\"expired\"}",
        1.0,
    )
    .await;
    let refreshes = tap.count(Dir::Up, "Refresh request lifetime=3");
    let answered = tap.count(Dir::Down, "Refresh success lifetime=3");
    assert!(
        refreshes >= 3 && answered >= 3,
        "{refreshes} refreshes, {answered} answered:\n{}",
        tap.dump()
    );
    assert_eq!(tap.count(Dir::Down, "Refresh error"), 0, "{}", tap.dump());
    assert!(server.metric(REFRESH_OK) >= 3.0);
    echo(&relay, peer, &payload(1, 1_200)).await;

    within("close", relay.close()).await.expect("close");
    within("client close", client.close())
        .await
        .expect("client close");
    within("client close", abandoned.close())
        .await
        .expect("client close");
}

/// `close` on the relay conn deallocates: Refresh with LIFETIME 0, and the server frees the
/// allocation and its relay port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_deallocates() {
    let server = start_server(&[]);
    let peer = echo_peer([127, 0, 0, 1]);
    let tap = Tap::start(server.addr).await;
    let client = client(tap.addr, "alice", "secret").await;
    let relay = within("allocate", client.allocate())
        .await
        .expect("allocate");
    echo(&relay, peer, &payload(0, 100)).await;
    wait_metric(&server, ACTIVE, 1.0).await;
    wait_metric(&server, "icebreaker_turn_relay_ports_in_use", 1.0).await;

    within("close", relay.close()).await.expect("close");
    wait_metric(&server, ACTIVE, 0.0).await;
    wait_metric(&server, "icebreaker_turn_relay_ports_in_use", 0.0).await;
    wait_metric(
        &server,
        "icebreaker_turn_allocations_deleted_total{reason=\"refresh\"}",
        1.0,
    )
    .await;
    assert_eq!(
        tap.count(Dir::Up, "Refresh request lifetime=0"),
        1,
        "{}",
        tap.dump()
    );
    wait_metric(&server, REFRESH_OK, 1.0).await;

    within("client close", client.close())
        .await
        .expect("client close");
}

/// A wrong password: the client's authenticated Allocate gets a 401, `allocate` fails, and
/// the server counts a bad MESSAGE-INTEGRITY and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_allocate() {
    let server = start_server(&[]);
    let client = client(server.addr, "alice", "not-the-secret").await;
    let result = within("allocate", client.allocate()).await;
    let Err(error) = result else {
        panic!("allocate with a wrong password succeeded");
    };
    assert!(error.to_string().contains("401"), "{error}");
    wait_metric(
        &server,
        "icebreaker_turn_auth_failures_total{reason=\"bad_integrity\"}",
        1.0,
    )
    .await;
    assert_eq!(server.metric(ACTIVE), 0.0);
    assert_eq!(
        server.metric("icebreaker_turn_allocations_created_total"),
        0.0
    );
    within("client close", client.close())
        .await
        .expect("client close");
}
