//! The limits of TCP and TLS connections against the real `icebreaker serve` on loopback: the
//! connection limit, the idle and frame timeouts (slowloris, a TLS handshake never started),
//! the frame length bound, bytes that cannot be framed, and frames cut anywhere by the writes.
//! Relaying over each transport is in `transports.rs`.
//!
//! Every wait has a deadline; the servers are killed when a test ends, pass or fail.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::stun_client::{RecvError, StunClient, Transport, binding_request};
use icebreaker_tests::{
    Server, TlsServer, connections_closed as closed, free_port, metric_reaching, metric_settling,
};
use icebreaker_wire::attr::{ErrorCodeAttribute, RequestedTransport, XorMappedAddress};
use icebreaker_wire::{ErrorCode, Message, Method};

const USER: &str = "alice";
const PASSWORD: &str = "secret";
const USER_FLAG: &str = "alice:secret";

/// What an answer may take on loopback.
const WAIT: Duration = Duration::from_secs(3);

/// How long a connection past a 1-second timeout may live on: the server checks its
/// connections once a second, so the close comes between one and two seconds late.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// A close "at once": the server decides on the bytes it just read, with no timer.
const PROMPTLY: Duration = Duration::from_millis(1_000);

/// A server with user alice, TLS and `extra` flags on 127.0.0.1.
fn start(name: &str, extra: &[&str]) -> TlsServer {
    let mut flags = vec!["--user", USER_FLAG];
    flags.extend_from_slice(extra);
    TlsServer::start(name, &flags)
}

#[test]
fn connections_beyond_the_limit_are_closed_at_accept() {
    let server = Server::start_on(
        SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            free_port(&[Ipv4Addr::LOCALHOST.into()]),
        )),
        &["--user", USER_FLAG, "--max-connections", "3"],
    );
    let mut held: Vec<StunClient> = (0..3)
        .map(|_| {
            let mut client = StunClient::tcp(server.addr);
            assert_eq!(client.binding(), client.local_addr());
            client
        })
        .collect();

    let mut fourth = StunClient::tcp(server.addr);
    let started = Instant::now();
    assert!(
        fourth.wait_closed(WAIT),
        "the fourth connection was not closed"
    );
    assert!(
        started.elapsed() < PROMPTLY,
        "closed after {:?}",
        started.elapsed()
    );
    let limit = closed(Transport::Tcp, "limit");
    assert_eq!(metric_reaching(&server, &limit, 1.0), 1.0, "{limit}");
    // The three admitted ones still work.
    for client in &mut held {
        assert_eq!(client.binding(), client.local_addr());
    }

    drop(held.pop());
    let open = "icebreaker_connections_open{transport=\"tcp\"}";
    assert_eq!(metric_settling(&server, open, 2.0), 2.0, "{open}");
    let mut again = StunClient::tcp(server.addr);
    assert_eq!(again.binding(), again.local_addr());
    assert_eq!(server.metric(&limit), 1.0, "{limit}");
}

#[test]
fn silent_and_slow_connections_are_closed() {
    let stack = start("timeouts", &["--idle-timeout", "1", "--frame-timeout", "1"]);
    let server = &stack.server;
    // Each case waits a few seconds for its close: they run side by side.
    thread::scope(|s| {
        s.spawn(|| {
            let mut silent = stack.client(Transport::Tcp);
            let started = Instant::now();
            assert!(silent.wait_closed(CLOSE_WITHIN + Duration::from_secs(1)));
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took <= CLOSE_WITHIN,
                "idle close after {took:?}"
            );
        });
        s.spawn(|| {
            let mut allocated = stack.client(Transport::Tcp);
            allocated.allocate_relayed(USER, PASSWORD);
            // Silent for well beyond the idle timeout, yet kept for its allocation.
            assert!(
                !allocated.wait_closed(CLOSE_WITHIN + Duration::from_millis(500)),
                "a connection holding an allocation was closed for silence"
            );
            assert_eq!(allocated.binding(), allocated.local_addr());
            allocated.refresh(600).expect_success("Refresh");
        });
        s.spawn(|| {
            let mut half = stack.client(Transport::Tcp);
            half.send_raw(&binding_request()[..10]);
            let started = Instant::now();
            assert!(half.wait_closed(CLOSE_WITHIN + Duration::from_secs(1)));
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took <= CLOSE_WITHIN,
                "half a header closed after {took:?}"
            );
        });
        s.spawn(|| {
            // A frame announcing 1000 bytes, sent a byte every 300 ms: every read is recent,
            // but the frame never completes.
            let mut slowloris = stack.client(Transport::Tcp);
            let mut frame = binding_request();
            frame[2..4].copy_from_slice(&1000u16.to_be_bytes());
            let started = Instant::now();
            let mut was_closed = false;
            for byte in frame.iter().take(20) {
                if slowloris.try_send_raw(&[*byte]).is_err()
                    || slowloris.wait_closed(Duration::from_millis(300))
                {
                    was_closed = true;
                    break;
                }
            }
            let took = started.elapsed();
            assert!(was_closed, "a slowloris connection lived {took:?}");
            assert!(took <= CLOSE_WITHIN, "slowloris closed after {took:?}");
        });
        s.spawn(|| {
            // Connected to the TLS port, never a ClientHello.
            let stream = TcpStream::connect(stack.tls_addr).expect("connect");
            let mut mute = StunClient::from_tcp(stream);
            let started = Instant::now();
            assert!(mute.wait_closed(CLOSE_WITHIN + Duration::from_secs(1)));
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took <= CLOSE_WITHIN,
                "a handshake never started closed after {took:?}"
            );
        });
    });

    for (transport, reason, count) in [
        (Transport::Tcp, "idle", 1.0),
        (Transport::Tcp, "slow_frame", 2.0),
        (Transport::Tls, "slow_frame", 1.0),
    ] {
        let series = closed(transport, reason);
        assert_eq!(metric_reaching(server, &series, count), count, "{series}");
    }
}

#[test]
fn frames_are_bounded_and_cut_wherever_the_writes_fall() {
    let stack = start("frames", &["--max-frame", "2048"]);
    let server = &stack.server;

    // Length fields beyond --max-frame: closed on the header, before any of the bytes.
    let mut channel_data = stack.client(Transport::Tcp);
    let mut stun = stack.client(Transport::Tcp);
    let mut stun_header = binding_request()[..20].to_vec();
    stun_header[2..4].copy_from_slice(&4000u16.to_be_bytes());
    for (client, header) in [
        (&mut channel_data, vec![0x40, 0x00, 0x0F, 0xA0]),
        (&mut stun, stun_header),
    ] {
        client.send_raw(&header);
        let started = Instant::now();
        assert!(client.wait_closed(WAIT), "a 4000-byte frame was awaited");
        assert!(
            started.elapsed() < PROMPTLY,
            "closed after {:?}",
            started.elapsed()
        );
    }
    let too_long = closed(Transport::Tcp, "frame_too_long");
    assert_eq!(metric_reaching(server, &too_long, 2.0), 2.0, "{too_long}");

    // Neither STUN (00) nor ChannelData (01): the stream cannot be resynchronised.
    let mut garbage = stack.client(Transport::Tcp);
    garbage.send_raw(&[0x80, 0x01, 0x00, 0x08, 0, 0, 0, 0]);
    let started = Instant::now();
    assert!(garbage.wait_closed(WAIT), "a stream of garbage was kept");
    assert!(
        started.elapsed() < PROMPTLY,
        "closed after {:?}",
        started.elapsed()
    );
    let bad = closed(Transport::Tcp, "bad_frame");
    assert_eq!(metric_reaching(server, &bad, 1.0), 1.0, "{bad}");

    for transport in [Transport::Tcp, Transport::Tls] {
        // One byte per write (per TLS record over TLS).
        let mut client = stack.client(transport);
        let request = binding_request();
        for byte in &request {
            client.send_raw(&[*byte]);
        }
        let answer = client.recv(WAIT).expect("an answer to the split request");
        assert_binding_answer(&answer, &request, client.local_addr(), transport);

        // Many frames in one write, ChannelData of odd sizes (padded) among them: it is
        // dropped, having no allocation, but a wrong length for it would garble the rest.
        let requests: Vec<Vec<u8>> = (0..10).map(|_| binding_request()).collect();
        let mut burst = Vec::new();
        for (n, request) in requests.iter().enumerate() {
            burst.extend_from_slice(request);
            let data = vec![n as u8; [1, 3, 101][n % 3]];
            let len = u16::try_from(data.len()).expect("short");
            burst.extend_from_slice(&[0x40, 0x00]);
            burst.extend_from_slice(&len.to_be_bytes());
            burst.extend_from_slice(&data);
            burst.resize(burst.len().next_multiple_of(4), 0);
        }
        client.send_raw(&burst);
        for request in &requests {
            let answer = client
                .recv(WAIT)
                .expect("an answer to each request of the burst");
            assert_binding_answer(&answer, request, client.local_addr(), transport);
        }
        assert!(!client.wait_closed(Duration::from_millis(200)));
    }
    assert_eq!(server.metric(&bad), 1.0, "{bad}");
}

/// Checks that `answer` is the success answer to Binding `request` sent from `local`.
fn assert_binding_answer(answer: &[u8], request: &[u8], local: SocketAddr, transport: Transport) {
    let message = Message::parse(answer).expect("a STUN answer");
    let request = Message::parse(request).expect("a STUN request");
    assert_eq!(
        message.transaction_id(),
        request.transaction_id(),
        "{transport:?}"
    );
    assert_eq!(
        message.get::<XorMappedAddress>(),
        Ok(Some(XorMappedAddress(local))),
        "{transport:?}"
    );
}

/// A password guesser over TCP is answered 401 until the failure throttle trips, then
/// disconnected: over UDP it would be ignored and retransmit, but a stream client that got no
/// answer would wait forever.
#[test]
fn a_password_guesser_over_tcp_is_disconnected() {
    let server = Server::start_on(
        SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            free_port(&[Ipv4Addr::LOCALHOST.into()]),
        )),
        &["--user", USER_FLAG],
    );
    let mut client = StunClient::tcp(server.addr);
    let first = client.allocate(USER, "guess", |_| {});
    assert_eq!(first.error_code(), Some(ErrorCode::UNAUTHENTICATED));
    let request = client.signed_request(Method::ALLOCATE, |w| {
        w.add(&RequestedTransport::UDP).expect("fits");
    });
    let mut answered = 1;
    let closed_after = loop {
        if client.try_send_raw(&request).is_err() {
            break answered;
        }
        match client.recv(WAIT) {
            Ok(frame) => {
                let answer = Message::parse(&frame).expect("STUN");
                assert_eq!(
                    answer
                        .get::<ErrorCodeAttribute>()
                        .ok()
                        .flatten()
                        .map(|e| e.code),
                    Some(ErrorCode::UNAUTHENTICATED)
                );
                answered += 1;
                assert!(answered < 100, "still answered after {answered} guesses");
            }
            Err(RecvError::Closed) => break answered,
            Err(RecvError::TimedOut) => {
                panic!("a guess went unanswered and the connection stayed open")
            }
        }
    };
    assert!(closed_after > 1, "closed after {closed_after} answers");
    let throttled = closed(Transport::Tcp, "throttled");
    assert_eq!(
        metric_reaching(&server, &throttled, 1.0),
        1.0,
        "{throttled}"
    );

    // Binding needs no credentials: the same source on a new connection is still served.
    let mut owner = StunClient::tcp(server.addr);
    assert_eq!(owner.binding(), owner.local_addr());
}
