//! Setup: sockets, transaction IDs, transactions, the Binding probe, allocations.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use icebreaker_wire::attr::{
    ErrorCodeAttribute, Nonce, Realm, RequestedTransport, Username, XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::{
    Class, ErrorCode, IntegrityKey, Message, MessageType, MessageWriter, Method, TransactionId,
    WriteError,
};
use nix::sys::socket::{setsockopt, sockopt};

use crate::{Args, BUF_LEN};

/// Socket buffers asked for; the kernel caps them at `net.core.[rw]mem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

pub(crate) fn udp_socket() -> Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a UDP socket")?;
    // Best effort: the kernel caps both at net.core.[rw]mem_max.
    let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    Ok(socket)
}

/// Throws away whatever is queued on a socket.
pub(crate) fn drain_socket(socket: &UdpSocket) {
    let mut buf = [0u8; BUF_LEN];
    let _ = socket.set_nonblocking(true);
    for _ in 0..100_000 {
        match socket.recv(&mut buf) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) => break,
        }
    }
    let _ = socket.set_nonblocking(false);
}

/// Transaction IDs: a xorshift generator seeded from the clock and the process ID.
pub(crate) struct TidGenerator(u64);

impl TidGenerator {
    pub(crate) fn new() -> TidGenerator {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        TidGenerator(nanos ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn next(&mut self) -> TransactionId {
        let (a, b) = (self.next_u64().to_le_bytes(), self.next_u64().to_le_bytes());
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&a);
        id[8..].copy_from_slice(&b[..4]);
        TransactionId::new(id)
    }
}

/// A client's way to the server: a connected UDP socket, or a TCP or TLS connection.
pub(crate) trait Exchange {
    /// Sends `request` and waits for the response with its transaction ID until `deadline`,
    /// ignoring anything else that arrives. Returns the response's length in `reply`.
    fn transact(
        &mut self,
        request: &[u8],
        tid: TransactionId,
        reply: &mut [u8],
        deadline: Instant,
    ) -> Result<usize>;
}

impl Exchange for UdpSocket {
    /// Retransmits (100 ms, doubling up to 1 s) until `deadline`.
    fn transact(
        &mut self,
        request: &[u8],
        tid: TransactionId,
        reply: &mut [u8],
        deadline: Instant,
    ) -> Result<usize> {
        transact_udp(self, request, tid, reply, deadline)
    }
}

fn transact_udp(
    socket: &UdpSocket,
    request: &[u8],
    tid: TransactionId,
    reply: &mut [u8],
    deadline: Instant,
) -> Result<usize> {
    let mut rto = Duration::from_millis(100);
    while Instant::now() < deadline {
        match socket.send(request) {
            Ok(_) => {}
            // The server is not listening (yet): an ICMP error; retry after the timeout.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(error) => return Err(error).context("send"),
        }
        let resend_at = (Instant::now() + rto).min(deadline);
        loop {
            let left = resend_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match socket.recv(reply) {
                Ok(n) if n >= 20 && reply[8..20] == tid.as_bytes()[..] && reply[0] & 0xC0 == 0 => {
                    return Ok(n);
                }
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    thread::sleep(left.min(Duration::from_millis(50)));
                }
                Err(error) => return Err(error).context("receive"),
            }
        }
        rto = (rto * 2).min(Duration::from_secs(1));
    }
    bail!("no answer from the server")
}

/// Waits until the server answers a Binding request over UDP, at most `limit`.
pub(crate) fn probe(server: SocketAddr, limit: Duration) -> Result<bool> {
    let mut socket = udp_socket()?;
    socket.connect(server)?;
    Ok(binding(
        &mut socket,
        &mut TidGenerator::new(),
        Instant::now() + limit,
    )
    .is_ok())
}

/// One Binding request and its response, before `deadline`.
pub(crate) fn binding(
    conn: &mut impl Exchange,
    tids: &mut TidGenerator,
    deadline: Instant,
) -> Result<()> {
    let tid = tids.next();
    let mut buf = [0u8; 64];
    let kind = MessageType::new(Method::BINDING, Class::Request);
    let len = MessageWriter::new(&mut buf, kind, tid)?.finish();
    let mut reply = [0u8; BUF_LEN];
    conn.transact(&buf[..len], tid, &mut reply, deadline)?;
    Ok(())
}

/// One TURN allocation and its credentials; the connection it lives on is passed to each call.
pub(crate) struct Allocation {
    user: String,
    key: IntegrityKey,
    realm: String,
    nonce: String,
    pub(crate) relay: SocketAddr,
}

impl Allocation {
    /// Allocate: first without credentials, for the 401 with REALM and NONCE, then with them.
    pub(crate) fn new(
        conn: &mut impl Exchange,
        args: &Args,
        tids: &mut TidGenerator,
        deadline: Instant,
    ) -> Result<Allocation> {
        let mut buf = [0u8; 512];
        let mut reply = vec![0u8; BUF_LEN];
        let tid = tids.next();
        let kind = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut w = MessageWriter::new(&mut buf, kind, tid)?;
        w.add(&RequestedTransport::UDP)?;
        let len = w.finish();
        let n = conn.transact(&buf[..len], tid, &mut reply, deadline)?;
        let message = Message::parse(&reply[..n])?;
        if message.class() != Class::Error {
            bail!("the server allocated without credentials");
        }
        let (code, reason) = error_code(&message);
        ensure!(
            code == ErrorCode::UNAUTHENTICATED.code(),
            "Allocate without credentials: {code} {reason}"
        );
        let realm = message
            .get::<Realm>()?
            .context("401 without REALM")?
            .0
            .to_owned();
        let nonce = message
            .get::<Nonce>()?
            .context("401 without NONCE")?
            .0
            .to_owned();
        let key = IntegrityKey::long_term(KeyAlgorithm::Md5, &args.user, &realm, &args.password);
        let mut allocation = Allocation {
            user: args.user.clone(),
            key,
            realm,
            nonce,
            relay: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        };
        let reply = allocation.request(
            conn,
            Method::ALLOCATE,
            |w| w.add(&RequestedTransport::UDP),
            tids,
            deadline,
        )?;
        let message = Message::parse(&reply)?;
        allocation.relay = message
            .get::<XorRelayedAddress>()?
            .context("Allocate success without XOR-RELAYED-ADDRESS")?
            .0;
        Ok(allocation)
    }

    /// An authenticated request with `attrs`; a 438 (or a 401 with a fresh NONCE) is retried
    /// with the new nonce. Returns the success response.
    pub(crate) fn request(
        &mut self,
        conn: &mut impl Exchange,
        method: Method,
        attrs: impl Fn(&mut MessageWriter<'_>) -> Result<(), WriteError>,
        tids: &mut TidGenerator,
        deadline: Instant,
    ) -> Result<Vec<u8>> {
        for _ in 0..3 {
            let tid = tids.next();
            let mut buf = [0u8; 512];
            let kind = MessageType::new(method, Class::Request);
            let mut w = MessageWriter::new(&mut buf, kind, tid)?;
            attrs(&mut w)?;
            w.add(&Username(&self.user))?;
            w.add(&Realm(&self.realm))?;
            w.add(&Nonce(&self.nonce))?;
            w.add_message_integrity(&self.key)?;
            let len = w.finish();
            let mut reply = vec![0u8; BUF_LEN];
            let n = conn.transact(&buf[..len], tid, &mut reply, deadline)?;
            reply.truncate(n);
            let message = Message::parse(&reply)?;
            match message.class() {
                Class::Success => return Ok(reply),
                Class::Error => {
                    let (code, reason) = error_code(&message);
                    let fresh = message.get::<Nonce>().ok().flatten();
                    match fresh {
                        Some(Nonce(nonce))
                            if code == ErrorCode::STALE_NONCE.code()
                                || (code == ErrorCode::UNAUTHENTICATED.code()
                                    && nonce != self.nonce) =>
                        {
                            self.nonce = nonce.to_owned();
                        }
                        _ => bail!("{method:?} refused: {code} {reason}"),
                    }
                }
                class => bail!("unexpected {class:?} answer to {method:?}"),
            }
        }
        bail!("{method:?}: the nonce kept going stale")
    }
}

fn error_code(message: &Message<'_>) -> (u16, String) {
    match message.get::<ErrorCodeAttribute>() {
        Ok(Some(e)) => (e.code.code(), e.reason.to_owned()),
        _ => (0, "no ERROR-CODE".to_owned()),
    }
}
