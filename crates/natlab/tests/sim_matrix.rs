//! The NAT matrix in the simulator: two icebreaker ICE agents behind every pair of the four
//! NAT types, the project's TURN core between them, on a virtual clock. Direct where hole
//! punching can work, relay where it cannot, relay every time with relay-only; ICE restart
//! after a NAT flush; consent loss; mapping expiry against the keepalive interval.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use icebreaker_ice::{CandidateKind, Timing};
use icebreaker_natlab::NatType;
use icebreaker_natlab::scenario::{MatrixTable, PathClass, PeerSetup, Scenario, Side, nat_pairs};

const CONNECT_WITHIN: Duration = Duration::from_secs(30);

fn connected(offerer: PeerSetup, answerer: PeerSetup, seed: u64) -> Scenario {
    let mut scenario = Scenario::new(seed, offerer, answerer);
    let took = scenario.connect(CONNECT_WITHIN);
    assert!(
        took.is_some(),
        "{} x {}: no connection within {CONNECT_WITHIN:?}",
        offerer.nat,
        answerer.nat
    );
    scenario
}

#[test]
fn every_nat_pair_connects_directly_where_hole_punching_works_and_through_the_relay_elsewhere() {
    let mut table = MatrixTable::default();
    for (seed, (a, b)) in nat_pairs().into_iter().enumerate() {
        let mut scenario = connected(PeerSetup::behind(a), PeerSetup::behind(b), seed as u64);
        let (local, remote) = scenario.selected(Side::Offerer).unwrap();
        table.record(a, b, MatrixTable::cell(local, remote));
        assert_eq!(
            scenario.path(),
            Some(PathClass::expected(a, b)),
            "{a} x {b}: selected {local}/{remote}"
        );
        // Both ends agree on the path class.
        let (their_local, their_remote) = scenario.selected(Side::Answerer).unwrap();
        assert_eq!(
            PathClass::of(their_local, their_remote),
            PathClass::expected(a, b)
        );
        let transfer = scenario.transfer(50, Duration::from_millis(20));
        assert_eq!(transfer.sent, 50);
        assert_eq!(transfer.echoed, 50, "{a} x {b}: {transfer:?}");
    }
    println!("NAT matrix (simulation), offerer's selected pair local/remote:\n{table}");
}

#[test]
fn relay_only_selects_the_relay_for_every_nat_pair() {
    let mut table = MatrixTable::default();
    for (seed, (a, b)) in nat_pairs().into_iter().enumerate() {
        let mut offerer = PeerSetup::behind(a);
        offerer.relay_only = true;
        let mut answerer = PeerSetup::behind(b);
        answerer.relay_only = true;
        let mut scenario = connected(offerer, answerer, 100 + seed as u64);
        let (local, remote) = scenario.selected(Side::Offerer).unwrap();
        table.record(a, b, MatrixTable::cell(local, remote));
        assert_eq!(
            (local, remote),
            (CandidateKind::Relayed, CandidateKind::Relayed),
            "{a} x {b}"
        );
        let transfer = scenario.transfer(20, Duration::from_millis(20));
        assert_eq!(transfer.echoed, 20, "{a} x {b}: {transfer:?}");
        // Closing releases both allocations at once rather than at their expiry.
        assert_eq!(scenario.server().unwrap().server().allocation_count(), 2);
        scenario.close();
        assert_eq!(scenario.server().unwrap().server().allocation_count(), 0);
    }
    println!("NAT matrix (simulation, relay-only):\n{table}");
}

#[test]
fn one_relay_only_peer_is_enough_for_a_relayed_path() {
    let mut offerer = PeerSetup::behind(NatType::FullCone);
    offerer.relay_only = true;
    let scenario = connected(offerer, PeerSetup::behind(NatType::FullCone), 7);
    assert_eq!(scenario.path(), Some(PathClass::Relay));
    let (local, _) = scenario.selected(Side::Offerer).unwrap();
    assert_eq!(local, CandidateKind::Relayed);
}

#[test]
fn an_ice_restart_after_a_nat_flush_finds_a_new_pair() {
    for nat in [NatType::PortRestricted, NatType::Symmetric] {
        let mut scenario = connected(
            PeerSetup::behind(nat),
            PeerSetup::behind(NatType::FullCone),
            11,
        );
        assert_eq!(scenario.transfer(10, Duration::from_millis(20)).echoed, 10);
        // The offerer's NAT forgets its mappings: a symmetric NAT gives the next packet a new
        // port, which the old pair's remote end does not know.
        scenario.flush_nat(Side::Offerer);
        scenario.restart();
        assert!(
            scenario.run_until(Duration::from_secs(10), |s| s
                .node(Side::Offerer)
                .selections()
                == 2
                && s.node(Side::Answerer).selections() == 2),
            "{nat}: no new pair after the restart"
        );
        assert!(scenario.connected());
        let transfer = scenario.transfer(50, Duration::from_millis(20));
        assert_eq!(transfer.echoed, 50, "{nat}: {transfer:?}");
    }
}

#[test]
fn a_restart_in_the_middle_of_a_transfer_loses_nothing() {
    let mut scenario = connected(
        PeerSetup::behind(NatType::RestrictedCone),
        PeerSetup::behind(NatType::PortRestricted),
        12,
    );
    let before = scenario.transfer(25, Duration::from_millis(20));
    scenario.restart();
    let during = scenario.transfer(100, Duration::from_millis(20));
    assert_eq!(scenario.node(Side::Offerer).selections(), 2);
    assert_eq!(before.echoed + during.echoed, 125, "{before:?} {during:?}");
}

#[test]
fn consent_is_lost_when_the_peer_vanishes() {
    let mut scenario = connected(
        PeerSetup::behind(NatType::FullCone),
        PeerSetup::behind(NatType::PortRestricted),
        13,
    );
    scenario.run_for(Duration::from_secs(10));
    assert!(scenario.connected());
    scenario.vanish(Side::Answerer);
    let start = scenario.net.now();
    assert!(scenario.run_until(Duration::from_secs(40), |s| s.consent_lost(Side::Offerer)));
    let detected = scenario.net.now() - start;
    assert!(
        detected <= Duration::from_secs(31),
        "consent lost only after {detected:?}"
    );
}

/// A NAT mapping that lives 2 s, an idle pair, then the offerer sends: whether the answerer's
/// NAT still lets it in depends on how often the answerer sends keepalives.
fn after_idle(keepalive: Duration) -> f64 {
    let timing = Timing {
        keepalive_interval: keepalive,
        consent_interval: keepalive,
        ..Timing::default()
    };
    let mut offerer = PeerSetup::behind(NatType::FullCone);
    offerer.timing = timing;
    let mut answerer = PeerSetup::behind(NatType::PortRestricted);
    answerer.timing = timing;
    answerer.mapping_lifetime = Duration::from_secs(2);
    let mut scenario = connected(offerer, answerer, 14);
    scenario.run_for(Duration::from_secs(5));
    scenario.transfer(20, Duration::from_millis(20)).loss()
}

#[test]
fn a_mapping_shorter_than_the_keepalive_interval_breaks_the_path_and_a_shorter_keepalive_keeps_it()
{
    let loss_with_slow_keepalives = after_idle(Duration::from_secs(10));
    let loss_with_fast_keepalives = after_idle(Duration::from_secs(1));
    println!(
        "loss after 5 s idle, 2 s mapping: keepalive 10 s {:.0} %, keepalive 1 s {:.0} %",
        loss_with_slow_keepalives * 100.0,
        loss_with_fast_keepalives * 100.0
    );
    assert!(loss_with_slow_keepalives > 0.9);
    assert_eq!(loss_with_fast_keepalives, 0.0);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut scenario = Scenario::new(
            seed,
            PeerSetup::behind(NatType::Symmetric),
            PeerSetup::behind(NatType::RestrictedCone),
        );
        let took = scenario.connect(CONNECT_WITHIN);
        (
            took,
            scenario.selected(Side::Offerer),
            scenario.net.counters(),
        )
    };
    assert_eq!(format!("{:?}", run(5)), format!("{:?}", run(5)));
}
