//! Interop with a real browser: headless Chromium (Debian's `/usr/bin/chromium`, driven by
//! playwright-core from `tests/browser/`) using the real `icebreaker serve` on loopback as its
//! TURN server, over UDP and through `turns:` (TLS on port 443: Chromium refuses TURN on ports
//! below 1024 but 53, 80 and 443; the test certificate is trusted by the hash of its public key
//! with `--ignore-certificate-errors-spki-list`, and refused without it).
//!
//! `tests/browser/relay.mjs` opens one page with two `RTCPeerConnection`s, both with
//! `iceTransportPolicy: 'relay'` and icebreaker as their only ICE server, so the only
//! candidates either side has are relayed addresses on icebreaker. The page exchanges the
//! offer, answer and candidates itself, opens a data channel, sends five messages each way and
//! reads the selected candidate pair of both connections from `getStats()`. The script prints
//! one JSON line, which these tests check together with icebreaker's own metrics. A second run
//! with a wrong password gathers candidates only: Chromium must end up with no relay candidate
//! and icebreaker must have counted the failed authentication.
//!
//! The Chromium flags (in `relay.mjs`): `--headless --no-sandbox --disable-gpu --disable-quic
//! --no-first-run --disable-background-networking --disable-component-update --disable-sync`,
//! a fresh `--user-data-dir`, `--allow-loopback-in-peer-connection` (the TURN server is on
//! 127.0.0.1), `WebRtcHideLocalIpsWithMdns` merged into Playwright's `--disable-features`, and
//! `--component-updater=url-source=http://127.0.0.1:9 --gaia-url=http://127.0.0.1:9`, without
//! which Chromium 156 still looks up update.googleapis.com and accounts.google.com at start.
//!
//! Skipped with a message when chromium or node is missing, unless `ICEBREAKER_REQUIRE_TOOLS`
//! is set (`scripts/test` installs both and runs `npm ci` in `tests/browser`). When
//! `tests/browser/node_modules` is missing the test runs `npm ci` itself, which needs the npm
//! registry. Every child process is bounded: past its limit it gets SIGTERM (Playwright then
//! closes its browser), then SIGKILL, by PID.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::{Server, have_tool};
use serde_json::Value;

/// The bound on `npm ci`.
const NPM_LIMIT: Duration = Duration::from_secs(300);
/// The bound on one run of `relay.mjs`: Chromium's start plus the WebRTC session. The script's
/// own deadline (`--timeout-ms`) is shorter, so that it reports what it saw before this one
/// fires.
const NODE_LIMIT: Duration = Duration::from_secs(90);
/// The script's own deadline, in milliseconds.
const SCRIPT_TIMEOUT_MS: &str = "60000";

const ALLOCATE_OK: &str = "icebreaker_turn_requests_total{method=\"Allocate\",result=\"success\"}";
const ALLOCATE_401: &str = "icebreaker_turn_requests_total{method=\"Allocate\",result=\"401\"}";
const CREATE_PERMISSION_OK: &str =
    "icebreaker_turn_requests_total{method=\"CreatePermission\",result=\"success\"}";
const CREATED: &str = "icebreaker_turn_allocations_created_total";
const TO_PEER: &str = "icebreaker_turn_relayed_packets_total{direction=\"client_to_peer\"}";
const TO_CLIENT: &str = "icebreaker_turn_relayed_packets_total{direction=\"peer_to_client\"}";
const BAD_INTEGRITY: &str = "icebreaker_turn_auth_failures_total{reason=\"bad_integrity\"}";

/// `tests/browser`.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// What a bounded child printed, and how it ended.
struct Finished {
    /// Whether it exited with status 0 (false when it was killed).
    success: bool,
    /// Whether it had to be killed at its limit.
    timed_out: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Reads a child's pipe to the end on a thread of its own, so that neither pipe can fill up
/// and stall the child.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Sends `signal` to one process, by PID.
fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Runs `command` to its end, for at most `limit`: past it the child gets SIGTERM (node lets
/// Playwright close the browser it launched), then SIGKILL two seconds later.
fn run_bounded(command: &mut Command, limit: Duration) -> Finished {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if start.elapsed() > limit {
            timed_out = true;
            signal(&child, "-TERM");
            let grace = Instant::now() + Duration::from_secs(2);
            while Instant::now() < grace && child.try_wait().ok().flatten().is_none() {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    Finished {
        success: status.is_some_and(|s| s.success()),
        timed_out,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// Whether chromium and node are there (and, the first time, installs playwright-core from
/// `tests/browser/package-lock.json` when `node_modules` is missing). False: skip the test.
fn browser_ready() -> bool {
    // Both tests of this file may get here at once: one `npm ci` at a time.
    static NPM: Mutex<()> = Mutex::new(());
    if !(have_tool("chromium") && have_tool("node")) {
        return false;
    }
    let dir = browser_dir();
    let _guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return true;
    }
    if !have_tool("npm") {
        return false;
    }
    let npm = run_bounded(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
        NPM_LIMIT,
    );
    assert!(
        npm.success,
        "npm ci in {} failed (timed out: {}):\n{}\n{}",
        dir.display(),
        npm.timed_out,
        npm.stdout,
        npm.stderr
    );
    true
}

/// Runs `relay.mjs` against `server` over UDP and returns its JSON result line.
fn relay(server: &Server, mode: &str, username: &str, credential: &str) -> Value {
    let url = format!("turn:{}?transport=udp", server.addr);
    relay_to(&url, None, mode, username, credential)
}

/// Runs `relay.mjs` with the TURN URL `url`, trusting the certificate whose public key hashes
/// to `trust_spki` if given, and returns its JSON result line.
fn relay_to(
    url: &str,
    trust_spki: Option<&str>,
    mode: &str,
    username: &str,
    credential: &str,
) -> Value {
    let mut command = Command::new("node");
    command
        .arg("relay.mjs")
        .args(["--mode", mode, "--url", url])
        .args(["--username", username, "--credential", credential])
        .args(["--timeout-ms", SCRIPT_TIMEOUT_MS])
        .current_dir(browser_dir());
    if let Some(spki) = trust_spki {
        command.args(["--trust-spki", spki]);
    }
    let run = run_bounded(&mut command, NODE_LIMIT);
    eprintln!("relay.mjs --mode {mode}: {:?}", run.elapsed);
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "relay.mjs printed no result (timed out: {}):\nstdout: {}\nstderr: {}",
                run.timed_out, run.stdout, run.stderr
            )
        });
    let result: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("relay.mjs printed bad JSON ({e}): {line}"));
    eprintln!("{result}");
    assert_eq!(
        result["ok"].as_bool() == Some(true),
        run.success,
        "exit status and \"ok\" disagree: {result}\nstderr: {}",
        run.stderr
    );
    result
}

#[test]
fn chromium_connects_two_peer_connections_through_icebreaker_relays_only() {
    if !browser_ready() {
        return;
    }
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let r = relay(&server, "connect", "alice", "secret");

    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(r["connected"], true, "the data channel never opened: {r}");
    assert_eq!(r["messagesAB"], 5, "messages from A to B: {r}");
    assert_eq!(r["messagesBA"], 5, "messages from B to A: {r}");
    assert_eq!(
        r["messagesIntact"], true,
        "messages changed or reordered: {r}"
    );
    for side in ["pairA", "pairB"] {
        let pair = &r[side];
        assert_eq!(pair["state"], "succeeded", "{side}: {r}");
        assert_eq!(pair["localType"], "relay", "{side}: local candidate: {r}");
        assert_eq!(pair["remoteType"], "relay", "{side}: remote candidate: {r}");
        assert_eq!(pair["relayProtocol"], "udp", "{side}: {r}");
        assert_eq!(pair["url"], format!("turn:{}?transport=udp", server.addr));
    }
    // Each side's selected pair is its own relayed address and the other side's.
    assert_eq!(r["pairA"]["local"], r["pairB"]["remote"], "{r}");
    assert_eq!(r["pairA"]["remote"], r["pairB"]["local"], "{r}");
    assert!(r["relayCandidates"].as_u64() >= Some(2), "{r}");
    assert_eq!(r["candidateErrors"], serde_json::json!([]), "{r}");

    // icebreaker saw it too: an allocation per connection, permissions for the other side's
    // relayed address, and packets relayed both ways (ICE checks, DTLS, SCTP, the messages).
    let created = server.metric(CREATED);
    assert!(created >= 2.0, "allocations created: {created}");
    assert!(server.metric(ALLOCATE_OK) >= 2.0);
    assert!(server.metric(CREATE_PERMISSION_OK) >= 2.0);
    let (to_peer, to_client) = (server.metric(TO_PEER), server.metric(TO_CLIENT));
    assert!(to_peer >= 10.0, "packets relayed client to peer: {to_peer}");
    assert!(
        to_client >= 10.0,
        "packets relayed peer to client: {to_client}"
    );
}

#[test]
fn chromium_with_a_wrong_password_gets_no_relay_candidate() {
    if !browser_ready() {
        return;
    }
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let r = relay(&server, "gather", "alice", "not-the-password");

    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(
        r["gatheringComplete"], true,
        "gathering never completed: {r}"
    );
    assert_eq!(r["relayCandidates"], 0, "{r}");
    assert_eq!(
        r["candidates"], 0,
        "a relay policy leaves nothing else: {r}"
    );
    let errors = r["candidateErrors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors.iter().any(|e| e["errorCode"] == 401),
        "Chromium reported no 401 from the TURN server: {r}"
    );

    assert_eq!(server.metric(CREATED), 0.0);
    assert!(
        server.metric(BAD_INTEGRITY) >= 1.0,
        "icebreaker counted no bad_integrity failure"
    );
    assert!(server.metric(ALLOCATE_401) >= 2.0);
}

/// A `turns:` server for Chromium, which refuses TURN on ports below 1024 but 53, 80 and 443:
/// TLS on port 443 of a loopback address whose 443 is free (binding it needs root), with a
/// test certificate for that address; UDP and TCP on a free port beside it.
struct TurnsOn443 {
    server: Server,
    url: String,
    /// The base64 SHA-256 of the certificate's SubjectPublicKeyInfo, for
    /// `--ignore-certificate-errors-spki-list`.
    spki: String,
    dir: PathBuf,
}

impl TurnsOn443 {
    /// None when no loopback address has port 443 free to this user: the test is skipped.
    fn start(name: &str) -> Option<TurnsOn443> {
        use base64::Engine as _;
        use rcgen::PublicKeyData as _;
        use sha2::Digest as _;

        // The server binds with SO_REUSEPORT, so two tests of this file could share a port
        // the probe found free: each takes addresses of its own.
        static NEXT: AtomicU8 = AtomicU8::new(40);
        let ip = std::iter::from_fn(|| {
            let last = NEXT.fetch_add(1, Ordering::Relaxed);
            (last < 250).then(|| std::net::Ipv4Addr::new(127, 0, 0, last))
        })
        .find(|&ip| std::net::TcpListener::bind((ip, 443)).is_ok())?;
        let dir =
            std::env::temp_dir().join(format!("icebreaker-chromium-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cert = icebreaker_tests::test_certificate(&dir, &[&ip.to_string()]);
        let key = rcgen::KeyPair::from_pem(&cert.key_pem).expect("the test key parses");
        let spki = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(key.subject_public_key_info()));
        let tls = format!("{ip}:443");
        let port = icebreaker_tests::free_port(&[ip.into()]);
        let server = Server::start_on(
            std::net::SocketAddr::from((ip, port)),
            &[
                "--user",
                "alice:secret",
                "--allow-peer",
                "127.0.0.0/8",
                "--tls-listen",
                &tls,
                "--tls-cert",
                cert.cert_path.to_str().expect("UTF-8 path"),
                "--tls-key",
                cert.key_path.to_str().expect("UTF-8 path"),
            ],
        );
        Some(TurnsOn443 {
            server,
            url: format!("turns:{tls}?transport=tcp"),
            spki,
            dir,
        })
    }
}

impl Drop for TurnsOn443 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TLS_CLOSED_BY_PEER: &str =
    "icebreaker_connections_closed_total{transport=\"tls\",reason=\"peer\"}";
const TLS_FAILED: &str = "icebreaker_connections_closed_total{transport=\"tls\",reason=\"tls\"}";

#[test]
fn chromium_connects_through_icebreaker_over_turns() {
    if !browser_ready() {
        return;
    }
    let Some(turns) = TurnsOn443::start("turns") else {
        eprintln!("skipped: no loopback address has port 443 free (binding it needs root)");
        return;
    };
    let r = relay_to(&turns.url, Some(&turns.spki), "connect", "alice", "secret");

    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(r["connected"], true, "the data channel never opened: {r}");
    assert_eq!(r["messagesAB"], 5, "{r}");
    assert_eq!(r["messagesBA"], 5, "{r}");
    assert_eq!(r["messagesIntact"], true, "{r}");
    for side in ["pairA", "pairB"] {
        let pair = &r[side];
        assert_eq!(pair["state"], "succeeded", "{side}: {r}");
        assert_eq!(pair["localType"], "relay", "{side}: {r}");
        assert_eq!(pair["remoteType"], "relay", "{side}: {r}");
        assert_eq!(pair["relayProtocol"], "tls", "{side}: {r}");
        assert_eq!(pair["url"], turns.url.as_str(), "{side}: {r}");
    }
    assert_eq!(r["candidateErrors"], serde_json::json!([]), "{r}");

    let server = &turns.server;
    assert!(server.metric(CREATED) >= 2.0);
    assert!(server.metric(TO_PEER) >= 10.0);
    assert!(server.metric(TO_CLIENT) >= 10.0);
    // Chromium closed its TLS connections itself, after a clean session.
    assert_eq!(server.metric(TLS_FAILED), 0.0);
}

#[test]
fn chromium_refuses_a_turns_certificate_it_does_not_trust() {
    if !browser_ready() {
        return;
    }
    let Some(turns) = TurnsOn443::start("untrusted") else {
        eprintln!("skipped: no loopback address has port 443 free (binding it needs root)");
        return;
    };
    let r = relay_to(&turns.url, None, "gather", "alice", "secret");

    assert_eq!(r["gatheringComplete"], true, "{r}");
    assert_eq!(r["relayCandidates"], 0, "{r}");
    let errors = r["candidateErrors"].as_array().cloned().unwrap_or_default();
    assert!(!errors.is_empty(), "Chromium reported no TURN error: {r}");
    let server = &turns.server;
    assert_eq!(server.metric(CREATED), 0.0);
    assert!(
        server.metric(TLS_FAILED) >= 1.0,
        "icebreaker saw no failed TLS handshake"
    );
    assert_eq!(server.metric(TLS_CLOSED_BY_PEER), 0.0);
}
