//! The NAT model against RFC 4787: mapping and filtering of each type, port preservation,
//! lifetime and refresh, flush, hairpinning, and random operations that must keep the
//! mappings consistent.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_natlab::nat::{DEFAULT_MAPPING_LIFETIME, MappingScope, Nat, NatConfig};
use icebreaker_natlab::{Filtering, Mapping, NatType};
use proptest::prelude::*;

const EXTERNAL: &str = "203.0.113.1";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn nat(nat_type: NatType) -> Nat {
    Nat::with_seed(NatConfig::new(nat_type, ip(EXTERNAL)), 1)
}

/// The server a client talks to, another port of its IP, and another IP.
fn server() -> SocketAddr {
    addr("198.51.100.1:3478")
}

fn same_ip_other_port() -> SocketAddr {
    addr("198.51.100.1:3479")
}

fn other_ip() -> SocketAddr {
    addr("198.51.100.2:3478")
}

fn client() -> SocketAddr {
    addr("10.0.0.2:5000")
}

#[test]
fn default_config_follows_rfc_4787_and_the_lab() {
    for nat_type in NatType::ALL {
        let config = NatConfig::new(nat_type, ip(EXTERNAL));
        assert_eq!(config.mapping, nat_type.mapping());
        assert_eq!(config.filtering, nat_type.filtering());
        assert_eq!(config.port_preservation, nat_type != NatType::Symmetric);
        assert!(!config.hairpinning, "off, as in the namespace lab");
        assert!(
            config.mapping_lifetime >= Duration::from_secs(120),
            "REQ-5: two minutes at least"
        );
        assert_eq!(config.external_ip, ip(EXTERNAL));
    }
    assert_eq!(DEFAULT_MAPPING_LIFETIME, Duration::from_secs(120));
}

#[test]
fn endpoint_independent_mapping_reuses_one_port_and_symmetric_does_not() {
    let now = Instant::now();
    for nat_type in NatType::ALL {
        let mut nat = nat(nat_type);
        let a = nat.outbound(now, client(), server()).unwrap();
        let b = nat.outbound(now, client(), same_ip_other_port()).unwrap();
        let c = nat.outbound(now, client(), other_ip()).unwrap();
        assert_eq!(a.ip(), ip(EXTERNAL));
        if nat_type == NatType::Symmetric {
            let ports: HashSet<u16> = [a, b, c].iter().map(|x| x.port()).collect();
            assert_eq!(ports.len(), 3, "{nat_type}: one port per destination");
            assert_eq!(nat.mapping_count(now), 3);
        } else {
            assert_eq!((a, a), (b, c), "{nat_type}: one port for every destination");
            assert_eq!(nat.mapping_count(now), 1);
        }
        // The same destination again uses the same mapping.
        assert_eq!(nat.outbound(now, client(), server()), Some(a), "{nat_type}");
    }
}

#[test]
fn address_dependent_mapping_shares_a_port_per_destination_ip() {
    let now = Instant::now();
    let mut config = NatConfig::new(NatType::PortRestricted, ip(EXTERNAL));
    config.mapping = Mapping::AddressDependent;
    let mut nat = Nat::with_seed(config, 2);
    let a = nat.outbound(now, client(), server()).unwrap();
    let b = nat.outbound(now, client(), same_ip_other_port()).unwrap();
    let c = nat.outbound(now, client(), other_ip()).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let scopes: Vec<MappingScope> = nat.mappings(now).iter().map(|m| m.scope).collect();
    assert!(scopes.contains(&MappingScope::Address(server().ip())));
    assert!(scopes.contains(&MappingScope::Address(other_ip().ip())));
}

#[test]
fn filtering_of_each_type() {
    let now = Instant::now();
    for nat_type in NatType::ALL {
        let mut nat = nat(nat_type);
        let external = nat.outbound(now, client(), server()).unwrap();
        assert_eq!(
            nat.inbound(now, server(), external),
            Some(client()),
            "{nat_type}: the contacted address and port answer"
        );
        let other_port = nat.inbound(now, same_ip_other_port(), external);
        let expected = matches!(
            nat_type.filtering(),
            Filtering::EndpointIndependent | Filtering::AddressDependent
        );
        assert_eq!(other_port.is_some(), expected, "{nat_type}: another port");
        let other_address = nat.inbound(now, other_ip(), external);
        assert_eq!(
            other_address.is_some(),
            nat_type == NatType::FullCone,
            "{nat_type}: another IP"
        );
    }
}

#[test]
fn filtering_opens_for_each_remote_the_mapping_sent_to() {
    let now = Instant::now();
    let mut nat = nat(NatType::PortRestricted);
    let external = nat.outbound(now, client(), server()).unwrap();
    assert_eq!(nat.inbound(now, other_ip(), external), None);
    // Hole punching: sending to the peer first lets the peer in.
    assert_eq!(nat.outbound(now, client(), other_ip()), Some(external));
    assert_eq!(nat.inbound(now, other_ip(), external), Some(client()));
}

#[test]
fn inbound_without_a_mapping_or_to_another_address_is_dropped() {
    let now = Instant::now();
    for nat_type in NatType::ALL {
        let mut nat = nat(nat_type);
        assert_eq!(nat.inbound(now, server(), addr("203.0.113.1:5000")), None);
        let external = nat.outbound(now, client(), server()).unwrap();
        let mut elsewhere = external;
        elsewhere.set_ip(ip("203.0.113.99"));
        assert_eq!(nat.inbound(now, server(), elsewhere), None, "{nat_type}");
        let mut other_port = external;
        other_port.set_port(external.port().wrapping_add(1));
        assert_eq!(nat.inbound(now, server(), other_port), None, "{nat_type}");
    }
}

#[test]
fn an_ipv6_destination_does_not_cross_an_ipv4_nat() {
    let now = Instant::now();
    let mut nat = nat(NatType::FullCone);
    assert_eq!(
        nat.outbound(now, client(), addr("[2001:db8::1]:3478")),
        None
    );
    assert_eq!(nat.mapping_count(now), 0);
}

#[test]
fn cone_types_preserve_the_port_when_free() {
    let now = Instant::now();
    for nat_type in [
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestricted,
    ] {
        let mut nat = nat(nat_type);
        let first = nat.outbound(now, client(), server()).unwrap();
        assert_eq!(first.port(), 5000, "{nat_type}");
        // Another host with the same port cannot have it too.
        let second = nat.outbound(now, addr("10.0.0.3:5000"), server()).unwrap();
        assert_ne!(second.port(), 5000, "{nat_type}");
        assert!(second.port() >= 1024);
    }
}

#[test]
fn symmetric_draws_random_ports_from_the_range() {
    let now = Instant::now();
    let mut ports = HashSet::new();
    for seed in 0..8 {
        let mut config = NatConfig::new(NatType::Symmetric, ip(EXTERNAL));
        config.port_range = 20_000..=29_999;
        let mut nat = Nat::with_seed(config, seed);
        let external = nat.outbound(now, client(), server()).unwrap();
        assert!((20_000..=29_999).contains(&external.port()));
        ports.insert(external.port());
    }
    assert!(ports.len() > 1, "ports depend on the seed: {ports:?}");
    // And one seed always draws the same.
    let draw = |seed| {
        nat_with_seed(NatType::Symmetric, seed)
            .outbound(now, client(), server())
            .unwrap()
    };
    assert_eq!(draw(5), draw(5));
}

fn nat_with_seed(nat_type: NatType, seed: u64) -> Nat {
    Nat::with_seed(NatConfig::new(nat_type, ip(EXTERNAL)), seed)
}

#[test]
fn without_port_preservation_a_cone_draws_ports_too() {
    let now = Instant::now();
    let mut config = NatConfig::new(NatType::FullCone, ip(EXTERNAL));
    config.port_preservation = false;
    config.port_range = 40_000..=40_009;
    let mut nat = Nat::with_seed(config, 3);
    let external = nat.outbound(now, client(), server()).unwrap();
    assert!((40_000..=40_009).contains(&external.port()));
}

#[test]
fn a_full_port_range_refuses_new_mappings_until_one_expires() {
    let start = Instant::now();
    let mut config = NatConfig::new(NatType::Symmetric, ip(EXTERNAL));
    config.port_range = 40_000..=40_002;
    config.mapping_lifetime = Duration::from_secs(10);
    let mut nat = Nat::with_seed(config, 4);
    let mut ports = HashSet::new();
    for port in 1..=3u16 {
        let dst = SocketAddr::new(server().ip(), port);
        ports.insert(nat.outbound(start, client(), dst).unwrap().port());
    }
    assert_eq!(ports.len(), 3);
    assert_eq!(nat.outbound(start, client(), addr("198.51.100.1:4")), None);
    let later = start + Duration::from_secs(10);
    assert!(
        nat.outbound(later, client(), addr("198.51.100.1:4"))
            .is_some()
    );
}

#[test]
fn a_mapping_expires_after_its_lifetime() {
    let start = Instant::now();
    for nat_type in NatType::ALL {
        let mut config = NatConfig::new(nat_type, ip(EXTERNAL));
        config.mapping_lifetime = Duration::from_secs(30);
        let mut nat = Nat::with_seed(config, 5);
        let external = nat.outbound(start, client(), server()).unwrap();
        let almost = start + Duration::from_millis(29_999);
        assert_eq!(nat.inbound(almost, server(), external), Some(client()));
        let expired = start + Duration::from_secs(30);
        assert_eq!(nat.inbound(expired, server(), external), None, "{nat_type}");
        assert_eq!(nat.mapping_count(expired), 0, "{nat_type}");
    }
}

#[test]
fn outbound_traffic_refreshes_and_inbound_does_not() {
    let start = Instant::now();
    let secs = |s| start + Duration::from_secs(s);
    let mut config = NatConfig::new(NatType::PortRestricted, ip(EXTERNAL));
    config.mapping_lifetime = Duration::from_secs(30);
    let mut nat = Nat::with_seed(config.clone(), 6);
    let external = nat.outbound(start, client(), server()).unwrap();
    assert_eq!(nat.outbound(secs(20), client(), server()), Some(external));
    assert_eq!(nat.inbound(secs(49), server(), external), Some(client()));
    assert_eq!(nat.inbound(secs(50), server(), external), None);

    let mut nat = Nat::with_seed(config, 6);
    let external = nat.outbound(start, client(), server()).unwrap();
    assert!(nat.inbound(secs(20), server(), external).is_some());
    assert_eq!(
        nat.inbound(secs(30), server(), external),
        None,
        "answers do not keep a mapping"
    );
}

#[test]
fn each_remote_is_forgotten_on_its_own_timer() {
    let start = Instant::now();
    let secs = |s| start + Duration::from_secs(s);
    let mut config = NatConfig::new(NatType::PortRestricted, ip(EXTERNAL));
    config.mapping_lifetime = Duration::from_secs(30);
    let mut nat = Nat::with_seed(config, 7);
    let external = nat.outbound(start, client(), other_ip()).unwrap();
    // Keep-alives to the server only.
    for s in [10, 20, 30, 40] {
        assert_eq!(nat.outbound(secs(s), client(), server()), Some(external));
    }
    assert_eq!(nat.inbound(secs(41), server(), external), Some(client()));
    assert_eq!(
        nat.inbound(secs(41), other_ip(), external),
        None,
        "a peer no longer sent to is filtered"
    );
}

#[test]
fn an_expired_symmetric_mapping_comes_back_elsewhere() {
    let start = Instant::now();
    let mut config = NatConfig::new(NatType::Symmetric, ip(EXTERNAL));
    config.mapping_lifetime = Duration::from_secs(1);
    let mut nat = Nat::with_seed(config, 8);
    let first = nat.outbound(start, client(), server()).unwrap();
    let later = start + Duration::from_secs(5);
    let second = nat.outbound(later, client(), server()).unwrap();
    assert_ne!(first, second, "a fresh random port");
    assert_eq!(nat.inbound(later, server(), first), None);
    assert_eq!(nat.inbound(later, server(), second), Some(client()));
}

#[test]
fn a_shorter_lifetime_applies_to_existing_mappings() {
    let start = Instant::now();
    let mut nat = nat(NatType::FullCone);
    let external = nat.outbound(start, client(), server()).unwrap();
    let later = start + Duration::from_secs(10);
    assert!(nat.inbound(later, other_ip(), external).is_some());
    nat.set_mapping_lifetime(Duration::from_secs(5));
    assert_eq!(nat.inbound(later, other_ip(), external), None);
}

#[test]
fn flush_drops_every_mapping() {
    let now = Instant::now();
    for nat_type in NatType::ALL {
        let mut nat = nat(nat_type);
        let a = nat.outbound(now, client(), server()).unwrap();
        let b = nat.outbound(now, addr("10.0.0.3:6000"), server()).unwrap();
        assert_eq!(nat.mapping_count(now), 2);
        nat.flush();
        assert_eq!(nat.mapping_count(now), 0);
        assert_eq!(nat.inbound(now, server(), a), None, "{nat_type}");
        assert_eq!(nat.inbound(now, server(), b), None, "{nat_type}");
    }
}

#[test]
fn filtering_can_change_mid_run() {
    let now = Instant::now();
    let mut nat = nat(NatType::PortRestricted);
    let external = nat.outbound(now, client(), server()).unwrap();
    assert_eq!(nat.inbound(now, other_ip(), external), None);
    nat.set_filtering(Filtering::EndpointIndependent);
    assert_eq!(nat.inbound(now, other_ip(), external), Some(client()));
}

#[test]
fn hairpinning_loops_back_with_the_senders_external_address() {
    let now = Instant::now();
    let alice = client();
    let bob = addr("10.0.0.3:6000");
    for nat_type in NatType::ALL {
        let mut config = NatConfig::new(nat_type, ip(EXTERNAL));
        config.hairpinning = true;
        let mut nat = Nat::with_seed(config, 1);
        let bob_external = nat.outbound(now, bob, server()).unwrap();
        let outcome = nat.hairpin(now, alice, bob_external);
        let alice_external = nat
            .mappings(now)
            .into_iter()
            .find(|m| m.internal == alice)
            .map(|m| m.external)
            .expect("alice's packet made a mapping");
        if nat_type == NatType::FullCone {
            assert_eq!(outcome, Some((alice_external, bob)), "{nat_type}");
        } else {
            // Bob never sent to Alice's external address: his filter stops her.
            assert_eq!(outcome, None, "{nat_type}");
        }
        // Once Bob sends to Alice's external address, her packets come through, from it:
        // except behind a symmetric NAT, where Alice's packets to Bob's new mapping use
        // another port than the one Bob sent to.
        let bob_to_alice = nat.hairpin(now, bob, alice_external);
        if nat_type != NatType::Symmetric {
            assert_eq!(bob_to_alice.map(|(_, to)| to), Some(alice), "{nat_type}");
            let bob_seen = bob_to_alice.unwrap().0;
            let back = nat.hairpin(now, alice, bob_seen);
            assert_eq!(back, Some((alice_external, bob)), "{nat_type}");
        }
    }
}

#[test]
fn without_hairpinning_nothing_loops_back() {
    let now = Instant::now();
    let config = NatConfig::new(NatType::FullCone, ip(EXTERNAL));
    assert!(!config.hairpinning);
    let mut nat = Nat::with_seed(config, 9);
    let bob = addr("10.0.0.3:6000");
    let bob_external = nat.outbound(now, bob, server()).unwrap();
    assert_eq!(nat.hairpin(now, client(), bob_external), None);
    nat.set_hairpinning(true);
    assert!(nat.hairpin(now, client(), bob_external).is_some());
}

/// One operation on a NAT, with indices into small pools so that operations meet.
#[derive(Clone, Debug)]
enum Op {
    Outbound {
        host: usize,
        port: usize,
        dst: usize,
    },
    Inbound {
        remote: usize,
        port: PortChoice,
    },
    Hairpin {
        host: usize,
        port: usize,
        to: PortChoice,
    },
    Advance(u64),
    Flush,
    Lifetime(u64),
}

#[derive(Clone, Debug)]
enum PortChoice {
    /// The external port of the n-th live mapping, if any.
    Mapped(usize),
    Any(u16),
}

const HOSTS: [&str; 3] = ["10.0.0.2", "10.0.0.3", "10.0.0.4"];
const PORTS: [u16; 3] = [5000, 5001, 1];
const REMOTES: [&str; 5] = [
    "198.51.100.1:3478",
    "198.51.100.1:3479",
    "198.51.100.2:3478",
    "192.0.2.7:9",
    "203.0.113.1:5000",
];

fn op() -> impl Strategy<Value = Op> {
    let port = prop_oneof![
        (0usize..6).prop_map(PortChoice::Mapped),
        any::<u16>().prop_map(PortChoice::Any),
    ];
    prop_oneof![
        4 => (0..HOSTS.len(), 0..PORTS.len(), 0..REMOTES.len())
            .prop_map(|(host, port, dst)| Op::Outbound { host, port, dst }),
        3 => (0..REMOTES.len(), port.clone()).prop_map(|(remote, port)| Op::Inbound { remote, port }),
        1 => (0..HOSTS.len(), 0..PORTS.len(), port)
            .prop_map(|(host, port, to)| Op::Hairpin { host, port, to }),
        2 => (0u64..40_000).prop_map(Op::Advance),
        1 => Just(Op::Flush),
        1 => (0u64..60_000).prop_map(Op::Lifetime),
    ]
}

fn config() -> impl Strategy<Value = NatConfig> {
    let mapping = prop_oneof![
        Just(Mapping::EndpointIndependent),
        Just(Mapping::AddressDependent),
        Just(Mapping::AddressAndPortDependent),
    ];
    let filtering = prop_oneof![
        Just(Filtering::EndpointIndependent),
        Just(Filtering::AddressDependent),
        Just(Filtering::AddressAndPortDependent),
    ];
    let range = prop_oneof![
        Just(1024u16..=65535),
        Just(5000u16..=5003),
        Just(0u16..=0),
        // Empty: only preserved ports.
        Just(std::ops::RangeInclusive::new(9u16, 3)),
    ];
    (
        mapping,
        filtering,
        any::<bool>(),
        any::<bool>(),
        0u64..60_000,
        range,
    )
        .prop_map(
            |(mapping, filtering, port_preservation, hairpinning, lifetime, port_range)| {
                NatConfig {
                    mapping,
                    filtering,
                    port_preservation,
                    hairpinning,
                    mapping_lifetime: Duration::from_millis(lifetime),
                    external_ip: ip(EXTERNAL),
                    port_range,
                }
            },
        )
}

/// Everything that must hold of the live mappings at `now`.
fn check_consistent(nat: &Nat, now: Instant) {
    let config = nat.config();
    let mappings = nat.mappings(now);
    let mut ports = HashSet::new();
    let mut keys = HashSet::new();
    for m in &mappings {
        assert_eq!(m.external.ip(), config.external_ip);
        assert_ne!(m.external.port(), 0);
        assert!(ports.insert(m.external.port()), "port shared: {mappings:?}");
        assert!(keys.insert((m.internal, m.scope)), "duplicate mapping");
        assert!(!m.remotes.is_empty(), "a live mapping has a remote");
        assert!(
            config.port_range.contains(&m.external.port())
                || (config.port_preservation && m.external.port() == m.internal.port()),
            "port {} neither drawn nor preserved",
            m.external.port()
        );
        for &(remote, last) in &m.remotes {
            assert!(now.duration_since(last) < config.mapping_lifetime);
            let fits = match (config.mapping, m.scope) {
                (Mapping::EndpointIndependent, MappingScope::Any) => true,
                (Mapping::AddressDependent, MappingScope::Address(ip)) => ip == remote.ip(),
                (Mapping::AddressAndPortDependent, MappingScope::Endpoint(dst)) => dst == remote,
                _ => false,
            };
            assert!(fits, "{remote} does not fit {:?}", m.scope);
        }
    }
}

/// What inbound must answer, worked out from the listed mappings.
fn expected_inbound(
    nat: &Nat,
    now: Instant,
    remote: SocketAddr,
    dst: SocketAddr,
) -> Option<SocketAddr> {
    if dst.ip() != nat.external_ip() {
        return None;
    }
    let m = nat.mappings(now).into_iter().find(|m| m.external == dst)?;
    let allowed = match nat.config().filtering {
        Filtering::EndpointIndependent => true,
        Filtering::AddressDependent => m.remotes.iter().any(|(r, _)| r.ip() == remote.ip()),
        Filtering::AddressAndPortDependent => m.remotes.iter().any(|(r, _)| *r == remote),
    };
    allowed.then_some(m.internal)
}

fn pick_port(nat: &Nat, now: Instant, choice: &PortChoice) -> SocketAddr {
    let port = match *choice {
        PortChoice::Mapped(n) => {
            let mappings = nat.mappings(now);
            if mappings.is_empty() {
                5000
            } else {
                mappings[n % mappings.len()].external.port()
            }
        }
        PortChoice::Any(port) => port,
    };
    SocketAddr::new(nat.external_ip(), port)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_mappings_consistent(
        config in config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut nat = Nat::with_seed(config, seed);
        let mut now = Instant::now();
        for op in &ops {
            match op {
                Op::Outbound { host, port, dst } => {
                    let src = SocketAddr::new(ip(HOSTS[*host]), PORTS[*port]);
                    let dst = addr(REMOTES[*dst]);
                    let before: Vec<_> = nat
                        .mappings(now)
                        .into_iter()
                        .map(|m| (m.internal, m.scope, m.external))
                        .collect();
                    let external = nat.outbound(now, src, dst);
                    // With a zero lifetime a mapping is dead as soon as it is made.
                    let lasting = !nat.config().mapping_lifetime.is_zero();
                    if let Some(external) = external.filter(|_| lasting) {
                        let m = nat
                            .mappings(now)
                            .into_iter()
                            .find(|m| m.external == external)
                            .expect("the mapping it used is live");
                        prop_assert_eq!(m.internal, src);
                        prop_assert!(m.remotes.contains(&(dst, now)));
                        // A live mapping is kept, never moved.
                        for (internal, scope, old) in &before {
                            if *internal == src && *scope == m.scope {
                                prop_assert_eq!(*old, external);
                            }
                        }
                        prop_assert_eq!(nat.outbound(now, src, dst), Some(external));
                    }
                }
                Op::Inbound { remote, port } => {
                    let remote = addr(REMOTES[*remote]);
                    let dst = pick_port(&nat, now, port);
                    let expected = expected_inbound(&nat, now, remote, dst);
                    prop_assert_eq!(nat.inbound(now, remote, dst), expected);
                }
                Op::Hairpin { host, port, to } => {
                    let src = SocketAddr::new(ip(HOSTS[*host]), PORTS[*port]);
                    let dst = pick_port(&nat, now, to);
                    if let Some((seen, internal)) = nat.hairpin(now, src, dst) {
                        prop_assert!(nat.config().hairpinning);
                        prop_assert_eq!(seen.ip(), nat.external_ip());
                        prop_assert_eq!(nat.outbound(now, src, dst), Some(seen));
                        prop_assert_eq!(expected_inbound(&nat, now, seen, dst), Some(internal));
                    }
                }
                Op::Advance(ms) => now += Duration::from_millis(*ms),
                Op::Flush => {
                    nat.flush();
                    prop_assert_eq!(nat.mapping_count(now), 0);
                }
                Op::Lifetime(ms) => nat.set_mapping_lifetime(Duration::from_millis(*ms)),
            }
            check_consistent(&nat, now);
        }
    }
}
