//! A small blocking STUN/TURN client for end-to-end tests, the same over UDP, TCP, TLS and
//! DTLS.
//!
//! Over a stream it cuts what it reads into frames with
//! [`icebreaker_wire::framing::frame_in`] and pads ChannelData to 4 bytes (RFC 8656 §3.1);
//! over TLS it offers ALPN `stun.turn` and trusts only the certificates it is given. Over DTLS
//! ([`crate::dtls_client`]) each record is one message, as each datagram is over UDP. It
//! answers the 401 challenge of an Allocate with the MD5 long-term key and signs every later
//! request with it.
//!
//! Every wait has a deadline. A broken setup (no answer, a connection that cannot be made, an
//! answer that does not parse or is wrongly signed) panics with what happened; a refusal the
//! test may be looking for (an error code, a closed connection) is returned instead.
//!
//! ```no_run
//! use icebreaker_tests::stun_client::StunClient;
//! # let (server, peer): (std::net::SocketAddr, std::net::SocketAddr) = unimplemented!();
//! let mut client = StunClient::tcp(server);
//! assert_eq!(client.binding(), client.local_addr());
//! client.allocate_relayed("alice", "secret");
//! client.create_permission(peer).expect_success("CreatePermission");
//! client.send_indication(peer, b"hello");
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use icebreaker_wire::attr::{
    Data, ErrorCodeAttribute, Lifetime, Nonce, Realm, RequestedTransport, Username,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::framing::{Framing, frame_in};
use icebreaker_wire::{
    ChannelData, ChannelNumber, ChannelRange, Class, ErrorCode, IntegrityKey, Message, MessageType,
    MessageWriter, Method, TransactionId, Transport as Padding, write_channel_data,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};

use crate::dtls_client::{DtlsClient, DtlsVersion};

mod rfc6062;

pub use rfc6062::connection_attempt;

/// How long a request waits for its answer, and a connection or handshake for completion.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// How long a UDP request waits before it is sent again.
const UDP_RETRANSMIT: Duration = Duration::from_millis(500);

/// The ALPN protocol of STUN and TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// The transport a client speaks, as the server's metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One message per datagram.
    Udp,
    /// Frames back to back on a TCP connection.
    Tcp,
    /// Frames back to back inside TLS.
    Tls,
    /// One message per DTLS record.
    Dtls,
}

impl Transport {
    /// All four, in the order the tests go through them.
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Dtls,
    ];

    /// The `transport` label of the server's metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Dtls => "dtls",
        }
    }

    /// Whether messages follow each other in a byte stream (ChannelData padded).
    pub const fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

/// Why no frame was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing whole arrived before the deadline.
    TimedOut,
    /// The server closed the connection (end of stream, reset, or a TLS failure).
    Closed,
}

/// A client TLS configuration trusting exactly the certificates in `trusted_pems` (PEM
/// strings, self-signed test certificates included), offering ALPN `stun.turn`, limited to
/// `versions` (`rustls::ALL_VERSIONS` for both 1.2 and 1.3).
pub fn tls_config(
    trusted_pems: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for pem in trusted_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.unwrap_or_else(|e| panic!("not a PEM certificate: {e}"));
            roots
                .add(cert)
                .unwrap_or_else(|e| panic!("cannot trust the test certificate: {e}"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap_or_else(|e| panic!("TLS versions {versions:?}: {e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    Arc::new(config)
}

/// The DER of the first certificate in a PEM string.
pub fn certificate_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap_or_else(|e| panic!("not a PEM certificate: {e}"))
        .to_vec()
}

/// The connection under the client.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Dtls(Box<DtlsClient>),
}

impl Link {
    /// The socket whose read timeout bounds every read.
    fn set_read_timeout(&self, timeout: Duration) {
        // A zero timeout means "block forever" to the OS: never ask for one.
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        let result = match self {
            Link::Udp(socket) => socket.set_read_timeout(timeout),
            Link::Tcp(stream) => stream.set_read_timeout(timeout),
            Link::Tls(tls) => tls.sock.set_read_timeout(timeout),
            // Its reads take a deadline of their own.
            Link::Dtls(_) => Ok(()),
        };
        result.unwrap_or_else(|e| panic!("cannot set a read timeout: {e}"));
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Udp(socket) => socket.recv(buf),
            Link::Tcp(stream) => stream.read(buf),
            Link::Tls(tls) => tls.read(buf),
            Link::Dtls(dtls) => match dtls.recv(Instant::now() + ANSWER_WAIT) {
                Ok(message) => {
                    let n = message.len().min(buf.len());
                    buf[..n].copy_from_slice(&message[..n]);
                    Ok(n)
                }
                Err(RecvError::TimedOut) => Err(io::ErrorKind::TimedOut.into()),
                Err(RecvError::Closed) => Ok(0),
            },
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Udp(socket) => socket.send(bytes).map(|_| ()),
            Link::Tcp(stream) => stream.write_all(bytes),
            Link::Tls(tls) => tls.write_all(bytes).and_then(|()| tls.flush()),
            Link::Dtls(dtls) => dtls.send(bytes),
        }
    }

    /// Whether each read is one whole message: a datagram or a DTLS record.
    fn is_datagram(&self) -> bool {
        matches!(self, Link::Udp(_) | Link::Dtls(_))
    }
}

/// The long-term credentials of the allocation, once the 401 challenge told the realm and
/// nonce.
#[derive(Clone)]
struct Credentials {
    username: String,
    realm: String,
    nonce: String,
    key: IntegrityKey,
}

/// A STUN or TURN answer, owned.
#[derive(Clone)]
pub struct Answer(pub Vec<u8>);

impl Answer {
    /// The parsed message.
    pub fn message(&self) -> Message<'_> {
        Message::parse(&self.0).unwrap_or_else(|e| panic!("the answer is not STUN: {e}"))
    }

    /// Its ERROR-CODE, if it has one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.message()
            .get::<ErrorCodeAttribute>()
            .unwrap_or_else(|e| panic!("bad ERROR-CODE: {e}"))
            .map(|e| e.code)
    }

    /// Every XOR-RELAYED-ADDRESS, in order (two in a dual allocation).
    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.message()
            .get_all::<XorRelayedAddress>()
            .map(|a| {
                a.unwrap_or_else(|e| panic!("bad XOR-RELAYED-ADDRESS: {e}"))
                    .0
            })
            .collect()
    }

    /// Panics, naming `what` and the error code, unless this is a success answer.
    pub fn expect_success(&self, what: &str) -> &Answer {
        let message = self.message();
        assert_eq!(
            message.class(),
            Class::Success,
            "{what} failed with {:?}",
            self.error_code()
        );
        self
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Message::parse(&self.0) {
            Ok(message) => write!(f, "{message:?}"),
            Err(e) => write!(f, "{} bytes that are not STUN ({e})", self.0.len()),
        }
    }
}

/// A blocking STUN/TURN client on one UDP socket, TCP connection or TLS session.
pub struct StunClient {
    link: Link,
    transport: Transport,
    local: SocketAddr,
    /// Bytes read from a stream that do not make a whole frame yet.
    inbox: Vec<u8>,
    /// Frames that arrived while a request waited for its answer, oldest first.
    backlog: VecDeque<Vec<u8>>,
    credentials: Option<Credentials>,
}

/// A new UDP socket of `server`'s family connected to it, and its address: once connected,
/// the specific address the server sees.
pub(crate) fn connected_udp_socket(server: SocketAddr) -> (UdpSocket, SocketAddr) {
    let any = if server.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(any).unwrap_or_else(|e| panic!("bind {any}: {e}"));
    socket
        .connect(server)
        .unwrap_or_else(|e| panic!("connect {server}: {e}"));
    let local = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (socket, local)
}

impl StunClient {
    /// A client on a new UDP socket of `server`'s family, sending only to `server`.
    pub fn udp(server: SocketAddr) -> StunClient {
        let (socket, local) = connected_udp_socket(server);
        StunClient::new(Link::Udp(socket), Transport::Udp, local)
    }

    /// A client on a new TCP connection to `server`.
    pub fn tcp(server: SocketAddr) -> StunClient {
        StunClient::from_tcp(connect(server))
    }

    /// A client on an open TCP connection (on which a test may have written a preface, such
    /// as a PROXY protocol header).
    pub fn from_tcp(stream: TcpStream) -> StunClient {
        let local = stream.local_addr().unwrap_or_else(|e| panic!("{e}"));
        StunClient::new(Link::Tcp(stream), Transport::Tcp, local)
    }

    /// A client on a new TLS session with `server`, which must present a certificate for
    /// `server_name` that `config` trusts; panics when the handshake fails.
    pub fn tls(server: SocketAddr, config: &Arc<ClientConfig>, server_name: &str) -> StunClient {
        StunClient::from_tls(connect(server), config, server_name)
    }

    /// As [`StunClient::tls`], the handshake starting on an open TCP connection.
    pub fn from_tls(
        stream: TcpStream,
        config: &Arc<ClientConfig>,
        server_name: &str,
    ) -> StunClient {
        let local = stream.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let peer = stream.peer_addr().unwrap_or_else(|e| panic!("{e}"));
        let name = ServerName::try_from(server_name.to_owned())
            .unwrap_or_else(|e| panic!("server name {server_name:?}: {e}"));
        let session = ClientConnection::new(config.clone(), name)
            .unwrap_or_else(|e| panic!("cannot start a TLS session: {e}"));
        let mut tls = StreamOwned::new(session, stream);
        let deadline = Instant::now() + ANSWER_WAIT;
        while tls.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "TLS handshake with {peer} took too long");
            tls.sock
                .set_read_timeout(Some(left))
                .unwrap_or_else(|e| panic!("{e}"));
            tls.conn
                .complete_io(&mut tls.sock)
                .unwrap_or_else(|e| panic!("TLS handshake with {peer} failed: {e}"));
        }
        StunClient::new(Link::Tls(Box::new(tls)), Transport::Tls, local)
    }

    /// A client on a new DTLS session with `server`, offering DTLS 1.2 and 1.3; panics when
    /// the handshake fails.
    pub fn dtls(server: SocketAddr) -> StunClient {
        StunClient::from_dtls(DtlsClient::connect(server, DtlsVersion::Auto))
    }

    /// A client on an established DTLS session.
    pub fn from_dtls(session: DtlsClient) -> StunClient {
        let local = session.local_addr();
        StunClient::new(Link::Dtls(Box::new(session)), Transport::Dtls, local)
    }

    fn new(link: Link, transport: Transport, local: SocketAddr) -> StunClient {
        StunClient {
            link,
            transport,
            local,
            inbox: Vec::new(),
            backlog: VecDeque::new(),
            credentials: None,
        }
    }

    /// The client's own address, which the server should report as XOR-MAPPED-ADDRESS.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transport it speaks.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The TLS session, to look at its ALPN protocol, version and certificates.
    pub fn tls_session(&self) -> Option<&ClientConnection> {
        match &self.link {
            Link::Tls(tls) => Some(&tls.conn),
            _ => None,
        }
    }

    /// The DTLS session, to look at its version and the server's certificate.
    pub fn dtls_session(&self) -> Option<&DtlsClient> {
        match &self.link {
            Link::Dtls(dtls) => Some(dtls),
            _ => None,
        }
    }

    /// Ends a DTLS session with a close_notify; nothing for other transports.
    pub fn close_dtls(&mut self) {
        if let Link::Dtls(dtls) = &mut self.link {
            dtls.close();
        }
    }

    /// The MD5 long-term key of the allocation's user, once [`StunClient::allocate`] ran.
    pub fn key(&self) -> IntegrityKey {
        self.credentials().key.clone()
    }

    /// Sends `bytes` as they are: one datagram over UDP, one record over DTLS, bytes on the
    /// stream otherwise (the caller frames them). Panics when the connection is gone.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("cannot send {} bytes: {e}", bytes.len()));
    }

    /// As [`StunClient::send_raw`], returning the error of a connection the server closed.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.link.write(bytes)
    }

    /// The next whole frame (a STUN message, or ChannelData with its padding) that arrives
    /// within `timeout`: first those that arrived while a request waited.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        if let Some(frame) = self.backlog.pop_front() {
            return Ok(frame);
        }
        self.recv_from_link(Instant::now() + timeout)
    }

    fn recv_from_link(&mut self, deadline: Instant) -> Result<Vec<u8>, RecvError> {
        let mut chunk = vec![0u8; 65_536];
        if let Link::Dtls(dtls) = &mut self.link {
            return dtls.recv(deadline);
        }
        loop {
            if !matches!(self.link, Link::Udp(_)) {
                match frame_in(&self.inbox, ChannelRange::Rfc8656) {
                    Ok(Framing::Complete(frame)) => {
                        return Ok(self.inbox.drain(..frame.len).collect());
                    }
                    Ok(Framing::Incomplete { .. }) => {}
                    Err(e) => panic!("the server sent bytes that cannot be framed: {e}"),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvError::TimedOut);
            }
            self.link.set_read_timeout(left);
            match self.link.read(&mut chunk) {
                Ok(0) if !matches!(self.link, Link::Udp(_)) => return Err(RecvError::Closed),
                Ok(n) if matches!(self.link, Link::Udp(_)) => return Ok(chunk[..n].to_vec()),
                Ok(n) => self.inbox.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return Err(RecvError::Closed),
            }
        }
    }

    /// Whether the server closes the connection within `timeout`; whatever it sends before
    /// is read and thrown away. A TLS alert or a DTLS close_notify counts as a close.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        assert!(
            !matches!(self.link, Link::Udp(_)),
            "a UDP socket has no connection to close"
        );
        let deadline = Instant::now() + timeout;
        if let Link::Dtls(dtls) = &mut self.link {
            loop {
                match dtls.recv(deadline) {
                    Ok(_) => {}
                    Err(RecvError::Closed) => return true,
                    Err(RecvError::TimedOut) => return false,
                }
            }
        }
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.link.set_read_timeout(left);
            match self.link.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) || is_timeout(&e) => {}
                Err(_) => return true,
            }
        }
    }

    /// Sends `request` and returns the answer with its transaction ID, keeping anything else
    /// that arrives meanwhile for [`StunClient::recv`]. Over UDP and DTLS the request is sent
    /// again every half second; panics when no answer comes within [`ANSWER_WAIT`].
    pub fn exchange(&mut self, request: &[u8]) -> Answer {
        let sent = Message::parse(request)
            .unwrap_or_else(|e| panic!("the request is not STUN: {e}"))
            .transaction_id();
        let deadline = Instant::now() + ANSWER_WAIT;
        self.send_raw(request);
        let mut next_send = Instant::now() + UDP_RETRANSMIT;
        loop {
            let wait_until = if self.link.is_datagram() {
                deadline.min(next_send)
            } else {
                deadline
            };
            match self.recv_from_link(wait_until) {
                Ok(frame) => {
                    let answer = Message::parse(&frame)
                        .ok()
                        .filter(|m| m.class().is_response() && m.transaction_id() == sent);
                    if answer.is_some() {
                        return Answer(frame);
                    }
                    self.backlog.push_back(frame);
                }
                Err(RecvError::Closed) => panic!("the server closed the connection"),
                Err(RecvError::TimedOut) => {
                    assert!(
                        Instant::now() < deadline,
                        "no answer to a request within {ANSWER_WAIT:?} over {:?}",
                        self.transport
                    );
                    self.send_raw(request);
                    next_send = Instant::now() + UDP_RETRANSMIT;
                }
            }
        }
    }

    /// A Binding request with FINGERPRINT; returns the XOR-MAPPED-ADDRESS of its success
    /// answer.
    pub fn binding(&mut self) -> SocketAddr {
        let request = binding_request();
        let answer = self.exchange(&request);
        answer.expect_success("Binding");
        answer
            .message()
            .get::<XorMappedAddress>()
            .unwrap_or_else(|e| panic!("bad XOR-MAPPED-ADDRESS: {e}"))
            .unwrap_or_else(|| panic!("no XOR-MAPPED-ADDRESS in {answer:?}"))
            .0
    }

    /// An Allocate (REQUESTED-TRANSPORT UDP, plus what `extra` adds) as `username`: the
    /// first, unsigned, must be challenged with 401, REALM and NONCE; the second is signed
    /// with the MD5 long-term key, and its answer, whatever it says, is returned (its
    /// MESSAGE-INTEGRITY checked when present).
    pub fn allocate(
        &mut self,
        username: &str,
        password: &str,
        extra: impl Fn(&mut MessageWriter<'_>),
    ) -> Answer {
        self.allocate_transport(RequestedTransport::UDP, username, password, extra)
    }

    /// As [`StunClient::allocate`], with REQUESTED-TRANSPORT `requested`: TCP asks for an
    /// RFC 6062 TCP allocation.
    pub fn allocate_transport(
        &mut self,
        requested: RequestedTransport,
        username: &str,
        password: &str,
        extra: impl Fn(&mut MessageWriter<'_>),
    ) -> Answer {
        let mut buf = [0u8; 512];
        let allocate = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut w = MessageWriter::new(&mut buf, allocate, transaction_id()).expect("fits");
        w.add(&requested).expect("fits");
        extra(&mut w);
        let len = w.finish();
        let challenge = self.exchange(&buf[..len]);
        assert_eq!(
            challenge.error_code(),
            Some(ErrorCode::UNAUTHENTICATED),
            "an unsigned Allocate must be challenged: {challenge:?}"
        );
        let message = challenge.message();
        let text = |value: Option<&str>, what: &str| {
            value
                .unwrap_or_else(|| panic!("no {what} in the 401: {challenge:?}"))
                .to_owned()
        };
        let realm = text(message.get::<Realm>().ok().flatten().map(|r| r.0), "REALM");
        let nonce = text(message.get::<Nonce>().ok().flatten().map(|n| n.0), "NONCE");
        let key = IntegrityKey::long_term(KeyAlgorithm::Md5, username, &realm, password);
        self.credentials = Some(Credentials {
            username: username.to_owned(),
            realm,
            nonce,
            key,
        });
        self.signed(Method::ALLOCATE, |w| {
            w.add(&requested).expect("fits");
            extra(w);
        })
    }

    /// Allocates as `username` and returns the (first) relayed address; panics unless the
    /// Allocate succeeds.
    pub fn allocate_relayed(&mut self, username: &str, password: &str) -> SocketAddr {
        let answer = self.allocate(username, password, |_| {});
        answer.expect_success("Allocate");
        let relayed = answer.relayed();
        *relayed
            .first()
            .unwrap_or_else(|| panic!("no XOR-RELAYED-ADDRESS in {answer:?}"))
    }

    /// A request of `method` with what `add` writes, then USERNAME, REALM, NONCE,
    /// MESSAGE-INTEGRITY and FINGERPRINT; returns the answer, whose MESSAGE-INTEGRITY (when
    /// present) must verify.
    pub fn signed(&mut self, method: Method, add: impl Fn(&mut MessageWriter<'_>)) -> Answer {
        let request = self.signed_request(method, add);
        let answer = self.exchange(&request);
        let message = answer.message();
        if message.integrity_offset().is_some() {
            message
                .verify_message_integrity(&self.credentials().key)
                .unwrap_or_else(|e| panic!("the answer's MESSAGE-INTEGRITY is wrong: {e}"));
        }
        answer
    }

    /// The bytes of a request of `method` with what `add` writes, signed with the credentials
    /// learned by [`StunClient::allocate`], for a test that sends it itself.
    pub fn signed_request(&self, method: Method, add: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        let credentials = self.credentials();
        let kind = MessageType::new(method, Class::Request);
        let mut w = MessageWriter::new(&mut buf, kind, transaction_id()).expect("fits");
        add(&mut w);
        w.add(&Username(&credentials.username)).expect("fits");
        w.add(&Realm(&credentials.realm)).expect("fits");
        w.add(&Nonce(&credentials.nonce)).expect("fits");
        w.add_message_integrity(&credentials.key).expect("fits");
        w.add_fingerprint().expect("fits");
        let len = w.finish();
        buf[..len].to_vec()
    }

    /// A signed CreatePermission for `peer`.
    pub fn create_permission(&mut self, peer: SocketAddr) -> Answer {
        self.signed(Method::CREATE_PERMISSION, |w| {
            w.add(&XorPeerAddress(peer)).expect("fits");
        })
    }

    /// A signed ChannelBind of `channel` (0x4000..=0x4FFF) to `peer`.
    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Answer {
        let number = ChannelNumber::new(channel)
            .unwrap_or_else(|| panic!("channel {channel:#06x} is out of range"));
        self.signed(Method::CHANNEL_BIND, |w| {
            w.add(&number).expect("fits");
            w.add(&XorPeerAddress(peer)).expect("fits");
        })
    }

    /// A signed Refresh asking for `lifetime` seconds (0 deletes the allocation).
    pub fn refresh(&mut self, lifetime: u32) -> Answer {
        self.signed(Method::REFRESH, |w| {
            w.add(&Lifetime(lifetime)).expect("fits")
        })
    }

    /// A Send indication carrying `data` to `peer`.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut buf = vec![0u8; data.len() + 64];
        let kind = MessageType::new(Method::SEND, Class::Indication);
        let mut w = MessageWriter::new(&mut buf, kind, transaction_id()).expect("fits");
        w.add(&XorPeerAddress(peer)).expect("fits");
        w.add(&Data(data)).expect("fits");
        let len = w.finish();
        self.send_raw(&buf[..len]);
    }

    /// ChannelData carrying `data` on `channel`, padded to 4 bytes on a stream.
    pub fn send_channel_data(&mut self, channel: u16, data: &[u8]) {
        let number = ChannelNumber::new(channel)
            .unwrap_or_else(|| panic!("channel {channel:#06x} is out of range"));
        let padding = if self.transport.is_stream() {
            Padding::Stream
        } else {
            Padding::Datagram
        };
        let mut buf = vec![0u8; data.len() + 8];
        let len = write_channel_data(&mut buf, number, data, padding).expect("fits");
        self.send_raw(&buf[..len]);
    }

    /// The next frame, which must be a Data indication within `timeout`: its XOR-PEER-ADDRESS
    /// and DATA.
    pub fn recv_data(&mut self, timeout: Duration) -> (SocketAddr, Vec<u8>) {
        let frame = self
            .recv(timeout)
            .unwrap_or_else(|e| panic!("no Data indication: {e:?}"));
        let message =
            Message::parse(&frame).unwrap_or_else(|e| panic!("not a Data indication: {e}"));
        assert_eq!(
            message.message_type(),
            MessageType::new(Method::DATA, Class::Indication),
            "not a Data indication: {message:?}"
        );
        let peer = message
            .get::<XorPeerAddress>()
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no XOR-PEER-ADDRESS in {message:?}"))
            .0;
        let data = message
            .get::<Data>()
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no DATA in {message:?}"))
            .0
            .to_vec();
        (peer, data)
    }

    /// The next frame, which must be ChannelData within `timeout`: its channel and data
    /// (padding removed).
    pub fn recv_channel_data(&mut self, timeout: Duration) -> (u16, Vec<u8>) {
        let frame = self
            .recv(timeout)
            .unwrap_or_else(|e| panic!("no ChannelData: {e:?}"));
        let parsed = ChannelData::parse(&frame)
            .unwrap_or_else(|e| panic!("not ChannelData ({e}): {:?}", Answer(frame.clone())));
        if self.transport.is_stream() {
            assert_eq!(
                frame.len() % 4,
                0,
                "ChannelData on a stream must be padded to 4 bytes"
            );
        }
        (parsed.channel().value(), parsed.data().to_vec())
    }

    fn credentials(&self) -> &Credentials {
        self.credentials
            .as_ref()
            .unwrap_or_else(|| panic!("a signed request needs an Allocate first"))
    }
}

/// A Binding request with FINGERPRINT and a fresh transaction ID.
pub fn binding_request() -> Vec<u8> {
    let mut buf = [0u8; 64];
    let kind = MessageType::new(Method::BINDING, Class::Request);
    let mut w = MessageWriter::new(&mut buf, kind, transaction_id()).expect("fits");
    w.add_fingerprint().expect("fits");
    let len = w.finish();
    buf[..len].to_vec()
}

/// A transaction ID no other request of this process has: the process ID and a counter.
pub fn transaction_id() -> TransactionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&std::process::id().to_be_bytes());
    id[4..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    TransactionId::new(id)
}

/// A TCP connection to `server` with Nagle off, so that each write leaves as written.
fn connect(server: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&server, ANSWER_WAIT)
        .unwrap_or_else(|e| panic!("cannot connect to {server}: {e}"));
    stream.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
    stream
}

/// Whether a read failed only because its timeout passed.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
