//! DTLS for `turns:…?transport=udp` and `stuns:…?transport=udp` URIs (RFC 7350): the
//! handshake, the server's certificate verified exactly as over TLS, and [`DtlsConn`], an
//! association that carries one STUN message or ChannelData per record, with datagram
//! semantics: records get lost like UDP datagrams, and requests are retransmitted as over UDP.
//!
//! The DTLS library (`dimpl`, sans-IO) runs the handshake and checks that the server holds the
//! key of the certificate it sent, but leaves the certificate itself to the application: this
//! module verifies it with the TLS path's [`TlsClient`] (the system's roots and `--ca`, the
//! URI's host, the validity period; `--insecure` looks past it and the report says so). The
//! library hands out the server's own certificate only; under DTLS 1.2 the intermediates are
//! read from the plaintext handshake ([`hello`]), under DTLS 1.3 they are encrypted and the
//! certificate is verified alone. The handshake is reported as the `dtls` check, the
//! certificate as `tls-certificate`, both by [`crate::tls::checks`].
//!
//! The library insists on a client certificate although servers rarely ask for one: an
//! ephemeral ECDSA P-256 one is made in memory, once per run.

pub mod hello;

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dimpl::{Config, Dtls, DtlsCertificate, Output, ProtocolVersion};
use tokio::net::UdpSocket;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, AlertDescription, CipherSuite, NamedGroup};

use crate::net::{INITIAL_RTO, Response, TransactError, transaction_id, unspecified};
use crate::tls::{Failure, Handshake, Protocol, TlsClient, TlsFailure, TlsOptions, cert};
use hello::Observer;

/// The check of the DTLS handshake.
pub const DTLS: &str = "dtls";

/// Output buffer during the handshake: the library writes the server's certificate into it
/// whole and cannot be asked for a larger buffer then. It reassembles a message from at most
/// 50 records, each within a datagram of at most [`RECEIVE_BUFFER`] bytes. The pages are
/// zeroed on demand, so only what is written costs memory.
const HANDSHAKE_BUFFER: usize = 1 << 20;
/// Output buffer once connected: a record is at most 2^14 bytes and some overhead.
const BUFFER: usize = 65_536;
/// The largest datagram read: a whole record of 2^14 bytes with its header and AEAD
/// overhead. Longer ones come out truncated, and the library drops them as malformed.
const RECEIVE_BUFFER: usize = 18 * 1024;
/// Flight retransmissions the library may make: enough that the probe's own timeout, not
/// the library, ends a handshake without answer.
const FLIGHT_RETRIES: usize = 10;

/// Makes DTLS associations with the run's trust settings.
#[derive(Debug)]
pub struct DtlsClient {
    tls: TlsClient,
    /// The library's configuration and the client certificate, or why there are none.
    setup: Result<(Arc<Config>, DtlsCertificate), String>,
}

/// An association just made, with what the handshake negotiated.
#[derive(Debug)]
pub struct DtlsConnection {
    /// The association; boxed, as the library's state takes a few kilobytes.
    pub conn: Box<DtlsConn>,
    /// What the handshake negotiated and the certificate's verification.
    pub handshake: Handshake,
}

impl DtlsClient {
    /// A client trusting the system's roots and `options.ca`, as TLS does.
    pub fn new(options: &TlsOptions) -> DtlsClient {
        let setup = client_certificate().and_then(|certificate| {
            let config = Config::builder()
                .flight_start_rto(INITIAL_RTO)
                .flight_retries(FLIGHT_RETRIES)
                .build()
                .map_err(|e| format!("the DTLS library refused its configuration: {e}"))?;
            Ok((Arc::new(config), certificate))
        });
        DtlsClient {
            tls: TlsClient::new(options),
            setup,
        }
    }

    /// Runs the handshake with `server` for `name` from a fresh UDP socket, within `timeout`.
    /// A certificate that does not verify ends the association (unless `--insecure`) before
    /// any STUN message goes into it.
    pub async fn handshake(
        &self,
        server: SocketAddr,
        name: &ServerName<'_>,
        timeout: Duration,
    ) -> Result<DtlsConnection, TlsFailure> {
        self.handshake_from(unspecified(server.ip()), server, name, timeout)
            .await
    }

    /// As [`DtlsClient::handshake`], from a socket bound to `from` (port 0): the association
    /// leaves from that address's interface.
    pub async fn handshake_from(
        &self,
        from: IpAddr,
        server: SocketAddr,
        name: &ServerName<'_>,
        timeout: Duration,
    ) -> Result<DtlsConnection, TlsFailure> {
        let started = Instant::now();
        let deadline = started + timeout;
        let fail = |failure: Failure| TlsFailure::new(failure, started.elapsed(), Protocol::Dtls);
        let (config, certificate) = self
            .setup
            .clone()
            .map_err(|why| fail(Failure::Other(why)))?;
        let socket = connected_socket(from, server).await.map_err(|e| {
            fail(Failure::Other(format!(
                "cannot open a UDP socket towards {server}: {e}"
            )))
        })?;
        let mut dtls = Dtls::new_auto(config, certificate, started);
        dtls.set_active(true);
        let mut conn = DtlsConn::new(socket, dtls, server)
            .map(Box::new)
            .map_err(|e| {
                fail(Failure::Other(format!(
                    "cannot open a UDP socket towards {server}: {e}"
                )))
            })?;
        if let Err(error) = conn.dtls.handle_timeout(started) {
            conn.fail(DtlsError::Fatal(error));
        }
        conn.pump();
        conn.flush().await;
        let mut verdict = None;
        loop {
            if verdict.is_none()
                && let Some(der) = conn.peer_cert.clone()
            {
                let (result, leaf_only) = self.verify(&der, conn.observer.as_ref(), name);
                if let Err(error) = &result
                    && !self.tls.insecure()
                {
                    // Dropping the association abandons it: no STUN message was sent in it.
                    let mut failure = self.tls.refused(error.clone(), &der, Protocol::Dtls);
                    failure.took = started.elapsed();
                    failure.leaf_only = leaf_only;
                    return Err(failure);
                }
                verdict = Some(result);
            }
            if conn.connected {
                break;
            }
            if let Some(error) = &conn.broken {
                let mut failure = fail(classify(error, timeout));
                failure.certificate = conn.peer_cert.as_deref().and_then(cert::parse);
                return Err(failure);
            }
            if !conn.wait(deadline).await && conn.broken.is_none() {
                let mut failure = fail(Failure::Timeout(timeout));
                failure.certificate = conn.peer_cert.as_deref().and_then(cert::parse);
                return Err(failure);
            }
        }
        if verdict.is_none() {
            return Err(fail(Failure::Other(
                "the server completed the handshake without a certificate".into(),
            )));
        }
        let took = started.elapsed();
        let observed = conn.observer.take().unwrap_or_default();
        conn.out = vec![0; BUFFER];
        let handshake = Handshake {
            protocol: Protocol::Dtls,
            version: version_name(conn.dtls.protocol_version()),
            cipher_suite: observed
                .cipher_suite
                .map(|suite| format!("{:?}", CipherSuite::from(suite))),
            group: observed
                .group
                .map(|group| format!("{:?}", NamedGroup::from(group))),
            alpn: None,
            took,
            certificate: conn.peer_cert.as_deref().and_then(cert::parse),
            verification: self.tls.verification(verdict),
        };
        Ok(DtlsConnection { conn, handshake })
    }

    /// Verifies the server's certificate `der` with the intermediates the handshake showed;
    /// whether it had to be verified alone.
    fn verify(
        &self,
        der: &[u8],
        observed: Option<&Observer>,
        name: &ServerName<'_>,
    ) -> (Result<(), rustls::Error>, bool) {
        let chain = observed
            .map(|o| o.chain.as_slice())
            .filter(|chain| chain.first().is_some_and(|leaf| leaf == der));
        let intermediates: Vec<CertificateDer<'_>> = chain
            .map(|chain| {
                chain[1..]
                    .iter()
                    .map(|c| CertificateDer::from(c.as_slice()))
                    .collect()
            })
            .unwrap_or_default();
        let result = self
            .tls
            .verify(&CertificateDer::from(der), &intermediates, name);
        (result, chain.is_none())
    }
}

/// Why an association cannot be used any more.
#[derive(Clone, Debug)]
pub enum DtlsError {
    /// The server sent close_notify.
    Closed,
    /// ICMP port unreachable: nothing listens on the server's port.
    PortUnreachable,
    /// The DTLS library gave up on the association (every error of it is fatal).
    Fatal(dimpl::Error),
    /// The socket failed.
    Io(String),
}

impl std::fmt::Display for DtlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsError::Closed => f.write_str("the server closed the DTLS association"),
            DtlsError::PortUnreachable => f.write_str(
                "the host answered with ICMP port unreachable: nothing listens on the server's \
                 UDP port any more",
            ),
            DtlsError::Fatal(error) => write!(f, "the DTLS association failed: {error}"),
            DtlsError::Io(error) => write!(f, "the UDP socket failed: {error}"),
        }
    }
}

impl From<DtlsError> for TransactError {
    fn from(error: DtlsError) -> TransactError {
        match error {
            DtlsError::Closed => TransactError::Closed,
            DtlsError::PortUnreachable => TransactError::PortUnreachable,
            other => TransactError::Stream(other.to_string()),
        }
    }
}

/// One DTLS association with the server, on a UDP socket connected to it: each
/// [`DtlsConn::send`] is one record in one datagram, each record received one message.
pub struct DtlsConn {
    socket: UdpSocket,
    dtls: Dtls,
    /// The library's output buffer.
    out: Vec<u8>,
    /// Where datagrams are read into.
    incoming: Vec<u8>,
    /// Datagrams the library produced and the socket has not taken yet.
    outgoing: VecDeque<Vec<u8>>,
    /// Records received and not handed out yet.
    received: VecDeque<Vec<u8>>,
    /// When the library wants [`Dtls::handle_timeout`] next.
    timer: Option<Instant>,
    local: SocketAddr,
    peer: SocketAddr,
    broken: Option<DtlsError>,
    /// During the handshake: what the server's plaintext messages said.
    observer: Option<Observer>,
    /// The server's certificate, once it came.
    peer_cert: Option<Vec<u8>>,
    connected: bool,
}

impl std::fmt::Debug for DtlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsConn")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("dtls", &self.dtls)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl DtlsConn {
    fn new(socket: UdpSocket, dtls: Dtls, peer: SocketAddr) -> io::Result<DtlsConn> {
        Ok(DtlsConn {
            local: socket.local_addr()?,
            socket,
            dtls,
            out: vec![0; HANDSHAKE_BUFFER],
            incoming: vec![0; RECEIVE_BUFFER],
            outgoing: VecDeque::new(),
            received: VecDeque::new(),
            timer: None,
            peer,
            broken: None,
            observer: Some(Observer::default()),
            peer_cert: None,
            connected: false,
        })
    }

    /// The socket's local address: connected, so the source address the server sees when no
    /// NAT is on the way.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `data` in one record. Fails once the association cannot be used.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        self.queue(data)?;
        self.flush().await;
        self.usable()
    }

    /// The next record from the server, or `None` once `deadline` passed without one.
    /// Cancelling it loses nothing.
    pub async fn recv(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, DtlsError> {
        loop {
            if let Some(data) = self.received.pop_front() {
                return Ok(Some(data));
            }
            self.usable()?;
            if !self.wait(deadline).await {
                self.usable()?;
                return Ok(None);
            }
        }
    }

    /// Sends a STUN request and waits up to `timeout` for the message with its transaction
    /// ID, retransmitting at 250 ms, 500 ms, 1 s, ... as over UDP and passing over other
    /// messages.
    pub async fn transact(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Response, TransactError> {
        let id = transaction_id(request)?.to_vec();
        let deadline = Instant::now() + timeout;
        let mut rto = INITIAL_RTO;
        let mut transmissions = 0u32;
        loop {
            let sent_at = Instant::now();
            self.send(request).await?;
            transmissions += 1;
            let next = (sent_at + rto).min(deadline);
            rto = rto.saturating_mul(2);
            while let Some(message) = self.recv(next).await? {
                if message.get(8..20) == Some(&id[..]) {
                    return Ok(Response {
                        bytes: message,
                        from: self.peer,
                        rtt: sent_at.elapsed(),
                        retransmitted: transmissions > 1,
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(TransactError::Timeout);
            }
        }
    }

    /// Sends `data` in one record without waiting for the socket: for a release on drop. A
    /// datagram the socket cannot take at once is lost.
    pub fn send_now(&mut self, data: &[u8]) {
        if self.queue(data).is_ok() {
            self.try_flush();
        }
    }

    /// Hands `data` to the library and collects the record it makes.
    fn queue(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        self.usable()?;
        if let Err(error) = self.dtls.send_application_data(data) {
            self.fail(DtlsError::Fatal(error));
        }
        self.pump();
        self.usable()
    }

    fn usable(&self) -> Result<(), DtlsError> {
        match &self.broken {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, error: DtlsError) {
        self.broken.get_or_insert(error);
    }

    /// Drains the library's output: datagrams to send, events, the next timer.
    fn pump(&mut self) {
        loop {
            match self.dtls.poll_output(&mut self.out) {
                Output::Packet(packet) => self.outgoing.push_back(packet.to_vec()),
                Output::BufferTooSmall { needed } => self.out.resize(needed, 0),
                Output::Timeout(at) => {
                    self.timer = Some(at);
                    return;
                }
                Output::Connected => self.connected = true,
                Output::PeerCert(der) => self.peer_cert = Some(der.to_vec()),
                Output::ApplicationData(data) => self.received.push_back(data.to_vec()),
                Output::CloseNotify => {
                    self.broken.get_or_insert(DtlsError::Closed);
                }
                // Keying material for SRTP, of no use here.
                _ => {}
            }
        }
    }

    /// Sends what the library produced. Cancelling it loses nothing: a datagram leaves the
    /// queue once sent.
    async fn flush(&mut self) {
        while let Some(datagram) = self.outgoing.front() {
            if let Err(error) = self.socket.send(datagram).await {
                self.socket_error(error);
            }
            self.outgoing.pop_front();
        }
    }

    fn try_flush(&mut self) {
        while let Some(datagram) = self.outgoing.pop_front() {
            let _ = self.socket.try_send(&datagram);
        }
    }

    fn socket_error(&mut self, error: io::Error) {
        if error.kind() == io::ErrorKind::ConnectionRefused {
            self.fail(DtlsError::PortUnreachable);
        } else {
            self.fail(DtlsError::Io(error.to_string()));
        }
    }

    /// Waits for one datagram or the library's timer, whichever comes first, but not past
    /// `deadline`, and lets the library act on it. False once `deadline` passed or the
    /// association broke.
    async fn wait(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline || self.broken.is_some() {
            return false;
        }
        // A timer already due is handled at once, then no sooner than a millisecond later:
        // never a busy loop.
        let wake = self
            .timer
            .map_or(deadline, |at| at.min(deadline))
            .max(now + Duration::from_millis(1));
        let read = tokio::time::timeout_at(wake.into(), self.socket.recv(&mut self.incoming));
        let received = read.await;
        let now = Instant::now();
        let mut result = self.dtls.handle_timeout(now);
        match received {
            Ok(Ok(len)) => {
                let datagram = &self.incoming[..len];
                if let Some(observer) = &mut self.observer {
                    observer.observe(datagram);
                }
                result = result.and_then(|()| self.dtls.handle_packet(datagram));
            }
            Ok(Err(error)) => self.socket_error(error),
            Err(_) => {}
        }
        if let Err(error) = result {
            self.fail(DtlsError::Fatal(error));
        }
        self.pump();
        self.flush().await;
        self.broken.is_none()
    }
}

impl Drop for DtlsConn {
    /// Says goodbye with close_notify, best effort, so that the server can forget the
    /// association at once.
    fn drop(&mut self) {
        if self.connected && self.broken.is_none() && self.dtls.close().is_ok() {
            self.pump();
            self.try_flush();
        }
    }
}

/// A UDP socket on an ephemeral port of `from`, connected to `server`: it receives from the
/// server only, and ICMP errors reach it.
async fn connected_socket(from: IpAddr, server: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(from, 0)).await?;
    socket.connect(server).await?;
    Ok(socket)
}

/// The ephemeral client certificate the library requires, made once per run.
fn client_certificate() -> Result<DtlsCertificate, String> {
    static MADE: OnceLock<Result<DtlsCertificate, String>> = OnceLock::new();
    MADE.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["ice-probe".to_owned()])
            .map_err(|e| format!("cannot make the DTLS client certificate: {e}"))?;
        Ok(DtlsCertificate {
            certificate: made.cert.der().to_vec(),
            private_key: made.signing_key.serialize_der(),
        })
    })
    .clone()
}

/// The failure a broken handshake stands for.
fn classify(error: &DtlsError, timeout: Duration) -> Failure {
    match error {
        DtlsError::Closed => Failure::Closed,
        DtlsError::PortUnreachable => Failure::PortUnreachable,
        DtlsError::Io(error) => Failure::Other(error.clone()),
        DtlsError::Fatal(dimpl::Error::Timeout(_)) => Failure::Timeout(timeout),
        DtlsError::Fatal(dimpl::Error::SecurityError(dimpl::SecurityError::FatalAlert {
            description,
        })) => Failure::Alert(AlertDescription::from(*description)),
        DtlsError::Fatal(dimpl::Error::UnexpectedMessage(
            dimpl::UnexpectedMessageError::UnrecognizedAutoServerResponse,
        )) => Failure::NotTls("something that is neither DTLS 1.2 nor DTLS 1.3".into()),
        DtlsError::Fatal(dimpl::Error::ConnectionClosed) => Failure::Closed,
        DtlsError::Fatal(other) => Failure::Other(other.to_string()),
    }
}

/// `DTLS 1.2` or `DTLS 1.3`.
fn version_name(version: Option<ProtocolVersion>) -> String {
    match version {
        Some(ProtocolVersion::DTLS1_2) => "DTLS 1.2".into(),
        Some(ProtocolVersion::DTLS1_3) => "DTLS 1.3".into(),
        Some(other) => format!("{other:?}"),
        None => "unknown version".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_client_certificate_is_one_the_library_takes() {
        let certificate = client_certificate().unwrap();
        assert!(cert::parse(&certificate.certificate).is_some());
        let (config, certificate) = DtlsClient::new(&TlsOptions::default()).setup.unwrap();
        // The library parses the key when the client starts, and panics on one it cannot.
        let mut dtls = Dtls::new_auto(config, certificate, Instant::now());
        dtls.set_active(true);
        let mut out = vec![0; 4096];
        assert!(matches!(dtls.poll_output(&mut out), Output::Packet(_)));
    }

    #[test]
    fn library_errors_are_classified() {
        let timeout = Duration::from_secs(2);
        let alert = DtlsError::Fatal(dimpl::Error::SecurityError(
            dimpl::SecurityError::FatalAlert { description: 40 },
        ));
        assert!(matches!(
            classify(&alert, timeout),
            Failure::Alert(AlertDescription::HandshakeFailure)
        ));
        let gave_up = DtlsError::Fatal(dimpl::Error::Timeout(dimpl::TimeoutError::Handshake));
        assert!(matches!(classify(&gave_up, timeout), Failure::Timeout(t) if t == timeout));
        assert!(matches!(
            classify(&DtlsError::PortUnreachable, timeout),
            Failure::PortUnreachable
        ));
        assert_eq!(version_name(Some(ProtocolVersion::DTLS1_3)), "DTLS 1.3");
        let closed: TransactError = DtlsError::Closed.into();
        assert!(matches!(closed, TransactError::Closed));
    }
}
