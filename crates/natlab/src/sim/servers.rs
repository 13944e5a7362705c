//! The project's own server cores as simulated hosts: the STUN Binding service and the TURN
//! core, driven the way the daemon drives them.

use core::net::{IpAddr, SocketAddr};
use core::ops::RangeInclusive;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use icebreaker_stun::{
    AlternateAddress, BindingConfig, BindingService, ConfigError, MAX_REPLY_LEN,
};
use icebreaker_turn::{
    ClientAction, ClientTransport, Event, FiveTuple, PEER_HEADROOM, PeerAction, Quotas,
    RelaySockets, TurnConfig, TurnServer, UserCredential,
};
use icebreaker_wire::{Class, Message, MessageType, Method};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::{Datagram, Node};

/// The Unix time a simulation's start stands for, in the TURN core's nonces and TURN REST
/// credentials: 2027-01-15. Fixed, so that runs do not depend on the wall clock.
pub const SIM_UNIX_EPOCH: u64 = 1_800_000_000;

/// Allocations a simulated TURN server grants in total and per user: enough never to be the
/// limit a scenario hits by accident.
const MAX_ALLOCATIONS: u32 = 10_000;

/// Room for any answer of the TURN core over UDP (it needs 1500 bytes) and for a Data
/// indication around a large peer datagram.
const TURN_OUT_LEN: usize = 65_600;

/// A STUN server: [`BindingService`] answering Binding requests on its addresses. With
/// RFC 5780 it listens on the four addresses of the two IPs and two ports, and the host it
/// runs on must own both IPs ([`Network::add_ip`](super::Network::add_ip)).
#[derive(Debug)]
pub struct StunNode {
    /// `None` only if the default configuration were refused, which it cannot be; kept as an
    /// option so that the constructor has no panic path.
    service: Option<BindingService>,
    addresses: Vec<SocketAddr>,
    outbox: VecDeque<Datagram>,
    answered: u64,
    out: Vec<u8>,
}

impl StunNode {
    /// A plain STUN server on `listen`.
    pub fn new(listen: SocketAddr) -> StunNode {
        StunNode::build(
            BindingService::new(BindingConfig::default()).ok(),
            vec![listen],
        )
    }

    /// An RFC 5780 server on `primary` and `alternate` (another IP and another port) and
    /// their two crossings.
    pub fn rfc5780(primary: SocketAddr, alternate: SocketAddr) -> Result<StunNode, ConfigError> {
        StunNode::with_config(
            BindingConfig {
                software: None,
                rfc5780: Some(AlternateAddress { primary, alternate }),
            },
            primary,
        )
    }

    /// A server with `config`, on `listen`, or on the four RFC 5780 addresses when `config`
    /// has them.
    pub fn with_config(config: BindingConfig, listen: SocketAddr) -> Result<StunNode, ConfigError> {
        let service = BindingService::new(config)?;
        let mut addresses = service.rfc5780_addresses();
        if addresses.is_empty() {
            addresses.push(listen);
        }
        Ok(StunNode::build(Some(service), addresses))
    }

    fn build(service: Option<BindingService>, addresses: Vec<SocketAddr>) -> StunNode {
        StunNode {
            service,
            addresses,
            outbox: VecDeque::new(),
            answered: 0,
            out: vec![0; MAX_REPLY_LEN],
        }
    }

    /// The addresses it answers on.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The distinct IPs of those addresses, which its host must own.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for address in &self.addresses {
            if !ips.contains(&address.ip()) {
                ips.push(address.ip());
            }
        }
        ips
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }
}

impl Node for StunNode {
    fn handle_datagram(
        &mut self,
        _now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) {
        // Another port of the host is a closed port: nothing listens there.
        if !self.addresses.contains(&local) {
            return;
        }
        let Some(service) = &self.service else {
            return;
        };
        let Ok(request) = Message::parse(payload) else {
            return;
        };
        if let Some(reply) = service.handle(&request, local, remote, &mut self.out)
            && let Some(bytes) = self.out.get(..reply.len)
        {
            self.answered += 1;
            self.outbox.push_back(Datagram {
                local: reply.from,
                remote: reply.to,
                payload: bytes.to_vec(),
            });
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Relay sockets in the simulator: a port on the server's IP is bound when the core says so;
/// the host accepts every port, and the node only serves the bound ones.
#[derive(Debug, Default)]
struct SimSockets {
    bound: BTreeSet<SocketAddr>,
}

impl RelaySockets for SimSockets {
    fn bind(&mut self, addr: SocketAddr) -> bool {
        self.bound.insert(addr)
    }

    fn release(&mut self, addr: SocketAddr) {
        self.bound.remove(&addr);
    }
}

/// A TURN server over UDP: [`TurnServer`] for TURN, and a [`BindingService`] for Binding
/// requests on the same port, dispatched as the daemon's workers do.
///
/// The peer policy is the core's default with the listening IP added to the server
/// addresses. That default denies RFC 1918 and other special ranges but leaves the RFC 5737
/// documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) routable, which is
/// what simulated public hosts and NATs use, so nothing is allowed beyond it: an allow entry
/// would also exempt the server's own address from the server-address rule. Peers behind a
/// NAT are reached at the NAT's public address, never their private one. A scenario that
/// needs another policy passes its own [`TurnConfig`] to [`TurnNode::with_config`].
pub struct TurnNode {
    listen: SocketAddr,
    server: TurnServer,
    /// `None` only if the default configuration were refused, which it cannot be.
    binding: Option<BindingService>,
    sockets: SimSockets,
    outbox: VecDeque<Datagram>,
    events: Vec<Event>,
    out: Vec<u8>,
}

impl core::fmt::Debug for TurnNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TurnNode")
            .field("listen", &self.listen)
            .field("allocations", &self.server.allocation_count())
            .field("relays", &self.sockets.bound)
            .finish_non_exhaustive()
    }
}

impl TurnNode {
    /// A TURN server on `listen` for `realm`, with static `users` as (name, password),
    /// relaying on `relay_ports` of the listening IP, its randomness (nonce secret, relay
    /// ports, transaction IDs) seeded with `seed`, its clock anchored at `now`
    /// ([`SIM_UNIX_EPOCH`]).
    pub fn new(
        listen: SocketAddr,
        realm: &str,
        users: &[(&str, &str)],
        relay_ports: RangeInclusive<u16>,
        seed: u64,
        now: Instant,
    ) -> TurnNode {
        let mut config = TurnConfig::new(realm, relay_ports);
        config.users = users
            .iter()
            .map(|&(name, password)| (name.into(), UserCredential::Password(password.into())))
            .collect();
        TurnNode::with_config(listen, config, seed, now)
    }

    /// A TURN server on `listen` with `config`. An all-zero nonce secret is replaced by one
    /// drawn from `seed`; the listening IP is added to the policy's server addresses.
    pub fn with_config(
        listen: SocketAddr,
        mut config: TurnConfig,
        seed: u64,
        now: Instant,
    ) -> TurnNode {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if config.nonce_secret == [0; 32] {
            rng.fill_bytes(&mut config.nonce_secret);
        }
        if !config.peer_policy.server_addresses.contains(&listen.ip()) {
            config.peer_policy.server_addresses.push(listen.ip());
        }
        let quotas = Arc::new(Quotas::new(MAX_ALLOCATIONS, MAX_ALLOCATIONS));
        TurnNode {
            listen,
            server: TurnServer::new(config, quotas, Box::new(rng), now, SIM_UNIX_EPOCH),
            binding: BindingService::new(BindingConfig::default()).ok(),
            sockets: SimSockets::default(),
            outbox: VecDeque::new(),
            events: Vec::new(),
            out: vec![0; TURN_OUT_LEN],
        }
    }

    /// The listening address.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The TURN core, to look at.
    pub fn server(&self) -> &TurnServer {
        &self.server
    }

    /// The TURN core, to reconfigure or drain.
    pub fn server_mut(&mut self) -> &mut TurnServer {
        &mut self.server
    }

    /// The relay addresses bound now.
    pub fn relay_addresses(&self) -> Vec<SocketAddr> {
        self.sockets.bound.iter().copied().collect()
    }

    /// Every event the core reported so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Takes the events reported so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn push(&mut self, local: SocketAddr, remote: SocketAddr, payload: Option<&[u8]>) {
        if let Some(payload) = payload {
            self.outbox.push_back(Datagram {
                local,
                remote,
                payload: payload.to_vec(),
            });
        }
    }

    fn client_packet(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        packet: &[u8],
    ) {
        if is_binding_request(packet) {
            let Some(binding) = &self.binding else {
                return;
            };
            let Ok(request) = Message::parse(packet) else {
                return;
            };
            if let Some(reply) = binding.handle(&request, local, remote, &mut self.out) {
                let bytes = self.out.get(..reply.len).map(<[u8]>::to_vec);
                self.push(reply.from, reply.to, bytes.as_deref());
            }
            return;
        }
        let five_tuple = FiveTuple {
            client: remote,
            server: local,
            transport: ClientTransport::Udp,
        };
        match self
            .server
            .handle_client(now, five_tuple, packet, &mut self.out, &mut self.sockets)
        {
            // The simulated clients speak UDP, where nothing is ever closed and no connection
            // becomes a TCP allocation's data connection.
            ClientAction::Drop | ClientAction::Close | ClientAction::PipeToPeer { .. } => {}
            ClientAction::Reply(len) => {
                let bytes = self.out.get(..len).map(<[u8]>::to_vec);
                self.push(local, remote, bytes.as_deref());
            }
            ClientAction::Relay {
                relay, peer, range, ..
            } => self.push(relay, peer, packet.get(range)),
        }
    }

    fn peer_packet(&mut self, now: Instant, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        // Headroom in front for a ChannelData header written in place, as the daemon leaves.
        let mut buf = vec![0; PEER_HEADROOM + data.len() + 3];
        let range = PEER_HEADROOM..PEER_HEADROOM + data.len();
        if let Some(slot) = buf.get_mut(range.clone()) {
            slot.copy_from_slice(data);
        }
        match self
            .server
            .handle_peer(now, relay, peer, &mut buf, range, &mut self.out)
        {
            PeerAction::Drop => {}
            PeerAction::ForwardInPlace { client, range } => {
                self.push(client.server, client.client, buf.get(range));
            }
            PeerAction::Forward { client, len } => {
                let bytes = self.out.get(..len).map(<[u8]>::to_vec);
                self.push(client.server, client.client, bytes.as_deref());
            }
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.server.poll_event() {
            self.events.push(event);
        }
    }
}

impl Node for TurnNode {
    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) {
        if local == self.listen {
            self.client_packet(now, local, remote, payload);
        } else if self.sockets.bound.contains(&local) {
            self.peer_packet(now, local, remote, payload);
        }
        self.collect_events();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now, &mut self.sockets);
        self.collect_events();
    }

    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }
}

/// Whether a datagram is a STUN Binding request, by its first two bytes, as the daemon
/// decides.
fn is_binding_request(packet: &[u8]) -> bool {
    let Some(&[a, b]) = packet.first_chunk::<2>() else {
        return false;
    };
    MessageType::from_u16(u16::from_be_bytes([a, b]))
        .is_some_and(|t| t.method == Method::BINDING && t.class == Class::Request)
}
