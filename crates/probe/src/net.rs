//! The probe's two ways to talk to a server: single STUN transactions with retransmissions
//! ([`StunSocket`]), and a TURN allocation driven over its own socket or connection
//! ([`TurnSession`], the sans-IO [`TurnClient`] of `icebreaker-ice` on a tokio UDP socket, a
//! TCP or TLS stream of [`crate::stream`], or a DTLS association of [`crate::dtls`]).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_ice::turn_client::{
    TurnClient, TurnClientConfig, TurnError, TurnEvent, TurnSendError, TurnTiming,
};
use icebreaker_ice::uri::Transport;
use icebreaker_wire::attr::{ChangeRequest, ResponsePort};
use icebreaker_wire::{ChannelNumber, Class, Message, MessageType, MessageWriter, Method};
use icebreaker_wire::{TransactionId, WriteError};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::net::UdpSocket;

use crate::dtls::DtlsConn;
use crate::stream::{ConnectError, Dialer, StreamConn};

/// The first retransmission comes this long after a request: shorter than RFC 8489's 500 ms
/// because a probe would rather finish than spare a server one datagram.
pub const INITIAL_RTO: Duration = Duration::from_millis(250);

/// Big enough for any STUN message over UDP.
const RECEIVE_BUFFER: usize = 65_536;

/// Why a transaction got no usable answer.
#[derive(Debug)]
pub enum TransactError {
    /// Nothing came back before the deadline, retransmissions included.
    Timeout,
    /// The host answered with ICMP port unreachable: nothing listens on that port.
    PortUnreachable,
    /// The socket failed.
    Io(io::Error),
    /// Over a stream: the server closed the connection before answering.
    Closed,
    /// Over a stream: the connection broke, or the server sent something that is not STUN.
    Stream(String),
    /// Over a stream: no connection could be made; the explanation.
    Connect(String),
}

/// The transaction ID of the STUN `request`, which every transaction matches its answer by.
pub(crate) fn transaction_id(request: &[u8]) -> Result<&[u8], TransactError> {
    request
        .get(8..20)
        .ok_or(TransactError::Io(io::ErrorKind::InvalidInput.into()))
}

impl TransactError {
    /// The plain explanation of a missing answer from `server` over UDP for a check's output.
    pub fn explain(&self, server: SocketAddr, waited: Duration) -> String {
        self.explain_over(server, waited, Transport::Udp)
    }

    /// The plain explanation of a missing answer from `server` over `transport`.
    pub fn explain_over(
        &self,
        server: SocketAddr,
        waited: Duration,
        transport: Transport,
    ) -> String {
        match self {
            TransactError::Timeout if transport == Transport::Dtls => format!(
                "no answer from {server} in {:.1} s over DTLS: the handshake succeeded but the \
                 server does not answer STUN inside the association, or it is overloaded",
                waited.as_secs_f64()
            ),
            TransactError::Closed if transport == Transport::Dtls => format!(
                "{server} closed the DTLS association (close_notify) without answering: it \
                 refused this client"
            ),
            TransactError::Timeout if transport != Transport::Udp => format!(
                "no answer from {server} in {:.1} s over {}: the server accepted the \
                 connection but does not answer STUN on it, or it is overloaded",
                waited.as_secs_f64(),
                transport_name(transport)
            ),
            TransactError::Timeout => format!(
                "no answer from {server} in {:.1} s: the port is blocked by a firewall on the \
                 way, the server is down, or it does not listen on UDP there",
                waited.as_secs_f64()
            ),
            TransactError::Closed => format!(
                "{server} closed the {} connection without answering: what listens there \
                 does not speak STUN over {}, or it refused this client",
                transport_name(transport),
                transport_name(transport)
            ),
            TransactError::Stream(why) => format!("{server}: {why}"),
            TransactError::Connect(explanation) => explanation.clone(),
            TransactError::PortUnreachable => format!(
                "{server} refused (ICMP port unreachable): the host is up but nothing listens \
                 on that UDP port; check the port and that the server runs"
            ),
            TransactError::Io(e) => format!("cannot send to {server}: {e}"),
        }
    }
}

/// A response and how long it took.
#[derive(Debug)]
pub struct Response {
    /// The whole datagram; parse it with [`Message::parse`].
    pub bytes: Vec<u8>,
    /// Where it came from (for RFC 5780 checks, not always the address the request went to).
    pub from: SocketAddr,
    /// From the transmission it answers (the last one sent) to its arrival.
    pub rtt: Duration,
    /// Whether the request had to be sent more than once.
    pub retransmitted: bool,
}

impl Response {
    /// The response parsed: `None` when it is not a STUN message (the socket only hands out
    /// datagrams with the request's transaction ID, so this means a malformed one).
    pub fn message(&self) -> Option<Message<'_>> {
        Message::parse(&self.bytes).ok()
    }
}

/// A UDP socket for STUN transactions: requests retransmitted at 250 ms, 500 ms, 1 s, ...
/// until an answer with the same transaction ID arrives or the deadline passes. Datagrams
/// with other transaction IDs are dropped.
#[derive(Debug)]
pub struct StunSocket {
    socket: UdpSocket,
    rng: StdRng,
}

impl StunSocket {
    /// A socket on an ephemeral port of the unspecified address of `server`'s family.
    pub async fn for_server(server: SocketAddr) -> io::Result<StunSocket> {
        StunSocket::bind(SocketAddr::new(unspecified(server.ip()), 0)).await
    }

    /// A socket that talks to `server` alone: the kernel then reports ICMP port, host or
    /// network unreachable to it (an unconnected UDP socket never sees them), so a closed
    /// port fails at once instead of after the whole timeout. For checks whose answers come
    /// from the server's address only.
    pub async fn connected_to(server: SocketAddr) -> io::Result<StunSocket> {
        let socket = StunSocket::for_server(server).await?;
        socket.socket.connect(server).await?;
        Ok(socket)
    }

    /// A socket bound to `local`.
    pub async fn bind(local: SocketAddr) -> io::Result<StunSocket> {
        Ok(StunSocket {
            socket: UdpSocket::bind(local).await?,
            rng: StdRng::from_os_rng(),
        })
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The source address the system picks towards `server`: the address a server sees when
    /// no NAT is on the way. Found without sending anything.
    pub async fn route_source(server: SocketAddr) -> io::Result<IpAddr> {
        let socket = UdpSocket::bind(SocketAddr::new(unspecified(server.ip()), 0)).await?;
        socket.connect(server).await?;
        Ok(socket.local_addr()?.ip())
    }

    /// A fresh random transaction ID.
    pub fn transaction_id(&mut self) -> TransactionId {
        let mut id = [0; 12];
        self.rng.fill_bytes(&mut id);
        TransactionId::new(id)
    }

    /// Sends `request` to `server` and waits for the response with the same transaction ID
    /// from any source, retransmitting until `timeout` has passed since the first
    /// transmission.
    pub async fn transact(
        &self,
        server: SocketAddr,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Response, TransactError> {
        let id = transaction_id(request)?;
        let start = Instant::now();
        let deadline = start + timeout;
        let mut rto = INITIAL_RTO;
        let mut sent_at;
        let mut transmissions = 0u32;
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        loop {
            sent_at = Instant::now();
            self.send(server, request).await?;
            transmissions += 1;
            let next = (sent_at + rto).min(deadline);
            rto = rto.saturating_mul(2);
            while let Some(wait) = next.checked_duration_since(Instant::now()) {
                let received = tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await;
                let Ok(received) = received else { break };
                let (len, from) = match received {
                    Ok(got) => got,
                    // An ICMP error for an earlier datagram to another address must not end
                    // this transaction; for this server it means nothing listens.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        return Err(TransactError::PortUnreachable);
                    }
                    Err(e) => return Err(TransactError::Io(e)),
                };
                if len >= 20 && buf[8..20] == *id {
                    return Ok(Response {
                        bytes: buf[..len].to_vec(),
                        from,
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

    /// Waits up to `wait` for a datagram with transaction ID `id`, sending nothing: for
    /// answers that arrive on another socket than the request's (hairpinning, RESPONSE-PORT).
    pub async fn receive(&self, id: &TransactionId, wait: Duration) -> Option<Response> {
        let start = Instant::now();
        let deadline = start + wait;
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(Ok((len, from))) =
                tokio::time::timeout(left, self.socket.recv_from(&mut buf)).await
            else {
                continue;
            };
            if len >= 20 && buf[8..20] == id.as_bytes()[..] {
                return Some(Response {
                    bytes: buf[..len].to_vec(),
                    from,
                    rtt: start.elapsed(),
                    retransmitted: false,
                });
            }
        }
        None
    }

    /// Sends one datagram.
    pub async fn send(&self, to: SocketAddr, datagram: &[u8]) -> Result<(), TransactError> {
        match self.socket.send_to(datagram, to).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Err(TransactError::PortUnreachable)
            }
            Err(e) => Err(TransactError::Io(e)),
        }
    }
}

/// `UDP`, `TCP`, `TLS` or `DTLS`, as explanations name them.
pub fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Dtls => "DTLS",
    }
}

/// The unspecified address of `ip`'s family, to bind a socket that can reach `ip`.
pub fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Writes a Binding request with a fresh transaction ID into a new buffer: with
/// CHANGE-REQUEST when `change` asks for a change of address or port, RESPONSE-PORT when
/// given, and FINGERPRINT.
pub fn binding_request(
    id: TransactionId,
    change: ChangeRequest,
    response_port: Option<u16>,
) -> Result<Vec<u8>, WriteError> {
    let mut buf = vec![0u8; 64];
    let kind = MessageType::new(Method::BINDING, Class::Request);
    let mut writer = MessageWriter::new(&mut buf, kind, id)?;
    if change.change_ip || change.change_port {
        writer.add(&change)?;
    }
    if let Some(port) = response_port {
        writer.add(&ResponsePort(port))?;
    }
    writer.add_fingerprint()?;
    let len = writer.finish();
    buf.truncate(len);
    Ok(buf)
}

/// Data a peer sent through the relay, with its arrival time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The peer, as the relay saw it.
    pub peer: SocketAddr,
    /// The data.
    pub data: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

/// One TURN allocation on its own UDP socket, stream connection or DTLS association:
/// [`TurnClient`] driven with real time.
///
/// Each operation runs the client until the event that answers it, keeping data that
/// arrives meanwhile for [`TurnSession::receive`]. Events that answer nothing asked (a
/// timer's refresh) are kept in [`TurnSession::other_events`]. Over a stream the client sends
/// each request once (RFC 8489 §6.2.2); over DTLS it retransmits as over UDP. A connection or
/// association that breaks ends every operation at once, and [`TurnSession::broken`] says
/// why.
#[derive(Debug)]
pub struct TurnSession {
    client: TurnClient,
    wire: Wire,
    rng: StdRng,
    received: VecDeque<Received>,
    /// Why the stream or association cannot be used any more, once it cannot.
    broken: Option<String>,
    /// How long a write to a stream may take.
    write_timeout: Duration,
    /// Events no operation waited for, in arrival order.
    pub other_events: Vec<TurnEvent>,
}

/// What a session talks over.
#[derive(Debug)]
enum Wire {
    Udp(UdpSocket),
    Stream(StreamConn),
    Dtls(Box<DtlsConn>),
}

impl TurnSession {
    /// A session with `server` over UDP on a fresh ephemeral port. `timeout` bounds each
    /// request, retransmissions included.
    pub async fn new(
        server: SocketAddr,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> io::Result<TurnSession> {
        let socket = UdpSocket::bind(SocketAddr::new(unspecified(server.ip()), 0)).await?;
        Ok(TurnSession::on(
            server,
            Wire::Udp(socket),
            username,
            password,
            timeout,
        ))
    }

    /// A session over whatever `dialer` speaks: a fresh UDP socket, a new TCP or TLS
    /// connection, or a new DTLS association. `timeout` bounds the connection or handshake
    /// and each request.
    pub async fn open(
        dialer: &Dialer,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<TurnSession, ConnectError> {
        let server = dialer.server();
        let wire = match dialer.transport() {
            Transport::Udp => {
                return TurnSession::new(server, username, password, timeout)
                    .await
                    .map_err(ConnectError::Io);
            }
            Transport::Dtls => Wire::Dtls(dialer.dtls(timeout).await?.conn),
            Transport::Tcp | Transport::Tls => Wire::Stream(dialer.connect(timeout).await?.stream),
        };
        Ok(TurnSession::on(server, wire, username, password, timeout))
    }

    fn on(
        server: SocketAddr,
        wire: Wire,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> TurnSession {
        let mut config = TurnClientConfig::new(server, username, password);
        config.timing = timing_within(timeout);
        config.reliable = matches!(wire, Wire::Stream(_));
        TurnSession {
            client: TurnClient::new(config),
            wire,
            rng: StdRng::from_os_rng(),
            received: VecDeque::new(),
            broken: None,
            write_timeout: timeout,
            other_events: Vec::new(),
        }
    }

    /// The client, for its state and addresses.
    pub fn client(&self) -> &TurnClient {
        &self.client
    }

    /// The local address of the socket or connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.wire {
            Wire::Udp(socket) => socket.local_addr(),
            Wire::Stream(conn) => Ok(conn.local_addr()),
            Wire::Dtls(conn) => Ok(conn.local_addr()),
        }
    }

    /// Whether the session runs over a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.wire, Wire::Stream(_))
    }

    /// Whether the session runs over DTLS.
    pub fn is_dtls(&self) -> bool {
        matches!(self.wire, Wire::Dtls(_))
    }

    /// Why the connection or association cannot be used any more, once it cannot.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Allocates: the relayed address, the mapped address the server reported, the granted
    /// lifetime.
    pub async fn allocate(
        &mut self,
    ) -> Result<(SocketAddr, Option<SocketAddr>, Duration), TurnError> {
        self.client.allocate(Instant::now(), &mut self.rng);
        let event = self
            .until(|e| {
                matches!(
                    e,
                    TurnEvent::Allocated { .. } | TurnEvent::AllocationFailed(_)
                )
            })
            .await?;
        match event {
            TurnEvent::Allocated {
                relayed,
                mapped,
                lifetime,
            } => Ok((relayed, mapped, lifetime)),
            TurnEvent::AllocationFailed(error) => Err(error),
            _ => Err(TurnError::InvalidResponse("unexpected event")),
        }
    }

    /// Creates a permission for `peer`'s IP address and waits for the answer.
    pub async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), TurnError> {
        self.client
            .create_permission(Instant::now(), &mut self.rng, peer);
        let ip = peer.ip();
        let event = self
            .until(|e| match e {
                TurnEvent::PermissionCreated(created) => *created == ip,
                TurnEvent::PermissionFailed { peer, .. } => *peer == ip,
                _ => false,
            })
            .await?;
        match event {
            TurnEvent::PermissionFailed { error, .. } => Err(error),
            _ => Ok(()),
        }
    }

    /// Binds a channel to `peer` (with its permission) and waits for the answer.
    pub async fn bind_channel(&mut self, peer: SocketAddr) -> Result<ChannelNumber, TurnError> {
        let Some(number) = self
            .client
            .bind_channel(Instant::now(), &mut self.rng, peer)
        else {
            return Err(TurnError::InvalidResponse("no channel number left"));
        };
        let event = self
            .until(|e| match e {
                TurnEvent::ChannelBound { peer: bound, .. } => *bound == peer,
                TurnEvent::ChannelBindFailed { peer: failed, .. } => *failed == peer,
                _ => false,
            })
            .await?;
        match event {
            TurnEvent::ChannelBindFailed { error, .. } => Err(error),
            _ => Ok(number),
        }
    }

    /// Refreshes the allocation now: the granted lifetime.
    pub async fn refresh(&mut self) -> Result<Duration, TurnError> {
        self.client.refresh(Instant::now(), &mut self.rng);
        let event = self
            .until(|e| matches!(e, TurnEvent::Refreshed { .. } | TurnEvent::RefreshFailed(_)))
            .await?;
        match event {
            TurnEvent::Refreshed { lifetime } => Ok(lifetime),
            TurnEvent::RefreshFailed(error) => Err(error),
            _ => Err(TurnError::InvalidResponse("unexpected event")),
        }
    }

    /// Releases the allocation (Refresh with LIFETIME 0) and waits for the answer.
    pub async fn deallocate(&mut self) -> Result<(), TurnError> {
        self.client.deallocate(Instant::now(), &mut self.rng);
        match self
            .until(|e| matches!(e, TurnEvent::Deallocated { .. }))
            .await?
        {
            TurnEvent::Deallocated {
                unconfirmed: Some(error),
            } => Err(error),
            _ => Ok(()),
        }
    }

    /// Sends `data` to `peer` through the relay: ChannelData once a channel is bound, a Send
    /// indication otherwise.
    pub async fn send_to(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        let datagram = self.client.send_to(peer, data)?;
        match &mut self.wire {
            Wire::Udp(socket) => {
                socket
                    .send_to(&datagram, self.client.server())
                    .await
                    .map_err(SendError::Io)?;
            }
            Wire::Stream(conn) => {
                if let Some(why) = &self.broken {
                    return Err(SendError::Io(io::Error::other(why.clone())));
                }
                if let Err(error) = conn.send(&datagram, self.write_timeout).await {
                    let why = error.to_string();
                    self.broken = Some(why.clone());
                    return Err(SendError::Io(io::Error::other(why)));
                }
            }
            Wire::Dtls(conn) => {
                if let Some(why) = &self.broken {
                    return Err(SendError::Io(io::Error::other(why.clone())));
                }
                if let Err(error) = conn.send(&datagram).await {
                    let why = error.to_string();
                    self.broken = Some(why.clone());
                    return Err(SendError::Io(io::Error::other(why)));
                }
            }
        }
        Ok(())
    }

    /// The next data from a peer, waiting until `deadline` at the latest.
    pub async fn receive(&mut self, deadline: Instant) -> Option<Received> {
        loop {
            if let Some(got) = self.received.pop_front() {
                return Some(got);
            }
            if !self.step(deadline).await {
                return None;
            }
        }
    }

    /// Runs the client until an event matches, with the client's own timeouts as the limit.
    async fn until(&mut self, wanted: impl Fn(&TurnEvent) -> bool) -> Result<TurnEvent, TurnError> {
        // The client fails a request after its retransmissions; this bound only guards
        // against a client that never reports.
        let limit = Instant::now() + Duration::from_secs(300);
        loop {
            while let Some(event) = self.client.poll_event() {
                if wanted(&event) {
                    return Ok(event);
                }
                self.other_events.push(event);
            }
            if !self.step(limit).await {
                return Err(TurnError::Timeout);
            }
        }
    }

    /// Sends what the client has to send, then waits for one datagram or frame or the
    /// client's next timer, whichever comes first, but not past `deadline`. False once
    /// `deadline` passed or the stream broke.
    async fn step(&mut self, deadline: Instant) -> bool {
        let server = self.client.server();
        while let Some(datagram) = self.client.poll_transmit() {
            match &mut self.wire {
                // A lost datagram is a lost datagram: the client retransmits requests.
                Wire::Udp(socket) => {
                    let _ = socket.send_to(&datagram, server).await;
                }
                Wire::Stream(conn) => {
                    if self.broken.is_none()
                        && let Err(error) = conn.send(&datagram, self.write_timeout).await
                    {
                        self.broken = Some(error.to_string());
                    }
                }
                Wire::Dtls(conn) => {
                    if self.broken.is_none()
                        && let Err(error) = conn.send(&datagram).await
                    {
                        self.broken = Some(error.to_string());
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= deadline || self.broken.is_some() {
            return false;
        }
        let wake = self
            .client
            .poll_timeout()
            .map_or(deadline, |at| at.min(deadline));
        let input = match &mut self.wire {
            Wire::Udp(socket) => {
                let mut buf = [0u8; 2048];
                let wait = wake.saturating_duration_since(now);
                match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
                    Ok(Ok((len, from))) if from == server => Some(buf[..len].to_vec()),
                    // Datagrams from elsewhere and ICMP errors are not the server's answer;
                    // the client's retransmissions and timeouts decide.
                    Ok(_) => return true,
                    Err(_) => None,
                }
            }
            Wire::Stream(conn) => match conn.next_frame(wake).await {
                Ok(frame) => frame,
                Err(error) => {
                    self.broken = Some(error.to_string());
                    return false;
                }
            },
            Wire::Dtls(conn) => match conn.recv(wake).await {
                Ok(record) => record,
                Err(error) => {
                    self.broken = Some(error.to_string());
                    return false;
                }
            },
        };
        let now = Instant::now();
        match input {
            Some(bytes) => {
                if let Some(data) = self.client.handle_input(now, &mut self.rng, &bytes) {
                    self.received.push_back(Received {
                        peer: data.peer,
                        data: data.data.to_vec(),
                        at: now,
                    });
                }
            }
            None => self.client.handle_timeout(now, &mut self.rng),
        }
        true
    }
}

impl Drop for TurnSession {
    /// A session dropped while it holds an allocation (a check cancelled, a task aborted, an
    /// early return) releases it with one best-effort Refresh of LIFETIME 0, so that a probe
    /// run leaves nothing counting against the user's quota until the lifetime runs out; over
    /// DTLS in the association, which then closes. Over a stream, closing the connection is
    /// the release: the server deletes the allocation of a closed connection (RFC 8656 §3.1).
    fn drop(&mut self) {
        use icebreaker_ice::turn_client::TurnState;
        if matches!(self.wire, Wire::Stream(_))
            || self.broken.is_some()
            || !matches!(
                self.client.state(),
                TurnState::Allocating | TurnState::Allocated
            )
        {
            return;
        }
        self.client.deallocate(Instant::now(), &mut self.rng);
        let server = self.client.server();
        while let Some(datagram) = self.client.poll_transmit() {
            match &mut self.wire {
                Wire::Udp(socket) => {
                    let _ = socket.try_send_to(&datagram, server);
                }
                Wire::Dtls(conn) => conn.send_now(&datagram),
                Wire::Stream(_) => {}
            }
        }
    }
}

/// Why data could not be sent through the relay.
#[derive(Debug)]
pub enum SendError {
    /// The client refused: no allocation, no permission, too large.
    Turn(TurnSendError),
    /// The socket failed.
    Io(io::Error),
}

impl From<TurnSendError> for SendError {
    fn from(error: TurnSendError) -> SendError {
        SendError::Turn(error)
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Turn(e) => e.fmt(f),
            SendError::Io(e) => write!(f, "cannot send to the server: {e}"),
        }
    }
}

/// TURN retransmission timing that gives up after about `timeout`: RTO 250 ms doubled,
/// as many transmissions as fit, then the RFC's final wait of 16 RTOs cut to what is left.
fn timing_within(timeout: Duration) -> TurnTiming {
    let mut timing = TurnTiming {
        initial_rto: INITIAL_RTO,
        max_retransmits: 1,
    };
    while timing.max_retransmits < 7 {
        let longer = TurnTiming {
            max_retransmits: timing.max_retransmits + 1,
            ..timing
        };
        if longer.transaction_timeout() > timeout {
            break;
        }
        timing = longer;
    }
    if timing.transaction_timeout() > timeout {
        // Even one transmission and its final wait is too long: shrink the RTO instead.
        timing.initial_rto = timeout / 16;
    }
    timing
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn turn_timing_fits_the_timeout() {
        for secs in [1, 3, 5, 10, 40] {
            let timeout = Duration::from_secs(secs);
            let timing = timing_within(timeout);
            assert!(
                timing.transaction_timeout() <= timeout,
                "{secs} s: {timing:?}"
            );
            assert!(timing.max_retransmits >= 1);
        }
        // Long enough for RFC 8489's seven transmissions at 250 ms: 31.75 s.
        assert_eq!(timing_within(Duration::from_secs(40)).max_retransmits, 7);
    }

    #[test]
    fn binding_requests_carry_what_was_asked() {
        let id = TransactionId::new([7; 12]);
        let plain = binding_request(id, ChangeRequest::default(), None).unwrap();
        let message = Message::parse(&plain).unwrap();
        assert!(message.verify_fingerprint().is_ok());
        assert_eq!(message.get::<ChangeRequest>().unwrap(), None);

        let change = ChangeRequest {
            change_ip: true,
            change_port: false,
        };
        let asked = binding_request(id, change, Some(5000)).unwrap();
        let message = Message::parse(&asked).unwrap();
        assert_eq!(message.get::<ChangeRequest>().unwrap(), Some(change));
        assert_eq!(
            message.get::<ResponsePort>().unwrap(),
            Some(ResponsePort(5000))
        );
        assert_eq!(message.transaction_id(), id);
    }
}
