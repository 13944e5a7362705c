//! The metrics HTTP endpoint on a real socket: `/metrics`, `/healthz`, `/readyz`, refusals,
//! deadlines, and stopping.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use icebreaker::metrics::{
    Direction, MAX_REQUEST_HEAD, METRICS_CONTENT_TYPE, Metrics, REQUEST_DEADLINE, serve_http,
};

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<io::Result<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new(1000);
        let ready = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let (m, r, s) = (metrics.clone(), ready.clone(), stop.clone());
        thread::spawn(move || tx.send(serve_http(listener, m, r, s)));
        Server {
            addr,
            metrics,
            ready,
            stop,
            done,
        }
    }

    /// Sets `stop` and checks that the server returns within a second.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.done
            .recv_timeout(Duration::from_secs(1))
            .expect("serve_http returns within a second of stop")
            .expect("serve_http returns Ok");
    }

    fn get(&self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: icebreaker\r\n\r\n").as_bytes())
    }

    /// Sends `raw` on a new connection and reads the reply until the server closes.
    fn send(&self, raw: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).expect("the reply, then EOF");
        Reply::parse(&bytes)
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn parse(bytes: &[u8]) -> Reply {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .unwrap_or_else(|| panic!("status line {status_line:?}"))
            .parse()
            .unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("a header");
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[test]
fn the_endpoint_serves_metrics_health_and_readiness() {
    let server = Server::start();
    server
        .metrics
        .worker()
        .relayed(Direction::ClientToPeer, 1200);

    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(METRICS_CONTENT_TYPE));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert!(
        reply
            .body
            .contains("icebreaker_turn_relayed_bytes_total{direction=\"client_to_peer\"} 1200\n")
    );
    // The grammar of the exposition is tested in tests/metrics.rs.
    assert_eq!(reply.body, server.metrics.encode());
    assert_eq!(server.get("/metrics?name[]=up").status, 200);

    let head = server.send(b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 1000);

    let health = server.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(server.get("/readyz").status, 200);
    server.ready.store(false, Ordering::Relaxed);
    assert_eq!(server.get("/readyz").status, 503);
    assert_eq!(
        server.get("/healthz").status,
        200,
        "draining is still alive"
    );

    assert_eq!(server.get("/").status, 404);
    assert_eq!(server.get("/metrics/extra").status, 404);
    let post = server.send(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(server.send(b"hello\r\n\r\n").status, 400);
    assert_eq!(server.send(b"GET /metrics SPDY/3\r\n\r\n").status, 400);

    server.stop();
}

#[test]
fn an_oversized_request_head_is_refused_at_once() {
    let server = Server::start();
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    request.resize(request.len() + 2 * MAX_REQUEST_HEAD, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let started = Instant::now();
    let reply = server.send(&request);
    assert_eq!(reply.status, 431);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.get("/healthz").status, 200);
    server.stop();
}

#[test]
fn a_slow_client_gets_408_at_the_deadline() {
    let server = Server::start();
    let started = Instant::now();
    let reply = server.send(b"GET /metrics HTTP/1.1\r\nHost: ");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 408);
    assert!(elapsed >= REQUEST_DEADLINE, "{elapsed:?}");
    assert!(
        elapsed < REQUEST_DEADLINE + Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(server.get("/healthz").status, 200);
    server.stop();
}

#[test]
fn stop_ends_the_server_even_with_a_silent_client_connected() {
    let server = Server::start();
    let silent = TcpStream::connect(server.addr).unwrap();
    // Let the server accept it and wait for its request.
    thread::sleep(Duration::from_millis(200));
    server.stop();
    drop(silent);
}

#[test]
fn stop_ends_an_idle_server() {
    Server::start().stop();
}
