//! STUN and TURN over a stream: a TCP or TLS connection to the server ([`Dialer`],
//! [`StreamConn`]) cut into STUN messages and ChannelData frames (RFC 8656 §12.5 framing,
//! ChannelData padded to 4 bytes), and [`Link`], one transaction at a time over UDP, a
//! stream or a DTLS association ([`crate::dtls`]), for the checks that do not care which.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use icebreaker_ice::uri::{Host, Transport};
use icebreaker_wire::TransactionId;
use icebreaker_wire::framing::{self, Framing, FramingError};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::dtls::{DtlsClient, DtlsConn, DtlsConnection};
use crate::net::{Response, StunSocket, TransactError, transaction_id};
use crate::tls::{Handshake, TlsClient, TlsFailure};
use crate::{Settings, Target};

/// How much is read from a stream at a time.
const READ_CHUNK: usize = 16_384;

/// What a connection runs on: a TCP stream, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Knows how to reach one server: over UDP, by connecting over TCP or TLS, or by a DTLS
/// handshake.
#[derive(Clone, Debug)]
pub struct Dialer {
    server: SocketAddr,
    transport: Transport,
    /// The URI's host: the TLS server name, and the name explanations use.
    host: String,
    name: ServerName<'static>,
    tls: Option<Arc<TlsClient>>,
    dtls: Option<Arc<DtlsClient>>,
}

impl Dialer {
    /// The dialer for `target` with the run's TLS settings.
    pub fn new(target: &Target, settings: &Settings) -> Dialer {
        let host = match &target.uri.host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        // SNI carries names only; an IP literal is verified against the certificate's IP
        // addresses. A name rustls cannot take as a DNS name falls back to the address.
        let name = match &target.uri.host {
            Host::Name(name) => ServerName::try_from(name.clone())
                .unwrap_or_else(|_| ServerName::IpAddress(target.server.ip().into())),
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let tls = (target.uri.transport == Transport::Tls)
            .then(|| Arc::new(TlsClient::new(&settings.tls)));
        let dtls = (target.uri.transport == Transport::Dtls)
            .then(|| Arc::new(DtlsClient::new(&settings.tls)));
        Dialer {
            server: target.server,
            transport: target.uri.transport,
            host,
            name,
            tls,
            dtls,
        }
    }

    /// The same server over plain TCP: to tell whether a port where TLS failed speaks
    /// plain STUN.
    pub fn plain(&self) -> Dialer {
        Dialer {
            transport: Transport::Tcp,
            tls: None,
            dtls: None,
            ..self.clone()
        }
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// UDP, TCP, TLS or DTLS.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The URI's host, as a TLS client checks it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs the DTLS handshake for a DTLS URI, within `timeout`; for any other URI an error.
    pub async fn dtls(&self, timeout: Duration) -> Result<DtlsConnection, ConnectError> {
        let Some(client) = &self.dtls else {
            return Err(ConnectError::Io(io::ErrorKind::Unsupported.into()));
        };
        client
            .handshake(self.server, &self.name, timeout)
            .await
            .map_err(|failure| ConnectError::Dtls(Box::new(failure)))
    }

    /// Connects over TCP, then runs the TLS handshake for a TLS URI; each step within
    /// `timeout`. Over UDP and DTLS there is nothing to connect: an error.
    pub async fn connect(&self, timeout: Duration) -> Result<Connection, ConnectError> {
        if matches!(self.transport, Transport::Udp | Transport::Dtls) {
            return Err(ConnectError::Io(io::ErrorKind::Unsupported.into()));
        }
        let started = Instant::now();
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(self.server)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::Refused);
            }
            Ok(Err(error)) => return Err(ConnectError::Io(error)),
            Err(_) => return Err(ConnectError::Timeout(timeout)),
        };
        let connect_time = started.elapsed();
        // Requests are small and each waits for its answer: Nagle's delay would only add
        // to the measured round trips.
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map_err(ConnectError::Io)?;
        let (io, tls): (Box<dyn Io>, _) = match &self.tls {
            None => (Box::new(tcp), None),
            Some(client) => match client.handshake(tcp, self.name.clone(), timeout).await {
                Ok((stream, handshake)) => (Box::new(stream), Some(handshake)),
                Err(failure) => {
                    return Err(ConnectError::Tls {
                        connect: connect_time,
                        failure: Box::new(failure),
                    });
                }
            },
        };
        Ok(Connection {
            stream: StreamConn {
                io,
                buf: Vec::new(),
                local,
                peer: self.server,
            },
            connect: connect_time,
            tls,
        })
    }
}

/// A connection just made, with what making it measured.
pub struct Connection {
    /// The connection.
    pub stream: StreamConn,
    /// The TCP handshake's duration.
    pub connect: Duration,
    /// What the TLS handshake negotiated, for a TLS URI.
    pub tls: Option<Handshake>,
}

/// Why no connection was made.
#[derive(Debug)]
pub enum ConnectError {
    /// The host answered the SYN with a reset: nothing listens on that TCP port.
    Refused,
    /// No answer to the SYN within the timeout.
    Timeout(Duration),
    /// The system refused (no route, no socket).
    Io(io::Error),
    /// TCP connected, then the TLS handshake failed.
    Tls {
        /// The TCP handshake's duration.
        connect: Duration,
        /// What went wrong.
        failure: Box<TlsFailure>,
    },
    /// The DTLS handshake failed.
    Dtls(Box<TlsFailure>),
}

impl ConnectError {
    /// The plain explanation, for a connection to `dialer`'s server.
    pub fn explain(&self, dialer: &Dialer) -> String {
        let server = dialer.server;
        match self {
            ConnectError::Refused => format!(
                "{server} refused the TCP connection: nothing listens on TCP port {} (the \
                 server may listen on UDP only: coturn `no-tcp` or `no-tls`; check the port and \
                 that the server runs), or a firewall rejects it",
                server.port()
            ),
            ConnectError::Timeout(waited) => format!(
                "no answer to the TCP connection to {server} in {:.1} s: a firewall on the way \
                 drops it, or the host is down",
                waited.as_secs_f64()
            ),
            ConnectError::Io(error)
                if matches!(dialer.transport, Transport::Udp | Transport::Dtls) =>
            {
                format!("cannot open a UDP socket towards {server}: {error}")
            }
            ConnectError::Io(error) => format!("cannot connect to {server}: {error}"),
            ConnectError::Tls { failure, .. } | ConnectError::Dtls(failure) => {
                failure.explain(&dialer.host)
            }
        }
    }
}

/// One TCP or TLS connection to the server, read frame by frame.
pub struct StreamConn {
    io: Box<dyn Io>,
    /// Bytes read and not yet handed out as a frame.
    buf: Vec<u8>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl std::fmt::Debug for StreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConn")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Why a stream cannot be used any more.
#[derive(Debug)]
pub enum StreamError {
    /// The server closed the connection.
    Closed,
    /// A write did not complete within the timeout: the server stopped reading.
    WriteTimeout,
    /// The server sent bytes that are neither STUN nor ChannelData.
    NotStun {
        /// The framing error; `None` for a TLS record, recognised before framing.
        error: Option<FramingError>,
        /// The first bytes of what came, to tell what it is.
        head: Vec<u8>,
    },
    /// The connection failed.
    Io(io::Error),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Closed => f.write_str("the server closed the connection"),
            StreamError::WriteTimeout => {
                f.write_str("the server stopped reading: a write did not complete in time")
            }
            StreamError::NotStun {
                error: Some(error), ..
            } => {
                write!(f, "the server sent something that is not STUN ({error})")
            }
            StreamError::NotStun { error: None, .. } => f.write_str(
                "the server answered with a TLS record: this port speaks TLS; use a turns: or \
                 stuns: URI for it",
            ),
            StreamError::Io(error) => write!(f, "the connection failed: {error}"),
        }
    }
}

impl StreamError {
    fn from_io(error: io::Error) -> StreamError {
        match error.kind() {
            // A TLS peer that closes without close_notify, or a reset: closed all the same.
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => StreamError::Closed,
            _ => StreamError::Io(error),
        }
    }
}

impl From<StreamError> for TransactError {
    fn from(error: StreamError) -> TransactError {
        match error {
            StreamError::Closed => TransactError::Closed,
            other => TransactError::Stream(other.to_string()),
        }
    }
}

/// A TLS record starts with a content type from 20 to 23 and major version 3. No STUN
/// message starts so (its methods are far smaller), and a TLS alert is only 7 bytes, too
/// short for framing to reject, so it is recognised first.
fn looks_like_tls(head: &[u8]) -> bool {
    matches!(head, [20..=23, 3, ..])
}

impl StreamConn {
    /// The local address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Writes `bytes`, which must be whole frames, within `timeout`. A write cut short
    /// leaves the stream out of step, so any error ends the connection's use.
    pub async fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), StreamError> {
        let write = async {
            self.io.write_all(bytes).await?;
            // TLS holds records back until flushed.
            self.io.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StreamError::from_io(error)),
            Err(_) => Err(StreamError::WriteTimeout),
        }
    }

    /// The next whole frame (a STUN message, or ChannelData with its padding), or `None`
    /// once `deadline` passed without one. Cancelling it loses nothing: what was read stays
    /// buffered for the next call.
    pub async fn next_frame(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, StreamError> {
        // Each round either hands out a frame, reads at least one byte, or ends: bounded by
        // the deadline, and the buffer by the largest frame (about 64 KiB).
        loop {
            if looks_like_tls(&self.buf) {
                let head = self.buf.iter().take(8).copied().collect();
                return Err(StreamError::NotStun { error: None, head });
            }
            match framing::frame(&self.buf) {
                Ok(Framing::Complete(frame)) => {
                    let rest = self.buf.split_off(frame.len);
                    return Ok(Some(std::mem::replace(&mut self.buf, rest)));
                }
                Ok(Framing::Incomplete { .. }) => {}
                Err(error) => {
                    let head = self.buf.iter().take(8).copied().collect();
                    let error = Some(error);
                    return Err(StreamError::NotStun { error, head });
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.buf.reserve(READ_CHUNK);
            // read_buf appends to the buffer and is cancel safe: a timeout loses nothing.
            let read = tokio::time::timeout_at(deadline.into(), self.io.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(StreamError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(StreamError::from_io(error)),
            }
        }
    }

    /// Sends a STUN request once and waits up to `timeout` for the message with its
    /// transaction ID, passing over other frames.
    pub async fn transact(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Response, TransactError> {
        let id = transaction_id(request)?;
        let sent_at = Instant::now();
        let deadline = sent_at + timeout;
        self.send(request, timeout).await?;
        // Bounded: next_frame returns None once the deadline passed and nothing is buffered.
        loop {
            match self.next_frame(deadline).await? {
                Some(frame) if frame.get(8..20) == Some(id) => {
                    return Ok(Response {
                        bytes: frame,
                        from: self.peer,
                        rtt: sent_at.elapsed(),
                        retransmitted: false,
                    });
                }
                Some(_) => {}
                None => return Err(TransactError::Timeout),
            }
        }
    }
}

/// Single STUN transactions with the server over whatever the URI says: a UDP socket or a
/// DTLS association with retransmissions, or one stream connection.
#[derive(Debug)]
pub enum Link {
    /// A UDP socket and the server it talks to.
    Udp {
        /// The socket.
        socket: StunSocket,
        /// The server.
        server: SocketAddr,
    },
    /// A TCP or TLS connection.
    Stream {
        /// The connection.
        conn: StreamConn,
        /// For transaction IDs.
        rng: StdRng,
    },
    /// A DTLS association.
    Dtls {
        /// The association.
        conn: Box<DtlsConn>,
        /// For transaction IDs.
        rng: StdRng,
    },
}

impl Link {
    /// A fresh socket or connection towards `dialer`'s server.
    pub async fn open(dialer: &Dialer, timeout: Duration) -> Result<Link, ConnectError> {
        match dialer.transport() {
            Transport::Udp => {
                let socket = StunSocket::for_server(dialer.server())
                    .await
                    .map_err(ConnectError::Io)?;
                Ok(Link::Udp {
                    socket,
                    server: dialer.server(),
                })
            }
            Transport::Tcp | Transport::Tls => {
                let connection = dialer.connect(timeout).await?;
                Ok(Link::Stream {
                    conn: connection.stream,
                    rng: StdRng::from_os_rng(),
                })
            }
            Transport::Dtls => {
                let connection = dialer.dtls(timeout).await?;
                Ok(Link::Dtls {
                    conn: connection.conn,
                    rng: StdRng::from_os_rng(),
                })
            }
        }
    }

    /// The local address of the socket or connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Link::Udp { socket, .. } => socket.local_addr(),
            Link::Stream { conn, .. } => Ok(conn.local_addr()),
            Link::Dtls { conn, .. } => Ok(conn.local_addr()),
        }
    }

    /// A fresh random transaction ID.
    pub fn transaction_id(&mut self) -> TransactionId {
        match self {
            Link::Udp { socket, .. } => socket.transaction_id(),
            Link::Stream { rng, .. } | Link::Dtls { rng, .. } => {
                let mut id = [0; 12];
                rng.fill_bytes(&mut id);
                TransactionId::new(id)
            }
        }
    }

    /// One transaction with the server, within `timeout`.
    pub async fn transact(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Response, TransactError> {
        match self {
            Link::Udp { socket, server } => socket.transact(*server, request, timeout).await,
            Link::Stream { conn, .. } => conn.transact(request, timeout).await,
            Link::Dtls { conn, .. } => conn.transact(request, timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A connection to an in-process peer, and the peer's end.
    async fn pair() -> (StreamConn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.unwrap();
        let conn = StreamConn {
            local: client.local_addr().unwrap(),
            io: Box::new(client),
            buf: Vec::new(),
            peer: addr,
        };
        (conn, server.unwrap().0)
    }

    fn binding(id: u8) -> Vec<u8> {
        let mut message = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        message.extend_from_slice(&[id; 12]);
        message
    }

    #[tokio::test]
    async fn frames_split_across_reads_and_joined_in_one_are_cut_apart() {
        let (mut conn, mut peer) = pair().await;
        let deadline = || Instant::now() + Duration::from_secs(2);
        // ChannelData of 3 bytes, padded to 8 on a stream, then a STUN message, in one write.
        let mut joined = vec![0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0];
        joined.extend_from_slice(&binding(1));
        peer.write_all(&joined).await.unwrap();
        assert_eq!(
            conn.next_frame(deadline()).await.unwrap().unwrap(),
            joined[..8]
        );
        assert_eq!(
            conn.next_frame(deadline()).await.unwrap().unwrap(),
            binding(1)
        );
        // One message in three writes.
        let message = binding(2);
        for part in [&message[..3], &message[3..11], &message[11..]] {
            peer.write_all(part).await.unwrap();
            peer.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(conn.next_frame(deadline()).await.unwrap().unwrap(), message);
        let quiet = Instant::now() + Duration::from_millis(50);
        assert!(conn.next_frame(quiet).await.unwrap().is_none());
        drop(peer);
        assert!(matches!(
            conn.next_frame(deadline()).await,
            Err(StreamError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_transaction_skips_other_frames_and_tls_is_recognised() {
        let (mut conn, mut peer) = pair().await;
        let answer = async {
            let mut request = [0u8; 20];
            peer.read_exact(&mut request).await.unwrap();
            let mut other = binding(9);
            other.extend_from_slice(&binding(request[8]));
            peer.write_all(&other).await.unwrap();
            // A TLS alert, as a TLS server answers a plain request.
            peer.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
                .await
                .unwrap();
            peer
        };
        let mut request = binding(7);
        request[0] = 0x00;
        let (response, _peer) =
            tokio::join!(conn.transact(&request, Duration::from_secs(2)), answer);
        assert_eq!(response.unwrap().bytes, binding(7));
        let error = conn
            .next_frame(Instant::now() + Duration::from_secs(2))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("TLS record") && text.contains("turns:"),
            "{text}"
        );
        assert!(!looks_like_tls(&binding(1)));
    }
}
