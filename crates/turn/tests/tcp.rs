//! TCP allocations (RFC 6062) through the public API, with a fake driver: Allocate, Connect and
//! its deferred answer, connections peers open, ConnectionBind on a new connection, timers,
//! quotas, cleanup when an allocation ends, and the peer policy on every path.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use icebreaker_turn::{
    CONNECT_TIMEOUT, CONNECTION_BIND_TIMEOUT, ClientAction, ClientTransport, Command, ConnectionId,
    DeleteReason, DenyReason, Event, FiveTuple, PeerAction, PeerCloseReason, Quotas, TurnConfig,
    connection_bind_id, connection_id_tag,
};
use icebreaker_wire::attr::{
    AdditionalAddressFamily, AddressFamily, AnyAttribute, DontFragment, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
};
use icebreaker_wire::{Class, ErrorCode, Message, Method, TransactionId};

/// A client on a TCP connection to the server.
fn tcp_client(client: &str, username: &str, password: &str) -> Client {
    let mut c = Client::new(client, username, password);
    c.five_tuple.transport = ClientTransport::Tcp;
    c
}

fn alice() -> Client {
    tcp_client("198.51.100.10:40000", "alice", "secret")
}

/// A new connection of `control`'s client, from another port, holding the same credentials
/// and nonce, as a client opening a data connection does (RFC 6062 §4.3).
fn data_connection(control: &Client, port: u16) -> Client {
    let mut data = control.clone();
    data.five_tuple.client.set_port(port);
    data
}

const PEER: &str = "198.51.100.7:8080";

/// Allocates a TCP relay for `client` (REQUESTED-TRANSPORT TCP plus `extra`), following one
/// 401; returns the answer.
fn allocate_tcp_with(h: &mut Harness, client: &mut Client, extra: &[AnyAttribute<'_>]) -> Vec<u8> {
    let mut attrs = vec![AnyAttribute::RequestedTransport(RequestedTransport::TCP)];
    attrs.extend_from_slice(extra);
    let reply = h.request(client, Method::ALLOCATE, &attrs);
    if client.learn_nonce(&reply) {
        return h.request(client, Method::ALLOCATE, &attrs);
    }
    reply
}

fn allocate_tcp(h: &mut Harness, client: &mut Client) -> SocketAddr {
    let reply = allocate_tcp_with(h, client, &[]);
    assert_success(&reply, &client.key());
    relayed_address(&reply)
}

fn commands(h: &mut Harness) -> Vec<Command> {
    std::iter::from_fn(|| h.server.poll_command()).collect()
}

/// The messages owed to control connections, in order, as (destination, bytes).
fn transmits(h: &mut Harness) -> Vec<(FiveTuple, Vec<u8>)> {
    let mut out = [0u8; 1500];
    let mut all = Vec::new();
    while let Some(t) = h.server.poll_transmit(&mut out) {
        all.push((t.client, out[..t.len].to_vec()));
    }
    h.drain();
    all
}

/// Sends Connect to `peer`; returns its transaction id, the action and any immediate answer.
fn connect(
    h: &mut Harness,
    client: &Client,
    peer: SocketAddr,
) -> (TransactionId, ClientAction, Vec<u8>) {
    let tid = h.tid();
    let request = client.build(
        Method::CONNECT,
        tid,
        &[AnyAttribute::XorPeerAddress(XorPeerAddress(peer))],
    );
    let (action, reply) = h.send(client, &request);
    (tid, action, reply)
}

/// Connect that must be accepted for now: returns the id of the [`Command::Connect`].
fn connect_pending(
    h: &mut Harness,
    client: &Client,
    relay: SocketAddr,
    peer: SocketAddr,
) -> (TransactionId, ConnectionId) {
    let (tid, action, reply) = connect(h, client, peer);
    assert_eq!(action, ClientAction::Drop, "answered at once: {reply:?}");
    let cmds = commands(h);
    let [
        Command::Connect {
            id,
            relay: from,
            peer: to,
        },
    ] = cmds[..]
    else {
        panic!("expected one Connect command, got {cmds:?}");
    };
    assert_eq!((from, to), (relay, peer));
    assert!(
        transmits(h).is_empty(),
        "nothing to say before the driver reports"
    );
    (tid, id)
}

/// A ConnectionBind for `id` from `client`.
fn connection_bind(h: &mut Harness, client: &Client, id: ConnectionId) -> (ClientAction, Vec<u8>) {
    let tid = h.tid();
    let request = client.build(
        Method::CONNECTION_BIND,
        tid,
        &[AnyAttribute::ConnectionId(id)],
    );
    h.send(client, &request)
}

/// The CONNECTION-ID of a message.
fn connection_id(bytes: &[u8]) -> Option<ConnectionId> {
    Message::parse(bytes)
        .expect("a STUN message")
        .get::<ConnectionId>()
        .expect("valid")
}

/// Connects to `peer`, lets the driver succeed, and returns the connection id.
fn established(
    h: &mut Harness,
    client: &Client,
    relay: SocketAddr,
    peer: SocketAddr,
) -> ConnectionId {
    let (_, id) = connect_pending(h, client, relay, peer);
    h.server.peer_connected(h.now, id);
    let sent = transmits(h);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(connection_id(&sent[0].1), Some(id));
    id
}

fn opened(h: &Harness) -> Vec<(ConnectionId, SocketAddr, bool)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::PeerConnectionOpened {
                id, peer, outgoing, ..
            } => Some((*id, *peer, *outgoing)),
            _ => None,
        })
        .collect()
}

fn closed(h: &Harness) -> Vec<(ConnectionId, PeerCloseReason)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::PeerConnectionClosed { id, reason, .. } => Some((*id, *reason)),
            _ => None,
        })
        .collect()
}

fn answered(h: &Harness, method: Method) -> Vec<Option<ErrorCode>> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::Answered { method: m, error } if *m == method => Some(*error),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_bind_and_close() {
    let mut h = Harness::new();
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    assert!(h.sockets.listening.contains(&relay), "a TCP listener");
    assert!(h.sockets.bound.is_empty(), "no UDP socket");
    assert_eq!(h.server.relay_ports_in_use(), 1);
    let peer = addr(PEER);
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());

    let (tid, id) = connect_pending(&mut h, &alice, relay, peer);
    assert_eq!(h.server.peer_connection_count(), 1);
    h.server.peer_connected(h.now, id);
    let sent = transmits(&mut h);
    assert_eq!(sent.len(), 1);
    let (to, answer) = &sent[0];
    assert_eq!(*to, alice.five_tuple, "on the control connection");
    let message = Message::parse(answer).expect("a response");
    assert_eq!(message.method(), Method::CONNECT);
    assert_eq!(message.transaction_id(), tid, "answers the Connect");
    assert_success(answer, &alice.key());
    message
        .verify_fingerprint()
        .expect("fingerprinted like the request");
    assert_eq!(connection_id(answer), Some(id));
    assert_eq!(opened(&h), vec![(id, peer, true)]);
    assert_eq!(answered(&h, Method::CONNECT), vec![None]);
    assert!(commands(&mut h).is_empty());

    // The data connection: a new connection, the control connection's nonce, the same user.
    let data = data_connection(&alice, 40001);
    let (action, reply) = connection_bind(&mut h, &data, id);
    let ClientAction::PipeToPeer { len, id: piped } = action else {
        panic!("not piped: {action:?} {:?}", Message::parse(&reply));
    };
    assert_eq!((len, piped), (reply.len(), id));
    assert_success(&reply, &alice.key());
    assert_eq!(
        Message::parse(&reply).expect("parses").method(),
        Method::CONNECTION_BIND
    );
    assert_eq!(answered(&h, Method::CONNECTION_BIND), vec![None]);
    // Bound once only.
    let again = data_connection(&alice, 40002);
    let (action, reply) = connection_bind(&mut h, &again, id);
    assert!(matches!(action, ClientAction::Reply(_)), "{action:?}");
    assert_error(&reply, ErrorCode::BAD_REQUEST);

    // A bound connection outlives the ConnectionBind timer and the permission.
    h.advance(Duration::from_secs(400));
    assert!(commands(&mut h).is_empty());
    assert_eq!(h.server.peer_connection_count(), 1);
    assert!(closed(&h).is_empty());

    h.server.peer_connection_closed(id);
    h.drain();
    assert_eq!(closed(&h), vec![(id, PeerCloseReason::Closed)]);
    assert_eq!(h.server.peer_connection_count(), 0);
    assert!(commands(&mut h).is_empty(), "the driver closed both itself");
    // The same peer can be connected to again.
    h.create_permission(&mut alice, &[peer]);
    established(&mut h, &alice, relay, peer);
}

#[test]
fn a_peer_connects_in() {
    let mut h = Harness::new();
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    let peer = addr("198.51.100.7:33000");

    // No permission: refused, nothing said (RFC 6062 §5.3).
    assert_eq!(h.server.accept_peer_connection(h.now, relay, peer), None);
    assert!(transmits(&mut h).is_empty());
    // Permissions match the IP, any port.
    h.create_permission(&mut alice, &[addr("198.51.100.7:1")]);
    // Not a listener of this core.
    assert_eq!(
        h.server
            .accept_peer_connection(h.now, addr("203.0.113.1:50100"), peer),
        None
    );
    let id = h
        .server
        .accept_peer_connection(h.now, relay, peer)
        .expect("accepted");
    let sent = transmits(&mut h);
    assert_eq!(sent.len(), 1);
    let (to, indication) = &sent[0];
    assert_eq!(*to, alice.five_tuple);
    let message = Message::parse(indication).expect("an indication");
    assert_eq!(message.class(), Class::Indication);
    assert_eq!(message.method(), Method::CONNECTION_ATTEMPT);
    assert!(
        message.integrity_offset().is_none(),
        "indications are unsigned"
    );
    assert_eq!(
        message.get::<XorPeerAddress>().expect("valid"),
        Some(XorPeerAddress(peer))
    );
    assert_eq!(connection_id(indication), Some(id));
    assert_eq!(opened(&h), vec![(id, peer, false)]);
    // The same peer address twice is one connection.
    assert_eq!(h.server.accept_peer_connection(h.now, relay, peer), None);

    // A data connection that authenticates from scratch: 401, then its own nonce.
    let mut data = tcp_client("198.51.100.10:40005", "alice", "secret");
    let (action, challenge) = connection_bind(&mut h, &data, id);
    assert!(matches!(action, ClientAction::Reply(_)));
    assert_error(&challenge, ErrorCode::UNAUTHENTICATED);
    assert!(data.learn_nonce(&challenge));
    let (action, reply) = connection_bind(&mut h, &data, id);
    assert!(
        matches!(action, ClientAction::PipeToPeer { id: piped, .. } if piped == id),
        "{action:?}"
    );
    assert_success(&reply, &alice.key());

    // A dual-stack listener reports addresses mapped into IPv6.
    let other = addr("198.51.100.7:33001");
    let mapped = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    let second = h
        .server
        .accept_peer_connection(h.now, mapped(relay), mapped(other))
        .expect("the same addresses");
    let sent = transmits(&mut h);
    let message = Message::parse(&sent[0].1).expect("an indication");
    assert_eq!(
        message.get::<XorPeerAddress>().expect("valid"),
        Some(XorPeerAddress(other)),
        "told in its canonical form"
    );
    assert_ne!(second, id);
}

#[test]
fn tcp_allocate_is_checked_as_rfc_6062_says() {
    let mut h = Harness::new();
    // RFC 6062 §5.1: only over TCP or TLS.
    for transport in [ClientTransport::Udp, ClientTransport::Dtls] {
        let mut c = Client::new("198.51.100.30:4000", "alice", "secret");
        c.five_tuple.transport = transport;
        assert_error(
            &allocate_tcp_with(&mut h, &mut c, &[]),
            ErrorCode::BAD_REQUEST,
        );
    }
    // Nor with what has no meaning for a stream relay, nor dual.
    let refused: [AnyAttribute<'static>; 4] = [
        AnyAttribute::DontFragment(DontFragment),
        AnyAttribute::EvenPort(EvenPort::default()),
        AnyAttribute::ReservationToken(ReservationToken([1; 8])),
        AnyAttribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::Ipv6)),
    ];
    for (i, attr) in refused.iter().enumerate() {
        let mut c = tcp_client(&format!("198.51.100.31:{}", 4000 + i), "alice", "secret");
        let reply = allocate_tcp_with(&mut h, &mut c, std::slice::from_ref(attr));
        assert_error(&reply, ErrorCode::BAD_REQUEST);
    }
    assert!(h.sockets.listening.is_empty());
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.quotas.total(), 0, "no quota held by a refusal");

    // Over TLS, and with a family of its own.
    let mut tls = Client::new("198.51.100.32:4000", "alice", "secret");
    tls.five_tuple.transport = ClientTransport::Tls;
    assert_success(&allocate_tcp_with(&mut h, &mut tls, &[]), &tls.key());
    let mut v6 = tcp_client("198.51.100.33:4000", "alice", "secret");
    let reply = allocate_tcp_with(
        &mut h,
        &mut v6,
        &[AnyAttribute::RequestedAddressFamily(
            RequestedAddressFamily(AddressFamily::Ipv6),
        )],
    );
    assert_error(&reply, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);

    // Turned off: 442, as before RFC 6062 support.
    let mut config = config();
    config.tcp_relay = false;
    let mut off = Harness::with(config, Quotas::new(100, 10));
    let mut c = alice();
    assert_error(
        &allocate_tcp_with(&mut off, &mut c, &[]),
        ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
    );
    // And no port to listen on: 508.
    let mut full = Harness::new();
    full.sockets.refuse.extend(50_000..=50_099);
    let mut c = alice();
    assert_error(
        &allocate_tcp_with(&mut full, &mut c, &[]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert_eq!(full.quotas.total(), 0);
}

#[test]
fn tcp_and_udp_relays_never_share_a_port_in_one_core() {
    let mut config = config();
    config.relay_ports = 50_000..=50_003;
    config.peer_policy.relay_ports = 50_000..=50_003;
    let mut h = Harness::with(config, Quotas::new(100, 10));
    let mut ports = HashSet::new();
    for i in 0..4 {
        let mut c = if i % 2 == 0 {
            tcp_client(&format!("198.51.100.40:{}", 4000 + i), "alice", "secret")
        } else {
            Client::new(&format!("198.51.100.40:{}", 4000 + i), "bob", "hunter2")
        };
        let relay = if i % 2 == 0 {
            allocate_tcp(&mut h, &mut c)
        } else {
            h.allocate(&mut c)
        };
        assert!(ports.insert(relay.port()), "{relay} twice");
    }
    assert_eq!(h.server.relay_ports_in_use(), 4);
    assert_eq!((h.sockets.listening.len(), h.sockets.bound.len()), (2, 2));
}

#[test]
fn a_tcp_allocation_relays_no_datagram() {
    let mut h = Harness::new();
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    let peer = addr(PEER);
    // CreatePermission and Refresh work as for UDP.
    assert_success(&h.create_permission(&mut alice, &[peer]), &alice.key());
    let reply = h.request_fresh(
        &mut alice,
        Method::REFRESH,
        &[AnyAttribute::Lifetime(Lifetime(1200))],
    );
    assert_success(&reply, &alice.key());
    // ChannelBind is refused.
    assert_error(
        &h.channel_bind(&mut alice, 0x4000, peer),
        ErrorCode::BAD_REQUEST,
    );
    // A Send indication is dropped, whatever the permissions.
    let (action, _) = h.send_to_peer(&alice, peer, b"data");
    assert_eq!(action, ClientAction::Drop);
    // And ChannelData has no channel to go to.
    let (action, _) = h.send(&alice, &channel_data(0x4000, b"data"));
    assert_eq!(action, ClientAction::Drop);
    // A datagram to the listener's port is no allocation's.
    let (action, _) = h.deliver_from_peer(relay, peer, b"data");
    assert_eq!(action, PeerAction::Drop);
}

#[test]
fn connect_errors() {
    let mut h = Harness::new();
    let peer = addr(PEER);

    // On a UDP allocation, even over TCP: 400.
    let mut udp = tcp_client("198.51.100.50:4000", "alice", "secret");
    h.allocate(&mut udp);
    h.create_permission(&mut udp, &[peer]);
    let (_, _, reply) = connect(&mut h, &udp, peer);
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    // Without an allocation: 437.
    let mut none = tcp_client("198.51.100.51:4000", "alice", "secret");
    none.nonce = udp.nonce.clone();
    let (_, _, reply) = connect(&mut h, &none, peer);
    assert_error(&reply, ErrorCode::ALLOCATION_MISMATCH);

    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    // Without XOR-PEER-ADDRESS: 400.
    let reply = h.request(&alice, Method::CONNECT, &[]);
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    // No permission: 403, and no connection attempted.
    let (_, _, reply) = connect(&mut h, &alice, peer);
    assert_error(&reply, ErrorCode::FORBIDDEN);
    // A peer of the other family: 443.
    let (_, _, reply) = connect(&mut h, &alice, addr("[2001:db8::7]:8080"));
    assert_error(&reply, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
    // Another user on the allocation: 441.
    let mut mallory = alice.clone();
    mallory.username = "bob".into();
    mallory.password = "hunter2".into();
    let (_, _, reply) = connect(&mut h, &mallory, peer);
    assert_error(&reply, ErrorCode::WRONG_CREDENTIALS);
    assert!(commands(&mut h).is_empty());

    // While connecting, and once connected: 446 (RFC 6062 §5.2).
    h.create_permission(&mut alice, &[peer]);
    let (_, id) = connect_pending(&mut h, &alice, relay, peer);
    let (_, _, reply) = connect(&mut h, &alice, peer);
    assert_error(&reply, ErrorCode::CONNECTION_ALREADY_EXISTS);
    h.server.peer_connected(h.now, id);
    transmits(&mut h);
    let (_, _, reply) = connect(&mut h, &alice, peer);
    assert_error(&reply, ErrorCode::CONNECTION_ALREADY_EXISTS);
    // Another port of the same peer is another connection.
    connect_pending(&mut h, &alice, relay, addr("198.51.100.7:8081"));
    assert!(commands(&mut h).is_empty());
}

#[test]
fn connect_failures_are_answered_447() {
    let mut h = Harness::new();
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    let peer = addr(PEER);
    h.create_permission(&mut alice, &[peer]);

    // The driver reports a failure.
    let (tid, id) = connect_pending(&mut h, &alice, relay, peer);
    h.server.peer_connect_failed(id);
    let sent = transmits(&mut h);
    assert_eq!(sent.len(), 1);
    let (to, answer) = &sent[0];
    assert_eq!(*to, alice.five_tuple);
    assert_error(answer, ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE);
    let message = Message::parse(answer).expect("a response");
    assert_eq!(message.transaction_id(), tid);
    message
        .verify_message_integrity(&alice.key())
        .expect("signed with the requester's key");
    assert_eq!(
        answered(&h, Method::CONNECT),
        vec![Some(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE)]
    );
    assert!(commands(&mut h).is_empty(), "the driver closed it itself");
    assert!(opened(&h).is_empty());
    assert_eq!(h.server.peer_connection_count(), 0);
    // A connection that closes before it is made is a failure too.
    let (_, id) = connect_pending(&mut h, &alice, relay, peer);
    h.server.peer_connection_closed(id);
    assert_error(
        &transmits(&mut h)[0].1,
        ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE,
    );

    // The driver never reports: 447 at the timeout, and the attempt is abandoned.
    let (_, id) = connect_pending(&mut h, &alice, relay, peer);
    h.advance(CONNECT_TIMEOUT - Duration::from_secs(1));
    assert!(
        transmits(&mut h).is_empty(),
        "not before 30 s (RFC 6062 §5.2)"
    );
    h.advance(Duration::from_secs(2));
    let sent = transmits(&mut h);
    assert_eq!(sent.len(), 1);
    assert_error(&sent[0].1, ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE);
    assert_eq!(commands(&mut h), vec![Command::Close { id }]);
    // The driver's late success is for an id the core forgot: close it.
    h.server.peer_connected(h.now, id);
    assert_eq!(commands(&mut h), vec![Command::Close { id }]);
    assert!(transmits(&mut h).is_empty());
    // Late reports of any kind change nothing.
    h.server.peer_connect_failed(id);
    h.server.peer_connection_closed(id);
    assert!(transmits(&mut h).is_empty());
    assert!(closed(&h).is_empty());
}

#[test]
fn an_unbound_connection_is_closed_after_30_seconds() {
    let mut h = Harness::new();
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    let peer = addr(PEER);
    h.create_permission(&mut alice, &[peer]);
    let outgoing = established(&mut h, &alice, relay, peer);
    let incoming = h
        .server
        .accept_peer_connection(h.now, relay, addr("198.51.100.7:40000"))
        .expect("permitted");
    transmits(&mut h);

    h.advance(CONNECTION_BIND_TIMEOUT - Duration::from_secs(1));
    assert!(commands(&mut h).is_empty());
    h.advance(Duration::from_secs(2));
    let closes: HashSet<Command> = commands(&mut h).into_iter().collect();
    assert_eq!(
        closes,
        HashSet::from([
            Command::Close { id: outgoing },
            Command::Close { id: incoming }
        ])
    );
    let mut reasons = closed(&h);
    reasons.sort();
    let mut expected = vec![
        (outgoing, PeerCloseReason::NotBound),
        (incoming, PeerCloseReason::NotBound),
    ];
    expected.sort();
    assert_eq!(reasons, expected);
    // Too late to bind.
    let data = data_connection(&alice, 40001);
    let (action, reply) = connection_bind(&mut h, &data, incoming);
    assert!(matches!(action, ClientAction::Reply(_)));
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn connection_bind_is_checked() {
    let mut h = Harness::new();
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    let peer = addr(PEER);
    h.create_permission(&mut alice, &[peer]);
    let (_, connecting) = connect_pending(&mut h, &alice, relay, peer);
    let id = h
        .server
        .accept_peer_connection(h.now, relay, addr("198.51.100.7:40000"))
        .expect("permitted");
    transmits(&mut h);
    let data = data_connection(&alice, 40001);

    // Over UDP or DTLS: 400 (RFC 6062 §5.4).
    for transport in [ClientTransport::Udp, ClientTransport::Dtls] {
        let mut d = data.clone();
        d.five_tuple.transport = transport;
        let (action, reply) = connection_bind(&mut h, &d, id);
        assert!(matches!(action, ClientAction::Reply(_)), "{action:?}");
        assert_error(&reply, ErrorCode::BAD_REQUEST);
    }
    // On the control connection, which holds the allocation: 400.
    let (_, reply) = connection_bind(&mut h, &alice, id);
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    // Without CONNECTION-ID: 400.
    let reply = h.request(&data, Method::CONNECTION_BIND, &[]);
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    // An id no one issued, or one still connecting: 400, before any HMAC is spent.
    for unknown in [ConnectionId(id.0 ^ 1), connecting] {
        let (_, reply) = connection_bind(&mut h, &data, unknown);
        assert_error(&reply, ErrorCode::BAD_REQUEST);
        let message = Message::parse(&reply).expect("parses");
        assert!(message.integrity_offset().is_none(), "unsigned");
    }
    // Without credentials: 401. With a wrong password: 401.
    let mut stranger = data.clone();
    stranger.nonce = None;
    let (_, reply) = connection_bind(&mut h, &stranger, id);
    assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    let mut guesser = data.clone();
    guesser.password = "guess".into();
    let (action, reply) = connection_bind(&mut h, &guesser, id);
    assert!(!matches!(action, ClientAction::PipeToPeer { .. }));
    assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    // Another user's credentials: 441, though they authenticate.
    let mut bob = tcp_client("198.51.100.20:40000", "bob", "hunter2");
    let (_, challenge) = connection_bind(&mut h, &bob, id);
    assert!(bob.learn_nonce(&challenge));
    let (action, reply) = connection_bind(&mut h, &bob, id);
    assert!(matches!(action, ClientAction::Reply(_)));
    assert_error(&reply, ErrorCode::WRONG_CREDENTIALS);
    // A nonce of yet another address does not pass for the control connection's.
    let mut elsewhere = data.clone();
    elsewhere.nonce = bob.nonce.clone();
    let (_, reply) = connection_bind(&mut h, &elsewhere, id);
    assert_error(&reply, ErrorCode::STALE_NONCE);

    // Still bindable after all that.
    let (action, _) = connection_bind(&mut h, &data, id);
    assert!(
        matches!(action, ClientAction::PipeToPeer { .. }),
        "{action:?}"
    );
}

#[test]
fn an_ending_allocation_closes_its_connections() {
    for reason in [
        DeleteReason::Refresh,
        DeleteReason::Expired,
        DeleteReason::ConnectionClosed,
    ] {
        // Allocations that expire before the connections' own 30 s timers.
        let mut config = config();
        config.default_lifetime = Duration::from_secs(20);
        let mut h = Harness::with(config, Quotas::new(100, 10));
        let mut alice = alice();
        let relay = allocate_tcp(&mut h, &mut alice);
        let peer = addr(PEER);
        h.create_permission(&mut alice, &[peer]);
        let bound = established(&mut h, &alice, relay, peer);
        let data = data_connection(&alice, 40001);
        assert!(matches!(
            connection_bind(&mut h, &data, bound).0,
            ClientAction::PipeToPeer { .. }
        ));
        let unbound = h
            .server
            .accept_peer_connection(h.now, relay, addr("198.51.100.7:40000"))
            .expect("permitted");
        transmits(&mut h);
        let (_, connecting) = connect_pending(&mut h, &alice, relay, addr("198.51.100.7:9"));

        match reason {
            DeleteReason::Refresh => {
                let reply = h.request_fresh(
                    &mut alice,
                    Method::REFRESH,
                    &[AnyAttribute::Lifetime(Lifetime(0))],
                );
                assert_success(&reply, &alice.key());
            }
            DeleteReason::Expired => {
                // Refreshing the permission keeps nothing else alive.
                h.advance(Duration::from_secs(10));
                h.create_permission(&mut alice, &[peer]);
                h.advance(Duration::from_secs(11));
            }
            DeleteReason::ConnectionClosed => {
                h.server
                    .connection_closed(&alice.five_tuple, &mut h.sockets);
                h.drain();
            }
        }
        assert!(!h.server.has_allocation(&alice.five_tuple), "{reason:?}");
        assert!(h.sockets.listening.is_empty(), "listener released");
        let closes: HashSet<Command> = commands(&mut h).into_iter().collect();
        assert_eq!(
            closes,
            HashSet::from([
                Command::Close { id: bound },
                Command::Close { id: unbound },
                Command::Close { id: connecting },
            ]),
            "{reason:?}"
        );
        let mut reasons = closed(&h);
        reasons.sort();
        let mut expected = vec![
            (bound, PeerCloseReason::AllocationEnded),
            (unbound, PeerCloseReason::AllocationEnded),
        ];
        expected.sort();
        assert_eq!(reasons, expected, "{reason:?}");
        // The pending Connect is answered, unless its connection is gone.
        let sent = transmits(&mut h);
        if reason == DeleteReason::ConnectionClosed {
            assert!(sent.is_empty(), "{sent:?}");
        } else {
            assert_eq!(sent.len(), 1, "{reason:?}");
            assert_error(&sent[0].1, ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE);
        }
        assert_eq!(h.server.peer_connection_count(), 0);
        // Reports about them afterwards are ignored.
        h.server.peer_connection_closed(bound);
        h.server.peer_connect_failed(connecting);
        h.drain();
        assert!(transmits(&mut h).is_empty());
        assert_eq!(closed(&h).len(), 2);
        assert_eq!(h.quotas.total(), 0);
    }
}

#[test]
fn connections_per_allocation_are_bounded() {
    let mut config = config();
    config.max_tcp_connections = 2;
    let mut h = Harness::with(config, Quotas::new(100, 10));
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    h.create_permission(&mut alice, &[addr(PEER)]);
    let first = established(&mut h, &alice, relay, addr("198.51.100.7:1"));
    connect_pending(&mut h, &alice, relay, addr("198.51.100.7:2"));
    let (_, _, reply) = connect(&mut h, &alice, addr("198.51.100.7:3"));
    assert_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY);
    assert_eq!(
        h.server
            .accept_peer_connection(h.now, relay, addr("198.51.100.7:4")),
        None
    );
    assert!(commands(&mut h).is_empty());
    // Room again once one ends.
    h.server.peer_connection_closed(first);
    assert!(
        h.server
            .accept_peer_connection(h.now, relay, addr("198.51.100.7:4"))
            .is_some()
    );
}

#[test]
fn connection_ids_are_tagged_unique_and_routable() {
    let mut config = config();
    config.max_tcp_connections = 1000;
    let mut h = Harness::with(config, Quotas::new(100, 10));
    h.server.set_connection_id_tag(0x5A);
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    h.create_permission(&mut alice, &[addr(PEER)]);
    let mut ids = HashSet::new();
    for port in 1..=500 {
        let id = h
            .server
            .accept_peer_connection(h.now, relay, addr(&format!("198.51.100.7:{port}")))
            .expect("room");
        assert_eq!(connection_id_tag(id), 0x5A);
        assert!(ids.insert(id), "{id:?} twice");
    }
    // Not a counter: the low bits spread.
    let low: HashSet<u32> = ids.iter().map(|id| id.0 & 0xFF).collect();
    assert!(low.len() > 200, "{}", low.len());
    // What a driver reads to route a new connection to the right worker.
    let id = *ids.iter().next().expect("some");
    let data = data_connection(&alice, 40001);
    let request = data.build(
        Method::CONNECTION_BIND,
        h.tid(),
        &[AnyAttribute::ConnectionId(id)],
    );
    assert_eq!(connection_bind_id(&request), Some(id));
    assert_eq!(connection_bind_id(&request[..request.len() - 4]), None);
}

/// The policy on Connect is exactly CreatePermission's, and a permission for one of the
/// server's own IPs opens no other port of it (pion/turn #570 skipped the filter over TCP).
#[test]
fn connect_cannot_bypass_the_peer_policy() {
    let mut config = config();
    config.family_fallback = vec!["2001:db8::1".parse().expect("literal")];
    let mut h = Harness::with(config, Quotas::new(100, 10));
    let mut v4 = alice();
    let relay4 = allocate_tcp(&mut h, &mut v4);
    let mut v6 = tcp_client("198.51.100.11:40000", "alice", "secret");
    let reply = allocate_tcp_with(
        &mut h,
        &mut v6,
        &[AnyAttribute::RequestedAddressFamily(
            RequestedAddressFamily(AddressFamily::Ipv6),
        )],
    );
    assert_success(&reply, &v6.key());
    let relay6 = relayed_address(&reply);
    assert!(relay6.is_ipv6());

    let denied4 = [
        ("127.0.0.1:80", DenyReason::Loopback),
        ("0.0.0.0:80", DenyReason::Unspecified),
        ("10.0.0.1:22", DenyReason::Private),
        ("169.254.169.254:80", DenyReason::LinkLocal),
        ("100.64.0.1:80", DenyReason::CarrierGradeNat),
        ("224.0.0.1:80", DenyReason::Multicast),
        ("203.0.113.1:3478", DenyReason::ServerAddress),
        ("203.0.113.1:22", DenyReason::ServerAddress),
    ];
    let denied6 = [
        ("[::ffff:127.0.0.1]:80", DenyReason::Loopback),
        ("[::127.0.0.1]:80", DenyReason::Loopback),
        ("[64:ff9b::7f00:1]:80", DenyReason::Loopback),
        ("[2002:7f00:1::]:80", DenyReason::Loopback),
        ("[::1]:80", DenyReason::Loopback),
        ("[::]:80", DenyReason::Unspecified),
        ("[::ffff:169.254.169.254]:80", DenyReason::LinkLocal),
        ("[fe80::1]:80", DenyReason::LinkLocal),
        ("[fd00::1]:80", DenyReason::Private),
        ("[::ffff:203.0.113.1]:22", DenyReason::ServerAddress),
    ];
    for (client, denied) in [(&v4, &denied4[..]), (&v6, &denied6[..])] {
        for &(peer, reason) in denied {
            let peer = addr(peer);
            h.events.clear();
            let (_, action, reply) = connect(&mut h, client, peer);
            assert!(matches!(action, ClientAction::Reply(_)), "{peer}");
            assert_error(&reply, ErrorCode::FORBIDDEN);
            assert_eq!(
                h.denials(),
                vec![(client.five_tuple, peer, reason)],
                "{peer}"
            );
            assert!(commands(&mut h).is_empty(), "no connection to {peer}");
        }
    }
    // An IPv4-mapped address on an IPv4 relay is of the other family: 443, no connection.
    let (_, _, reply) = connect(&mut h, &v4, addr("[::ffff:127.0.0.1]:80"));
    assert_error(&reply, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
    assert!(commands(&mut h).is_empty());

    // A permission for the server's own IP, as for another allocation's relayed address,
    // allows that allocation and nothing else there.
    let mut bob = tcp_client("198.51.100.20:40000", "bob", "hunter2");
    let other = allocate_tcp(&mut h, &mut bob);
    assert_success(&h.create_permission(&mut v4, &[other]), &v4.key());
    for port in [22, 3478, 9641, 49_999] {
        let peer = addr(&format!("203.0.113.1:{port}"));
        let (_, _, reply) = connect(&mut h, &v4, peer);
        assert_error(&reply, ErrorCode::FORBIDDEN);
        // Nor may such an address connect in.
        assert_eq!(h.server.accept_peer_connection(h.now, relay4, peer), None);
    }
    assert!(commands(&mut h).is_empty());
    connect_pending(&mut h, &v4, relay4, other);
    // Another allocation of the server connecting in from its relayed address: accepted.
    assert!(
        h.server
            .accept_peer_connection(h.now, relay4, other)
            .is_none(),
        "already connected to that address"
    );
    let from_bob = addr(&format!("203.0.113.1:{}", other.port() ^ 1));
    assert!(
        h.server
            .accept_peer_connection(h.now, relay4, from_bob)
            .is_some(),
        "{from_bob}"
    );
}

#[test]
fn a_new_policy_closes_connections_it_denies() {
    let mut h = Harness::new();
    let mut alice = alice();
    let relay = allocate_tcp(&mut h, &mut alice);
    h.create_permission(&mut alice, &[addr(PEER), addr("198.51.100.8:1")]);
    let denied = established(&mut h, &alice, relay, addr(PEER));
    let kept = established(&mut h, &alice, relay, addr("198.51.100.8:1"));
    let mut config: TurnConfig = config();
    config.peer_policy.deny = vec!["198.51.100.7/32".parse().expect("literal")];
    h.server.reconfigure(config, h.now);
    h.drain();
    assert_eq!(commands(&mut h), vec![Command::Close { id: denied }]);
    assert_eq!(closed(&h), vec![(denied, PeerCloseReason::PeerDenied)]);
    assert_eq!(h.server.peer_connection_count(), 1);
    let data = data_connection(&alice, 40001);
    assert!(matches!(
        connection_bind(&mut h, &data, kept).0,
        ClientAction::PipeToPeer { .. }
    ));
}
