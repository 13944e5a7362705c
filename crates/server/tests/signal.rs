//! The signaling relay (`icebreaker signal`) on loopback: rooms, queueing, limits and close
//! codes through the in-process `run`, and the real binary once, stopped with SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::future::Future;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use icebreaker::signal::{self, SignalLimits};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(5);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Starts the relay in-process on an ephemeral loopback port.
async fn start(limits: SignalLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { signal::run(listener, limits).await.unwrap() });
    addr
}

async fn connect(addr: SocketAddr, room: &str) -> Client {
    let (ws, _) = within("connect", connect_async(format!("ws://{addr}/{room}")))
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Client, text: &str) {
    within("send", ws.send(Message::text(text))).await.unwrap();
}

/// The next text message; pings and pongs are skipped, anything else fails the test.
async fn recv(ws: &mut Client) -> String {
    loop {
        match within("a text message", ws.next()).await {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The code and reason of the close frame that comes next.
async fn closed(ws: &mut Client) -> (u16, String) {
    loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Closes from the client side and waits for the relay to finish the close, by which time
/// the member has left its room.
async fn leave(mut ws: Client) {
    within("close", ws.close(None)).await.unwrap();
    while let Some(Ok(_)) = within("the end of the connection", ws.next()).await {}
}

/// No message arrives in a short while.
async fn silent(ws: &mut Client) {
    if let Ok(message) = timeout(Duration::from_millis(200), ws.next()).await {
        panic!("expected nothing, got {message:?}");
    }
}

fn limits() -> SignalLimits {
    SignalLimits::default()
}

#[tokio::test]
async fn two_members_exchange_messages_both_ways_in_order() {
    let addr = start(limits()).await;
    let mut caller = connect(addr, "room-order-0001").await;
    let mut callee = connect(addr, "room-order-0001").await;
    // The relay must not read or rewrite what it forwards.
    let offer = r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#;
    send(&mut caller, offer).await;
    assert_eq!(recv(&mut callee).await, offer);
    for i in 0..20 {
        send(&mut callee, &format!("callee {i}")).await;
        send(&mut caller, &format!("caller {i}")).await;
    }
    for i in 0..20 {
        assert_eq!(recv(&mut caller).await, format!("callee {i}"));
        assert_eq!(recv(&mut callee).await, format!("caller {i}"));
    }
    // Nothing comes back to its sender.
    silent(&mut caller).await;
    silent(&mut callee).await;
}

#[tokio::test]
async fn messages_sent_before_the_peer_joins_are_queued_and_delivered_in_order() {
    let addr = start(limits()).await;
    let mut caller = connect(addr, "room-queue-0001").await;
    let early = ["offer", "candidate 1", "candidate 2", "end of candidates"];
    for text in early {
        send(&mut caller, text).await;
    }
    // Queued messages are the caller's while it is alone: it must not hear them back.
    silent(&mut caller).await;
    let mut callee = connect(addr, "room-queue-0001").await;
    for text in early {
        assert_eq!(recv(&mut callee).await, text);
    }
    send(&mut callee, "answer").await;
    assert_eq!(recv(&mut caller).await, "answer");
}

#[tokio::test]
async fn a_lone_member_that_overflows_the_queue_is_closed() {
    let addr = start(limits()).await;
    let mut caller = connect(addr, "room-overflow-01").await;
    for i in 0..signal::QUEUE_MESSAGES {
        send(&mut caller, &format!("queued {i}")).await;
    }
    send(&mut caller, "one too many").await;
    assert_eq!(
        closed(&mut caller).await,
        (1008, signal::UNDELIVERED.into())
    );
}

#[tokio::test]
async fn a_third_member_is_refused_room_full() {
    let addr = start(limits()).await;
    let mut first = connect(addr, "room-full-000001").await;
    let mut second = connect(addr, "room-full-000001").await;
    let mut third = connect(addr, "room-full-000001").await;
    assert_eq!(closed(&mut third).await, (1008, "room is full".into()));
    // The two members go on undisturbed.
    send(&mut first, "still here").await;
    assert_eq!(recv(&mut second).await, "still here");

    // A room made for three takes three.
    let addr = start(SignalLimits {
        max_members: 3,
        ..limits()
    })
    .await;
    let mut a = connect(addr, "room-of-three-01").await;
    let mut b = connect(addr, "room-of-three-01").await;
    let mut c = connect(addr, "room-of-three-01").await;
    send(&mut a, "to both").await;
    assert_eq!(recv(&mut b).await, "to both");
    assert_eq!(recv(&mut c).await, "to both");
    let mut d = connect(addr, "room-of-three-01").await;
    assert_eq!(closed(&mut d).await, (1008, "room is full".into()));
}

#[tokio::test]
async fn bad_room_tokens_are_refused_with_the_reason() {
    let addr = start(limits()).await;
    let too_long = "x".repeat(129);
    for token in [
        "",
        "short",
        "sevench",
        too_long.as_str(),
        "has.a.dot.in.it",
        "bad!token!here",
        "room/with/slash",
        "percent%20encoded",
    ] {
        let mut ws = connect(addr, token).await;
        assert_eq!(
            closed(&mut ws).await,
            (
                1008,
                "room token must be 8 to 128 characters of A-Z a-z 0-9 _ -".into()
            ),
            "token {token:?}"
        );
    }
    // The bounds themselves are fine.
    let mut ws = connect(addr, "eight_ch").await;
    let mut longest = connect(addr, &"y".repeat(128)).await;
    send(&mut ws, "alone").await;
    send(&mut longest, "alone").await;
    silent(&mut ws).await;
}

#[tokio::test]
async fn oversized_message_is_closed_with_1009() {
    let addr = start(SignalLimits {
        max_message_bytes: 1024,
        ..limits()
    })
    .await;
    let mut sender = connect(addr, "room-size-000001").await;
    let mut receiver = connect(addr, "room-size-000001").await;
    let largest = "a".repeat(1024);
    send(&mut sender, &largest).await;
    assert_eq!(recv(&mut receiver).await, largest);

    send(&mut sender, &"b".repeat(1025)).await;
    let (code, reason) = closed(&mut sender).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("1024"), "{reason}");
    silent(&mut receiver).await;

    // Far over the limit: refused from the frame header, without reading it all first.
    let mut big = connect(addr, "room-size-000002").await;
    send(&mut big, &"c".repeat(4 << 20)).await;
    assert_eq!(closed(&mut big).await.0, 1009);
}

#[tokio::test]
async fn binary_message_is_closed_with_1003() {
    let addr = start(limits()).await;
    let mut sender = connect(addr, "room-binary-0001").await;
    let mut receiver = connect(addr, "room-binary-0001").await;
    within("send", sender.send(Message::binary(vec![1, 2, 3])))
        .await
        .unwrap();
    assert_eq!(
        closed(&mut sender).await,
        (1003, "only text messages are relayed".into())
    );
    silent(&mut receiver).await;
}

#[tokio::test]
async fn idle_connection_is_closed_after_the_timeout() {
    let addr = start(SignalLimits {
        idle_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut ws = connect(addr, "room-idle-000001").await;
    // Pings count as activity, and the relay answers them.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        within("ping", ws.send(Message::Ping(vec![7].into())))
            .await
            .unwrap();
        match within("pong", ws.next()).await {
            Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], [7]),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    let started = tokio::time::Instant::now();
    assert_eq!(closed(&mut ws).await, (1001, "idle timeout".into()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn rooms_are_separate() {
    let addr = start(limits()).await;
    let mut a1 = connect(addr, "room-separate-01").await;
    let mut b1 = connect(addr, "room-separate-01").await;
    let mut a2 = connect(addr, "room-separate-02").await;
    let mut b2 = connect(addr, "room-separate-02").await;
    send(&mut a2, "for room two").await;
    assert_eq!(recv(&mut b2).await, "for room two");
    // Had room two leaked into room one, its message would be first here.
    send(&mut a1, "for room one").await;
    assert_eq!(recv(&mut b1).await, "for room one");
    send(&mut b1, "reply one").await;
    send(&mut b2, "reply two").await;
    assert_eq!(recv(&mut a1).await, "reply one");
    assert_eq!(recv(&mut a2).await, "reply two");
    silent(&mut a1).await;
    silent(&mut b2).await;
}

#[tokio::test]
async fn max_rooms_limit_refuses_new_rooms_until_one_is_deleted() {
    let addr = start(SignalLimits {
        max_rooms: 2,
        ..limits()
    })
    .await;
    let one = connect(addr, "room-limit-00001").await;
    let mut two = connect(addr, "room-limit-00002").await;
    let mut three = connect(addr, "room-limit-00003").await;
    assert_eq!(
        closed(&mut three).await,
        (1013, "too many rooms, try again later".into())
    );
    // Joining an existing room is not a new room.
    let mut two_b = connect(addr, "room-limit-00002").await;
    send(&mut two, "hello").await;
    assert_eq!(recv(&mut two_b).await, "hello");

    // The last member leaving deletes the room and frees its place.
    leave(one).await;
    let mut three = connect(addr, "room-limit-00003").await;
    send(&mut three, "queued").await;
    let mut three_b = connect(addr, "room-limit-00003").await;
    assert_eq!(recv(&mut three_b).await, "queued");
}

#[tokio::test]
async fn a_member_that_leaves_and_rejoins_continues() {
    let addr = start(limits()).await;
    let mut caller = connect(addr, "room-rejoin-0001").await;
    let mut callee = connect(addr, "room-rejoin-0001").await;
    send(&mut caller, "offer").await;
    assert_eq!(recv(&mut callee).await, "offer");
    leave(callee).await;

    // The room lives on with the caller, which keeps sending into it.
    send(&mut caller, "while you were away").await;
    let mut callee = connect(addr, "room-rejoin-0001").await;
    assert_eq!(recv(&mut callee).await, "while you were away");
    send(&mut callee, "back").await;
    assert_eq!(recv(&mut caller).await, "back");
    send(&mut caller, "welcome").await;
    assert_eq!(recv(&mut callee).await, "welcome");

    // Both gone: the room is deleted, with nothing left queued in it.
    send(&mut caller, "last words").await;
    assert_eq!(recv(&mut callee).await, "last words");
    leave(caller).await;
    leave(callee).await;
    let mut fresh = connect(addr, "room-rejoin-0001").await;
    silent(&mut fresh).await;
}

#[tokio::test]
async fn a_plain_http_request_gets_400() {
    let addr = start(limits()).await;
    let response = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.write_all(b"GET /some-room-token HTTP/1.1\r\nHost: relay\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).unwrap();
        response
    });
    let response = within("an HTTP answer", response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(response.contains("ws://HOST:PORT/ROOM"), "{response}");
}

#[tokio::test]
async fn connections_over_the_cap_get_503() {
    let addr = start(SignalLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let mut a = connect(addr, "room-cap-0000001").await;
    let mut b = connect(addr, "room-cap-0000001").await;
    match within(
        "a refusal",
        connect_async(format!("ws://{addr}/room-cap-0000002")),
    )
    .await
    {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    send(&mut a, "still relayed").await;
    assert_eq!(recv(&mut b).await, "still relayed");

    // A freed slot takes a new connection.
    leave(b).await;
    let mut c = within("a free slot", async {
        loop {
            match connect_async(format!("ws://{addr}/room-cap-0000001")).await {
                Ok((ws, _)) => break ws,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    send(&mut a, "to the newcomer").await;
    assert_eq!(recv(&mut c).await, "to the newcomer");
}

/// The real binary, killed by its PID when the test ends, whatever happens.
struct Relay {
    child: Child,
    // Kept open: the binary must be able to write to its standard output until it exits.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_relays_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_icebreaker"))
        .args([
            "signal",
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout",
            "30",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (stdout, banner) = within(
        "the banner",
        tokio::task::spawn_blocking(move || {
            let mut stdout = stdout;
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            (stdout, line)
        }),
    )
    .await
    .unwrap();
    let mut relay = Relay {
        child,
        _stdout: stdout,
    };
    // "icebreaker VERSION: signaling relay on ws://127.0.0.1:PORT/ROOM"
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no URL in the banner {banner:?}"));
    assert!(
        banner.contains("signaling relay on ws://127.0.0.1:"),
        "{banner}"
    );
    let base = url.strip_suffix("/ROOM").unwrap();

    let connect_url = |room: &str| format!("{base}/{room}");
    let (mut caller, _) = within("connect", connect_async(connect_url("binary-room-0001")))
        .await
        .unwrap();
    send(&mut caller, "offer").await;
    let (mut callee, _) = within("connect", connect_async(connect_url("binary-room-0001")))
        .await
        .unwrap();
    assert_eq!(recv(&mut callee).await, "offer");
    send(&mut callee, "answer").await;
    assert_eq!(recv(&mut caller).await, "answer");
    let (mut full, _) = within("connect", connect_async(connect_url("binary-room-0001")))
        .await
        .unwrap();
    assert_eq!(closed(&mut full).await, (1008, "room is full".into()));

    let pid = relay.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    assert_eq!(
        closed(&mut caller).await,
        (1001, "server shutting down".into())
    );
    assert_eq!(
        closed(&mut callee).await,
        (1001, "server shutting down".into())
    );
    let status = within("the exit", async {
        loop {
            if let Some(status) = relay.child.try_wait().unwrap() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_member_that_does_not_read_is_dropped_and_the_others_go_on() {
    let addr = start(SignalLimits {
        max_members: 3,
        ..limits()
    })
    .await;
    let mut sender = connect(addr, "room-slow-reader").await;
    let mut slow = connect(addr, "room-slow-reader").await;
    let mut reader = connect(addr, "room-slow-reader").await;
    const COUNT: usize = 1000;
    let chunk = "z".repeat(32 * 1024);
    let reading = tokio::spawn(async move {
        for _ in 0..COUNT {
            recv(&mut reader).await;
        }
        reader
    });
    for _ in 0..COUNT {
        send(&mut sender, &chunk).await;
    }
    let mut reader = within("the reader", reading).await.unwrap();

    // The member that did not read gets what fitted in the buffers, then the reason.
    let mut got = 0;
    let (code, reason) = loop {
        match within("the slow member's messages", slow.next()).await {
            Some(Ok(Message::Text(_))) => got += 1,
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(got < COUNT);
    assert_eq!((code, reason), (1008, signal::UNDELIVERED.into()));
    send(&mut sender, "after").await;
    assert_eq!(recv(&mut reader).await, "after");
}
