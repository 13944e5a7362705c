//! A deterministic simulated network: sans-IO hosts exchange UDP datagrams through NAT models,
//! on a virtual clock, with seeded delay, jitter and loss.
//!
//! # Topology
//!
//! - Public hosts ([`Network::add_public_host`]) sit on the Internet under their own IP.
//! - A NAT ([`Network::add_nat`]) owns its external IP on the Internet and a private network
//!   behind it; hosts on that network ([`Network::add_private_host`]) are reachable from
//!   outside only through the NAT's mappings. Two private networks may use the same
//!   addresses.
//! - A host may own several IPs ([`Network::add_ip`]) and any port on them: the `local`
//!   address of each datagram it sends is its source; an unspecified IP stands for its first.
//!
//! A datagram crosses the sender's link, then the network, then the receiver's link. In the
//! network, a datagram from a private host goes to a host on the same private network
//! directly when addressed by its internal IP; to its own NAT's external IP, it is
//! hairpinned ([`Nat::hairpin`]); anywhere else, it leaves through [`Nat::outbound`]. A
//! datagram for a NAT's external IP enters through [`Nat::inbound`]. NATs are applied at the
//! moment the datagram is in the network, between the two links, so a mapping that expires
//! while a datagram is on its way drops it.
//!
//! # Determinism
//!
//! Everything random (losses, jitter, the NATs' port choices) comes from generators seeded
//! from the network's seed, events run in (time, sequence number) order and every map is
//! ordered, so one seed always gives the same run.
//!
//! # Driving the nodes
//!
//! After a datagram is delivered to a node or its timer fires, the node's
//! [`Node::poll_transmit`] is drained and its [`Node::poll_timeout`] asked again. A node
//! changed from outside ([`Network::node_mut`]) is drained and asked when the next `run_*`
//! call starts.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//!
//! use icebreaker_natlab::NatType;
//! use icebreaker_natlab::nat::NatConfig;
//! use icebreaker_natlab::sim::{Network, UdpNode};
//!
//! let mut net = Network::new(7, Instant::now());
//! let echo: SocketAddr = "198.51.100.9:7".parse()?;
//! net.add_public_host(echo.ip(), UdpNode::echo());
//! let nat = net.add_nat(NatConfig::new(NatType::PortRestricted, "203.0.113.1".parse()?));
//! let local: SocketAddr = "10.0.0.2:5000".parse()?;
//! let mut app = UdpNode::new();
//! app.send(local, echo, *b"ping");
//! let app = net.add_private_host(nat, local.ip(), app);
//!
//! net.run_for(Duration::from_millis(100));
//! let received = net.node::<UdpNode>(app).ok_or("not a UdpNode")?.received();
//! assert_eq!((received[0].remote, received[0].payload.as_slice()), (echo, &b"ping"[..]));
//! // The echo server saw the NAT's address, the port kept.
//! let mapping = &net.nat(nat).ok_or("no NAT")?.mappings(net.now())[0];
//! assert_eq!(mapping.external, "203.0.113.1:5000".parse()?);
//! assert_eq!(net.counters().delivered, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod servers;

pub use servers::{SIM_UNIX_EPOCH, StunNode, TurnNode};

use core::any::Any;
use core::cmp::{Ordering, Reverse};
use core::fmt;
use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::nat::{Nat, NatConfig};

/// A sans-IO host: what the simulator drives.
pub trait Node: Any {
    /// A datagram from `remote` arrived on the host's address `local`.
    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    );
    /// The time the node last asked for through [`poll_timeout`](Node::poll_timeout) has come.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send, if any.
    fn poll_transmit(&mut self) -> Option<Datagram>;
    /// When [`handle_timeout`](Node::handle_timeout) must be called next.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// A datagram a node sends: from its address `local` to `remote`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Datagram {
    /// The sending socket's address, on one of the host's IPs.
    pub local: SocketAddr,
    /// The destination.
    pub remote: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} ({} bytes)",
            self.local,
            self.remote,
            self.payload.len()
        )
    }
}

/// A host of a [`Network`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(usize);

impl HostId {
    /// The host's index, in the order hosts were added.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A NAT of a [`Network`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatId(usize);

impl NatId {
    /// The NAT's index, in the order NATs were added.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A host's access link, applied to every datagram it sends and every datagram it receives:
/// host to host, a datagram takes the sender's delay plus the receiver's, and may be lost on
/// either link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// One-way delay.
    pub delay: Duration,
    /// Up to this much is added to the delay, uniformly; datagrams may then be reordered.
    pub jitter: Duration,
    /// Probability, from 0 to 1, that a datagram is lost on this link.
    pub loss: f64,
}

impl Link {
    /// The default delay of a link: host to host 10 ms one way.
    pub const DEFAULT_DELAY: Duration = Duration::from_millis(5);

    /// A link with `delay`, no jitter and no loss.
    pub const fn with_delay(delay: Duration) -> Link {
        Link {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

impl Default for Link {
    /// [`Link::DEFAULT_DELAY`], no jitter, no loss.
    fn default() -> Link {
        Link::with_delay(Link::DEFAULT_DELAY)
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A NAT refused it: no mapping or an expired one, the filter, hairpinning off, or no
    /// external port free for a new mapping.
    Filtered,
    /// Lost on a link.
    Lost,
    /// The sender or the receiver is offline.
    Offline,
    /// No host or NAT at the destination IP, or the sender used an IP it does not own.
    NoRoute,
}

/// What happened to datagrams so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams the nodes sent.
    pub sent: u64,
    /// Datagrams handed to a node.
    pub delivered: u64,
    /// Dropped by a NAT.
    pub filtered: u64,
    /// Lost on a link.
    pub lost: u64,
    /// Dropped because the sender or receiver was offline.
    pub offline: u64,
    /// Dropped for lack of a route.
    pub no_route: u64,
}

impl Counters {
    /// Datagrams dropped for `reason`.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Filtered => self.filtered,
            DropReason::Lost => self.lost,
            DropReason::Offline => self.offline,
            DropReason::NoRoute => self.no_route,
        }
    }

    /// Datagrams dropped, for any reason.
    pub fn dropped(&self) -> u64 {
        self.filtered + self.lost + self.offline + self.no_route
    }
}

/// The fate of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Handed to this host.
    Delivered(HostId),
    /// Dropped.
    Dropped(DropReason),
}

/// One line of the trace ([`Network::record_trace`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceEntry {
    /// When it was delivered or dropped.
    pub at: Instant,
    /// The source: as the receiver sees it for a delivery, as known where it was dropped
    /// otherwise.
    pub src: SocketAddr,
    /// The destination, likewise: the receiver's own address for a delivery.
    pub dst: SocketAddr,
    /// Payload length.
    pub len: usize,
    /// What happened.
    pub outcome: Outcome,
}

/// Most datagrams taken from one node at one time: a node whose `poll_transmit` never ends
/// must not hang the simulation.
const MAX_TRANSMITS_PER_DRAIN: usize = 65_536;

/// Most times a node's timer fires at one instant before the simulator moves it on by
/// [`STALLED_TIMER_STEP`]: a node that keeps asking for a time already past would otherwise
/// stop the clock.
const MAX_FIRINGS_PER_INSTANT: u32 = 64;

/// See [`MAX_FIRINGS_PER_INSTANT`].
const STALLED_TIMER_STEP: Duration = Duration::from_millis(1);

/// Streams of randomness derived from the network's seed, so that adding a NAT does not shift
/// the losses and jitter a run sees.
const LINK_STREAM: u64 = 1;
const NAT_STREAM: u64 = 2;

enum EventKind {
    /// Past the sender's link, in the network.
    Transit { from: HostId, datagram: Datagram },
    /// Past the receiver's link.
    Deliver {
        to: HostId,
        local: SocketAddr,
        remote: SocketAddr,
        payload: Vec<u8>,
    },
    /// A node's timer, armed for the event's time.
    Timer { host: HostId },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Scheduled) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Host {
    node: Box<dyn Node>,
    ips: Vec<IpAddr>,
    nat: Option<NatId>,
    link: Link,
    online: bool,
    /// The time of the timer event queued for this host, if any; a queued event for another
    /// time is stale.
    armed: Option<Instant>,
    /// Timer firings at one instant, for [`MAX_FIRINGS_PER_INSTANT`].
    firings: (Option<Instant>, u32),
}

struct NatSlot {
    nat: Nat,
    /// The private network: internal IP to host.
    internal: BTreeMap<IpAddr, HostId>,
}

#[derive(Clone, Copy)]
enum Attachment {
    Host(HostId),
    Nat(NatId),
}

/// The simulated network. See the module documentation.
pub struct Network {
    seed: u64,
    now: Instant,
    rng: ChaCha8Rng,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    hosts: Vec<Host>,
    nats: Vec<NatSlot>,
    public: BTreeMap<IpAddr, Attachment>,
    default_link: Link,
    counters: Counters,
    trace: Option<Vec<TraceEntry>>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("hosts", &self.hosts.len())
            .field("nats", &self.nats.len())
            .field("queued", &self.queue.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// An empty network whose randomness comes from `seed` and whose clock starts at `start`.
    pub fn new(seed: u64, start: Instant) -> Network {
        Network {
            seed,
            now: start,
            rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, LINK_STREAM, 0)),
            seq: 0,
            queue: BinaryHeap::new(),
            hosts: Vec::new(),
            nats: Vec::new(),
            public: BTreeMap::new(),
            default_link: Link::default(),
            counters: Counters::default(),
            trace: None,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed the network was made with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The link hosts added from now on get.
    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// Adds a host on the Internet at `ip`. An IP already in use is taken over by the new
    /// host.
    pub fn add_public_host(&mut self, ip: IpAddr, node: impl Node) -> HostId {
        let id = self.push_host(Box::new(node), ip, None);
        self.public.insert(ip, Attachment::Host(id));
        id
    }

    /// Adds a NAT; its random ports come from a generator derived from the network's seed.
    /// Its external IP is taken over from any host or NAT that had it.
    pub fn add_nat(&mut self, config: NatConfig) -> NatId {
        let id = NatId(self.nats.len());
        let external_ip = config.external_ip;
        let seed = derive_seed(self.seed, NAT_STREAM, id.0 as u64);
        self.nats.push(NatSlot {
            nat: Nat::with_seed(config, seed),
            internal: BTreeMap::new(),
        });
        self.public.insert(external_ip, Attachment::Nat(id));
        id
    }

    /// Adds a host on the private network behind `nat`, at `internal_ip`. An internal IP
    /// already in use behind that NAT is taken over by the new host. Behind a NAT this
    /// network does not have, the host can reach nothing.
    pub fn add_private_host(&mut self, nat: NatId, internal_ip: IpAddr, node: impl Node) -> HostId {
        let id = self.push_host(Box::new(node), internal_ip, Some(nat));
        if let Some(slot) = self.nats.get_mut(nat.0) {
            slot.internal.insert(internal_ip, id);
        }
        id
    }

    /// Gives `host` another IP, on the Internet or on its private network; false when there
    /// is no such host.
    pub fn add_ip(&mut self, host: HostId, ip: IpAddr) -> bool {
        let Some(h) = self.hosts.get_mut(host.0) else {
            return false;
        };
        if !h.ips.contains(&ip) {
            h.ips.push(ip);
        }
        match h.nat {
            Some(nat) => {
                if let Some(slot) = self.nats.get_mut(nat.0) {
                    slot.internal.insert(ip, host);
                }
            }
            None => {
                self.public.insert(ip, Attachment::Host(host));
            }
        }
        true
    }

    fn push_host(&mut self, node: Box<dyn Node>, ip: IpAddr, nat: Option<NatId>) -> HostId {
        let id = HostId(self.hosts.len());
        self.hosts.push(Host {
            node,
            ips: vec![ip],
            nat,
            link: self.default_link,
            online: true,
            armed: None,
            firings: (None, 0),
        });
        id
    }

    /// The node of `host`, if it is a `T`.
    pub fn node<T: Node>(&self, host: HostId) -> Option<&T> {
        let node: &dyn Any = self.hosts.get(host.0)?.node.as_ref();
        node.downcast_ref::<T>()
    }

    /// The node of `host`, if it is a `T`, to change from outside. What it queues is sent
    /// when the next `run_*` call starts.
    pub fn node_mut<T: Node>(&mut self, host: HostId) -> Option<&mut T> {
        let node: &mut dyn Any = self.hosts.get_mut(host.0)?.node.as_mut();
        node.downcast_mut::<T>()
    }

    /// The IPs of `host`, its first one first.
    pub fn ips(&self, host: HostId) -> &[IpAddr] {
        self.hosts.get(host.0).map_or(&[], |h| h.ips.as_slice())
    }

    /// The NAT `host` is behind, if any.
    pub fn nat_of(&self, host: HostId) -> Option<NatId> {
        self.hosts.get(host.0).and_then(|h| h.nat)
    }

    /// A NAT, to look at.
    pub fn nat(&self, nat: NatId) -> Option<&Nat> {
        self.nats.get(nat.0).map(|slot| &slot.nat)
    }

    /// A NAT, to flush its mappings or change its lifetime, filtering or hairpinning mid-run.
    pub fn nat_mut(&mut self, nat: NatId) -> Option<&mut Nat> {
        self.nats.get_mut(nat.0).map(|slot| &mut slot.nat)
    }

    /// The link of `host`.
    pub fn link(&self, host: HostId) -> Option<Link> {
        self.hosts.get(host.0).map(|h| h.link)
    }

    /// Sets the link of `host`; datagrams already on their way keep the delay they were
    /// given.
    pub fn set_link(&mut self, host: HostId, link: Link) {
        if let Some(h) = self.hosts.get_mut(host.0) {
            h.link = link;
        }
    }

    /// Takes `host` off the network or puts it back. Offline, everything it sends and
    /// everything that reaches it is dropped; its node keeps running.
    pub fn set_host_online(&mut self, host: HostId, online: bool) {
        if let Some(h) = self.hosts.get_mut(host.0) {
            h.online = online;
        }
    }

    /// Whether `host` is online.
    pub fn is_online(&self, host: HostId) -> bool {
        self.hosts.get(host.0).is_some_and(|h| h.online)
    }

    /// What happened to datagrams so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Starts (or stops, dropping it) recording the fate of every datagram.
    pub fn record_trace(&mut self, on: bool) {
        self.trace = on.then(|| self.trace.take().unwrap_or_default());
    }

    /// The trace recorded so far (empty unless [`record_trace`](Self::record_trace) is on).
    pub fn trace(&self) -> &[TraceEntry] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Takes the trace recorded so far, leaving recording as it was.
    pub fn take_trace(&mut self) -> Vec<TraceEntry> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Runs every event up to `until`, then sets the clock to it (never back).
    pub fn run_until(&mut self, until: Instant) {
        self.run(Some(until), &mut |_| false);
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now.checked_add(duration);
        self.run(until, &mut |_| false);
    }

    /// Runs until `predicate` holds, checked before the first event and after each one, or
    /// until `max` has passed. Returns whether it holds; the clock stops at the event that
    /// made it hold.
    pub fn run_until_condition(
        &mut self,
        max: Duration,
        mut predicate: impl FnMut(&Network) -> bool,
    ) -> bool {
        let until = self.now.checked_add(max);
        self.run(until, &mut predicate)
    }

    /// The event loop. No limit runs until nothing is left to run.
    fn run(&mut self, until: Option<Instant>, predicate: &mut dyn FnMut(&Network) -> bool) -> bool {
        self.sync_hosts();
        if predicate(self) {
            return true;
        }
        loop {
            let due = self
                .queue
                .peek()
                .is_some_and(|Reverse(next)| until.is_none_or(|until| next.at <= until));
            if !due {
                break;
            }
            let Some(Reverse(event)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(event.at);
            self.process(event);
            if predicate(self) {
                return true;
            }
        }
        if let Some(until) = until {
            self.now = self.now.max(until);
        }
        false
    }

    /// Picks up what nodes changed from outside queued, and their new timers.
    fn sync_hosts(&mut self) {
        for index in 0..self.hosts.len() {
            self.drain(HostId(index));
            self.arm(HostId(index), None);
        }
    }

    fn schedule(&mut self, at: Instant, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            kind,
        }));
    }

    fn process(&mut self, event: Scheduled) {
        match event.kind {
            EventKind::Transit { from, datagram } => self.transit(from, datagram),
            EventKind::Deliver {
                to,
                local,
                remote,
                payload,
            } => self.deliver(to, local, remote, payload),
            EventKind::Timer { host } => self.fire(host, event.at),
        }
    }

    /// Sends everything `host`'s node has queued onto its link.
    fn drain(&mut self, host: HostId) {
        for _ in 0..MAX_TRANSMITS_PER_DRAIN {
            let Some(h) = self.hosts.get_mut(host.0) else {
                return;
            };
            let Some(mut datagram) = h.node.poll_transmit() else {
                return;
            };
            self.counters.sent += 1;
            let (online, link) = (h.online, h.link);
            if datagram.local.ip().is_unspecified() {
                let family = datagram.local.is_ipv4();
                if let Some(&ip) = h
                    .ips
                    .iter()
                    .find(|ip| ip.is_ipv4() == family)
                    .or(h.ips.first())
                {
                    datagram.local.set_ip(ip);
                }
            }
            let owned = h.ips.contains(&datagram.local.ip());
            let (src, dst, len) = (datagram.local, datagram.remote, datagram.payload.len());
            if !online {
                self.dropped(src, dst, len, DropReason::Offline);
            } else if !owned {
                self.dropped(src, dst, len, DropReason::NoRoute);
            } else if let Some(at) = self.cross(link) {
                self.schedule(
                    at,
                    EventKind::Transit {
                        from: host,
                        datagram,
                    },
                );
            } else {
                self.dropped(src, dst, len, DropReason::Lost);
            }
        }
    }

    /// Queues `host`'s timer for the time its node asks, unless one as early is queued;
    /// never earlier than `floor`.
    fn arm(&mut self, host: HostId, floor: Option<Instant>) {
        let now = self.now;
        let Some(h) = self.hosts.get_mut(host.0) else {
            return;
        };
        let Some(at) = h.node.poll_timeout() else {
            return;
        };
        let at = at.max(now).max(floor.unwrap_or(now));
        if h.armed.is_none_or(|armed| at < armed) {
            h.armed = Some(at);
            self.schedule(at, EventKind::Timer { host });
        }
    }

    fn fire(&mut self, host: HostId, at: Instant) {
        let now = self.now;
        let Some(h) = self.hosts.get_mut(host.0) else {
            return;
        };
        if h.armed != Some(at) {
            return;
        }
        h.armed = None;
        if h.node.poll_timeout().is_some_and(|due| due <= now) {
            h.firings = match h.firings {
                (Some(instant), n) if instant == now => (Some(now), n.saturating_add(1)),
                _ => (Some(now), 1),
            };
            h.node.handle_timeout(now);
        }
        let stalled = h.firings.0 == Some(now) && h.firings.1 >= MAX_FIRINGS_PER_INSTANT;
        self.drain(host);
        self.arm(
            host,
            stalled
                .then(|| now.checked_add(STALLED_TIMER_STEP))
                .flatten(),
        );
    }

    /// Routes a datagram that crossed the sender's link.
    fn transit(&mut self, from: HostId, datagram: Datagram) {
        let Datagram {
            local: src,
            remote: dst,
            payload,
        } = datagram;
        let len = payload.len();
        let now = self.now;
        let route = match self.hosts.get(from.0).and_then(|h| h.nat) {
            None => self.route_public(src, dst),
            Some(nat) => match self.nats.get_mut(nat.0) {
                None => Err((src, DropReason::NoRoute)),
                Some(slot) => {
                    if let Some(&to) = slot.internal.get(&dst.ip()) {
                        Ok((to, dst, src))
                    } else if dst.ip() == slot.nat.external_ip() {
                        match slot.nat.hairpin(now, src, dst) {
                            None => Err((src, DropReason::Filtered)),
                            Some((seen, internal)) => match slot.internal.get(&internal.ip()) {
                                Some(&to) => Ok((to, internal, seen)),
                                None => Err((seen, DropReason::NoRoute)),
                            },
                        }
                    } else {
                        match slot.nat.outbound(now, src, dst) {
                            None => Err((src, DropReason::Filtered)),
                            Some(seen) => self.route_public(seen, dst),
                        }
                    }
                }
            },
        };
        match route {
            Err((src, reason)) => self.dropped(src, dst, len, reason),
            Ok((to, local, remote)) => {
                let link = self.hosts.get(to.0).map(|h| h.link).unwrap_or_default();
                match self.cross(link) {
                    None => self.dropped(remote, local, len, DropReason::Lost),
                    Some(at) => self.schedule(
                        at,
                        EventKind::Deliver {
                            to,
                            local,
                            remote,
                            payload,
                        },
                    ),
                }
            }
        }
    }

    /// Where a datagram from `src` (a public address) to `dst` goes on the Internet: the
    /// receiving host, its address there, and the source it sees; or the source as known and
    /// why it went nowhere.
    fn route_public(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<(HostId, SocketAddr, SocketAddr), (SocketAddr, DropReason)> {
        let now = self.now;
        match self.public.get(&dst.ip()) {
            None => Err((src, DropReason::NoRoute)),
            Some(&Attachment::Host(to)) => Ok((to, dst, src)),
            Some(&Attachment::Nat(nat)) => {
                let slot = self.nats.get_mut(nat.0).ok_or((src, DropReason::NoRoute))?;
                let internal = slot
                    .nat
                    .inbound(now, src, dst)
                    .ok_or((src, DropReason::Filtered))?;
                let &to = slot
                    .internal
                    .get(&internal.ip())
                    .ok_or((src, DropReason::NoRoute))?;
                Ok((to, internal, src))
            }
        }
    }

    fn deliver(&mut self, to: HostId, local: SocketAddr, remote: SocketAddr, payload: Vec<u8>) {
        let now = self.now;
        let Some(h) = self.hosts.get_mut(to.0) else {
            self.dropped(remote, local, payload.len(), DropReason::NoRoute);
            return;
        };
        if !h.online {
            self.dropped(remote, local, payload.len(), DropReason::Offline);
            return;
        }
        h.node.handle_datagram(now, local, remote, &payload);
        self.counters.delivered += 1;
        if let Some(trace) = &mut self.trace {
            trace.push(TraceEntry {
                at: now,
                src: remote,
                dst: local,
                len: payload.len(),
                outcome: Outcome::Delivered(to),
            });
        }
        self.drain(to);
        self.arm(to, None);
    }

    fn dropped(&mut self, src: SocketAddr, dst: SocketAddr, len: usize, reason: DropReason) {
        match reason {
            DropReason::Filtered => self.counters.filtered += 1,
            DropReason::Lost => self.counters.lost += 1,
            DropReason::Offline => self.counters.offline += 1,
            DropReason::NoRoute => self.counters.no_route += 1,
        }
        if let Some(trace) = &mut self.trace {
            trace.push(TraceEntry {
                at: self.now,
                src,
                dst,
                len,
                outcome: Outcome::Dropped(reason),
            });
        }
    }

    /// Crosses `link` from now: the arrival time, or `None` when the datagram is lost (a
    /// delay past the end of time loses it too). Draws randomness only for a link that has
    /// loss or jitter.
    fn cross(&mut self, link: Link) -> Option<Instant> {
        if link.loss > 0.0 {
            // 53 random bits make a uniform f64 in [0, 1).
            let draw = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if draw < link.loss {
                return None;
            }
        }
        let mut delay = link.delay;
        let jitter = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
        if jitter > 0 {
            let extra = self.rng.next_u64() % jitter.saturating_add(1);
            delay = delay.saturating_add(Duration::from_nanos(extra));
        }
        self.now.checked_add(delay)
    }
}

/// A seed for stream `stream`, item `index`, from the network's seed (SplitMix64 finaliser).
fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A datagram [`UdpNode`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// When.
    pub at: Instant,
    /// The address it reached.
    pub local: SocketAddr,
    /// Where it came from, as seen after any NAT.
    pub remote: SocketAddr,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A plain UDP application: sends what it is told to, now or at a given time, records what
/// it receives, and with [`UdpNode::echo`] sends each datagram back where it came from.
#[derive(Clone, Debug, Default)]
pub struct UdpNode {
    outbox: VecDeque<Datagram>,
    /// Sends for later, by time and then order of asking.
    scheduled: BTreeMap<(Instant, u64), Datagram>,
    next: u64,
    received: Vec<Received>,
    echo: bool,
}

impl UdpNode {
    /// A node that sends only when told to.
    pub fn new() -> UdpNode {
        UdpNode::default()
    }

    /// A node that also echoes every datagram it receives.
    pub fn echo() -> UdpNode {
        UdpNode {
            echo: true,
            ..UdpNode::default()
        }
    }

    /// Sends `payload` from `local` to `remote` as soon as the simulation runs.
    pub fn send(&mut self, local: SocketAddr, remote: SocketAddr, payload: impl Into<Vec<u8>>) {
        self.outbox.push_back(Datagram {
            local,
            remote,
            payload: payload.into(),
        });
    }

    /// Sends `payload` from `local` to `remote` at `at`.
    pub fn send_at(
        &mut self,
        at: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        payload: impl Into<Vec<u8>>,
    ) {
        self.next += 1;
        self.scheduled.insert(
            (at, self.next),
            Datagram {
                local,
                remote,
                payload: payload.into(),
            },
        );
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// Takes everything received so far.
    pub fn take_received(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.received)
    }
}

impl Node for UdpNode {
    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) {
        if self.echo {
            self.send(local, remote, payload);
        }
        self.received.push(Received {
            at: now,
            local,
            remote,
            payload: payload.to_vec(),
        });
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.outbox.push_back(entry.remove());
        }
    }

    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.scheduled.keys().next().map(|&(at, _)| at)
    }
}
