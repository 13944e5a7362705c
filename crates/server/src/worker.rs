//! One worker thread: a mio event loop over its UDP listeners, TCP and TLS listeners and
//! connections, DTLS listeners and sessions, relay sockets, and the listeners and connections
//! of TCP allocations (RFC 6062), driving its own TURN core and the Binding service. Workers
//! share no state on the relay path.

mod dtls;
mod streams;
mod tcp_relay;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use icebreaker_stun::BindingService;
use icebreaker_turn::{
    ClientAction, ClientTransport, Event, FiveTuple, PeerAction, RelaySockets, TurnConfig,
    TurnServer,
};
use icebreaker_wire::{Class, Message, MessageType, Method};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tracing::{debug, info, warn};

use crate::batch::{BATCH, HEADROOM, RecvBatch, SendQueue};
use crate::dtls::{DtlsServer, DtlsSettings};
use crate::metrics::{Direction, WorkerMetrics};
use crate::{net, sockopt};

pub(crate) use streams::StreamSettings;
use streams::{StreamListener, Streams};
pub(crate) use tcp_relay::{Crew, Sibling, TcpRelayPorts};

/// Messages from the main thread.
pub(crate) enum Control {
    /// New users, secrets, policy and limits (SIGHUP); allocations are kept.
    Reconfigure(Box<TurnConfig>),
    /// Refuse new allocations; keep serving the others (SIGTERM).
    Drain,
    /// Leave the event loop.
    Stop,
    /// A client connection another worker accepted, whose first frame is a ConnectionBind
    /// (RFC 6062) for a connection of this worker's core.
    Adopt(Box<streams::Detached>),
}

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
/// TCP and TLS listener tokens start here, far above any number of UDP listeners.
const STREAM_LISTENER_BASE: usize = 1 << 16;
/// DTLS listener tokens start here, far above any number of stream listeners.
const DTLS_LISTENER_BASE: usize = 1 << 18;
/// Relay socket tokens start here, far above any number of listeners.
const RELAY_BASE: usize = 1 << 20;
/// Connection tokens start here, far above any number of relay sockets (one per port and
/// family).
const CONN_BASE: usize = 1 << 26;
/// Longest wait in the event loop, so that timers never drift far.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The relay table's map: keyed by this server's own relay addresses, which no client chooses,
/// so a fast hasher is safe.
type RelayMap = HashMap<SocketAddr, RelaySocket, foldhash::fast::FixedState>;

struct RelaySocket {
    token: Token,
    socket: UdpSocket,
    /// Whether DF is set on this socket now: switched only when a datagram asks otherwise.
    dont_fragment: bool,
}

struct Listener {
    socket: UdpSocket,
    local: SocketAddr,
}

/// The relay sockets of one worker, lent to the TURN core to bind and close ports.
struct RelayTable {
    registry: Registry,
    sockets: RelayMap,
    by_token: Vec<Option<SocketAddr>>,
    free_tokens: Vec<usize>,
    /// The listeners of TCP allocations (RFC 6062).
    tcp: tcp_relay::Listeners,
}

impl RelaySockets for RelayTable {
    fn bind(&mut self, addr: SocketAddr) -> bool {
        let mut socket = match net::relay_socket(addr) {
            Ok(socket) => UdpSocket::from_std(socket),
            Err(error) => {
                debug!(%addr, %error, "relay port unavailable");
                return false;
            }
        };
        let slot = self.free_tokens.pop().unwrap_or_else(|| {
            self.by_token.push(None);
            self.by_token.len() - 1
        });
        let token = Token(RELAY_BASE + slot);
        if let Err(error) = self
            .registry
            .register(&mut socket, token, Interest::READABLE)
        {
            warn!(%addr, %error, "cannot watch relay socket");
            self.free_tokens.push(slot);
            return false;
        }
        self.by_token[slot] = Some(addr);
        let relay = RelaySocket {
            token,
            socket,
            dont_fragment: false,
        };
        self.sockets.insert(addr, relay);
        true
    }

    fn release(&mut self, addr: SocketAddr) {
        if let Some(mut relay) = self.sockets.remove(&addr) {
            let _ = self.registry.deregister(&mut relay.socket);
            let slot = relay.token.0 - RELAY_BASE;
            self.by_token[slot] = None;
            self.free_tokens.push(slot);
        }
    }

    fn bind_tcp(&mut self, addr: SocketAddr) -> bool {
        self.tcp.bind(&self.registry, addr)
    }

    fn release_tcp(&mut self, addr: SocketAddr) {
        self.tcp.release(&self.registry, addr);
    }
}

/// The batched I/O buffers of one worker thread: what one `recvmmsg` brought, and what its
/// datagrams produced, sent together before the next.
struct Io {
    recv: RecvBatch,
    send: SendQueue,
}

/// The addresses a worker listens on, each bound with `SO_REUSEPORT` beside the other workers.
pub(crate) struct ListenAddresses<'a> {
    /// UDP.
    pub(crate) udp: &'a [SocketAddr],
    /// TCP.
    pub(crate) tcp: &'a [SocketAddr],
    /// TLS over TCP.
    pub(crate) tls: &'a [SocketAddr],
    /// DTLS over UDP.
    pub(crate) dtls: &'a [SocketAddr],
}

/// Everything one worker thread owns.
pub(crate) struct Worker {
    poll: Poll,
    listeners: Vec<Listener>,
    streams: Streams,
    /// DTLS listeners and sessions, when DTLS is on.
    dtls: Option<dtls::DtlsSide>,
    relays: RelayTable,
    /// Peer connections of TCP allocations and their data connections.
    tcp: tcp_relay::TcpRelay,
    core: TurnServer,
    binding: BindingService,
    metrics: WorkerMetrics,
    control: Receiver<Control>,
    out: Vec<u8>,
}

impl Worker {
    /// A worker listening on `listen`, and the waker that interrupts its loop when a
    /// [`Control`] message is sent.
    pub(crate) fn new(
        listen: &ListenAddresses<'_>,
        stream_settings: StreamSettings,
        dtls_settings: Option<DtlsSettings>,
        core: TurnServer,
        binding: BindingService,
        metrics: WorkerMetrics,
        control: Receiver<Control>,
    ) -> io::Result<(Worker, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut stream_listeners = Vec::with_capacity(listen.tcp.len() + listen.tls.len());
        let stream_addresses = listen
            .tcp
            .iter()
            .map(|&a| (a, false))
            .chain(listen.tls.iter().map(|&a| (a, true)));
        for (i, (addr, tls)) in stream_addresses.enumerate() {
            let name = if tls { "tls" } else { "tcp" };
            let mut listener =
                mio::net::TcpListener::from_std(net::tcp_listener(addr).map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("cannot listen on {name} {addr}: {error}"),
                    )
                })?);
            poll.registry().register(
                &mut listener,
                Token(STREAM_LISTENER_BASE + i),
                Interest::READABLE,
            )?;
            stream_listeners.push(StreamListener {
                listener,
                local: addr,
                tls,
            });
        }
        let dtls = match dtls_settings {
            Some(settings) if !listen.dtls.is_empty() => {
                Some(dtls_side(poll.registry(), listen.dtls, settings)?)
            }
            _ => None,
        };
        let listen = listen.udp;
        let mut listeners = Vec::with_capacity(listen.len());
        for (i, &addr) in listen.iter().enumerate() {
            let mut socket = UdpSocket::from_std(net::udp_listener(addr).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot listen on udp {addr}: {error}"),
                )
            })?);
            poll.registry()
                .register(&mut socket, Token(LISTENER_BASE + i), Interest::READABLE)?;
            listeners.push(Listener {
                socket,
                local: addr,
            });
        }
        let relays = RelayTable {
            registry: poll.registry().try_clone()?,
            sockets: RelayMap::default(),
            by_token: Vec::new(),
            free_tokens: Vec::new(),
            tcp: tcp_relay::Listeners::default(),
        };
        // As many peer connections per worker as client connections in all: each needs a
        // data connection to carry anything.
        let tcp = tcp_relay::TcpRelay::new(stream_settings.max_connections);
        let worker = Worker {
            poll,
            listeners,
            streams: Streams::new(stream_listeners, stream_settings),
            dtls,
            relays,
            tcp,
            core,
            binding,
            metrics,
            control,
            out: vec![0; 2048],
        };
        Ok((worker, waker))
    }

    /// Runs until told to stop.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        // Made here, on the worker's own thread: their system-call headers hold raw pointers.
        let mut io = Io {
            recv: RecvBatch::new(),
            send: SendQueue::new(),
        };
        loop {
            let now = Instant::now();
            let next = [
                self.core.poll_timeout(),
                self.streams.poll_timeout(),
                self.dtls_poll_timeout(),
                self.tcp.poll_timeout(now),
            ]
            .into_iter()
            .flatten()
            .min();
            let wait = next.map_or(MAX_WAIT, |at| {
                at.saturating_duration_since(now).min(MAX_WAIT)
            });
            if let Err(error) = self.poll.poll(&mut events, Some(wait)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            // One clock read per wakeup: a batch is handled within microseconds.
            let now = Instant::now();
            for event in &events {
                match event.token() {
                    WAKER => {
                        if !self.handle_control() {
                            self.close_all();
                            self.close_dtls(&mut io);
                            return Ok(());
                        }
                    }
                    Token(t) if t >= CONN_BASE => self.connection_ready(
                        &mut io,
                        t - CONN_BASE,
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_writable(),
                        now,
                    ),
                    Token(t) if t >= tcp_relay::TCP_BASE => self.tcp_ready(t, now),
                    Token(t) if t >= RELAY_BASE => {
                        let relay = self.relays.by_token.get(t - RELAY_BASE).copied().flatten();
                        if let Some(relay) = relay {
                            self.drain_relay(&mut io, relay, now);
                        }
                    }
                    Token(t) if t >= DTLS_LISTENER_BASE => {
                        self.drain_dtls_listener(&mut io, t - DTLS_LISTENER_BASE, now);
                    }
                    Token(t) if t >= STREAM_LISTENER_BASE => {
                        self.accept(t - STREAM_LISTENER_BASE, now);
                    }
                    Token(t) => self.drain_listener(&mut io, t - LISTENER_BASE, now),
                }
            }
            self.flush_connections();
            let now = Instant::now();
            if self.core.poll_timeout().is_some_and(|at| at <= now) {
                self.core.handle_timeout(now, &mut self.relays);
            }
            self.sweep_connections(now);
            self.dtls_timeout(&mut io, now);
            self.tcp_work(&mut io, now);
            self.report_events();
            self.metrics
                .set_relay_ports_in_use(self.core.relay_ports_in_use());
        }
    }

    /// Applies control messages; false when the worker must stop.
    fn handle_control(&mut self) -> bool {
        loop {
            match self.control.try_recv() {
                Ok(Control::Reconfigure(config)) => {
                    self.core.reconfigure(*config, Instant::now());
                    self.report_events();
                }
                Ok(Control::Drain) => self.core.set_draining(true),
                Ok(Control::Adopt(connection)) => self.tcp.adopted.push(*connection),
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn drain_listener(&mut self, io: &mut Io, index: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let received = match io.recv.recv(listener.socket.as_raw_fd()) {
                Ok(n) => n,
                // An ICMP error from an earlier send surfaces here; the socket is fine.
                Err(error) => {
                    debug!(%error, "listener receive error");
                    continue;
                }
            };
            for i in 0..received {
                self.client_packet(io, index, i, now);
            }
            io.send.flush();
            if received < BATCH {
                return;
            }
        }
    }

    fn client_packet(&mut self, io: &mut Io, index: usize, datagram: usize, now: Instant) {
        let Worker {
            listeners,
            relays,
            core,
            binding,
            metrics,
            out,
            ..
        } = self;
        let Io { recv, send } = io;
        let Some((from, slot, len)) = recv.get_mut(datagram) else {
            return;
        };
        let local = listeners[index].local;
        let packet = &slot[HEADROOM..HEADROOM + len];
        if is_binding_request(packet) {
            let Ok(request) = Message::parse(packet) else {
                return;
            };
            if let Some(reply) = binding.handle(&request, local, from, out) {
                metrics.binding(ClientTransport::Udp, from.is_ipv6());
                if let Some(socket) = listeners.iter().find(|l| l.local == reply.from) {
                    send.push(socket.socket.as_raw_fd(), reply.to, &out[..reply.len]);
                }
            }
            return;
        }
        let five_tuple = FiveTuple {
            client: from,
            server: local,
            transport: ClientTransport::Udp,
        };
        match core.handle_client(now, five_tuple, packet, out, relays) {
            // Never asked for over UDP, where a throttled request is simply dropped and no
            // ConnectionBind succeeds (RFC 6062 data connections are TCP or TLS).
            ClientAction::Drop | ClientAction::Close | ClientAction::PipeToPeer { .. } => {}
            ClientAction::Reply(n) => {
                send.push(listeners[index].socket.as_raw_fd(), from, &out[..n]);
            }
            ClientAction::Relay {
                relay,
                peer,
                range,
                dont_fragment,
            } => send_to_peer(
                relays,
                send,
                metrics,
                relay,
                peer,
                &packet[range],
                dont_fragment,
            ),
        }
    }

    fn drain_relay(&mut self, io: &mut Io, relay: SocketAddr, now: Instant) {
        loop {
            let Some(socket) = self.relays.sockets.get(&relay) else {
                return;
            };
            let received = match io.recv.recv(socket.socket.as_raw_fd()) {
                Ok(n) => n,
                Err(error) => {
                    debug!(%relay, %error, "relay receive error");
                    continue;
                }
            };
            for i in 0..received {
                self.peer_packet(io, relay, i, now);
            }
            io.send.flush();
            if received < BATCH {
                return;
            }
        }
    }

    fn peer_packet(&mut self, io: &mut Io, relay: SocketAddr, datagram: usize, now: Instant) {
        let Worker {
            listeners,
            streams,
            dtls,
            core,
            metrics,
            out,
            ..
        } = self;
        let Io { recv, send } = io;
        let Some((peer, slot, len)) = recv.get_mut(datagram) else {
            return;
        };
        let action = core.handle_peer(now, relay, peer, slot, HEADROOM..HEADROOM + len, out);
        let (client, bytes) = match &action {
            PeerAction::Drop => return,
            PeerAction::ForwardInPlace { client, range } => (client, &slot[range.clone()]),
            PeerAction::Forward { client, len } => (client, &out[..*len]),
        };
        if client.transport.is_stream() {
            if streams.send_to(client, bytes) {
                metrics.relayed(Direction::PeerToClient, len);
            }
            return;
        }
        if client.transport == ClientTransport::Dtls {
            if let Some(dtls) = dtls.as_mut() {
                let mut out = dtls::Outbound {
                    listeners: &dtls.listeners,
                    send,
                };
                if dtls.sessions.send_to(now, client, bytes, &mut out) {
                    metrics.relayed(Direction::PeerToClient, len);
                }
            }
            return;
        }
        if let Some(listener) = listeners.iter().find(|l| l.local == client.server) {
            metrics.relayed(Direction::PeerToClient, len);
            send.push(listener.socket.as_raw_fd(), client.client, bytes);
        }
    }

    /// Logs and counts what the core reported.
    fn report_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.metrics.record(&event);
            log_event(&event);
        }
    }
}

/// The DTLS listeners of one worker, registered with its poller, and an empty session table.
fn dtls_side(
    registry: &Registry,
    addresses: &[SocketAddr],
    settings: DtlsSettings,
) -> io::Result<dtls::DtlsSide> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for (i, &addr) in addresses.iter().enumerate() {
        let mut socket = UdpSocket::from_std(net::udp_listener(addr).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot listen on dtls {addr}: {error}"),
            )
        })?);
        registry.register(
            &mut socket,
            Token(DTLS_LISTENER_BASE + i),
            Interest::READABLE,
        )?;
        listeners.push(dtls::DtlsListener {
            socket,
            local: addr,
        });
    }
    let sessions = DtlsServer::new(settings)
        .map_err(|error| io::Error::other(format!("DTLS configuration: {error}")))?;
    Ok(dtls::DtlsSide {
        listeners,
        sessions,
    })
}

/// Sends `bytes` from the relay socket `relay` to `peer`, with DF as the client asked.
fn send_to_peer(
    relays: &mut RelayTable,
    send: &mut SendQueue,
    metrics: &WorkerMetrics,
    relay: SocketAddr,
    peer: SocketAddr,
    bytes: &[u8],
    dont_fragment: bool,
) {
    let Some(socket) = relays.sockets.get_mut(&relay) else {
        return;
    };
    if socket.dont_fragment != dont_fragment {
        // DF belongs to the socket: what is queued must leave with the old setting before it
        // changes.
        send.flush();
        match sockopt::set_dont_fragment(&socket.socket, relay.is_ipv6(), dont_fragment) {
            Ok(()) => socket.dont_fragment = dont_fragment,
            Err(error) => debug!(%relay, %error, "cannot switch DF"),
        }
    }
    metrics.relayed(Direction::ClientToPeer, bytes.len());
    send.push(socket.socket.as_raw_fd(), peer, bytes);
}

/// Whether a datagram is a STUN Binding request, which the Binding service answers, by its
/// first two bytes.
fn is_binding_request(packet: &[u8]) -> bool {
    let Some(&[a, b]) = packet.first_chunk::<2>() else {
        return false;
    };
    MessageType::from_u16(u16::from_be_bytes([a, b]))
        .is_some_and(|t| t.method == Method::BINDING && t.class == Class::Request)
}

fn log_event(event: &Event) {
    match event {
        Event::AllocationCreated {
            five_tuple,
            relay,
            username,
            lifetime,
        } => {
            info!(client = ?five_tuple, %relay, user = %username, lifetime = lifetime.as_secs(), "allocation created")
        }
        Event::AllocationRefreshed {
            five_tuple,
            relay,
            lifetime,
        } => {
            info!(client = ?five_tuple, %relay, lifetime = lifetime.as_secs(), "allocation refreshed")
        }
        Event::AllocationDeleted {
            five_tuple,
            relay,
            reason,
        } => info!(client = ?five_tuple, %relay, ?reason, "allocation deleted"),
        Event::PeerDenied {
            five_tuple,
            peer,
            reason,
        } => info!(client = ?five_tuple, %peer, reason = reason.as_str(), "peer denied"),
        Event::AuthFailed { five_tuple, reason } => {
            debug!(client = ?five_tuple, reason = reason.as_str(), "authentication failed");
        }
        Event::PeerConnectionOpened {
            five_tuple,
            id,
            peer,
            outgoing,
        } => {
            info!(client = ?five_tuple, %peer, id = id.0, outgoing, "peer connection opened");
        }
        Event::PeerConnectionClosed {
            five_tuple,
            id,
            peer,
            reason,
        } => {
            info!(client = ?five_tuple, %peer, id = id.0, reason = reason.as_str(), "peer connection closed");
        }
        Event::Answered { .. } => {}
    }
}
