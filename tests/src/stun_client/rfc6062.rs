//! RFC 6062 TCP allocations from the client's side: the TCP Allocate, Connect, the
//! ConnectionBind of a data connection, and raw bytes on it once bound.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use icebreaker_wire::attr::{ConnectionId, RequestedTransport, XorPeerAddress};
use icebreaker_wire::{Class, Message, MessageType, Method};

use super::{Answer, Link, RecvError, StunClient, is_timeout};

impl Answer {
    /// Its CONNECTION-ID (RFC 6062), if it has one.
    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.message()
            .get::<ConnectionId>()
            .unwrap_or_else(|e| panic!("bad CONNECTION-ID: {e}"))
    }
}

impl StunClient {
    /// Makes a TCP allocation (RFC 6062) as `username` and returns its relayed address;
    /// panics unless the Allocate succeeds.
    pub fn allocate_tcp_relayed(&mut self, username: &str, password: &str) -> SocketAddr {
        let answer = self.allocate_transport(RequestedTransport::TCP, username, password, |_| {});
        answer.expect_success("TCP Allocate");
        let relayed = answer.relayed();
        *relayed
            .first()
            .unwrap_or_else(|| panic!("no XOR-RELAYED-ADDRESS in {answer:?}"))
    }

    /// Signs later requests with the credentials and nonce `control` holds: a data connection
    /// authenticates as its control connection (RFC 6062 §4.3).
    pub fn share_credentials(&mut self, control: &StunClient) {
        self.credentials = Some(control.credentials().clone());
    }

    /// A signed Connect (RFC 6062 §4.3) to `peer`; its answer comes once the server's
    /// connection to the peer is made or has failed.
    pub fn connect(&mut self, peer: SocketAddr) -> Answer {
        self.signed(Method::CONNECT, |w| {
            w.add(&XorPeerAddress(peer)).expect("fits");
        })
    }

    /// A signed ConnectionBind (RFC 6062 §4.3) for connection `id`, with the credentials of
    /// [`StunClient::share_credentials`]. After a success the connection is a raw byte pipe
    /// to the peer: see [`StunClient::read_bytes`].
    pub fn connection_bind(&mut self, id: ConnectionId) -> Answer {
        self.signed(Method::CONNECTION_BIND, |w| {
            w.add(&id).expect("fits");
        })
    }

    /// The bytes of a data connection that arrive within `timeout`: first those read after
    /// the last frame, then one read. `Closed` at the end of the stream.
    pub fn read_bytes(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        if !self.inbox.is_empty() {
            return Ok(std::mem::take(&mut self.inbox));
        }
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvError::TimedOut);
            }
            self.link.set_read_timeout(left);
            match self.link.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => return Ok(chunk[..n].to_vec()),
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) || is_timeout(&e) => {}
                Err(_) => return Err(RecvError::Closed),
            }
        }
    }

    /// Reads a data connection until `len` bytes came, within `timeout`.
    pub fn read_exact_bytes(&mut self, len: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::with_capacity(len);
        while got.len() < len {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_bytes(left) {
                Ok(bytes) => got.extend_from_slice(&bytes),
                Err(e) => panic!("{} of {len} bytes, then {e:?}", got.len()),
            }
        }
        got
    }

    /// Ends what the client sends and keeps reading: a FIN on TCP, a close_notify on TLS.
    pub fn shutdown_write(&mut self) {
        match &mut self.link {
            Link::Tcp(stream) => stream
                .shutdown(std::net::Shutdown::Write)
                .unwrap_or_else(|e| panic!("shutdown: {e}")),
            Link::Tls(tls) => {
                tls.conn.send_close_notify();
                tls.flush().unwrap_or_else(|e| panic!("close_notify: {e}"));
            }
            Link::Udp(_) | Link::Dtls(_) => panic!("only a stream has a write side to shut"),
        }
    }
}

/// The CONNECTION-ID and XOR-PEER-ADDRESS of a ConnectionAttempt indication (RFC 6062 §4.4);
/// panics when `frame` is not one.
pub fn connection_attempt(frame: &[u8]) -> (ConnectionId, SocketAddr) {
    let message = Message::parse(frame).unwrap_or_else(|e| panic!("not STUN: {e}"));
    assert_eq!(
        message.message_type(),
        MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication),
        "not a ConnectionAttempt: {message:?}"
    );
    let id = message
        .get::<ConnectionId>()
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no CONNECTION-ID in {message:?}"));
    let peer = message
        .get::<XorPeerAddress>()
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no XOR-PEER-ADDRESS in {message:?}"))
        .0;
    (id, peer)
}
