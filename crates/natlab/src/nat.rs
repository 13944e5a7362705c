//! An in-process NAT: RFC 4787 mapping and filtering behaviour, port preservation,
//! hairpinning and mapping lifetime, on a clock the caller passes in.
//!
//! A [`Nat`] translates UDP endpoints and nothing else: it sees an internal source and a
//! destination on the way out ([`Nat::outbound`]), a remote source and one of its external
//! addresses on the way in ([`Nat::inbound`]), and an internal host sending to the NAT's own
//! external address ([`Nat::hairpin`]). It opens no socket and reads no clock.
//!
//! # The model
//!
//! A mapping binds an internal endpoint to one external port of [`NatConfig::external_ip`].
//! Which outbound packets share a mapping is the mapping behaviour (RFC 4787 §4.1): with
//! endpoint-independent mapping every destination does, with address-dependent mapping those
//! to one IP do, with address-and-port-dependent mapping those to one IP and port do. No two
//! mappings share an external port.
//!
//! Each mapping remembers when it last sent to each remote endpoint. That record is both the
//! filter (RFC 4787 §5: which remotes may answer) and the timer: a remote is forgotten
//! [`NatConfig::mapping_lifetime`] after the last packet sent to it, and a mapping ends when
//! it has forgotten every remote. Only outbound packets refresh (RFC 4787 REQ-6 lets inbound
//! refresh too; not doing so is the behaviour that breaks applications which only listen,
//! which is what a test lab should show). This is how Linux conntrack behaves, one entry per
//! flow, and it makes a mapping kept alive by traffic to one server still filter a peer it
//! stopped talking to. One difference: conntrack forgets a flow that never saw an answer
//! after 30 s (`nf_conntrack_udp_timeout`), where the model keeps every flow for the one
//! lifetime; the namespace lab's `set_udp_timeout` sets both kernel timeouts to one value.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//!
//! use icebreaker_natlab::NatType;
//! use icebreaker_natlab::nat::{Nat, NatConfig};
//!
//! let config = NatConfig::new(NatType::PortRestricted, "203.0.113.1".parse()?);
//! let mut nat = Nat::with_seed(config, 1);
//! let now = Instant::now();
//! let (client, server): (SocketAddr, SocketAddr) =
//!     ("10.0.0.2:5000".parse()?, "198.51.100.1:3478".parse()?);
//!
//! let external = nat.outbound(now, client, server).ok_or("no free port")?;
//! assert_eq!(external, "203.0.113.1:5000".parse()?);
//! assert_eq!(nat.inbound(now, server, external), Some(client));
//! // Port-restricted: another port of the same server is filtered.
//! assert_eq!(nat.inbound(now, "198.51.100.1:3479".parse()?, external), None);
//! // Two minutes without an outbound packet and the mapping is gone.
//! let later = now + Duration::from_secs(120);
//! assert_eq!(nat.inbound(later, server, external), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::ops::RangeInclusive;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::{Filtering, Mapping, NatType};

/// The default mapping lifetime: RFC 4787 REQ-5's floor of two minutes, which is also what
/// Linux conntrack gives a UDP flow that has seen answers (`nf_conntrack_udp_timeout_stream`).
pub const DEFAULT_MAPPING_LIFETIME: Duration = Duration::from_secs(120);

/// Ports drawn for new mappings when the internal port cannot be kept: the range Linux uses
/// for a source port at or above 1024.
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 1024..=65535;

/// Random draws before a sequential sweep of the port range, so that a nearly full range
/// still finds its last free port.
const RANDOM_TRIES: usize = 64;

/// How a NAT behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Which outbound packets share an external port (RFC 4787 §4.1).
    pub mapping: Mapping,
    /// Which inbound packets reach a mapping (RFC 4787 §5).
    pub filtering: Filtering,
    /// Keep the internal port as the external one when it is free (RFC 4787 §4.2.1);
    /// otherwise, and when it is taken, draw a random port from [`port_range`](Self::port_range).
    pub port_preservation: bool,
    /// Loop packets an internal host sends to the NAT's external address back inside
    /// (RFC 4787 §6).
    pub hairpinning: bool,
    /// How long a mapping stays after the last outbound packet (RFC 4787 REQ-5 asks for at
    /// least two minutes; tests may set seconds).
    pub mapping_lifetime: Duration,
    /// The NAT's public address.
    pub external_ip: IpAddr,
    /// Where random external ports come from. An empty range, or one holding only port 0,
    /// leaves only preserved ports.
    pub port_range: RangeInclusive<u16>,
}

impl NatConfig {
    /// The behaviour of `nat_type` on `external_ip`, as the namespace lab builds it: the cone
    /// types keep the internal port when it is free, the symmetric type draws every port at
    /// random (`fully-random`). Hairpinning is off, as in the namespace lab, whose plain
    /// masquerading does not loop packets back although RFC 4787 REQ-9 asks for it. The
    /// lifetime is [`DEFAULT_MAPPING_LIFETIME`].
    pub fn new(nat_type: NatType, external_ip: IpAddr) -> NatConfig {
        NatConfig {
            mapping: nat_type.mapping(),
            filtering: nat_type.filtering(),
            port_preservation: nat_type != NatType::Symmetric,
            hairpinning: false,
            mapping_lifetime: DEFAULT_MAPPING_LIFETIME,
            external_ip,
            port_range: DEFAULT_PORT_RANGE,
        }
    }
}

impl Default for NatConfig {
    /// A port-restricted cone NAT (plain Linux masquerading) on 203.0.113.1.
    fn default() -> NatConfig {
        NatConfig::new(
            NatType::PortRestricted,
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
        )
    }
}

/// What part of the destination a mapping is bound to, after the mapping behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MappingScope {
    /// Any destination (endpoint-independent mapping).
    Any,
    /// One destination IP (address-dependent mapping).
    Address(IpAddr),
    /// One destination IP and port (address-and-port-dependent mapping).
    Endpoint(SocketAddr),
}

impl MappingScope {
    fn of(mapping: Mapping, dst: SocketAddr) -> MappingScope {
        match mapping {
            Mapping::EndpointIndependent => MappingScope::Any,
            Mapping::AddressDependent => MappingScope::Address(dst.ip()),
            Mapping::AddressAndPortDependent => MappingScope::Endpoint(dst),
        }
    }
}

/// A live mapping, as [`Nat::mappings`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingInfo {
    /// The internal endpoint.
    pub internal: SocketAddr,
    /// Its external address.
    pub external: SocketAddr,
    /// The destinations it serves.
    pub scope: MappingScope,
    /// The remote endpoints it has sent to and not yet forgotten, with the time of the last
    /// packet to each.
    pub remotes: Vec<(SocketAddr, Instant)>,
}

/// One mapping: an internal endpoint, the destinations it serves, and when it last sent to
/// each remote.
#[derive(Clone, Debug)]
struct Entry {
    internal: SocketAddr,
    scope: MappingScope,
    remotes: BTreeMap<SocketAddr, Instant>,
}

/// A NAT. See the module documentation for the model.
pub struct Nat {
    config: NatConfig,
    rng: Box<dyn RngCore + Send>,
    /// By external port. Ordered maps throughout: a simulation that iterates must not depend
    /// on a hasher's seed.
    entries: BTreeMap<u16, Entry>,
    by_key: BTreeMap<(SocketAddr, MappingScope), u16>,
}

impl fmt::Debug for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nat")
            .field("config", &self.config)
            .field("mappings", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Nat {
    /// A NAT behaving as `config` says, drawing random ports from `rng`.
    pub fn new(config: NatConfig, rng: Box<dyn RngCore + Send>) -> Nat {
        Nat {
            config,
            rng,
            entries: BTreeMap::new(),
            by_key: BTreeMap::new(),
        }
    }

    /// A NAT whose random ports come from a generator seeded with `seed`.
    pub fn with_seed(config: NatConfig, seed: u64) -> Nat {
        Nat::new(config, Box::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// The public address.
    pub fn external_ip(&self) -> IpAddr {
        self.config.external_ip
    }

    /// Changes the mapping lifetime. It applies to existing mappings at once: each remote is
    /// forgotten the new lifetime after the last packet sent to it.
    pub fn set_mapping_lifetime(&mut self, lifetime: Duration) {
        self.config.mapping_lifetime = lifetime;
    }

    /// Changes the filtering behaviour, for existing mappings too.
    pub fn set_filtering(&mut self, filtering: Filtering) {
        self.config.filtering = filtering;
    }

    /// Turns hairpinning on or off.
    pub fn set_hairpinning(&mut self, hairpinning: bool) {
        self.config.hairpinning = hairpinning;
    }

    /// Drops every mapping, as `conntrack -F` does.
    pub fn flush(&mut self) {
        self.entries.clear();
        self.by_key.clear();
    }

    /// Number of live mappings at `now`.
    pub fn mapping_count(&self, now: Instant) -> usize {
        self.mappings(now).len()
    }

    /// The live mappings at `now`, by external port, each with the remotes it still
    /// remembers.
    pub fn mappings(&self, now: Instant) -> Vec<MappingInfo> {
        let lifetime = self.config.mapping_lifetime;
        self.entries
            .iter()
            .filter_map(|(&port, entry)| {
                let remotes: Vec<(SocketAddr, Instant)> = entry
                    .remotes
                    .iter()
                    .filter(|&(_, &last)| now.saturating_duration_since(last) < lifetime)
                    .map(|(&r, &t)| (r, t))
                    .collect();
                (!remotes.is_empty()).then(|| MappingInfo {
                    internal: entry.internal,
                    external: SocketAddr::new(self.config.external_ip, port),
                    scope: entry.scope,
                    remotes,
                })
            })
            .collect()
    }

    /// A packet from `internal_src` to `dst` leaves: returns its external source address,
    /// creating the mapping or refreshing it. `None` when the packet cannot leave: `dst` is
    /// of the other address family, or no external port is free.
    ///
    /// A destination on the NAT's own external IP is treated as any other here; whether it
    /// loops back inside is [`hairpin`](Self::hairpin)'s business.
    pub fn outbound(
        &mut self,
        now: Instant,
        internal_src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        if dst.is_ipv4() != self.config.external_ip.is_ipv4() {
            return None;
        }
        self.expire(now);
        let scope = MappingScope::of(self.config.mapping, dst);
        let key = (internal_src, scope);
        let port = match self.by_key.get(&key) {
            Some(&port) => port,
            None => {
                let port = self.free_port(internal_src.port())?;
                self.entries.insert(
                    port,
                    Entry {
                        internal: internal_src,
                        scope,
                        remotes: BTreeMap::new(),
                    },
                );
                self.by_key.insert(key, port);
                port
            }
        };
        if let Some(entry) = self.entries.get_mut(&port) {
            entry.remotes.insert(dst, now);
        }
        Some(SocketAddr::new(self.config.external_ip, port))
    }

    /// A packet from `remote_src` reaches `external_dst`: returns the internal endpoint it
    /// goes to, or `None` when it is dropped: not our address, no mapping (never made, expired
    /// or flushed), or refused by the filter. It does not refresh the mapping.
    pub fn inbound(
        &mut self,
        now: Instant,
        remote_src: SocketAddr,
        external_dst: SocketAddr,
    ) -> Option<SocketAddr> {
        if external_dst.ip() != self.config.external_ip {
            return None;
        }
        self.expire(now);
        let entry = self.entries.get(&external_dst.port())?;
        let allowed = match self.config.filtering {
            // A live mapping has at least one remote; any source may use it.
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => entry.remotes.keys().any(|r| r.ip() == remote_src.ip()),
            Filtering::AddressAndPortDependent => entry.remotes.contains_key(&remote_src),
        };
        allowed.then_some(entry.internal)
    }

    /// An internal host at `internal_src` sends to `external_dst`, one of the NAT's own
    /// external addresses (RFC 4787 §6). With hairpinning the packet goes out through the
    /// sender's mapping and comes back in through the filter of the mapping it is addressed
    /// to, as if it had crossed the Internet: returns the source the receiver sees (the
    /// sender's external address, REQ-9) and the internal destination. `None` when
    /// hairpinning is off, or the packet is refused on the way in.
    pub fn hairpin(
        &mut self,
        now: Instant,
        internal_src: SocketAddr,
        external_dst: SocketAddr,
    ) -> Option<(SocketAddr, SocketAddr)> {
        if !self.config.hairpinning || external_dst.ip() != self.config.external_ip {
            return None;
        }
        let src = self.outbound(now, internal_src, external_dst)?;
        let dst = self.inbound(now, src, external_dst)?;
        Some((src, dst))
    }

    /// Forgets remotes past the lifetime, and mappings with no remote left.
    fn expire(&mut self, now: Instant) {
        let lifetime = self.config.mapping_lifetime;
        let by_key = &mut self.by_key;
        self.entries.retain(|_, entry| {
            entry
                .remotes
                .retain(|_, &mut last| now.saturating_duration_since(last) < lifetime);
            let live = !entry.remotes.is_empty();
            if !live {
                by_key.remove(&(entry.internal, entry.scope));
            }
            live
        });
    }

    /// An external port for a new mapping of an internal endpoint on `internal_port`.
    fn free_port(&mut self, internal_port: u16) -> Option<u16> {
        if self.config.port_preservation
            && internal_port != 0
            && !self.entries.contains_key(&internal_port)
        {
            return Some(internal_port);
        }
        let start = (*self.config.port_range.start()).max(1);
        let end = *self.config.port_range.end();
        if start > end {
            return None;
        }
        let span = u32::from(end - start) + 1;
        let draw = |rng: &mut dyn RngCore| {
            // The modulo bias over at most 65535 values is below 2^-16: irrelevant here.
            let offset = u16::try_from(rng.next_u32() % span).unwrap_or(0);
            start.saturating_add(offset)
        };
        for _ in 0..RANDOM_TRIES {
            let port = draw(self.rng.as_mut());
            if !self.entries.contains_key(&port) {
                return Some(port);
            }
        }
        let first = draw(self.rng.as_mut());
        (first..=end)
            .chain(start..first)
            .find(|port| !self.entries.contains_key(port))
    }
}
