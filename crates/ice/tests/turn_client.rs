//! The TURN client against the real sans-IO TURN core, in process, on a virtual clock: the
//! 401 challenge with MD5 and SHA-256 keys, stale nonces, refreshes over an hour, permissions,
//! Send and Data indications, channels both ways, lost and forged answers, timeouts,
//! deallocation, and a property test that feeds the client arbitrary datagrams.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::Sockets;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use icebreaker_ice::turn_client::{
    TurnClient, TurnClientConfig, TurnError, TurnEvent, TurnSendError, TurnState, TurnTiming,
};
use icebreaker_turn::{
    ClientAction, ClientTransport, Event, FiveTuple, PeerAction, Quotas, TurnConfig, TurnServer,
    UserCredential,
};
use icebreaker_wire::attr::{
    AlternateServer, AttrType, Data, ErrorCodeAttribute, Lifetime, Nonce, PasswordAlgorithm,
    PasswordAlgorithms, Realm, RequestedTransport, Username, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
use icebreaker_wire::credentials::{KeyAlgorithm, NONCE_COOKIE, SecurityFeatures};
use icebreaker_wire::{
    ChannelData, ChannelNumber, Class, ErrorCode, IntegrityKey, Message, MessageType,
    MessageWriter, Method, TransactionId,
};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

const SERVER: &str = "203.0.113.1:3478";
/// The client's address as the server sees it: its server-reflexive address.
const CLIENT: &str = "198.51.100.10:40000";
const PEER: &str = "198.51.100.99:9000";
const OTHER_PEER: &str = "192.0.2.7:7000";
const REALM: &str = "example.org";
/// So long that the server's 401 would outgrow three times the Allocate if it listed its
/// password algorithms: it then offers none, and the client falls back to MD5.
const LONG_REALM: &str = "a-realm-long-enough-that-the-challenge-offers-no-sha256.example.org";
/// Unix time at the start of every test: 2026-11-21.
const UNIX_START: u64 = 1_795_219_200;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// A server with one user, alice, whose password is "secret".
fn server_config(realm: &str) -> TurnConfig {
    let mut config = TurnConfig::new(realm, 50_000..=50_099);
    config.users = vec![("alice".into(), UserCredential::Password("secret".into()))];
    config.nonce_secret = [9; 32];
    config.peer_policy.server_addresses = vec![addr(SERVER).ip()];
    config
}

fn client_config(password: &str) -> TurnClientConfig {
    TurnClientConfig::new(addr(SERVER), "alice", password)
}

fn five_tuple(client: &str) -> FiveTuple {
    FiveTuple {
        client: addr(client),
        server: addr(SERVER),
        transport: ClientTransport::Udp,
    }
}

/// One client and the server core, wired together on a virtual clock, recording everything
/// that crosses the wire.
struct Net {
    server: TurnServer,
    sockets: Sockets,
    client: TurnClient,
    five_tuple: FiveTuple,
    rng: ChaCha8Rng,
    now: Instant,
    /// Every datagram the client sent, with its time, lost or not.
    sent: Vec<(Instant, Vec<u8>)>,
    /// Every answer the server wrote, delivered or not.
    answers: Vec<Vec<u8>>,
    /// What the relay sent to peers: (relay, peer, data).
    to_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Data the client got from peers.
    from_peers: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<TurnEvent>,
    server_events: Vec<Event>,
    /// How many of the server's next answers are lost.
    lose_answers: usize,
    /// The client's datagrams never reach the server.
    blackhole: bool,
    /// Answers are kept in `held` instead of delivered.
    hold: bool,
    held: Vec<Vec<u8>>,
}

impl Net {
    fn new() -> Net {
        Net::with(
            server_config(REALM),
            Quotas::new(100, 10),
            client_config("secret"),
        )
    }

    fn with(config: TurnConfig, quotas: Quotas, client: TurnClientConfig) -> Net {
        let now = Instant::now();
        let server_rng = Box::new(ChaCha8Rng::seed_from_u64(7));
        Net {
            server: TurnServer::new(config, Arc::new(quotas), server_rng, now, UNIX_START),
            sockets: Sockets::default(),
            client: TurnClient::new(client),
            five_tuple: five_tuple(CLIENT),
            rng: ChaCha8Rng::seed_from_u64(1),
            now,
            sent: Vec::new(),
            answers: Vec::new(),
            to_peers: Vec::new(),
            from_peers: Vec::new(),
            events: Vec::new(),
            server_events: Vec::new(),
            lose_answers: 0,
            blackhole: false,
            hold: false,
            held: Vec::new(),
        }
    }

    /// Replaces the client by a new one at `client`, keeping the server and its allocations.
    fn new_client(&mut self, client: &str, config: TurnClientConfig) {
        self.client = TurnClient::new(config);
        self.five_tuple = five_tuple(client);
        self.events.clear();
    }

    /// Moves datagrams between client and server until both are quiet.
    fn flush(&mut self) {
        while let Some(packet) = self.client.poll_transmit() {
            self.sent.push((self.now, packet.clone()));
            if !self.blackhole {
                self.send_to_server(&packet);
            }
        }
        self.drain();
    }

    /// Hands a client datagram to the server and its answer (if any) back to the client.
    fn send_to_server(&mut self, packet: &[u8]) {
        let mut out = [0u8; 2048];
        let action = self.server.handle_client(
            self.now,
            self.five_tuple,
            packet,
            &mut out,
            &mut self.sockets,
        );
        match action {
            ClientAction::Reply(len) => {
                let answer = out[..len].to_vec();
                self.answers.push(answer.clone());
                if self.lose_answers > 0 {
                    self.lose_answers -= 1;
                } else if self.hold {
                    self.held.push(answer);
                } else {
                    self.deliver(&answer);
                }
            }
            ClientAction::Relay {
                relay, peer, range, ..
            } => self.to_peers.push((relay, peer, packet[range].to_vec())),
            // No throttling and no TCP allocation (RFC 6062) in these tests.
            ClientAction::Drop | ClientAction::Close | ClientAction::PipeToPeer { .. } => {}
        }
    }

    /// A datagram from the server reaches the client.
    fn deliver(&mut self, packet: &[u8]) {
        if let Some(data) = self.client.handle_input(self.now, &mut self.rng, packet) {
            self.from_peers.push((data.peer, data.data.to_vec()));
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
        while let Some(event) = self.server.poll_event() {
            self.server_events.push(event);
        }
    }

    /// Moves the clock by `by`, running both sides' timers on the way as a driver would.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..1_000_000 {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .filter(|&at| at <= target);
            let Some(at) = next else {
                self.now = target;
                self.tick();
                return;
            };
            self.now = at.max(self.now);
            self.tick();
        }
        panic!("timers never settle");
    }

    fn tick(&mut self) {
        self.client.handle_timeout(self.now, &mut self.rng);
        self.server.handle_timeout(self.now, &mut self.sockets);
        self.flush();
    }

    fn allocate(&mut self) -> SocketAddr {
        self.client.allocate(self.now, &mut self.rng);
        self.flush();
        assert_eq!(
            self.client.state(),
            TurnState::Allocated,
            "{:?}",
            self.events
        );
        self.client.relayed_address().expect("a relayed address")
    }

    fn create_permission(&mut self, peer: &str) {
        self.client
            .create_permission(self.now, &mut self.rng, addr(peer));
        self.flush();
    }

    fn bind_channel(&mut self, peer: &str) -> ChannelNumber {
        let channel = self
            .client
            .bind_channel(self.now, &mut self.rng, addr(peer))
            .expect("a channel number");
        self.flush();
        channel
    }

    /// The client sends `data` to `peer` through the relay; returns the datagram it wrote.
    fn send(&mut self, peer: &str, data: &[u8]) -> Vec<u8> {
        let packet = self.client.send_to(addr(peer), data).expect("sendable");
        self.send_to_server(&packet);
        packet
    }

    /// Whether the relay sent exactly `data` from `relay` to `peer` last.
    fn peer_got(&self, relay: SocketAddr, peer: &str, data: &[u8]) -> bool {
        self.to_peers.last() == Some(&(relay, addr(peer), data.to_vec()))
    }

    /// `peer` sends `data` to the relayed address; returns whether the client got it.
    fn peer_sends(&mut self, relay: SocketAddr, peer: &str, data: &[u8]) -> bool {
        let mut buf = vec![0u8; 4 + data.len() + 4];
        buf[4..4 + data.len()].copy_from_slice(data);
        let mut out = [0u8; 2048];
        let action = self.server.handle_peer(
            self.now,
            relay,
            addr(peer),
            &mut buf,
            4..4 + data.len(),
            &mut out,
        );
        let packet = match action {
            PeerAction::ForwardInPlace { range, .. } => buf[range].to_vec(),
            PeerAction::Forward { len, .. } => out[..len].to_vec(),
            PeerAction::Drop => return false,
        };
        let before = self.from_peers.len();
        self.deliver(&packet);
        self.from_peers.len() == before + 1
            && self.from_peers.last() == Some(&(addr(peer), data.to_vec()))
    }

    /// The requests of `method` the client sent, with their times.
    fn requests(&self, method: Method) -> Vec<(Instant, Message<'_>)> {
        self.sent
            .iter()
            .filter_map(|(at, bytes)| Some((*at, Message::parse(bytes).ok()?)))
            .filter(|(_, m)| m.class() == Class::Request && m.method() == method)
            .collect()
    }

    fn errors(&self, method: Method, code: ErrorCode) -> usize {
        self.answers
            .iter()
            .filter_map(|bytes| Message::parse(bytes).ok())
            .filter(|m| m.method() == method && error_code(m) == Some(code))
            .count()
    }

    fn failures(&self) -> Vec<&TurnEvent> {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    TurnEvent::AllocationFailed(_)
                        | TurnEvent::PermissionFailed { .. }
                        | TurnEvent::ChannelBindFailed { .. }
                        | TurnEvent::RefreshFailed(_)
                )
            })
            .collect()
    }
}

fn error_code(message: &Message<'_>) -> Option<ErrorCode> {
    message
        .get::<ErrorCodeAttribute>()
        .ok()
        .flatten()
        .map(|e| e.code)
}

fn rejected(code: u16) -> TurnError {
    TurnError::Rejected {
        code,
        reason: String::new(),
    }
}

fn md5_key() -> IntegrityKey {
    IntegrityKey::long_term(KeyAlgorithm::Md5, "alice", LONG_REALM, "secret")
}

fn sha256_key() -> IntegrityKey {
    IntegrityKey::long_term(KeyAlgorithm::Sha256, "alice", REALM, "secret")
}

// --- Allocation and credentials --------------------------------------------------------------

#[test]
fn allocates_after_the_401_challenge_with_an_md5_key() {
    let mut net = Net::with(
        server_config(LONG_REALM),
        Quotas::new(100, 10),
        client_config("secret"),
    );
    let relayed = net.allocate();

    assert_eq!(
        net.events,
        [TurnEvent::Allocated {
            relayed,
            mapped: Some(addr(CLIENT)),
            lifetime: Duration::from_secs(600),
        }]
    );
    assert_eq!(relayed.ip(), addr(SERVER).ip());
    assert!((50_000..=50_099).contains(&relayed.port()));
    assert_eq!(net.client.mapped_address(), Some(addr(CLIENT)));
    assert_eq!(net.client.password_algorithm(), Some(KeyAlgorithm::Md5));

    let allocates = net.requests(Method::ALLOCATE);
    assert_eq!(allocates.len(), 2);
    let (_, first) = allocates[0];
    let (_, second) = allocates[1];
    for request in [first, second] {
        assert_eq!(
            request.get::<RequestedTransport>().unwrap(),
            Some(RequestedTransport::UDP)
        );
        assert_eq!(request.get::<Lifetime>().unwrap(), Some(Lifetime(600)));
        request
            .verify_fingerprint()
            .expect("FINGERPRINT on every request");
    }
    assert!(first.integrity_offset().is_none() && !first.has(AttrType::USERNAME));
    assert_eq!(second.get::<Username>().unwrap(), Some(Username("alice")));
    assert_eq!(second.get::<Realm>().unwrap(), Some(Realm(LONG_REALM)));
    assert!(second.has(AttrType::NONCE));
    assert!(!second.has(AttrType::PASSWORD_ALGORITHM));
    second
        .verify_message_integrity(&md5_key())
        .expect("signed with the MD5 long-term key");
    assert!(second.integrity_sha256_offset().is_none());

    assert!(matches!(
        &net.server_events[..],
        [.., Event::AllocationCreated { username, .. }, Event::Answered { error: None, .. }]
            if &**username == "alice"
    ));
}

#[test]
fn uses_sha256_when_the_server_offers_it() {
    let mut net = Net::new();
    let relayed = net.allocate();
    assert_eq!(net.client.password_algorithm(), Some(KeyAlgorithm::Sha256));

    let challenge = Message::parse(&net.answers[0]).unwrap();
    assert_eq!(error_code(&challenge), Some(ErrorCode::UNAUTHENTICATED));
    let offered: Vec<_> = challenge
        .get::<PasswordAlgorithms>()
        .unwrap()
        .expect("the challenge offers algorithms")
        .iter()
        .collect();

    let (_, signed) = net.requests(Method::ALLOCATE)[1];
    let echoed: Vec<_> = signed
        .get::<PasswordAlgorithms>()
        .unwrap()
        .expect("PASSWORD-ALGORITHMS echoed")
        .iter()
        .collect();
    assert_eq!(echoed, offered, "RFC 8489 §9.2.4: echoed as offered");
    assert_eq!(
        signed.get::<PasswordAlgorithm>().unwrap(),
        Some(PasswordAlgorithm::new(PasswordAlgorithm::SHA256))
    );
    signed
        .verify_message_integrity_sha256(&sha256_key())
        .expect("MESSAGE-INTEGRITY-SHA256 with the SHA-256 key");
    assert!(signed.integrity_offset().is_none());
    let success = Message::parse(net.answers.last().unwrap()).unwrap();
    assert_eq!(success.class(), Class::Success);
    success
        .verify_message_integrity_sha256(&sha256_key())
        .expect("the server answers in kind");

    // Later requests keep the algorithm.
    net.create_permission(PEER);
    let (_, permission) = net.requests(Method::CREATE_PERMISSION)[0];
    permission
        .verify_message_integrity_sha256(&sha256_key())
        .expect("signed with SHA-256");
    assert_eq!(
        permission
            .get::<XorPeerAddress>()
            .unwrap()
            .map(|p| p.0.ip()),
        Some(addr(PEER).ip())
    );
    assert_eq!(
        net.events.last(),
        Some(&TurnEvent::PermissionCreated(addr(PEER).ip()))
    );
    net.send(PEER, b"hi");
    assert!(net.peer_got(relayed, PEER, b"hi"));
}

#[test]
fn a_wrong_password_fails_with_401() {
    let mut net = Net::with(
        server_config(REALM),
        Quotas::new(100, 10),
        client_config("guess"),
    );
    net.client.allocate(net.now, &mut net.rng);
    net.flush();

    assert_eq!(net.client.state(), TurnState::Failed);
    assert_eq!(net.events, [TurnEvent::AllocationFailed(rejected(401))]);
    let TurnEvent::AllocationFailed(error) = &net.events[0] else {
        unreachable!()
    };
    assert!(
        error.to_string().contains("wrong username or password"),
        "{error}"
    );
    // One challenge, one refusal, and no retry loop.
    assert_eq!(net.requests(Method::ALLOCATE).len(), 2);
    assert_eq!(net.client.poll_timeout(), None);
    assert_eq!(net.client.relayed_address(), None);
    net.advance(Duration::from_secs(60));
    assert_eq!(net.sent.len(), 2);
}

#[test]
fn quota_and_capacity_refusals_are_reported() {
    let mut net = Net::with(
        server_config(REALM),
        Quotas::new(100, 1),
        client_config("secret"),
    );
    net.allocate();
    // Alice again, from another address: her quota of one is used.
    net.new_client("198.51.100.11:40000", client_config("secret"));
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    assert_eq!(net.events, [TurnEvent::AllocationFailed(rejected(486))]);

    net.server.set_draining(true);
    net.new_client("198.51.100.12:40000", client_config("secret"));
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    assert_eq!(net.events, [TurnEvent::AllocationFailed(rejected(508))]);
    let TurnEvent::AllocationFailed(error) = &net.events[0] else {
        unreachable!()
    };
    assert!(
        error.to_string().contains("server out of capacity"),
        "{error}"
    );

    // A failed client may try again.
    net.server.set_draining(false);
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    assert_eq!(
        net.client.state(),
        TurnState::Failed,
        "the quota still holds"
    );
}

// --- Refreshes and nonces --------------------------------------------------------------------

#[test]
fn a_stale_nonce_on_refresh_is_retried_with_the_new_one() {
    let mut config = server_config(REALM);
    config.nonce_lifetime = Duration::from_secs(300);
    let mut net = Net::with(config, Quotas::new(100, 10), client_config("secret"));
    net.allocate();
    net.events.clear();

    net.advance(Duration::from_secs(539));
    assert!(net.requests(Method::REFRESH).is_empty(), "not before 540 s");
    net.advance(Duration::from_secs(1));
    assert_eq!(net.errors(Method::REFRESH, ErrorCode::STALE_NONCE), 1);
    let refreshes = net.requests(Method::REFRESH);
    assert_eq!(refreshes.len(), 2, "the stale one and its retry");
    let nonce = |m: &Message<'_>| m.get::<Nonce>().unwrap().unwrap().0.to_owned();
    assert_ne!(nonce(&refreshes[0].1), nonce(&refreshes[1].1));
    assert_eq!(
        net.events,
        [TurnEvent::Refreshed {
            lifetime: Duration::from_secs(600)
        }]
    );
    assert_eq!(net.client.state(), TurnState::Allocated);
}

#[test]
fn refreshes_keep_the_allocation_alive_for_an_hour() {
    let mut net = Net::new();
    let relayed = net.allocate();
    net.create_permission(PEER);
    net.events.clear();

    net.advance(Duration::from_secs(3600));

    assert_eq!(net.failures(), Vec::<&TurnEvent>::new());
    let refreshed = net
        .events
        .iter()
        .filter(|e| matches!(e, TurnEvent::Refreshed { .. }))
        .count();
    // At 540 s, then every 540 s: 540, 1080, ..., 3240.
    assert_eq!(refreshed, 6);
    assert!(
        net.errors(Method::REFRESH, ErrorCode::STALE_NONCE) > 0,
        "the 600 s nonce went stale on the way"
    );
    assert_eq!(net.server.allocation_count(), 1);
    assert!(
        !net.server_events
            .iter()
            .any(|e| matches!(e, Event::AllocationDeleted { .. }))
    );
    net.send(PEER, b"still here");
    assert!(net.peer_got(relayed, PEER, b"still here"));
    assert!(net.peer_sends(relayed, PEER, b"so am I"));
}

#[test]
fn an_explicit_refresh_goes_out_at_once_and_the_timer_resumes_after_it() {
    let mut net = Net::new();
    net.allocate();
    net.events.clear();
    net.advance(Duration::from_secs(10));
    net.client.refresh(net.now, &mut net.rng);
    // A second call while the first is under way sends nothing more.
    net.client.refresh(net.now, &mut net.rng);
    net.flush();
    assert_eq!(net.requests(Method::REFRESH).len(), 1);
    assert_eq!(
        net.events,
        [TurnEvent::Refreshed {
            lifetime: Duration::from_secs(600)
        }]
    );
    // The next automatic refresh counts from this one: 540 s later, not 530.
    net.advance(Duration::from_secs(539));
    assert_eq!(net.requests(Method::REFRESH).len(), 1);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.requests(Method::REFRESH).len(), 2);
    assert_eq!(net.client.state(), TurnState::Allocated);
}

#[test]
fn the_requested_lifetime_is_asked_for_and_the_granted_one_followed() {
    let mut client = client_config("secret");
    client.lifetime = Duration::from_secs(1800);
    let mut net = Net::with(server_config(REALM), Quotas::new(100, 10), client);
    net.allocate();
    assert!(matches!(
        net.events[..],
        [TurnEvent::Allocated { lifetime, .. }] if lifetime == Duration::from_secs(1800)
    ));
    net.advance(Duration::from_secs(1739));
    assert!(net.requests(Method::REFRESH).is_empty());
    net.advance(Duration::from_secs(1));
    let (_, refresh) = *net.requests(Method::REFRESH).last().unwrap();
    assert_eq!(refresh.get::<Lifetime>().unwrap(), Some(Lifetime(1800)));
}

// --- Permissions, indications and channels ---------------------------------------------------

#[test]
fn send_and_data_indications_go_through_a_permission() {
    let mut net = Net::new();
    let relayed = net.allocate();
    assert_eq!(
        net.client.send_to(addr(PEER), b"early"),
        Err(TurnSendError::NoPermission(addr(PEER).ip()))
    );
    net.create_permission(PEER);
    assert_eq!(
        net.events.last(),
        Some(&TurnEvent::PermissionCreated(addr(PEER).ip()))
    );

    let packet = net.send(PEER, b"hello");
    let indication = Message::parse(&packet).unwrap();
    assert_eq!(
        (indication.class(), indication.method()),
        (Class::Indication, Method::SEND)
    );
    assert!(
        indication.integrity_offset().is_none() && indication.integrity_sha256_offset().is_none()
    );
    assert_eq!(
        indication.get::<XorPeerAddress>().unwrap(),
        Some(XorPeerAddress(addr(PEER)))
    );
    assert_eq!(indication.get::<Data<'_>>().unwrap(), Some(Data(b"hello")));
    assert!(net.peer_got(relayed, PEER, b"hello"));

    // Any port of the permitted IP reaches the client, as a Data indication.
    assert!(net.peer_sends(relayed, PEER, b"world"));
    assert!(net.peer_sends(relayed, "198.51.100.99:9001", b"other port"));
    assert_eq!(net.from_peers[0], (addr(PEER), b"world".to_vec()));
    // A peer without permission is stopped by the server.
    assert!(!net.peer_sends(relayed, OTHER_PEER, b"stranger"));
    // Indications from different sends get different transaction ids.
    let again = net.client.send_to(addr(PEER), b"hello").unwrap();
    assert_ne!(
        Message::parse(&again).unwrap().transaction_id(),
        indication.transaction_id()
    );
    // Idempotent: asking again sends nothing.
    let sent = net.sent.len();
    net.create_permission(PEER);
    assert_eq!(net.sent.len(), sent);
}

#[test]
fn channel_data_flows_both_ways_once_the_channel_is_bound() {
    let mut net = Net::new();
    let relayed = net.allocate();
    let channel = net
        .client
        .bind_channel(net.now, &mut net.rng, addr(PEER))
        .unwrap();
    assert_eq!(channel.value(), 0x4000);
    // Not confirmed yet: a Send indication, since bind_channel asked for a permission too.
    let before = net.client.send_to(addr(PEER), b"x").unwrap();
    assert!(Message::parse(&before).is_ok());
    net.flush();
    assert!(net.events.contains(&TurnEvent::ChannelBound {
        peer: addr(PEER),
        channel
    }));
    assert!(
        net.events
            .contains(&TurnEvent::PermissionCreated(addr(PEER).ip()))
    );

    let packet = net.send(PEER, b"over the channel");
    assert_eq!(&packet[..4], &[0x40, 0x00, 0, 16]);
    assert_eq!(packet.len(), 4 + 16);
    assert_eq!(ChannelData::parse(&packet).unwrap().channel(), channel);
    assert!(net.peer_got(relayed, PEER, b"over the channel"));
    // An odd length: no padding over UDP.
    assert_eq!(net.send(PEER, b"odd").len(), 7);

    assert!(net.peer_sends(relayed, PEER, b"and back"));
    // The server used the channel, not an indication.
    assert!(
        net.from_peers
            .iter()
            .any(|(p, d)| *p == addr(PEER) && d == b"and back")
    );

    // Idempotent, and the next peer gets the next number.
    let sent = net.sent.len();
    assert_eq!(net.bind_channel(PEER), channel);
    assert_eq!(net.sent.len(), sent);
    assert_eq!(net.bind_channel(OTHER_PEER).value(), 0x4001);

    // ChannelData on a channel this client never bound is dropped.
    assert!(
        net.client
            .handle_input(net.now, &mut net.rng, &[0x40, 0x07, 0, 1, 9])
            .is_none()
    );
}

#[test]
fn permissions_and_channels_asked_for_before_the_allocation_follow_it() {
    let mut net = Net::new();
    net.client
        .create_permission(net.now, &mut net.rng, addr(OTHER_PEER));
    let channel = net
        .client
        .bind_channel(net.now, &mut net.rng, addr(PEER))
        .unwrap();
    assert_eq!(net.client.poll_transmit(), None, "nothing before allocate");
    assert_eq!(
        net.client.send_to(addr(PEER), b"x"),
        Err(TurnSendError::NotAllocated)
    );
    let relayed = net.allocate();
    assert!(
        net.events
            .contains(&TurnEvent::PermissionCreated(addr(OTHER_PEER).ip()))
    );
    assert!(net.events.contains(&TurnEvent::ChannelBound {
        peer: addr(PEER),
        channel
    }));
    net.send(OTHER_PEER, b"a");
    assert!(net.peer_got(relayed, OTHER_PEER, b"a"));
    net.send(PEER, b"b");
    assert!(net.peer_got(relayed, PEER, b"b"));
}

#[test]
fn permissions_and_channels_are_refreshed_before_they_expire() {
    let mut net = Net::new();
    let relayed = net.allocate();
    net.create_permission(OTHER_PEER);
    net.bind_channel(PEER);
    let start = net.now;

    net.advance(Duration::from_secs(20 * 60));

    assert_eq!(net.failures(), Vec::<&TurnEvent>::new());
    // Both the indication path and the channel path still work after 20 minutes, longer than
    // a permission (300 s) or a channel (600 s) lives unrefreshed.
    net.send(OTHER_PEER, b"indication");
    assert!(net.peer_got(relayed, OTHER_PEER, b"indication"));
    assert!(net.peer_sends(relayed, OTHER_PEER, b"data indication"));
    let packet = net.send(PEER, b"channel");
    assert!(ChannelData::parse(&packet).is_ok());
    assert!(net.peer_got(relayed, PEER, b"channel"));
    assert!(net.peer_sends(relayed, PEER, b"channel back"));

    // Every 240 s for each permission, every 540 s for the channel (retries after a stale
    // nonce left out).
    let times = |method: Method, peer: &str| -> Vec<u64> {
        let mut times: Vec<u64> = net
            .requests(method)
            .iter()
            .filter(|(_, m)| m.get::<XorPeerAddress>().unwrap().unwrap().0.ip() == addr(peer).ip())
            .map(|(at, _)| at.duration_since(start).as_secs())
            .collect();
        times.dedup();
        times
    };
    assert_eq!(
        times(Method::CREATE_PERMISSION, OTHER_PEER),
        [0, 240, 480, 720, 960, 1200]
    );
    assert_eq!(
        times(Method::CREATE_PERMISSION, PEER),
        [0, 240, 480, 720, 960, 1200]
    );
    assert_eq!(times(Method::CHANNEL_BIND, PEER), [0, 540, 1080]);
    assert!(
        net.errors(Method::CREATE_PERMISSION, ErrorCode::STALE_NONCE) > 0,
        "stale nonces on the way were followed"
    );
}

#[test]
fn a_permission_the_policy_refuses_fails_with_403() {
    let mut net = Net::new();
    net.allocate();
    net.create_permission("10.0.0.1:5000");
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(
        net.events.last(),
        Some(&TurnEvent::PermissionFailed {
            peer,
            error: rejected(403)
        })
    );
    let Some(TurnEvent::PermissionFailed { error, .. }) = net.events.last() else {
        unreachable!()
    };
    assert!(
        error
            .to_string()
            .contains("forbidden by the server's peer policy")
    );
    // Forgotten: sending to it is refused locally, and asking again asks the server again.
    assert_eq!(
        net.client.send_to("10.0.0.1:5000".parse().unwrap(), b"x"),
        Err(TurnSendError::NoPermission(peer))
    );
    let before = net.requests(Method::CREATE_PERMISSION).len();
    net.create_permission("10.0.0.1:5000");
    assert_eq!(net.requests(Method::CREATE_PERMISSION).len(), before + 1);
}

// --- Loss, timeouts and forgeries ------------------------------------------------------------

#[test]
fn lost_answers_are_retransmitted_with_a_doubling_timeout() {
    let mut net = Net::new();
    net.lose_answers = 2;
    let start = net.now;
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    net.advance(Duration::from_millis(499));
    assert_eq!(net.sent.len(), 1);
    net.advance(Duration::from_millis(1));
    assert_eq!(net.sent.len(), 2);
    net.advance(Duration::from_millis(1000));
    assert_eq!(net.client.state(), TurnState::Allocated);

    let allocates = net.requests(Method::ALLOCATE);
    let times: Vec<u128> = allocates
        .iter()
        .map(|(at, _)| at.duration_since(start).as_millis())
        .collect();
    // Sent at 0, 500 and 1500 ms (the first two answers lost), then signed at once.
    assert_eq!(times, [0, 500, 1500, 1500]);
    assert_eq!(
        net.sent[0].1, net.sent[1].1,
        "a retransmission is the same bytes"
    );
    assert_eq!(net.sent[1].1, net.sent[2].1);
}

#[test]
fn a_lost_allocate_success_is_recovered_by_retransmission() {
    let mut net = Net::new();
    net.hold = true;
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    let challenge = net.held.pop().expect("the 401");
    net.hold = false;
    net.lose_answers = 1;
    net.deliver(&challenge);
    net.flush();
    assert_eq!(
        net.client.state(),
        TurnState::Allocating,
        "the success was lost"
    );
    assert_eq!(net.server.allocation_count(), 1);

    net.advance(Duration::from_millis(500));
    assert_eq!(net.client.state(), TurnState::Allocated);
    // The server recognised the retransmission and answered it as the original.
    assert_eq!(net.server.allocation_count(), 1);
    let allocates = net.requests(Method::ALLOCATE);
    assert_eq!(allocates.len(), 3);
    assert_eq!(
        allocates[1].1.transaction_id(),
        allocates[2].1.transaction_id()
    );
}

#[test]
fn a_server_that_never_answers_fails_the_allocation_after_39_5_seconds() {
    let mut net = Net::new();
    net.blackhole = true;
    let start = net.now;
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    net.advance(Duration::from_millis(39_499));
    assert_eq!(net.client.state(), TurnState::Allocating);
    let times: Vec<u128> = net
        .sent
        .iter()
        .map(|(at, _)| at.duration_since(start).as_millis())
        .collect();
    assert_eq!(times, [0, 500, 1500, 3500, 7500, 15500, 31500]);

    net.advance(Duration::from_millis(1));
    assert_eq!(net.client.state(), TurnState::Failed);
    assert_eq!(
        net.events,
        [TurnEvent::AllocationFailed(TurnError::Timeout)]
    );
    assert_eq!(net.client.poll_timeout(), None);
    assert_eq!(net.sent.len(), 7);
}

#[test]
fn over_a_stream_requests_are_sent_once_and_time_out_after_39_5_seconds() {
    let mut client = client_config("secret");
    client.reliable = true;
    let mut net = Net::with(server_config(REALM), Quotas::new(100, 10), client);
    net.blackhole = true;
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    net.advance(Duration::from_millis(39_499));
    assert_eq!(net.sent.len(), 1, "a stream never needs a retransmission");
    assert_eq!(net.client.state(), TurnState::Allocating);
    net.advance(Duration::from_millis(1));
    assert_eq!(
        net.events,
        [TurnEvent::AllocationFailed(TurnError::Timeout)]
    );
}

#[test]
fn over_a_stream_channel_data_is_padded_both_ways() {
    let mut client = client_config("secret");
    client.reliable = true;
    let mut net = Net::with(server_config(REALM), Quotas::new(100, 10), client);
    net.five_tuple.transport = ClientTransport::Tcp;
    let relay = net.allocate();
    net.create_permission(PEER);
    net.bind_channel(PEER);
    let packet = net.send(PEER, b"hello");
    assert_eq!(packet.len(), 12, "4 header bytes, 5 of data, 3 of padding");
    assert_eq!(&packet[9..], &[0, 0, 0]);
    assert!(net.peer_got(relay, PEER, b"hello"));
    assert!(
        net.peer_sends(relay, PEER, b"world!"),
        "the server's padded ChannelData is read back"
    );
}

#[test]
fn a_refresh_that_goes_unanswered_loses_the_allocation() {
    let mut client = client_config("secret");
    client.timing = TurnTiming {
        initial_rto: Duration::from_millis(100),
        max_retransmits: 3,
    };
    let mut net = Net::with(server_config(REALM), Quotas::new(100, 10), client);
    let relayed = net.allocate();
    net.create_permission(PEER);
    net.events.clear();
    net.blackhole = true;
    // Permission refreshes at 240 s and 480 s time out first (0.1 + 0.2 + 1.6 s each).
    net.advance(Duration::from_secs(542));
    assert_eq!(
        net.events,
        [
            TurnEvent::PermissionFailed {
                peer: addr(PEER).ip(),
                error: TurnError::Timeout
            },
            TurnEvent::RefreshFailed(TurnError::Timeout)
        ]
    );
    assert_eq!(net.client.state(), TurnState::Failed);
    // Still named, so that the owner can tell which candidates were lost with it.
    assert_eq!(net.client.relayed_address(), Some(relayed));
    assert_eq!(
        net.client.send_to(addr(PEER), b"x"),
        Err(TurnSendError::NotAllocated)
    );
    assert_eq!(net.client.poll_timeout(), None);

    // Back in reach at once, the server still holds the old allocation for this 5-tuple.
    net.blackhole = false;
    net.events.clear();
    net.client.allocate(net.now, &mut net.rng);
    assert_eq!(net.client.relayed_address(), None);
    net.flush();
    assert_eq!(net.events, [TurnEvent::AllocationFailed(rejected(437))]);
    // Once it expired there, a new one is granted.
    net.advance(Duration::from_secs(60));
    assert_eq!(net.server.allocation_count(), 0);
    net.allocate();
}

/// `bytes` with its transaction id replaced.
fn with_transaction_id(bytes: &[u8], id: [u8; 12]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[8..20].copy_from_slice(&id);
    bytes
}

/// A response signed with `key`, carrying an XOR-RELAYED-ADDRESS.
fn forged_success(method: Method, id: TransactionId, key: Option<&IntegrityKey>) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Success), id).unwrap();
    w.add(&XorRelayedAddress(addr("192.0.2.66:1234"))).unwrap();
    w.add(&XorMappedAddress(addr(CLIENT))).unwrap();
    w.add(&Lifetime(600)).unwrap();
    if let Some(key) = key {
        w.add_message_integrity_sha256(key).unwrap();
    }
    let len = w.finish();
    buf.truncate(len);
    buf
}

#[test]
fn answers_with_a_wrong_transaction_id_or_bad_integrity_are_ignored() {
    let mut net = Net::new();
    net.hold = true;
    net.client.allocate(net.now, &mut net.rng);
    net.flush();
    let challenge = net.held.pop().unwrap();

    // The challenge under another transaction id: ignored, nothing sent.
    net.deliver(&with_transaction_id(&challenge, [0xEE; 12]));
    assert_eq!(net.client.poll_transmit(), None);
    assert_eq!(net.client.state(), TurnState::Allocating);

    net.deliver(&challenge);
    net.flush();
    let success = net.held.pop().unwrap();
    let id = Message::parse(&success).unwrap().transaction_id();

    // Wrong transaction id.
    net.deliver(&with_transaction_id(&success, [0xEE; 12]));
    // Right id, but the wrong method.
    net.deliver(&forged_success(Method::REFRESH, id, Some(&sha256_key())));
    // Right id, no integrity, or integrity from someone who does not know the password.
    net.deliver(&forged_success(Method::ALLOCATE, id, None));
    let wrong = IntegrityKey::long_term(KeyAlgorithm::Sha256, "alice", REALM, "guess");
    net.deliver(&forged_success(Method::ALLOCATE, id, Some(&wrong)));
    // A damaged FINGERPRINT.
    let mut damaged = success.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    net.deliver(&damaged);
    // An error response signed with the wrong key.
    let mut buf = vec![0u8; 128];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Error),
        id,
    )
    .unwrap();
    w.add(&ErrorCodeAttribute::bare(ErrorCode::INSUFFICIENT_CAPACITY))
        .unwrap();
    w.add_message_integrity_sha256(&wrong).unwrap();
    let len = w.finish();
    net.deliver(&buf[..len]);

    assert_eq!(
        net.client.state(),
        TurnState::Allocating,
        "{:?}",
        net.events
    );
    assert!(net.events.is_empty());

    // The genuine answer still counts.
    net.deliver(&success);
    assert_eq!(net.client.state(), TurnState::Allocated);
    assert_ne!(net.client.relayed_address(), Some(addr("192.0.2.66:1234")));
    // And a second copy of it is a response to nothing.
    net.deliver(&success);
    assert_eq!(net.events.len(), 1);
}

// --- Deallocation ----------------------------------------------------------------------------

#[test]
fn deallocate_releases_the_allocation() {
    let mut net = Net::new();
    let relayed = net.allocate();
    net.create_permission(PEER);
    net.bind_channel(OTHER_PEER);
    net.events.clear();

    net.client.deallocate(net.now, &mut net.rng);
    assert_eq!(net.client.state(), TurnState::Deallocating);
    assert_eq!(net.client.relayed_address(), Some(relayed));
    assert_eq!(
        net.client.send_to(addr(PEER), b"x"),
        Err(TurnSendError::NotAllocated)
    );
    net.flush();

    assert_eq!(net.events, [TurnEvent::Deallocated { unconfirmed: None }]);
    assert_eq!(net.client.state(), TurnState::Deallocated);
    let (_, refresh) = *net.requests(Method::REFRESH).last().unwrap();
    assert_eq!(refresh.get::<Lifetime>().unwrap(), Some(Lifetime(0)));
    assert_eq!(net.server.allocation_count(), 0);
    assert!(net.sockets.bound.is_empty(), "the relay port is released");
    assert_eq!(net.client.relayed_address(), None);
    assert_eq!(net.client.poll_timeout(), None);
    assert_eq!(
        net.client.bind_channel(net.now, &mut net.rng, addr(PEER)),
        None
    );
    net.advance(Duration::from_secs(3600));
    assert_eq!(
        net.events,
        [TurnEvent::Deallocated { unconfirmed: None }],
        "nothing more happens"
    );

    // Deallocating twice does nothing; allocating again starts afresh.
    net.client.deallocate(net.now, &mut net.rng);
    assert_eq!(net.client.poll_transmit(), None);
    net.allocate();
}

#[test]
fn a_release_the_server_never_answers_ends_unconfirmed() {
    let mut net = Net::new();
    net.allocate();
    net.events.clear();
    net.lose_answers = usize::MAX;
    net.client.deallocate(net.now, &mut net.rng);
    net.flush();
    net.advance(Duration::from_secs(60));
    assert_eq!(
        net.events,
        [TurnEvent::Deallocated {
            unconfirmed: Some(TurnError::Timeout)
        }]
    );
    assert_eq!(net.client.state(), TurnState::Deallocated);
}

#[test]
fn deallocating_before_the_allocate_is_answered_still_ends() {
    let mut net = Net::new();
    net.client.allocate(net.now, &mut net.rng);
    net.client.deallocate(net.now, &mut net.rng);
    net.flush();
    // The server has no allocation for the Refresh yet.
    assert_eq!(
        net.errors(Method::REFRESH, ErrorCode::ALLOCATION_MISMATCH),
        1
    );
    assert_eq!(net.events, [TurnEvent::Deallocated { unconfirmed: None }]);
    assert_eq!(net.client.state(), TurnState::Deallocated);
    assert_eq!(net.server.allocation_count(), 0);
}

// --- A scripted server, for what the real one never does --------------------------------------

/// An error response to `request` with `code`, REALM and NONCE.
fn challenge(
    request: &[u8],
    code: ErrorCode,
    nonce: &str,
    extra: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let request = Message::parse(request).unwrap();
    let mut buf = vec![0u8; 256];
    let mut w = MessageWriter::new(
        &mut buf,
        request.message_type().error(),
        request.transaction_id(),
    )
    .unwrap();
    w.add(&ErrorCodeAttribute::bare(code)).unwrap();
    w.add(&Realm(REALM)).unwrap();
    w.add(&Nonce(nonce)).unwrap();
    extra(&mut w);
    let len = w.finish();
    buf.truncate(len);
    buf
}

fn scripted_client() -> (TurnClient, ChaCha8Rng, Instant, Vec<u8>) {
    let mut client = TurnClient::new(client_config("secret"));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let now = Instant::now();
    client.allocate(now, &mut rng);
    let request = client.poll_transmit().unwrap();
    (client, rng, now, request)
}

#[test]
fn a_nonce_that_stays_stale_ends_the_allocate() {
    let (mut client, mut rng, now, request) = scripted_client();
    client.handle_input(
        now,
        &mut rng,
        &challenge(&request, ErrorCode::UNAUTHENTICATED, "n0", |_| {}),
    );
    let mut signed = 0;
    for i in 1.. {
        let Some(request) = client.poll_transmit() else {
            break;
        };
        signed += 1;
        let nonce = format!("n{i}");
        client.handle_input(
            now,
            &mut rng,
            &challenge(&request, ErrorCode::STALE_NONCE, &nonce, |_| {}),
        );
        assert!(i < 10, "a retry loop");
    }
    assert_eq!(signed, 4, "the first signed Allocate and three retries");
    let Some(TurnEvent::AllocationFailed(error)) = client.poll_event() else {
        panic!("no failure");
    };
    assert_eq!(error, rejected(438));
    assert!(error.to_string().contains("clock skew?"), "{error}");
}

#[test]
fn a_nonce_announcing_algorithms_it_does_not_list_is_a_downgrade() {
    let (mut client, mut rng, now, request) = scripted_client();
    let features = SecurityFeatures {
        password_algorithms: true,
        username_anonymity: false,
    };
    let nonce = format!(
        "{}abcdef",
        std::str::from_utf8(&features.nonce_prefix()).unwrap()
    );
    assert!(nonce.starts_with(NONCE_COOKIE));
    client.handle_input(
        now,
        &mut rng,
        &challenge(&request, ErrorCode::UNAUTHENTICATED, &nonce, |_| {}),
    );
    assert_eq!(client.poll_transmit(), None, "no retry");
    assert!(matches!(
        client.poll_event(),
        Some(TurnEvent::AllocationFailed(TurnError::InvalidResponse(_)))
    ));
    assert_eq!(client.state(), TurnState::Failed);
}

#[test]
fn try_alternate_names_the_other_server() {
    let (mut client, mut rng, now, request) = scripted_client();
    let answer = challenge(&request, ErrorCode::TRY_ALTERNATE, "n", |w| {
        w.add(&AlternateServer(addr("192.0.2.10:3478"))).unwrap();
    });
    client.handle_input(now, &mut rng, &answer);
    let Some(TurnEvent::AllocationFailed(error)) = client.poll_event() else {
        panic!("no failure");
    };
    assert_eq!(
        error,
        TurnError::TryAlternate {
            server: Some(addr("192.0.2.10:3478"))
        }
    );
    assert_eq!(error.to_string(), "the server redirects to 192.0.2.10:3478");
}

// --- Arbitrary input -------------------------------------------------------------------------

/// What a fuzzed datagram starts as: raw bytes, a STUN message of a plausible type carrying
/// the id of the request in flight, or ChannelData on channel 0x4000.
fn shape(kind: u8, message_type: u16, body: &[u8], in_flight: Option<TransactionId>) -> Vec<u8> {
    match kind % 3 {
        0 => body.to_vec(),
        1 => {
            let mut bytes = Vec::with_capacity(20 + body.len());
            let len = body.len() & !3;
            bytes.extend_from_slice(&message_type.to_be_bytes());
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
            bytes.extend_from_slice(&0x2112_A442u32.to_be_bytes());
            let id = in_flight.unwrap_or_default();
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&body[..len]);
            bytes
        }
        _ => {
            let mut bytes = vec![0x40, 0x00];
            bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
            bytes.extend_from_slice(body);
            bytes
        }
    }
}

/// Response and indication types a TURN client may meet.
const TYPES: [(Method, Class); 8] = [
    (Method::ALLOCATE, Class::Success),
    (Method::ALLOCATE, Class::Error),
    (Method::REFRESH, Class::Success),
    (Method::REFRESH, Class::Error),
    (Method::CREATE_PERMISSION, Class::Success),
    (Method::CHANNEL_BIND, Class::Error),
    (Method::DATA, Class::Indication),
    (Method::BINDING, Class::Request),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_datagrams_never_panic(
        allocated in any::<bool>(),
        datagrams in prop::collection::vec(
            (any::<u8>(), 0..TYPES.len(), prop::collection::vec(any::<u8>(), 0..160)),
            1..8,
        ),
    ) {
        let mut net = Net::new();
        if allocated {
            net.allocate();
            net.create_permission(PEER);
            net.bind_channel(PEER);
            // A request in flight, for the fuzzed answers to match.
            net.client.create_permission(net.now, &mut net.rng, addr(OTHER_PEER));
        } else {
            net.client.allocate(net.now, &mut net.rng);
        }
        let in_flight = net
            .client
            .poll_transmit()
            .and_then(|p| Message::parse(&p).ok().map(|m| m.transaction_id()));
        for (kind, t, body) in &datagrams {
            let (method, class) = TYPES[*t];
            let message_type = MessageType::new(method, class).to_u16();
            let packet = shape(*kind, message_type, body, in_flight);
            let _ = net.client.handle_input(net.now, &mut net.rng, &packet);
            while net.client.poll_transmit().is_some() {}
        }
        net.drain();
        net.advance(Duration::from_secs(60));
        let state = net.client.state();
        prop_assert!(state != TurnState::Idle);
        if state == TurnState::Allocated {
            prop_assert!(net.client.relayed_address().is_some());
        }
    }
}
