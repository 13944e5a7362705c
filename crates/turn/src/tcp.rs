//! TCP allocations (RFC 6062): Connect, ConnectionBind, connections that peers open to a
//! relayed address, and the timers and quotas of those connections.
//!
//! The core opens no socket here either. It decides and says what to do: [`Command`]s for the
//! driver's sockets, and the messages a client's control connection is owed, written on demand
//! into the driver's buffer ([`TurnServer::poll_transmit`]). The driver owns the listeners
//! (bound through [`RelaySockets::bind_tcp`](crate::RelaySockets::bind_tcp)), the peer
//! connections and the client data connections, splices each pair, and reports what the
//! network did: a connection made or refused, a peer connecting, a connection ending.
//!
//! A peer connection is named by a connection id, drawn from the injected random generator:
//! 24 random bits under the core's 8-bit tag, unique among the core's live connections. Binding
//! one also takes the credentials of the user who holds the allocation.

use core::fmt;
use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use foldhash::fast::FixedState;
use icebreaker_wire::attr::{ConnectionId, XorPeerAddress};
use icebreaker_wire::{
    Class, ErrorCode, IntegrityAlgorithm, IntegrityKey, Message, MessageType, MessageWriter,
    Method, TransactionId, WriteError,
};
use rand_core::RngCore;

use crate::FiveTuple;
use crate::allocation::Allocation;
use crate::auth::Authenticated;
use crate::ports::RelaySockets;
use crate::server::{ClientAction, DeleteReason, Event, TurnServer};

/// How long the core waits for the outcome of a [`Command::Connect`] before it answers the
/// Connect with 447 and commands the attempt closed: at least 30 s (RFC 6062 §5.2). The driver
/// may report a failure sooner.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a peer connection waits for its ConnectionBind before it is closed
/// (RFC 6062 §5.2, §5.3).
pub const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Draws of a connection id before giving up: only a core holding millions of connections
/// under one tag would ever need a second.
const ID_TRIES: usize = 16;

/// The bits of a connection id drawn at random; the top 8 are the core's tag.
const ID_RANDOM_BITS: u32 = 0x00FF_FFFF;

/// Work for the driver on TCP sockets (RFC 6062), from [`TurnServer::poll_command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Open a TCP connection from the relayed address `relay` (a socket bound to it with
    /// `SO_REUSEADDR`, beside its listener) to `peer`, keep it under `id` without reading from
    /// it yet, and report the outcome: [`TurnServer::peer_connected`] or
    /// [`TurnServer::peer_connect_failed`]. Past [`CONNECT_TIMEOUT`] the core gives up on its
    /// own and sends [`Command::Close`] for `id`.
    Connect {
        /// The connection id to report under.
        id: ConnectionId,
        /// The local address: the allocation's relayed address.
        relay: SocketAddr,
        /// The peer, as the client named it and the policy allowed it.
        peer: SocketAddr,
    },
    /// Close peer connection `id`, or abandon its attempt, and close the client data
    /// connection bound to it if there is one. The core has forgotten `id`: report nothing.
    /// An `id` the driver no longer has (it reported it closed meanwhile) is ignored.
    Close {
        /// The connection.
        id: ConnectionId,
    },
}

/// A message [`TurnServer::poll_transmit`] wrote into the caller's buffer, to send on a
/// client's control connection: the answer to a Connect, or a ConnectionAttempt indication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The 5-tuple of the control connection. Gone already, if the client left: then drop it.
    pub client: FiveTuple,
    /// The message's length at the start of the buffer.
    pub len: usize,
}

/// Why a peer connection ended. Small and closed, so that it can label a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerCloseReason {
    /// The driver reported it or its client data connection closed.
    Closed,
    /// No ConnectionBind came within [`CONNECTION_BIND_TIMEOUT`].
    NotBound,
    /// Its allocation ended: expired, refreshed to 0, or its control connection closed
    /// (RFC 6062 §5.5).
    AllocationEnded,
    /// A new peer policy denies the peer.
    PeerDenied,
}

impl PeerCloseReason {
    /// A short lowercase name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            PeerCloseReason::Closed => "closed",
            PeerCloseReason::NotBound => "not_bound",
            PeerCloseReason::AllocationEnded => "allocation_ended",
            PeerCloseReason::PeerDenied => "peer_denied",
        }
    }

    /// Every reason, for metrics that list all label values up front.
    pub const ALL: [PeerCloseReason; 4] = [
        PeerCloseReason::Closed,
        PeerCloseReason::NotBound,
        PeerCloseReason::AllocationEnded,
        PeerCloseReason::PeerDenied,
    ];
}

impl fmt::Display for PeerCloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The connection id of a ConnectionBind request, if `packet` is one: what a driver reads
/// from the first message of a new client connection to find the worker whose core issued the
/// id ([`connection_id_tag`]). Anything else, malformed included, is `None`.
pub fn connection_bind_id(packet: &[u8]) -> Option<ConnectionId> {
    let message = Message::parse(packet).ok()?;
    if message.method() != Method::CONNECTION_BIND || message.class() != Class::Request {
        return None;
    }
    message.get::<ConnectionId>().ok().flatten()
}

/// The tag of the core that issued `id` ([`TurnServer::set_connection_id_tag`]).
pub const fn connection_id_tag(id: ConnectionId) -> u8 {
    (id.0 >> 24) as u8
}

/// The TCP side of a TCP allocation: its peer connections, by id and peer address.
#[derive(Clone, Debug, Default)]
pub(crate) struct TcpRelay {
    pub(crate) connections: Vec<(ConnectionId, SocketAddr)>,
}

/// The TCP state of one core.
pub(crate) struct TcpState {
    /// The listeners of TCP allocations, to their allocation's index. Apart from the UDP
    /// relays, which `handle_peer` looks up, so that no datagram ever matches a listener.
    pub(crate) by_relay: HashMap<SocketAddr, usize, FixedState>,
    connections: HashMap<ConnectionId, PeerConnection, FixedState>,
    commands: VecDeque<Command>,
    transmits: VecDeque<Pending>,
    tag: u8,
}

impl TcpState {
    pub(crate) fn new(seed: u64) -> TcpState {
        TcpState {
            by_relay: HashMap::with_hasher(FixedState::with_seed(seed)),
            connections: HashMap::with_hasher(FixedState::with_seed(seed.rotate_left(23))),
            commands: VecDeque::new(),
            transmits: VecDeque::new(),
            tag: 0,
        }
    }
}

struct PeerConnection {
    /// The index of the allocation; valid as long as the connection is known, since deleting
    /// the allocation forgets its connections.
    allocation: usize,
    peer: SocketAddr,
    state: LinkState,
}

enum LinkState {
    /// A [`Command::Connect`] is out; the Connect is answered when it ends.
    Connecting {
        deadline: Instant,
        answer: Box<ConnectAnswer>,
    },
    /// Established; waiting for its ConnectionBind.
    Unbound { deadline: Instant },
    /// Spliced with a client data connection.
    Bound,
}

/// What a deferred Connect answer needs of its request: where it goes, its transaction, and
/// how to sign it.
struct ConnectAnswer {
    client: FiveTuple,
    transaction_id: TransactionId,
    key: IntegrityKey,
    algorithm: IntegrityAlgorithm,
    fingerprint: bool,
}

/// A message owed to a control connection, written when the driver polls for it.
enum Pending {
    Connect {
        answer: Box<ConnectAnswer>,
        result: Result<ConnectionId, ErrorCode>,
    },
    ConnectionAttempt {
        client: FiveTuple,
        id: ConnectionId,
        peer: SocketAddr,
    },
}

impl Pending {
    fn client(&self) -> FiveTuple {
        match self {
            Pending::Connect { answer, .. } => answer.client,
            Pending::ConnectionAttempt { client, .. } => *client,
        }
    }
}

impl TurnServer {
    /// Sets the top 8 bits of every connection id this core issues from now on. A driver with
    /// several workers gives each core its own tag, so that a ConnectionBind that reaches
    /// another worker can be moved to the right one ([`connection_id_tag`]). 0 by default.
    pub fn set_connection_id_tag(&mut self, tag: u8) {
        self.tcp.tag = tag;
    }

    /// The next socket command, if any; drain after every other call.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.tcp.commands.pop_front()
    }

    /// Writes the next message owed to a client's control connection into `out` (1500 bytes
    /// always suffice), if any: a Connect answer, signed with the key of its request, or a
    /// ConnectionAttempt indication. Drain after every other call, and send each in order.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<Transmit> {
        while let Some(pending) = self.tcp.transmits.pop_front() {
            let client = pending.client();
            if let Ok(len) = self.write_pending(pending, out) {
                return Some(Transmit { client, len });
            }
        }
        None
    }

    /// Peer connections this core knows: connecting, waiting for their ConnectionBind, or
    /// bound.
    pub fn peer_connection_count(&self) -> usize {
        self.tcp.connections.len()
    }

    /// A peer connected to the listener `relay` from `peer`; the driver has accepted the
    /// connection and reads nothing from it yet. `Some(id)`: keep it under `id`, a
    /// ConnectionAttempt indication is queued for the client ([`poll_transmit`]). `None`: close
    /// it, for no allocation listens there, the peer has no permission (RFC 6062 §5.3), the
    /// policy denies it, or the allocation has all the connections it may.
    ///
    /// [`poll_transmit`]: TurnServer::poll_transmit
    pub fn accept_peer_connection(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> Option<ConnectionId> {
        // A dual-stack socket reports IPv4 addresses mapped into IPv6.
        let relay = SocketAddr::new(relay.ip().to_canonical(), relay.port());
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let &index = self.tcp.by_relay.get(&relay)?;
        let allocation = self.allocations.get(index)?.as_ref()?;
        if allocation.tcp.is_none()
            || allocation.expires <= now
            || allocation.relay_for(peer) != Some(relay)
        {
            return None;
        }
        // The whole address is judged, not only the IP a permission names: a connection from
        // one of the server's own addresses is another allocation only from a relay port.
        self.check_peer(index, peer).ok()?;
        let allocation = self.allocations.get(index)?.as_ref()?;
        let tcp = allocation.tcp.as_ref()?;
        let five_tuple = allocation.five_tuple;
        if !allocation.permits(peer.ip(), now)
            || tcp.connections.len() >= self.config.max_tcp_connections
            || tcp.connections.iter().any(|&(_, p)| p == peer)
        {
            return None;
        }
        let id = self.new_connection_id()?;
        self.add_connection(
            id,
            index,
            peer,
            LinkState::Unbound {
                deadline: now + CONNECTION_BIND_TIMEOUT,
            },
        );
        self.tcp.transmits.push_back(Pending::ConnectionAttempt {
            client: five_tuple,
            id,
            peer,
        });
        self.events.push_back(Event::PeerConnectionOpened {
            five_tuple,
            id,
            peer,
            outgoing: false,
        });
        Some(id)
    }

    /// The connection of [`Command::Connect`] `id` is established: the Connect is answered
    /// with its CONNECTION-ID ([`poll_transmit`](TurnServer::poll_transmit)) and the connection
    /// waits for its ConnectionBind. An id the core no longer knows (it gave up on it) is
    /// commanded closed.
    pub fn peer_connected(&mut self, now: Instant, id: ConnectionId) {
        let Some(connection) = self.tcp.connections.get_mut(&id) else {
            self.tcp.commands.push_back(Command::Close { id });
            return;
        };
        if !matches!(connection.state, LinkState::Connecting { .. }) {
            return;
        }
        let unbound = LinkState::Unbound {
            deadline: now + CONNECTION_BIND_TIMEOUT,
        };
        let LinkState::Connecting { answer, .. } =
            core::mem::replace(&mut connection.state, unbound)
        else {
            return;
        };
        let (five_tuple, peer) = (answer.client, connection.peer);
        self.answer_connect(answer, Ok(id));
        self.events.push_back(Event::PeerConnectionOpened {
            five_tuple,
            id,
            peer,
            outgoing: true,
        });
    }

    /// The connection of [`Command::Connect`] `id` failed (refused, unreachable, or the
    /// driver's own timeout): the Connect is answered 447 (RFC 6062 §5.2). The driver has
    /// closed its socket.
    pub fn peer_connect_failed(&mut self, id: ConnectionId) {
        if self
            .tcp
            .connections
            .get(&id)
            .is_some_and(|c| matches!(c.state, LinkState::Connecting { .. }))
        {
            self.end_connection(id, PeerCloseReason::Closed);
        }
    }

    /// Peer connection `id` or the client data connection bound to it ended, and the driver
    /// has closed both: the core forgets it (RFC 6062 §5.5). During a Connect this is a
    /// failure, answered 447.
    pub fn peer_connection_closed(&mut self, id: ConnectionId) {
        self.end_connection(id, PeerCloseReason::Closed);
    }

    /// Connect (RFC 6062 §5.2) on the TCP allocation `index`: the peer passes the same checks
    /// as a CreatePermission's, must hold a permission, and must have no connection yet; then
    /// the driver is told to connect and the answer comes when it reports.
    pub(crate) fn connect(
        &mut self,
        now: Instant,
        index: usize,
        message: &Message<'_>,
        out: &mut [u8],
        auth: &Authenticated,
    ) -> ClientAction {
        let signer = Some(auth);
        let is_tcp = self.allocations[index]
            .as_ref()
            .is_some_and(|a| a.tcp.is_some());
        let peer = match message.get::<XorPeerAddress>() {
            Ok(Some(XorPeerAddress(peer))) if is_tcp => peer,
            _ => return self.error(out, message, ErrorCode::BAD_REQUEST, signer),
        };
        if let Err(code) = self.check_peer(index, peer) {
            return self.error(out, message, code, signer);
        }
        let Some(allocation) = self.allocations[index].as_ref() else {
            return ClientAction::Drop;
        };
        let Some(tcp) = allocation.tcp.as_ref() else {
            return ClientAction::Drop;
        };
        let (relay, client) = (allocation.relay.local, allocation.five_tuple);
        // Stricter than RFC 6062, which requires a permission only of a peer connecting in
        // (§5.3): data never flows to a peer the client has not permitted, as for UDP. Clients
        // create the permission first (pion's, coturn's uclient).
        let code = if !allocation.permits(peer.ip(), now) {
            Some(ErrorCode::FORBIDDEN)
        } else if tcp.connections.iter().any(|&(_, p)| p == peer) {
            Some(ErrorCode::CONNECTION_ALREADY_EXISTS)
        } else if tcp.connections.len() >= self.config.max_tcp_connections {
            Some(ErrorCode::INSUFFICIENT_CAPACITY)
        } else {
            None
        };
        if let Some(code) = code {
            return self.error(out, message, code, signer);
        }
        let Some(id) = self.new_connection_id() else {
            return self.error(out, message, ErrorCode::INSUFFICIENT_CAPACITY, signer);
        };
        let answer = Box::new(ConnectAnswer {
            client,
            transaction_id: message.transaction_id(),
            key: auth.key.clone(),
            algorithm: auth.algorithm,
            fingerprint: message.fingerprint_offset().is_some(),
        });
        self.add_connection(
            id,
            index,
            peer,
            LinkState::Connecting {
                deadline: now + CONNECT_TIMEOUT,
                answer,
            },
        );
        self.tcp
            .commands
            .push_back(Command::Connect { id, relay, peer });
        // Answered when the driver reports, or at the timeout.
        ClientAction::Drop
    }

    /// ConnectionBind (RFC 6062 §5.4), on a new TCP or TLS connection that holds no
    /// allocation: authenticated as the user of the allocation whose connection it names, it
    /// turns the connection into that peer connection's data connection.
    pub(crate) fn connection_bind(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        message: &Message<'_>,
        out: &mut [u8],
    ) -> ClientAction {
        if !five_tuple.transport.is_stream() || self.by_five_tuple.contains_key(&five_tuple) {
            return self.error(out, message, ErrorCode::BAD_REQUEST, None);
        }
        let Ok(Some(id)) = message.get::<ConnectionId>() else {
            return self.error(out, message, ErrorCode::BAD_REQUEST, None);
        };
        // Unknown, still connecting, bound already, or past its time: 400 (RFC 6062 §5.4).
        // Before authentication, as a request on a 5-tuple without allocation is answered
        // 437: there is nothing to authenticate against, and no HMAC is spent on a stranger.
        let bindable = self
            .tcp
            .connections
            .get(&id)
            .filter(|c| matches!(c.state, LinkState::Unbound { deadline } if deadline > now))
            .and_then(|c| Some((c.allocation, self.allocations.get(c.allocation)?.as_ref()?)))
            .filter(|(_, a)| a.expires > now)
            .map(|(index, a)| (index, a.five_tuple.client));
        let Some((index, control)) = bindable else {
            return self.error(out, message, ErrorCode::BAD_REQUEST, None);
        };
        // The client may sign with the nonce of its control connection (pion's client does,
        // and retries no 438), which this server bound to that connection's address: accept
        // it as that address's. The MAC still needs the user's key.
        let unix_now = self.unix_now(now);
        let nonce_owner = if !self.auth.nonce_names(message, five_tuple.client, unix_now)
            && self.auth.nonce_names(message, control, unix_now)
        {
            control
        } else {
            five_tuple.client
        };
        let as_seen = FiveTuple {
            client: nonce_owner,
            ..five_tuple
        };
        let auth = match self.authenticate(now, as_seen, message) {
            Ok(auth) => auth,
            Err(failure) => return self.auth_error(now, five_tuple, message, out, failure),
        };
        let signer = Some(&auth);
        let Some(allocation) = self.allocations[index].as_ref() else {
            return ClientAction::Drop;
        };
        // "The same method and credentials as for the control connection" (RFC 6062 §4.3).
        if allocation.username != auth.username {
            return self.error(out, message, ErrorCode::WRONG_CREDENTIALS, signer);
        }
        match self.respond(out, message, None, signer, |_| Ok(())) {
            ClientAction::Reply(len) => {
                if let Some(connection) = self.tcp.connections.get_mut(&id) {
                    connection.state = LinkState::Bound;
                }
                ClientAction::PipeToPeer { len, id }
            }
            other => other,
        }
    }

    /// Gives up on Connect attempts past [`CONNECT_TIMEOUT`] (447) and closes peer connections
    /// not bound within [`CONNECTION_BIND_TIMEOUT`].
    pub(crate) fn sweep_peer_connections(&mut self, now: Instant) {
        let due: Vec<ConnectionId> = self
            .tcp
            .connections
            .iter()
            .filter(|(_, c)| match c.state {
                LinkState::Connecting { deadline, .. } | LinkState::Unbound { deadline } => {
                    deadline <= now
                }
                LinkState::Bound => false,
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.tcp.commands.push_back(Command::Close { id });
            self.end_connection(id, PeerCloseReason::NotBound);
        }
    }

    /// Ends the TCP side of an allocation being deleted: its connections are commanded closed
    /// (RFC 6062 §5.5), Connects still in progress answered 447 unless the control connection
    /// is gone, and its listener released.
    pub(crate) fn end_tcp_allocation(
        &mut self,
        allocation: &Allocation,
        reason: DeleteReason,
        sockets: &mut dyn RelaySockets,
    ) {
        let five_tuple = allocation.five_tuple;
        let client_gone = reason == DeleteReason::ConnectionClosed;
        for &(id, peer) in allocation.tcp.iter().flat_map(|t| &t.connections) {
            let Some(connection) = self.tcp.connections.remove(&id) else {
                continue;
            };
            self.tcp.commands.push_back(Command::Close { id });
            match connection.state {
                LinkState::Connecting { answer, .. } => {
                    if !client_gone {
                        self.answer_connect(answer, Err(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE));
                    }
                }
                LinkState::Unbound { .. } | LinkState::Bound => {
                    self.events.push_back(Event::PeerConnectionClosed {
                        five_tuple,
                        id,
                        peer,
                        reason: PeerCloseReason::AllocationEnded,
                    });
                }
            }
        }
        if client_gone {
            self.tcp.transmits.retain(|t| t.client() != five_tuple);
        }
        self.tcp.by_relay.remove(&allocation.relay.local);
        sockets.release_tcp(allocation.relay.local);
    }

    /// After the peer policy changed: closes the connections to peers it now denies.
    pub(crate) fn close_denied_peer_connections(&mut self) {
        let policy = &self.config.peer_policy;
        let denied: Vec<ConnectionId> = self
            .tcp
            .connections
            .iter()
            .filter(|(_, c)| policy.check(c.peer).is_err())
            .map(|(&id, _)| id)
            .collect();
        for id in denied {
            self.tcp.commands.push_back(Command::Close { id });
            self.end_connection(id, PeerCloseReason::PeerDenied);
        }
    }

    /// Forgets connection `id`: a Connect in progress is answered 447, an established
    /// connection reported closed for `reason`.
    fn end_connection(&mut self, id: ConnectionId, reason: PeerCloseReason) {
        let Some(connection) = self.tcp.connections.remove(&id) else {
            return;
        };
        let allocation = self
            .allocations
            .get_mut(connection.allocation)
            .and_then(Option::as_mut);
        let mut five_tuple = None;
        if let Some(allocation) = allocation {
            five_tuple = Some(allocation.five_tuple);
            if let Some(tcp) = allocation.tcp.as_mut() {
                tcp.connections.retain(|&(c, _)| c != id);
            }
        }
        match connection.state {
            LinkState::Connecting { answer, .. } => {
                self.answer_connect(answer, Err(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE));
            }
            LinkState::Unbound { .. } | LinkState::Bound => {
                if let Some(five_tuple) = five_tuple {
                    self.events.push_back(Event::PeerConnectionClosed {
                        five_tuple,
                        id,
                        peer: connection.peer,
                        reason,
                    });
                }
            }
        }
    }

    fn add_connection(
        &mut self,
        id: ConnectionId,
        index: usize,
        peer: SocketAddr,
        state: LinkState,
    ) {
        if let Some(tcp) = self.allocations[index]
            .as_mut()
            .and_then(|a| a.tcp.as_mut())
        {
            tcp.connections.push((id, peer));
        }
        self.tcp.connections.insert(
            id,
            PeerConnection {
                allocation: index,
                peer,
                state,
            },
        );
    }

    /// Queues the answer to a Connect and counts it.
    fn answer_connect(
        &mut self,
        answer: Box<ConnectAnswer>,
        result: Result<ConnectionId, ErrorCode>,
    ) {
        self.events.push_back(Event::Answered {
            method: Method::CONNECT,
            error: result.err(),
        });
        self.tcp
            .transmits
            .push_back(Pending::Connect { answer, result });
    }

    /// A connection id no live connection of this core has: 24 random bits under the tag.
    fn new_connection_id(&mut self) -> Option<ConnectionId> {
        let tag = u32::from(self.tcp.tag) << 24;
        for _ in 0..ID_TRIES {
            let id = ConnectionId(tag | (self.rng.next_u32() & ID_RANDOM_BITS));
            if !self.tcp.connections.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn write_pending(&mut self, pending: Pending, out: &mut [u8]) -> Result<usize, WriteError> {
        match pending {
            Pending::Connect { answer, result } => {
                let (class, error) = match result {
                    Ok(_) => (Class::Success, None),
                    Err(code) => (Class::Error, Some(code)),
                };
                self.write_response(
                    out,
                    MessageType::new(Method::CONNECT, class),
                    answer.transaction_id,
                    error,
                    Some((&answer.key, answer.algorithm)),
                    answer.fingerprint,
                    |w| match result {
                        Ok(id) => w.add(&id),
                        Err(_) => Ok(()),
                    },
                )
            }
            // Unsigned, as indications are (RFC 8656 §5), like a Data indication.
            Pending::ConnectionAttempt { id, peer, .. } => {
                let mut tid = [0u8; 12];
                self.rng.fill_bytes(&mut tid);
                let indication = MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication);
                let mut w = MessageWriter::new(out, indication, TransactionId::new(tid))?;
                w.add(&XorPeerAddress(peer))?;
                w.add(&id)?;
                Ok(w.finish())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use icebreaker_wire::attr::Lifetime;

    use super::*;

    fn message(method: Method, class: Class, id: Option<u32>) -> Vec<u8> {
        let mut buf = vec![0u8; 128];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(method, class),
            TransactionId::new([3; 12]),
        )
        .expect("fits");
        if let Some(id) = id {
            w.add(&ConnectionId(id)).expect("fits");
        }
        w.add(&Lifetime(1)).expect("fits");
        let len = w.finish();
        buf.truncate(len);
        buf
    }

    #[test]
    fn connection_bind_id_reads_only_connection_bind_requests() {
        let bind = message(Method::CONNECTION_BIND, Class::Request, Some(0x0712_3456));
        assert_eq!(connection_bind_id(&bind), Some(ConnectionId(0x0712_3456)));
        assert_eq!(connection_id_tag(ConnectionId(0x0712_3456)), 7);
        for other in [
            message(Method::CONNECTION_BIND, Class::Request, None),
            message(Method::CONNECTION_BIND, Class::Indication, Some(1)),
            message(Method::CONNECT, Class::Request, Some(1)),
            message(Method::ALLOCATE, Class::Request, Some(1)),
        ] {
            assert_eq!(connection_bind_id(&other), None);
        }
        assert_eq!(
            connection_bind_id(&bind[..bind.len() - 1]),
            None,
            "truncated"
        );
        assert_eq!(connection_bind_id(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(connection_bind_id(&[]), None);
    }

    #[test]
    fn reasons_have_distinct_names() {
        let names: Vec<&str> = PeerCloseReason::ALL.iter().map(|r| r.as_str()).collect();
        for (i, a) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(a), "{a} twice");
        }
        assert_eq!(PeerCloseReason::NotBound.to_string(), "not_bound");
    }
}
