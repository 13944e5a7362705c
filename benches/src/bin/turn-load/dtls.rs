//! TURN over DTLS (RFC 7350; RFC 8656 §3.1): one UDP socket connected to the server and one
//! dimpl client session per allocation. Each STUN message or ChannelData is one record in one
//! datagram, and ChannelData is not padded: DTLS keeps UDP's datagram semantics, losses
//! included.
//!
//! Setup and teardown use the sockets blocking, with timeouts, and retransmit requests as over
//! UDP. The measured run uses them non-blocking under a level-triggered epoll: a readable socket
//! gives up to 64 datagrams to one `recvmmsg`, each is fed to its session and the records it
//! yields are matched to round trips at once; a window refill is encrypted record by record and
//! leaves in one `sendmmsg`. A round trip is outstanding once the kernel took its datagram, and
//! counts as lost after the UDP mode's timeout, as a record gets lost like a datagram. dimpl's
//! timers (under DTLS 1.3 the client's last flight waits for the server's acknowledgement) run
//! at the loss sweep.
//!
//! dimpl checks that the server holds the key of the certificate it sent, but leaves the
//! certificate itself to the application, and hands out the server's own certificate only
//! (`Output::PeerCert`), without intermediates. It is verified with rustls' WebPKI verifier as
//! over TLS, against the `--ca` certificates and for the server's IP address, so `--ca` must
//! hold the server's certificate itself (the benchmark's self-signed one) or the CA that signed
//! it directly. That happens before any STUN message goes into the session.
//!
//! dimpl insists on a client certificate although servers rarely ask for one: an ephemeral
//! ECDSA P-256 one is made in memory, once per run.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use dimpl::{Config, Dtls, DtlsCertificate, Output};
use icebreaker_wire::TransactionId;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::MultiHeaders;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::messages::{Ident, Templates};
use crate::setup::{Exchange, udp_socket};
use crate::stream::trusted;
use crate::traffic::{Batch, SWEEP_NS, Slots, Stats, expire_lost, send_many, wait_ready};
use crate::{Args, BATCH, BUF_LEN, Clock, TlsVersion, Window};

/// dimpl's first retransmission of an unanswered handshake flight. On loopback an answer takes
/// well under a millisecond, so a lost flight (the server's port not open yet) is sent again
/// sooner than after dimpl's default of 1 s.
const FLIGHT_START_RTO: Duration = Duration::from_millis(200);
/// Retransmissions of one flight: doubling from 200 ms, about 25 s in all, longer than the
/// setup limit, so that the generator's own deadline ends a handshake without answer.
const FLIGHT_RETRIES: usize = 6;
/// The largest datagram read during the handshake and setup.
const SETUP_DATAGRAM: usize = 4096;
/// dimpl's output buffer during the handshake: dimpl writes the server's certificate into it
/// whole, and panics when it does not fit. It reassembles a handshake message from at most 50
/// datagrams, each at most [`SETUP_DATAGRAM`] bytes here. Zeroed pages cost no memory until
/// written.
const HANDSHAKE_OUT: usize = 256 << 10;
/// dimpl's output buffer once connected: a record's plaintext is at most 2^14 bytes, and the
/// datagrams it makes are smaller still.
const OUT_LEN: usize = 17 << 10;
/// dimpl's outputs handled per drain: each one is a datagram, a record or an event, and a drain
/// ends with the next timer; the bound only guards against a library that never gets there.
const MAX_OUTPUTS: usize = 10_000;
/// Datagrams one refill may queue: a whole window, and room for whatever else dimpl sends.
const OUTGOING: usize = 2 * BATCH;
/// Pause after an ICMP port unreachable during setup: nothing listens yet.
const REFUSED_PAUSE: Duration = Duration::from_millis(50);

/// Makes DTLS sessions with the server: the configuration, the client certificate and the
/// verifier of the server's certificate, made once per run.
pub(crate) struct DtlsConnector {
    server: SocketAddr,
    config: Arc<Config>,
    certificate: DtlsCertificate,
    version: Option<TlsVersion>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl DtlsConnector {
    /// A connector trusting only the certificates of `--ca`, offering `--tls-version` or both
    /// DTLS 1.2 and 1.3.
    pub(crate) fn new(args: &Args) -> Result<DtlsConnector> {
        let path = args.ca.as_deref().context("--ca is required over DTLS")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(trusted(path)?), provider)
                .build()
                .with_context(|| format!("a verifier trusting {}", path.display()))?;
        let config = Config::builder()
            .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
            .flight_start_rto(FLIGHT_START_RTO)
            .flight_retries(FLIGHT_RETRIES)
            .build()
            .context("the DTLS configuration")?;
        Ok(DtlsConnector {
            server: args.server,
            config: Arc::new(config),
            certificate: client_certificate()?,
            version: args.tls_version,
            verifier,
        })
    }

    /// Handshakes with the server from a new socket before `deadline`, and verifies its
    /// certificate.
    pub(crate) fn connect(&self, deadline: Instant) -> Result<DtlsConn> {
        let server = self.server;
        let socket = udp_socket()?;
        socket
            .connect(server)
            .with_context(|| format!("connect to {server}"))?;
        let now = Instant::now();
        let (config, certificate) = (self.config.clone(), self.certificate.clone());
        let mut dtls = match self.version {
            None => Dtls::new_auto(config, certificate, now),
            Some(TlsVersion::V1_2) => Dtls::new_12(config, certificate, now),
            Some(TlsVersion::V1_3) => Dtls::new_13(config, certificate, now),
        };
        dtls.set_active(true);
        let mut conn = DtlsConn {
            socket,
            dtls,
            wake: now,
            ended: None,
            description: String::new(),
        };
        conn.tick(now);
        let mut out = vec![0u8; HANDSHAKE_OUT];
        let mut datagram = vec![0u8; SETUP_DATAGRAM];
        let mut suite = None;
        let mut verified = false;
        let mut connected = false;
        loop {
            if let Some(why) = conn.ended.take() {
                bail!("the DTLS handshake with {server} failed: {why}");
            }
            for _ in 0..MAX_OUTPUTS {
                match conn.dtls.poll_output(&mut out) {
                    Output::Packet(packet) => send_setup(&conn.socket, packet)?,
                    Output::Timeout(at) => {
                        conn.wake = at;
                        break;
                    }
                    Output::PeerCert(der) => {
                        self.verify(der)?;
                        verified = true;
                    }
                    Output::Connected => connected = true,
                    Output::CloseNotify => bail!("{server} closed the DTLS handshake"),
                    Output::BufferTooSmall { needed } => {
                        bail!("a handshake message of {needed} bytes from {server}")
                    }
                    _ => {}
                }
            }
            if connected {
                ensure!(verified, "{server} sent no certificate");
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("the DTLS handshake with {server} timed out");
            }
            let wait = conn.wake.min(deadline).saturating_duration_since(now);
            conn.socket
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            match conn.socket.recv(&mut datagram) {
                Ok(n) => {
                    if suite.is_none() {
                        suite = server_hello_suite(&datagram[..n]);
                    }
                    conn.tick(Instant::now());
                    conn.feed(&datagram[..n]);
                }
                Err(error) if waited(&error) => conn.tick(Instant::now()),
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    // The ClientHello met a closed port: dimpl sends it again on its timer.
                    thread::sleep(REFUSED_PAUSE.min(deadline.saturating_duration_since(now)));
                    conn.tick(Instant::now());
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("receive from {server}"));
                }
            }
        }
        let version = conn.dtls.protocol_version().map_or_else(
            || "DTLS (version unknown)".to_owned(),
            |v| format!("{:?}", rustls::ProtocolVersion::from(v.as_u16())),
        );
        let suite = suite.map_or_else(
            || "(cipher suite unknown)".to_owned(),
            |s| format!("{:?}", rustls::CipherSuite::from(s)),
        );
        conn.description = format!("{version} {suite}");
        Ok(conn)
    }

    /// Verifies the server's certificate `der` as a TLS client would, without intermediates,
    /// which dimpl does not hand out.
    fn verify(&self, der: &[u8]) -> Result<()> {
        let name = ServerName::IpAddress(self.server.ip().into());
        self.verifier
            .verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now())
            .with_context(|| {
                format!(
                    "the certificate of {} does not verify against --ca",
                    self.server
                )
            })?;
        Ok(())
    }
}

/// The ephemeral client certificate dimpl requires.
fn client_certificate() -> Result<DtlsCertificate> {
    static MADE: OnceLock<Result<DtlsCertificate, String>> = OnceLock::new();
    MADE.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["turn-load".to_owned()])
            .map_err(|e| format!("cannot make the DTLS client certificate: {e}"))?;
        Ok(DtlsCertificate {
            certificate: made.cert.der().to_vec(),
            private_key: made.signing_key.serialize_der(),
        })
    })
    .clone()
    .map_err(|why| anyhow!(why))
}

/// A datagram or a decrypted record from a session.
enum Produced<'a> {
    /// To send to the server.
    Datagram(&'a [u8]),
    /// From the server: one STUN message or ChannelData.
    Record(&'a [u8]),
}

/// One DTLS session with the server, on its own connected UDP socket.
pub(crate) struct DtlsConn {
    socket: UdpSocket,
    dtls: Dtls,
    /// When dimpl wants `handle_timeout` next.
    wake: Instant,
    /// Why the session cannot be used any more, once it cannot: dimpl's errors are all fatal.
    ended: Option<String>,
    /// The version and cipher suite negotiated.
    description: String,
}

impl DtlsConn {
    /// The negotiated version and cipher suite.
    pub(crate) fn description(&self) -> String {
        self.description.clone()
    }

    /// Lets dimpl act on the time (it also wants the time refreshed before each datagram).
    fn tick(&mut self, now: Instant) {
        if self.ended.is_none()
            && let Err(error) = self.dtls.handle_timeout(now)
        {
            self.ended = Some(error.to_string());
        }
    }

    /// Gives dimpl a datagram from the server.
    fn feed(&mut self, datagram: &[u8]) {
        if self.ended.is_none()
            && let Err(error) = self.dtls.handle_packet(datagram)
        {
            self.ended = Some(error.to_string());
        }
    }

    /// Encrypts `message` as one record; [`DtlsConn::drain`] then yields its datagram.
    fn queue(&mut self, message: &[u8]) {
        if self.ended.is_none()
            && let Err(error) = self.dtls.send_application_data(message)
        {
            self.ended = Some(error.to_string());
        }
    }

    /// Hands what dimpl produced to `take`, up to its next timer. Polled after every datagram
    /// fed and every record queued: dimpl holds few received datagrams (more is a fatal error)
    /// and packs queued records into one datagram, where each must have its own.
    fn drain(
        &mut self,
        out: &mut [u8],
        mut take: impl FnMut(&UdpSocket, Produced<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.ended.is_some() {
            return Ok(());
        }
        for _ in 0..MAX_OUTPUTS {
            match self.dtls.poll_output(out) {
                Output::Packet(datagram) => take(&self.socket, Produced::Datagram(datagram))?,
                Output::ApplicationData(record) => take(&self.socket, Produced::Record(record))?,
                Output::Timeout(at) => {
                    self.wake = at;
                    return Ok(());
                }
                Output::CloseNotify => {
                    self.ended = Some("the server sent close_notify".to_owned());
                    return Ok(());
                }
                Output::BufferTooSmall { needed } => {
                    self.ended = Some(format!("a record of {needed} bytes from the server"));
                    return Ok(());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Feeds what the socket holds to the session and drops the records: answers to
    /// retransmitted setup requests must not be taken for round trips.
    pub(crate) fn discard_pending(&mut self) {
        let mut datagram = vec![0u8; SETUP_DATAGRAM];
        let mut out = vec![0u8; OUT_LEN];
        let _ = self.socket.set_nonblocking(true);
        for _ in 0..100_000 {
            match self.socket.recv(&mut datagram) {
                Ok(n) => {
                    self.tick(Instant::now());
                    self.feed(&datagram[..n]);
                    let drained = self.drain(&mut out, |socket, produced| {
                        if let Produced::Datagram(datagram) = produced {
                            send_setup(socket, datagram)?;
                        }
                        Ok(())
                    });
                    if drained.is_err() {
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(_) => break,
            }
        }
        let _ = self.socket.set_nonblocking(false);
    }

    /// Ends the session with close_notify, best effort, so that the server can forget it (and
    /// its allocation) at once.
    pub(crate) fn close(&mut self) {
        if self.ended.is_some() || self.dtls.close().is_err() {
            return;
        }
        let _ = self.socket.set_nonblocking(false);
        let mut out = vec![0u8; OUT_LEN];
        let _ = self.drain(&mut out, |socket, produced| {
            if let Produced::Datagram(datagram) = produced {
                let _ = socket.send(datagram);
            }
            Ok(())
        });
        self.ended = Some("closed".to_owned());
    }
}

/// Sends a datagram during setup: one the server's port refuses is lost, as over UDP, and the
/// retransmissions see to it.
fn send_setup(socket: &UdpSocket, datagram: &[u8]) -> Result<()> {
    match socket.send(datagram) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(error) => Err(error).context("send"),
    }
}

/// Whether a blocking receive only ran out of time.
fn waited(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Exchange for DtlsConn {
    /// Sends `request` in one record and waits for the record with `tid`, skipping others
    /// (relayed data still in flight). Records get lost as datagrams do, so the request is
    /// sent again after 100 ms, doubling up to 1 s, as over UDP.
    fn transact(
        &mut self,
        request: &[u8],
        tid: TransactionId,
        reply: &mut [u8],
        deadline: Instant,
    ) -> Result<usize> {
        self.socket.set_nonblocking(false)?;
        let mut out = vec![0u8; OUT_LEN];
        let mut datagram = vec![0u8; SETUP_DATAGRAM];
        let mut answer = None;
        let mut rto = Duration::from_millis(100);
        while Instant::now() < deadline {
            self.queue(request);
            self.drain(&mut out, |socket, produced| {
                answer_or_send(socket, produced, tid, reply, &mut answer)
            })?;
            let resend_at = (Instant::now() + rto).min(deadline);
            loop {
                if let Some(why) = &self.ended {
                    bail!("the DTLS session ended: {why}");
                }
                let now = Instant::now();
                if now >= resend_at {
                    break;
                }
                let wait = resend_at.min(self.wake).saturating_duration_since(now);
                self.socket
                    .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
                match self.socket.recv(&mut datagram) {
                    Ok(n) => {
                        self.tick(Instant::now());
                        self.feed(&datagram[..n]);
                    }
                    Err(error) if waited(&error) => self.tick(Instant::now()),
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                        thread::sleep(REFUSED_PAUSE.min(resend_at.saturating_duration_since(now)));
                    }
                    Err(error) => return Err(error).context("receive"),
                }
                self.drain(&mut out, |socket, produced| {
                    answer_or_send(socket, produced, tid, reply, &mut answer)
                })?;
                if answer.is_some() {
                    break;
                }
            }
            if let Some(n) = answer {
                return Ok(n);
            }
            rto = (rto * 2).min(Duration::from_secs(1));
        }
        bail!("no answer from the server")
    }
}

/// During a transaction: sends dimpl's datagrams, and copies the response with `tid` into
/// `reply` (its length into `answer`), skipping other records.
fn answer_or_send(
    socket: &UdpSocket,
    produced: Produced<'_>,
    tid: TransactionId,
    reply: &mut [u8],
    answer: &mut Option<usize>,
) -> Result<()> {
    match produced {
        Produced::Datagram(datagram) => send_setup(socket, datagram),
        Produced::Record(record) => {
            if answer.is_none()
                && record.len() >= 20
                && record[0] & 0xC0 == 0
                && record[8..20] == tid.as_bytes()[..]
            {
                let n = record.len().min(reply.len());
                reply[..n].copy_from_slice(&record[..n]);
                *answer = Some(n);
            }
            Ok(())
        }
    }
}

/// The cipher suite of a ServerHello in `datagram`, if it holds one: dimpl does not tell, and
/// the ServerHello (or the HelloRetryRequest, which names the same suite) is plaintext under
/// DTLS 1.2 and 1.3 alike, in a record with the full 13-byte header.
fn server_hello_suite(datagram: &[u8]) -> Option<u16> {
    const HEADER: usize = 13;
    const HANDSHAKE: u8 = 22;
    const SERVER_HELLO: u8 = 2;
    let mut rest = datagram;
    // Every pass consumes a record.
    while rest.len() >= HEADER {
        let (header, body) = rest.split_at(HEADER);
        // A DTLS 1.3 encrypted record has a header of its own: nothing to read beyond it.
        if !(20..=25).contains(&header[0]) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let record = body.get(..len)?;
        rest = &body[len..];
        let epoch = u16::from_be_bytes([header[3], header[4]]);
        // The handshake header: type, length (3), message_seq (2), fragment offset (3) and
        // length (3); the suite is in the first fragment.
        if header[0] != HANDSHAKE
            || epoch != 0
            || record.first() != Some(&SERVER_HELLO)
            || record.get(6..9)? != [0, 0, 0]
        {
            continue;
        }
        // legacy_version (2), random (32), session ID (1 + n), cipher suite (2).
        let hello = record.get(12..)?;
        let session_id = usize::from(*hello.get(34)?);
        let suite = hello.get(35 + session_id..37 + session_id)?;
        return Some(u16::from_be_bytes([suite[0], suite[1]]));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The measured run.

/// One client thread over `conns` (allocations `first..first + conns.len()`): keeps every
/// session's window full, matches replies to round trips, until `stop_at`. Saturated mode only.
pub(crate) fn dtls_client_loop(
    conns: &mut [DtlsConn],
    first: usize,
    templates: &Templates,
    clock: &Clock,
    window_size: usize,
    window: Window,
    stop_at: u64,
) -> Result<Stats> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, conn) in conns.iter().enumerate() {
        conn.socket.set_nonblocking(true)?;
        epoll.add(&conn.socket, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
    }
    let mut events = vec![EpollEvent::empty(); conns.len().clamp(1, 256)];
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
        tx: Outgoing::new(),
        rx: Batch::new(),
        out: vec![0; OUT_LEN],
        scratch: Vec::with_capacity(BUF_LEN),
    };
    let mut closed = vec![false; conns.len()];
    for (a, conn) in conns.iter_mut().enumerate() {
        run.refill(conn, a, clock.now_ns(), &mut stats)?;
    }
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
            let conn = &mut conns[a];
            let freed = run.receive(conn, a, clock, &mut stats)?;
            if conn.ended.is_some() {
                // The session is over: its round trips are lost from here on.
                closed[a] = true;
                stats.closed += 1;
                let _ = epoll.delete(&conn.socket);
                continue;
            }
            let now = clock.now_ns();
            if now < window.end && freed > 0 {
                run.refill(conn, a, now, &mut stats)?;
            }
        }
        let now = clock.now_ns();
        if now >= next_sweep {
            next_sweep = now + SWEEP_NS;
            expire_lost(&mut run.slots.outstanding, now);
            let instant = Instant::now();
            for (a, conn) in conns.iter_mut().enumerate() {
                if closed[a] {
                    continue;
                }
                if conn.wake <= instant {
                    conn.tick(instant);
                    run.drain(conn, a, now, &mut stats)?;
                }
                if conn.ended.is_some() {
                    closed[a] = true;
                    stats.closed += 1;
                    let _ = epoll.delete(&conn.socket);
                } else if now < window.end {
                    run.refill(conn, a, now, &mut stats)?;
                }
            }
        }
    }
    Ok(stats)
}

/// The datagrams of one refill, for one `sendmmsg`, each with the slot whose round trip it
/// carries (`None` for dimpl's own).
struct Outgoing {
    bufs: Vec<u8>,
    lens: [usize; OUTGOING],
    owners: [Option<usize>; OUTGOING],
    len: usize,
    headers: MultiHeaders<()>,
}

impl Outgoing {
    fn new() -> Outgoing {
        Outgoing {
            bufs: vec![0; OUTGOING * BUF_LEN],
            lens: [0; OUTGOING],
            owners: [None; OUTGOING],
            len: 0,
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Queues a copy of `datagram`; one that does not fit is dropped, which a datagram may be.
    fn push(&mut self, datagram: &[u8], owner: Option<usize>) {
        if self.len == OUTGOING || datagram.len() > BUF_LEN {
            return;
        }
        let at = self.len * BUF_LEN;
        self.bufs[at..at + datagram.len()].copy_from_slice(datagram);
        self.lens[self.len] = datagram.len();
        self.owners[self.len] = owner;
        self.len += 1;
    }
}

/// The state of one client thread's run.
struct Run<'t> {
    templates: &'t Templates,
    slots: Slots,
    tx: Outgoing,
    rx: Batch,
    /// dimpl's output buffer.
    out: Vec<u8>,
    /// One message being stamped.
    scratch: Vec<u8>,
}

impl Run<'_> {
    /// Takes what session `a`'s socket holds (one `recvmmsg`) through the session and accounts
    /// for the records; returns the slots freed.
    fn receive(
        &mut self,
        conn: &mut DtlsConn,
        a: usize,
        clock: &Clock,
        stats: &mut Stats,
    ) -> Result<usize> {
        let n = match self.rx.recv(conn.socket.as_raw_fd()) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        // One clock read of each kind per batch, as in the UDP mode.
        let now = clock.now_ns();
        conn.tick(Instant::now());
        let Run {
            templates,
            slots,
            rx,
            out,
            ..
        } = self;
        let mut freed = 0;
        for i in 0..n {
            conn.feed(rx.received(i));
            conn.drain(out, |socket, produced| {
                match produced {
                    Produced::Record(record) => {
                        freed += slots.reply(templates, record, a, now, stats);
                    }
                    // dimpl's own (an acknowledgement, a retransmission): lost if it cannot go.
                    Produced::Datagram(datagram) => {
                        let _ = socket.send(datagram);
                    }
                }
                Ok(())
            })?;
            if conn.ended.is_some() {
                break;
            }
        }
        Ok(freed)
    }

    /// Handles what session `a` produced after a timer.
    fn drain(&mut self, conn: &mut DtlsConn, a: usize, now: u64, stats: &mut Stats) -> Result<()> {
        let Run {
            templates,
            slots,
            out,
            ..
        } = self;
        conn.drain(out, |socket, produced| {
            match produced {
                Produced::Record(record) => {
                    slots.reply(templates, record, a, now, stats);
                }
                Produced::Datagram(datagram) => {
                    let _ = socket.send(datagram);
                }
            }
            Ok(())
        })
    }

    /// Sends a round trip in every free slot of session `a`: one record each, all the
    /// datagrams with one `sendmmsg`. A slot whose datagram the kernel did not take stays free
    /// (as over UDP), and the sweep fills it again.
    fn refill(&mut self, conn: &mut DtlsConn, a: usize, ts: u64, stats: &mut Stats) -> Result<()> {
        let Run {
            templates,
            slots,
            tx,
            out,
            scratch,
            ..
        } = self;
        let w = slots.w;
        let alloc = slots.first + a;
        let template = &templates.datagrams[alloc];
        tx.len = 0;
        for slot in 0..w {
            if slots.outstanding[a * w + slot] != 0 {
                continue;
            }
            scratch.clear();
            scratch.extend_from_slice(template);
            Ident {
                ts,
                alloc: alloc as u16,
                slot: slot as u16,
            }
            .write(&mut scratch[templates.ident_at..]);
            conn.queue(scratch);
            // The record's datagram comes first; anything after it is dimpl's own.
            let mut owner = Some(slot);
            conn.drain(out, |_, produced| {
                match produced {
                    Produced::Datagram(datagram) => tx.push(datagram, owner.take()),
                    Produced::Record(record) => {
                        slots.reply(templates, record, a, ts, stats);
                    }
                }
                Ok(())
            })?;
            if conn.ended.is_some() {
                return Ok(());
            }
        }
        let fd = conn.socket.as_raw_fd();
        let Outgoing {
            bufs,
            lens,
            owners,
            len,
            headers,
        } = tx;
        let mut sent = 0u64;
        let mut start = 0;
        while start < *len {
            let taken = match send_many(fd, headers, *len - start, |i| {
                let at = (start + i) * BUF_LEN;
                &bufs[at..at + lens[start + i]]
            }) {
                Ok(taken) => taken,
                // A full buffer or an ICMP error from an earlier datagram: the sweep retries.
                Err(Errno::EAGAIN | Errno::ECONNREFUSED | Errno::ENOBUFS | Errno::EINTR) => 0,
                Err(error) => return Err(error.into()),
            };
            for slot in owners[start..start + taken].iter().flatten() {
                slots.outstanding[a * w + slot] = ts;
                sent += 1;
            }
            if taken == 0 {
                break;
            }
            start += taken;
        }
        if slots.window.contains(ts) {
            stats.sent += sent;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};

    use clap::Parser as _;
    use icebreaker_wire::{Class, MessageType, MessageWriter, Method};

    use super::*;
    use crate::messages::templates;
    use crate::setup::TidGenerator;

    /// What the test server does with a record from a client.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// Sends ChannelData, then the Binding response to the request's transaction ID, each
        /// in its own datagram.
        AnswerBinding,
        /// Sends the record back.
        Echo,
    }

    /// ChannelData on channel 0x4000 with 5 bytes of data, unpadded as over UDP.
    const CHANNEL_DATA: [u8; 9] = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];

    fn binding_response(tid: TransactionId) -> Vec<u8> {
        let mut buf = [0u8; 20];
        let kind = MessageType::new(Method::BINDING, Class::Success);
        let n = MessageWriter::new(&mut buf, kind, tid).unwrap().finish();
        buf[..n].to_vec()
    }

    fn certificate(
        certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
    ) -> (DtlsCertificate, Arc<Config>) {
        let certificate = DtlsCertificate {
            certificate: certified.cert.der().to_vec(),
            private_key: certified.signing_key.serialize_der(),
        };
        let config = Config::builder()
            .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
            .require_client_certificate(false)
            .build()
            .unwrap();
        (certificate, Arc::new(config))
    }

    /// A dimpl server on 127.0.0.1 with `certified`'s certificate, one session per client
    /// address, serving until `stop` or 10 s.
    fn server(
        certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
        behaviour: Behaviour,
        stop: Arc<AtomicBool>,
    ) -> (SocketAddr, thread::JoinHandle<()>) {
        let (certificate, config) = certificate(certified);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let handle = thread::spawn(move || {
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let until = Instant::now() + Duration::from_secs(10);
            let mut sessions: HashMap<SocketAddr, Dtls> = HashMap::new();
            let mut datagram = vec![0u8; 65_536];
            let mut out = vec![0u8; HANDSHAKE_OUT];
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let received = socket.recv_from(&mut datagram);
                let now = Instant::now();
                for dtls in sessions.values_mut() {
                    let _ = dtls.handle_timeout(now);
                }
                if let Ok((n, from)) = received {
                    let dtls = sessions.entry(from).or_insert_with(|| {
                        Dtls::new_auto(config.clone(), certificate.clone(), now)
                    });
                    let _ = dtls.handle_timeout(now);
                    if dtls.handle_packet(&datagram[..n]).is_err() {
                        sessions.remove(&from);
                        continue;
                    }
                }
                for (peer, dtls) in &mut sessions {
                    let mut records = Vec::new();
                    loop {
                        match dtls.poll_output(&mut out) {
                            Output::Packet(p) => {
                                socket.send_to(p, peer).unwrap();
                            }
                            Output::ApplicationData(r) => records.push(r.to_vec()),
                            Output::Timeout(_) => break,
                            _ => {}
                        }
                    }
                    for record in records {
                        let replies = match behaviour {
                            Behaviour::Echo => vec![record],
                            Behaviour::AnswerBinding => {
                                let tid = TransactionId::new(record[8..20].try_into().unwrap());
                                vec![CHANNEL_DATA.to_vec(), binding_response(tid)]
                            }
                        };
                        for reply in replies {
                            dtls.send_application_data(&reply).unwrap();
                            // One record per datagram.
                            loop {
                                match dtls.poll_output(&mut out) {
                                    Output::Packet(p) => {
                                        socket.send_to(p, peer).unwrap();
                                    }
                                    Output::Timeout(_) => break,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
        });
        (addr, handle)
    }

    /// Writes `certified`'s certificate where `--ca` can read it, under a name of this test's
    /// own.
    fn write_ca(name: &str, certified: &rcgen::CertifiedKey<rcgen::KeyPair>) -> PathBuf {
        let ca = std::env::temp_dir().join(format!(
            "turn-load-dtls-test-{name}-{}.pem",
            std::process::id(),
        ));
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        ca
    }

    fn args(server: SocketAddr, ca: &std::path::Path, extra: &[&str]) -> Args {
        let mut argv = vec![
            "turn-load".to_owned(),
            "--server".to_owned(),
            server.to_string(),
            "--transport".to_owned(),
            "dtls".to_owned(),
            "--ca".to_owned(),
            ca.to_str().unwrap().to_owned(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        Args::parse_from(argv)
    }

    #[test]
    fn dtls_answers_found_among_other_records_in_both_versions() {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = write_ca("ca", &certified);
        let stop = Arc::new(AtomicBool::new(false));
        let (server, peer) = server(&certified, Behaviour::AnswerBinding, stop.clone());
        for (version, expected) in [
            (&[][..], "DTLSv1_3 TLS13_"),
            (&["--tls-version", "1.2"][..], "DTLSv1_2 TLS_ECDHE_ECDSA_"),
            (&["--tls-version", "1.3"][..], "DTLSv1_3 TLS13_"),
        ] {
            let connector = DtlsConnector::new(&args(server, &ca, version)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut conn = connector.connect(deadline).unwrap();
            assert!(
                conn.description().starts_with(expected),
                "{}",
                conn.description()
            );
            let tid = TransactionId::new([7; 12]);
            let mut request = [0u8; 20];
            let kind = MessageType::new(Method::BINDING, Class::Request);
            let n = MessageWriter::new(&mut request, kind, tid)
                .unwrap()
                .finish();
            let mut reply = [0u8; 64];
            let m = conn
                .transact(&request[..n], tid, &mut reply, deadline)
                .unwrap();
            assert_eq!(reply[..m], binding_response(tid));
            conn.close();
        }
        let _ = std::fs::remove_file(&ca);
        stop.store(true, Ordering::Relaxed);
        peer.join().unwrap();
    }

    #[test]
    fn dtls_refuses_a_server_the_ca_does_not_vouch_for() {
        let trusted = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = write_ca("other-ca", &trusted);
        let stop = Arc::new(AtomicBool::new(false));
        let (server, peer) = server(&other, Behaviour::Echo, stop.clone());
        let connector = DtlsConnector::new(&args(server, &ca, &[])).unwrap();
        let _ = std::fs::remove_file(&ca);
        let error = connector
            .connect(Instant::now() + Duration::from_secs(5))
            .err()
            .unwrap();
        assert!(
            format!("{error:#}").contains("does not verify"),
            "{error:#}"
        );
        stop.store(true, Ordering::Relaxed);
        peer.join().unwrap();
    }

    #[test]
    fn dtls_run_matches_echoed_records_to_round_trips() {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = write_ca("run", &certified);
        let stop = Arc::new(AtomicBool::new(false));
        let (server, peer) = server(&certified, Behaviour::Echo, stop.clone());
        let args = args(
            server,
            &ca,
            &["--allocations", "2", "--window", "4", "--size", "100"],
        );
        let connector = DtlsConnector::new(&args).unwrap();
        let _ = std::fs::remove_file(&ca);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut conns: Vec<DtlsConn> = (0..2)
            .map(|_| connector.connect(deadline).unwrap())
            .collect();
        let templates = templates(&args, &[], &mut TidGenerator::new()).unwrap();
        // Unpadded, as over UDP: 4 + 100 bytes.
        assert_eq!(templates.datagrams[0].len(), 104);
        let clock = Clock::new();
        let start = clock.now_ns();
        let window = Window {
            start: start + 50_000_000,
            end: start + 350_000_000,
        };
        let stats = dtls_client_loop(
            &mut conns,
            0,
            &templates,
            &clock,
            4,
            window,
            window.end + 200_000_000,
        )
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        peer.join().unwrap();
        assert!(stats.received > 0);
        assert_eq!(stats.invalid, 0);
        assert_eq!(stats.closed, 0);
        assert!(stats.sent >= stats.received);
        assert!(stats.quantile(0.5).is_some());
    }
}
