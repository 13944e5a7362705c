//! The TURN core: state, dispatch, the relay paths in both directions, and expiry.

use core::net::SocketAddr;
use core::ops::Range;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::FixedState;
use icebreaker_wire::attr::{AttrType, ConnectionId, Data, XorPeerAddress};
use icebreaker_wire::{
    ChannelData, Class, ErrorCode, Message, MessageType, MessageWriter, Method, TransactionId,
    Transport, write_channel_data_header,
};
use rand_core::RngCore;

use crate::allocation::Allocation;
use crate::auth::{AuthFailure, Authenticator, Throttle};
use crate::policy::DenyReason;
use crate::ports::RelaySockets;
use crate::tcp::{PeerCloseReason, TcpState};
use crate::{ClientTransport, FiveTuple, Quotas, TurnConfig};

/// What to do with a packet from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// Nothing now: the packet was dropped or needs no answer, or (a Connect, RFC 6062) is
    /// answered later through [`TurnServer::poll_transmit`].
    Drop,
    /// Send the first `n` bytes of the output buffer back to the client on the same 5-tuple.
    Reply(usize),
    /// Close the client's connection: a TCP, TLS or DTLS client that keeps failing
    /// authentication. Over UDP such a request is dropped and the sender's retransmissions
    /// wait out the throttle; a connection would only hang, so it is ended instead.
    Close,
    /// Send the first `len` bytes of the output buffer (a ConnectionBind success) back on
    /// this connection, then stop reading STUN from it: from now on it is the client data
    /// connection of peer connection `id`, a raw byte pipe in both directions, starting with
    /// whatever the peer sent before (RFC 6062 §5.4), and on the client's side with any bytes
    /// that followed the request in the stream. Report its end, or the peer's, with
    /// [`TurnServer::peer_connection_closed`].
    PipeToPeer {
        /// The length of the response.
        len: usize,
        /// The peer connection to pipe to.
        id: ConnectionId,
    },
    /// Send `packet[range]` from the relay socket `relay` to `peer`.
    Relay {
        /// The allocation's relay socket address of the peer's family.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The data within the client's packet.
        range: Range<usize>,
        /// Set the DF bit on the relayed datagram (DONT-FRAGMENT, RFC 8656 §18.9).
        dont_fragment: bool,
    },
}

/// What to do with a datagram a peer sent to a relay socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAction {
    /// Nothing: no allocation, no permission, or over the bandwidth budget.
    Drop,
    /// Send `buf[range]` to the client: the core wrote a ChannelData header in front of the
    /// data (and padding after it on a stream), in place.
    ForwardInPlace {
        /// The client's 5-tuple.
        client: FiveTuple,
        /// The ChannelData message within the buffer.
        range: Range<usize>,
    },
    /// Send the first `len` bytes of the output buffer to the client: a Data indication, or
    /// ChannelData when the buffer had no headroom.
    Forward {
        /// The client's 5-tuple.
        client: FiveTuple,
        /// Its length.
        len: usize,
    },
}

/// Why an allocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeleteReason {
    /// A Refresh with LIFETIME 0.
    Refresh,
    /// Its lifetime ran out.
    Expired,
    /// The client's TCP or TLS connection closed: its 5-tuple is gone (RFC 8656 §3.1).
    ConnectionClosed,
}

/// Something that happened, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request was answered, with success (`error` is `None`) or an error code.
    Answered {
        /// The request's method.
        method: Method,
        /// The error code, if it failed.
        error: Option<ErrorCode>,
    },
    /// An allocation was created.
    AllocationCreated {
        /// Its 5-tuple.
        five_tuple: FiveTuple,
        /// Its relay socket address: the IPv4 one of a dual allocation.
        relay: SocketAddr,
        /// The user who made it.
        username: Box<str>,
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// An allocation was refreshed.
    AllocationRefreshed {
        /// Its 5-tuple.
        five_tuple: FiveTuple,
        /// Its relay socket address: the IPv4 one of a dual allocation.
        relay: SocketAddr,
        /// The new lifetime.
        lifetime: Duration,
    },
    /// An allocation ended and its relay ports were released.
    AllocationDeleted {
        /// Its 5-tuple.
        five_tuple: FiveTuple,
        /// Its relay socket address: the IPv4 one of a dual allocation.
        relay: SocketAddr,
        /// Why.
        reason: DeleteReason,
    },
    /// A peer was refused by the peer address policy.
    PeerDenied {
        /// The client that asked.
        five_tuple: FiveTuple,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: DenyReason,
    },
    /// A request failed authentication.
    AuthFailed {
        /// The client.
        five_tuple: FiveTuple,
        /// Why.
        reason: AuthFailure,
    },
    /// A TCP connection between the relayed address of a TCP allocation and a peer was
    /// established (RFC 6062): the server's own for a Connect (`outgoing`), or the peer's,
    /// accepted. It waits up to 30 s for its ConnectionBind.
    PeerConnectionOpened {
        /// The allocation's 5-tuple: its control connection.
        five_tuple: FiveTuple,
        /// The connection.
        id: ConnectionId,
        /// The peer.
        peer: SocketAddr,
        /// Opened by the server for a Connect, rather than by the peer.
        outgoing: bool,
    },
    /// A peer connection of a TCP allocation ended; the core has forgotten it.
    PeerConnectionClosed {
        /// The allocation's 5-tuple: its control connection.
        five_tuple: FiveTuple,
        /// The connection.
        id: ConnectionId,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: PeerCloseReason,
    },
}

/// The headroom a driver must leave in front of peer data for the core to write a ChannelData
/// header in place.
pub const PEER_HEADROOM: usize = 4;

/// How often expired state is swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Number of buckets of each throttle: a few kilobytes, whatever the number of sources.
const THROTTLE_BUCKETS: usize = 4096;

/// The sans-IO TURN core of one worker. See the crate documentation for the call order.
pub struct TurnServer {
    pub(crate) config: TurnConfig,
    pub(crate) auth: Authenticator,
    pub(crate) quotas: Arc<Quotas>,
    pub(crate) rng: Box<dyn RngCore + Send>,
    epoch: (Instant, u64),
    pub(crate) allocations: Vec<Option<Allocation>>,
    free_slots: Vec<usize>,
    pub(crate) by_five_tuple: HashMap<FiveTuple, usize, FixedState>,
    pub(crate) by_relay: HashMap<SocketAddr, usize, FixedState>,
    pub(crate) events: VecDeque<Event>,
    challenges: Throttle,
    failures: Throttle,
    next_sweep: Option<Instant>,
    pub(crate) draining: bool,
    /// The next of `alternate_servers` to redirect to, per family of the address the client
    /// reached (IPv4, IPv6).
    pub(crate) next_alternate: [usize; 2],
    /// TCP allocations' listeners, peer connections and deferred output (RFC 6062).
    pub(crate) tcp: TcpState,
}

impl TurnServer {
    /// A core with `config`, sharing `quotas` with the other workers, drawing randomness from
    /// `rng`. `now` and `unix_now` anchor the monotonic clock to Unix time, which TURN REST
    /// credentials and nonces are written in.
    pub fn new(
        config: TurnConfig,
        quotas: Arc<Quotas>,
        mut rng: Box<dyn RngCore + Send>,
        now: Instant,
        unix_now: u64,
    ) -> TurnServer {
        let hash_seed = rng.next_u64();
        let throttle_seed = rng.next_u64();
        let auth = authenticator(&config);
        TurnServer {
            challenges: Throttle::new(
                THROTTLE_BUCKETS,
                config.challenge_rate,
                config.challenge_rate * 2.0,
                throttle_seed,
            ),
            failures: Throttle::new(
                THROTTLE_BUCKETS,
                config.auth_failure_rate,
                config.auth_failure_rate * 4.0,
                throttle_seed.rotate_left(32),
            ),
            config,
            auth,
            quotas,
            rng,
            epoch: (now, unix_now),
            allocations: Vec::new(),
            free_slots: Vec::new(),
            by_five_tuple: HashMap::with_hasher(FixedState::with_seed(hash_seed)),
            by_relay: HashMap::with_hasher(FixedState::with_seed(hash_seed.rotate_left(17))),
            events: VecDeque::new(),
            next_sweep: None,
            draining: false,
            next_alternate: [0; 2],
            tcp: TcpState::new(hash_seed.rotate_left(41)),
        }
    }

    /// Replaces users, secrets, peer policy and limits, keeping every allocation (SIGHUP).
    /// Permissions to peers the new policy denies are withdrawn at once, and TCP connections
    /// to them closed ([`poll_command`](TurnServer::poll_command)). The nonce secret and realm
    /// are kept: changing them would invalidate every client's nonce.
    pub fn reconfigure(&mut self, mut config: TurnConfig, now: Instant) {
        config.nonce_secret = self.config.nonce_secret;
        config.realm = self.config.realm.clone();
        self.auth = authenticator(&config);
        self.config = config;
        let policy = &self.config.peer_policy;
        // A permission names an IP only; judge it on a relay port, where another allocation of
        // this server would be. The data path still checks ports of the server's own IPs.
        let relay_port = *policy.relay_ports.start();
        for allocation in self.allocations.iter_mut().flatten() {
            allocation
                .permissions
                .retain(|&(ip, _)| policy.check(SocketAddr::new(ip, relay_port)).is_ok());
            allocation.channels.retain(|c| policy.check(c.peer).is_ok());
            allocation.sweep(now);
        }
        self.close_denied_peer_connections();
    }

    /// Stops granting new allocations (answered with 508, or 300 towards one of
    /// `alternate_servers` when there are any); existing ones keep being served.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether `five_tuple` holds an allocation.
    pub fn has_allocation(&self, five_tuple: &FiveTuple) -> bool {
        self.by_five_tuple.contains_key(five_tuple)
    }

    /// The client's stream connection closed: its allocation, if any, is deleted and its relay
    /// port released, since no later request can arrive on that 5-tuple. The connections of a
    /// TCP allocation are closed too ([`poll_command`](TurnServer::poll_command)). A client
    /// data connection (after [`ClientAction::PipeToPeer`]) is reported with
    /// [`peer_connection_closed`](TurnServer::peer_connection_closed) instead.
    pub fn connection_closed(&mut self, five_tuple: &FiveTuple, sockets: &mut dyn RelaySockets) {
        if let Some(&index) = self.by_five_tuple.get(five_tuple) {
            self.delete(index, DeleteReason::ConnectionClosed, sockets);
        }
    }

    /// Allocations held by this core.
    pub fn allocation_count(&self) -> usize {
        self.by_five_tuple.len()
    }

    /// Relay ports bound by this core: one per allocation, two per dual allocation, UDP
    /// sockets and TCP listeners together.
    pub fn relay_ports_in_use(&self) -> usize {
        self.by_relay.len() + self.tcp.by_relay.len()
    }

    /// The earliest time [`handle_timeout`](TurnServer::handle_timeout) must be called again;
    /// changes after every other call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// The next event, if any; drain after every other call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn unix_now(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch.0).as_millis() as u64
    }

    pub(crate) fn schedule_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    /// Handles one packet from a client: a STUN request or indication, or ChannelData. `out`
    /// receives any answer; 1500 bytes always suffice for UDP.
    pub fn handle_client(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        packet: &[u8],
        out: &mut [u8],
        sockets: &mut dyn RelaySockets,
    ) -> ClientAction {
        if packet.first().is_some_and(|b| b >> 6 == 0b01) {
            return self.channel_data_from_client(now, five_tuple, packet);
        }
        let Ok(message) = Message::parse(packet) else {
            return ClientAction::Drop;
        };
        if message.fingerprint_offset().is_some() && message.verify_fingerprint().is_err() {
            return ClientAction::Drop;
        }
        match (message.class(), message.method()) {
            (Class::Indication, Method::SEND) => {
                self.send_indication(now, five_tuple, &message, packet)
            }
            (Class::Request, method) => {
                let action = self.request(now, five_tuple, &message, out, sockets);
                if let ClientAction::Reply(len) | ClientAction::PipeToPeer { len, .. } = action {
                    let error = Message::parse(&out[..len]).ok().and_then(|m| {
                        m.get::<icebreaker_wire::attr::ErrorCodeAttribute>()
                            .ok()
                            .flatten()
                            .map(|e| e.code)
                    });
                    self.events.push_back(Event::Answered { method, error });
                }
                action
            }
            _ => ClientAction::Drop,
        }
    }

    /// Records an authentication failure and applies the throttles: a stranger's first request
    /// is answered at most `challenge_rate` times a second per source, and a source that keeps
    /// failing is ignored for a while.
    pub(crate) fn authenticate(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        message: &Message<'_>,
    ) -> Result<crate::auth::Authenticated, AuthFailure> {
        let (ms, ip) = (self.millis(now), five_tuple.client.ip());
        let result = if self.failures.has(ip, ms) {
            self.auth
                .authenticate(message, five_tuple.client, self.unix_now(now))
        } else {
            Err(AuthFailure::Throttled)
        };
        // The challenge throttle keeps a spoofed source from turning the server into a
        // reflector; a handshake already proved a connection's source, so it is not needed
        // there, and dropping would leave a client that never retransmits waiting.
        let source_verified = five_tuple.transport != ClientTransport::Udp;
        let failure = match result {
            Ok(authenticated) => return Ok(authenticated),
            Err(AuthFailure::MissingIntegrity)
                if !source_verified && !self.challenges.take(ip, ms) =>
            {
                AuthFailure::Throttled
            }
            Err(
                failure @ (AuthFailure::BadIntegrity
                | AuthFailure::UnknownUser
                | AuthFailure::Expired
                | AuthFailure::WrongRealm),
            ) => {
                self.failures.take(ip, ms);
                failure
            }
            Err(failure) => failure,
        };
        self.events.push_back(Event::AuthFailed {
            five_tuple,
            reason: failure,
        });
        Err(failure)
    }

    fn send_indication(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        message: &Message<'_>,
        packet: &[u8],
    ) -> ClientAction {
        let Some(&index) = self.by_five_tuple.get(&five_tuple) else {
            return ClientAction::Drop;
        };
        // A TCP allocation relays over its connections only (RFC 6062): its relayed address
        // is a listener, which sends no datagram.
        if self.allocations[index]
            .as_ref()
            .is_none_or(|a| a.tcp.is_some())
        {
            return ClientAction::Drop;
        }
        let (Ok(Some(XorPeerAddress(peer))), Some(data)) =
            (message.get::<XorPeerAddress>(), message.raw(AttrType::DATA))
        else {
            return ClientAction::Drop;
        };
        let dont_fragment = message.has(AttrType::DONT_FRAGMENT);
        let start = data.value.as_ptr() as usize - packet.as_ptr() as usize;
        let range = start..start + data.value.len();
        self.relay_to_peer(now, five_tuple, index, peer, range, dont_fragment)
    }

    fn channel_data_from_client(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        packet: &[u8],
    ) -> ClientAction {
        let Ok(channel_data) = ChannelData::parse_in(packet, self.config.channel_range) else {
            return ClientAction::Drop;
        };
        let Some(&index) = self.by_five_tuple.get(&five_tuple) else {
            return ClientAction::Drop;
        };
        let Some(allocation) = self.allocations[index].as_ref() else {
            return ClientAction::Drop;
        };
        let Some(peer) = allocation
            .channel(channel_data.channel(), now)
            .map(|c| c.peer)
        else {
            return ClientAction::Drop;
        };
        let len = channel_data.data().len();
        self.relay_to_peer(now, five_tuple, index, peer, 4..4 + len, false)
    }

    fn relay_to_peer(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        index: usize,
        peer: SocketAddr,
        range: Range<usize>,
        dont_fragment: bool,
    ) -> ClientAction {
        let Some(allocation) = self.allocations[index].as_mut() else {
            return ClientAction::Drop;
        };
        if allocation.expires <= now {
            return ClientAction::Drop;
        }
        let Some(relay) = allocation.relay_for(peer) else {
            return ClientAction::Drop;
        };
        // Permissions match the IP only, so a permission for one of the server's own addresses
        // (another allocation's relayed address) must not open the server's other ports, nor
        // may another spelling of that address (`::ffff:a.b.c.d`, 6to4) slip past the check.
        let policy = &self.config.peer_policy;
        let own_address = policy.is_server_address(peer.ip());
        if own_address && let Err(reason) = policy.check(peer) {
            self.events.push_back(Event::PeerDenied {
                five_tuple,
                peer,
                reason,
            });
            return ClientAction::Drop;
        }
        if !allocation.permits(peer.ip(), now) {
            // Cold path: say why, if the policy is the reason.
            if let Err(reason) = self.config.peer_policy.check(peer) {
                self.events.push_back(Event::PeerDenied {
                    five_tuple,
                    peer,
                    reason,
                });
            }
            return ClientAction::Drop;
        }
        if !allocation.bandwidth.spend(range.len(), now) {
            return ClientAction::Drop;
        }
        ClientAction::Relay {
            relay,
            peer,
            range,
            dont_fragment: dont_fragment || allocation.dont_fragment,
        }
    }

    /// Handles one datagram that `peer` sent to the relay socket `relay`, either one of a dual
    /// allocation's; the data is `buf[data]`. With [`PEER_HEADROOM`] bytes free before the data
    /// (and 3 after it, for a stream client), a channel's ChannelData is written in place;
    /// otherwise, and for Data indications, the message is written into `out`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        data: Range<usize>,
        out: &mut [u8],
    ) -> PeerAction {
        let Some(&index) = self.by_relay.get(&relay) else {
            return PeerAction::Drop;
        };
        let Some(allocation) = self.allocations[index].as_mut() else {
            return PeerAction::Drop;
        };
        // An allocation past its lifetime relays nothing, even before the sweep removes it.
        if allocation.expires <= now
            || data.start > data.end
            || data.end > buf.len()
            || !allocation.permits(peer.ip(), now)
        {
            return PeerAction::Drop;
        }
        if !allocation.bandwidth.spend(data.len(), now) {
            return PeerAction::Drop;
        }
        let client = allocation.five_tuple;
        let transport = if client.transport.is_stream() {
            Transport::Stream
        } else {
            Transport::Datagram
        };
        if let Some(channel) = allocation.channel_to(peer, now).map(|c| c.number) {
            if data.start >= PEER_HEADROOM {
                let start = data.start - PEER_HEADROOM;
                if let Ok(len) =
                    write_channel_data_header(&mut buf[start..], channel, data.len(), transport)
                {
                    return PeerAction::ForwardInPlace {
                        client,
                        range: start..start + len,
                    };
                }
            }
            let payload_len = data.len();
            if out.len() >= PEER_HEADROOM + payload_len {
                out[PEER_HEADROOM..PEER_HEADROOM + payload_len].copy_from_slice(&buf[data]);
                if let Ok(len) = write_channel_data_header(out, channel, payload_len, transport) {
                    return PeerAction::Forward { client, len };
                }
            }
            return PeerAction::Drop;
        }
        let mut tid = [0u8; 12];
        self.rng.fill_bytes(&mut tid);
        let indication = MessageType::new(Method::DATA, Class::Indication);
        let written =
            MessageWriter::new(out, indication, TransactionId::new(tid)).and_then(|mut w| {
                w.add(&XorPeerAddress(peer))?;
                w.add(&Data(&buf[data]))?;
                Ok(w.finish())
            });
        match written {
            Ok(len) => PeerAction::Forward { client, len },
            Err(_) => PeerAction::Drop,
        }
    }

    /// Expires allocations (releasing their relay ports), permissions and channels whose time
    /// has come, Connect attempts that took too long (answered 447) and peer connections
    /// never bound (closed).
    pub fn handle_timeout(&mut self, now: Instant, sockets: &mut dyn RelaySockets) {
        if self.next_sweep.is_some_and(|at| at > now) {
            return;
        }
        self.next_sweep = None;
        let expired: Vec<usize> = self
            .allocations
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().filter(|a| a.expires <= now).map(|_| i))
            .collect();
        for index in expired {
            self.delete(index, DeleteReason::Expired, sockets);
        }
        for allocation in self.allocations.iter_mut().flatten() {
            allocation.sweep(now);
        }
        self.sweep_peer_connections(now);
        if !self.by_five_tuple.is_empty() {
            self.schedule_sweep(now);
        }
    }

    pub(crate) fn insert(&mut self, allocation: Allocation) -> usize {
        let five_tuple = allocation.five_tuple;
        let relays = allocation.relays();
        let tcp = allocation.tcp.is_some();
        let index = match self.free_slots.pop() {
            Some(index) => {
                self.allocations[index] = Some(allocation);
                index
            }
            None => {
                self.allocations.push(Some(allocation));
                self.allocations.len() - 1
            }
        };
        self.by_five_tuple.insert(five_tuple, index);
        let by_relay = if tcp {
            &mut self.tcp.by_relay
        } else {
            &mut self.by_relay
        };
        for relay in relays {
            by_relay.insert(relay.local, index);
        }
        index
    }

    pub(crate) fn delete(
        &mut self,
        index: usize,
        reason: DeleteReason,
        sockets: &mut dyn RelaySockets,
    ) {
        let Some(allocation) = self.allocations.get_mut(index).and_then(Option::take) else {
            return;
        };
        self.free_slots.push(index);
        self.by_five_tuple.remove(&allocation.five_tuple);
        if allocation.tcp.is_some() {
            self.end_tcp_allocation(&allocation, reason, sockets);
        } else {
            for relay in allocation.relays() {
                self.by_relay.remove(&relay.local);
                sockets.release(relay.local);
            }
        }
        // One quota unit per allocation, however many relays it holds.
        self.quotas.release(&allocation.username);
        self.events.push_back(Event::AllocationDeleted {
            five_tuple: allocation.five_tuple,
            relay: allocation.relay.local,
            reason,
        });
    }
}

fn authenticator(config: &TurnConfig) -> Authenticator {
    Authenticator::new(
        &config.realm,
        &config.users,
        &config.rest_secrets,
        &config.nonce_secret,
        u32::try_from(config.nonce_lifetime.as_secs()).unwrap_or(u32::MAX),
    )
}
