//! The `ice-probe` command end to end against two real servers on loopback: `icebreaker
//! serve` with its defaults (every check passes, the audit finds nothing) and coturn's
//! `turnserver` with `--allow-loopback-peers` (every check passes, the audit finds the
//! loopback relay); wrong credentials, a closed port, the exit codes, the three output forms.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use icebreaker_tests::{Server, free_udp_port, have_tool, ice_probe_bin};
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
        &["turns:127.0.0.1"],
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

/// A coturn `turnserver` on loopback, stopped by its PID when dropped.
struct Coturn {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Coturn {
    /// coturn with long-term credentials `alice:secret`, RFC 5780 on a second loopback
    /// address, and `extra` flags.
    fn start(extra: &[&str]) -> Coturn {
        let port = free_udp_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = temp_path(&format!("coturn-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let relay_base = 40_000 + (port % 1_000) * 20;
        let child = Command::new("turnserver")
            .args(["-n", "--listening-ip=127.0.0.1", "--listening-ip=127.0.0.2"])
            .arg(format!("--listening-port={port}"))
            .args(["--relay-ip=127.0.0.1"])
            .arg(format!("--min-port={relay_base}"))
            .arg(format!("--max-port={}", relay_base + 19))
            .args([
                "--user=alice:secret",
                "--realm=example.org",
                "--lt-cred-mech",
            ])
            .args(["--no-tls", "--no-dtls", "--no-tcp", "--no-cli"])
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .args(["--simple-log", "--no-stdout-log"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let coturn = Coturn { child, dir, addr };
        coturn.wait_until_serving();
        coturn
    }

    /// Waits for a Binding answer: coturn prints nothing useful to stdout.
    fn wait_until_serving(&self) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let request = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let _ = socket.send_to(&request, self.addr);
            let mut buf = [0u8; 512];
            if socket.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("turnserver did not answer on {}", self.addr);
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn against_coturn_every_check_passes_and_the_audit_finds_the_loopback_relay() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = Coturn::start(&["--allow-loopback-peers"]);
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

/// A path under the system's temporary directory unique to this process.
fn temp_path(name: &str) -> PathBuf {
    Path::new(&std::env::temp_dir()).join(format!("ice-probe-test-{}-{name}", std::process::id()))
}
