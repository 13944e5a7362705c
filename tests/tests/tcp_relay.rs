//! RFC 6062 TCP allocations through the real `icebreaker serve` on loopback, over TCP and TLS:
//! Connect to a TCP peer, a peer connecting to the relayed address (ConnectionAttempt), the
//! ConnectionBind of a new data connection, and bytes both ways through the splice.
//!
//! The server runs two workers (`Server` starts every server with `--threads 2`), and the
//! kernel hands each new data connection to either: every test binds several, so that
//! ConnectionBinds reach the worker that did not issue their connection id and must be moved
//! to the one that did. Peers are listeners and connections of the test itself, on
//! 127.0.0.1, which the server relays to only with `--allow-peer 127.0.0.0/8`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::stun_client::{RecvError, StunClient, Transport, connection_attempt};
use icebreaker_tests::{TlsServer, metric_reaching, metric_settling};
use icebreaker_wire::ErrorCode;
use icebreaker_wire::attr::{ConnectionId, RequestedTransport};

/// How long anything may take on loopback.
const WAIT: Duration = Duration::from_secs(5);
/// Data connections per test and transport: with two workers, the chance that none of them
/// needs moving to the other worker is 1 in 2^8.
const CONNECTIONS: usize = 8;

const OPEN: &str = "icebreaker_turn_peer_connections_open";

fn closed(reason: &str) -> String {
    format!("icebreaker_turn_peer_connections_closed_total{{reason=\"{reason}\"}}")
}

fn opened(origin: &str) -> String {
    format!("icebreaker_turn_peer_connections_opened_total{{origin=\"{origin}\"}}")
}

fn relayed_bytes(direction: &str) -> String {
    format!("icebreaker_turn_tcp_relayed_bytes_total{{direction=\"{direction}\"}}")
}

/// A server with user alice and loopback peers allowed, plus `extra` flags.
fn server(name: &str, extra: &[&str]) -> TlsServer {
    let mut flags = vec!["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"];
    flags.extend_from_slice(extra);
    TlsServer::start(name, &flags)
}

/// A control connection over `transport` holding a TCP allocation, with a permission for
/// 127.0.0.1; returns it and the relayed address.
fn tcp_allocation(server: &TlsServer, transport: Transport) -> (StunClient, SocketAddr) {
    let mut control = server.client(transport);
    let relayed = control.allocate_tcp_relayed("alice", "secret");
    assert!(relayed.ip().is_loopback(), "{relayed}");
    control
        .create_permission(SocketAddr::from(([127, 0, 0, 1], 9)))
        .expect_success("CreatePermission");
    (control, relayed)
}

/// A new data connection over `transport`, bound to connection `id` of `control`.
fn data_connection(
    server: &TlsServer,
    transport: Transport,
    control: &StunClient,
    id: ConnectionId,
) -> StunClient {
    let mut data = server.client(transport);
    data.share_credentials(control);
    data.connection_bind(id).expect_success("ConnectionBind");
    data
}

/// The next connection `listener` accepts within [`WAIT`], or `None`.
fn accept_within(listener: &TcpListener, wait: Duration) -> Option<TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return Some(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Exactly `len` bytes from `peer` within [`WAIT`].
fn read_peer(peer: &mut TcpStream, len: usize) -> Vec<u8> {
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = vec![0u8; len];
    peer.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("the peer got fewer than {len} bytes: {e}"));
    got
}

/// Whether `peer` sees its connection end (FIN or reset) within [`WAIT`], throwing away
/// whatever comes before.
fn peer_sees_end(peer: &mut TcpStream) -> bool {
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match peer.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A few kilobytes each way between `data` and `peer`, different for each `round`.
fn bytes_both_ways(data: &mut StunClient, peer: &mut TcpStream, round: usize) {
    let up: Vec<u8> = format!("client {round} to peer; ").repeat(300).into_bytes();
    data.send_raw(&up);
    assert_eq!(
        read_peer(peer, up.len()),
        up,
        "client to peer, round {round}"
    );
    let down: Vec<u8> = format!("peer {round} to client; ").repeat(400).into_bytes();
    peer.write_all(&down).unwrap();
    assert_eq!(
        data.read_exact_bytes(down.len(), WAIT),
        down,
        "peer to client, round {round}"
    );
}

/// A Connect to a new listener of the test, accepted: the data connection, the peer's side,
/// and the connection id.
fn connected_pair(
    server: &TlsServer,
    transport: Transport,
    control: &mut StunClient,
    relayed: SocketAddr,
) -> (StunClient, TcpStream, ConnectionId) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let answer = control.connect(listener.local_addr().unwrap());
    answer.expect_success("Connect");
    let id = answer
        .connection_id()
        .expect("a CONNECTION-ID in the Connect answer");
    let peer = accept_within(&listener, WAIT).expect("the server connects to the peer");
    assert_eq!(
        peer.peer_addr().unwrap(),
        relayed,
        "the connection comes from the relayed address"
    );
    let data = data_connection(server, transport, control, id);
    (data, peer, id)
}

#[test]
fn connect_relays_bytes_both_ways_over_tcp_and_tls() {
    let server = server("tcp-relay-connect", &[]);
    for (round, transport) in [Transport::Tcp, Transport::Tls].into_iter().enumerate() {
        let (mut control, relayed) = tcp_allocation(&server, transport);
        let mut pairs = Vec::new();
        for i in 0..CONNECTIONS {
            let (mut data, mut peer, _) = connected_pair(&server, transport, &mut control, relayed);
            bytes_both_ways(&mut data, &mut peer, i);
            pairs.push((data, peer));
        }
        // Every splice still works once all of them are up.
        for (i, (data, peer)) in pairs.iter_mut().enumerate() {
            bytes_both_ways(data, peer, 100 + i);
        }
        let total = (CONNECTIONS * (round + 1)) as f64;
        assert_eq!(
            metric_reaching(&server.server, &opened("connect"), total),
            total
        );
        assert_eq!(
            metric_settling(&server.server, OPEN, CONNECTIONS as f64),
            CONNECTIONS as f64,
            "{transport:?}"
        );
        drop(pairs);
        assert_eq!(metric_settling(&server.server, OPEN, 0.0), 0.0);
    }
    let connect = "icebreaker_turn_requests_total{method=\"Connect\",result=\"success\"}";
    let bind = "icebreaker_turn_requests_total{method=\"ConnectionBind\",result=\"success\"}";
    let total = 2.0 * CONNECTIONS as f64;
    assert_eq!(metric_reaching(&server.server, connect, total), total);
    assert_eq!(metric_reaching(&server.server, bind, total), total);
    assert!(server.server.metric(&relayed_bytes("client_to_peer")) > 0.0);
    assert!(server.server.metric(&relayed_bytes("peer_to_client")) > 0.0);
}

#[test]
fn a_peer_connecting_to_the_relayed_address_is_offered_to_the_client() {
    let server = server("tcp-relay-attempt", &[]);
    for transport in [Transport::Tcp, Transport::Tls] {
        let (mut control, relayed) = tcp_allocation(&server, transport);
        let mut pairs = Vec::new();
        for i in 0..CONNECTIONS {
            let mut peer = TcpStream::connect_timeout(&relayed, WAIT).unwrap();
            // Sent before the client binds: it must come first, after the bind.
            let early = format!("early words of peer {i}").into_bytes();
            peer.write_all(&early).unwrap();
            let frame = control.recv(WAIT).expect("a ConnectionAttempt");
            let (id, from) = connection_attempt(&frame);
            assert_eq!(from, peer.local_addr().unwrap(), "XOR-PEER-ADDRESS");
            let mut data = data_connection(&server, transport, &control, id);
            assert_eq!(data.read_exact_bytes(early.len(), WAIT), early);
            bytes_both_ways(&mut data, &mut peer, i);
            pairs.push((data, peer));
        }
        for (i, (data, peer)) in pairs.iter_mut().enumerate() {
            bytes_both_ways(data, peer, 100 + i);
        }
    }
    let total = 2.0 * CONNECTIONS as f64;
    assert_eq!(
        metric_reaching(&server.server, &opened("peer"), total),
        total
    );
}

#[test]
fn bulk_transfers_both_ways_at_once_arrive_whole() {
    const SIZE: usize = 4 << 20;
    let server = server("tcp-relay-bulk", &[]);
    for transport in [Transport::Tcp, Transport::Tls] {
        let (mut control, relayed) = tcp_allocation(&server, transport);
        let (mut data, peer, _) = connected_pair(&server, transport, &mut control, relayed);
        let pattern = |seed: u8| -> Vec<u8> {
            (0..SIZE)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        };
        let (up, down) = (pattern(1), pattern(2));
        // The peer writes and reads on threads of its own, so that the server's bounded
        // buffers hold the client's writes back until the peer reads.
        let mut peer_writer = peer.try_clone().unwrap();
        let to_client = down.clone();
        let writer = thread::spawn(move || peer_writer.write_all(&to_client).is_ok());
        let mut peer_reader = peer;
        let reader = thread::spawn(move || {
            peer_reader
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut got = vec![0u8; SIZE];
            peer_reader.read_exact(&mut got).map(|()| got).ok()
        });
        for chunk in up.chunks(64 * 1024) {
            data.send_raw(chunk);
        }
        assert_eq!(
            data.read_exact_bytes(SIZE, Duration::from_secs(30)),
            down,
            "{transport:?}: peer to client"
        );
        assert!(writer.join().unwrap(), "the peer wrote everything");
        let got = reader.join().unwrap().expect("the peer read everything");
        assert!(got == up, "{transport:?}: client to peer");
    }
    for direction in ["client_to_peer", "peer_to_client"] {
        let want = 2.0 * SIZE as f64;
        assert_eq!(
            metric_reaching(&server.server, &relayed_bytes(direction), want),
            want,
            "{direction}"
        );
    }
}

#[test]
fn peers_the_policy_denies_get_403_and_no_connection() {
    // Without --allow-peer, loopback peers are denied.
    let strict = TlsServer::start("tcp-relay-policy", &["--user", "alice:secret"]);
    let mut control = strict.client(Transport::Tcp);
    let relayed = control.allocate_tcp_relayed("alice", "secret");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let answer = control.connect(listener.local_addr().unwrap());
    assert_eq!(
        answer.error_code(),
        Some(ErrorCode::FORBIDDEN),
        "{answer:?}"
    );
    assert!(
        accept_within(&listener, Duration::from_millis(300)).is_none(),
        "no connection to a denied peer"
    );
    // Nor to the server's own listeners.
    for own in [strict.server.addr, strict.tls_addr] {
        let answer = control.connect(own);
        assert_eq!(
            answer.error_code(),
            Some(ErrorCode::FORBIDDEN),
            "{answer:?}"
        );
    }
    // A loopback peer connecting to the relayed address is closed, and not offered.
    let mut peer = TcpStream::connect_timeout(&relayed, WAIT).unwrap();
    assert!(peer_sees_end(&mut peer), "the server closes a denied peer");
    assert_eq!(
        control.recv(Duration::from_millis(300)).map(|_| ()),
        Err(RecvError::TimedOut),
        "no ConnectionAttempt"
    );

    let server = server("tcp-relay-policy-allowed", &[]);
    let (mut control, _) = tcp_allocation(&server, Transport::Tcp);
    // An allowed peer without a permission: stricter than RFC 6062, as for UDP.
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let answer = control.connect(listener.local_addr().unwrap());
    assert_eq!(
        answer.error_code(),
        Some(ErrorCode::FORBIDDEN),
        "{answer:?}"
    );
    assert!(accept_within(&listener, Duration::from_millis(300)).is_none());
    // A connection id nobody issued.
    let mut data = server.client(Transport::Tcp);
    data.share_credentials(&control);
    let answer = data.connection_bind(ConnectionId(0x0012_3456));
    assert_eq!(
        answer.error_code(),
        Some(ErrorCode::BAD_REQUEST),
        "{answer:?}"
    );
}

#[test]
fn a_connect_the_peer_refuses_gets_447_and_may_be_tried_again() {
    let server = server("tcp-relay-refused", &[]);
    let (mut control, relayed) = tcp_allocation(&server, Transport::Tcp);
    // A port nothing listens on: refused at once.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let answer = control.connect(closed_port);
    assert_eq!(
        answer.error_code(),
        Some(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE),
        "{answer:?}"
    );
    let failed = "icebreaker_turn_requests_total{method=\"Connect\",result=\"447\"}";
    assert_eq!(metric_reaching(&server.server, failed, 1.0), 1.0);
    // The failure left nothing behind: the same peer, listening now, can be reached.
    let Ok(listener) = TcpListener::bind(closed_port) else {
        return; // Another program took the port meanwhile.
    };
    let answer = control.connect(closed_port);
    answer.expect_success("Connect");
    let mut peer = accept_within(&listener, WAIT).expect("the server connects");
    assert_eq!(peer.peer_addr().unwrap(), relayed);
    let id = answer.connection_id().expect("a CONNECTION-ID");
    let mut data = data_connection(&server, Transport::Tcp, &control, id);
    bytes_both_ways(&mut data, &mut peer, 0);
}

#[test]
fn closing_the_control_connection_closes_data_and_peer_connections() {
    let server = server("tcp-relay-control-closed", &[]);
    for (round, transport) in [Transport::Tcp, Transport::Tls].into_iter().enumerate() {
        let (mut control, relayed) = tcp_allocation(&server, transport);
        let mut pairs = Vec::new();
        for i in 0..CONNECTIONS / 2 {
            let (mut data, mut peer, _) = connected_pair(&server, transport, &mut control, relayed);
            bytes_both_ways(&mut data, &mut peer, i);
            pairs.push((data, peer));
        }
        drop(control);
        for (data, peer) in &mut pairs {
            assert!(
                peer_sees_end(peer),
                "{transport:?}: the peer connection closes"
            );
            assert!(
                data.wait_closed(WAIT),
                "{transport:?}: the data connection closes"
            );
        }
        let ended = ((round + 1) * CONNECTIONS / 2) as f64;
        assert_eq!(
            metric_reaching(&server.server, &closed("allocation_ended"), ended),
            ended
        );
        assert_eq!(metric_settling(&server.server, OPEN, 0.0), 0.0);
    }
}

#[test]
fn an_end_on_one_side_is_passed_on_and_the_pair_closes_when_both_ended() {
    let server = server("tcp-relay-ends", &[]);
    for transport in [Transport::Tcp, Transport::Tls] {
        let (mut control, relayed) = tcp_allocation(&server, transport);

        // The peer closes: the data connection ends, after what the peer sent.
        let (mut data, mut peer, _) = connected_pair(&server, transport, &mut control, relayed);
        bytes_both_ways(&mut data, &mut peer, 0);
        peer.write_all(b"last words").unwrap();
        drop(peer);
        assert_eq!(data.read_exact_bytes(10, WAIT), b"last words");
        assert_eq!(
            data.read_bytes(WAIT),
            Err(RecvError::Closed),
            "{transport:?}"
        );
        drop(data);

        // The client ends its side: the peer sees the end and may still answer.
        let (mut data, mut peer, _) = connected_pair(&server, transport, &mut control, relayed);
        data.send_raw(b"request");
        data.shutdown_write();
        assert_eq!(read_peer(&mut peer, 7), b"request");
        let mut rest = [0u8; 16];
        assert_eq!(peer.read(&mut rest).unwrap(), 0, "{transport:?}: the FIN");
        peer.write_all(b"response").unwrap();
        assert_eq!(data.read_exact_bytes(8, WAIT), b"response");
        drop(peer);
        assert_eq!(data.read_bytes(WAIT), Err(RecvError::Closed));
    }
    assert_eq!(metric_reaching(&server.server, &closed("closed"), 4.0), 4.0);
    assert_eq!(metric_settling(&server.server, OPEN, 0.0), 0.0);
    let series = "icebreaker_connections_closed_total{transport=\"tls\",reason=\"tls\"}";
    assert_eq!(server.server.metric(series), 0.0, "TLS ends cleanly");
}

#[test]
fn without_tcp_relay_a_tcp_allocate_gets_442() {
    let server = server("tcp-relay-off", &["--no-tcp-relay"]);
    let mut control = server.client(Transport::Tcp);
    let answer = control.allocate_transport(RequestedTransport::TCP, "alice", "secret", |_| {});
    assert_eq!(
        answer.error_code(),
        Some(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL),
        "{answer:?}"
    );
}
