//! The connections to TURN servers not reached over plain UDP: TCP and TLS (RFC 8656 §3.1)
//! and DTLS (RFC 7350), one per [`TurnConnection`] the agent names, each run by a task that
//! writes what the agent sends and forwards what it reads.
//!
//! The agent stays sans-IO: a transmit with a connection goes to [`Connections::send`], which
//! opens the connection on the first one; what is read and the connection's end come back to
//! the loop as [`ConnectionNews`], for [`Agent::handle_connection_input`] and
//! [`Agent::handle_connection_closed`]. Over TCP and TLS the bytes are a stream, forwarded as
//! read; over DTLS each transmit is one record and each record read is one piece of news, and
//! records may be lost like datagrams (the agent retransmits).
//!
//! TLS and DTLS are ice-probe's clients: the server is named (SNI) as its URI does and
//! verified against the system's roots and the `--ca` file, and a failed handshake is told in
//! the words ice-probe uses for it. The DTLS association leaves from the IP of the agent's
//! socket, on a port of its own.
//!
//! [`Agent::handle_connection_input`]: icebreaker_ice::Agent::handle_connection_input
//! [`Agent::handle_connection_closed`]: icebreaker_ice::Agent::handle_connection_closed

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ice_probe::dtls::{DtlsClient, DtlsConn};
use ice_probe::tls::{TlsClient, TlsOptions, load_ca};
use icebreaker_ice::TurnConnection;
use icebreaker_ice::uri::{Host, Transport};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::ServerName;

/// Transmits waiting for one connection: those of the connect and handshake, and a backlog
/// if the server reads slowly. Past it a transmit is dropped whole, as a full UDP send buffer
/// drops a datagram: the stream keeps its framing.
const QUEUE: usize = 1024;

/// The largest read handed to the agent at once.
const READ_BUFFER: usize = 65_536;

/// How long a DTLS association waits for a record before it looks again: it is only woken
/// sooner, never ended, by this.
const DTLS_IDLE: Duration = Duration::from_secs(3600);

/// What a connection tells the loop.
#[derive(Debug)]
pub enum ConnectionNews {
    /// Bytes read: a piece of the stream as read, or one DTLS record.
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

/// The TLS and DTLS clients of a run, which verify servers with the same roots.
#[derive(Clone, Debug)]
pub struct SecureClients {
    tls: Arc<TlsClient>,
    dtls: Arc<DtlsClient>,
}

impl SecureClients {
    /// Clients trusting the system's roots and the certificates of the PEM file `ca`
    /// (`--ca`), which must hold at least one.
    pub fn new(ca: Option<&Path>) -> Result<SecureClients, String> {
        let options = TlsOptions {
            ca: ca.map(load_ca).transpose()?.unwrap_or_default(),
            insecure: false,
        };
        Ok(SecureClients {
            tls: Arc::new(TlsClient::new(&options)),
            dtls: Arc::new(DtlsClient::new(&options)),
        })
    }
}

/// The TCP, TLS and DTLS connections of one run.
pub struct Connections {
    secure: Option<SecureClients>,
    /// The name to give (SNI) and verify for each TLS or DTLS server address.
    names: HashMap<SocketAddr, ServerName<'static>>,
    connect_timeout: Duration,
    open: HashMap<TurnConnection, mpsc::Sender<Vec<u8>>>,
    closed: HashSet<TurnConnection>,
    tasks: Vec<JoinHandle<()>>,
    news: mpsc::Sender<(TurnConnection, ConnectionNews)>,
}

impl Connections {
    /// Connections that may take `connect_timeout` to open (TCP and TLS handshakes
    /// together, or the DTLS handshake), verifying TLS and DTLS servers with `secure`; and
    /// the channel their news comes on.
    pub fn new(
        secure: Option<SecureClients>,
        connect_timeout: Duration,
    ) -> (
        Connections,
        mpsc::Receiver<(TurnConnection, ConnectionNews)>,
    ) {
        let (news, receiver) = mpsc::channel(QUEUE);
        let connections = Connections {
            secure,
            names: HashMap::new(),
            connect_timeout,
            open: HashMap::new(),
            closed: HashSet::new(),
            tasks: Vec::new(),
            news,
        };
        (connections, receiver)
    }

    /// The TLS or DTLS server at `server` is named `host`, as in its URI.
    pub fn name_server(&mut self, server: SocketAddr, host: &Host) -> Result<(), String> {
        let name = match host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(name) => ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} cannot be a TLS server name: {e}"))?,
        };
        self.names.insert(server, name);
        Ok(())
    }

    /// Queues `payload` for `connection`, opening it first if this is its first transmit.
    pub fn send(
        &mut self,
        connection: TurnConnection,
        payload: Vec<u8>,
    ) -> Result<(), SendProblem> {
        if self.closed.contains(&connection) {
            return Err(SendProblem::Closed);
        }
        let sender = match self.open.get(&connection) {
            Some(sender) => sender,
            None => {
                let sender = self.spawn(connection);
                self.open.entry(connection).or_insert(sender)
            }
        };
        sender.try_send(payload).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendProblem::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendProblem::Closed,
        })
    }

    /// Ends `connection` once what was queued for it is written; nothing is sent on it
    /// afterwards.
    pub fn close(&mut self, connection: TurnConnection) {
        self.open.remove(&connection);
        self.closed.insert(connection);
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

    fn spawn(&mut self, connection: TurnConnection) -> mpsc::Sender<Vec<u8>> {
        let (sender, outgoing) = mpsc::channel(QUEUE);
        let name = self
            .names
            .get(&connection.server)
            .cloned()
            .unwrap_or_else(|| ServerName::IpAddress(connection.server.ip().into()));
        let opener = Opener {
            connection,
            secure: self.secure.clone(),
            name,
            timeout: self.connect_timeout,
        };
        let news = self.news.clone();
        self.tasks.push(tokio::spawn(async move {
            let reason = opener.run(outgoing, &news).await;
            if let Some(reason) = reason {
                let _ = news
                    .send((connection, ConnectionNews::Closed(reason)))
                    .await;
            }
        }));
        sender
    }
}

/// What a connection's task needs to open it.
struct Opener {
    connection: TurnConnection,
    secure: Option<SecureClients>,
    name: ServerName<'static>,
    timeout: Duration,
}

impl Opener {
    /// The connection, from open to end. Returns why it ended, unless the loop ended it.
    async fn run(
        self,
        outgoing: mpsc::Receiver<Vec<u8>>,
        news: &mpsc::Sender<(TurnConnection, ConnectionNews)>,
    ) -> Option<String> {
        let Opener {
            connection,
            secure,
            name,
            timeout,
        } = self;
        let shown = name.to_str().into_owned();
        let tls = match (connection.transport, secure) {
            (Transport::Tcp | Transport::Udp, _) => None,
            (Transport::Tls, Some(secure)) => Some(secure.tls),
            (Transport::Dtls, Some(secure)) => {
                let from = connection.local.ip();
                let handshake = secure
                    .dtls
                    .handshake_from(from, connection.server, &name, timeout);
                return match handshake.await {
                    Ok(made) => pump_records(connection, made.conn, outgoing, news).await,
                    Err(failure) => Some(format!(
                        "DTLS handshake with {shown} failed: {}",
                        failure.explain(&shown)
                    )),
                };
            }
            (Transport::Tls | Transport::Dtls, None) => {
                return Some("TLS is not set up".to_owned());
            }
        };
        let server = connection.server;
        let tcp = match tokio::time::timeout(timeout, connect(connection)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => return Some(format!("cannot connect to {server}: {error}")),
            Err(_) => {
                return Some(format!("no TCP connection to {server} within {timeout:?}"));
            }
        };
        let Some(tls) = tls else {
            return pump(connection, tcp, outgoing, news).await;
        };
        match tls.handshake(tcp, name, timeout).await {
            Ok((session, _)) => pump(connection, session, outgoing, news).await,
            Err(failure) => Some(format!(
                "TLS handshake with {shown} failed: {}",
                failure.explain(&shown)
            )),
        }
    }
}

/// A TCP connection from the IP of the connection's socket, so that the relay goes out of
/// the interface its candidate names.
async fn connect(connection: TurnConnection) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if connection.server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(connection.local.ip(), 0))?;
    let tcp = socket.connect(connection.server).await?;
    // Checks and ChannelData are small and each one matters at once: no Nagle delay.
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Writes what the loop queues and forwards what the server sends, until either side ends.
async fn pump(
    connection: TurnConnection,
    io: impl AsyncRead + AsyncWrite + Unpin,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    news: &mpsc::Sender<(TurnConnection, ConnectionNews)>,
) -> Option<String> {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => return Some("the server closed the connection".to_owned()),
                Ok(len) => {
                    let data = ConnectionNews::Data(buf[..len].to_vec());
                    if news.send((connection, data)).await.is_err() {
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

/// The DTLS twin of [`pump`]: one record per transmit, one piece of news per record. The
/// association says close_notify when the loop is done with it (on drop).
async fn pump_records(
    connection: TurnConnection,
    mut conn: Box<DtlsConn>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    news: &mpsc::Sender<(TurnConnection, ConnectionNews)>,
) -> Option<String> {
    loop {
        tokio::select! {
            record = conn.recv(Instant::now() + DTLS_IDLE) => match record {
                Ok(Some(record)) => {
                    let data = ConnectionNews::Data(record);
                    if news.send((connection, data)).await.is_err() {
                        return None;
                    }
                }
                Ok(None) => {}
                Err(error) => return Some(error.to_string()),
            },
            bytes = outgoing.recv() => match bytes {
                Some(bytes) => {
                    if let Err(error) = conn.send(&bytes).await {
                        return Some(error.to_string());
                    }
                }
                None => return None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_by_name() {
        let missing = SecureClients::new(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
        let dir = std::env::temp_dir().join(format!("ice-peer-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let refused = SecureClients::new(Some(&empty)).err().unwrap();
        assert!(refused.contains("no certificate in it"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn server_names_come_from_the_uri_host() {
        let (mut connections, _news) = Connections::new(None, Duration::from_secs(1));
        let server: SocketAddr = "127.0.0.1:5349".parse().unwrap();
        connections
            .name_server(server, &Host::Name("localhost".into()))
            .unwrap();
        assert_eq!(connections.names[&server].to_str(), "localhost");
        connections
            .name_server(server, &Host::Ip("127.0.0.1".parse().unwrap()))
            .unwrap();
        assert_eq!(connections.names[&server].to_str(), "127.0.0.1");
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_and_nothing_more_is_sent() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let stream = TurnConnection {
            local: "127.0.0.1:5000".parse().unwrap(),
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            transport: Transport::Tcp,
        };
        let (mut connections, mut news) = Connections::new(None, Duration::from_secs(5));
        connections.send(stream, vec![0; 20]).unwrap();
        let (from, news) = tokio::time::timeout(Duration::from_secs(10), news.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, stream);
        match news {
            ConnectionNews::Closed(reason) => {
                assert!(reason.contains("cannot connect"), "{reason}")
            }
            ConnectionNews::Data(data) => panic!("data {data:?}"),
        }
        connections.close(stream);
        assert_eq!(
            connections.send(stream, vec![0; 20]),
            Err(SendProblem::Closed)
        );
        connections.finish(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn bytes_go_both_ways_and_close_ends_the_connection_after_the_queue() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TurnConnection {
            local: "127.0.0.1:5000".parse().unwrap(),
            server: listener.local_addr().unwrap(),
            transport: Transport::Tcp,
        };
        let (mut connections, mut news) = Connections::new(None, Duration::from_secs(5));
        connections.send(stream, b"hello ".to_vec()).unwrap();
        connections.send(stream, b"world".to_vec()).unwrap();
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
            ConnectionNews::Data(data) => assert_eq!(data, b"answer"),
            ConnectionNews::Closed(reason) => panic!("closed: {reason}"),
        }
        connections.send(stream, b"!".to_vec()).unwrap();
        connections.close(stream);
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), server.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, b"hello world!");
        connections.finish(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn dtls_leaves_from_the_socket_ip_and_a_silent_server_is_told_in_words() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let connection = TurnConnection {
            local: "127.0.0.2:5000".parse().unwrap(),
            server: server.local_addr().unwrap(),
            transport: Transport::Dtls,
        };
        let secure = SecureClients::new(None).unwrap();
        let (mut connections, mut news) =
            Connections::new(Some(secure), Duration::from_millis(1500));
        connections.send(connection, vec![0; 20]).unwrap();
        let mut hello = vec![0u8; 2048];
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(10), server.recv_from(&mut hello))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(from.ip(), connection.local.ip());
        assert_eq!(hello[0], 22, "a DTLS handshake record: {:?}", &hello[..len]);
        let (_, got) = tokio::time::timeout(Duration::from_secs(10), news.recv())
            .await
            .unwrap()
            .unwrap();
        match got {
            ConnectionNews::Closed(reason) => assert!(
                reason.contains("DTLS handshake with 127.0.0.1 failed")
                    && reason.contains("no answer to the DTLS ClientHello"),
                "{reason}"
            ),
            ConnectionNews::Data(data) => panic!("data {data:?}"),
        }
        connections.finish(Duration::from_secs(1)).await;
    }
}
