//! TURN over TCP and TLS (RFC 8656 §3.1): one connection per [`TurnStream`] the agent names,
//! each run by a task that writes what the agent sends and forwards what it reads.
//!
//! The agent stays sans-IO: a transmit with a stream goes to [`Streams::send`], which opens
//! the connection on the first one; the bytes read and the connection's end come back to the
//! loop as [`StreamNews`], for [`Agent::handle_stream_input`] and
//! [`Agent::handle_stream_closed`]. TLS verifies the server against the system's roots and
//! the `--ca` file, naming it (SNI) as its URI does.
//!
//! [`Agent::handle_stream_input`]: icebreaker_ice::Agent::handle_stream_input
//! [`Agent::handle_stream_closed`]: icebreaker_ice::Agent::handle_stream_closed

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use icebreaker_ice::TurnStream;
use icebreaker_ice::uri::{Host, Transport};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

/// Transmits waiting for one connection: those of the connect and handshake, and a backlog
/// if the server reads slowly. Past it a transmit is dropped whole, as a full UDP send buffer
/// drops a datagram: the stream keeps its framing.
const QUEUE: usize = 1024;

/// The largest read handed to the agent at once.
const READ_BUFFER: usize = 65_536;

/// What a connection tells the loop.
#[derive(Debug)]
pub enum StreamNews {
    /// Bytes read, as read.
    Data(Vec<u8>),
    /// The connection could not be opened, ended or failed: why.
    Closed(String),
}

/// Why a transmit was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendProblem {
    /// The connection's queue is full: the transmit was dropped.
    QueueFull,
    /// The connection is over.
    Closed,
}

/// The TCP and TLS connections of one run.
pub struct Streams {
    tls: Option<TlsConnector>,
    /// The name to give (SNI) and verify for each TLS server address.
    names: HashMap<SocketAddr, ServerName<'static>>,
    connect_timeout: Duration,
    open: HashMap<TurnStream, mpsc::Sender<Vec<u8>>>,
    closed: HashSet<TurnStream>,
    tasks: Vec<JoinHandle<()>>,
    news: mpsc::Sender<(TurnStream, StreamNews)>,
}

impl Streams {
    /// Connections that may take `connect_timeout` to open (TCP and TLS handshakes
    /// together), verifying TLS servers with `tls`; and the channel their news comes on.
    pub fn new(
        tls: Option<TlsConnector>,
        connect_timeout: Duration,
    ) -> (Streams, mpsc::Receiver<(TurnStream, StreamNews)>) {
        let (news, receiver) = mpsc::channel(QUEUE);
        let streams = Streams {
            tls,
            names: HashMap::new(),
            connect_timeout,
            open: HashMap::new(),
            closed: HashSet::new(),
            tasks: Vec::new(),
            news,
        };
        (streams, receiver)
    }

    /// The TLS server at `server` is named `host`, as in its URI.
    pub fn name_server(&mut self, server: SocketAddr, host: &Host) -> Result<(), String> {
        let name = match host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(name) => ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} cannot be a TLS server name: {e}"))?,
        };
        self.names.insert(server, name);
        Ok(())
    }

    /// Queues `payload` for the connection of `stream`, opening the connection first if this
    /// is its first transmit.
    pub fn send(&mut self, stream: TurnStream, payload: Vec<u8>) -> Result<(), SendProblem> {
        if self.closed.contains(&stream) {
            return Err(SendProblem::Closed);
        }
        let sender = match self.open.get(&stream) {
            Some(sender) => sender,
            None => {
                let sender = self.spawn(stream);
                self.open.entry(stream).or_insert(sender)
            }
        };
        sender.try_send(payload).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendProblem::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendProblem::Closed,
        })
    }

    /// Ends the connection of `stream` once what was queued for it is written; nothing is
    /// sent on it afterwards.
    pub fn close(&mut self, stream: TurnStream) {
        self.open.remove(&stream);
        self.closed.insert(stream);
    }

    /// Closes every connection and waits, at most `wait`, for the queued bytes to be written.
    pub async fn finish(&mut self, wait: Duration) {
        self.open.clear();
        let tasks = std::mem::take(&mut self.tasks);
        let _ = tokio::time::timeout(wait, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
    }

    fn spawn(&mut self, stream: TurnStream) -> mpsc::Sender<Vec<u8>> {
        let (sender, outgoing) = mpsc::channel(QUEUE);
        let tls = match stream.transport {
            Transport::Tls => {
                let name = self
                    .names
                    .get(&stream.server)
                    .cloned()
                    .unwrap_or_else(|| ServerName::IpAddress(stream.server.ip().into()));
                Some((self.tls.clone(), name))
            }
            // DTLS URIs never get here: uri::parse_turn refuses them.
            Transport::Tcp | Transport::Udp | Transport::Dtls => None,
        };
        let news = self.news.clone();
        let connect_timeout = self.connect_timeout;
        self.tasks.push(tokio::spawn(async move {
            let reason = run(stream, tls, connect_timeout, outgoing, &news).await;
            if let Some(reason) = reason {
                let _ = news.send((stream, StreamNews::Closed(reason))).await;
            }
        }));
        sender
    }
}

/// One connection, from connect to end. Returns why it ended, unless the loop ended it.
async fn run(
    stream: TurnStream,
    tls: Option<(Option<TlsConnector>, ServerName<'static>)>,
    connect_timeout: Duration,
    outgoing: mpsc::Receiver<Vec<u8>>,
    news: &mpsc::Sender<(TurnStream, StreamNews)>,
) -> Option<String> {
    let tcp = match tokio::time::timeout(connect_timeout, connect(stream)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return Some(format!("cannot connect to {}: {error}", stream.server)),
        Err(_) => {
            return Some(format!(
                "no TCP connection to {} within {connect_timeout:?}",
                stream.server
            ));
        }
    };
    let Some((connector, name)) = tls else {
        return pump(stream, tcp, outgoing, news).await;
    };
    let Some(connector) = connector else {
        return Some("TLS is not set up".to_owned());
    };
    let shown = name.to_str().into_owned();
    match tokio::time::timeout(connect_timeout, connector.connect(name, tcp)).await {
        Ok(Ok(session)) => pump(stream, session, outgoing, news).await,
        Ok(Err(error)) => Some(format!("TLS handshake with {shown} failed: {error}")),
        Err(_) => Some(format!(
            "no TLS handshake with {shown} within {connect_timeout:?}"
        )),
    }
}

/// A TCP connection from the IP of the stream's socket, so that the relay goes out of the
/// interface its candidate names.
async fn connect(stream: TurnStream) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if stream.server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(stream.local.ip(), 0))?;
    let tcp = socket.connect(stream.server).await?;
    // Checks and ChannelData are small and each one matters at once: no Nagle delay.
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Writes what the loop queues and forwards what the server sends, until either side ends.
async fn pump(
    stream: TurnStream,
    io: impl AsyncRead + AsyncWrite + Unpin,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    news: &mpsc::Sender<(TurnStream, StreamNews)>,
) -> Option<String> {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => return Some("the server closed the connection".to_owned()),
                Ok(len) => {
                    let data = StreamNews::Data(buf[..len].to_vec());
                    if news.send((stream, data)).await.is_err() {
                        return None;
                    }
                }
                Err(error) => return Some(format!("reading failed: {error}")),
            },
            bytes = outgoing.recv() => match bytes {
                Some(bytes) => {
                    if let Err(error) = writer.write_all(&bytes).await {
                        return Some(format!("writing failed: {error}"));
                    }
                }
                // The loop is done with the connection and everything queued is written.
                None => {
                    let _ = writer.shutdown().await;
                    return None;
                }
            },
        }
    }
}

/// The TLS client setup: the system's root certificates plus those of `ca`, on ring.
pub fn tls_connector(ca: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("--ca {shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("--ca {shown}: no PEM certificate in it"));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--ca {shown}: a certificate rustls refuses: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no root certificate to verify turns: servers with: the system has none; give \
             --ca"
                .to_owned(),
        );
    }
    let provider = Arc::new(crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // RFC 7443: say what runs inside, so that a server sharing port 443 with HTTPS can tell.
    config.alpn_protocols = vec![b"stun.turn".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_by_name() {
        let missing = tls_connector(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
        let dir = std::env::temp_dir().join(format!("ice-peer-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let refused = tls_connector(Some(&empty)).err().unwrap();
        assert!(refused.contains("no PEM certificate"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn server_names_come_from_the_uri_host() {
        let (mut streams, _news) = Streams::new(None, Duration::from_secs(1));
        let server: SocketAddr = "127.0.0.1:5349".parse().unwrap();
        streams
            .name_server(server, &Host::Name("localhost".into()))
            .unwrap();
        assert_eq!(streams.names[&server].to_str(), "localhost");
        streams
            .name_server(server, &Host::Ip("127.0.0.1".parse().unwrap()))
            .unwrap();
        assert_eq!(streams.names[&server].to_str(), "127.0.0.1");
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_and_nothing_more_is_sent() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let stream = TurnStream {
            local: "127.0.0.1:5000".parse().unwrap(),
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            transport: Transport::Tcp,
        };
        let (mut streams, mut news) = Streams::new(None, Duration::from_secs(5));
        streams.send(stream, vec![0; 20]).unwrap();
        let (from, news) = tokio::time::timeout(Duration::from_secs(10), news.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, stream);
        match news {
            StreamNews::Closed(reason) => assert!(reason.contains("cannot connect"), "{reason}"),
            StreamNews::Data(data) => panic!("data {data:?}"),
        }
        streams.close(stream);
        assert_eq!(streams.send(stream, vec![0; 20]), Err(SendProblem::Closed));
        streams.finish(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn bytes_go_both_ways_and_close_ends_the_connection_after_the_queue() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TurnStream {
            local: "127.0.0.1:5000".parse().unwrap(),
            server: listener.local_addr().unwrap(),
            transport: Transport::Tcp,
        };
        let (mut streams, mut news) = Streams::new(None, Duration::from_secs(5));
        streams.send(stream, b"hello ".to_vec()).unwrap();
        streams.send(stream, b"world".to_vec()).unwrap();
        let (mut server, client) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(client.ip(), stream.local.ip());
        server.write_all(b"answer").await.unwrap();
        let (_, got) = tokio::time::timeout(Duration::from_secs(10), news.recv())
            .await
            .unwrap()
            .unwrap();
        match got {
            StreamNews::Data(data) => assert_eq!(data, b"answer"),
            StreamNews::Closed(reason) => panic!("closed: {reason}"),
        }
        streams.send(stream, b"!".to_vec()).unwrap();
        streams.close(stream);
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), server.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, b"hello world!");
        streams.finish(Duration::from_secs(1)).await;
    }
}
