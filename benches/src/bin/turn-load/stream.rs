//! TURN over TCP and TLS: one client connection per allocation, STUN messages and ChannelData
//! back to back on it (RFC 8656 §3.1), cut into frames with `icebreaker_wire::framing`.
//!
//! Setup and teardown use the connections blocking, with timeouts; the measured run uses them
//! non-blocking under a level-triggered epoll. A read takes whatever the socket holds (often
//! several frames), and a window refill goes out as one write, so that the generator's own
//! cost per round trip stays below the server's.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use icebreaker_wire::TransactionId;
use icebreaker_wire::framing::{self, Framing};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::messages::{Ident, Templates};
use crate::setup::Exchange;
use crate::traffic::{SWEEP_NS, Slots, Stats, expire_lost, wait_ready};
use crate::{Args, BATCH, Clock, TlsVersion, Window};

/// The ALPN protocol of STUN and TURN over TLS (RFC 7443).
const ALPN_STUN_TURN: &[u8] = b"stun.turn";
/// Plaintext received and not yet handled, per connection: room for a whole window of the
/// largest frames (64 × 1440 B) beside a partial one.
const RX_LEN: usize = 128 << 10;
/// Ciphertext read with one system call (TLS), per client thread.
const CIPHER_LEN: usize = 64 << 10;
/// What one ciphertext read may add to the plaintext beyond its own length: a TLS record begun
/// in an earlier read (at most 16 KiB of plaintext and its overhead). Reads leave this much
/// spare, so that all the plaintext they yield fits in the receive buffer at once.
const RECORD_SLACK: usize = 17 << 10;
/// Reads of one connection per readiness event, so that one busy connection cannot starve the
/// others of the thread.
const READS_PER_EVENT: usize = 16;
/// Frames skipped while waiting for a response during setup or teardown.
const MAX_SKIPPED_FRAMES: usize = 1_000_000;
/// Pause between attempts to connect while the server's listener is not up yet.
const CONNECT_RETRY: Duration = Duration::from_millis(50);

/// The certificates of a PEM file (`--ca`), as trust anchors: over TLS and DTLS alike.
pub(crate) fn trusted(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(path).with_context(|| format!("read {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("a certificate in {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("trust the certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(roots)
}

/// Opens the client connections: TCP, or TLS trusting one certificate (`--ca`).
pub(crate) struct Connector {
    server: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
}

impl Connector {
    /// A TCP connector, or with `--ca`, a TLS one that trusts only the certificates in that
    /// file and checks the server's certificate against the server's IP address.
    pub(crate) fn new(args: &Args) -> Result<Connector> {
        let server = args.server;
        let tls = match args.ca.as_deref() {
            None => None,
            Some(path) => {
                let roots = trusted(path)?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let versions: &[&rustls::SupportedProtocolVersion] = match args.tls_version {
                    None => rustls::DEFAULT_VERSIONS,
                    Some(TlsVersion::V1_2) => &[&rustls::version::TLS12],
                    Some(TlsVersion::V1_3) => &[&rustls::version::TLS13],
                };
                let mut config = ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(versions)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
                Some(Arc::new(config))
            }
        };
        Ok(Connector { server, tls })
    }

    /// Connects (and, for TLS, completes the handshake) before `deadline`, retrying while the
    /// server refuses the connection: its listener may not be up yet.
    pub(crate) fn connect(&self, deadline: Instant) -> Result<StreamConn> {
        let tcp = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("could not connect to {}", self.server);
            }
            match TcpStream::connect_timeout(&self.server, left) {
                Ok(tcp) => break tcp,
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    thread::sleep(CONNECT_RETRY.min(left));
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("connect to {}", self.server));
                }
            }
        };
        // Frames are written whole and answered at once: Nagle's delay would only add latency.
        tcp.set_nodelay(true)?;
        let tls = match &self.tls {
            None => None,
            Some(config) => {
                let name = ServerName::IpAddress(self.server.ip().into());
                let mut tls = ClientConnection::new(config.clone(), name)?;
                // The generator bounds what it queues itself (a window per connection).
                tls.set_buffer_limit(None);
                // Bounded by the deadline: every pass reads or writes, or times out.
                while tls.is_handshaking() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        bail!("TLS handshake with {} timed out", self.server);
                    }
                    let mut tcp = &tcp;
                    tcp.set_read_timeout(Some(left))?;
                    tcp.set_write_timeout(Some(left))?;
                    tls.complete_io(&mut tcp)
                        .with_context(|| format!("TLS handshake with {}", self.server))?;
                }
                Some(Box::new(tls))
            }
        };
        Ok(StreamConn {
            tcp,
            tls,
            rx: vec![0; RX_LEN],
            start: 0,
            end: 0,
            tx: Vec::new(),
            tx_pos: 0,
        })
    }
}

/// One client connection and its framing state.
pub(crate) struct StreamConn {
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Plaintext read: unhandled frames in `start..end`.
    rx: Vec<u8>,
    start: usize,
    end: usize,
    /// TCP only: bytes queued and not yet taken by the kernel, from `tx_pos` (TLS queues in
    /// rustls).
    tx: Vec<u8>,
    tx_pos: usize,
}

impl StreamConn {
    /// The negotiated TLS version and cipher suite, if this is a TLS connection.
    pub(crate) fn tls_description(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(format!(
            "{:?} {:?}",
            tls.protocol_version()?,
            tls.negotiated_cipher_suite()?.suite()
        ))
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nonblocking(on)
    }

    /// The next whole frame in the receive buffer, as a range of it; `None` when more bytes are
    /// needed. An error means the stream lost sync.
    fn next_frame(&mut self) -> Result<Option<Range<usize>>> {
        let pending = &self.rx[self.start..self.end];
        match framing::frame(pending) {
            Ok(Framing::Complete(frame)) => {
                let range = self.start..self.start + frame.len;
                self.start += frame.len;
                Ok(Some(range))
            }
            Ok(Framing::Incomplete { needed }) => {
                if needed > self.rx.len() {
                    bail!("a frame of {needed} bytes from the server");
                }
                Ok(None)
            }
            Err(error) => bail!("the stream from the server lost sync: {error}"),
        }
    }

    /// Moves a partial frame to the front of the receive buffer, so that reads have room.
    fn compact(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.rx.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads what the socket holds into the receive buffer (decrypted, for TLS), with one
    /// system call. Returns the socket's error when there is one (`WouldBlock` when
    /// non-blocking and nothing is there).
    fn fill(&mut self, cipher: &mut [u8]) -> io::Result<Filled> {
        self.compact();
        let Some(tls) = self.tls.as_deref_mut() else {
            let want = self.rx.len() - self.end;
            let n = self.tcp.read(&mut self.rx[self.end..])?;
            self.end += n;
            return Ok(match n {
                0 => Filled::Eof,
                n => Filled::Bytes { drained: n < want },
            });
        };
        // Plaintext rustls still holds first: it may have been left there when the buffer
        // was full.
        let before = self.end;
        drain_plaintext(tls, &mut self.rx, &mut self.end)?;
        if self.end > before {
            // Progress without touching the socket; the caller reads again.
            return Ok(Filled::Bytes { drained: false });
        }
        let room = (self.rx.len() - self.end).saturating_sub(RECORD_SLACK);
        let want = cipher.len().min(room);
        if want == 0 {
            return Err(io::Error::other("the receive buffer is full"));
        }
        let n = self.tcp.read(&mut cipher[..want])?;
        if n == 0 {
            return Ok(Filled::Eof);
        }
        let mut input = &cipher[..n];
        // Every pass consumes some input (read_tls takes up to a record, or 4 KiB), so this
        // ends long before n passes.
        for _ in 0..n {
            if input.is_empty() {
                break;
            }
            if tls.read_tls(&mut input)? == 0 {
                // After the server's close_notify rustls takes nothing more.
                return Ok(Filled::Eof);
            }
            tls.process_new_packets().map_err(io::Error::other)?;
            drain_plaintext(tls, &mut self.rx, &mut self.end)?;
        }
        Ok(Filled::Bytes { drained: n < want })
    }

    /// Queues bytes to send; [`StreamConn::flush`] writes them.
    fn queue(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            Some(tls) => tls.writer().write_all(bytes),
            None => {
                self.tx.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Whether queued bytes wait for the socket.
    fn pending(&self) -> bool {
        match self.tls.as_deref() {
            Some(tls) => tls.wants_write(),
            None => self.tx_pos < self.tx.len(),
        }
    }

    /// Writes what is queued. `Ok(true)` once all of it is with the kernel; `Ok(false)` when the
    /// socket is full (non-blocking).
    fn flush(&mut self) -> io::Result<bool> {
        // Every pass writes something or returns; the bound only guards against a socket that
        // keeps accepting nothing.
        for _ in 0..1_000 {
            if !self.pending() {
                self.tx.clear();
                self.tx_pos = 0;
                return Ok(true);
            }
            let written = match self.tls.as_deref_mut() {
                Some(tls) => tls.write_tls(&mut self.tcp),
                None => self.tcp.write(&self.tx[self.tx_pos..]),
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if self.tls.is_none() {
                        self.tx_pos += n;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(!self.pending())
    }

    /// Tells the server no more requests come (TLS close_notify, then a TCP shutdown).
    pub(crate) fn close(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
        }
        let _ = self.tcp.set_nonblocking(false);
        let _ = self.tcp.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = self.flush();
        let _ = self.tcp.shutdown(Shutdown::Write);
    }
}

/// What one read brought.
enum Filled {
    /// The server closed the connection.
    Eof,
    /// Bytes came; `drained` when the read was short, so the socket is most likely empty.
    Bytes { drained: bool },
}

/// Moves the plaintext rustls holds into `rx[*end..]`, as much as fits.
fn drain_plaintext(tls: &mut ClientConnection, rx: &mut [u8], end: &mut usize) -> io::Result<()> {
    // rustls holds at most 16 KiB of plaintext, and each read takes some of it.
    for _ in 0..RX_LEN {
        if *end == rx.len() {
            return Ok(());
        }
        match tls.reader().read(&mut rx[*end..]) {
            Ok(0) => return Ok(()),
            Ok(n) => *end += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

impl Exchange for StreamConn {
    /// Sends `request` and reads frames until the response with `tid` comes, skipping others
    /// (relayed data still in flight). A stream loses nothing, but a server may drop a request
    /// without answering (icebreaker does so with unauthenticated requests beyond its rate
    /// limit per source), so the request is sent again after 250 ms, doubling up to 2 s.
    fn transact(
        &mut self,
        request: &[u8],
        tid: TransactionId,
        reply: &mut [u8],
        deadline: Instant,
    ) -> Result<usize> {
        self.set_nonblocking(false)?;
        let mut cipher = vec![0u8; CIPHER_LEN];
        let mut rto = Duration::from_millis(250);
        let mut resend_at = Instant::now();
        for _ in 0..MAX_SKIPPED_FRAMES {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now >= resend_at {
                self.tcp.set_write_timeout(Some(deadline - now))?;
                self.queue(request)?;
                if !self.flush().context("send")? {
                    bail!("the request could not be sent in time");
                }
                resend_at = now + rto;
                rto = (rto * 2).min(Duration::from_secs(2));
            }
            if let Some(range) = self.next_frame()? {
                let frame = &self.rx[range];
                if frame.len() >= 20 && frame[0] & 0xC0 == 0 && frame[8..20] == tid.as_bytes()[..] {
                    let n = frame.len().min(reply.len());
                    reply[..n].copy_from_slice(&frame[..n]);
                    return Ok(n);
                }
                continue;
            }
            let wait = resend_at
                .min(deadline)
                .saturating_duration_since(Instant::now());
            self.tcp
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            match self.fill(&mut cipher) {
                Ok(Filled::Eof) => bail!("the server closed the connection"),
                Ok(Filled::Bytes { .. }) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => return Err(error).context("receive"),
            }
        }
        bail!("no answer from the server")
    }
}

// ---------------------------------------------------------------------------------------------
// The measured run.

/// One client thread over `conns` (allocations `first..first + conns.len()`): keeps every
/// connection's window full, matches replies to round trips, until `stop_at`. Saturated mode
/// only.
pub(crate) fn stream_client_loop(
    conns: &mut [StreamConn],
    first: usize,
    templates: &Templates,
    clock: &Clock,
    window_size: usize,
    window: Window,
    stop_at: u64,
) -> Result<Stats> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, conn) in conns.iter().enumerate() {
        conn.set_nonblocking(true)?;
        epoll.add(&conn.tcp, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
    }
    let mut events = vec![EpollEvent::empty(); conns.len().clamp(1, 256)];
    let mut cipher = vec![0u8; CIPHER_LEN];
    let mut stats = Stats::new();
    let w = window_size.min(BATCH);
    let mut run = Run {
        templates,
        slots: Slots {
            first,
            w,
            outstanding: vec![0; conns.len() * w],
            window,
        },
        writing: vec![false; conns.len()],
        scratch: Vec::new(),
    };
    for a in 0..conns.len() {
        run.refill(&epoll, conns, a, clock.now_ns(), &mut stats)?;
    }
    let mut closed = vec![false; conns.len()];
    let mut next_sweep = clock.now_ns() + SWEEP_NS;
    loop {
        let now = clock.now_ns();
        if now >= stop_at {
            break;
        }
        let ready = wait_ready(&epoll, &mut events, 5)?;
        for event in &events[..ready] {
            let a = usize::try_from(event.data()).unwrap_or(usize::MAX);
            if a >= conns.len() || closed[a] {
                continue;
            }
            let flags = event.events();
            if flags.contains(EpollFlags::EPOLLOUT) && run.writing[a] {
                run.flush(&epoll, conns, a)?;
                // Slots freed while the queue waited are filled now that it has drained.
                let now = clock.now_ns();
                if now < window.end {
                    run.refill(&epoll, conns, a, now, &mut stats)?;
                }
            }
            if !flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            {
                continue;
            }
            let mut freed = 0;
            let mut eof = false;
            for _ in 0..READS_PER_EVENT {
                let drained = match conns[a].fill(&mut cipher) {
                    Ok(Filled::Eof) => {
                        eof = true;
                        break;
                    }
                    Ok(Filled::Bytes { drained }) => drained,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        return Err(error)
                            .with_context(|| format!("receive on connection {}", first + a));
                    }
                };
                let now = clock.now_ns();
                while let Some(range) = conns[a].next_frame()? {
                    freed += run
                        .slots
                        .reply(templates, &conns[a].rx[range], a, now, &mut stats);
                }
                if drained {
                    break;
                }
            }
            if eof {
                // The server closed the connection: its round trips are lost from here on.
                closed[a] = true;
                stats.closed += 1;
                let _ = epoll.delete(&conns[a].tcp);
                let _ = conns[a].tcp.shutdown(Shutdown::Both);
                continue;
            }
            let now = clock.now_ns();
            if now < window.end && freed > 0 {
                run.refill(&epoll, conns, a, now, &mut stats)?;
            }
        }
        let now = clock.now_ns();
        if now >= next_sweep {
            next_sweep = now + SWEEP_NS;
            expire_lost(&mut run.slots.outstanding, now);
            if now < window.end {
                for (a, &closed) in closed.iter().enumerate() {
                    if !closed {
                        run.refill(&epoll, conns, a, now, &mut stats)?;
                    }
                }
            }
        }
    }
    Ok(stats)
}

/// The state of one client thread's run.
struct Run<'t> {
    templates: &'t Templates,
    slots: Slots,
    /// Connections waiting for EPOLLOUT to write the rest of their queue.
    writing: Vec<bool>,
    /// One frame being stamped.
    scratch: Vec<u8>,
}

impl Run<'_> {
    /// Sends a round trip in every free slot of connection `a`, all in one write. A connection
    /// whose earlier output still waits for the socket gets nothing more until it drains.
    fn refill(
        &mut self,
        epoll: &Epoll,
        conns: &mut [StreamConn],
        a: usize,
        ts: u64,
        stats: &mut Stats,
    ) -> Result<()> {
        if self.writing[a] {
            return Ok(());
        }
        let template = &self.templates.datagrams[self.slots.first + a];
        let mut sent = 0u64;
        for slot in 0..self.slots.w {
            let k = a * self.slots.w + slot;
            if self.slots.outstanding[k] != 0 {
                continue;
            }
            self.scratch.clear();
            self.scratch.extend_from_slice(template);
            Ident {
                ts,
                alloc: (self.slots.first + a) as u16,
                slot: slot as u16,
            }
            .write(&mut self.scratch[self.templates.ident_at..]);
            conns[a].queue(&self.scratch)?;
            // Queued on a reliable stream: it goes out, so the round trip is outstanding.
            self.slots.outstanding[k] = ts;
            sent += 1;
        }
        if sent == 0 {
            return Ok(());
        }
        if self.slots.window.contains(ts) {
            stats.sent += sent;
        }
        self.flush(epoll, conns, a)
    }

    /// Writes connection `a`'s queue; asks for EPOLLOUT while some of it waits.
    fn flush(&mut self, epoll: &Epoll, conns: &mut [StreamConn], a: usize) -> Result<()> {
        let done = conns[a]
            .flush()
            .with_context(|| format!("send on connection {}", self.slots.first + a))?;
        // Already waiting for EPOLLOUT exactly when the queue is not done.
        if self.writing[a] != done {
            return Ok(());
        }
        self.writing[a] = !done;
        let flags = if done {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
        };
        epoll.modify(&conns[a].tcp, &mut EpollEvent::new(flags, a as u64))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;
    use std::path::PathBuf;

    use clap::Parser as _;
    use icebreaker_wire::{Class, MessageType, MessageWriter, Method};

    use super::*;

    /// A Binding request with transaction ID `tid`, and the success response to it.
    fn binding_pair(tid: [u8; 12]) -> (Vec<u8>, Vec<u8>) {
        let mut request = [0u8; 20];
        let kind = MessageType::new(Method::BINDING, Class::Request);
        let n = MessageWriter::new(&mut request, kind, TransactionId::new(tid))
            .unwrap()
            .finish();
        let mut response = [0u8; 20];
        let kind = MessageType::new(Method::BINDING, Class::Success);
        let m = MessageWriter::new(&mut response, kind, TransactionId::new(tid))
            .unwrap()
            .finish();
        (request[..n].to_vec(), response[..m].to_vec())
    }

    /// ChannelData on channel 0x4000 with 5 bytes of data: 9 bytes, padded to 12 on a stream.
    const CHANNEL_DATA: [u8; 12] = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];

    /// What the test servers send after the request: ChannelData, the response split in two,
    /// more ChannelData. Each part is written on its own, so that it arrives in its own
    /// segment or TLS record.
    fn server_parts(response: &[u8]) -> Vec<Vec<u8>> {
        vec![
            CHANNEL_DATA[..3].to_vec(),
            CHANNEL_DATA[3..].to_vec(),
            response[..7].to_vec(),
            response[7..].to_vec(),
            CHANNEL_DATA.to_vec(),
        ]
    }

    /// After the response, the trailing ChannelData comes as one frame.
    fn expect_trailing_frame(conn: &mut StreamConn) {
        let mut cipher = vec![0u8; CIPHER_LEN];
        conn.tcp
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for _ in 0..100 {
            if let Some(range) = conn.next_frame().unwrap() {
                assert_eq!(conn.rx[range], CHANNEL_DATA);
                return;
            }
            assert!(matches!(
                conn.fill(&mut cipher).unwrap(),
                Filled::Bytes { .. }
            ));
        }
        panic!("the trailing frame never came");
    }

    #[test]
    fn tcp_frames_split_across_reads_and_other_frames_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let (request, response) = binding_pair([7; 12]);
        let parts = server_parts(&response);
        let expected = request.clone();
        let peer = thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_nodelay(true).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = vec![0u8; expected.len()];
            tcp.read_exact(&mut got).unwrap();
            assert_eq!(got, expected);
            for part in parts {
                tcp.write_all(&part).unwrap();
                thread::sleep(Duration::from_millis(10));
            }
        });
        let args = Args::parse_from([
            "turn-load",
            "--server",
            &server.to_string(),
            "--transport",
            "tcp",
        ]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut conn = Connector::new(&args).unwrap().connect(deadline).unwrap();
        assert_eq!(conn.tls_description(), None);
        let mut reply = [0u8; 64];
        let n = conn
            .transact(&request, TransactionId::new([7; 12]), &mut reply, deadline)
            .unwrap();
        assert_eq!(reply[..n], response);
        expect_trailing_frame(&mut conn);
        peer.join().unwrap();
    }

    /// Writes `certified`'s certificate where `--ca` can read it, under a name of this test's
    /// own.
    fn write_ca(name: &str, certified: &rcgen::CertifiedKey<rcgen::KeyPair>) -> PathBuf {
        let ca = std::env::temp_dir().join(format!(
            "turn-load-test-{name}-{}-{:?}.pem",
            std::process::id(),
            thread::current().id()
        ));
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        ca
    }

    /// A TLS server configuration with `certified`'s certificate, offering ALPN `stun.turn`.
    fn tls_server_config(
        certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
    ) -> Arc<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
        Arc::new(config)
    }

    #[test]
    fn tls_frames_split_across_records_and_other_frames_skipped() {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = write_ca("ca", &certified);
        let config = tls_server_config(&certified);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let (request, response) = binding_pair([9; 12]);
        let parts = server_parts(&response);
        let expected = request.clone();
        let peer = thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_nodelay(true).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let tls = rustls::ServerConnection::new(config).unwrap();
            let mut stream = rustls::StreamOwned::new(tls, tcp);
            let mut got = vec![0u8; expected.len()];
            stream.read_exact(&mut got).unwrap();
            assert_eq!(got, expected);
            assert_eq!(stream.conn.alpn_protocol(), Some(ALPN_STUN_TURN));
            for part in parts {
                // One record per part.
                stream.write_all(&part).unwrap();
                stream.flush().unwrap();
                thread::sleep(Duration::from_millis(10));
            }
        });
        let args = Args::parse_from([
            "turn-load",
            "--server",
            &server.to_string(),
            "--transport",
            "tls",
            "--ca",
            ca.to_str().unwrap(),
        ]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let connector = Connector::new(&args).unwrap();
        let _ = std::fs::remove_file(&ca);
        let mut conn = connector.connect(deadline).unwrap();
        assert!(conn.tls_description().unwrap().starts_with("TLSv1_3"));
        let mut reply = [0u8; 64];
        let n = conn
            .transact(&request, TransactionId::new([9; 12]), &mut reply, deadline)
            .unwrap();
        assert_eq!(reply[..n], response);
        expect_trailing_frame(&mut conn);
        peer.join().unwrap();
    }

    #[test]
    fn tls_refuses_a_server_the_ca_does_not_vouch_for() {
        let trusted = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = write_ca("other-ca", &trusted);
        let config = tls_server_config(&other);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let peer = thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut tls = rustls::ServerConnection::new(config).unwrap();
            let mut tcp = &tcp;
            // The client gives up during the handshake; how this side ends does not matter.
            for _ in 0..10 {
                if tls.complete_io(&mut tcp).is_err() || !tls.is_handshaking() {
                    break;
                }
            }
        });
        let args = Args::parse_from([
            "turn-load",
            "--server",
            &server.to_string(),
            "--transport",
            "tls",
            "--ca",
            ca.to_str().unwrap(),
        ]);
        let connector = Connector::new(&args).unwrap();
        let _ = std::fs::remove_file(&ca);
        let result = connector.connect(Instant::now() + Duration::from_secs(5));
        assert!(result.is_err());
        peer.join().unwrap();
    }
}
