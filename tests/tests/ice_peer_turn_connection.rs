//! Two `ice-peer` processes on loopback connect relay-only through a TURN server they reach
//! over TCP (`turn:HOST:PORT?transport=tcp`), over TLS (`turns:HOST:PORT`) and over DTLS
//! (`turns:HOST:PORT?transport=udp`), TLS and DTLS verified with `--ca`, meeting in a room of
//! a real `icebreaker signal`: against coturn's `turnserver` (with its plain UDP listener off,
//! so nothing but the connection can carry the session) and against `icebreaker serve`. A
//! certificate nobody vouches for is refused over TLS and over DTLS, and a TURN server that
//! dies mid-run costs the relayed candidate, not the session on a host pair.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::{
    Coturn, CoturnListeners, Finished, Process, SignalRelay, TlsServer, have_tool, ice_peer_bin,
};

/// Every wait here ends by this long, so that a hung process fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(60);

/// coturn's `turnserver` on loopback with TCP, TLS and DTLS listeners and no plain UDP one, so
/// that a session that works went over the connection; relaying between loopback addresses.
/// `None` when coturn is not installed.
fn start_coturn() -> Option<Coturn> {
    if !have_tool("turnserver") {
        return None;
    }
    Some(Coturn::start(CoturnListeners {
        udp: false,
        tcp: true,
        tls: true,
        dtls: true,
        rfc5780: false,
        extra: &["--allow-loopback-peers"],
    }))
}

/// Starts ice-peer with `args`.
fn peer(args: &[String]) -> Process {
    Process::start(&ice_peer_bin(), args)
}

/// The flags of one peer: `role`, the room, the TURN URI and its credentials, `extra`.
fn peer_args(role: &str, room: &str, turn: &str, extra: &[&str]) -> Vec<String> {
    let fixed = [
        role,
        "--signal",
        room,
        "--turn",
        turn,
        "--user",
        "alice",
        "--password",
        "secret",
        "--timeout",
        "20",
        "--json",
    ];
    fixed.iter().chain(extra).map(|s| (*s).to_owned()).collect()
}

/// Runs an offerer on 127.0.0.1 and an answerer on 127.0.0.2, both with `extra`, through
/// `turn`; the answerer starts a moment later, as a second shell would. `during` runs while
/// both are up.
fn run_pair(
    signal: &SignalRelay,
    turn: &str,
    extra: &[&str],
    offer_extra: &[&str],
    during: impl FnOnce(),
) -> (Finished, Finished) {
    let room = signal.room("turn-connection");
    let offer = [extra, &["--bind", "127.0.0.1"], offer_extra].concat();
    let offerer = peer(&peer_args("offer", &room, turn, &offer));
    thread::sleep(Duration::from_millis(200));
    let answer = [extra, &["--bind", "127.0.0.2"][..]].concat();
    let answerer = peer(&peer_args("answer", &room, turn, &answer));
    during();
    (offerer.wait(BOUND), answerer.wait(BOUND))
}

/// Both peers exited with 0.
fn both_succeeded(offer: &Finished, answer: &Finished) {
    for (role, exit) in [("offer", offer), ("answer", answer)] {
        assert_eq!(
            exit.status.code(),
            Some(0),
            "{role} stderr:\n{}",
            exit.stderr
        );
    }
}

/// Both peers connected over their relayed candidates, allocated over `protocol`, and every
/// one of `probes` probes came back.
fn assert_relayed_over(offer: &Finished, answer: &Finished, protocol: &str, probes: u64) {
    both_succeeded(offer, answer);
    let (offer, answer) = (offer.json(), answer.json());
    for report in [&offer, &answer] {
        assert_eq!(report["connected"], true, "{report}");
        assert!(report["error"].is_null(), "{report}");
        let selected = &report["selected"];
        assert_eq!(selected["local"]["type"], "relay", "{report}");
        assert_eq!(selected["local"]["relay_protocol"], protocol, "{report}");
        assert_eq!(selected["remote"]["type"], "relay", "{report}");
        assert!(report["gather_failed"].as_array().unwrap().is_empty());
        assert!(report["relays_lost"].as_array().unwrap().is_empty());
    }
    // Each side's relayed address is the other's remote one.
    assert_eq!(
        offer["selected"]["local"]["address"],
        answer["selected"]["remote"]["address"]
    );
    assert_eq!(offer["sent"], probes, "{offer}");
    assert_eq!(offer["echoed"], probes, "{offer}");
    assert_eq!(answer["echoed"], probes, "{answer}");
}

const RELAY_ONLY: &[&str] = &["--relay-only"];

/// Two relay-only peers through `turn`, trusting `ca` if given: every one of 50 probes comes
/// back over relayed candidates allocated over `protocol`.
fn relayed_through(turn: &str, ca: Option<&Path>, protocol: &str) {
    let signal = SignalRelay::start();
    let ca = ca.map(path_text);
    let mut extra = RELAY_ONLY.to_vec();
    if let Some(ca) = &ca {
        extra.extend(["--ca", ca.as_str()]);
    }
    let (offer, answer) = run_pair(&signal, turn, &extra, &["--send", "50"], || {});
    assert_relayed_over(&offer, &answer, protocol, 50);
}

#[test]
fn through_coturn_over_tcp_tls_and_dtls() {
    let Some(coturn) = start_coturn() else {
        return;
    };
    relayed_through(&format!("turn:{}?transport=tcp", coturn.addr), None, "tcp");
    // A name, not the IP: the server is asked for (SNI) and checked as "localhost".
    let ca = coturn.cert_path();
    let tls = format!("turns:localhost:{}", coturn.tls.unwrap().port());
    relayed_through(&tls, ca, "tls");
    let dtls = format!(
        "turns:localhost:{}?transport=udp",
        coturn.dtls_addr().port()
    );
    relayed_through(&dtls, ca, "dtls");
}

#[test]
fn a_server_no_root_vouches_for_gives_no_relayed_candidate_over_tls_or_dtls() {
    let Some(coturn) = start_coturn() else {
        return;
    };
    let signal = SignalRelay::start();
    let tls = format!("turns:localhost:{}", coturn.tls.unwrap().port());
    let dtls = format!(
        "turns:localhost:{}?transport=udp",
        coturn.dtls_addr().port()
    );
    for (turn, handshake) in [(tls, "TLS handshake"), (dtls, "DTLS handshake")] {
        let room = signal.room("untrusted");
        let args = peer_args(
            "offer",
            &room,
            &turn,
            &["--relay-only", "--bind", "127.0.0.1"],
        );
        let started = Instant::now();
        let offer = peer(&args).wait(BOUND);
        assert!(started.elapsed() < Duration::from_secs(15), "fails at once");
        assert_eq!(offer.status.code(), Some(1), "stderr:\n{}", offer.stderr);
        let report = offer.json();
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("no local candidates"), "{error}");
        let reason = report["gather_failed"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains(handshake) && reason.contains("certificate"),
            "{reason}"
        );
    }
}

#[test]
fn a_turn_server_lost_mid_run_costs_the_relay_not_the_host_pair() {
    let Some(mut coturn) = start_coturn() else {
        return;
    };
    let signal = SignalRelay::start();
    let turn = format!("turn:{}?transport=tcp", coturn.addr);
    // 150 probes 20 ms apart: the server dies a second into the three seconds they take.
    let (offer, answer) = run_pair(
        &signal,
        &turn,
        &[],
        &["--send", "150", "--interval", "20"],
        || {
            thread::sleep(Duration::from_millis(1500));
            coturn.kill();
        },
    );
    both_succeeded(&offer, &answer);
    for exit in [&offer, &answer] {
        let report = exit.json();
        assert_eq!(report["selected"]["local"]["type"], "host", "{report}");
        let lost = report["relays_lost"].as_array().unwrap();
        assert_eq!(lost.len(), 1, "{report}");
        assert_eq!(lost[0]["transport"], "tcp", "{report}");
        assert_eq!(lost[0]["server"], coturn.addr.to_string(), "{report}");
        assert!(
            exit.stderr.contains("lost"),
            "the loss is told as it happens:\n{}",
            exit.stderr
        );
    }
    let report = offer.json();
    assert_eq!(report["echoed"], 150, "{report}");
}

#[test]
fn losing_the_relay_of_the_selected_pair_fails_the_run_at_once() {
    let Some(mut coturn) = start_coturn() else {
        return;
    };
    let signal = SignalRelay::start();
    let turn = format!("turn:{}?transport=tcp", coturn.addr);
    let killed_at = std::cell::Cell::new(None);
    let (offer, answer) = run_pair(
        &signal,
        &turn,
        RELAY_ONLY,
        &["--send", "500", "--interval", "20"],
        || {
            thread::sleep(Duration::from_millis(1500));
            coturn.kill();
            killed_at.set(Some(Instant::now()));
        },
    );
    let killed_at = killed_at.get().unwrap();
    // Consent would take its 30 s; the lost connection says it within a moment.
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    // Both lose their relay at once; the first to notice tells the other, which may hear
    // that before its own connection's end.
    let mut noticed = 0;
    for exit in [&offer, &answer] {
        assert_eq!(exit.status.code(), Some(1), "stderr:\n{}", exit.stderr);
        let report = exit.json();
        assert_eq!(report["connected"], true, "{report}");
        assert_eq!(report["consent_lost"], false, "{report}");
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains("the relay of the selected pair was lost"),
            "{error}"
        );
        if let Some(lost) = report["relays_lost"].as_array().unwrap().first() {
            assert_eq!(lost["transport"], "tcp", "{report}");
            assert_eq!(lost["server"], coturn.addr.to_string(), "{report}");
            noticed += 1;
        }
    }
    assert!(noticed >= 1);
}

#[test]
fn through_icebreaker_over_tcp_tls_and_dtls() {
    let stack = TlsServer::start(
        "ice-peer",
        &["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"],
    );
    let turn = format!("turn:{}?transport=tcp", stack.server.addr);
    relayed_through(&turn, None, "tcp");
    let ca = Some(stack.cert.cert_path.as_path());
    let tls = format!("turns:{}:{}", TlsServer::NAME, stack.tls_addr.port());
    relayed_through(&tls, ca, "tls");
    let dtls = format!(
        "turns:{}:{}?transport=udp",
        TlsServer::NAME,
        stack.dtls_addr.port()
    );
    relayed_through(&dtls, ca, "dtls");
    // Each peer's allocation was made over a DTLS session of its own.
    let sessions = stack
        .server
        .metric("icebreaker_connections_opened_total{transport=\"dtls\"}");
    assert!(sessions >= 2.0, "{sessions} DTLS sessions");
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}
