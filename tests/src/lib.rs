//! Shared pieces of the end-to-end and interop tests: the real `icebreaker` binary started on
//! loopback, a UDP echo peer, free ports, and the rule for tests that need a tool from outside
//! the project (coturn's, Chromium).

// Test support: a broken setup must stop the test loudly.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod alloc_counter;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The `icebreaker` binary of this build, built first if it is missing.
pub fn icebreaker_bin() -> PathBuf {
    workspace_bin("icebreaker", "icebreaker")
}

/// The path of the `ice-peer` binary, built first if it is not there.
pub fn ice_peer_bin() -> PathBuf {
    workspace_bin("ice-peer", "ice-peer")
}

/// The path of the `ice-probe` binary, built first if it is not there.
pub fn ice_probe_bin() -> PathBuf {
    workspace_bin("ice-probe", "ice-probe")
}

/// The path of binary `bin` of workspace package `package`, in the profile directory of the
/// running test, built first if it is not there.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = profile_dir.join(bin);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "cannot build the {bin} binary"
        );
    }
    path
}

/// A port that was free a moment ago on 127.0.0.1, for UDP.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A port that was free a moment ago on 127.0.0.1, for TCP.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A running `icebreaker serve`, killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its UDP listen address.
    pub addr: SocketAddr,
    /// Its metrics endpoint.
    pub metrics: SocketAddr,
    /// What it printed before serving: addresses, credentials, the iceServers snippet.
    pub banner: Vec<String>,
}

impl Server {
    /// Starts the server on a free loopback port with a metrics endpoint and a small relay
    /// port range of its own, plus `extra` flags; returns once it is serving.
    pub fn start(extra: &[&str]) -> Server {
        let port = free_udp_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Server::start_on(addr, extra)
    }

    /// As [`Server::start`], on a given listen address.
    pub fn start_on(addr: SocketAddr, extra: &[&str]) -> Server {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        // Spread relay ranges by listen port so that servers of parallel tests never compete.
        let relay_base = 20_000 + (addr.port() % 1_000) * 40;
        let mut child = Command::new(icebreaker_bin())
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--metrics", &metrics.to_string()])
            .args([
                "--relay-ports",
                &format!("{relay_base}-{}", relay_base + 39),
            ])
            .args(["--threads", "2", "--drain-timeout", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start icebreaker: {e}"));
        let Some(stdout) = child.stdout.take() else {
            panic!("stdout is piped");
        };
        let (lines_tx, lines_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !banner.iter().any(|l| l.starts_with("iceServers")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => banner.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("icebreaker printed no banner; got {banner:?}");
                }
            }
        }
        Server {
            child,
            addr,
            metrics,
            banner,
        }
    }

    /// Fetches `path` from the metrics endpoint: the status line and the body.
    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.metrics)
            .unwrap_or_else(|e| panic!("metrics endpoint: {e}"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(request.as_bytes());
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body
    }

    /// The value of one series in `/metrics`, 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let body = self.http_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP echo peer on `ip` (port chosen by the system), answering every datagram to its
/// sender, for as long as the test process runs.
pub fn echo_peer(ip: [u8; 4]) -> SocketAddr {
    let socket = UdpSocket::bind(SocketAddr::from((ip, 0)))
        .unwrap_or_else(|e| panic!("cannot bind the echo peer: {e}"));
    let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
    thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Whether a tool from outside the project is installed. `scripts/test` installs every one and
/// sets `ICEBREAKER_REQUIRE_TOOLS=1`, so there a missing tool fails the test; a developer's
/// plain `cargo test` without it skips the test with a message instead.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        missing(name, "not installed (scripts/test installs it)");
    }
    found
}

/// Reports that a test cannot run because `requirement` is missing, and why: a failure under
/// `scripts/test` (which sets `ICEBREAKER_REQUIRE_TOOLS=1` after installing everything), a
/// skip with a message in a developer's plain `cargo test`.
pub fn missing(requirement: &str, why: &str) {
    assert!(
        std::env::var_os("ICEBREAKER_REQUIRE_TOOLS").is_none(),
        "{requirement} is required: {why}"
    );
    eprintln!("skipped: {requirement}: {why}");
}

/// A self-signed certificate and its key, written as PEM files, for TLS tests: the server
/// loads the files and the client trusts `cert_pem`.
pub struct TestCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (ECDSA P-256, PKCS#8), PEM.
    pub key_pem: String,
    /// Where the certificate was written.
    pub cert_path: PathBuf,
    /// Where the key was written.
    pub key_path: PathBuf,
}

/// Makes a self-signed certificate valid for `names` (DNS names or IP addresses) and writes it
/// into `dir` as `cert.pem` and `key.pem`.
pub fn test_certificate(dir: &std::path::Path, names: &[&str]) -> TestCertificate {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .unwrap_or_else(|e| panic!("cannot make a test certificate: {e}"));
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key_path, &key_pem).unwrap_or_else(|e| panic!("{e}"));
    TestCertificate {
        cert_pem,
        key_pem,
        cert_path,
        key_path,
    }
}

/// The README's examples compile and run as doc tests, here where every crate they use is a
/// dependency.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
