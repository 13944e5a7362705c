//! TURN and STUN over DTLS (RFC 7350; RFC 8656 §3.1): one worker's table of DTLS sessions,
//! keyed by the listener address and the client address, each a dimpl server.
//!
//! Nothing here opens a socket or reads a clock. The worker hands in datagrams and the time;
//! the table answers through a [`Host`]: decrypted messages to serve, datagrams to send,
//! sessions counted as opened and closed. The whole life of a session is unit-tested against
//! dimpl clients in memory.
//!
//! A DTLS record carries exactly one STUN message or one ChannelData message, unpadded: the
//! TURN core treats DTLS as a datagram transport, and the session is the connection whose end
//! deletes its allocation.
//!
//! # Address verification
//!
//! dimpl answers a first ClientHello with a cookie (HelloVerifyRequest in DTLS 1.2, a
//! HelloRetryRequest cookie in DTLS 1.3), as the table asks it to. But its cookie secret belongs
//! to one `Dtls` value, so the value that sent a cookie is the only one that can check it: a
//! session exists from the first ClientHello of an address, before that address is proved.
//! Until dimpl sends a real ServerHello (the cookie came back), the session is *unverified*: it
//! is not counted as a connection, takes no slot of `max-connections`, and sits in a pool of
//! its own, bounded per worker, whose oldest member makes way for a newcomer. A flood of spoofed
//! ClientHellos thus costs one small dimpl value each for at most `frame-timeout`, and never
//! the slots of clients that proved their address. Building a session and answering with a
//! cookie still costs some 15 µs of the worker's time (with the key parsed once per thread, see
//! `keys`), so a worker starts at most [`NEW_SESSIONS_PER_SECOND`] a second and drops the
//! ClientHellos beyond, which their clients send again: a flood takes a tenth of a core at
//! most, not the relay path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dimpl::{Dtls, DtlsCertificate, Output};
use icebreaker_turn::{ClientTransport, FiveTuple};
use tracing::debug;

use crate::stream::{CloseReason, StreamLimits, overdue};
use crate::tls::CertificateStore;

mod keys;

/// Unverified sessions one worker holds at most: beyond, the oldest is dropped. Enough for a
/// burst of honest handshakes within one round trip; a spoofer must outpace it every RTT.
pub(crate) const MAX_UNVERIFIED: usize = 1024;

/// Sessions one worker starts per second at most.
pub(crate) const NEW_SESSIONS_PER_SECOND: u32 = 5000;

/// How often sessions are checked against the idle and handshake limits.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// dimpl timers further away than this are its "nothing armed" placeholder (ten years ahead),
/// not worth a place in the timer queue.
const TIMER_HORIZON: Duration = Duration::from_secs(3600);

/// dimpl's own handshake deadline, beyond `frame-timeout`: the table's sweep closes a slow
/// handshake first, with its own reason.
const DIMPL_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// Where the current certificate comes from: read for every new session, so a reload applies
/// to the next handshakes while open sessions keep theirs.
pub(crate) trait Certificates: Send + Sync {
    /// The pair to start a session with; `None` refuses new sessions.
    fn current(&self) -> Option<DtlsCertificate>;
}

impl Certificates for CertificateStore {
    fn current(&self) -> Option<DtlsCertificate> {
        self.dtls_certificate().ok()
    }
}

/// What every worker's DTLS side is configured with.
#[derive(Clone)]
pub(crate) struct DtlsSettings {
    /// The idle and handshake (`frame-timeout`) limits, the same rules as for streams.
    pub(crate) limits: StreamLimits,
    /// Connections allowed at once across all workers, TCP, TLS and DTLS together.
    pub(crate) max_connections: usize,
    /// Connections open now across all workers, shared with the stream side.
    pub(crate) open: Arc<AtomicUsize>,
    /// Unverified sessions one worker holds at most.
    pub(crate) max_unverified: usize,
    /// Sessions one worker starts per second at most.
    pub(crate) new_per_second: u32,
    /// The certificate of new sessions.
    pub(crate) certificates: Arc<dyn Certificates>,
}

/// Where encrypted datagrams go.
pub(crate) trait Transmit {
    /// Sends `datagram` from the listener `local` to `to`.
    fn transmit(&mut self, local: SocketAddr, to: SocketAddr, datagram: &[u8]);
}

/// What the session table needs from the rest of the server.
pub(crate) trait Host: Transmit {
    /// Serves one decrypted message (STUN or ChannelData) from `client`.
    fn serve(&mut self, client: &FiveTuple, message: &[u8]) -> Served<'_>;
    /// Whether `client` holds an allocation: such a session is never idle.
    fn has_allocation(&self, client: &FiveTuple) -> bool;
    /// A session proved its address and took a connection slot.
    fn opened(&mut self, client: &FiveTuple);
    /// A counted session ended: its allocation goes with it.
    fn closed(&mut self, client: &FiveTuple, reason: CloseReason);
}

/// The outcome of [`Host::serve`].
pub(crate) enum Served<'a> {
    /// Nothing goes back.
    Nothing,
    /// This goes back, encrypted, in one record.
    Reply(&'a [u8]),
    /// The session must end.
    Close(CloseReason),
}

struct Session {
    dtls: Dtls,
    /// Tells this session from an earlier one of the same 5-tuple in the queues.
    serial: u64,
    opened: Instant,
    last_read: Instant,
    /// The address is proved and the session holds a connection slot.
    verified: bool,
    /// The handshake is complete.
    connected: bool,
    /// When dimpl wants `handle_timeout` next, if soon.
    wake: Option<Instant>,
    /// The wake time last put in the timer queue, so that it is put there once.
    queued_wake: Option<Instant>,
}

/// One worker's DTLS sessions.
pub(crate) struct DtlsServer {
    config: Arc<dimpl::Config>,
    settings: DtlsSettings,
    sessions: HashMap<FiveTuple, Session>,
    /// dimpl timers, earliest first; an entry whose session has moved on is skipped.
    timers: BinaryHeap<Reverse<(Instant, u64, FiveTuple)>>,
    /// Unverified sessions, oldest first; entries of sessions since verified or gone are
    /// skipped.
    unverified: VecDeque<(u64, FiveTuple)>,
    unverified_count: usize,
    /// Sessions whose send failed where they could not be closed: closed at the next timeout.
    failed: Vec<(FiveTuple, u64, Instant)>,
    next_serial: u64,
    next_sweep: Option<Instant>,
    /// The second in which sessions are being counted, and how many started in it.
    admission_window: Option<(Instant, u32)>,
    /// dimpl's output buffer, grown when it asks.
    buf: Vec<u8>,
}

impl DtlsServer {
    /// An empty table.
    pub(crate) fn new(settings: DtlsSettings) -> Result<DtlsServer, dimpl::Error> {
        let config = dimpl::Config::builder()
            .with_crypto_provider(keys::provider())
            // TURN clients authenticate with STUN credentials, not certificates.
            .require_client_certificate(false)
            .use_server_cookie(true)
            .handshake_timeout(settings.limits.frame_timeout + DIMPL_DEADLINE_MARGIN)
            .build()?;
        Ok(DtlsServer {
            config: Arc::new(config),
            settings,
            sessions: HashMap::new(),
            timers: BinaryHeap::new(),
            unverified: VecDeque::new(),
            unverified_count: 0,
            failed: Vec::new(),
            next_serial: 0,
            next_sweep: None,
            admission_window: None,
            buf: vec![0; 2048],
        })
    }

    /// Sessions in the table, verified or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// When [`DtlsServer::handle_timeout`] is due next, if anything waits.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let failed = self.failed.iter().map(|&(_, _, at)| at).min();
        [timer, failed, self.next_sweep].into_iter().flatten().min()
    }

    /// Handles one datagram from `client` to the listener `local`.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        local: SocketAddr,
        client: SocketAddr,
        datagram: &[u8],
        host: &mut impl Host,
    ) {
        let key = FiveTuple {
            client,
            server: local,
            transport: ClientTransport::Dtls,
        };
        if !self.sessions.contains_key(&key) {
            // Only a ClientHello may start a session: anything else from a stranger is noise.
            if !is_client_hello(datagram) {
                return;
            }
            if let Some(alert) = refuse_old_version(datagram) {
                // Said at once, so that a client that can also speak DTLS 1.2 (OpenSSL's
                // DTLSv1_client_method beside DTLSv1_2_client_method, as coturn's uclient
                // picks) tries again instead of waiting out its handshake timeout.
                host.transmit(local, client, &alert);
                return;
            }
            if !self.open(now, key, host) {
                return;
            }
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.last_read = now;
        let was_verified = session.verified;
        let fed = guarded(|| {
            session.dtls.handle_timeout(now)?;
            session.dtls.handle_packet(datagram)
        });
        let result = match fed {
            Some(Ok(())) => drive(session, &key, &mut self.buf, &self.settings, now, host),
            Some(Err(error)) => {
                debug!(client = ?key, %error, "DTLS failed");
                Err(CloseReason::Tls)
            }
            None => Err(CloseReason::Tls),
        };
        self.settle(key, was_verified, result, host);
    }

    /// Encrypts `message` (relayed data) towards the DTLS client `client`; false when there
    /// is no such session or it is not connected. A failure closes the session at the next
    /// [`DtlsServer::handle_timeout`], where the allocation can go with it.
    pub(crate) fn send_to(
        &mut self,
        now: Instant,
        client: &FiveTuple,
        message: &[u8],
        out: &mut impl Transmit,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(client) else {
            return false;
        };
        if !session.connected {
            return false;
        }
        let sent = guarded(|| session.dtls.send_application_data(message))
            .is_some_and(|sent| sent.is_ok())
            && flush(session, client, &mut self.buf, now, out);
        if !sent {
            self.failed.push((*client, session.serial, now));
            return false;
        }
        if session.wake != session.queued_wake
            && let Some(wake) = session.wake
        {
            session.queued_wake = Some(wake);
            self.timers.push(Reverse((wake, session.serial, *client)));
        }
        true
    }

    /// Runs what is due at `now`: dimpl's retransmissions and deadlines, the sessions whose
    /// send failed, and the idle and handshake limits.
    pub(crate) fn handle_timeout(&mut self, now: Instant, host: &mut impl Host) {
        for (key, serial, _) in std::mem::take(&mut self.failed) {
            if self.sessions.get(&key).is_some_and(|s| s.serial == serial) {
                self.close(&key, CloseReason::Tls, host);
            }
        }
        // Only the timers due on entry: one that dimpl sets again for `now` waits for the next
        // call, so that a session can never keep this loop spinning.
        let mut due = Vec::new();
        while let Some(&Reverse(entry)) = self.timers.peek()
            && entry.0 <= now
        {
            self.timers.pop();
            due.push(entry);
        }
        for (at, serial, key) in due {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            if session.serial != serial || session.wake != Some(at) {
                continue;
            }
            session.wake = None;
            session.queued_wake = None;
            let was_verified = session.verified;
            let result = match guarded(|| session.dtls.handle_timeout(now)) {
                Some(Ok(())) => drive(session, &key, &mut self.buf, &self.settings, now, host),
                Some(Err(error)) => {
                    debug!(client = ?key, %error, "DTLS timed out");
                    Err(CloseReason::Tls)
                }
                None => Err(CloseReason::Tls),
            };
            self.settle(key, was_verified, result, host);
        }
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep(now, host);
        }
    }

    /// Closes every session, telling each client, when the worker stops.
    pub(crate) fn close_all(&mut self, host: &mut impl Host) {
        let keys: Vec<FiveTuple> = self.sessions.keys().copied().collect();
        for key in keys {
            self.close_with(&key, CloseReason::Peer, true, host);
        }
    }

    /// Starts a session for `key`, whose first datagram is a ClientHello; false when no
    /// certificate can be had.
    fn open(&mut self, now: Instant, key: FiveTuple, host: &mut impl Host) -> bool {
        if !self.admit(now) {
            return false;
        }
        while self.unverified_count >= self.settings.max_unverified {
            let Some((serial, oldest)) = self.unverified.pop_front() else {
                break;
            };
            if self.is_unverified(&oldest, serial) {
                self.close(&oldest, CloseReason::Limit, host);
            }
        }
        let Some(certificate) = self.settings.certificates.current() else {
            return false;
        };
        let config = self.config.clone();
        // dimpl panics on a packet that arrives before its first `handle_timeout`.
        let Some(Ok(dtls)) = guarded(|| {
            let mut dtls = Dtls::new_auto(config, certificate, now);
            dtls.handle_timeout(now).map(|()| dtls)
        }) else {
            return false;
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        self.sessions.insert(
            key,
            Session {
                dtls,
                serial,
                opened: now,
                last_read: now,
                verified: false,
                connected: false,
                wake: None,
                queued_wake: None,
            },
        );
        self.unverified.push_back((serial, key));
        self.unverified_count += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
        true
    }

    /// Counts one new session against this second's budget; false when it is spent.
    fn admit(&mut self, now: Instant) -> bool {
        let (start, started) = match self.admission_window {
            Some((start, started))
                if now.saturating_duration_since(start) < Duration::from_secs(1) =>
            {
                (start, started)
            }
            _ => (now, 0),
        };
        if started >= self.settings.new_per_second {
            self.admission_window = Some((start, started));
            return false;
        }
        self.admission_window = Some((start, started + 1));
        true
    }

    fn is_unverified(&self, key: &FiveTuple, serial: u64) -> bool {
        self.sessions
            .get(key)
            .is_some_and(|s| s.serial == serial && !s.verified)
    }

    /// After a session was driven: closes it, or books its verification and its next timer.
    fn settle(
        &mut self,
        key: FiveTuple,
        was_verified: bool,
        result: Result<(), CloseReason>,
        host: &mut impl Host,
    ) {
        if let Err(reason) = result {
            if !was_verified && self.sessions.get(&key).is_some_and(|s| s.verified) {
                self.unverified_count -= 1;
            }
            self.close(&key, reason, host);
            return;
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.verified && !was_verified {
            self.unverified_count -= 1;
        }
        if session.wake != session.queued_wake
            && let Some(wake) = session.wake
        {
            session.queued_wake = Some(wake);
            self.timers.push(Reverse((wake, session.serial, key)));
        }
    }

    /// Closes the sessions past a limit, forgets the unverified entries that are done, and
    /// schedules the next check.
    fn sweep(&mut self, now: Instant, host: &mut impl Host) {
        let limits = self.settings.limits;
        let overdue: Vec<(FiveTuple, CloseReason)> = self
            .sessions
            .iter()
            .filter_map(|(key, session)| {
                let handshaking = (!session.connected).then_some(session.opened);
                let allocated = session.connected && host.has_allocation(key);
                overdue(&limits, now, session.last_read, handshaking, allocated)
                    .map(|reason| (*key, reason))
            })
            .collect();
        for (key, reason) in overdue {
            self.close(&key, reason, host);
        }
        while let Some(&(serial, key)) = self.unverified.front() {
            if self.is_unverified(&key, serial) {
                break;
            }
            self.unverified.pop_front();
        }
        // Stale timers of closed sessions would otherwise wait for their (distant) time.
        if self.timers.len() > 2 * self.sessions.len() + 64 {
            let sessions = &self.sessions;
            self.timers.retain(|Reverse((at, serial, key))| {
                sessions
                    .get(key)
                    .is_some_and(|s| s.serial == *serial && s.wake == Some(*at))
            });
        }
        self.next_sweep = (!self.sessions.is_empty()).then(|| now + SWEEP_INTERVAL);
    }

    fn close(&mut self, key: &FiveTuple, reason: CloseReason, host: &mut impl Host) {
        // A client that failed or said goodbye needs no close_notify; the others are told, so
        // that they need not wait for a timeout of their own.
        let notify = !matches!(reason, CloseReason::Tls | CloseReason::Peer);
        self.close_with(key, reason, notify, host);
    }

    fn close_with(
        &mut self,
        key: &FiveTuple,
        reason: CloseReason,
        notify: bool,
        host: &mut impl Host,
    ) {
        let Some(mut session) = self.sessions.remove(key) else {
            return;
        };
        if !session.verified {
            // Never counted: it leaves no trace but a debug line.
            self.unverified_count -= 1;
            debug!(client = ?key, reason = reason.as_str(), "unverified DTLS session dropped");
            return;
        }
        if notify
            && session.connected
            && guarded(|| session.dtls.close()).is_some_and(|closed| closed.is_ok())
        {
            let last_read = session.last_read;
            flush(&mut session, key, &mut self.buf, last_read, host);
        }
        self.settings.open.fetch_sub(1, Ordering::Relaxed);
        host.closed(key, reason);
        debug!(client = ?key, reason = reason.as_str(), "DTLS session closed");
    }
}

/// Drains what dimpl has after an input: datagrams to send, decrypted messages to serve,
/// the handshake's end, the next timer. `Err` when the session must close.
fn drive(
    session: &mut Session,
    key: &FiveTuple,
    buf: &mut Vec<u8>,
    settings: &DtlsSettings,
    now: Instant,
    host: &mut impl Host,
) -> Result<(), CloseReason> {
    loop {
        let dtls = &mut session.dtls;
        let room = buf.as_mut_slice();
        let Some(output) = guarded(move || dtls.poll_output(room)) else {
            return Err(CloseReason::Tls);
        };
        match output {
            Output::Packet(datagram) => {
                if !session.verified && verifies_address(datagram) {
                    verify(session, key, settings, host)?;
                }
                host.transmit(key.server, key.client, datagram);
            }
            Output::BufferTooSmall { needed } => buf.resize(needed, 0),
            Output::Timeout(at) => {
                session.wake = wake(now, at);
                return Ok(());
            }
            Output::Connected => {
                if !session.verified {
                    verify(session, key, settings, host)?;
                }
                session.connected = true;
                debug!(client = ?key, version = ?session.dtls.protocol_version(), "DTLS session established");
            }
            Output::ApplicationData(message) => {
                if !session.connected {
                    continue;
                }
                match host.serve(key, message) {
                    Served::Nothing => {}
                    Served::Reply(reply) => {
                        let sent = guarded(|| session.dtls.send_application_data(reply));
                        if sent.is_none_or(|sent| sent.is_err()) {
                            return Err(CloseReason::Tls);
                        }
                    }
                    Served::Close(reason) => return Err(reason),
                }
            }
            Output::CloseNotify => return Err(CloseReason::Peer),
            // No client certificate is asked for and no SRTP keys are exported.
            _ => {}
        }
    }
}

/// Sends what dimpl queued after a send or a close; false when it failed.
fn flush(
    session: &mut Session,
    key: &FiveTuple,
    buf: &mut Vec<u8>,
    now: Instant,
    out: &mut impl Transmit,
) -> bool {
    loop {
        let dtls = &mut session.dtls;
        let room = buf.as_mut_slice();
        let Some(output) = guarded(move || dtls.poll_output(room)) else {
            return false;
        };
        match output {
            Output::Packet(datagram) => out.transmit(key.server, key.client, datagram),
            Output::BufferTooSmall { needed } => buf.resize(needed, 0),
            Output::Timeout(at) => {
                session.wake = wake(now, at);
                return true;
            }
            // Nothing else follows a send: inputs are drained where they are handled.
            _ => {}
        }
    }
}

/// The session proved its address: it takes a connection slot, or ends at the limit.
fn verify(
    session: &mut Session,
    key: &FiveTuple,
    settings: &DtlsSettings,
    host: &mut impl Host,
) -> Result<(), CloseReason> {
    let open = &settings.open;
    host.opened(key);
    if open.fetch_add(1, Ordering::Relaxed) >= settings.max_connections {
        open.fetch_sub(1, Ordering::Relaxed);
        // Counted as a connection refused at the limit, as a stream refused at accept.
        host.closed(key, CloseReason::Limit);
        return Err(CloseReason::Limit);
    }
    session.verified = true;
    Ok(())
}

/// dimpl's next timer, if it is a real one.
fn wake(now: Instant, at: Instant) -> Option<Instant> {
    (at.saturating_duration_since(now) < TIMER_HORIZON).then_some(at)
}

/// Runs a dimpl call and turns a panic into `None`: dimpl parses bytes from anyone, and a bug
/// in one session must not take the worker, and every allocation on it, down.
fn guarded<T>(call: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(call)).ok()
}

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const HELLO_VERIFY_REQUEST: u8 = 3;

/// The random of a ServerHello that is a HelloRetryRequest (RFC 8446 §4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Whether a datagram starts with the first fragment of a ClientHello in epoch 0, the only
/// thing that may open a session.
pub(crate) fn is_client_hello(datagram: &[u8]) -> bool {
    let Some(header) = datagram.first_chunk::<RECORD_HEADER>() else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
    let Some(body) = datagram.get(RECORD_HEADER..RECORD_HEADER + length) else {
        return false;
    };
    let Some(handshake) = body.first_chunk::<HANDSHAKE_HEADER>() else {
        return false;
    };
    header[0] == HANDSHAKE
        && header[1] == 0xFE
        && header[3..5] == [0, 0]
        && handshake[0] == CLIENT_HELLO
        && handshake[6..9] == [0, 0, 0]
}

/// DTLS 1.0, which a ClientHello's `client_version` offers alone (versions count down: 1.0 is
/// 0xFEFF, 1.2 0xFEFD), and which RFC 8996 retires.
const DTLS_1_0: [u8; 2] = [0xFE, 0xFF];

/// The alert that refuses a ClientHello of DTLS 1.0 (RFC 8996): fatal `protocol_version`
/// (RFC 5246 §7.2), in a plaintext record of the client's own record version. `None` for a
/// ClientHello of DTLS 1.2 or later (1.3 keeps 1.2 in `legacy_version`).
pub(crate) fn refuse_old_version(client_hello: &[u8]) -> Option<[u8; RECORD_HEADER + 2]> {
    let offered =
        client_hello.get(RECORD_HEADER + HANDSHAKE_HEADER..RECORD_HEADER + HANDSHAKE_HEADER + 2)?;
    if offered != DTLS_1_0 {
        return None;
    }
    const FATAL: u8 = 2;
    const PROTOCOL_VERSION: u8 = 70;
    let mut alert = [0u8; RECORD_HEADER + 2];
    alert[0] = ALERT;
    alert[1..3].copy_from_slice(&client_hello[1..3]);
    // Epoch 0, sequence number 0: the first record of a server that kept no state.
    alert[11..13].copy_from_slice(&2u16.to_be_bytes());
    alert[13] = FATAL;
    alert[14] = PROTOCOL_VERSION;
    Some(alert)
}

/// Whether a datagram the server sends shows that the client's address is proved: anything
/// but a HelloVerifyRequest, a HelloRetryRequest or an alert, which dimpl sends before a
/// cookie has come back.
pub(crate) fn verifies_address(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(header) = rest.first_chunk::<RECORD_HEADER>() else {
            return true;
        };
        let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let Some(body) = rest.get(RECORD_HEADER..RECORD_HEADER + length) else {
            return true;
        };
        let before_cookie = match header[0] {
            ALERT => true,
            HANDSHAKE => match body.first() {
                Some(&HELLO_VERIFY_REQUEST) => true,
                // legacy_version (2 bytes), then the random.
                Some(&SERVER_HELLO) => body
                    .get(HANDSHAKE_HEADER + 2..HANDSHAKE_HEADER + 34)
                    .is_some_and(|random| random == HELLO_RETRY_RANDOM),
                _ => false,
            },
            // Change cipher spec, application data, DTLS 1.3's encrypted records.
            _ => false,
        };
        if !before_cookie {
            return true;
        }
        rest = &rest[RECORD_HEADER + length..];
    }
    false
}

#[cfg(test)]
mod tests;
