//! Dual allocations (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY): an IPv4 and an IPv6 relay in one
//! allocation, peers of both families, the partial answer with ADDRESS-ERROR-CODE, expiry and
//! deletion; and the relay IP of a family the client did not reach (`family_fallback`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use icebreaker_turn::{
    ClientAction, DeleteReason, Event, PeerAction, Quotas, RelayAddress, TurnConfig,
};
use icebreaker_wire::attr::{
    AdditionalAddressFamily, AddressFamily, AnyAttribute, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken,
};
use icebreaker_wire::{ChannelData, ErrorCode, Method};
use proptest::prelude::*;

const V6_RELAY: &str = "2001:db8::1";
const PEER4: &str = "198.51.100.99:9000";
const PEER6: &str = "[2001:db8:5::99]:9000";
const OTHER_PEER6: &str = "[2001:db8:5::7]:7000";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal IP")
}

/// A server that relays IPv6 on a configured address besides the IPv4 one its clients reach.
fn dual_stack() -> TurnConfig {
    let mut config = config();
    config.relay = vec![RelayAddress {
        bind: ip(V6_RELAY),
        advertised: ip(V6_RELAY),
    }];
    config.peer_policy.server_addresses.push(ip(V6_RELAY));
    config
}

fn additional() -> AnyAttribute<'static> {
    AnyAttribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::Ipv6))
}

fn requested(family: AddressFamily) -> AnyAttribute<'static> {
    AnyAttribute::RequestedAddressFamily(RequestedAddressFamily(family))
}

/// A dual allocation for `client`: its IPv4 and IPv6 relayed addresses.
fn allocate_dual(h: &mut Harness, client: &mut Client) -> (SocketAddr, SocketAddr) {
    let reply = h.allocate_with(client, &[additional()]);
    assert_success(&reply, &client.key());
    assert_eq!(address_error(&reply), None);
    let relayed = relayed_addresses(&reply);
    assert_eq!(relayed.len(), 2, "two XOR-RELAYED-ADDRESS");
    (relayed[0], relayed[1])
}

fn deleted(h: &Harness) -> Vec<(SocketAddr, DeleteReason)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::AllocationDeleted { relay, reason, .. } => Some((*relay, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_dual_allocation_gets_two_relays_ipv4_first() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    let mut alice = Client::alice();
    let (relay4, relay6) = allocate_dual(&mut h, &mut alice);
    assert_eq!(relay4.ip(), addr(SERVER).ip());
    assert_eq!(relay6.ip(), ip(V6_RELAY));
    assert!((50_000..=50_099).contains(&relay6.port()));
    assert!(h.sockets.bound.contains(&relay4) && h.sockets.bound.contains(&relay6));
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.relay_ports_in_use(), 2);
    assert_eq!(h.quotas.total(), 1, "one allocation, one unit of quota");
    let created: Vec<SocketAddr> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::AllocationCreated { relay, .. } => Some(*relay),
            _ => None,
        })
        .collect();
    assert_eq!(created, [relay4], "events name the first relay");
}

#[test]
fn data_flows_both_ways_on_both_families() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    let mut alice = Client::alice();
    let (relay4, relay6) = allocate_dual(&mut h, &mut alice);
    let (peer4, peer6, other6) = (addr(PEER4), addr(PEER6), addr(OTHER_PEER6));
    assert_success(
        &h.create_permission(&mut alice, &[peer4, peer6, other6]),
        &alice.key(),
    );

    // Send indications leave from the relay of the peer's family.
    let (action, packet) = h.send_to_peer(&alice, peer4, b"to four");
    assert_relayed(&action, &packet, relay4, peer4, b"to four");
    let (action, packet) = h.send_to_peer(&alice, peer6, b"to six");
    assert_relayed(&action, &packet, relay6, peer6, b"to six");

    // Channels of both families in one allocation.
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer6), &alice.key());
    assert_success(&h.channel_bind(&mut alice, 0x4001, peer4), &alice.key());
    let packet = channel_data(0x4000, b"six");
    let (action, _) = h.send(&alice, &packet);
    assert_relayed(&action, &packet, relay6, peer6, b"six");
    let packet = channel_data(0x4001, b"four");
    let (action, _) = h.send(&alice, &packet);
    assert_relayed(&action, &packet, relay4, peer4, b"four");

    // Back from peers of both families, on either relay.
    for (relay, peer, channel) in [(relay6, peer6, 0x4000), (relay4, peer4, 0x4001)] {
        let (action, bytes) = h.deliver_from_peer(relay, peer, b"back");
        assert!(
            matches!(action, PeerAction::ForwardInPlace { client, .. } if client == alice.five_tuple),
            "{action:?}"
        );
        let message = ChannelData::parse(&bytes).expect("ChannelData");
        assert_eq!(
            (message.channel().value(), message.data()),
            (channel, &b"back"[..])
        );
    }
    let (action, bytes) = h.deliver_from_peer(relay6, other6, b"unbound");
    assert!(matches!(action, PeerAction::Forward { .. }), "{action:?}");
    assert_eq!(data_indication(&bytes), (other6, b"unbound".to_vec()));
    // Without a permission, neither relay lets a peer in.
    assert!(!h.peer_reaches(&alice, relay6, addr("[2001:db8:5::1]:1")));
    assert!(!h.peer_reaches(&alice, relay4, addr("192.0.2.99:1")));
}

#[test]
fn without_an_ipv6_relay_ip_the_ipv6_half_is_440_and_ipv6_peers_443() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let reply = h.allocate_with(&mut alice, &[additional()]);
    assert_success(&reply, &alice.key());
    let relayed = relayed_addresses(&reply);
    assert_eq!(relayed.len(), 1);
    assert!(relayed[0].is_ipv4());
    assert_eq!(
        address_error(&reply),
        Some((AddressFamily::Ipv6, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED))
    );
    let peer6 = addr(PEER6);
    assert_error(
        &h.create_permission(&mut alice, &[peer6]),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    assert_error(
        &h.channel_bind(&mut alice, 0x4000, peer6),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    assert_eq!(h.send_to_peer(&alice, peer6, b"x").0, ClientAction::Drop);
    assert_error(
        &h.request(&alice, Method::REFRESH, &[requested(AddressFamily::Ipv6)]),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
}

#[test]
fn an_ipv6_port_that_cannot_be_bound_leaves_the_ipv4_half_with_508() {
    let mut config = dual_stack();
    // A full server would redirect, but this allocation is granted, if only in half.
    config.alternate_servers = vec![addr("192.0.2.10:3478")];
    let mut h = Harness::with(config, Quotas::new(100, 100));
    h.sockets.refuse_ip.insert(ip(V6_RELAY));
    let mut alice = Client::alice();
    let reply = h.allocate_with(&mut alice, &[additional()]);
    assert_success(&reply, &alice.key());
    let relayed = relayed_addresses(&reply);
    assert_eq!(relayed.len(), 1);
    assert!(relayed[0].is_ipv4());
    assert_eq!(
        address_error(&reply),
        Some((AddressFamily::Ipv6, ErrorCode::INSUFFICIENT_CAPACITY))
    );
    assert_eq!(h.sockets.bound.len(), 1);
    assert_eq!(h.server.relay_ports_in_use(), 1);
    assert_error(
        &h.create_permission(&mut alice, &[addr(PEER6)]),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    assert_success(
        &h.create_permission(&mut alice, &[addr(PEER4)]),
        &alice.key(),
    );
}

#[test]
fn expiry_frees_both_ports_and_the_quota_once() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    let mut alice = Client::alice();
    let (relay4, relay6) = allocate_dual(&mut h, &mut alice);
    let mut other = Client::new("198.51.100.11:40000", "alice", "secret");
    let kept = h.allocate(&mut other);
    h.create_permission(&mut alice, &[addr(PEER6)]);
    // Keep the second allocation alive past the first one's end.
    h.advance(Duration::from_secs(500));
    assert_success(&h.request(&other, Method::REFRESH, &[]), &other.key());
    h.advance(Duration::from_secs(101));
    assert!(!h.sockets.bound.contains(&relay4));
    assert!(!h.sockets.bound.contains(&relay6));
    assert_eq!(h.sockets.bound.len(), 1, "only the other allocation's port");
    assert!(h.sockets.bound.contains(&kept));
    assert_eq!(h.server.relay_ports_in_use(), 1);
    assert_eq!(h.quotas.total(), 1, "released once, not once per relay");
    assert_eq!(deleted(&h), [(relay4, DeleteReason::Expired)]);
    assert!(!h.peer_reaches(&alice, relay6, addr(PEER6)));
}

#[test]
fn refresh_to_zero_frees_both_ports_and_the_quota_once() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 2));
    let mut alice = Client::alice();
    let (relay4, relay6) = allocate_dual(&mut h, &mut alice);
    let mut other = Client::new("198.51.100.11:40000", "alice", "secret");
    h.allocate(&mut other);
    let reply = h.request(
        &alice,
        Method::REFRESH,
        &[AnyAttribute::Lifetime(Lifetime(0))],
    );
    assert_success(&reply, &alice.key());
    assert!(!h.sockets.bound.contains(&relay4) && !h.sockets.bound.contains(&relay6));
    assert_eq!(h.sockets.bound.len(), 1);
    assert_eq!(h.quotas.total(), 1, "released once, not once per relay");
    assert_eq!(deleted(&h), [(relay4, DeleteReason::Refresh)]);
    // Alice's user quota of two has room for exactly one more allocation.
    let mut third = Client::new("198.51.100.12:40000", "alice", "secret");
    allocate_dual(&mut h, &mut third);
    let mut fourth = Client::new("198.51.100.13:40000", "alice", "secret");
    assert_error(
        &h.allocate_with(&mut fourth, &[]),
        ErrorCode::ALLOCATION_QUOTA_REACHED,
    );
}

#[test]
fn refresh_may_name_either_family_of_a_dual_allocation() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    let mut alice = Client::alice();
    let (relay4, relay6) = allocate_dual(&mut h, &mut alice);
    for family in [AddressFamily::Ipv6, AddressFamily::Ipv4] {
        let reply = h.request(
            &alice,
            Method::REFRESH,
            &[requested(family), AnyAttribute::Lifetime(Lifetime(1200))],
        );
        assert_success(&reply, &alice.key());
    }
    // Both relays share the lifetime the Refresh granted.
    h.advance(Duration::from_secs(1100));
    assert!(h.sockets.bound.contains(&relay4) && h.sockets.bound.contains(&relay6));
    h.advance(Duration::from_secs(101));
    assert!(h.sockets.bound.is_empty());
}

#[test]
fn a_retransmitted_dual_allocate_gets_the_identical_answer() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    // The IPv6 half fails the first time only: the retransmission must still say so.
    h.sockets.refuse_ip.insert(ip(V6_RELAY));
    let mut alice = Client::alice();
    let attrs = [
        AnyAttribute::RequestedTransport(RequestedTransport::UDP),
        additional(),
    ];
    let challenge = h.request(&alice, Method::ALLOCATE, &attrs);
    assert!(alice.learn_nonce(&challenge));
    let tid = h.tid();
    let request = alice.build(Method::ALLOCATE, tid, &attrs);
    let (_, first) = h.send(&alice, &request);
    assert_success(&first, &alice.key());
    h.sockets.refuse_ip.clear();
    h.advance(Duration::from_secs(20));
    let (_, again) = h.send(&alice, &request);
    assert_eq!(again, first, "same transaction, same answer");
    assert_eq!(h.sockets.bound.len(), 1);

    let mut bob = Client::bob();
    let challenge = h.request(&bob, Method::ALLOCATE, &attrs);
    assert!(bob.learn_nonce(&challenge));
    let tid = h.tid();
    let request = bob.build(Method::ALLOCATE, tid, &attrs);
    let (_, first) = h.send(&bob, &request);
    assert_eq!(relayed_addresses(&first).len(), 2);
    let (_, again) = h.send(&bob, &request);
    assert_eq!(again, first, "same transaction, same answer");
    assert_eq!(
        h.sockets.bound.len(),
        3,
        "no more ports for the retransmission"
    );
}

#[test]
fn dual_allocation_conflicts_are_400() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    let mut alice = Client::alice();
    for extra in [
        AnyAttribute::EvenPort(EvenPort { reserve_next: true }),
        AnyAttribute::ReservationToken(ReservationToken([1; 8])),
    ] {
        let reply = h.allocate_with(&mut alice, &[additional(), extra]);
        assert_error(&reply, ErrorCode::BAD_REQUEST);
    }
    // EVEN-PORT without a reservation asks for even ports on both relays.
    let reply = h.allocate_with(
        &mut alice,
        &[additional(), AnyAttribute::EvenPort(EvenPort::default())],
    );
    let relayed = relayed_addresses(&reply);
    assert_eq!(relayed.len(), 2);
    assert!(relayed.iter().all(|r| r.port() % 2 == 0), "{relayed:?}");
}

// --- The relay IP of a family the client did not reach ------------------------------------

#[test]
fn family_fallback_gives_an_ipv6_relay_to_an_ipv4_client() {
    let mut config = config();
    config.family_fallback = vec![ip("2001:db8::5")];
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::alice();
    let reply = h.allocate_with(&mut alice, &[requested(AddressFamily::Ipv6)]);
    let relayed = relayed_address(&reply);
    assert_eq!(relayed.ip(), ip("2001:db8::5"));
    assert!(h.sockets.bound.contains(&relayed));
    // The same fallback serves the IPv6 half of a dual allocation.
    let mut bob = Client::bob();
    let reply = h.allocate_with(&mut bob, &[additional()]);
    let relayed = relayed_addresses(&reply);
    assert_eq!(
        relayed.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
        [addr(SERVER).ip(), ip("2001:db8::5")]
    );
}

#[test]
fn a_configured_relay_comes_before_the_fallback_and_a_wildcard_fallback_is_none() {
    let mut configured = dual_stack();
    configured.family_fallback = vec![ip("2001:db8::5")];
    let mut h = Harness::with(configured, Quotas::new(100, 100));
    let mut alice = Client::alice();
    let reply = h.allocate_with(&mut alice, &[requested(AddressFamily::Ipv6)]);
    assert_eq!(relayed_address(&reply).ip(), ip(V6_RELAY));

    let mut wildcard = config();
    wildcard.family_fallback = vec![ip("::")];
    let mut h = Harness::with(wildcard, Quotas::new(100, 100));
    let mut alice = Client::alice();
    let reply = h.allocate_with(&mut alice, &[requested(AddressFamily::Ipv6)]);
    assert_error(&reply, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
}

#[test]
fn a_client_of_the_ipv6_listener_gets_ipv4_first_from_the_fallback() {
    let mut config = config();
    config.family_fallback = vec![addr(SERVER).ip()];
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::new("[2001:db8:9::10]:40000", "alice", "secret");
    alice.five_tuple.server = addr("[2001:db8::1]:3478");
    let reply = h.allocate_with(&mut alice, &[additional()]);
    assert_success(&reply, &alice.key());
    let relayed = relayed_addresses(&reply);
    assert_eq!(
        relayed.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
        [addr(SERVER).ip(), ip("2001:db8::1")]
    );
    // Without any IPv4 relay IP, a dual allocation has no first half: 440.
    let mut h = Harness::new();
    let mut bob = Client::new("[2001:db8:9::11]:40000", "bob", "hunter2");
    bob.five_tuple.server = addr("[2001:db8::1]:3478");
    assert_error(
        &h.allocate_with(&mut bob, &[additional()]),
        ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
    );
    let reply = h.allocate_with(&mut bob, &[]);
    assert!(
        relayed_address(&reply).is_ipv6(),
        "a plain Allocate still works"
    );
}

// --- Random sequences ---------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Allocate {
        client: usize,
        dual: bool,
    },
    Delete(usize),
    Advance(u64),
    /// Whether the IPv6 relay IP refuses binds from now on.
    RefuseV6(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize, any::<bool>()).prop_map(|(client, dual)| Step::Allocate { client, dual }),
        2 => (0..4usize).prop_map(Step::Delete),
        2 => (0..400u64).prop_map(Step::Advance),
        1 => any::<bool>().prop_map(Step::RefuseV6),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Whatever the order of dual and single allocations, deletions, expiries, full port
    /// ranges and failing IPv6 binds, every bound port belongs to one allocation and every
    /// allocation holds one unit of quota.
    #[test]
    fn dual_allocations_keep_ports_and_quotas_consistent(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let mut config = dual_stack();
        config.relay_ports = 50_000..=50_004;
        config.peer_policy.relay_ports = 50_000..=50_004;
        config.alternate_servers = vec![addr("192.0.2.10:3478")];
        let mut h = Harness::with(config, Quotas::new(3, 3));
        let mut clients: Vec<Client> = (0..4)
            .map(|i| Client::new(&format!("198.51.100.{}:40000", 10 + i), "alice", "secret"))
            .collect();
        for step in &steps {
            match *step {
                Step::Allocate { client, dual } => {
                    let extra = if dual { vec![additional()] } else { Vec::new() };
                    let reply = h.allocate_with(&mut clients[client], &extra);
                    prop_assert!(!reply.is_empty());
                }
                Step::Delete(client) => {
                    h.request_fresh(
                        &mut clients[client],
                        Method::REFRESH,
                        &[AnyAttribute::Lifetime(Lifetime(0))],
                    );
                }
                Step::Advance(seconds) => h.advance(Duration::from_secs(seconds)),
                Step::RefuseV6(refuse) => {
                    if refuse {
                        h.sockets.refuse_ip.insert(ip(V6_RELAY));
                    } else {
                        h.sockets.refuse_ip.clear();
                    }
                }
            }
            prop_assert_eq!(h.server.relay_ports_in_use(), h.sockets.bound.len());
            prop_assert_eq!(h.quotas.total() as usize, h.server.allocation_count());
        }
        h.advance(Duration::from_secs(3_600));
        prop_assert!(h.sockets.bound.is_empty());
        prop_assert_eq!(h.quotas.total(), 0);
    }
}
