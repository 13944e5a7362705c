//! A test harness for the TURN core: a virtual clock, fake relay sockets, and clients that
//! speak long-term credentials.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use icebreaker_turn::{
    ClientAction, ClientTransport, DenyReason, Event, FiveTuple, PeerAction, Quotas, RelaySockets,
    TurnConfig, TurnServer, UserCredential,
};
use icebreaker_wire::attr::{
    AddressErrorCode, AddressFamily, AnyAttribute, AttrType, Data, DontFragment,
    ErrorCodeAttribute, Nonce, RawAttribute, Realm, Username, XorPeerAddress, XorRelayedAddress,
};
use icebreaker_wire::credentials::KeyAlgorithm;
use icebreaker_wire::{
    Class, ErrorCode, IntegrityKey, Message, MessageType, MessageWriter, Method, TransactionId,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

pub const REALM: &str = "example.org";
pub const SERVER: &str = "203.0.113.1:3478";
/// Unix time at the start of every test: 2026-11-21.
pub const UNIX_START: u64 = 1_795_219_200;

/// Relay sockets that live in a set; ports can be refused to play another program, and whole
/// IPs to play an address that is gone. TCP listeners (RFC 6062) live in a set of their own.
#[derive(Default)]
pub struct FakeSockets {
    pub bound: HashSet<SocketAddr>,
    pub refuse: HashSet<u16>,
    pub refuse_ip: HashSet<IpAddr>,
    pub listening: HashSet<SocketAddr>,
}

impl RelaySockets for FakeSockets {
    fn bind(&mut self, addr: SocketAddr) -> bool {
        !self.refuse.contains(&addr.port())
            && !self.refuse_ip.contains(&addr.ip())
            && self.bound.insert(addr)
    }

    fn release(&mut self, addr: SocketAddr) {
        assert!(
            self.bound.remove(&addr),
            "released {addr}, which was not bound"
        );
    }

    fn bind_tcp(&mut self, addr: SocketAddr) -> bool {
        !self.refuse.contains(&addr.port())
            && !self.refuse_ip.contains(&addr.ip())
            && self.listening.insert(addr)
    }

    fn release_tcp(&mut self, addr: SocketAddr) {
        assert!(
            self.listening.remove(&addr),
            "released TCP {addr}, which was not listening"
        );
    }
}

/// The default configuration of these tests: two users, a REST secret, 100 relay ports.
pub fn config() -> TurnConfig {
    let mut config = TurnConfig::new(REALM, 50_000..=50_099);
    config.users = vec![
        ("alice".into(), UserCredential::Password("secret".into())),
        ("bob".into(), UserCredential::Password("hunter2".into())),
    ];
    config.rest_secrets = vec![b"rest-secret".to_vec()];
    config.nonce_secret = [9; 32];
    config.peer_policy.server_addresses = vec![addr(SERVER).ip()];
    config
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

pub struct Harness {
    pub server: TurnServer,
    pub start: Instant,
    pub now: Instant,
    pub sockets: FakeSockets,
    pub quotas: Arc<Quotas>,
    pub events: Vec<Event>,
    next_tid: u64,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(config(), Quotas::new(10_000, 10))
    }

    pub fn with(config: TurnConfig, quotas: Quotas) -> Harness {
        Harness::sharing(config, Arc::new(quotas))
    }

    /// A second worker's core: its own allocations, the same shared quotas and reservations.
    pub fn sharing(config: TurnConfig, quotas: Arc<Quotas>) -> Harness {
        let start = Instant::now();
        let rng = Box::new(ChaCha8Rng::seed_from_u64(7));
        Harness {
            server: TurnServer::new(config, quotas.clone(), rng, start, UNIX_START),
            start,
            now: start,
            sockets: FakeSockets::default(),
            quotas,
            events: Vec::new(),
            next_tid: 1,
        }
    }

    pub fn unix_now(&self) -> u64 {
        UNIX_START + self.now.duration_since(self.start).as_secs()
    }

    /// Moves the clock and runs the timers, as a driver would.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.server.poll_timeout().filter(|&at| at <= target) {
            self.now = at.max(self.now);
            self.server.handle_timeout(self.now, &mut self.sockets);
            self.drain();
        }
        self.now = target;
        self.server.handle_timeout(self.now, &mut self.sockets);
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(event) = self.server.poll_event() {
            self.events.push(event);
        }
    }

    pub fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId::new(bytes)
    }

    /// Sends raw bytes from `client`; returns the action and, for a reply (or the response of a
    /// ConnectionBind that turns the connection into a pipe), its bytes.
    pub fn send(&mut self, client: &Client, packet: &[u8]) -> (ClientAction, Vec<u8>) {
        let mut out = [0u8; 2048];
        let action = self.server.handle_client(
            self.now,
            client.five_tuple,
            packet,
            &mut out,
            &mut self.sockets,
        );
        self.drain();
        let reply = match action {
            ClientAction::Reply(len) | ClientAction::PipeToPeer { len, .. } => out[..len].to_vec(),
            _ => Vec::new(),
        };
        (action, reply)
    }

    /// Sends a request of `method` with `attrs`, signed with the client's credentials when it
    /// has a nonce, and returns the reply's bytes (empty when dropped).
    pub fn request(
        &mut self,
        client: &Client,
        method: Method,
        attrs: &[AnyAttribute<'_>],
    ) -> Vec<u8> {
        let tid = self.tid();
        let bytes = client.build(method, tid, attrs);
        self.send(client, &bytes).1
    }

    /// Like [`request`](Harness::request), following one 438 with the fresh nonce, as a client
    /// whose nonce expired does.
    pub fn request_fresh(
        &mut self,
        client: &mut Client,
        method: Method,
        attrs: &[AnyAttribute<'_>],
    ) -> Vec<u8> {
        let reply = self.request(client, method, attrs);
        if error_code(&reply) == Some(ErrorCode::STALE_NONCE) && client.learn_nonce(&reply) {
            return self.request(client, method, attrs);
        }
        reply
    }

    /// Allocates for `client`, answering the 401 challenge; returns the relayed address.
    pub fn allocate(&mut self, client: &mut Client) -> SocketAddr {
        let reply = self.allocate_with(client, &[]);
        let message = Message::parse(&reply).expect("a reply");
        assert_eq!(message.class(), Class::Success, "{message:?}");
        message
            .get::<XorRelayedAddress>()
            .expect("valid")
            .expect("XOR-RELAYED-ADDRESS")
            .0
    }

    /// Sends Allocate (REQUESTED-TRANSPORT UDP plus `extra`) and follows one 401 or 438.
    pub fn allocate_with(&mut self, client: &mut Client, extra: &[AnyAttribute<'_>]) -> Vec<u8> {
        let mut attrs = vec![AnyAttribute::RequestedTransport(
            icebreaker_wire::attr::RequestedTransport::UDP,
        )];
        attrs.extend_from_slice(extra);
        let reply = self.request(client, Method::ALLOCATE, &attrs);
        if client.learn_nonce(&reply) {
            return self.request(client, Method::ALLOCATE, &attrs);
        }
        reply
    }

    /// Delivers `data` from `peer` to the relay socket `relay`, as a driver with headroom would.
    pub fn deliver_from_peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> (PeerAction, Vec<u8>) {
        let mut buf = vec![0u8; 4 + data.len() + 4];
        buf[4..4 + data.len()].copy_from_slice(data);
        let mut out = [0u8; 2048];
        let action =
            self.server
                .handle_peer(self.now, relay, peer, &mut buf, 4..4 + data.len(), &mut out);
        self.drain();
        let bytes = match &action {
            PeerAction::ForwardInPlace { range, .. } => buf[range.clone()].to_vec(),
            PeerAction::Forward { len, .. } => out[..*len].to_vec(),
            PeerAction::Drop => Vec::new(),
        };
        (action, bytes)
    }

    /// CreatePermission for `peers`, one XOR-PEER-ADDRESS each, following one 438.
    pub fn create_permission(&mut self, client: &mut Client, peers: &[SocketAddr]) -> Vec<u8> {
        let attrs: Vec<AnyAttribute<'_>> = peers
            .iter()
            .map(|&p| AnyAttribute::XorPeerAddress(XorPeerAddress(p)))
            .collect();
        self.request_fresh(client, Method::CREATE_PERMISSION, &attrs)
    }

    /// ChannelBind of `channel` to `peer`, following one 438. The number is written raw, so
    /// that numbers outside 0x4000..=0x4FFF can be sent too.
    pub fn channel_bind(&mut self, client: &mut Client, channel: u16, peer: SocketAddr) -> Vec<u8> {
        let number = channel_number(channel);
        self.request_fresh(
            client,
            Method::CHANNEL_BIND,
            &[
                AnyAttribute::Unknown(RawAttribute {
                    attr_type: AttrType::CHANNEL_NUMBER,
                    value: &number,
                }),
                AnyAttribute::XorPeerAddress(XorPeerAddress(peer)),
            ],
        )
    }

    /// A Send indication to `peer` carrying `data`: unsigned, as indications are
    /// (RFC 8656 §11.1).
    pub fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        dont_fragment: bool,
    ) -> Vec<u8> {
        let tid = self.tid();
        let mut buf = vec![0u8; 128 + data.len()];
        let indication = MessageType::new(Method::SEND, Class::Indication);
        let mut w = MessageWriter::new(&mut buf, indication, tid).expect("fits");
        w.add(&XorPeerAddress(peer)).expect("fits");
        if dont_fragment {
            w.add(&DontFragment).expect("fits");
        }
        w.add(&Data(data)).expect("fits");
        let len = w.finish();
        buf.truncate(len);
        buf
    }

    /// An unsigned message of `method` and `class` with `attrs`, as a client might send it.
    pub fn message(&mut self, method: Method, class: Class, attrs: &[AnyAttribute<'_>]) -> Vec<u8> {
        let tid = self.tid();
        let mut buf = vec![0u8; 512];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::new(method, class), tid).expect("fits");
        for attr in attrs {
            w.add_any(attr).expect("fits");
        }
        let len = w.finish();
        buf.truncate(len);
        buf
    }

    /// Sends a Send indication from `client` to `peer`; returns the packet and the action.
    pub fn send_to_peer(
        &mut self,
        client: &Client,
        peer: SocketAddr,
        data: &[u8],
    ) -> (ClientAction, Vec<u8>) {
        let packet = self.send_indication(peer, data, false);
        let (action, _) = self.send(client, &packet);
        (action, packet)
    }

    /// Whether data from `peer` to `relay` is forwarded, and then to `client`.
    pub fn peer_reaches(&mut self, client: &Client, relay: SocketAddr, peer: SocketAddr) -> bool {
        match self.deliver_from_peer(relay, peer, b"ping").0 {
            PeerAction::Drop => false,
            PeerAction::Forward { client: to, .. }
            | PeerAction::ForwardInPlace { client: to, .. } => {
                assert_eq!(to, client.five_tuple, "forwarded to the wrong client");
                true
            }
        }
    }

    /// The peer denials reported so far, as (client, peer, reason).
    pub fn denials(&self) -> Vec<(FiveTuple, SocketAddr, DenyReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::PeerDenied {
                    five_tuple,
                    peer,
                    reason,
                } => Some((*five_tuple, *peer, *reason)),
                _ => None,
            })
            .collect()
    }
}

/// The peer and data of a Data indication, checking that it is one: class Indication, method
/// Data, and unsigned (RFC 8656 §11.3).
pub fn data_indication(bytes: &[u8]) -> (SocketAddr, Vec<u8>) {
    let message = Message::parse(bytes).expect("a STUN message");
    assert_eq!(message.class(), Class::Indication, "{message:?}");
    assert_eq!(message.method(), Method::DATA, "{message:?}");
    assert!(
        message.integrity_offset().is_none(),
        "indications are unsigned"
    );
    assert!(
        message.integrity_sha256_offset().is_none(),
        "indications are unsigned"
    );
    let peer = message
        .get::<XorPeerAddress>()
        .expect("valid")
        .expect("XOR-PEER-ADDRESS")
        .0;
    let data = message.get::<Data<'_>>().expect("valid").expect("DATA").0;
    (peer, data.to_vec())
}

/// The XOR-RELAYED-ADDRESS of a successful Allocate answer.
pub fn relayed_address(reply: &[u8]) -> SocketAddr {
    let message = Message::parse(reply).expect("a reply");
    assert_eq!(message.class(), Class::Success, "{message:?}");
    message
        .get::<XorRelayedAddress>()
        .expect("valid")
        .expect("XOR-RELAYED-ADDRESS")
        .0
}

/// Every XOR-RELAYED-ADDRESS of a successful Allocate answer, in order: two for a dual
/// allocation.
pub fn relayed_addresses(reply: &[u8]) -> Vec<SocketAddr> {
    let message = Message::parse(reply).expect("a reply");
    assert_eq!(message.class(), Class::Success, "{message:?}");
    message
        .get_all::<XorRelayedAddress>()
        .map(|a| a.expect("valid").0)
        .collect()
}

/// The ADDRESS-ERROR-CODE of an Allocate answer: the family refused and why.
pub fn address_error(reply: &[u8]) -> Option<(AddressFamily, ErrorCode)> {
    let message = Message::parse(reply).expect("a reply");
    message
        .get::<AddressErrorCode>()
        .expect("valid")
        .map(|e| (e.family, e.code))
}

/// The action must be a relay from `relay` to `peer` of exactly `data` within `packet`.
pub fn assert_relayed(
    action: &ClientAction,
    packet: &[u8],
    relay: SocketAddr,
    peer: SocketAddr,
    data: &[u8],
) {
    let ClientAction::Relay {
        relay: from,
        peer: to,
        range,
        ..
    } = action
    else {
        panic!("not relayed: {action:?}");
    };
    assert_eq!((*from, *to), (relay, peer));
    assert_eq!(&packet[range.clone()], data);
}

/// The CHANNEL-NUMBER value for `channel`: the number, then two bytes RFFU.
pub fn channel_number(channel: u16) -> [u8; 4] {
    let [hi, lo] = channel.to_be_bytes();
    [hi, lo, 0, 0]
}

/// A ChannelData message; any number and length field may be written, valid or not.
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("short data");
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A TURN client's side of the credentials.
#[derive(Clone)]
pub struct Client {
    pub five_tuple: FiveTuple,
    pub username: String,
    pub password: String,
    pub nonce: Option<String>,
    pub realm: String,
    /// Add FINGERPRINT to every request.
    pub fingerprint: bool,
}

impl Client {
    pub fn new(client: &str, username: &str, password: &str) -> Client {
        Client {
            five_tuple: FiveTuple {
                client: addr(client),
                server: addr(SERVER),
                transport: ClientTransport::Udp,
            },
            username: username.into(),
            password: password.into(),
            nonce: None,
            realm: REALM.into(),
            fingerprint: true,
        }
    }

    pub fn alice() -> Client {
        Client::new("198.51.100.10:40000", "alice", "secret")
    }

    pub fn bob() -> Client {
        Client::new("198.51.100.20:40000", "bob", "hunter2")
    }

    pub fn key(&self) -> IntegrityKey {
        IntegrityKey::long_term(
            KeyAlgorithm::Md5,
            &self.username,
            &self.realm,
            &self.password,
        )
    }

    /// Remembers the NONCE of a 401 or 438 answer; true if it was one.
    pub fn learn_nonce(&mut self, reply: &[u8]) -> bool {
        let Ok(message) = Message::parse(reply) else {
            return false;
        };
        let code = message
            .get::<ErrorCodeAttribute>()
            .ok()
            .flatten()
            .map(|e| e.code);
        if !matches!(
            code,
            Some(ErrorCode::UNAUTHENTICATED | ErrorCode::STALE_NONCE)
        ) {
            return false;
        }
        let nonce = message.get::<Nonce>().expect("valid").expect("a NONCE");
        self.nonce = Some(nonce.0.to_string());
        true
    }

    /// A request of `method` with `attrs`; signed when the client holds a nonce.
    pub fn build(&self, method: Method, tid: TransactionId, attrs: &[AnyAttribute<'_>]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let request = MessageType::new(method, Class::Request);
        let mut w = MessageWriter::new(&mut buf, request, tid).expect("fits");
        for attr in attrs {
            w.add_any(attr).expect("fits");
        }
        if let Some(nonce) = &self.nonce {
            w.add(&Username(&self.username)).expect("fits");
            w.add(&Realm(&self.realm)).expect("fits");
            w.add(&Nonce(nonce)).expect("fits");
            w.add_message_integrity(&self.key()).expect("fits");
        }
        if self.fingerprint {
            w.add_fingerprint().expect("fits");
        }
        let len = w.finish();
        buf.truncate(len);
        buf
    }
}

/// The error code of a reply, or `None` for a success.
pub fn error_code(reply: &[u8]) -> Option<ErrorCode> {
    let message = Message::parse(reply).expect("a reply");
    message
        .get::<ErrorCodeAttribute>()
        .expect("valid")
        .map(|e| e.code)
}

/// Asserts a reply is a success signed with `key`.
pub fn assert_success(reply: &[u8], key: &IntegrityKey) {
    let message = Message::parse(reply).expect("a reply");
    assert_eq!(message.class(), Class::Success, "{message:?}");
    message
        .verify_message_integrity(key)
        .expect("signed with the request's key");
}

/// Asserts a reply is the error `code`.
pub fn assert_error(reply: &[u8], code: ErrorCode) {
    assert!(!reply.is_empty(), "expected {code}, got no reply");
    assert_eq!(error_code(reply), Some(code), "{:?}", Message::parse(reply));
}
