//! CreatePermission (RFC 8656 §10), ChannelBind (§12) and the peer address policy, with the
//! relay-target items of the abuse catalogue (design/security.md): every denied range in every
//! encoding, over every client transport, and the server's own addresses.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use icebreaker_turn::{
    ClientAction, ClientTransport, DenyReason, PeerAction, Quotas, RelayAddress, TurnConfig,
};
use icebreaker_wire::attr::{
    AddressFamily, AnyAttribute, AttrType, Lifetime, RawAttribute, RequestedAddressFamily,
    XorPeerAddress,
};
use icebreaker_wire::{ChannelData, ChannelNumber, ChannelRange, ErrorCode, Method};

const PEER: &str = "198.51.100.99:9000";
const OTHER_PEER: &str = "192.0.2.7:7000";
const THIRD_PEER: &str = "8.8.8.8:53";
const V6_RELAY: &str = "2001:db8::1";

/// A server that also relays IPv6, on an address that is one of its own.
fn dual_stack() -> TurnConfig {
    let mut config = config();
    let v6 = V6_RELAY.parse().expect("literal");
    config.relay = vec![RelayAddress {
        bind: v6,
        advertised: v6,
    }];
    config.peer_policy.server_addresses.push(v6);
    config
}

fn allocate_v6(h: &mut Harness, client: &mut Client) -> SocketAddr {
    let reply = h.allocate_with(
        client,
        &[AnyAttribute::RequestedAddressFamily(
            RequestedAddressFamily(AddressFamily::Ipv6),
        )],
    );
    let relayed = relayed_address(&reply);
    assert!(relayed.is_ipv6());
    relayed
}

/// An allocation that outlives the 600 s channel lifetime, so that expiry tests see the channel
/// and not the allocation end.
fn long_allocation(h: &mut Harness, client: &mut Client) -> SocketAddr {
    relayed_address(&h.allocate_with(client, &[AnyAttribute::Lifetime(Lifetime(3600))]))
}

/// Whether ChannelData on `channel` from `client` is relayed, and to `peer`.
fn channel_relays(h: &mut Harness, client: &Client, channel: u16, peer: SocketAddr) -> bool {
    match h.send(client, &channel_data(channel, b"media")).0 {
        ClientAction::Relay { peer: to, .. } => {
            assert_eq!(to, peer, "relayed to the wrong peer");
            true
        }
        ClientAction::Drop => false,
        other => panic!("unexpected {other:?}"),
    }
}

/// The channel a peer's data arrives on, if it arrives as ChannelData.
fn peer_channel(h: &mut Harness, relay: SocketAddr, peer: SocketAddr) -> Option<u16> {
    match h.deliver_from_peer(relay, peer, b"media") {
        (PeerAction::ForwardInPlace { .. }, bytes) => Some(
            ChannelData::parse(&bytes)
                .expect("ChannelData")
                .channel()
                .value(),
        ),
        _ => None,
    }
}

// --- CreatePermission ---------------------------------------------------------------------

#[test]
fn create_permission_without_a_peer_address_is_400() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    assert_error(
        &h.create_permission(&mut alice, &[]),
        ErrorCode::BAD_REQUEST,
    );
}

#[test]
fn malformed_peer_address_is_400_and_installs_nothing() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peer = addr(PEER);
    let malformed: [&[u8]; 4] = [
        &[],
        &[0, 1, 0x21, 0x12, 1, 2],       // IPv4 family, 6 bytes
        &[0, 2, 0x21, 0x12, 1, 2, 3, 4], // IPv6 family, IPv4 length
        &[0, 3, 0x21, 0x12, 1, 2, 3, 4], // no such family
    ];
    for value in malformed {
        // A well-formed peer first: the bad one must void the whole request.
        let reply = h.request_fresh(
            &mut alice,
            Method::CREATE_PERMISSION,
            &[
                AnyAttribute::XorPeerAddress(XorPeerAddress(peer)),
                AnyAttribute::Unknown(RawAttribute {
                    attr_type: AttrType::XOR_PEER_ADDRESS,
                    value,
                }),
            ],
        );
        assert_error(&reply, ErrorCode::BAD_REQUEST);
    }
    assert!(!h.peer_reaches(&alice, relay, peer));
}

#[test]
fn peer_of_the_other_family_is_443() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    let mut alice = Client::alice();
    let relay4 = h.allocate(&mut alice);
    let v6_peer = addr("[2001:db8::99]:9000");
    assert_error(
        &h.create_permission(&mut alice, &[v6_peer]),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    assert_error(
        &h.channel_bind(&mut alice, 0x4000, v6_peer),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    // All or nothing here too: the IPv4 peer beside it is not installed.
    assert_error(
        &h.create_permission(&mut alice, &[addr(PEER), v6_peer]),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    assert!(!h.peer_reaches(&alice, relay4, addr(PEER)));

    let mut alice6 = Client::new("198.51.100.10:40001", "alice", "secret");
    allocate_v6(&mut h, &mut alice6);
    assert_error(
        &h.create_permission(&mut alice6, &[addr(PEER)]),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    assert_error(
        &h.channel_bind(&mut alice6, 0x4000, addr(PEER)),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    assert_success(&h.create_permission(&mut alice6, &[v6_peer]), &alice6.key());
    assert!(h.denials().is_empty(), "a family mismatch is not a denial");
}

#[test]
fn several_peers_in_one_request_are_all_installed() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peers = [addr(PEER), addr(OTHER_PEER), addr(THIRD_PEER)];
    assert_success(&h.create_permission(&mut alice, &peers), &alice.key());
    for peer in peers {
        assert!(h.peer_reaches(&alice, relay, peer), "{peer}");
    }
    assert!(!h.peer_reaches(&alice, relay, addr("1.1.1.1:53")));
}

#[test]
fn one_denied_peer_fails_the_whole_request_with_403() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let denied = addr("10.0.0.1:80");
    let reply = h.create_permission(&mut alice, &[addr(PEER), denied, addr(OTHER_PEER)]);
    assert_error(&reply, ErrorCode::FORBIDDEN);
    assert_eq!(
        h.denials(),
        [(alice.five_tuple, denied, DenyReason::Private)]
    );
    for peer in [PEER, OTHER_PEER] {
        assert!(!h.peer_reaches(&alice, relay, addr(peer)), "{peer}");
    }
}

// --- The peer address policy ----------------------------------------------------------------

const DENIED_V4: [(&str, DenyReason); 20] = [
    ("0.0.0.0:80", DenyReason::Unspecified),
    ("0.1.2.3:80", DenyReason::Unspecified),
    ("127.0.0.1:80", DenyReason::Loopback),
    ("127.1.2.3:5432", DenyReason::Loopback),
    ("169.254.169.254:80", DenyReason::LinkLocal),
    ("10.1.2.3:80", DenyReason::Private),
    ("172.16.0.1:80", DenyReason::Private),
    ("172.31.255.255:80", DenyReason::Private),
    ("192.168.1.1:80", DenyReason::Private),
    ("100.64.0.1:80", DenyReason::CarrierGradeNat),
    ("100.127.255.254:80", DenyReason::CarrierGradeNat),
    ("224.0.0.1:5353", DenyReason::Multicast),
    ("239.255.255.250:1900", DenyReason::Multicast),
    ("255.255.255.255:67", DenyReason::Multicast),
    ("192.0.0.8:80", DenyReason::Reserved),
    ("198.18.0.1:80", DenyReason::Reserved),
    ("240.0.0.1:80", DenyReason::Reserved),
    // The server itself outside the relay range 50000..=50099: its listener, SSH, metrics.
    ("203.0.113.1:3478", DenyReason::ServerAddress),
    ("203.0.113.1:22", DenyReason::ServerAddress),
    ("203.0.113.1:9641", DenyReason::ServerAddress),
];

const DENIED_V6: [(&str, DenyReason); 19] = [
    ("[::]:80", DenyReason::Unspecified),
    ("[::1]:80", DenyReason::Loopback),
    ("[::ffff:127.0.0.1]:80", DenyReason::Loopback),
    ("[::127.0.0.1]:80", DenyReason::Loopback),
    ("[64:ff9b::7f00:1]:80", DenyReason::Loopback),
    ("[2002:7f00:1::]:80", DenyReason::Loopback),
    ("[2001:0:7f00:1::]:80", DenyReason::Loopback),
    ("[::ffff:169.254.169.254]:80", DenyReason::LinkLocal),
    ("[64:ff9b::a9fe:a9fe]:80", DenyReason::LinkLocal),
    ("[::ffff:10.0.0.1]:80", DenyReason::Private),
    ("[fc00::1]:80", DenyReason::Private),
    ("[fdff:ffff::1]:80", DenyReason::Private),
    ("[fe80::1]:80", DenyReason::LinkLocal),
    ("[febf::1]:80", DenyReason::LinkLocal),
    ("[ff02::1]:5353", DenyReason::Multicast),
    ("[ff0e::1]:80", DenyReason::Multicast),
    ("[2001:db8::1]:22", DenyReason::ServerAddress),
    ("[::ffff:203.0.113.1]:3478", DenyReason::ServerAddress),
    ("[2002:cb00:7101::]:9641", DenyReason::ServerAddress),
];

#[test]
fn every_denied_peer_is_refused_over_every_transport() {
    for transport in [
        ClientTransport::Udp,
        ClientTransport::Tcp,
        ClientTransport::Tls,
        ClientTransport::Dtls,
    ] {
        let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
        let mut alice4 = Client::alice();
        alice4.five_tuple.transport = transport;
        let mut alice6 = Client::new("198.51.100.10:40001", "alice", "secret");
        alice6.five_tuple.transport = transport;
        let relay4 = h.allocate(&mut alice4);
        let relay6 = allocate_v6(&mut h, &mut alice6);
        for &(peer, reason) in &DENIED_V4 {
            check_denied(&mut h, &mut alice4, relay4, addr(peer), reason);
        }
        for &(peer, reason) in &DENIED_V6 {
            check_denied(&mut h, &mut alice6, relay6, addr(peer), reason);
        }
    }
}

/// CreatePermission and ChannelBind answer 403, a Send is dropped, each reporting `reason`, and
/// no permission is left behind.
fn check_denied(
    h: &mut Harness,
    client: &mut Client,
    relay: SocketAddr,
    peer: SocketAddr,
    reason: DenyReason,
) {
    let context = format!("{peer} over {:?}", client.five_tuple.transport);
    h.events.clear();
    let reply = h.create_permission(client, &[peer]);
    assert_eq!(error_code(&reply), Some(ErrorCode::FORBIDDEN), "{context}");
    let reply = h.channel_bind(client, 0x4000, peer);
    assert_eq!(error_code(&reply), Some(ErrorCode::FORBIDDEN), "{context}");
    let (action, _) = h.send_to_peer(client, peer, b"x");
    assert_eq!(action, ClientAction::Drop, "{context}");
    assert_eq!(
        h.denials(),
        [(client.five_tuple, peer, reason); 3],
        "{context}"
    );
    assert!(!h.peer_reaches(client, relay, peer), "{context}");
}

#[test]
fn another_allocations_relayed_address_is_a_peer_like_any_other() {
    let mut h = Harness::new();
    let (mut alice, mut bob) = (Client::alice(), Client::bob());
    let alice_relay = h.allocate(&mut alice);
    let bob_relay = h.allocate(&mut bob);
    assert_eq!(alice_relay.ip(), addr(SERVER).ip());
    assert_eq!(bob_relay.ip(), addr(SERVER).ip());
    assert_success(&h.create_permission(&mut alice, &[bob_relay]), &alice.key());
    assert_success(&h.create_permission(&mut bob, &[alice_relay]), &bob.key());
    assert_success(&h.channel_bind(&mut bob, 0x4123, alice_relay), &bob.key());
    assert!(h.denials().is_empty());

    let (action, packet) = h.send_to_peer(&alice, bob_relay, b"hello bob");
    let ClientAction::Relay {
        relay,
        peer,
        range,
        dont_fragment,
    } = action
    else {
        panic!("not relayed: {action:?}");
    };
    assert_eq!(
        (relay, peer, dont_fragment),
        (alice_relay, bob_relay, false)
    );
    assert_eq!(&packet[range], b"hello bob");

    // The driver sends it from alice's relay socket; it arrives on bob's, on his channel.
    let (action, bytes) = h.deliver_from_peer(bob_relay, alice_relay, b"hello bob");
    assert!(
        matches!(action, PeerAction::ForwardInPlace { client, .. } if client == bob.five_tuple)
    );
    let message = ChannelData::parse(&bytes).expect("ChannelData");
    assert_eq!(message.channel().value(), 0x4123);
    assert_eq!(message.data(), b"hello bob");

    // And back, over the channel.
    let ClientAction::Relay { relay, peer, .. } = h.send(&bob, &channel_data(0x4123, b"hi")).0
    else {
        panic!("not relayed");
    };
    assert_eq!((relay, peer), (bob_relay, alice_relay));
    let (_, bytes) = h.deliver_from_peer(alice_relay, bob_relay, b"hi");
    assert_eq!(data_indication(&bytes), (bob_relay, b"hi".to_vec()));
}

#[test]
fn a_permission_for_the_server_address_does_not_open_its_other_ports() {
    let mut h = Harness::new();
    let (mut alice, mut bob) = (Client::alice(), Client::bob());
    h.allocate(&mut alice);
    let bob_relay = h.allocate(&mut bob);
    assert_success(&h.create_permission(&mut alice, &[bob_relay]), &alice.key());
    h.events.clear();
    for port in [22, 3478, 9641, 49_999, 50_100] {
        let peer = SocketAddr::new(bob_relay.ip(), port);
        let (action, _) = h.send_to_peer(&alice, peer, b"GET /metrics");
        assert_eq!(action, ClientAction::Drop, "{peer}");
        assert_error(
            &h.channel_bind(&mut alice, 0x4000, peer),
            ErrorCode::FORBIDDEN,
        );
    }
    let denials = h.denials();
    assert_eq!(denials.len(), 10);
    assert!(denials.iter().all(|d| d.2 == DenyReason::ServerAddress));
    // Another allocation's port is still reachable.
    assert!(matches!(
        h.send_to_peer(&alice, bob_relay, b"x").0,
        ClientAction::Relay { .. }
    ));
}

#[test]
fn other_spellings_of_the_server_address_do_not_open_its_other_ports() {
    let mut h = Harness::with(dual_stack(), Quotas::new(100, 100));
    let mut alice = Client::new("198.51.100.10:40001", "alice", "secret");
    allocate_v6(&mut h, &mut alice);
    // Mapped, 6to4 and plain spellings of the server's addresses, each on a relay-range port
    // (allowed: it may be another allocation), then on a service port.
    for ip in ["::ffff:203.0.113.1", "2002:cb00:7101::", V6_RELAY] {
        let ip = ip.parse().expect("literal");
        let relay_port = SocketAddr::new(ip, 50_050);
        assert_success(
            &h.create_permission(&mut alice, &[relay_port]),
            &alice.key(),
        );
        assert!(matches!(
            h.send_to_peer(&alice, relay_port, b"x").0,
            ClientAction::Relay { .. }
        ));
        let service = SocketAddr::new(ip, 22);
        h.events.clear();
        let (action, _) = h.send_to_peer(&alice, service, b"SSH-2.0-");
        assert_eq!(action, ClientAction::Drop, "{service}");
        assert_eq!(
            h.denials(),
            [(alice.five_tuple, service, DenyReason::ServerAddress)]
        );
    }
}

#[test]
fn allow_list_opens_loopback_and_the_deny_list_wins_over_it() {
    let mut config = config();
    config.peer_policy.allow = vec!["127.0.0.0/8".parse().expect("literal")];
    config.peer_policy.deny = vec!["127.0.0.2/32".parse().expect("literal")];
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let local = addr("127.0.0.1:5000");
    assert_success(&h.create_permission(&mut alice, &[local]), &alice.key());
    assert!(h.peer_reaches(&alice, relay, local));
    assert!(matches!(
        h.send_to_peer(&alice, local, b"x").0,
        ClientAction::Relay { peer, .. } if peer == local
    ));
    assert_success(&h.channel_bind(&mut alice, 0x4000, local), &alice.key());

    let denied = addr("127.0.0.2:5000");
    assert_error(
        &h.create_permission(&mut alice, &[denied]),
        ErrorCode::FORBIDDEN,
    );
    assert_error(
        &h.channel_bind(&mut alice, 0x4001, denied),
        ErrorCode::FORBIDDEN,
    );
    // The allow list opens only what it names.
    let private = addr("10.0.0.1:5000");
    assert_error(
        &h.create_permission(&mut alice, &[private]),
        ErrorCode::FORBIDDEN,
    );
    let denials = h.denials();
    assert_eq!(
        denials,
        [
            (alice.five_tuple, denied, DenyReason::DenyList),
            (alice.five_tuple, denied, DenyReason::DenyList),
            (alice.five_tuple, private, DenyReason::Private),
        ]
    );
}

// --- Permission lifetime and quota ------------------------------------------------------------

#[test]
fn a_permission_lasts_exactly_300_seconds() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peer = addr(PEER);
    // Off the one-second sweep, so that the data path and not a sweep decides at 300 s.
    h.advance(Duration::from_millis(500));
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    h.advance(Duration::from_secs(299));
    assert!(h.peer_reaches(&alice, relay, peer));
    assert!(matches!(
        h.send_to_peer(&alice, peer, b"x").0,
        ClientAction::Relay { .. }
    ));
    h.advance(Duration::from_secs(1));
    assert!(!h.peer_reaches(&alice, relay, peer));
    assert_eq!(h.send_to_peer(&alice, peer, b"x").0, ClientAction::Drop);
}

#[test]
fn create_permission_again_refreshes_it() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate_with(&mut alice, &[AnyAttribute::Lifetime(Lifetime(3600))]);
    let relay = relayed_address(&relay);
    let peer = addr(PEER);
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    h.advance(Duration::from_secs(200));
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    h.advance(Duration::from_secs(299));
    assert!(
        h.peer_reaches(&alice, relay, peer),
        "300 s from the refresh"
    );
    h.advance(Duration::from_secs(1));
    assert!(!h.peer_reaches(&alice, relay, peer));
}

#[test]
fn permissions_match_the_ip_only() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peer = addr(PEER);
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    for port in [1, 9001, 65_535] {
        let other_port = SocketAddr::new(peer.ip(), port);
        assert!(h.peer_reaches(&alice, relay, other_port), "{other_port}");
        assert!(matches!(
            h.send_to_peer(&alice, other_port, b"x").0,
            ClientAction::Relay { peer, .. } if peer == other_port
        ));
    }
    assert!(!h.peer_reaches(&alice, relay, addr("198.51.100.98:9000")));
}

#[test]
fn permission_quota_is_508_and_refreshing_still_works() {
    let mut config = config();
    config.max_permissions = 2;
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let (a, b, c) = (addr(PEER), addr(OTHER_PEER), addr(THIRD_PEER));
    assert_success(&h.create_permission(&mut alice, &[a, b]), &alice.key());
    assert_error(
        &h.create_permission(&mut alice, &[c]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    // A refresh beside a new IP is refused as a whole, leaving the new IP out.
    assert_error(
        &h.create_permission(&mut alice, &[a, c]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert_error(
        &h.channel_bind(&mut alice, 0x4000, c),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert!(!h.peer_reaches(&alice, relay, c));
    // Another port of a permitted IP takes no new slot.
    let a_other_port = SocketAddr::new(a.ip(), 1234);
    assert_success(
        &h.create_permission(&mut alice, &[a, a_other_port, b]),
        &alice.key(),
    );
    assert_success(&h.channel_bind(&mut alice, 0x4000, a), &alice.key());
}

// --- ChannelBind ----------------------------------------------------------------------------

#[test]
fn channel_numbers_outside_0x4000_to_0x4fff_are_400() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    for number in [0x0000, 0x3FFF, 0x5000, 0x7FFF, 0x8000, 0xFFFF] {
        let reply = h.channel_bind(&mut alice, number, addr(PEER));
        assert_eq!(
            error_code(&reply),
            Some(ErrorCode::BAD_REQUEST),
            "{number:#x}"
        );
    }
    assert_success(
        &h.channel_bind(&mut alice, 0x4000, addr(PEER)),
        &alice.key(),
    );
    assert_success(
        &h.channel_bind(&mut alice, 0x4FFF, addr(OTHER_PEER)),
        &alice.key(),
    );
}

#[test]
fn channel_bind_without_a_number_or_a_peer_is_400() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    let number = channel_number(0x4000);
    let number = AnyAttribute::Unknown(RawAttribute {
        attr_type: AttrType::CHANNEL_NUMBER,
        value: &number,
    });
    let peer = AnyAttribute::XorPeerAddress(XorPeerAddress(addr(PEER)));
    for attrs in [vec![number], vec![peer], vec![]] {
        let reply = h.request_fresh(&mut alice, Method::CHANNEL_BIND, &attrs);
        assert_error(&reply, ErrorCode::BAD_REQUEST);
    }
}

#[test]
fn a_bound_channel_cannot_move_to_another_peer() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    let peer = addr(PEER);
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    // Another IP, and the same IP on another port: both are other transport addresses.
    for other in [addr(OTHER_PEER), SocketAddr::new(peer.ip(), 9001)] {
        assert_error(
            &h.channel_bind(&mut alice, 0x4000, other),
            ErrorCode::BAD_REQUEST,
        );
    }
    assert!(channel_relays(&mut h, &alice, 0x4000, peer));
}

#[test]
fn a_bound_peer_cannot_move_to_another_channel() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peer = addr(PEER);
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    assert_error(
        &h.channel_bind(&mut alice, 0x4001, peer),
        ErrorCode::BAD_REQUEST,
    );
    assert!(!channel_relays(&mut h, &alice, 0x4001, peer));
    assert_eq!(peer_channel(&mut h, relay, peer), Some(0x4000));
}

#[test]
fn binding_the_same_channel_and_peer_again_refreshes_it() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = long_allocation(&mut h, &mut alice);
    let peer = addr(PEER);
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    h.advance(Duration::from_secs(500));
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    // Past the first binding's 600 s, and within the permission the rebinding refreshed.
    h.advance(Duration::from_secs(200));
    assert!(channel_relays(&mut h, &alice, 0x4000, peer));
    assert_eq!(peer_channel(&mut h, relay, peer), Some(0x4000));
}

#[test]
fn channel_bind_installs_and_refreshes_the_permission() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peer = addr(PEER);
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    // Any port of the bound IP may send, as with CreatePermission.
    assert!(h.peer_reaches(&alice, relay, SocketAddr::new(peer.ip(), 1)));
    h.advance(Duration::from_secs(250));
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    h.advance(Duration::from_secs(299));
    assert!(h.peer_reaches(&alice, relay, peer));
    h.advance(Duration::from_secs(1));
    assert!(!h.peer_reaches(&alice, relay, peer));
}

#[test]
fn a_channel_lasts_600_seconds() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = long_allocation(&mut h, &mut alice);
    let peer = addr(PEER);
    // Off the one-second sweep, so that the data path and not a sweep decides at 600 s.
    h.advance(Duration::from_millis(500));
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    // The permission the binding installed lasts 300 s; keep it alive on its own.
    h.advance(Duration::from_secs(290));
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    h.advance(Duration::from_secs(290));
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    h.advance(Duration::from_secs(19));
    assert!(channel_relays(&mut h, &alice, 0x4000, peer), "at 599 s");
    assert_eq!(peer_channel(&mut h, relay, peer), Some(0x4000));
    h.advance(Duration::from_secs(1));
    assert!(!channel_relays(&mut h, &alice, 0x4000, peer), "at 600 s");
    // The permission is still there: the peer's data now comes as a Data indication.
    let (action, bytes) = h.deliver_from_peer(relay, peer, b"media");
    assert!(matches!(action, PeerAction::Forward { .. }));
    assert_eq!(data_indication(&bytes), (peer, b"media".to_vec()));
}

#[test]
fn an_expired_channel_keeps_its_number_and_peer_through_its_quarantine() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    long_allocation(&mut h, &mut alice);
    let (peer, other) = (addr(PEER), addr(OTHER_PEER));
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    h.advance(Duration::from_secs(650));
    assert_success(
        &h.create_permission(&mut alice, &[peer, other]),
        &alice.key(),
    );
    assert!(!channel_relays(&mut h, &alice, 0x4000, peer), "expired");
    assert_error(
        &h.channel_bind(&mut alice, 0x4000, other),
        ErrorCode::BAD_REQUEST,
    );
    assert_error(
        &h.channel_bind(&mut alice, 0x4001, peer),
        ErrorCode::BAD_REQUEST,
    );
    // 300 s after the expiry the number is free again.
    h.advance(Duration::from_secs(251));
    assert_success(&h.channel_bind(&mut alice, 0x4000, other), &alice.key());
    assert!(channel_relays(&mut h, &alice, 0x4000, other));
}

#[test]
fn channel_quota_is_508() {
    let mut config = config();
    config.max_channels = 2;
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    assert_success(
        &h.channel_bind(&mut alice, 0x4000, addr(PEER)),
        &alice.key(),
    );
    assert_success(
        &h.channel_bind(&mut alice, 0x4001, addr(OTHER_PEER)),
        &alice.key(),
    );
    assert_error(
        &h.channel_bind(&mut alice, 0x4002, addr(THIRD_PEER)),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert!(!channel_relays(&mut h, &alice, 0x4002, addr(THIRD_PEER)));
    assert_success(
        &h.channel_bind(&mut alice, 0x4000, addr(PEER)),
        &alice.key(),
    );
}

/// RFC 5766 let clients use 0x4000..=0x7FFF and some still do (coturn's own client draws from
/// it); RFC 8656 reserves 0x5000..=0x7FFF. The wider range is accepted only when configured.
#[test]
fn rfc5766_channel_numbers_only_when_configured() {
    for (range, accepted) in [
        (ChannelRange::Rfc8656, false),
        (ChannelRange::Rfc5766, true),
    ] {
        let mut config = config();
        config.channel_range = range;
        let mut h = Harness::with(config, Quotas::new(100, 100));
        let mut alice = Client::alice();
        let relay = h.allocate(&mut alice);
        let peer = addr("198.51.100.99:7000");
        let reply = h.channel_bind(&mut alice, 0x7226, peer);
        if !accepted {
            assert_error(&reply, ErrorCode::BAD_REQUEST);
            continue;
        }
        assert_success(&reply, &alice.key());
        let (action, bytes) = h.deliver_from_peer(relay, peer, b"legacy");
        assert!(
            matches!(action, PeerAction::ForwardInPlace { .. }),
            "{action:?}"
        );
        assert_eq!(&bytes[..2], &[0x72, 0x26]);
        let frame = [0x72, 0x26, 0, 3, b'a', b'b', b'c', 0];
        assert!(matches!(
            h.send(&alice, &frame).0,
            ClientAction::Relay { peer: to, .. } if to == peer
        ));
        assert!(ChannelNumber::new_in(0x8000, ChannelRange::Rfc5766).is_none());
    }
}
