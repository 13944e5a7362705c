//! The operator's HTTP endpoint: `/metrics`, `/healthz` and `/readyz`.
//!
//! A blocking server that answers one connection at a time, one request per connection. That
//! is all a scraper and a probe need, and it keeps the endpoint off the workers and free of an
//! async runtime. The cost is that a client which sends its request slowly delays the next
//! one, so every request has a hard deadline ([`REQUEST_DEADLINE`] for the whole head, not per
//! read) and a size limit ([`MAX_REQUEST_HEAD`]). Keep the endpoint on loopback or a private
//! network all the same: it has no authentication.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use super::Metrics;

/// The largest request line plus headers accepted; larger requests get 431. Scrapers send a
/// few hundred bytes.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a client has to send its whole request head; then it gets 408.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// How often `stop` is checked while waiting for a connection or for request bytes.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How long writing a response may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// After answering, unread request bytes are read and dropped for at most this long (and at
/// most [`DRAIN_BYTES`]): closing a socket with unread input makes the kernel send a reset,
/// which can destroy the response before the client reads it (431 to a large request).
const DRAIN_TIME: Duration = Duration::from_millis(250);
const DRAIN_BYTES: usize = 64 * 1024;

/// The content type of `/metrics`: the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` (the exposition of `metrics`), `/healthz` (200 while the process runs)
/// and `/readyz` (200 while `ready` is true, 503 once it is false, when the server drains)
/// on `listener` until `stop` is set. It notices `stop` within 50 ms while it waits for a
/// connection or a request, or else once the response it is writing is out (at most 2 s).
///
/// Only GET and HEAD are served (others get 405), unknown paths get 404. A failure talking to
/// one client is that client's problem and does not end the server; neither does a failed
/// accept (out of file descriptors, say), which is retried. The only error returned is from
/// putting the listener in non-blocking mode at the start.
pub fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    // Non-blocking accept so that `stop` is seen without a connection arriving.
    listener.set_nonblocking(true)?;
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = exchange(stream, &metrics, &ready, &stop);
            }
            Err(_) => thread::sleep(STOP_POLL),
        }
    }
    Ok(())
}

/// Reads one request from `stream`, answers it and closes the connection.
fn exchange(
    mut stream: TcpStream,
    metrics: &Metrics,
    ready: &AtomicBool,
    stop: &AtomicBool,
) -> io::Result<()> {
    // Some systems (not Linux) let accepted sockets inherit the listener's non-blocking mode.
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut head = [0u8; MAX_REQUEST_HEAD];
    let response = match read_head(&mut stream, &mut head, stop)? {
        Head::Complete(len) => respond(&head[..len], metrics, ready),
        Head::TooLarge => Response::text(431, "Request Header Fields Too Large", "too large\n"),
        Head::TimedOut => Response::text(408, "Request Timeout", "timed out\n"),
        Head::Closed => return Ok(()),
    };
    stream.write_all(&response.bytes)?;
    stream.flush()?;
    drain_and_close(stream);
    Ok(())
}

/// What came of reading a request head.
enum Head {
    /// The head, terminated by an empty line, is the first this many bytes.
    Complete(usize),
    /// The buffer filled up before the head ended.
    TooLarge,
    /// The client did not send the whole head in time.
    TimedOut,
    /// The client went away, or the server is stopping.
    Closed,
}

fn read_head(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<Head> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut len = 0;
    loop {
        if stop.load(Relaxed) {
            return Ok(Head::Closed);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        // Short reads so that `stop` and the deadline are checked while a client dawdles.
        stream.set_read_timeout(Some(left.min(STOP_POLL)))?;
        let Some(free) = buf.get_mut(len..) else {
            return Ok(Head::TooLarge);
        };
        match stream.read(free) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => {
                // The terminator may straddle the previous read.
                let from = len.saturating_sub(3);
                len += n;
                if let Some(end) = head_end(&buf[from..len]) {
                    return Ok(Head::Complete(from + end));
                }
                if len == buf.len() {
                    return Ok(Head::TooLarge);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The length of the head in `bytes` including the empty line that ends it, if it is there.
/// Bare LF line ends are accepted, as RFC 9112 §2.2 allows.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(2)
        .enumerate()
        .find_map(|(i, pair)| match pair {
            [b'\n', b'\n'] => Some(i + 2),
            [b'\n', b'\r'] if bytes.get(i + 2) == Some(&b'\n') => Some(i + 3),
            _ => None,
        })
}

/// A complete HTTP/1.1 response.
struct Response {
    bytes: Vec<u8>,
}

impl Response {
    fn new(status: u16, reason: &str, content_type: &str, body: &[u8], head_only: bool) -> Self {
        let mut bytes = format!(
            "HTTP/1.1 {status} {reason}\r\n\
             Content-Type: {content_type}\r\n\
             Content-Length: {}\r\n\
             Cache-Control: no-store\r\n\
             Connection: close\r\n",
            body.len()
        )
        .into_bytes();
        if status == 405 {
            bytes.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        if !head_only {
            bytes.extend_from_slice(body);
        }
        Response { bytes }
    }

    fn text(status: u16, reason: &str, body: &str) -> Self {
        Response::new(
            status,
            reason,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            false,
        )
    }
}

fn respond(head: &[u8], metrics: &Metrics, ready: &AtomicBool) -> Response {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Response::text(400, "Bad Request", "bad request\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "Bad Request", "bad request\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::text(405, "Method Not Allowed", "method not allowed\n"),
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let text = |status, reason, body: &str| {
        Response::new(
            status,
            reason,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            head_only,
        )
    };
    match path {
        "/metrics" => Response::new(
            200,
            "OK",
            METRICS_CONTENT_TYPE,
            metrics.encode().as_bytes(),
            head_only,
        ),
        "/healthz" => text(200, "OK", "ok\n"),
        "/readyz" if ready.load(Relaxed) => text(200, "OK", "ready\n"),
        "/readyz" => text(503, "Service Unavailable", "draining\n"),
        _ => text(404, "Not Found", "not found\n"),
    }
}

/// Ends the response with a FIN, then reads what the client still sends, within bounds,
/// before closing, so that the close does not turn into a reset.
fn drain_and_close(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + DRAIN_TIME;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::head_end;

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: x\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b"\r\n\r"), None);
    }
}
