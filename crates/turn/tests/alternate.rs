//! ALTERNATE-SERVER (RFC 8489 §10, RFC 8656 §7.2): an Allocate this server has no room for is
//! sent to another server of the fleet with 300 Try Alternate instead of 508, but only once the
//! client has authenticated, and never for a user's own quota.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::*;
use icebreaker_turn::{Event, Quotas, TurnConfig};
use icebreaker_wire::attr::{
    AlternateServer, AnyAttribute, RequestedTransport, ReservationToken, XorRelayedAddress,
};
use icebreaker_wire::{ErrorCode, Message, Method};

const ALTERNATE_A: &str = "192.0.2.10:3478";
const ALTERNATE_B: &str = "192.0.2.11:3478";
const ALTERNATE_V6_A: &str = "[2001:db8:2::10]:3478";
const ALTERNATE_V6_B: &str = "[2001:db8:2::11]:3478";

fn with_alternates(alternates: &[&str]) -> TurnConfig {
    let mut config = config();
    config.alternate_servers = alternates.iter().map(|a| addr(a)).collect();
    config
}

/// The ALTERNATE-SERVER of a 300 answer, checking that it is one, signed with `client`'s key.
fn redirected_to(reply: &[u8], client: &Client) -> SocketAddr {
    assert_error(reply, ErrorCode::TRY_ALTERNATE);
    let message = Message::parse(reply).expect("a reply");
    message
        .verify_message_integrity(&client.key())
        .expect("a 300 is signed like any answer after authentication");
    message
        .verify_fingerprint()
        .expect("FINGERPRINT mirrors the request");
    message
        .get::<AlternateServer>()
        .expect("valid")
        .expect("ALTERNATE-SERVER")
        .0
}

/// A client of user alice on its own 5-tuple, numbered so that each is a new allocation.
fn alice_from(i: u8) -> Client {
    Client::new(&format!("198.51.100.{}:40000", 100 + i), "alice", "secret")
}

/// A client that reached the server's IPv6 listener.
fn v6_client(i: u8) -> Client {
    let mut client = Client::new(&format!("[2001:db8:9::{i}]:40000"), "bob", "hunter2");
    client.five_tuple.server = addr("[2001:db8::1]:3478");
    client
}

#[test]
fn draining_redirects_to_an_alternate_server() {
    let mut h = Harness::with(with_alternates(&[ALTERNATE_A]), Quotas::new(100, 100));
    let mut alice = Client::alice();
    h.allocate(&mut alice);
    h.server.set_draining(true);
    let mut bob = Client::bob();
    let reply = h.allocate_with(&mut bob, &[]);
    assert_eq!(redirected_to(&reply, &bob), addr(ALTERNATE_A));
    assert!(
        Message::parse(&reply)
            .expect("reply")
            .get::<XorRelayedAddress>()
            .expect("valid")
            .is_none()
    );
    assert_eq!(h.sockets.bound.len(), 1, "only alice's port");
    assert_eq!(h.quotas.total(), 1);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Answered {
            method: Method::ALLOCATE,
            error: Some(ErrorCode::TRY_ALTERNATE)
        }
    )));
    // Existing allocations are still served.
    assert_success(&h.request(&alice, Method::REFRESH, &[]), &alice.key());
}

#[test]
fn the_total_quota_redirects() {
    let mut h = Harness::with(with_alternates(&[ALTERNATE_A]), Quotas::new(1, 10));
    h.allocate(&mut Client::alice());
    let mut bob = Client::bob();
    let reply = h.allocate_with(&mut bob, &[]);
    assert_eq!(redirected_to(&reply, &bob), addr(ALTERNATE_A));
    assert_eq!(h.quotas.total(), 1, "a redirected client holds no quota");
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn no_free_relay_port_redirects() {
    let mut config = with_alternates(&[ALTERNATE_A]);
    config.relay_ports = 50_000..=50_001;
    config.peer_policy.relay_ports = 50_000..=50_001;
    let mut h = Harness::with(config, Quotas::new(100, 100));
    h.sockets.refuse.insert(50_001); // taken by another program
    h.allocate(&mut alice_from(1));
    let mut late = alice_from(2);
    let reply = h.allocate_with(&mut late, &[]);
    assert_eq!(redirected_to(&reply, &late), addr(ALTERNATE_A));
    assert_eq!(
        h.quotas.total(),
        1,
        "the refused allocation's quota is given back"
    );
    assert_eq!(h.sockets.bound.len(), 1);
}

#[test]
fn without_alternates_capacity_is_still_508() {
    let mut h = Harness::with(config(), Quotas::new(1, 10));
    h.allocate(&mut Client::alice());
    let mut bob = Client::bob();
    assert_error(
        &h.allocate_with(&mut bob, &[]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    h.server.set_draining(true);
    let mut carol = alice_from(3);
    assert_error(
        &h.allocate_with(&mut carol, &[]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
}

#[test]
fn the_user_quota_stays_486() {
    let mut h = Harness::with(with_alternates(&[ALTERNATE_A]), Quotas::new(100, 1));
    h.allocate(&mut alice_from(1));
    let reply = h.allocate_with(&mut alice_from(2), &[]);
    assert_error(&reply, ErrorCode::ALLOCATION_QUOTA_REACHED);
    assert!(
        Message::parse(&reply)
            .expect("reply")
            .get::<AlternateServer>()
            .expect("valid")
            .is_none(),
        "another server would count the same user"
    );
}

#[test]
fn an_unknown_reservation_token_stays_508() {
    let mut h = Harness::with(with_alternates(&[ALTERNATE_A]), Quotas::new(100, 100));
    let mut alice = Client::alice();
    let reply = h.allocate_with(
        &mut alice,
        &[AnyAttribute::ReservationToken(ReservationToken([1; 8]))],
    );
    assert_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY);
}

#[test]
fn strangers_are_challenged_not_redirected() {
    let mut h = Harness::with(with_alternates(&[ALTERNATE_A]), Quotas::new(100, 100));
    h.server.set_draining(true);
    let stranger = Client::new("198.51.100.66:4000", "alice", "secret");
    let reply = h.request(
        &stranger,
        Method::ALLOCATE,
        &[AnyAttribute::RequestedTransport(RequestedTransport::UDP)],
    );
    assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    let message = Message::parse(&reply).expect("reply");
    assert!(message.get::<AlternateServer>().expect("valid").is_none());

    // A wrong password is no better than none.
    let mut guesser = Client::new("198.51.100.67:4000", "alice", "guess");
    let reply = h.allocate_with(&mut guesser, &[]);
    assert_error(&reply, ErrorCode::UNAUTHENTICATED);
    let message = Message::parse(&reply).expect("reply");
    assert!(message.get::<AlternateServer>().expect("valid").is_none());
}

#[test]
fn alternates_rotate_within_the_family_the_client_reached() {
    let mut h = Harness::with(
        with_alternates(&[ALTERNATE_A, ALTERNATE_V6_A, ALTERNATE_B, ALTERNATE_V6_B]),
        Quotas::new(100, 100),
    );
    h.server.set_draining(true);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    // Interleaved, so that one family's turns do not move the other's.
    for i in 0..3 {
        let mut four = alice_from(i);
        v4.push(redirected_to(&h.allocate_with(&mut four, &[]), &four));
        let mut six = v6_client(i + 1);
        v6.push(redirected_to(&h.allocate_with(&mut six, &[]), &six));
    }
    assert_eq!(
        v4,
        [addr(ALTERNATE_A), addr(ALTERNATE_B), addr(ALTERNATE_A)]
    );
    assert_eq!(
        v6,
        [
            addr(ALTERNATE_V6_A),
            addr(ALTERNATE_V6_B),
            addr(ALTERNATE_V6_A)
        ]
    );
}

#[test]
fn an_alternate_of_the_other_family_when_none_is_of_the_clients() {
    let mut h = Harness::with(
        with_alternates(&[ALTERNATE_V6_A, ALTERNATE_V6_B]),
        Quotas::new(100, 100),
    );
    h.server.set_draining(true);
    let got: Vec<SocketAddr> = (0..3)
        .map(|i| {
            let mut client = alice_from(i);
            let reply = h.allocate_with(&mut client, &[]);
            redirected_to(&reply, &client)
        })
        .collect();
    assert_eq!(
        got,
        [
            addr(ALTERNATE_V6_A),
            addr(ALTERNATE_V6_B),
            addr(ALTERNATE_V6_A)
        ]
    );
}

#[test]
fn alternates_come_and_go_with_reconfiguration() {
    let mut h = Harness::new();
    h.server.set_draining(true);
    let mut alice = Client::alice();
    assert_error(
        &h.allocate_with(&mut alice, &[]),
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    h.server.reconfigure(with_alternates(&[ALTERNATE_B]), h.now);
    let reply = h.allocate_with(&mut alice, &[]);
    assert_eq!(redirected_to(&reply, &alice), addr(ALTERNATE_B));
}
