//! The NAT matrix behind real NATs: `icebreaker serve` and `icebreaker signal` in the lab's
//! public namespace, two `ice-peer` processes behind routers that nftables turns into each
//! NAT type, for the ten pairs of types. Direct where hole punching can work, relay where it
//! cannot, relay every time with `--relay-only`; ICE restart after a NAT forgets its mappings;
//! consent loss when a peer vanishes; a mapping that times out between keepalives.
//!
//! Needs root and iproute2, nftables, conntrack; skips with a message otherwise, unless
//! ICEBREAKER_REQUIRE_TOOLS is set.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use icebreaker_natlab::NatType;
use icebreaker_natlab::lab::{Lab, LabProcess, Node, SERVER_IP};
use icebreaker_natlab::scenario::{MatrixTable, PathClass, nat_pairs};
use icebreaker_tests::{ice_peer_bin, icebreaker_bin};
use serde_json::Value;

mod common;
use common::lab;

const TURN_PORT: u16 = 3478;
const SIGNAL_PORT: u16 = 8080;

/// The servers in the public namespace.
struct Servers {
    _turn: LabProcess,
    _signal: LabProcess,
}

fn start_servers(lab: &Lab) -> Servers {
    let mut serve = Command::new(icebreaker_bin());
    serve
        .args(["serve", "--listen", &format!("{SERVER_IP}:{TURN_PORT}")])
        .args(["--user", "alice:secret", "--threads", "1"])
        .args(["--relay-ports", "49152-49407"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let turn = lab.spawn(Node::Public, serve).expect("icebreaker serve");
    assert!(
        turn.wait_for_stdout("iceServers", Duration::from_secs(20))
            .is_some(),
        "icebreaker serve did not start: {}",
        turn.stderr()
    );
    let mut signal = Command::new(icebreaker_bin());
    signal
        .args(["signal", "--listen", &format!("{SERVER_IP}:{SIGNAL_PORT}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let signal = lab.spawn(Node::Public, signal).expect("icebreaker signal");
    assert!(
        signal
            .wait_for_stdout("signaling relay on", Duration::from_secs(20))
            .is_some(),
        "icebreaker signal did not start: {}",
        signal.stderr()
    );
    Servers {
        _turn: turn,
        _signal: signal,
    }
}

fn ice_peer(lab: &Lab, node: Node, role: &str, room: &str, extra: &[&str]) -> LabProcess {
    let mut command = Command::new(ice_peer_bin());
    command
        .arg(role)
        .args([
            "--signal",
            &format!("ws://{SERVER_IP}:{SIGNAL_PORT}/{room}"),
        ])
        .args(["--stun", &format!("stun:{SERVER_IP}:{TURN_PORT}")])
        .args(["--turn", &format!("turn:{SERVER_IP}:{TURN_PORT}")])
        .args(["--user", "alice", "--password", "secret", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    lab.spawn(node, command).expect("ice-peer")
}

/// Waits for an ice-peer and returns its exit code and its JSON report.
fn report(peer: &LabProcess, timeout: Duration) -> (Option<i32>, Value) {
    let status = peer.wait_timeout(timeout).expect("wait");
    let Some(status) = status else {
        let _ = peer.kill();
        panic!(
            "ice-peer still running after {timeout:?}: {}",
            peer.stderr()
        );
    };
    let stdout = peer.stdout();
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let report = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report: {stdout}\n{}", peer.stderr()));
    (status.code(), report)
}

/// Runs one offer/answer exchange in a fresh room; returns both reports.
fn exchange(lab: &Lab, room: &str, offer: &[&str], answer: &[&str]) -> (Value, Value) {
    let answerer = ice_peer(lab, Node::Host2, "answer", room, answer);
    let offerer = ice_peer(lab, Node::Host1, "offer", room, offer);
    let (offer_code, offer_report) = report(&offerer, Duration::from_secs(60));
    let (answer_code, answer_report) = report(&answerer, Duration::from_secs(20));
    assert_eq!(
        offer_code,
        Some(0),
        "offerer: {offer_report}\n{}",
        offerer.stderr()
    );
    assert_eq!(
        answer_code,
        Some(0),
        "answerer: {answer_report}\n{}",
        answerer.stderr()
    );
    (offer_report, answer_report)
}

fn kinds(report: &Value) -> (String, String) {
    let selected = &report["selected"];
    (
        selected["local"]["type"].as_str().unwrap_or("").to_owned(),
        selected["remote"]["type"].as_str().unwrap_or("").to_owned(),
    )
}

fn path_class(report: &Value) -> PathClass {
    let (local, remote) = kinds(report);
    if local == "relay" || remote == "relay" {
        PathClass::Relay
    } else {
        PathClass::Direct
    }
}

fn room(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn matrix(relay_only: bool) {
    let Some(lab) = lab() else {
        return;
    };
    let _servers = start_servers(&lab);
    let mut table = MatrixTable::default();
    let mut extra = vec!["--send", "20", "--interval", "10"];
    if relay_only {
        extra.push("--relay-only");
    }
    for (a, b) in nat_pairs() {
        lab.set_nat(Node::Router1, a, false).unwrap();
        lab.set_nat(Node::Router2, b, false).unwrap();
        let started = Instant::now();
        let (offer, answer) = exchange(&lab, &room(&format!("{a}-{b}")), &extra, &extra);
        let (local, remote) = kinds(&offer);
        table.record(a, b, format!("{local}/{remote}"));
        let expected = if relay_only {
            PathClass::Relay
        } else {
            PathClass::expected(a, b)
        };
        assert_eq!(path_class(&offer), expected, "{a} x {b}: {offer}");
        assert_eq!(path_class(&answer), expected, "{a} x {b}: {answer}");
        if relay_only {
            assert_eq!((local.as_str(), remote.as_str()), ("relay", "relay"));
        }
        assert_eq!(offer["sent"], 20, "{a} x {b}: {offer}");
        assert_eq!(offer["echoed"], 20, "{a} x {b}: {offer}");
        eprintln!(
            "{a} x {b}: {local}/{remote}, connected in {} ms, run {:?}",
            offer["connect_ms"],
            started.elapsed()
        );
    }
    let title = if relay_only {
        "NAT matrix (namespace lab, --relay-only)"
    } else {
        "NAT matrix (namespace lab)"
    };
    println!("{title}, offerer's selected pair local/remote:\n{table}");
}

#[test]
fn every_nat_pair_connects_directly_where_hole_punching_works_and_through_the_relay_elsewhere() {
    matrix(false);
}

#[test]
fn relay_only_selects_the_relay_for_every_nat_pair() {
    matrix(true);
}

#[test]
fn an_ice_restart_after_the_nat_forgets_its_mappings_moves_to_a_new_pair() {
    let Some(lab) = lab() else {
        return;
    };
    let _servers = start_servers(&lab);
    // Symmetric: after the flush the next packet leaves from a new random port, which the
    // old pair's far end does not know.
    lab.set_nat(Node::Router1, NatType::Symmetric, false)
        .unwrap();
    lab.set_nat(Node::Router2, NatType::FullCone, false)
        .unwrap();
    let room = room("restart");
    let extra = ["--send", "200", "--interval", "20", "--restart-after", "2"];
    let answerer = ice_peer(&lab, Node::Host2, "answer", &room, &[]);
    let offerer = ice_peer(&lab, Node::Host1, "offer", &room, &extra);
    // Flush a second after the connection, before the restart.
    assert!(
        offerer
            .wait_for_stderr("selected", Duration::from_secs(30))
            .is_some(),
        "no connection: {}",
        offerer.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    lab.flush_mappings(Node::Router1).unwrap();
    let (code, offer) = report(&offerer, Duration::from_secs(60));
    let (_, answer) = report(&answerer, Duration::from_secs(20));
    println!("restart after a flush: offerer {offer}\nanswerer {answer}");
    assert_eq!(offer["restarts"], 1, "{offer}");
    assert_eq!(offer["pairs"].as_array().map(Vec::len), Some(2), "{offer}");
    assert_eq!(
        answer["pairs"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    // What was sent between the flush (a second after the first selection) and the new pair
    // may be lost, and nothing else.
    let at = |i: usize| offer["pairs"][i]["at_ms"].as_f64().unwrap();
    let broken_ms = at(1) - (at(0) + 1000.0);
    let may_lose = (broken_ms / 20.0).ceil() as u64 + 5;
    let echoed = offer["echoed"].as_u64().unwrap();
    println!("path broken for {broken_ms:.0} ms; {echoed} of 200 echoed");
    assert!(echoed + may_lose >= 200, "{offer}");
    assert_eq!(code, Some(0));
}

#[test]
fn consent_is_lost_when_a_peer_vanishes() {
    let Some(lab) = lab() else {
        return;
    };
    let _servers = start_servers(&lab);
    lab.set_nat(Node::Router1, NatType::PortRestricted, false)
        .unwrap();
    lab.set_nat(Node::Router2, NatType::RestrictedCone, false)
        .unwrap();
    let room = room("vanish");
    let extra = [
        "--send",
        "1000",
        "--interval",
        "20",
        "--keepalive",
        "1",
        "--consent-timeout",
        "4",
    ];
    let answerer = ice_peer(&lab, Node::Host2, "answer", &room, &extra);
    let offerer = ice_peer(&lab, Node::Host1, "offer", &room, &extra);
    assert!(
        answerer
            .wait_for_stderr("selected", Duration::from_secs(30))
            .is_some(),
        "no connection: {}",
        answerer.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    // The offerer's host drops off the network, as when a laptop's Wi-Fi goes.
    lab.set_host_link(Node::Host1, false).unwrap();
    let vanished = Instant::now();
    let (code, answer) = report(&answerer, Duration::from_secs(20));
    let detected = vanished.elapsed();
    println!("consent lost after {detected:?}: {answer}");
    assert_eq!(answer["consent_lost"], true, "{answer}");
    assert_eq!(code, Some(1));
    assert!(detected <= Duration::from_secs(8), "{detected:?}");
    let _ = offerer.kill();
}

/// A 2 s mapping timeout in the answerer's router, an idle pair for 5 s after connecting,
/// then the offerer sends: the loss it sees.
fn loss_after_idle(lab: &Lab, keepalive: &str) -> f64 {
    lab.set_udp_timeout(Node::Router2, 2).unwrap();
    let room = room(&format!("idle-{keepalive}"));
    let extra = [
        "--send",
        "20",
        "--interval",
        "10",
        "--send-after",
        "5",
        "--keepalive",
        keepalive,
    ];
    let answerer = ice_peer(lab, Node::Host2, "answer", &room, &extra);
    let offerer = ice_peer(lab, Node::Host1, "offer", &room, &extra);
    let (_, offer) = report(&offerer, Duration::from_secs(60));
    let _ = report(&answerer, Duration::from_secs(20));
    offer["loss"].as_f64().unwrap_or(1.0)
}

#[test]
fn a_mapping_shorter_than_the_keepalive_interval_breaks_the_path_and_a_shorter_keepalive_keeps_it()
{
    let Some(lab) = lab() else {
        return;
    };
    let _servers = start_servers(&lab);
    lab.set_nat(Node::Router1, NatType::FullCone, false)
        .unwrap();
    lab.set_nat(Node::Router2, NatType::PortRestricted, false)
        .unwrap();
    let slow = loss_after_idle(&lab, "10");
    let fast = loss_after_idle(&lab, "1");
    println!(
        "loss after 5 s idle behind a 2 s mapping timeout: keepalive 10 s {:.0} %, 1 s {:.0} %",
        slow * 100.0,
        fast * 100.0
    );
    assert!(slow > 0.9, "{slow}");
    assert_eq!(fast, 0.0);
}
