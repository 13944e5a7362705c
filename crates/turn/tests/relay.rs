//! The relay paths (RFC 8656 §11, §12.4–§12.6): Send and Data indications, ChannelData both
//! ways, the bandwidth budget, expiry and reconfiguration, and a property test that feeds the
//! core random traffic.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use icebreaker_turn::{ClientAction, ClientTransport, Event, PEER_HEADROOM, PeerAction, Quotas};
use icebreaker_wire::attr::{
    AnyAttribute, AttrType, Data, EvenPort, Lifetime, RawAttribute, RequestedTransport,
    XorPeerAddress,
};
use icebreaker_wire::{ChannelData, Class, Message, Method};
use proptest::prelude::*;

const PEER: &str = "198.51.100.99:9000";
const OTHER_PEER: &str = "192.0.2.7:7000";

/// Alice with an allocation of `lifetime` seconds and a permission for [`PEER`]; her relayed
/// address.
fn alice_with_permission(h: &mut Harness, alice: &mut Client, lifetime: u32) -> SocketAddr {
    let reply = h.allocate_with(alice, &[AnyAttribute::Lifetime(Lifetime(lifetime))]);
    let relay = relayed_address(&reply);
    assert_success(&h.create_permission(alice, &[addr(PEER)]), &alice.key());
    relay
}

// --- Send indications -------------------------------------------------------------------------

#[test]
fn send_without_an_allocation_is_dropped() {
    let mut h = Harness::new();
    let alice = Client::alice();
    assert_eq!(
        h.send_to_peer(&alice, addr(PEER), b"x").0,
        ClientAction::Drop
    );
    assert!(h.events.is_empty());
}

#[test]
fn send_without_a_permission_is_dropped() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    assert_success(
        &h.create_permission(&mut alice, &[addr(OTHER_PEER)]),
        &alice.key(),
    );
    assert_eq!(
        h.send_to_peer(&alice, addr(PEER), b"x").0,
        ClientAction::Drop
    );
    assert!(h.denials().is_empty(), "an allowed peer is no denial");
}

#[test]
fn send_without_data_or_peer_address_is_dropped() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    alice_with_permission(&mut h, &mut alice, 600);
    let peer = AnyAttribute::XorPeerAddress(XorPeerAddress(addr(PEER)));
    let data = AnyAttribute::Data(Data(b"payload"));
    let bad_peer = AnyAttribute::Unknown(RawAttribute {
        attr_type: AttrType::XOR_PEER_ADDRESS,
        value: &[0, 1, 0x21],
    });
    for attrs in [vec![peer], vec![data], vec![bad_peer, data], vec![]] {
        let packet = h.message(Method::SEND, Class::Indication, &attrs);
        assert_eq!(h.send(&alice, &packet).0, ClientAction::Drop, "{attrs:?}");
    }
}

#[test]
fn send_relays_exactly_the_data_bytes() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    let peer = addr(PEER);
    for len in [1, 5, 8, 301] {
        let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
        let (action, packet) = h.send_to_peer(&alice, peer, &data);
        assert_relayed(&action, &packet, relay, peer, &data);
        assert!(matches!(
            action,
            ClientAction::Relay {
                dont_fragment: false,
                ..
            }
        ));
    }
    // DATA first, the peer after it: the range still finds the data.
    let packet = h.message(
        Method::SEND,
        Class::Indication,
        &[
            AnyAttribute::Data(Data(b"first")),
            AnyAttribute::XorPeerAddress(XorPeerAddress(peer)),
        ],
    );
    let action = h.send(&alice, &packet).0;
    assert_relayed(&action, &packet, relay, peer, b"first");
}

#[test]
fn dont_fragment_in_a_send_sets_the_df_bit() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    let packet = h.send_indication(addr(PEER), b"probe", true);
    let action = h.send(&alice, &packet).0;
    assert_relayed(&action, &packet, relay, addr(PEER), b"probe");
    assert!(matches!(
        action,
        ClientAction::Relay {
            dont_fragment: true,
            ..
        }
    ));
}

#[test]
fn indications_never_get_a_reply_and_create_nothing() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    h.events.clear();
    let other = addr(OTHER_PEER);
    let mut packets = vec![
        h.send_indication(addr(PEER), b"x", false),
        h.send_indication(other, b"x", false),
        h.send_indication(addr("127.0.0.1:22"), b"x", false),
    ];
    let to_other = AnyAttribute::XorPeerAddress(XorPeerAddress(other));
    for method in [
        Method::DATA,
        Method::BINDING,
        Method::ALLOCATE,
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ] {
        packets.push(h.message(
            method,
            Class::Indication,
            &[to_other, AnyAttribute::Data(Data(b"x"))],
        ));
    }
    for packet in &packets {
        let (action, _) = h.send(&alice, packet);
        assert!(!matches!(action, ClientAction::Reply(_)), "{action:?}");
    }
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::Answered { .. } | Event::AllocationCreated { .. }))
    );
    assert!(
        !h.peer_reaches(&alice, relay, other),
        "no permission from an indication"
    );
}

// --- ChannelData from the client -------------------------------------------------------------

#[test]
fn channel_data_without_an_allocation_or_a_channel_is_dropped() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let packet = channel_data(0x4000, b"media");
    assert_eq!(h.send(&alice, &packet).0, ClientAction::Drop);
    alice_with_permission(&mut h, &mut alice, 600);
    assert_eq!(h.send(&alice, &packet).0, ClientAction::Drop);
    assert_success(
        &h.channel_bind(&mut alice, 0x4001, addr(PEER)),
        &alice.key(),
    );
    assert_eq!(h.send(&alice, &packet).0, ClientAction::Drop);
}

#[test]
fn channel_data_on_a_bound_channel_is_relayed() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    let peer = addr(PEER);
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    let packet = channel_data(0x4000, b"hello");
    let action = h.send(&alice, &packet).0;
    assert_eq!(
        action,
        ClientAction::Relay {
            relay,
            peer,
            range: 4..9,
            dont_fragment: false,
        }
    );
    // Padding after the data, as a stream client sends it, is not relayed.
    let mut padded = packet.clone();
    padded.extend_from_slice(&[0, 0, 0]);
    let action = h.send(&alice, &padded).0;
    assert_relayed(&action, &padded, relay, peer, b"hello");
}

#[test]
fn channel_data_shorter_than_its_length_field_is_dropped() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    alice_with_permission(&mut h, &mut alice, 600);
    assert_success(
        &h.channel_bind(&mut alice, 0x4000, addr(PEER)),
        &alice.key(),
    );
    let mut truncated = channel_data(0x4000, b"0123456789");
    truncated.truncate(9);
    for packet in [
        truncated,
        vec![0x40, 0x00, 0xff, 0xff, 1, 2, 3, 4],
        vec![0x40, 0x00, 0x00],
        vec![0x40],
    ] {
        assert_eq!(h.send(&alice, &packet).0, ClientAction::Drop, "{packet:?}");
    }
}

#[test]
fn channel_data_and_send_refresh_nothing() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let reply = h.allocate_with(&mut alice, &[AnyAttribute::Lifetime(Lifetime(900))]);
    let relay = relayed_address(&reply);
    let peer = addr(PEER);
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    let step = Duration::from_secs(10);
    for _ in 0..30 {
        assert!(matches!(
            h.send(&alice, &channel_data(0x4000, b"m")).0,
            ClientAction::Relay { .. }
        ));
        assert!(matches!(
            h.send_to_peer(&alice, peer, b"m").0,
            ClientAction::Relay { .. }
        ));
        h.advance(step);
    }
    // 300 s: the permission the binding installed ran out, however much data flowed.
    assert_eq!(
        h.send(&alice, &channel_data(0x4000, b"m")).0,
        ClientAction::Drop
    );
    assert_eq!(h.send_to_peer(&alice, peer, b"m").0, ClientAction::Drop);
    h.advance(Duration::from_secs(100));
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    for _ in 0..20 {
        assert!(matches!(
            h.send(&alice, &channel_data(0x4000, b"m")).0,
            ClientAction::Relay { .. }
        ));
        h.advance(step);
    }
    // 600 s: the channel ran out too; the peer's data now comes as a Data indication.
    assert_eq!(
        h.send(&alice, &channel_data(0x4000, b"m")).0,
        ClientAction::Drop
    );
    let (_, bytes) = h.deliver_from_peer(relay, peer, b"m");
    assert_eq!(data_indication(&bytes), (peer, b"m".to_vec()));
    assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
    for _ in 0..30 {
        assert!(matches!(
            h.send(&alice, &channel_data(0x4000, b"m")).0,
            ClientAction::Relay { .. }
        ));
        h.advance(step);
    }
    // 900 s: the allocation ends as granted, although data flowed until the last moment.
    assert!(!h.sockets.bound.contains(&relay));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(
        h.send(&alice, &channel_data(0x4000, b"m")).0,
        ClientAction::Drop
    );
}

// --- Data from peers --------------------------------------------------------------------------

#[test]
fn peer_data_without_a_permission_is_dropped() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    assert_eq!(
        h.deliver_from_peer(relay, addr(PEER), b"x").0,
        PeerAction::Drop
    );
    assert_success(
        &h.create_permission(&mut alice, &[addr(OTHER_PEER)]),
        &alice.key(),
    );
    assert_eq!(
        h.deliver_from_peer(relay, addr(PEER), b"x").0,
        PeerAction::Drop
    );
}

#[test]
fn peer_data_with_a_permission_becomes_a_data_indication() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    let peer = addr(PEER);
    let mut buf = [0u8; 64];
    buf[PEER_HEADROOM..PEER_HEADROOM + 5].copy_from_slice(b"hello");
    // Stale bytes in the output buffer must not leak into the padding.
    let mut out = [0xaa; 256];
    let action = h.server.handle_peer(
        h.now,
        relay,
        peer,
        &mut buf,
        PEER_HEADROOM..PEER_HEADROOM + 5,
        &mut out,
    );
    let PeerAction::Forward { client, len } = action else {
        panic!("not forwarded: {action:?}");
    };
    assert_eq!(client, alice.five_tuple);
    let bytes = &out[..len];
    assert_eq!(data_indication(bytes), (peer, b"hello".to_vec()));
    assert_eq!(len % 4, 0);
    assert_eq!(&bytes[len - 3..], &[0, 0, 0], "padding is zeroed");
    let message = Message::parse(bytes).expect("parses");
    assert_eq!(
        message.attributes().count(),
        2,
        "XOR-PEER-ADDRESS and DATA only"
    );
}

#[test]
fn peer_data_on_a_channel_is_written_in_place_as_channel_data() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    let peer = addr(PEER);
    assert_success(&h.channel_bind(&mut alice, 0x4abc, peer), &alice.key());
    let (action, bytes) = h.deliver_from_peer(relay, peer, b"hello");
    assert_eq!(
        action,
        PeerAction::ForwardInPlace {
            client: alice.five_tuple,
            range: 0..9,
        }
    );
    assert_eq!(bytes, [&[0x4a, 0xbc, 0, 5][..], b"hello"].concat());
    // Another port of the same IP has the permission but not the channel.
    let other_port = SocketAddr::new(peer.ip(), 9001);
    let (_, bytes) = h.deliver_from_peer(relay, other_port, b"hello");
    assert_eq!(data_indication(&bytes), (other_port, b"hello".to_vec()));
}

#[test]
fn channel_data_to_a_stream_client_is_padded() {
    for (transport, framed) in [
        (ClientTransport::Udp, 9),
        (ClientTransport::Dtls, 9),
        (ClientTransport::Tcp, 12),
        (ClientTransport::Tls, 12),
    ] {
        let mut h = Harness::new();
        let mut alice = Client::alice();
        alice.five_tuple.transport = transport;
        let relay = alice_with_permission(&mut h, &mut alice, 600);
        let peer = addr(PEER);
        assert_success(&h.channel_bind(&mut alice, 0x4000, peer), &alice.key());
        // Whatever follows the data in the driver's buffer must not reach the client.
        let mut buf = [0xaa; 16];
        buf[PEER_HEADROOM..PEER_HEADROOM + 5].copy_from_slice(b"hello");
        let mut out = [0u8; 64];
        let action = h.server.handle_peer(
            h.now,
            relay,
            peer,
            &mut buf,
            PEER_HEADROOM..PEER_HEADROOM + 5,
            &mut out,
        );
        let PeerAction::ForwardInPlace { client, range } = action else {
            panic!("not in place: {action:?}");
        };
        assert_eq!(client, alice.five_tuple);
        assert_eq!(range, 0..framed, "{transport:?}");
        let bytes = &buf[range];
        let message = ChannelData::parse(bytes).expect("ChannelData");
        assert_eq!(
            (message.channel().value(), message.data()),
            (0x4000, &b"hello"[..])
        );
        assert!(bytes[9..].iter().all(|&b| b == 0), "zeroed padding");
    }
}

#[test]
fn peer_data_without_headroom_is_copied_out_as_channel_data() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    assert_success(
        &h.channel_bind(&mut alice, 0x4000, addr(PEER)),
        &alice.key(),
    );
    let mut buf = *b"hello";
    let mut out = [0u8; 64];
    let action = h
        .server
        .handle_peer(h.now, relay, addr(PEER), &mut buf, 0..5, &mut out);
    assert_eq!(
        action,
        PeerAction::Forward {
            client: alice.five_tuple,
            len: 9
        }
    );
    assert_eq!(&out[..9], [&[0x40, 0, 0, 5][..], b"hello"].concat());
}

#[test]
fn peer_data_to_an_unknown_relay_address_is_dropped() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    for unknown in [
        SocketAddr::new(relay.ip(), relay.port() ^ 1),
        addr("203.0.113.2:50000"),
        SocketAddr::new("::ffff:203.0.113.1".parse().expect("literal"), relay.port()),
    ] {
        assert_eq!(
            h.deliver_from_peer(unknown, addr(PEER), b"x").0,
            PeerAction::Drop
        );
    }
}

// --- Bandwidth, expiry, reconfiguration ---------------------------------------------------------

#[test]
fn bandwidth_beyond_the_budget_is_dropped_until_it_refills() {
    let mut config = config();
    config.max_bandwidth = 1000;
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::alice();
    let relay = alice_with_permission(&mut h, &mut alice, 600);
    let peer = addr(PEER);
    let relayed = |action: &ClientAction| matches!(action, ClientAction::Relay { .. });
    assert!(relayed(&h.send_to_peer(&alice, peer, &[1; 600]).0));
    assert!(!relayed(&h.send_to_peer(&alice, peer, &[1; 600]).0));
    assert!(relayed(&h.send_to_peer(&alice, peer, &[1; 400]).0));
    // One budget for both directions: the client's 1000 bytes left none for the peer.
    assert_eq!(
        h.deliver_from_peer(relay, peer, &[2; 1]).0,
        PeerAction::Drop
    );

    h.advance(Duration::from_secs(1));
    assert!(h.peer_reaches(&alice, relay, peer));
    assert!(!matches!(
        h.deliver_from_peer(relay, peer, &[2; 1000]).0,
        PeerAction::Forward { .. }
    ));
    assert!(matches!(
        h.deliver_from_peer(relay, peer, &[2; 996]).0,
        PeerAction::Forward { .. }
    ));
    assert_eq!(h.send_to_peer(&alice, peer, &[1; 1]).0, ClientAction::Drop);

    h.advance(Duration::from_secs(1));
    assert!(relayed(&h.send_to_peer(&alice, peer, &[1; 1000]).0));
}

#[test]
fn expiry_frees_the_relay_port_and_later_peer_data_is_dropped() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peer = addr(PEER);
    h.advance(Duration::from_secs(500));
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    h.advance(Duration::from_secs(99));
    assert!(h.peer_reaches(&alice, relay, peer));
    assert!(h.sockets.bound.contains(&relay));
    h.advance(Duration::from_secs(1));
    assert!(!h.sockets.bound.contains(&relay), "released at 600 s");
    assert_eq!(h.server.relay_ports_in_use(), 0);
    assert_eq!(
        h.deliver_from_peer(relay, peer, b"late").0,
        PeerAction::Drop
    );
    assert_eq!(h.send_to_peer(&alice, peer, b"late").0, ClientAction::Drop);
}

#[test]
fn handle_timeout_before_poll_timeout_changes_nothing() {
    let mut h = Harness::new();
    let (mut alice, mut bob) = (Client::alice(), Client::bob());
    h.allocate(&mut alice);
    // Bob's allocation ends between two sweeps of the one-second timer started by alice's.
    h.advance(Duration::from_millis(500));
    let bob_relay = h.allocate(&mut bob);
    h.advance(Duration::from_secs(600));
    assert_eq!(h.server.allocation_count(), 1, "alice's ended at 600 s");
    let due = h.server.poll_timeout().expect("bob's still to sweep");
    assert!(due > h.now);
    h.events.clear();
    for early in [h.now, due - Duration::from_millis(1)] {
        h.server.handle_timeout(early, &mut h.sockets);
        h.drain();
        assert_eq!(h.server.poll_timeout(), Some(due));
        assert_eq!(h.server.allocation_count(), 1);
        assert!(h.sockets.bound.contains(&bob_relay));
        assert!(h.events.is_empty(), "{:?}", h.events);
    }
    h.server.handle_timeout(due, &mut h.sockets);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.sockets.bound.is_empty());
}

#[test]
fn reconfigure_keeps_allocations_and_withdraws_newly_denied_peers() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let (kept, denied) = (addr(PEER), addr(OTHER_PEER));
    assert_success(
        &h.create_permission(&mut alice, &[kept, denied]),
        &alice.key(),
    );
    assert_success(&h.channel_bind(&mut alice, 0x4000, kept), &alice.key());
    assert_success(&h.channel_bind(&mut alice, 0x4001, denied), &alice.key());

    let mut config = config();
    config.peer_policy.deny = vec!["192.0.2.0/24".parse().expect("literal")];
    h.server.reconfigure(config, h.now);

    assert_eq!(h.server.allocation_count(), 1);
    assert!(h.sockets.bound.contains(&relay));
    assert_eq!(h.deliver_from_peer(relay, denied, b"x").0, PeerAction::Drop);
    assert_eq!(
        h.send(&alice, &channel_data(0x4001, b"x")).0,
        ClientAction::Drop
    );
    assert_eq!(h.send_to_peer(&alice, denied, b"x").0, ClientAction::Drop);
    let (action, bytes) = h.deliver_from_peer(relay, kept, b"x");
    assert!(matches!(action, PeerAction::ForwardInPlace { .. }));
    assert_eq!(
        ChannelData::parse(&bytes).expect("ChannelData").data(),
        b"x"
    );
    assert!(matches!(
        h.send(&alice, &channel_data(0x4000, b"x")).0,
        ClientAction::Relay { .. }
    ));
    assert_error(
        &h.create_permission(&mut alice, &[denied]),
        icebreaker_wire::ErrorCode::FORBIDDEN,
    );
    // The allocation can still be refreshed with the old nonce and key.
    assert_success(&h.request(&alice, Method::REFRESH, &[]), &alice.key());
}

// --- Random traffic ---------------------------------------------------------------------------

/// Peers of the random traffic: public, denied, another allocation's port, the server's SSH.
const PEERS: [&str; 5] = [
    PEER,
    OTHER_PEER,
    "127.0.0.1:80",
    "203.0.113.1:50001",
    "203.0.113.1:22",
];

#[derive(Clone, Debug)]
enum Kind {
    Allocate {
        lifetime: Option<u32>,
        even_port: Option<bool>,
    },
    Refresh(Option<u32>),
    Permission(usize),
    Bind(u16, usize),
    Send(usize),
    ChannelData(u16),
}

#[derive(Clone, Debug)]
enum Op {
    /// Random bytes from a client.
    Junk(usize, Vec<u8>),
    /// A message the harness builds, then corrupted at `flips` and cut at `cut`.
    Built {
        client: usize,
        kind: Kind,
        flips: Vec<(usize, u8)>,
        cut: Option<usize>,
    },
    /// Bytes from a peer to a relay address.
    Peer(usize, usize, Vec<u8>),
    /// Milliseconds of virtual time.
    Advance(u64),
}

fn kind() -> impl Strategy<Value = Kind> {
    let lifetime = prop::option::of(prop_oneof![
        prop::sample::select(vec![0u32, 1, 600, 3600]),
        any::<u32>()
    ]);
    let channel = prop_oneof![
        prop::sample::select(vec![0x4000u16, 0x4001, 0x4fff, 0x3fff]),
        any::<u16>()
    ];
    // An index into the known peers and then the relayed addresses seen: small, so that
    // permissions, sends and peer data meet.
    let peer = 0..PEERS.len() + 3;
    prop_oneof![
        2 => (lifetime.clone(), prop::option::of(any::<bool>()))
            .prop_map(|(lifetime, even_port)| Kind::Allocate { lifetime, even_port }),
        1 => lifetime.prop_map(Kind::Refresh),
        2 => peer.clone().prop_map(Kind::Permission),
        2 => (channel.clone(), peer.clone()).prop_map(|(c, p)| Kind::Bind(c, p)),
        3 => peer.prop_map(Kind::Send),
        3 => channel.prop_map(Kind::ChannelData),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = prop::collection::vec(any::<u8>(), 0..80);
    prop_oneof![
        1 => (0..3usize, bytes.clone()).prop_map(|(c, b)| Op::Junk(c, b)),
        6 => (
            0..3usize,
            kind(),
            prop::option::weighted(0.25, prop::collection::vec((any::<usize>(), 1..=255u8), 1..4)),
            prop::option::weighted(0.1, any::<usize>()),
        )
            .prop_map(|(client, kind, flips, cut)| Op::Built {
                client,
                kind,
                flips: flips.unwrap_or_default(),
                cut,
            }),
        2 => (any::<usize>(), 0..PEERS.len() + 3, bytes).prop_map(|(r, p, b)| Op::Peer(r, p, b)),
        2 => prop_oneof![4 => 0..3_000u64, 1 => 0..400_000u64].prop_map(Op::Advance),
    ]
}

/// The bytes `client` sends for `kind`; `peers` are the peers and relayed addresses known.
fn build(h: &mut Harness, client: &Client, kind: &Kind, peers: &[SocketAddr]) -> Vec<u8> {
    let peer = |i: usize| peers[i % peers.len()];
    let tid = h.tid();
    let lifetime = |l: &Option<u32>| l.map(|l| AnyAttribute::Lifetime(Lifetime(l)));
    match kind {
        Kind::Allocate {
            lifetime: l,
            even_port,
        } => {
            let mut attrs = vec![AnyAttribute::RequestedTransport(RequestedTransport::UDP)];
            attrs.extend(lifetime(l));
            attrs.extend(
                even_port.map(|reserve_next| AnyAttribute::EvenPort(EvenPort { reserve_next })),
            );
            client.build(Method::ALLOCATE, tid, &attrs)
        }
        Kind::Refresh(l) => client.build(Method::REFRESH, tid, &Vec::from_iter(lifetime(l))),
        Kind::Permission(p) => client.build(
            Method::CREATE_PERMISSION,
            tid,
            &[AnyAttribute::XorPeerAddress(XorPeerAddress(peer(*p)))],
        ),
        Kind::Bind(channel, p) => client.build(
            Method::CHANNEL_BIND,
            tid,
            &[
                AnyAttribute::Unknown(RawAttribute {
                    attr_type: AttrType::CHANNEL_NUMBER,
                    value: &channel_number(*channel),
                }),
                AnyAttribute::XorPeerAddress(XorPeerAddress(peer(*p))),
            ],
        ),
        Kind::Send(p) => h.send_indication(peer(*p), b"data", false),
        Kind::ChannelData(channel) => channel_data(*channel, b"data"),
    }
}

/// Sends `packet` and checks what came back: a reply answers the packet's transaction, a relay
/// takes bytes of the packet from a bound relay socket.
fn exchange(h: &mut Harness, client: &mut Client, packet: &[u8]) {
    let (action, reply) = h.send(client, packet);
    match action {
        ClientAction::Reply(_) => {
            let message = Message::parse(&reply).expect("replies parse");
            assert!(matches!(message.class(), Class::Success | Class::Error));
            assert_eq!(message.transaction_id().as_bytes(), &packet[8..20]);
            client.learn_nonce(&reply);
        }
        ClientAction::Relay { relay, range, .. } => {
            assert!(range.end <= packet.len());
            assert!(h.sockets.bound.contains(&relay));
        }
        ClientAction::Drop => {}
        ClientAction::Close => panic!("a UDP client is never disconnected"),
        ClientAction::PipeToPeer { .. } => panic!("no ConnectionBind succeeds over UDP"),
    }
}

fn run(ops: &[Op]) {
    let mut config = config();
    config.relay_ports = 50_000..=50_009;
    config.peer_policy.relay_ports = 50_000..=50_009;
    config.max_permissions = 3;
    config.max_channels = 3;
    config.max_bandwidth = 2_000;
    let mut h = Harness::with(config, Quotas::new(4, 2));
    let mut tcp = Client::new("198.51.100.30:40000", "alice", "secret");
    tcp.five_tuple.transport = ClientTransport::Tcp;
    let mut clients = [Client::alice(), Client::bob(), tcp];
    // Random traffic rarely builds up state by itself: start with two allocations, and a nonce
    // for the third client.
    h.allocate(&mut clients[0]);
    h.allocate(&mut clients[1]);
    let challenge = h.request(
        &clients[2],
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    assert!(clients[2].learn_nonce(&challenge));
    let mut relays: Vec<SocketAddr> = vec![addr("203.0.113.1:50005")];
    for op in ops {
        let peers: Vec<SocketAddr> = PEERS
            .iter()
            .map(|p| addr(p))
            .chain(relays.iter().copied())
            .collect();
        match op {
            Op::Junk(c, bytes) => exchange(&mut h, &mut clients[*c], bytes),
            Op::Built {
                client,
                kind,
                flips,
                cut,
            } => {
                let mut packet = build(&mut h, &clients[*client], kind, &peers);
                for &(at, mask) in flips {
                    let len = packet.len();
                    packet[at % len] ^= mask;
                }
                if let Some(cut) = cut {
                    packet.truncate(cut % (packet.len() + 1));
                }
                exchange(&mut h, &mut clients[*client], &packet);
            }
            Op::Peer(r, p, data) => {
                let relay = relays[r % relays.len()];
                let peer = peers[p % peers.len()];
                match h.deliver_from_peer(relay, peer, data) {
                    (PeerAction::Drop, _) => {}
                    (PeerAction::ForwardInPlace { .. }, bytes) => {
                        let message = ChannelData::parse(&bytes).expect("ChannelData");
                        assert_eq!(message.data(), data.as_slice());
                    }
                    (PeerAction::Forward { .. }, bytes) => {
                        assert_eq!(data_indication(&bytes), (peer, data.clone()));
                    }
                }
            }
            Op::Advance(ms) => h.advance(Duration::from_millis(*ms)),
        }
        for event in h.events.drain(..) {
            if let Event::AllocationCreated { relay, .. } = event {
                relays.push(relay);
            }
        }
        assert_eq!(h.server.relay_ports_in_use(), h.sockets.bound.len());
        assert_eq!(h.quotas.total() as usize, h.server.allocation_count());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_traffic_never_panics_and_keeps_ports_and_quotas_consistent(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run(&ops);
    }
}

#[test]
fn an_allocation_past_its_lifetime_relays_nothing_before_the_sweep() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relay = h.allocate(&mut alice);
    let peer = addr("198.51.100.99:7000");
    h.create_permission(&mut alice, &[peer]);
    assert!(h.peer_reaches(&alice, relay, peer));
    // Move the clock without running the timers: the sweep has not happened yet.
    h.now += Duration::from_secs(600);
    assert_eq!(h.send_to_peer(&alice, peer, b"late").0, ClientAction::Drop);
    assert!(!h.peer_reaches(&alice, relay, peer));
}
