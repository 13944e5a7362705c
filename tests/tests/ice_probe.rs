//! The `ice-probe` command end to end against two real servers on loopback: `icebreaker
//! serve` with its defaults (every check passes, the audit finds nothing) and coturn's
//! `turnserver` with `--allow-loopback-peers` (every check passes, the audit finds the
//! loopback relay), over UDP, TCP and TLS; wrong credentials, a closed port, certificates
//! trusted with `--ca`, refused without, looked past with `--insecure`; the exit codes, the
//! three output forms.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use icebreaker_tests::{
    Coturn, CoturnListeners, Server, free_udp_port, have_tool, ice_probe_bin, wait_for_tcp,
};
use serde_json::Value;

/// The table with its wrapped lines joined, to search for a phrase.
fn table_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn probe(args: &[&str]) -> Output {
    Command::new(ice_probe_bin())
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run ice-probe")
}

/// Runs the probe with `--json` and returns its exit code and report.
fn probe_json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = probe(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exited"), report)
}

fn checks(report: &Value) -> &Vec<Value> {
    report["checks"].as_array().expect("checks")
}

fn check<'r>(report: &'r Value, name: &str) -> &'r Value {
    checks(report)
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

/// Every check of `names` passed.
fn assert_passed(report: &Value, names: &[&str]) {
    for name in names {
        assert_eq!(check(report, name)["status"], "pass", "{name}: {report:#}");
    }
}

const TURN_CHECKS: [&str; 9] = [
    "binding",
    "mapped-address",
    "allocate",
    "relayed-address",
    "permission",
    "relay-data",
    "channel-data",
    "refresh",
    "deallocate",
];

#[test]
fn every_check_passes_against_icebreaker_and_the_audit_finds_nothing() {
    let alternate: SocketAddr = format!("127.0.0.2:{}", free_udp_port()).parse().unwrap();
    let server = Server::start(&[
        "--user",
        "alice:secret",
        "--other-address",
        &alternate.to_string(),
    ]);
    let uri = format!("turn:{}", server.addr);
    let metrics = temp_path("icebreaker.prom");
    let (code, report) = probe_json(&[
        &uri,
        "--user",
        "alice",
        "--password",
        "secret",
        "--audit",
        "--prometheus",
        metrics.to_str().unwrap(),
    ]);
    assert_passed(&report, &TURN_CHECKS);
    for check in checks(&report) {
        let name = check["name"].as_str().unwrap();
        // Not asked for, and IPv6 spellings of peers cannot reach an IPv4 relay.
        if !["mapping-lifetime", "audit-relay-ipv6-forms"].contains(&name) {
            assert_ne!(check["status"], "skip", "{check:#}");
        }
        assert_ne!(check["status"], "fail", "{check:#}");
    }
    assert_eq!(check(&report, "nat-mapping")["value"], "no NAT");
    assert_eq!(report["findings"], Value::Array(Vec::new()), "{report:#}");
    assert_eq!(report["passed"], true);
    assert_eq!(code, 0);
    assert!(
        checks(&report)
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("audit-"))
    );
    let relay = &check(&report, "relay-data")["metrics"];
    let loss = relay
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "loss_ratio")
        .expect("loss_ratio");
    assert_eq!(loss["value"], 0.0);

    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("\nice_probe_success 1\n"), "{text}");
    assert!(
        text.contains(&format!(
            "ice_probe_check_success{{target=\"{uri}\",check=\"allocate\"}} 1"
        )),
        "{text}"
    );
    std::fs::remove_file(&metrics).unwrap();
}

#[test]
fn wrong_credentials_give_the_401_explanation_and_exit_1() {
    let server = Server::start(&["--user", "alice:secret"]);
    let uri = format!("turn:{}", server.addr);
    let out = probe(&[&uri, "--user", "alice", "--password", "wrong"]);
    let table = table_text(&out);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("FAIL"), "{table}");
    assert!(table.contains("wrong username or password"), "{table}");
    // No colour when stdout is not a terminal, unless asked for.
    assert!(!out.stdout.contains(&0x1b), "{table}");
    let out = probe(&[
        &uri,
        "--user",
        "alice",
        "--password",
        "wrong",
        "--color",
        "always",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));

    let (code, report) = probe_json(&[&uri, "--secret", "not-the-secret"]);
    assert_eq!(code, 1);
    let explanation = check(&report, "allocate")["explanation"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(explanation.contains("secret"), "{explanation}");
}

#[test]
fn a_closed_port_is_explained_and_usage_errors_exit_2() {
    let port = free_udp_port();
    let started = Instant::now();
    let (code, report) = probe_json(&[&format!("stun:127.0.0.1:{port}"), "--timeout", "2"]);
    assert_eq!(code, 1);
    let binding = check(&report, "binding");
    assert_eq!(binding["status"], "fail");
    assert!(
        binding["explanation"]
            .as_str()
            .unwrap()
            .contains("ICMP port unreachable"),
        "{binding:#}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    for args in [
        &["turn:127.0.0.1", "--user", "alice"][..],
        &["turn:127.0.0.1", "--insecure"],
        &["stun:127.0.0.1?transport=tcp"],
        &["turns:127.0.0.1", "--ca", "/nonexistent/ca.pem"],
        &["stun:127.0.0.1", "--count", "0"],
        &["no-scheme"],
        &[],
    ] {
        let out = probe(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn a_name_is_resolved_first() {
    let server = Server::start(&[]);
    let (code, report) = probe_json(&[&format!("stun:localhost:{}", server.addr.port())]);
    let resolve = check(&report, "resolve");
    assert_eq!(resolve["status"], "pass", "{report:#}");
    // IPv4 first: the server listens on 127.0.0.1 only.
    assert!(
        resolve["value"]
            .as_str()
            .unwrap()
            .contains("(probing 127.0.0.1)"),
        "{resolve:#}"
    );
    assert_eq!(check(&report, "binding")["status"], "pass");
    assert_eq!(code, 0);
}

/// coturn with RFC 5780 on a second loopback address and `extra` flags; UDP only.
fn coturn(extra: &[&str]) -> Coturn {
    Coturn::start(CoturnListeners {
        udp: true,
        tcp: false,
        tls: false,
        dtls: false,
        rfc5780: true,
        extra,
    })
}

/// As [`coturn`], also on TCP, and with TLS on a port of its own with a self-signed
/// certificate for localhost and 127.0.0.1.
fn coturn_with_tls(extra: &[&str]) -> Coturn {
    Coturn::start(CoturnListeners {
        udp: true,
        tcp: true,
        tls: true,
        dtls: false,
        rfc5780: true,
        extra,
    })
}

#[test]
fn against_coturn_every_check_passes_and_the_audit_finds_the_loopback_relay() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = coturn(&["--allow-loopback-peers"]);
    let uri = format!("turn:{}", coturn.addr);
    let (code, report) = probe_json(&[&uri, "--user", "alice", "--password", "secret", "--audit"]);
    assert_passed(&report, &TURN_CHECKS);
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["severity"] == "critical"
                && format!("{f}").to_lowercase().contains("loopback")),
        "{report:#}"
    );
    assert_eq!(report["passed"], false);
    assert_eq!(code, 1);

    let out = probe(&[&uri, "--user", "alice", "--password", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(table_text(&out).contains("wrong username or password"));
}

/// The `value` of check `name`, as text.
fn value<'r>(report: &'r Value, name: &str) -> &'r str {
    check(report, name)["value"].as_str().unwrap_or_default()
}

/// The `explanation` of check `name`, as text.
fn explanation<'r>(report: &'r Value, name: &str) -> &'r str {
    check(report, name)["explanation"]
        .as_str()
        .unwrap_or_default()
}

/// The checks a stream URI must pass: the connection first, then those of a UDP URI.
fn stream_turn_checks() -> Vec<&'static str> {
    ["connect"].into_iter().chain(TURN_CHECKS).collect()
}

#[test]
fn over_tcp_and_tls_every_check_passes_against_icebreaker_and_the_audit_finds_nothing() {
    let dir = temp_path("icebreaker-tls");
    let certificate = icebreaker_tests::test_certificate(&dir, &["localhost", "127.0.0.1"]);
    let (cert, key) = (
        certificate.cert_path.display().to_string(),
        certificate.key_path.display().to_string(),
    );
    let tls = SocketAddr::from(([127, 0, 0, 1], icebreaker_tests::free_tcp_port()));
    let server = Server::start(&[
        "--user",
        "alice:secret",
        "--tls-listen",
        &tls.to_string(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    wait_for_tcp(server.addr, "icebreaker's TCP listener");
    wait_for_tcp(tls, "icebreaker's TLS listener");

    // TCP on the UDP port, with the audit: the relay policy holds over TCP too.
    let tcp = format!("turn:127.0.0.1:{}?transport=tcp", server.addr.port());
    let credentials = ["--user", "alice", "--password", "secret"];
    let (code, report) = probe_json(&[&[tcp.as_str(), "--audit"][..], &credentials].concat());
    assert_passed(&report, &stream_turn_checks());
    assert_eq!(report["findings"], Value::Array(Vec::new()), "{report:#}");
    for check in checks(&report) {
        assert_ne!(check["status"], "fail", "{check:#}");
        let name = check["name"].as_str().unwrap();
        if name.starts_with("audit-relay-") && name != "audit-relay-ipv6-forms" {
            assert_eq!(check["status"], "pass", "{check:#}");
        }
    }
    assert_eq!(check(&report, "audit-amplification")["status"], "skip");
    assert_eq!(check(&report, "nat-mapping")["status"], "skip");
    assert_eq!(code, 0, "{report:#}");

    // TLS, trusting the test certificate.
    let turns = format!("turns:127.0.0.1:{}", tls.port());
    let (code, report) = probe_json(&[&[turns.as_str(), "--ca", &cert][..], &credentials].concat());
    assert_passed(&report, &stream_turn_checks());
    assert_passed(&report, &["tls", "tls-certificate"]);
    let handshake = value(&report, "tls");
    assert!(
        handshake.starts_with("TLS 1.3, ") || handshake.starts_with("TLS 1.2, "),
        "{report:#}"
    );
    assert!(
        value(&report, "tls-certificate").contains("verified against"),
        "{report:#}"
    );
    assert_eq!(code, 0, "{report:#}");

    // Without the certificate: refused, and why.
    let (code, report) = probe_json(&[&[turns.as_str()][..], &credentials].concat());
    assert_eq!(check(&report, "tls")["status"], "fail", "{report:#}");
    assert!(
        explanation(&report, "tls").contains("unknown issuer"),
        "{report:#}"
    );
    assert_eq!(code, 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn against_coturn_over_tls_the_certificate_flags_decide() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = coturn_with_tls(&["--allow-loopback-peers"]);
    let tls = coturn.tls.unwrap();
    let cert = coturn.cert_path().unwrap().display().to_string();
    let turns = format!("turns:localhost:{}", tls.port());
    let credentials = ["--user", "alice", "--password", "secret"];

    let (code, report) = probe_json(&[&[turns.as_str(), "--ca", &cert][..], &credentials].concat());
    assert_passed(&report, &stream_turn_checks());
    assert_passed(&report, &["resolve", "tls", "tls-certificate"]);
    assert_eq!(code, 0, "{report:#}");

    let out = probe(&[&[turns.as_str()][..], &credentials].concat());
    let table = table_text(&out);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("FAIL tls certificate refused"), "{table}");
    assert!(table.contains("unknown issuer"), "{table}");

    let (code, report) = probe_json(&[&[turns.as_str(), "--insecure"][..], &credentials].concat());
    assert_passed(&report, &stream_turn_checks());
    assert_eq!(check(&report, "tls-certificate")["status"], "skip");
    assert!(
        explanation(&report, "tls-certificate").starts_with("not verified (--insecure)"),
        "{report:#}"
    );
    assert_eq!(code, 0, "{report:#}");

    // coturn's UDP/TCP port also takes plain TCP: the audit there finds the loopback relay
    // over TCP as it does over UDP.
    let tcp = format!("turn:{}?transport=tcp", coturn.addr);
    let (code, report) = probe_json(&[&[tcp.as_str(), "--audit"][..], &credentials].concat());
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "critical" && f["check"] == "audit-relay-loopback"),
        "{report:#}"
    );
    assert_eq!(code, 1);
}

/// A path under the system's temporary directory unique to this process.
fn temp_path(name: &str) -> PathBuf {
    Path::new(&std::env::temp_dir()).join(format!("ice-probe-test-{}-{name}", std::process::id()))
}
