//! A small blocking DTLS client on dimpl's client role, for tests of TURN over DTLS: one UDP
//! socket connected to the server, one dimpl session, one STUN or ChannelData message per
//! record.
//!
//! The client offers no certificate and does not check the server's: it keeps the leaf the
//! server presented, for the test to compare.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dimpl::{Config, Dtls, DtlsCertificate, Output, ProtocolVersion};

use crate::stun_client::{ANSWER_WAIT, RecvError, connected_udp_socket};

/// The DTLS versions a client offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsVersion {
    /// DTLS 1.2 only.
    V12,
    /// DTLS 1.3 only.
    V13,
    /// Both: the server chooses (dimpl's hybrid ClientHello).
    Auto,
}

/// A DTLS client session with a server.
pub struct DtlsClient {
    socket: UdpSocket,
    dtls: Dtls,
    local: SocketAddr,
    connected: bool,
    closed: bool,
    /// Decrypted records not yet read.
    inbox: VecDeque<Vec<u8>>,
    peer_certificate: Option<Vec<u8>>,
    /// When dimpl wants its timer run.
    wake: Option<Instant>,
    buf: Vec<u8>,
}

impl DtlsClient {
    /// Handshakes with `server` offering `version`; panics when the handshake does not
    /// complete within [`ANSWER_WAIT`].
    pub fn connect(server: SocketAddr, version: DtlsVersion) -> DtlsClient {
        let mut client = DtlsClient::start(server, version);
        let deadline = Instant::now() + ANSWER_WAIT;
        while !client.connected {
            assert!(
                !client.closed,
                "the DTLS handshake with {server} failed ({version:?})"
            );
            assert!(
                Instant::now() < deadline,
                "the DTLS handshake with {server} took too long ({version:?})"
            );
            client.step(deadline, |_| true);
        }
        client
    }

    /// A client that has sent nothing yet: [`DtlsClient::drive_for`] moves it on.
    pub fn start(server: SocketAddr, version: DtlsVersion) -> DtlsClient {
        let (socket, local) = connected_udp_socket(server);
        let config = Arc::new(
            Config::builder()
                .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
                .build()
                .unwrap_or_else(|e| panic!("DTLS client configuration: {e}")),
        );
        let now = Instant::now();
        let certificate = client_certificate().clone();
        let mut dtls = match version {
            DtlsVersion::V12 => Dtls::new_12(config, certificate, now),
            DtlsVersion::V13 => Dtls::new_13(config, certificate, now),
            DtlsVersion::Auto => Dtls::new_auto(config, certificate, now),
        };
        dtls.set_active(true);
        dtls.handle_timeout(now)
            .unwrap_or_else(|e| panic!("DTLS client start: {e}"));
        DtlsClient {
            socket,
            dtls,
            local,
            connected: false,
            closed: false,
            inbox: VecDeque::new(),
            peer_certificate: None,
            wake: None,
            buf: vec![0; 2048],
        }
    }

    /// Runs the session for `duration`, sending only the datagrams `forward` lets through: a
    /// test's way to make a client that stalls in its handshake.
    pub fn drive_for(&mut self, duration: Duration, forward: impl Fn(&[u8]) -> bool) {
        let until = Instant::now() + duration;
        while Instant::now() < until && !self.closed {
            self.step(until, &forward);
        }
    }

    /// The client's own address, which the server should report as XOR-MAPPED-ADDRESS.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the handshake completed.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The version negotiated.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    /// The leaf certificate the server presented, DER.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_certificate.as_deref()
    }

    /// Sends `message` in one record; an error when the session is over.
    pub fn send(&mut self, message: &[u8]) -> io::Result<()> {
        if self.closed {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.dtls
            .send_application_data(message)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.flush();
        Ok(())
    }

    /// The next record's plaintext, by `deadline`.
    pub fn recv(&mut self, deadline: Instant) -> Result<Vec<u8>, RecvError> {
        loop {
            if let Some(message) = self.inbox.pop_front() {
                return Ok(message);
            }
            if self.closed {
                return Err(RecvError::Closed);
            }
            if Instant::now() >= deadline {
                return Err(RecvError::TimedOut);
            }
            self.step(deadline, |_| true);
        }
    }

    /// Ends the session with a close_notify.
    pub fn close(&mut self) {
        if self.dtls.close().is_ok() {
            self.flush();
        }
        self.closed = true;
    }

    /// Sends what dimpl has, then waits for one datagram (or dimpl's timer) until `deadline`.
    fn step(&mut self, deadline: Instant, forward: impl Fn(&[u8]) -> bool) {
        self.drain(&forward);
        let until = self.wake.map_or(deadline, |wake| wake.min(deadline));
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.socket
            .set_read_timeout(Some(wait))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut datagram = [0u8; 65_536];
        let received = self.socket.recv(&mut datagram);
        let now = Instant::now();
        let result = match received {
            Ok(n) => self
                .dtls
                .handle_timeout(now)
                .and_then(|()| self.dtls.handle_packet(&datagram[..n])),
            Err(_) => self.dtls.handle_timeout(now),
        };
        if result.is_err() {
            self.closed = true;
        }
        self.drain(&forward);
    }

    fn flush(&mut self) {
        self.drain(&|_: &[u8]| true);
    }

    fn drain(&mut self, forward: &impl Fn(&[u8]) -> bool) {
        loop {
            match self.dtls.poll_output(&mut self.buf) {
                // A refused datagram (ICMP from a closed port) is the test's to notice.
                Output::Packet(datagram) if forward(datagram) => {
                    let _ = self.socket.send(datagram);
                }
                Output::Packet(_) => {}
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(at) => {
                    self.wake = Some(at);
                    return;
                }
                Output::Connected => self.connected = true,
                Output::PeerCert(der) => self.peer_certificate = Some(der.to_vec()),
                Output::ApplicationData(data) => self.inbox.push_back(data.to_vec()),
                Output::CloseNotify => self.closed = true,
                _ => {}
            }
        }
    }
}

impl Drop for DtlsClient {
    /// Says goodbye, as closing a TCP connection does: the server ends the session at once.
    fn drop(&mut self) {
        if self.connected && !self.closed {
            self.close();
        }
    }
}

/// Whether a datagram holds a ClientHello: for tests that let a client go no further.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.first() == Some(&22) && datagram.get(13) == Some(&1)
}

/// The client's own certificate, which dimpl needs to exist although the server asks for
/// none: one ECDSA P-256 pair for the whole test process.
fn client_certificate() -> &'static DtlsCertificate {
    static CERTIFICATE: OnceLock<DtlsCertificate> = OnceLock::new();
    CERTIFICATE.get_or_init(|| {
        let certified = rcgen::generate_simple_self_signed(vec!["client".to_owned()])
            .unwrap_or_else(|e| panic!("cannot make a client certificate: {e}"));
        DtlsCertificate {
            certificate: certified.cert.der().to_vec(),
            private_key: certified.signing_key.serialize_der(),
        }
    })
}
