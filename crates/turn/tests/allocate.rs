//! Allocate, Refresh and authentication on a virtual clock (RFC 8656 §7, §8; RFC 8489 §9.2),
//! with the TURN and authentication items of the abuse catalogue.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use icebreaker_turn::{ClientAction, ClientTransport, DeleteReason, Event, Quotas};
use icebreaker_wire::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, AnyAttribute, AttrType, EvenPort,
    Lifetime, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, RequestedAddressFamily,
    RequestedTransport, ReservationToken, UserHash, Username, XorMappedAddress, XorRelayedAddress,
};
use icebreaker_wire::credentials::{KeyAlgorithm, RestPassword, user_hash};
use icebreaker_wire::{
    Class, ErrorCode, IntegrityKey, Message, MessageType, MessageWriter, Method,
};

fn lifetime(reply: &[u8]) -> u32 {
    Message::parse(reply)
        .expect("reply")
        .get::<Lifetime>()
        .expect("valid")
        .expect("LIFETIME")
        .0
}

#[test]
fn unauthenticated_allocate_is_challenged_with_realm_and_nonce() {
    let mut h = Harness::new();
    let alice = Client::alice();
    let reply = h.request(
        &alice,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    let message = Message::parse(&reply).expect("reply");
    assert_eq!(message.get::<Realm>(), Ok(Some(Realm(REALM))));
    assert!(message.get::<Nonce>().expect("valid").is_some());
    assert!(
        message.integrity_offset().is_none(),
        "a challenge is not signed"
    );
    assert!(
        message.verify_fingerprint().is_ok(),
        "FINGERPRINT mirrors the request"
    );
    assert!(h.sockets.bound.is_empty());
}

#[test]
fn allocate_grants_a_relay_port_and_signs_the_answer() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let reply = h.allocate_with(&mut alice, &[]);
    assert_success(&reply, &alice.key());
    let message = Message::parse(&reply).expect("reply");
    let relayed = message
        .get::<XorRelayedAddress>()
        .expect("valid")
        .expect("relayed")
        .0;
    assert_eq!(relayed.ip(), addr(SERVER).ip());
    assert!((50_000..=50_099).contains(&relayed.port()));
    assert!(h.sockets.bound.contains(&relayed));
    assert_eq!(
        message.get::<XorMappedAddress>(),
        Ok(Some(XorMappedAddress(alice.five_tuple.client)))
    );
    assert_eq!(lifetime(&reply), 600);
    assert_eq!(h.server.allocation_count(), 1);
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::AllocationCreated { relay, .. } if *relay == relayed))
    );
}

#[test]
fn allocate_lifetime_is_clamped_between_default_and_maximum() {
    for (requested, granted) in [(7_200, 3_600), (3_000, 3_000), (10, 600), (0, 600)] {
        let mut h = Harness::new();
        let mut alice = Client::alice();
        let reply = h.allocate_with(&mut alice, &[AnyAttribute::Lifetime(Lifetime(requested))]);
        assert_eq!(lifetime(&reply), granted, "requested {requested}");
    }
}

#[test]
fn identical_retransmission_gets_the_identical_answer_within_40_seconds() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let challenge = h.request(
        &alice,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    alice.learn_nonce(&challenge);
    let tid = h.tid();
    let request = alice.build(
        Method::ALLOCATE,
        tid,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    let (_, first) = h.send(&alice, &request);
    assert_success(&first, &alice.key());
    h.advance(Duration::from_secs(39));
    let (_, again) = h.send(&alice, &request);
    assert_eq!(again, first, "same transaction, same answer");
    assert_eq!(h.sockets.bound.len(), 1, "no second port");
    h.advance(Duration::from_secs(2));
    let (_, late) = h.send(&alice, &request);
    assert_error(&late, ErrorCode::ALLOCATION_MISMATCH);
}

#[test]
fn second_allocate_on_the_same_five_tuple_is_a_mismatch() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    let reply = h.allocate_with(&mut alice, &[]);
    assert_error(&reply, ErrorCode::ALLOCATION_MISMATCH);
    let message = Message::parse(&reply).expect("reply");
    message
        .verify_message_integrity(&alice.key())
        .expect("errors after authentication are signed");
}

#[test]
fn requested_transport_is_required_and_must_be_udp_or_tcp() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    // Without REQUESTED-TRANSPORT: 400, even before authentication.
    let reply = h.request(&alice, Method::ALLOCATE, &[]);
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    let reply = h.allocate_with(&mut alice, &[]);
    assert_success(&reply, &alice.key());

    let mut bob = Client::bob();
    let challenge = h.request(
        &bob,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    bob.learn_nonce(&challenge);
    // SCTP: neither UDP nor TCP (RFC 6062 §5.1).
    let reply = h.request(
        &bob,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport(132))],
    );
    assert_error(&reply, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL);
    // TCP, but over UDP: a TCP allocation needs a TCP or TLS control connection (tests/tcp.rs).
    let reply = h.request(
        &bob,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::TCP)],
    );
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    let reply = h.request(
        &bob,
        Method::ALLOCATE,
        &[AnyAttribute::Unknown(icebreaker_wire::attr::RawAttribute {
            attr_type: AttrType::REQUESTED_TRANSPORT,
            value: &[17],
        })],
    );
    assert_error(&reply, ErrorCode::BAD_REQUEST);
}

#[test]
fn address_families() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let reply = h.allocate_with(
        &mut alice,
        &[AnyAttribute::RequestedAddressFamily(
            RequestedAddressFamily(AddressFamily::Ipv6),
        )],
    );
    assert_error(&reply, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
    let reply = h.request(
        &alice,
        Method::ALLOCATE,
        &[
            AnyAttribute::RequestedTransport(RequestedTransport::UDP),
            AnyAttribute::Unknown(icebreaker_wire::attr::RawAttribute {
                attr_type: AttrType::REQUESTED_ADDRESS_FAMILY,
                value: &[0x03, 0, 0, 0],
            }),
        ],
    );
    assert_error(&reply, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
    // REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY together: 400.
    let reply = h.request(
        &alice,
        Method::ALLOCATE,
        &[
            AnyAttribute::RequestedTransport(RequestedTransport::UDP),
            AnyAttribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::Ipv4)),
            AnyAttribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::Ipv6)),
        ],
    );
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    // ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6.
    let reply = h.request(
        &alice,
        Method::ALLOCATE,
        &[
            AnyAttribute::RequestedTransport(RequestedTransport::UDP),
            AnyAttribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::Ipv4)),
        ],
    );
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    // A dual allocation on an IPv4-only server: the IPv4 half, and 440 for the IPv6 half.
    let reply = h.request(
        &alice,
        Method::ALLOCATE,
        &[
            AnyAttribute::RequestedTransport(RequestedTransport::UDP),
            AnyAttribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::Ipv6)),
        ],
    );
    assert_success(&reply, &alice.key());
    let message = Message::parse(&reply).expect("reply");
    let refused = message
        .get::<AddressErrorCode>()
        .expect("valid")
        .expect("ADDRESS-ERROR-CODE");
    assert_eq!(
        (refused.family, refused.code),
        (AddressFamily::Ipv6, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED)
    );
}

#[test]
fn even_port_reservation_and_token() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let reply = h.allocate_with(
        &mut alice,
        &[AnyAttribute::EvenPort(EvenPort { reserve_next: true })],
    );
    assert_success(&reply, &alice.key());
    let message = Message::parse(&reply).expect("reply");
    let relayed = message
        .get::<XorRelayedAddress>()
        .expect("valid")
        .expect("relayed")
        .0;
    assert_eq!(relayed.port() % 2, 0);
    let token = message
        .get::<ReservationToken>()
        .expect("valid")
        .expect("a token");
    assert_eq!(
        h.sockets.bound.len(),
        1,
        "the odd port is booked for the token, not bound"
    );

    // A token with EVEN-PORT is a contradiction: 400. An unknown token: 508.
    let mut bob = Client::bob();
    let reply = h.allocate_with(
        &mut bob,
        &[
            AnyAttribute::ReservationToken(token),
            AnyAttribute::EvenPort(EvenPort::default()),
        ],
    );
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    let reply = h.request(
        &bob,
        Method::ALLOCATE,
        &[
            AnyAttribute::RequestedTransport(RequestedTransport::UDP),
            AnyAttribute::ReservationToken(ReservationToken([1; 8])),
        ],
    );
    assert_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY);
    let reply = h.request(
        &bob,
        Method::ALLOCATE,
        &[
            AnyAttribute::RequestedTransport(RequestedTransport::UDP),
            AnyAttribute::ReservationToken(token),
        ],
    );
    assert_success(&reply, &bob.key());
    let message = Message::parse(&reply).expect("reply");
    let second = message
        .get::<XorRelayedAddress>()
        .expect("valid")
        .expect("relayed")
        .0;
    assert_eq!(second.port(), relayed.port() + 1);

    // An unredeemed reservation lapses after about 30 seconds.
    let mut carol = Client::new("198.51.100.30:40000", "alice", "secret");
    let reply = h.allocate_with(
        &mut carol,
        &[AnyAttribute::EvenPort(EvenPort { reserve_next: true })],
    );
    let late_token = Message::parse(&reply)
        .expect("reply")
        .get::<ReservationToken>()
        .expect("valid")
        .expect("a token");
    h.advance(Duration::from_secs(32));
    let mut dave = Client::new("198.51.100.31:40000", "bob", "hunter2");
    let reply = h.allocate_with(&mut dave, &[AnyAttribute::ReservationToken(late_token)]);
    assert_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY);
}

/// The Allocate that redeems a token comes from another client port, which the kernel may
/// hand to another worker: a token issued by one core is redeemed by another sharing its
/// `Quotas`.
#[test]
fn a_reservation_token_works_on_another_worker() {
    let quotas = std::sync::Arc::new(Quotas::new(100, 100));
    let mut first = Harness::sharing(config(), quotas.clone());
    let mut second = Harness::sharing(config(), quotas);
    let mut alice = Client::alice();
    let reply = first.allocate_with(
        &mut alice,
        &[AnyAttribute::EvenPort(EvenPort { reserve_next: true })],
    );
    let message = Message::parse(&reply).expect("reply");
    let relayed = message
        .get::<XorRelayedAddress>()
        .expect("valid")
        .expect("relayed")
        .0;
    let token = message
        .get::<ReservationToken>()
        .expect("valid")
        .expect("a token");

    let mut bob = Client::new("198.51.100.21:40001", "bob", "hunter2");
    let reply = second.allocate_with(&mut bob, &[AnyAttribute::ReservationToken(token)]);
    assert_success(&reply, &bob.key());
    let message = Message::parse(&reply).expect("reply");
    let second_relayed = message
        .get::<XorRelayedAddress>()
        .expect("valid")
        .expect("relayed")
        .0;
    assert_eq!(second_relayed.port(), relayed.port() + 1);
    assert!(second.sockets.bound.contains(&second_relayed));
    // A token is good for one allocation.
    let mut carol = Client::new("198.51.100.22:40001", "bob", "hunter2");
    let reply = first.allocate_with(&mut carol, &[AnyAttribute::ReservationToken(token)]);
    assert_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY);
}

#[test]
fn a_reserved_port_is_given_to_no_other_allocation() {
    let mut config = config();
    config.relay_ports = 50_000..=50_003;
    config.peer_policy.relay_ports = 50_000..=50_003;
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::alice();
    let reply = h.allocate_with(
        &mut alice,
        &[AnyAttribute::EvenPort(EvenPort { reserve_next: true })],
    );
    let relayed = Message::parse(&reply)
        .expect("reply")
        .get::<XorRelayedAddress>()
        .expect("valid")
        .expect("relayed")
        .0;
    let reserved = relayed.port() + 1;
    for i in 0..2 {
        let mut other = Client::new(&format!("198.51.100.{}:1000", 60 + i), "bob", "hunter2");
        let got = h.allocate(&mut other);
        assert_ne!(
            got.port(),
            reserved,
            "the reserved port went to another allocation"
        );
    }
    let mut last = Client::new("198.51.100.70:1000", "bob", "hunter2");
    assert_error(
        &h.allocate_with(&mut last, &[]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
}

#[test]
fn quotas_per_user_and_in_total_recover_when_allocations_end() {
    let mut h = Harness::with(config(), Quotas::new(3, 2));
    let mut clients: Vec<Client> = (0..3)
        .map(|i| Client::new(&format!("198.51.100.{}:40000", 10 + i), "alice", "secret"))
        .collect();
    h.allocate(&mut clients[0]);
    h.allocate(&mut clients[1]);
    let reply = h.allocate_with(&mut clients[2], &[]);
    assert_error(&reply, ErrorCode::ALLOCATION_QUOTA_REACHED);
    let mut bob = Client::bob();
    h.allocate(&mut bob);
    let mut bob2 = Client::new("198.51.100.21:40000", "bob", "hunter2");
    let reply = h.allocate_with(&mut bob2, &[]);
    assert_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY);

    // Deleting one of alice's frees both her quota and the total.
    let reply = h.request(
        &clients[0],
        Method::REFRESH,
        &[AnyAttribute::Lifetime(Lifetime(0))],
    );
    assert_success(&reply, &clients[0].key());
    let reply = h.request(
        &clients[2],
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    assert_success(&reply, &clients[2].key());
    assert_eq!(h.quotas.total(), 3);
}

#[test]
fn exhausted_port_range_is_insufficient_capacity() {
    let mut config = config();
    config.relay_ports = 50_000..=50_002;
    config.peer_policy.relay_ports = 50_000..=50_002;
    let mut h = Harness::with(config, Quotas::new(100, 100));
    h.sockets.refuse.insert(50_001); // taken by another program
    let mut a = Client::new("198.51.100.1:1000", "alice", "secret");
    let mut b = Client::new("198.51.100.2:1000", "alice", "secret");
    let mut c = Client::new("198.51.100.3:1000", "alice", "secret");
    h.allocate(&mut a);
    h.allocate(&mut b);
    let reply = h.allocate_with(&mut c, &[]);
    assert_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY);
    assert_eq!(h.quotas.total(), 2, "a refused allocation holds no quota");
}

#[test]
fn draining_refuses_new_allocations_and_keeps_old_ones() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    h.server.set_draining(true);
    let mut bob = Client::bob();
    assert_error(
        &h.allocate_with(&mut bob, &[]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    let reply = h.request(&alice, Method::REFRESH, &[]);
    assert_success(&reply, &alice.key());
}

#[test]
fn refresh_extends_and_lifetime_zero_deletes() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relayed = h.allocate(&mut alice);
    h.advance(Duration::from_secs(500));
    let reply = h.request(
        &alice,
        Method::REFRESH,
        &[AnyAttribute::Lifetime(Lifetime(1200))],
    );
    assert_eq!(lifetime(&reply), 1200);
    h.advance(Duration::from_secs(1000));
    assert_eq!(
        h.server.allocation_count(),
        1,
        "refreshed past its first lifetime"
    );
    let reply = h.request_fresh(
        &mut alice,
        Method::REFRESH,
        &[AnyAttribute::Lifetime(Lifetime(0))],
    );
    assert_success(&reply, &alice.key());
    assert_eq!(lifetime(&reply), 0);
    assert!(
        !h.sockets.bound.contains(&relayed),
        "the port is released at once"
    );
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::Refresh,
            ..
        }
    )));
    let reply = h.request(
        &alice,
        Method::REFRESH,
        &[AnyAttribute::Lifetime(Lifetime(0))],
    );
    assert_error(&reply, ErrorCode::ALLOCATION_MISMATCH);
}

#[test]
fn refresh_with_another_family_is_a_mismatch() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    let reply = h.request(
        &alice,
        Method::REFRESH,
        &[AnyAttribute::RequestedAddressFamily(
            RequestedAddressFamily(AddressFamily::Ipv6),
        )],
    );
    assert_error(&reply, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
}

#[test]
fn a_closed_stream_connection_deletes_its_allocation_and_no_other() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    alice.five_tuple.transport = ClientTransport::Tcp;
    let mut bob = Client::bob();
    bob.five_tuple.transport = ClientTransport::Tcp;
    let alice_relay = h.allocate(&mut alice);
    let bob_relay = h.allocate(&mut bob);
    assert!(h.server.has_allocation(&alice.five_tuple));

    h.server
        .connection_closed(&alice.five_tuple, &mut h.sockets);
    h.drain();
    assert!(!h.server.has_allocation(&alice.five_tuple));
    assert!(
        !h.sockets.bound.contains(&alice_relay),
        "the port is released"
    );
    assert!(
        h.sockets.bound.contains(&bob_relay),
        "bob's allocation lives on"
    );
    assert_eq!(h.quotas.total(), 1);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::ConnectionClosed,
            ..
        }
    )));

    // A connection without an allocation closing changes nothing.
    h.server
        .connection_closed(&alice.five_tuple, &mut h.sockets);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn expiry_frees_the_relay_port() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relayed = h.allocate(&mut alice);
    h.advance(Duration::from_secs(599));
    assert!(h.sockets.bound.contains(&relayed));
    h.advance(Duration::from_secs(2));
    assert!(!h.sockets.bound.contains(&relayed));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.quotas.total(), 0);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::Expired,
            ..
        }
    )));
    assert_eq!(h.server.poll_timeout(), None, "nothing left to time");
}

#[test]
fn requests_without_an_allocation_are_mismatches() {
    let mut h = Harness::new();
    let alice = Client::alice();
    for method in [
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ] {
        assert_error(
            &h.request(&alice, method, &[]),
            ErrorCode::ALLOCATION_MISMATCH,
        );
    }
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut h = Harness::new();
    let alice = Client::alice();
    let reply = h.request(
        &alice,
        Method::ALLOCATE,
        &[AnyAttribute::Unknown(icebreaker_wire::attr::RawAttribute {
            attr_type: AttrType(0x0031),
            value: b"x",
        })],
    );
    assert_error(&reply, ErrorCode::UNKNOWN_ATTRIBUTE);
    let message = Message::parse(&reply).expect("reply");
    let listed: Vec<AttrType> = message
        .get::<icebreaker_wire::attr::UnknownAttributes>()
        .expect("valid")
        .expect("UNKNOWN-ATTRIBUTES")
        .iter()
        .collect();
    assert_eq!(listed, [AttrType(0x0031)]);
}

#[test]
fn bad_fingerprint_and_unknown_methods() {
    let mut h = Harness::new();
    let alice = Client::alice();
    let tid = h.tid();
    let mut bytes = alice.build(
        Method::ALLOCATE,
        tid,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(h.send(&alice, &bytes).0, ClientAction::Drop);
    let reply = h.request(&alice, Method::new(0x0123).expect("12 bits"), &[]);
    assert_error(&reply, ErrorCode::BAD_REQUEST);
    // Responses and stray indications get nothing.
    let tid = h.tid();
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Success),
        tid,
    )
    .expect("fits");
    let len = w.finish();
    assert_eq!(h.send(&alice, &buf[..len]).0, ClientAction::Drop);
}

// --- Authentication -----------------------------------------------------------------------

/// Builds a request with integrity but one of USERNAME, REALM or NONCE left out.
fn signed_without(
    client: &Client,
    tid: icebreaker_wire::TransactionId,
    leave_out: AttrType,
) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let request = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut w = MessageWriter::new(&mut buf, request, tid).expect("fits");
    w.add(&RequestedTransport::UDP).expect("fits");
    if leave_out != AttrType::USERNAME {
        w.add(&Username(&client.username)).expect("fits");
    }
    if leave_out != AttrType::REALM {
        w.add(&Realm(&client.realm)).expect("fits");
    }
    if leave_out != AttrType::NONCE {
        w.add(&Nonce(client.nonce.as_deref().unwrap_or("x")))
            .expect("fits");
    }
    w.add_message_integrity(&client.key()).expect("fits");
    let len = w.finish();
    buf.truncate(len);
    buf
}

#[test]
fn integrity_without_username_realm_or_nonce_is_a_bad_request() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let challenge = h.request(
        &alice,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    alice.learn_nonce(&challenge);
    for missing in [AttrType::USERNAME, AttrType::REALM, AttrType::NONCE] {
        let tid = h.tid();
        let (_, reply) = h.send(&alice, &signed_without(&alice, tid, missing));
        assert_error(&reply, ErrorCode::BAD_REQUEST);
    }
}

#[test]
fn wrong_password_is_401_and_guessing_is_throttled() {
    let mut h = Harness::new();
    let mut mallory = Client::new("198.51.100.66:4000", "alice", "guess");
    let challenge = h.request(
        &mallory,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    mallory.learn_nonce(&challenge);
    let mut answered = 0;
    for _ in 0..50 {
        let reply = h.request(
            &mallory,
            Method::ALLOCATE,
            &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
        );
        if reply.is_empty() {
            break;
        }
        assert_error(&reply, ErrorCode::UNAUTHENTICATED);
        answered += 1;
    }
    assert!(
        (1..50).contains(&answered),
        "guessing stops being answered after {answered}"
    );
    // The real owner, from elsewhere, is unaffected.
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    // And after a while the guesser's source is heard again.
    h.advance(Duration::from_secs(30));
    let reply = h.request(
        &mallory,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    assert_error(&reply, ErrorCode::UNAUTHENTICATED);
}

#[test]
fn challenges_to_one_source_are_rate_limited() {
    let mut h = Harness::new();
    let stranger = Client::new("198.51.100.77:4000", "x", "y");
    let answered = (0..200)
        .filter(|_| {
            !h.request(
                &stranger,
                Method::ALLOCATE,
                &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
            )
            .is_empty()
        })
        .count();
    assert!(
        (1..200).contains(&answered),
        "{answered} challenges answered in one instant"
    );
}

#[test]
fn expired_nonce_gets_438_and_a_fresh_one() {
    let mut config = config();
    config.nonce_lifetime = Duration::from_secs(60);
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    h.advance(Duration::from_secs(61));
    let reply = h.request(&alice, Method::REFRESH, &[]);
    assert_error(&reply, ErrorCode::STALE_NONCE);
    assert!(alice.learn_nonce(&reply));
    assert_eq!(
        Message::parse(&reply).expect("reply").get::<Realm>(),
        Ok(Some(Realm(REALM)))
    );
    assert_success(&h.request(&alice, Method::REFRESH, &[]), &alice.key());
}

#[test]
fn a_nonce_from_another_source_address_is_refused() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let challenge = h.request(
        &alice,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    alice.learn_nonce(&challenge);
    let mut moved = alice.clone();
    moved.five_tuple.client = addr("198.51.100.11:40000");
    let reply = h.request(
        &moved,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    assert_error(&reply, ErrorCode::STALE_NONCE);
}

#[test]
fn another_user_on_an_allocation_is_wrong_credentials() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    let mut bob_on_alices_tuple = Client::bob();
    bob_on_alices_tuple.five_tuple = alice.five_tuple;
    bob_on_alices_tuple.nonce = alice.nonce.clone();
    let reply = h.request(&bob_on_alices_tuple, Method::REFRESH, &[]);
    assert_error(&reply, ErrorCode::WRONG_CREDENTIALS);
}

#[test]
fn unauthenticated_refresh_to_zero_is_401_and_the_allocation_lives_on() {
    let mut h = Harness::new();
    let mut alice = Client::alice();
    let relayed = h.allocate(&mut alice);
    let mut unsigned = alice.clone();
    unsigned.nonce = None;
    let reply = h.request(
        &unsigned,
        Method::REFRESH,
        &[AnyAttribute::Lifetime(Lifetime(0))],
    );
    assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    assert!(h.sockets.bound.contains(&relayed));
    assert_eq!(h.server.allocation_count(), 1);
}

fn rest_client(username: &str, secret: &[u8]) -> Client {
    let password = RestPassword::new(secret, username);
    Client::new("198.51.100.40:5000", username, password.as_str())
}

#[test]
fn rest_credentials_expire_and_need_the_secret() {
    let mut h = Harness::new();
    let valid = format!("{}:web-user", UNIX_START + 3600);
    h.allocate(&mut rest_client(&valid, b"rest-secret"));

    for (username, secret) in [
        (format!("{}:web-user", UNIX_START - 1), &b"rest-secret"[..]),
        ("soon:web-user".to_string(), &b"rest-secret"[..]),
        (
            format!("{}:web-user", UNIX_START + 3600),
            &b"other-secret"[..],
        ),
    ] {
        let mut client = rest_client(&username, secret);
        client.five_tuple.client = addr("198.51.100.41:5000");
        let reply = h.allocate_with(&mut client, &[]);
        assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    }
}

#[test]
fn rest_secrets_rotate_with_both_valid() {
    let mut config = config();
    config.rest_secrets = vec![b"new".to_vec(), b"old".to_vec()];
    let mut h = Harness::with(config, Quotas::new(100, 100));
    let username = format!("{}:u", UNIX_START + 60);
    let mut old = rest_client(&username, b"old");
    let mut new = rest_client(&username, b"new");
    new.five_tuple.client = addr("198.51.100.42:5000");
    h.allocate(&mut old);
    h.allocate(&mut new);
}

/// Signs like an RFC 8489 client that chose SHA-256: PASSWORD-ALGORITHM, the offered
/// PASSWORD-ALGORITHMS echoed, the SHA-256 key and MESSAGE-INTEGRITY-SHA256.
fn sha256_request(
    client: &Client,
    tid: icebreaker_wire::TransactionId,
    algorithms: &[PasswordAlgorithm<'_>],
    userhash: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let request = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut w = MessageWriter::new(&mut buf, request, tid).expect("fits");
    w.add(&RequestedTransport::UDP).expect("fits");
    if userhash {
        w.add(&UserHash(user_hash(&client.username, REALM)))
            .expect("fits");
    } else {
        w.add(&Username(&client.username)).expect("fits");
    }
    w.add(&Realm(REALM)).expect("fits");
    w.add(&Nonce(client.nonce.as_deref().expect("a nonce")))
        .expect("fits");
    w.add(&PasswordAlgorithm::new(PasswordAlgorithm::SHA256))
        .expect("fits");
    w.add(&PasswordAlgorithms::new(algorithms)).expect("fits");
    let key = IntegrityKey::long_term(
        KeyAlgorithm::Sha256,
        &client.username,
        REALM,
        &client.password,
    );
    w.add_message_integrity_sha256(&key).expect("fits");
    w.add_fingerprint().expect("fits");
    let len = w.finish();
    buf.truncate(len);
    buf
}

#[test]
fn sha256_password_algorithm_and_userhash() {
    let offered = [
        PasswordAlgorithm::new(PasswordAlgorithm::SHA256),
        PasswordAlgorithm::new(PasswordAlgorithm::MD5),
    ];
    for userhash in [false, true] {
        let mut h = Harness::new();
        let mut alice = Client::alice();
        // A request padded like a real client's, so that the challenge may announce SHA-256.
        let challenge = h.request(
            &alice,
            Method::ALLOCATE,
            &[
                AnyAttribute::RequestedTransport(RequestedTransport::UDP),
                AnyAttribute::Software(icebreaker_wire::attr::Software("a WebRTC client/1.0")),
            ],
        );
        let message = Message::parse(&challenge).expect("reply");
        let announced: Vec<_> = message
            .get::<PasswordAlgorithms>()
            .expect("valid")
            .expect("offered")
            .iter()
            .collect();
        assert_eq!(announced, offered);
        assert!(
            message
                .get::<Nonce>()
                .expect("valid")
                .expect("nonce")
                .0
                .starts_with("obMatJos2")
        );
        alice.learn_nonce(&challenge);

        let tid = h.tid();
        let (_, reply) = h.send(&alice, &sha256_request(&alice, tid, &offered, userhash));
        let message = Message::parse(&reply).expect("reply");
        assert_eq!(message.class(), Class::Success, "{message:?}");
        let key = IntegrityKey::long_term(KeyAlgorithm::Sha256, "alice", REALM, "secret");
        message
            .verify_message_integrity_sha256(&key)
            .expect("answered with SHA-256");
        assert!(message.integrity_offset().is_none());

        // A tampered list (a bid-down attempt) is refused.
        let mut bob = Client::bob();
        let challenge = h.request(
            &bob,
            Method::ALLOCATE,
            &[
                AnyAttribute::RequestedTransport(RequestedTransport::UDP),
                AnyAttribute::Software(icebreaker_wire::attr::Software("a WebRTC client/1.0")),
            ],
        );
        bob.learn_nonce(&challenge);
        let tid = h.tid();
        let (_, reply) = h.send(&bob, &sha256_request(&bob, tid, &offered[..1], userhash));
        assert_error(&reply, ErrorCode::BAD_REQUEST);
    }
}

#[test]
fn users_stored_as_md5_keys_work_without_their_password() {
    let mut config = config();
    let key =
        icebreaker_wire::credentials::LongTermKey::new(KeyAlgorithm::Md5, "carol", REALM, "pw");
    let icebreaker_wire::credentials::LongTermKey::Md5(md5) = key else {
        panic!("an MD5 key");
    };
    config
        .users
        .push(("carol".into(), icebreaker_turn::UserCredential::Md5Key(md5)));
    let mut h = Harness::with(config, Quotas::new(100, 100));
    h.allocate(&mut Client::new("198.51.100.50:5000", "carol", "pw"));
}

#[test]
fn the_smallest_unauthenticated_answers_stay_within_three_times_the_request() {
    let mut h = Harness::new();
    let mut stranger = Client::new("198.51.100.90:4000", "x", "y");
    stranger.fingerprint = false;
    for attrs in [
        vec![],
        vec![AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    ] {
        let tid = h.tid();
        let request = stranger.build(Method::ALLOCATE, tid, &attrs);
        let (_, reply) = h.send(&stranger, &request);
        assert!(!reply.is_empty());
        assert!(
            reply.len() <= 3 * request.len(),
            "{} bytes answered with {}",
            request.len(),
            reply.len()
        );
    }
    for method in [
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ] {
        let tid = h.tid();
        let request = stranger.build(method, tid, &[]);
        let (_, reply) = h.send(&stranger, &request);
        assert!(reply.len() <= 3 * request.len());
    }
}

#[test]
fn spoofed_floods_create_no_state() {
    let mut h = Harness::new();
    for i in 0..5_000u32 {
        let client = Client::new(
            &format!("198.18.{}.{}:{}", i / 250, i % 250, 1024 + i % 1000),
            "x",
            "y",
        );
        let tid = h.tid();
        let request = client.build(
            Method::ALLOCATE,
            tid,
            &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
        );
        h.send(&client, &request);
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.sockets.bound.is_empty());
    h.events.clear();
}

#[test]
fn challenges_over_a_connection_are_never_throttled() {
    let mut h = Harness::new();
    let mut stranger = Client::new("198.51.100.78:4000", "x", "y");
    stranger.five_tuple.transport = ClientTransport::Tcp;
    for _ in 0..200 {
        let tid = h.tid();
        let request = stranger.build(
            Method::ALLOCATE,
            tid,
            &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
        );
        let (action, reply) = h.send(&stranger, &request);
        assert!(matches!(action, ClientAction::Reply(_)), "{action:?}");
        assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    }
}

#[test]
fn a_guesser_over_a_connection_is_disconnected_not_left_waiting() {
    let mut h = Harness::new();
    let mut mallory = Client::new("198.51.100.67:4000", "alice", "guess");
    mallory.five_tuple.transport = ClientTransport::Tls;
    let challenge = h.request(
        &mallory,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    mallory.learn_nonce(&challenge);
    let mut answered = 0;
    let last = loop {
        let tid = h.tid();
        let request = mallory.build(
            Method::ALLOCATE,
            tid,
            &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
        );
        let (action, reply) = h.send(&mallory, &request);
        if !matches!(action, ClientAction::Reply(_)) || answered == 50 {
            break action;
        }
        assert_error(&reply, ErrorCode::UNAUTHENTICATED);
        answered += 1;
    };
    assert_eq!(last, ClientAction::Close, "after {answered} answers");
    assert!(answered >= 1);
}
