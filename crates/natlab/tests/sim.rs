//! The simulated network: determinism, links, NAT traversal of STUN and TURN through the
//! project's own server cores, hosts going offline, hairpinning.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_natlab::NatType;
use icebreaker_natlab::nat::NatConfig;
use icebreaker_natlab::sim::{
    Datagram, DropReason, HostId, Link, Network, Node, Outcome, StunNode, TraceEntry, TurnNode,
    UdpNode,
};
use icebreaker_turn::Event;
use icebreaker_wire::attr::{
    ChangeRequest, Data, ErrorCodeAttribute, Nonce, Realm, RequestedTransport, ResponseOrigin,
    Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::{
    Class, ErrorCode, IntegrityKey, Message, MessageType, MessageWriter, Method, TransactionId,
};
use proptest::prelude::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// What a [`StunClient`] learned from an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Answer {
    at: Instant,
    /// XOR-MAPPED-ADDRESS.
    mapped: SocketAddr,
    /// RESPONSE-ORIGIN, with RFC 5780.
    origin: Option<SocketAddr>,
    /// Where the answer came from, as the client saw it.
    from: SocketAddr,
}

/// A tiny STUN client: one Binding request, retransmitted every 500 ms until answered, up to
/// seven times (RFC 8489 §6.2.1, without the back-off).
struct StunClient {
    local: SocketAddr,
    server: SocketAddr,
    change: ChangeRequest,
    tid: TransactionId,
    next_send: Option<Instant>,
    sends_left: u32,
    outbox: VecDeque<Datagram>,
    answer: Option<Answer>,
}

impl StunClient {
    fn new(local: SocketAddr, server: SocketAddr, start: Instant) -> StunClient {
        StunClient::changing(local, server, ChangeRequest::default(), start)
    }

    fn changing(
        local: SocketAddr,
        server: SocketAddr,
        change: ChangeRequest,
        start: Instant,
    ) -> StunClient {
        let mut tid = [0u8; 12];
        tid[..2].copy_from_slice(&local.port().to_be_bytes());
        tid[2] = u8::from(change.change_ip) << 1 | u8::from(change.change_port);
        StunClient {
            local,
            server,
            change,
            tid: TransactionId::new(tid),
            next_send: Some(start),
            sends_left: 7,
            outbox: VecDeque::new(),
            answer: None,
        }
    }

    fn request(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        let binding = MessageType::new(Method::BINDING, Class::Request);
        let mut w = MessageWriter::new(&mut buf, binding, self.tid).unwrap();
        if self.change != ChangeRequest::default() {
            w.add(&self.change).unwrap();
        }
        let len = w.finish();
        buf.truncate(len);
        buf
    }
}

impl Node for StunClient {
    fn handle_datagram(
        &mut self,
        now: Instant,
        _local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) {
        let Ok(message) = Message::parse(payload) else {
            return;
        };
        if message.class() != Class::Success || message.transaction_id() != self.tid {
            return;
        }
        let Ok(Some(XorMappedAddress(mapped))) = message.get::<XorMappedAddress>() else {
            return;
        };
        let origin = message.get::<ResponseOrigin>().ok().flatten().map(|o| o.0);
        self.answer.get_or_insert(Answer {
            at: now,
            mapped,
            origin,
            from: remote,
        });
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.answer.is_some() || self.next_send.is_none_or(|at| at > now) {
            return;
        }
        self.outbox.push_back(Datagram {
            local: self.local,
            remote: self.server,
            payload: self.request(),
        });
        self.sends_left -= 1;
        self.next_send = (self.sends_left > 0).then(|| now + Duration::from_millis(500));
    }

    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_send.filter(|_| self.answer.is_none())
    }
}

fn answer(net: &Network, host: HostId) -> Option<Answer> {
    net.node::<StunClient>(host).unwrap().answer
}

const STUN: &str = "192.0.2.1:3478";
const NAT_IP: &str = "203.0.113.1";

/// Two NATs with two hosts each, a STUN server and an echo server; every link jittered and
/// lossy. Returns the trace of 20 s.
fn busy_network(seed: u64) -> Vec<TraceEntry> {
    let start = Instant::now();
    let mut net = Network::new(seed, start);
    net.record_trace(true);
    net.set_default_link(Link {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(8),
        loss: 0.2,
    });
    net.add_public_host(ip("192.0.2.1"), StunNode::new(addr(STUN)));
    let echo = addr("198.51.100.9:7");
    net.add_public_host(echo.ip(), UdpNode::echo());
    for (n, nat_type) in [NatType::PortRestricted, NatType::Symmetric]
        .into_iter()
        .enumerate()
    {
        let nat = net.add_nat(NatConfig::new(
            nat_type,
            IpAddr::from([203, 0, 113, 1 + n as u8]),
        ));
        for h in 0..2u8 {
            let local = SocketAddr::from(([10, 0, 0, 2 + h], 5000));
            net.add_private_host(nat, local.ip(), StunClient::new(local, addr(STUN), start));
            let mut app = UdpNode::new();
            for i in 0..50u64 {
                let at = start + Duration::from_millis(i * 97 + u64::from(h) * 13);
                app.send_at(
                    at,
                    SocketAddr::from(([10, 0, 1, 2 + h], 6000)),
                    echo,
                    vec![h; 20],
                );
            }
            net.add_private_host(nat, ip(&format!("10.0.1.{}", 2 + h)), app);
        }
    }
    net.run_for(Duration::from_secs(20));
    assert!(net.counters().delivered > 100, "{:?}", net.counters());
    net.take_trace()
}

/// The trace with times relative to the first entry, comparable across runs.
fn relative(trace: &[TraceEntry]) -> Vec<(Duration, SocketAddr, SocketAddr, usize, Outcome)> {
    let Some(first) = trace.first() else {
        return Vec::new();
    };
    trace
        .iter()
        .map(|e| (e.at - first.at, e.src, e.dst, e.len, e.outcome))
        .collect()
}

#[test]
fn one_seed_gives_one_trace_and_another_seed_another() {
    let a = busy_network(42);
    let b = busy_network(42);
    assert!(!a.is_empty());
    assert_eq!(relative(&a), relative(&b));
    let c = busy_network(43);
    assert_ne!(relative(&a), relative(&c));
    assert!(
        a.iter()
            .any(|e| e.outcome == Outcome::Dropped(DropReason::Lost))
    );
}

#[test]
fn delay_is_the_sum_of_both_links_and_jitter_stays_within_bounds() {
    let start = Instant::now();
    let mut net = Network::new(1, start);
    let a = addr("198.51.100.1:1000");
    let b = addr("198.51.100.2:2000");
    let mut sender = UdpNode::new();
    sender.send(a, b, *b"one");
    let sender = net.add_public_host(a.ip(), sender);
    let receiver = net.add_public_host(b.ip(), UdpNode::new());
    net.set_link(sender, Link::with_delay(Duration::from_millis(30)));
    net.set_link(receiver, Link::with_delay(Duration::from_millis(20)));
    net.run_for(Duration::from_millis(49));
    assert!(net.node::<UdpNode>(receiver).unwrap().received().is_empty());
    net.run_for(Duration::from_millis(1));
    let got = net.node::<UdpNode>(receiver).unwrap().received().to_vec();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].at, start + Duration::from_millis(50));
    assert_eq!((got[0].local, got[0].remote), (b, a));
    assert_eq!(got[0].payload, b"one");

    // Default links: 5 ms each way.
    let t0 = net.now();
    net.set_link(sender, Link::default());
    net.set_link(receiver, Link::default());
    net.node_mut::<UdpNode>(sender).unwrap().send(a, b, *b"two");
    net.run_for(Duration::from_secs(1));
    let got = net.node::<UdpNode>(receiver).unwrap().received()[1].clone();
    assert_eq!(got.at - t0, 2 * Link::DEFAULT_DELAY);

    // Jitter adds up to its value, and reorders.
    net.set_link(
        sender,
        Link {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(40),
            loss: 0.0,
        },
    );
    net.set_link(receiver, Link::with_delay(Duration::ZERO));
    net.node_mut::<UdpNode>(receiver).unwrap().take_received();
    let t0 = net.now();
    for i in 0..200u8 {
        net.node_mut::<UdpNode>(sender).unwrap().send(a, b, [i]);
    }
    net.run_for(Duration::from_secs(1));
    let got = net.node_mut::<UdpNode>(receiver).unwrap().take_received();
    assert_eq!(got.len(), 200);
    for r in &got {
        let delay = r.at - t0;
        assert!(delay >= Duration::from_millis(10) && delay <= Duration::from_millis(50));
    }
    let order: Vec<u8> = got.iter().map(|r| r.payload[0]).collect();
    assert!(order.windows(2).any(|w| w[0] > w[1]), "some reordering");
}

#[test]
fn loss_drops_about_its_share() {
    let start = Instant::now();
    let mut net = Network::new(7, start);
    let a = addr("198.51.100.1:1000");
    let b = addr("198.51.100.2:2000");
    let mut sender = UdpNode::new();
    for _ in 0..2000 {
        sender.send(a, b, *b"x");
    }
    let sender = net.add_public_host(a.ip(), sender);
    let receiver = net.add_public_host(b.ip(), UdpNode::new());
    net.set_link(
        sender,
        Link {
            loss: 0.25,
            ..Link::default()
        },
    );
    net.run_for(Duration::from_secs(1));
    let counters = net.counters();
    assert_eq!(counters.sent, 2000);
    assert_eq!(counters.delivered + counters.lost, 2000);
    assert_eq!(counters.dropped_for(DropReason::Lost), counters.lost);
    assert!((400..=600).contains(&counters.lost), "{counters:?}");
    let received = net.node::<UdpNode>(receiver).unwrap().received().len() as u64;
    assert_eq!(received, counters.delivered);

    // A link that loses everything.
    net.set_link(
        receiver,
        Link {
            loss: 1.0,
            ..Link::default()
        },
    );
    net.node_mut::<UdpNode>(sender).unwrap().send(a, b, *b"y");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.counters().delivered, counters.delivered);
}

#[test]
fn no_route_and_foreign_source_addresses_are_dropped() {
    let start = Instant::now();
    let mut net = Network::new(1, start);
    let a = addr("198.51.100.1:1000");
    let mut node = UdpNode::new();
    node.send(a, addr("192.0.2.200:9"), *b"nobody there");
    node.send(addr("198.51.100.99:1000"), a, *b"spoofed");
    node.send(a, addr("10.0.0.2:9"), *b"private, from outside");
    net.add_public_host(a.ip(), node);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.counters().no_route, 3);
    assert_eq!(net.counters().delivered, 0);
}

#[test]
fn a_private_host_learns_its_mapped_address_behind_each_nat_type() {
    for nat_type in NatType::ALL {
        let start = Instant::now();
        let mut net = Network::new(3, start);
        let server = net.add_public_host(ip("192.0.2.1"), StunNode::new(addr(STUN)));
        let nat = net.add_nat(NatConfig::new(nat_type, ip(NAT_IP)));
        let local = addr("10.0.0.2:5000");
        let client =
            net.add_private_host(nat, local.ip(), StunClient::new(local, addr(STUN), start));
        let answered =
            net.run_until_condition(Duration::from_secs(5), |net| answer(net, client).is_some());
        assert!(answered, "{nat_type}");
        let got = answer(&net, client).unwrap();
        assert_eq!(got.at, start + 4 * Link::DEFAULT_DELAY, "one round trip");
        assert_eq!(net.now(), got.at, "stopped when the answer came");
        assert_eq!(got.from, addr(STUN));
        assert_eq!(got.mapped.ip(), ip(NAT_IP), "{nat_type}");
        let mappings = net.nat(nat).unwrap().mappings(net.now());
        assert_eq!(mappings.len(), 1);
        assert_eq!(mappings[0].internal, local);
        assert_eq!(mappings[0].external, got.mapped, "{nat_type}");
        if nat_type == NatType::Symmetric {
            assert!(got.mapped.port() >= 1024, "a random port");
        } else {
            assert_eq!(got.mapped.port(), 5000, "{nat_type}: port preserved");
        }
        assert_eq!(net.node::<StunNode>(server).unwrap().answered(), 1);
        assert!(net.node::<UdpNode>(server).is_none(), "not a UdpNode");
    }
}

#[test]
fn retransmissions_get_through_a_lossy_link() {
    let start = Instant::now();
    let mut net = Network::new(11, start);
    net.add_public_host(ip("192.0.2.1"), StunNode::new(addr(STUN)));
    let nat = net.add_nat(NatConfig::new(NatType::PortRestricted, ip(NAT_IP)));
    let local = addr("10.0.0.2:5000");
    let client = net.add_private_host(nat, local.ip(), StunClient::new(local, addr(STUN), start));
    net.set_link(
        client,
        Link {
            loss: 0.4,
            ..Link::default()
        },
    );
    let answered =
        net.run_until_condition(Duration::from_secs(4), |net| answer(net, client).is_some());
    assert!(answered);
    assert!(net.counters().lost > 0, "this seed loses the first tries");
    assert_eq!(
        answer(&net, client).unwrap().mapped,
        addr("203.0.113.1:5000")
    );
}

/// An RFC 5780 server on two IPs of one host, and a client behind `nat_type` asking for an
/// answer from another address; returns whether it came, and the network.
fn change_request(nat_type: NatType, change: ChangeRequest) -> (Option<Answer>, Network) {
    let start = Instant::now();
    let mut net = Network::new(5, start);
    let primary = addr("192.0.2.1:3478");
    let alternate = addr("192.0.2.2:3479");
    let stun = StunNode::rfc5780(primary, alternate).unwrap();
    assert_eq!(stun.addresses().len(), 4);
    let ips = stun.ips();
    let server = net.add_public_host(ips[0], stun);
    for &extra in &ips[1..] {
        assert!(net.add_ip(server, extra));
    }
    let nat = net.add_nat(NatConfig::new(nat_type, ip(NAT_IP)));
    let local = addr("10.0.0.2:5000");
    let client = net.add_private_host(
        nat,
        local.ip(),
        StunClient::changing(local, primary, change, start),
    );
    net.run_for(Duration::from_secs(5));
    (answer(&net, client), net)
}

#[test]
fn rfc_5780_change_request_shows_the_nats_filtering() {
    let both = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    let port_only = ChangeRequest {
        change_ip: false,
        change_port: true,
    };
    let primary = addr("192.0.2.1:3478");

    // Full cone: the answer from the other IP and port comes through.
    let (got, net) = change_request(NatType::FullCone, both);
    let got = got.expect("a full cone lets the change-IP answer in");
    assert_eq!(got.origin, Some(addr("192.0.2.2:3479")));
    assert_eq!(got.from, addr("192.0.2.2:3479"));
    assert_eq!(got.mapped, addr("203.0.113.1:5000"));
    assert_eq!(net.counters().filtered, 0);

    // Restricted cone: another port of the same IP passes, another IP does not.
    let (got, _) = change_request(NatType::RestrictedCone, port_only);
    assert_eq!(got.expect("same IP").from, addr("192.0.2.1:3479"));
    let (got, net) = change_request(NatType::RestrictedCone, both);
    assert_eq!(got, None);
    assert_eq!(net.counters().filtered, 7, "every retransmission's answer");

    // Port restricted and symmetric: neither.
    for nat_type in [NatType::PortRestricted, NatType::Symmetric] {
        for change in [both, port_only] {
            let (got, net) = change_request(nat_type, change);
            assert_eq!(got, None, "{nat_type} {change:?}");
            assert_eq!(net.counters().filtered, 7, "{nat_type} {change:?}");
            assert!(net.counters().sent >= 14);
        }
    }

    // And a plain request to an RFC 5780 server gets RESPONSE-ORIGIN.
    let (got, _) = change_request(NatType::PortRestricted, ChangeRequest::default());
    assert_eq!(got.unwrap().origin, Some(primary));
}

#[test]
fn an_offline_host_neither_sends_nor_receives() {
    let start = Instant::now();
    let mut net = Network::new(1, start);
    let a = addr("198.51.100.1:1000");
    let b = addr("198.51.100.2:2000");
    let mut sender = UdpNode::new();
    for i in 0..10u64 {
        sender.send_at(start + Duration::from_secs(i), a, b, *b"ping");
    }
    let sender = net.add_public_host(a.ip(), sender);
    let echo = net.add_public_host(b.ip(), UdpNode::echo());

    net.run_for(Duration::from_millis(2500));
    assert_eq!(net.node::<UdpNode>(sender).unwrap().received().len(), 3);

    net.set_host_online(echo, false);
    assert!(!net.is_online(echo));
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.node::<UdpNode>(echo).unwrap().received().len(), 3);
    assert_eq!(net.counters().offline, 3);

    net.set_host_online(echo, true);
    net.set_host_online(sender, false);
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        net.counters().offline,
        5,
        "the sender's packets dropped too"
    );

    net.set_host_online(sender, true);
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.node::<UdpNode>(sender).unwrap().received().len(), 5);
    assert_eq!(net.counters().delivered, 10);
}

#[test]
fn a_packet_on_its_way_to_a_host_that_goes_offline_is_dropped() {
    let start = Instant::now();
    let mut net = Network::new(1, start);
    let a = addr("198.51.100.1:1000");
    let b = addr("198.51.100.2:2000");
    let mut sender = UdpNode::new();
    sender.send(a, b, *b"late");
    net.add_public_host(a.ip(), sender);
    let receiver = net.add_public_host(b.ip(), UdpNode::new());
    net.run_for(Duration::from_millis(6));
    net.set_host_online(receiver, false);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.counters().offline, 1);
    assert_eq!(net.counters().delivered, 0);
}

/// Alice and Bob behind one NAT; Bob has a mapping from talking to a public server.
fn lan(nat_type: NatType, hairpinning: bool) -> (Network, HostId, HostId, SocketAddr) {
    let start = Instant::now();
    let mut net = Network::new(9, start);
    let mut config = NatConfig::new(nat_type, ip(NAT_IP));
    config.hairpinning = hairpinning;
    let nat = net.add_nat(config);
    let server = addr("198.51.100.9:7");
    net.add_public_host(server.ip(), UdpNode::echo());
    let alice = net.add_private_host(nat, ip("10.0.0.2"), UdpNode::new());
    let mut bob_node = UdpNode::new();
    bob_node.send(addr("10.0.0.3:6000"), server, *b"hello");
    let bob = net.add_private_host(nat, ip("10.0.0.3"), bob_node);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.node::<UdpNode>(bob).unwrap().received().len(),
        1,
        "the echo"
    );
    let mapping = net.nat(nat).unwrap().mappings(net.now());
    assert_eq!(mapping[0].internal, addr("10.0.0.3:6000"));
    let bob_external = mapping[0].external;
    (net, alice, bob, bob_external)
}

#[test]
fn hosts_behind_one_nat_talk_directly_and_through_the_hairpin() {
    // By internal address: no NAT on the way.
    let (mut net, alice, bob, bob_external) = lan(NatType::FullCone, true);
    let alice_local = addr("10.0.0.2:5000");
    net.node_mut::<UdpNode>(alice)
        .unwrap()
        .send(alice_local, addr("10.0.0.3:6000"), *b"lan");
    net.run_for(Duration::from_secs(1));
    let got = net
        .node::<UdpNode>(bob)
        .unwrap()
        .received()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (got.remote, got.payload.as_slice()),
        (alice_local, &b"lan"[..])
    );

    // By Bob's external address: hairpinned, from Alice's external address.
    net.node_mut::<UdpNode>(alice)
        .unwrap()
        .send(alice_local, bob_external, *b"hairpin");
    net.run_for(Duration::from_secs(1));
    let got = net
        .node::<UdpNode>(bob)
        .unwrap()
        .received()
        .last()
        .unwrap()
        .clone();
    assert_eq!(got.payload, b"hairpin");
    assert_eq!(got.local, addr("10.0.0.3:6000"));
    assert_eq!(
        got.remote,
        addr("203.0.113.1:5000"),
        "Alice's external address"
    );

    // Without hairpinning the NAT drops it.
    let (mut net, alice, bob, bob_external) = lan(NatType::FullCone, false);
    net.node_mut::<UdpNode>(alice)
        .unwrap()
        .send(alice_local, bob_external, *b"hairpin");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.node::<UdpNode>(bob).unwrap().received().len(), 1);
    assert_eq!(net.counters().filtered, 1);

    // Port restricted: Bob's filter wants to have sent to Alice's external address first.
    let (mut net, alice, bob, bob_external) = lan(NatType::PortRestricted, true);
    net.node_mut::<UdpNode>(alice)
        .unwrap()
        .send(alice_local, bob_external, *b"first");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.counters().filtered, 1);
    net.node_mut::<UdpNode>(bob).unwrap().send(
        addr("10.0.0.3:6000"),
        addr("203.0.113.1:5000"),
        *b"punch",
    );
    let later = net.now() + Duration::from_millis(100);
    net.node_mut::<UdpNode>(alice)
        .unwrap()
        .send_at(later, alice_local, bob_external, *b"second");
    net.run_for(Duration::from_secs(1));
    let alice_got = net.node::<UdpNode>(alice).unwrap().received().to_vec();
    assert_eq!(alice_got.len(), 1);
    assert_eq!(alice_got[0].remote, bob_external);
    let bob_got = net
        .node::<UdpNode>(bob)
        .unwrap()
        .received()
        .last()
        .unwrap()
        .clone();
    assert_eq!(bob_got.payload, b"second");
}

#[test]
fn mappings_expire_on_the_virtual_clock_and_flush_drops_them() {
    let start = Instant::now();
    let mut net = Network::new(2, start);
    let mut config = NatConfig::new(NatType::PortRestricted, ip(NAT_IP));
    config.mapping_lifetime = Duration::from_secs(30);
    let nat = net.add_nat(config);
    let server = addr("198.51.100.9:7");
    let local = addr("10.0.0.2:5000");
    let external = addr("203.0.113.1:5000");
    let mut client = UdpNode::new();
    client.send(local, server, *b"open");
    let client = net.add_private_host(nat, local.ip(), client);
    let mut pusher = UdpNode::new();
    // The server pushes every 10 s.
    for i in 1..=6u64 {
        pusher.send_at(
            start + Duration::from_secs(10 * i),
            server,
            external,
            *b"push",
        );
    }
    net.add_public_host(server.ip(), pusher);
    net.run_for(Duration::from_secs(35));
    assert_eq!(
        net.node::<UdpNode>(client).unwrap().received().len(),
        2,
        "10 s and 20 s"
    );
    assert_eq!(net.counters().filtered, 1, "30 s: expired");

    // A new outbound packet makes the mapping again; a flush drops it.
    net.node_mut::<UdpNode>(client)
        .unwrap()
        .send(local, server, *b"again");
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.node::<UdpNode>(client).unwrap().received().len(), 3);
    net.nat_mut(nat).unwrap().flush();
    net.run_for(Duration::from_secs(20));
    assert_eq!(net.node::<UdpNode>(client).unwrap().received().len(), 3);
    assert_eq!(net.counters().filtered, 3);

    // Changing the lifetime mid-run applies to live mappings.
    net.node_mut::<UdpNode>(client)
        .unwrap()
        .send(local, server, *b"again");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nat(nat).unwrap().mapping_count(net.now()), 1);
    net.nat_mut(nat)
        .unwrap()
        .set_mapping_lifetime(Duration::from_millis(500));
    assert_eq!(net.nat(nat).unwrap().mapping_count(net.now()), 0);
}

/// A node that always asks for a time already past and sends nothing.
struct Stuck(Instant, u64);

impl Node for Stuck {
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: SocketAddr, _: &[u8]) {}

    fn handle_timeout(&mut self, _: Instant) {
        self.1 += 1;
    }

    fn poll_transmit(&mut self) -> Option<Datagram> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.0)
    }
}

#[test]
fn a_node_whose_timer_never_moves_does_not_stop_the_clock() {
    let start = Instant::now();
    let mut net = Network::new(1, start);
    let stuck = net.add_public_host(ip("192.0.2.5"), Stuck(start, 0));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.now(), start + Duration::from_millis(100));
    let fired = net.node::<Stuck>(stuck).unwrap().1;
    assert!((64..=64 * 101).contains(&fired), "{fired}");
}

const TURN: &str = "192.0.2.10:3478";
const REALM: &str = "example.org";

fn turn_request(
    method: Method,
    tid: u8,
    credentials: Option<&str>,
    attrs: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(method, Class::Request),
        TransactionId::new([tid; 12]),
    )
    .unwrap();
    attrs(&mut w);
    if let Some(nonce) = credentials {
        w.add(&Username("alice")).unwrap();
        w.add(&Realm(REALM)).unwrap();
        w.add(&Nonce(nonce)).unwrap();
        w.add_message_integrity(&key()).unwrap();
    }
    w.add_fingerprint().unwrap();
    let len = w.finish();
    buf.truncate(len);
    buf
}

fn key() -> IntegrityKey {
    IntegrityKey::long_term(KeyAlgorithm::Md5, "alice", REALM, "secret")
}

/// Sends `packet` from `host` at `local` to the TURN server and returns the one answer.
fn exchange(net: &mut Network, host: HostId, local: SocketAddr, packet: Vec<u8>) -> Vec<u8> {
    net.node_mut::<UdpNode>(host)
        .unwrap()
        .send(local, addr(TURN), packet);
    net.run_for(Duration::from_millis(200));
    let mut got = net.node_mut::<UdpNode>(host).unwrap().take_received();
    assert_eq!(got.len(), 1, "one answer");
    assert_eq!(got[0].remote, addr(TURN));
    got.remove(0).payload
}

#[test]
fn a_turn_server_challenges_then_allocates_and_relays_for_a_client_behind_a_nat() {
    let start = Instant::now();
    let mut net = Network::new(21, start);
    let turn = net.add_public_host(
        ip("192.0.2.10"),
        TurnNode::new(
            addr(TURN),
            REALM,
            &[("alice", "secret")],
            50_000..=50_099,
            21,
            start,
        ),
    );
    let nat = net.add_nat(NatConfig::new(NatType::PortRestricted, ip(NAT_IP)));
    let local = addr("10.0.0.2:5000");
    let client = net.add_private_host(nat, local.ip(), UdpNode::new());
    let peer = addr("198.51.100.7:7000");
    net.add_public_host(peer.ip(), UdpNode::echo());
    let transport = |w: &mut MessageWriter<'_>| w.add(&RequestedTransport::UDP).unwrap();

    // Unauthenticated: 401 with the realm and a nonce.
    let reply = exchange(
        &mut net,
        client,
        local,
        turn_request(Method::ALLOCATE, 1, None, transport),
    );
    let message = Message::parse(&reply).unwrap();
    assert_eq!(message.class(), Class::Error);
    let error = message.get::<ErrorCodeAttribute>().unwrap().unwrap();
    assert_eq!(error.code, ErrorCode::UNAUTHENTICATED);
    assert_eq!(message.get::<Realm>().unwrap(), Some(Realm(REALM)));
    let nonce = message.get::<Nonce>().unwrap().unwrap().0.to_string();

    // With credentials: an allocation on the server's IP, the NAT's address as mapped.
    let reply = exchange(
        &mut net,
        client,
        local,
        turn_request(Method::ALLOCATE, 2, Some(&nonce), transport),
    );
    let message = Message::parse(&reply).unwrap();
    assert_eq!(message.class(), Class::Success, "{message:?}");
    message.verify_message_integrity(&key()).unwrap();
    let relayed = message.get::<XorRelayedAddress>().unwrap().unwrap().0;
    assert_eq!(relayed.ip(), addr(TURN).ip());
    assert!((50_000..=50_099).contains(&relayed.port()));
    assert_eq!(
        message.get::<XorMappedAddress>().unwrap(),
        Some(XorMappedAddress(addr("203.0.113.1:5000")))
    );
    let server = net.node::<TurnNode>(turn).unwrap();
    assert_eq!(server.relay_addresses(), vec![relayed]);
    assert_eq!(server.server().allocation_count(), 1);
    assert!(server.events().iter().any(|e| matches!(
        e,
        Event::AllocationCreated { five_tuple, .. } if five_tuple.client == addr("203.0.113.1:5000")
    )));

    // A permission for the peer, data there and back through the relay and the NAT.
    let reply = exchange(
        &mut net,
        client,
        local,
        turn_request(Method::CREATE_PERMISSION, 3, Some(&nonce), |w| {
            w.add(&XorPeerAddress(peer)).unwrap();
        }),
    );
    assert_eq!(Message::parse(&reply).unwrap().class(), Class::Success);
    let mut buf = vec![0u8; 128];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::SEND, Class::Indication),
        TransactionId::new([4; 12]),
    )
    .unwrap();
    w.add(&XorPeerAddress(peer)).unwrap();
    w.add(&Data(b"through the relay")).unwrap();
    let len = w.finish();
    buf.truncate(len);
    let reply = exchange(&mut net, client, local, buf);
    let message = Message::parse(&reply).unwrap();
    assert_eq!(
        (message.class(), message.method()),
        (Class::Indication, Method::DATA)
    );
    assert_eq!(
        message.get::<XorPeerAddress>().unwrap(),
        Some(XorPeerAddress(peer))
    );
    assert_eq!(
        message.get::<Data>().unwrap(),
        Some(Data(b"through the relay"))
    );
    assert_eq!(net.counters().dropped(), 0);
}

#[test]
fn a_turn_server_answers_binding_requests_on_its_port() {
    let start = Instant::now();
    let mut net = Network::new(4, start);
    net.add_public_host(
        ip("192.0.2.10"),
        TurnNode::new(addr(TURN), REALM, &[], 50_000..=50_099, 4, start),
    );
    let nat = net.add_nat(NatConfig::new(NatType::Symmetric, ip(NAT_IP)));
    let local = addr("10.0.0.2:5000");
    let client = net.add_private_host(nat, local.ip(), StunClient::new(local, addr(TURN), start));
    net.run_for(Duration::from_secs(1));
    let got = answer(&net, client).expect("an answer");
    assert_eq!(got.mapped.ip(), ip(NAT_IP));
    assert_eq!(got.origin, None, "no RFC 5780 on the TURN port");
}

/// One datagram of the random traffic: which sender, which source, where to, what.
#[derive(Clone, Debug)]
struct Shot {
    sender: usize,
    source: usize,
    port: u16,
    destination: usize,
    payload: Vec<u8>,
}

fn shot() -> impl Strategy<Value = Shot> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        // A STUN header of any method and class, with any length field and cookie.
        (
            any::<u16>(),
            any::<u16>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(kind, len, cookie, rest)| {
                let mut bytes = Vec::new();
                bytes.extend_from_slice(&(kind & 0x3fff).to_be_bytes());
                bytes.extend_from_slice(&(len % 48).to_be_bytes());
                bytes.extend_from_slice(&if cookie { 0x2112_A442u32 } else { 7 }.to_be_bytes());
                bytes.extend_from_slice(&[9; 12]);
                bytes.extend_from_slice(&rest);
                bytes
            }),
    ];
    (
        0usize..3,
        0usize..3,
        any::<u16>(),
        0usize..DESTINATIONS.len(),
        payload,
    )
        .prop_map(|(sender, source, port, destination, payload)| Shot {
            sender,
            source,
            port,
            destination,
            payload,
        })
}

const DESTINATIONS: [&str; 11] = [
    "192.0.2.1:3478",
    "192.0.2.10:3478",
    "192.0.2.10:50000",
    "198.51.100.1:9",
    "203.0.113.1:5000",
    "203.0.113.2:5000",
    "10.0.0.2:5000",
    "10.0.0.3:0",
    "192.0.2.99:1",
    "[2001:db8::1]:3478",
    "0.0.0.0:9",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_traffic_never_panics_and_every_datagram_is_accounted_for(
        seed in any::<u64>(),
        types in (0usize..4, 0usize..4),
        loss in 0.0f64..0.5,
        jitter_ms in 0u64..50,
        shots in proptest::collection::vec(shot(), 0..60),
    ) {
        let start = Instant::now();
        let mut net = Network::new(seed, start);
        net.set_default_link(Link {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(jitter_ms),
            loss,
        });
        net.add_public_host(ip("192.0.2.1"), StunNode::new(addr(STUN)));
        net.add_public_host(
            ip("192.0.2.10"),
            TurnNode::new(addr(TURN), REALM, &[("alice", "secret")], 50_000..=50_009, seed, start),
        );
        net.add_public_host(ip("198.51.100.1"), UdpNode::echo());
        let a = net.add_nat(NatConfig::new(NatType::ALL[types.0], ip("203.0.113.1")));
        let b = net.add_nat(NatConfig::new(NatType::ALL[types.1], ip("203.0.113.2")));
        let senders = [
            net.add_private_host(a, ip("10.0.0.2"), UdpNode::new()),
            net.add_private_host(a, ip("10.0.0.3"), UdpNode::new()),
            net.add_private_host(b, ip("10.0.0.2"), UdpNode::new()),
        ];
        for (i, shot) in shots.iter().enumerate() {
            let host = senders[shot.sender];
            let own = net.ips(host)[0];
            let source_ip = [own, ip("0.0.0.0"), ip("10.9.9.9")][shot.source];
            let at = start + Duration::from_millis(i as u64 * 3);
            net.node_mut::<UdpNode>(host).unwrap().send_at(
                at,
                SocketAddr::new(source_ip, shot.port),
                addr(DESTINATIONS[shot.destination]),
                shot.payload.clone(),
            );
        }
        net.run_for(Duration::from_secs(5));
        let counters = net.counters();
        prop_assert_eq!(counters.sent, counters.delivered + counters.dropped());
        prop_assert!(counters.sent >= shots.len() as u64);
    }
}
