//! Two ice-peer processes on loopback through a real `icebreaker signal` relay and, for relayed
//! candidates, a real `icebreaker serve`: they connect, echo every probe, restart, fail clearly.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::{Finished, Process, Server, SignalRelay};
use serde_json::Value;

/// Every wait in these tests ends by this long, so a hung peer fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(60);

/// Starts this build's ice-peer with `args`.
fn peer<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Process {
    Process::start(std::path::Path::new(env!("CARGO_BIN_EXE_ice-peer")), args)
}

/// Runs an offerer and an answerer to the end; the answerer starts a moment later, as a
/// second shell would.
fn run_pair(offer: &[&str], answer: &[&str]) -> (Finished, Finished) {
    let offerer = peer(&[&["offer"], offer].concat());
    thread::sleep(Duration::from_millis(200));
    let answerer = peer(&[&["answer"], answer].concat());
    let offer_exit = offerer.wait(BOUND);
    let answer_exit = answerer.wait(BOUND);
    (offer_exit, answer_exit)
}

fn ip_of(endpoint: &Value) -> String {
    let address: SocketAddr = endpoint["address"]
        .as_str()
        .expect("an address")
        .parse()
        .expect("IP:PORT");
    address.ip().to_string()
}

/// What every successful run reports, whichever side.
fn assert_connected(report: &Value, role: &str, selections: usize) {
    assert_eq!(report["role"], role, "{report}");
    assert_eq!(report["connected"], true, "{report}");
    assert!(report["connect_ms"].as_f64().is_some(), "{report}");
    assert_eq!(report["consent_lost"], false, "{report}");
    assert!(report["error"].is_null(), "{report}");
    let pairs = report["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), selections, "{report}");
    let last = pairs.last().expect("a selection");
    assert_eq!(report["selected"], *last, "{report}");
}

/// The offerer's count: every probe sent, echoed in time, RTT figures in order.
fn assert_all_echoed(report: &Value, probes: u64) {
    assert_eq!(report["sent"], probes, "{report}");
    assert_eq!(report["echoed"], probes, "{report}");
    assert_eq!(report["loss"], 0.0, "{report}");
    let rtt = &report["rtt_ms"];
    let [min, mean, p95, max] =
        ["min", "mean", "p95", "max"].map(|k| rtt[k].as_f64().expect("an RTT figure"));
    assert!(
        0.0 <= min && min <= mean && mean <= max && min <= p95 && p95 <= max,
        "{rtt}"
    );
}

#[test]
fn two_peers_connect_over_host_candidates_and_every_probe_is_echoed() {
    let signal = SignalRelay::start();
    let room = signal.room("host");
    let common = ["--signal", &room, "--timeout", "20"];
    let (offer, answer) = run_pair(
        &[
            &common[..],
            &[
                "--bind",
                "127.0.0.1",
                "--send",
                "40",
                "--interval",
                "10",
                "--json",
            ],
        ]
        .concat(),
        // The answerer prints its text form, checked below.
        &[&common[..], &["--bind", "127.0.0.2"]].concat(),
    );
    assert_eq!(offer.code(), Some(0), "offer stderr:\n{}", offer.stderr);
    assert_eq!(answer.code(), Some(0), "answer stderr:\n{}", answer.stderr);

    let report = offer.json();
    assert_connected(&report, "offer", 1);
    assert_all_echoed(&report, 40);
    assert_eq!(report["restarts"], 0);
    let selected = &report["selected"];
    assert_eq!(selected["local"]["type"], "host", "{report}");
    assert_eq!(ip_of(&selected["local"]), "127.0.0.1");
    // The answerer's checks may reach the offerer before its candidates do: then the
    // offerer knows it as peer-reflexive first.
    let remote_type = selected["remote"]["type"].as_str().unwrap();
    assert!(matches!(remote_type, "host" | "prflx"), "{report}");
    assert_eq!(ip_of(&selected["remote"]), "127.0.0.2");

    let text = &answer.stdout;
    assert!(
        text.contains("selected: local host 127.0.0.2:")
            && text.contains(" -> remote host 127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("echoed 40"), "{text}");
    assert!(text.contains("restarts 0"), "{text}");
}

#[test]
fn relay_only_peers_select_relayed_candidates_and_lose_nothing() {
    let signal = SignalRelay::start();
    // Both relayed addresses are the server's own loopback ones: allowed explicitly.
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let turn = format!("turn:{}", server.addr);
    let room = signal.room("relay");
    let common = [
        "--signal",
        &room,
        "--turn",
        &turn,
        "--user",
        "alice",
        "--password",
        "secret",
        "--relay-only",
        "--timeout",
        "20",
        "--json",
    ];
    let (offer, answer) = run_pair(
        &[&common[..], &["--bind", "127.0.0.1", "--send", "50"]].concat(),
        &[&common[..], &["--bind", "127.0.0.2"]].concat(),
    );
    assert_eq!(offer.code(), Some(0), "offer stderr:\n{}", offer.stderr);
    assert_eq!(answer.code(), Some(0), "answer stderr:\n{}", answer.stderr);
    let offer = offer.json();
    let answer = answer.json();
    assert_connected(&offer, "offer", 1);
    assert_connected(&answer, "answer", 1);
    for report in [&offer, &answer] {
        let selected = &report["selected"];
        assert_eq!(selected["local"]["type"], "relay", "{report}");
        assert_eq!(selected["remote"]["type"], "relay", "{report}");
        assert_eq!(ip_of(&selected["local"]), server.addr.ip().to_string());
        assert!(report["gather_failed"].as_array().unwrap().is_empty());
    }
    // Each side's relayed address is the other's remote one.
    assert_eq!(
        offer["selected"]["local"]["address"],
        answer["selected"]["remote"]["address"]
    );
    assert_eq!(
        offer["selected"]["remote"]["address"],
        answer["selected"]["local"]["address"]
    );
    assert_all_echoed(&offer, 50);
    assert_eq!(answer["echoed"], 50);
    assert!(answer["loss"].is_null() && answer["rtt_ms"].is_null());
}

#[test]
fn an_ice_restart_mid_transfer_selects_again_and_loses_nothing() {
    let signal = SignalRelay::start();
    let room = signal.room("restart");
    let common = ["--signal", &room, "--timeout", "20", "--json"];
    // 100 probes 20 ms apart take 2 s: the restart 1 s after connecting falls in the middle.
    let (offer, answer) = run_pair(
        &[
            &common[..],
            &[
                "--bind",
                "127.0.0.1",
                "--send",
                "100",
                "--restart-after",
                "1",
            ],
        ]
        .concat(),
        &[&common[..], &["--bind", "127.0.0.2"]].concat(),
    );
    assert_eq!(offer.code(), Some(0), "offer stderr:\n{}", offer.stderr);
    assert_eq!(answer.code(), Some(0), "answer stderr:\n{}", answer.stderr);
    let offer = offer.json();
    let answer = answer.json();
    assert_connected(&offer, "offer", 2);
    assert_connected(&answer, "answer", 2);
    assert_eq!(offer["restarts"], 1);
    assert_eq!(answer["restarts"], 1);
    for report in [&offer, &answer] {
        let pairs = report["pairs"].as_array().unwrap();
        let (first, second) = (pairs[0]["at_ms"].as_f64(), pairs[1]["at_ms"].as_f64());
        assert!(first < second, "{report}");
    }
    // The agent keeps data on the old pair until a pair of the new generation is selected,
    // and accepts data from its selected pair and from every pair whose check succeeded.
    // Here the new generation's pair joins the same two sockets as the old one, so a probe
    // is accepted whichever side switches first: not one may be lost.
    assert_all_echoed(&offer, 100);
    assert_eq!(answer["echoed"], 100);
}

#[test]
fn a_wrong_turn_password_with_relay_only_fails_clearly_and_tells_the_other_peer() {
    let signal = SignalRelay::start();
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let turn = format!("turn:{}", server.addr);
    let room = signal.room("password");
    let args = |password: &'static str, bind: &'static str| {
        vec![
            "--signal".to_owned(),
            room.clone(),
            "--turn".to_owned(),
            turn.clone(),
            "--user".to_owned(),
            "alice".to_owned(),
            "--password".to_owned(),
            password.to_owned(),
            "--relay-only".to_owned(),
            "--bind".to_owned(),
            bind.to_owned(),
            "--timeout".to_owned(),
            "20".to_owned(),
            "--json".to_owned(),
        ]
    };
    // The answerer is in the room first, so the offerer's bye reaches it.
    let answer_args = args("secret", "127.0.0.2");
    let mut answer_argv: Vec<&str> = vec!["answer"];
    answer_argv.extend(answer_args.iter().map(String::as_str));
    let answerer = peer(&answer_argv);
    thread::sleep(Duration::from_millis(300));
    let offer_args = args("wrong", "127.0.0.1");
    let mut offer_argv: Vec<&str> = vec!["offer"];
    offer_argv.extend(offer_args.iter().map(String::as_str));
    let started = Instant::now();
    let offer = peer(&offer_argv).wait(BOUND);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refused allocation fails at once"
    );
    assert_eq!(offer.code(), Some(1), "offer stderr:\n{}", offer.stderr);
    let report = offer.json();
    assert_eq!(report["connected"], false);
    let error = report["error"].as_str().expect("an error");
    assert!(
        error.contains("no local candidates") && error.contains("401"),
        "{error}"
    );
    assert_eq!(
        report["gather_failed"][0]["server"],
        server.addr.to_string(),
        "{report}"
    );
    assert!(
        report["gather_failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("wrong username or password"),
        "{report}"
    );
    assert!(
        offer.stderr.contains("error: no local candidates"),
        "{}",
        offer.stderr
    );

    let answer = answerer.wait(BOUND);
    assert_eq!(answer.code(), Some(1), "answer stderr:\n{}", answer.stderr);
    let report = answer.json();
    let error = report["error"].as_str().expect("an error");
    assert!(
        error.starts_with("the other peer gave up: no local candidates"),
        "{error}"
    );
}

#[test]
fn a_peer_whose_partner_vanishes_loses_consent_and_exits_1() {
    let signal = SignalRelay::start();
    let room = signal.room("consent");
    let common = [
        "--signal",
        &room,
        "--keepalive",
        "0.2",
        "--consent-timeout",
        "1",
        "--timeout",
        "20",
        "--json",
    ];
    // Long enough a transfer that the answerer dies in the middle of it.
    let offerer = peer(
        &[
            &["offer"][..],
            &common[..],
            &["--bind", "127.0.0.1", "--send", "1000"],
        ]
        .concat(),
    );
    let mut answerer = peer(&[&["answer"][..], &common[..], &["--bind", "127.0.0.2"]].concat());
    thread::sleep(Duration::from_millis(1500));
    answerer.child.kill().expect("kill the answerer");
    let _ = answerer.child.wait();
    let offer = offerer.wait(BOUND);
    assert_eq!(offer.code(), Some(1), "offer stderr:\n{}", offer.stderr);
    let report = offer.json();
    assert_eq!(report["connected"], true, "{report}");
    assert_eq!(report["consent_lost"], true, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .starts_with("consent lost"),
        "{report}"
    );
    let (sent, echoed) = (
        report["sent"].as_u64().unwrap(),
        report["echoed"].as_u64().unwrap(),
    );
    assert!(echoed > 0 && echoed < sent && sent < 1000, "{report}");
}

#[test]
fn usage_errors_exit_2_with_a_reason() {
    let signal = "ws://127.0.0.1:9/room-usage-errors";
    let cases: &[(&[&str], &str)] = &[
        (&[], "Usage"),
        (&["offer"], "--signal"),
        (&["dial", "--signal", signal], "dial"),
        (
            &["offer", "--signal", "http://127.0.0.1/room-0123"],
            "ws://",
        ),
        (
            &["offer", "--signal", "wss://127.0.0.1/room-0123"],
            "not supported yet",
        ),
        (
            &["offer", "--signal", signal, "--stun", "stun:[::1"],
            "\"]\"",
        ),
        (
            &["offer", "--signal", signal, "--stun", "turn:127.0.0.1"],
            "--turn",
        ),
        (
            &["offer", "--signal", signal, "--stun", "stuns:127.0.0.1"],
            "over UDP only",
        ),
        (
            &[
                "offer",
                "--signal",
                signal,
                "--stun",
                "stuns:127.0.0.1?transport=udp",
            ],
            "asks STUN servers over plain UDP only",
        ),
        (&["offer", "--signal", signal, "--ca", "ca.pem"], "--turn"),
        (
            &["offer", "--signal", signal, "--turn", "turn:127.0.0.1"],
            "--user",
        ),
        (&["offer", "--signal", signal, "--relay-only"], "--turn"),
        (&["offer", "--signal", signal, "--size", "4"], "13 to 1400"),
        (
            &["offer", "--signal", signal, "--timeout", "0"],
            "--timeout",
        ),
        (
            &["answer", "--signal", signal, "--restart-after", "1"],
            "for the offerer",
        ),
        (
            &["offer", "--signal", signal, "--bind", "0.0.0.0"],
            "unicast",
        ),
        (
            &[
                "offer",
                "--signal",
                signal,
                "--keepalive",
                "10",
                "--consent-timeout",
                "5",
            ],
            "--consent-timeout",
        ),
    ];
    for (args, reason) in cases {
        let exit = peer(args).wait(BOUND);
        assert_eq!(exit.code(), Some(2), "{args:?}: {}", exit.stderr);
        assert!(exit.stderr.contains(reason), "{args:?}: {}", exit.stderr);
        assert!(exit.stdout.is_empty(), "{args:?}: {}", exit.stdout);
    }
}
