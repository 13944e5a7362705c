//! Shared pieces of the end-to-end and interop tests: the real `icebreaker` binary started on
//! loopback, a UDP echo peer, free ports, and the rule for tests that need a tool from outside
//! the project (coturn's, Chromium).

// Test support: a broken setup must stop the test loudly.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod alloc_counter;
pub mod dtls_client;
pub mod stun_client;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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
        let loopback = [std::net::Ipv4Addr::LOCALHOST.into()];
        // A port free a moment ago may be taken before the server binds it (by an outgoing
        // connection of another test, whose local ports come from the same range): a server
        // that exits at start gets another port.
        for _ in 0..2 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port(&loopback)));
            if let Ok(server) = Server::try_start_on(addr, extra) {
                return server;
            }
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port(&loopback)));
        Server::start_on(addr, extra)
    }

    /// As [`Server::start`], on a given listen address.
    pub fn start_on(addr: SocketAddr, extra: &[&str]) -> Server {
        Server::try_start_on(addr, extra).unwrap_or_else(|why| panic!("{why}"))
    }

    /// As [`Server::start_on`]; when the server exits or prints no banner: why.
    fn try_start_on(addr: SocketAddr, extra: &[&str]) -> Result<Server, String> {
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
        let lines_rx = stdout_lines(&mut child);
        let mut banner: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !banner.iter().any(|l| l.starts_with("iceServers")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => banner.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "icebreaker on {addr} printed no banner ({status}); got {banner:?}"
                    ));
                }
            }
        }
        Ok(Server {
            child,
            addr,
            metrics,
            banner,
        })
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

/// A running `icebreaker signal` (the WebSocket signaling relay) on a free loopback port,
/// killed when dropped.
pub struct SignalRelay {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl SignalRelay {
    /// Starts it on a port the system picks (so that no other test can take it first) and
    /// waits until it says which.
    pub fn start() -> SignalRelay {
        let mut child = Command::new(icebreaker_bin())
            .args(["signal", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start icebreaker signal: {e}"));
        let rx = stdout_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // "... signaling relay on ws://127.0.0.1:PORT/ROOM"
                    let listening = line
                        .split_once("ws://")
                        .and_then(|(_, rest)| rest.split_once('/'))
                        .and_then(|(addr, _)| addr.parse().ok());
                    if let Some(addr) = listening {
                        return SignalRelay { child, addr };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("icebreaker signal did not say where it listens");
                }
            }
        }
    }

    /// A fresh room URL, unique within this test process.
    pub fn room(&self, name: &str) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("ws://{}/{name}-{}-{n}", self.addr, std::process::id())
    }
}

impl Drop for SignalRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running program whose standard output and error are collected as they come, for the
/// end-to-end tests that run ice-peer; killed when dropped.
pub struct Process {
    /// The process.
    pub child: Child,
    name: String,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

/// How a [`Process`] ended, with everything it printed.
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Finished {
    /// The exit code, `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Process {
    /// Starts `program` with `args`, standard input closed.
    pub fn start<I, S>(program: &Path, args: I) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            panic!("output is piped");
        };
        Process {
            child,
            name,
            stdout: read_all(stdout),
            stderr: read_all(stderr),
        }
    }

    /// Waits for the exit, at most `bound`; a process still running then fails the test.
    pub fn wait(mut self, bound: Duration) -> Finished {
        let deadline = Instant::now() + bound;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let stderr = self.stderr.recv_timeout(Duration::from_secs(5));
                panic!(
                    "{} did not end within {bound:?}; stderr:\n{stderr:?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Finished {
            status,
            stdout: self.stdout.recv_timeout(bound).unwrap_or_default(),
            stderr: self.stderr.recv_timeout(bound).unwrap_or_default(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything `from` yields until its end, read on a thread of its own.
fn read_all(mut from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// Waits until something accepts TCP connections on `addr`, at most 15 seconds; `what` names
/// it in the failure.
pub fn wait_for_tcp(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not accept TCP connections on {addr}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Which listeners a test's coturn `turnserver` gets, beside its user `alice:secret` in realm
/// `example.org` on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct CoturnListeners<'a> {
    /// UDP on the listening port.
    pub udp: bool,
    /// TCP on the same port.
    pub tcp: bool,
    /// TLS on a port of its own, with a self-signed certificate for localhost and 127.0.0.1.
    pub tls: bool,
    /// DTLS over UDP on a port of its own (coturn's TLS listening port, shared with TLS when
    /// both are on), with the same certificate.
    pub dtls: bool,
    /// Also listen on 127.0.0.2, which gives coturn its RFC 5780 alternate address.
    pub rfc5780: bool,
    /// Further flags, such as `--allow-loopback-peers`.
    pub extra: &'a [&'a str],
}

/// A coturn `turnserver` on loopback, stopped by its PID when dropped.
pub struct Coturn {
    child: Child,
    dir: PathBuf,
    /// The UDP and TCP listening address on 127.0.0.1.
    pub addr: SocketAddr,
    /// The TLS listening address, when it has one.
    pub tls: Option<SocketAddr>,
    /// The DTLS listening address, when it has one.
    pub dtls: Option<SocketAddr>,
    /// The certificate of the TLS and DTLS listeners, trusted with `--ca`.
    pub cert: Option<TestCertificate>,
}

impl Coturn {
    /// Starts it with `listeners` and returns once each of them answers.
    pub fn start(listeners: CoturnListeners<'_>) -> Coturn {
        Coturn::start_with_certificate(listeners, |dir| {
            test_certificate(dir, &["localhost", "127.0.0.1"])
        })
    }

    /// As [`Coturn::start`], with the certificate `make` writes into the directory it is given
    /// for TLS and DTLS.
    pub fn start_with_certificate(
        listeners: CoturnListeners<'_>,
        make: impl FnOnce(&Path) -> TestCertificate,
    ) -> Coturn {
        // Free for TCP too: coturn listens on the same port with both.
        let port = free_port(&[std::net::Ipv4Addr::LOCALHOST.into()]);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir =
            std::env::temp_dir().join(format!("icebreaker-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        // Above the kernel's ephemeral ports and the relay ranges `Server` gives icebreaker.
        let relay_base = 61_000 + (port % 200) * 20;
        let mut command = Command::new("turnserver");
        command
            .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay_base}"))
            .arg(format!("--max-port={}", relay_base + 19))
            .args([
                "--user=alice:secret",
                "--realm=example.org",
                "--lt-cred-mech",
            ])
            .arg("--no-cli")
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .args(["--simple-log", "--no-stdout-log"]);
        if listeners.rfc5780 {
            command.arg("--listening-ip=127.0.0.2");
        }
        if !listeners.udp {
            command.arg("--no-udp");
        }
        if !listeners.tcp {
            command.arg("--no-tcp");
        }
        let cert = (listeners.tls || listeners.dtls).then(|| {
            let cert = make(&dir);
            let secure = free_port(&[std::net::Ipv4Addr::LOCALHOST.into()]);
            command
                .arg(format!("--tls-listening-port={secure}"))
                .arg(format!("--cert={}", cert.cert_path.display()))
                .arg(format!("--pkey={}", cert.key_path.display()));
            (SocketAddr::from(([127, 0, 0, 1], secure)), cert)
        });
        let secure = cert.as_ref().map(|(addr, _)| *addr);
        let tls = secure.filter(|_| listeners.tls);
        let dtls = secure.filter(|_| listeners.dtls);
        if tls.is_none() {
            command.arg("--no-tls");
        }
        if dtls.is_none() {
            command.arg("--no-dtls");
        }
        let cert = cert.map(|(_, cert)| cert);
        let child = command
            .args(listeners.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start turnserver: {e}"));
        let coturn = Coturn {
            child,
            dir,
            addr,
            tls,
            dtls,
            cert,
        };
        if listeners.tcp {
            wait_for_tcp(coturn.addr, "turnserver");
        }
        if let Some(tls) = coturn.tls {
            wait_for_tcp(tls, "turnserver's TLS listener");
        }
        if listeners.udp {
            coturn.wait_for_binding();
        }
        coturn
    }

    /// Waits for a Binding answer over UDP: coturn prints nothing useful to stdout.
    fn wait_for_binding(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
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

    /// The PEM file of its certificate, when it serves TLS or DTLS.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert.as_ref().map(|c| c.cert_path.as_path())
    }

    /// The DTLS listening address; panics when it serves no DTLS.
    pub fn dtls_addr(&self) -> SocketAddr {
        self.dtls
            .unwrap_or_else(|| panic!("this turnserver was started without DTLS"))
    }

    /// Kills the server now, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// The lines `child` prints on its piped stdout, read on a thread of their own until it
/// closes, so that the pipe never fills up and stalls the child.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let Some(stdout) = child.stdout.take() else {
        panic!("stdout is piped");
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
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

/// What a tool from outside the project did: whether it exited with 0, its exit code, and its
/// stdout followed by its stderr.
pub struct ToolRun {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Its stdout, then its stderr.
    pub output: String,
}

/// Runs `program` with `args`, killing it if it outlives `deadline`, which fails the test: a
/// hung tool must fail the run rather than block it.
pub fn run_tool(program: &str, args: &[&str], deadline: Duration) -> ToolRun {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let stdout = drain_pipe(child.stdout.take().expect("piped"));
    let stderr = drain_pipe(child.stderr.take().expect("piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    let Some(status) = status else {
        panic!(
            "{program} {} hung for {deadline:?} and was killed; it printed:\n{output}",
            args.join(" ")
        );
    };
    ToolRun {
        success: status.success(),
        code: status.code(),
        output,
    }
}

/// Reads a pipe to its end on a thread of its own, so that a chatty tool never blocks on it.
fn drain_pipe(mut pipe: impl std::io::Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `turnutils_peer`, coturn's UDP echo peer, on ports `port` and `port + 1` of `ip` (it binds
/// both: `turnutils_uclient` sends its RTCP stream to the second), killed by PID when dropped.
pub struct TurnutilsPeer {
    child: Child,
    /// The IP it listens on.
    pub ip: std::net::IpAddr,
    /// Its first port; it listens on the next one too.
    pub port: u16,
}

impl TurnutilsPeer {
    /// Starts the peer on 127.0.0.1; see [`TurnutilsPeer::start_on`].
    pub fn start() -> TurnutilsPeer {
        TurnutilsPeer::start_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Starts the peer on a free pair of ports of `ip` and returns once it echoes on both.
    pub fn start_on(ip: std::net::IpAddr) -> TurnutilsPeer {
        for _ in 0..10 {
            let port = free_udp_port_pair(ip);
            let child = Command::new("turnutils_peer")
                .args(["-L", &ip.to_string(), "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start turnutils_peer: {e}"));
            let mut peer = TurnutilsPeer { child, ip, port };
            if peer.echoes() {
                return peer;
            }
            // Dropping it kills it; try another pair.
        }
        panic!("turnutils_peer never echoed on {ip}");
    }

    /// Whether the peer answers a datagram on both of its ports within five seconds.
    fn echoes(&mut self) -> bool {
        let probe = UdpSocket::bind(SocketAddr::new(self.ip, 0)).expect("bind the probe");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        for port in [self.port, self.port + 1] {
            let to = SocketAddr::new(self.ip, port);
            loop {
                if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
                    return false;
                }
                let _ = probe.send_to(b"icebreaker probe", to);
                if matches!(probe.recv_from(&mut buf), Ok((16, from)) if from == to) {
                    break;
                }
            }
        }
        true
    }
}

impl Drop for TurnutilsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port `p` of `ip` with `p + 1` free as well, a moment ago.
fn free_udp_port_pair(ip: std::net::IpAddr) -> u16 {
    for _ in 0..100 {
        let Ok(first) = UdpSocket::bind(SocketAddr::new(ip, 0)) else {
            continue;
        };
        let port = first.local_addr().expect("local address").port();
        if port < u16::MAX && UdpSocket::bind(SocketAddr::new(ip, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no pair of free UDP ports on {ip}");
}

/// The final statistics `turnutils_uclient` prints.
#[derive(Debug, PartialEq)]
pub struct UclientStats {
    /// Messages sent, all clients together.
    pub sent: u64,
    /// Messages that came back.
    pub received: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Bytes that came back.
    pub received_bytes: u64,
    /// Messages that never came back.
    pub lost: u64,
    /// Messages the tool could not send.
    pub send_dropped: u64,
}

impl UclientStats {
    /// Reads the last `start_mclient: tot_send_msgs=`, `start_mclient: tot_send_bytes ~` and
    /// `Total lost packets` lines of uclient's output.
    pub fn parse(output: &str) -> UclientStats {
        let last = |marker: &str| {
            output
                .lines()
                .rev()
                .find(|l| l.contains(marker))
                .unwrap_or_else(|| panic!("uclient printed no {marker:?} line:\n{output}"))
        };
        let messages = last("start_mclient: tot_send_msgs=");
        let bytes = last("start_mclient: tot_send_bytes ~");
        let loss = last("Total lost packets");
        UclientStats {
            sent: number_after(messages, "tot_send_msgs="),
            received: number_after(messages, "tot_recv_msgs="),
            sent_bytes: number_after(bytes, "tot_send_bytes ~ "),
            received_bytes: number_after(bytes, "tot_recv_bytes ~ "),
            lost: number_after(loss, "Total lost packets "),
            send_dropped: number_after(loss, "total send dropped "),
        }
    }
}

/// The decimal number right after `key` in `line`.
fn number_after(line: &str, key: &str) -> u64 {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
        + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key:?} in {line:?}"))
}

/// The value of `series` on `server` once it reaches `at_least`, or whatever it is after two
/// seconds: a counter may be bumped just after the answer that the test saw.
pub fn metric_reaching(server: &Server, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let value = server.metric(series);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `series` on `server` once it equals `want`, or whatever it is after five seconds: a gauge
/// that must come back down, or a counter that must reach an exact count.
pub fn metric_settling(server: &Server, series: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = server.metric(series);
        if value == want || Instant::now() > deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The series counting connections on `transport` that the server closed for `reason`.
pub fn connections_closed(transport: stun_client::Transport, reason: &str) -> String {
    format!(
        "icebreaker_connections_closed_total{{transport=\"{}\",reason=\"{reason}\"}}",
        transport.label()
    )
}

/// A port free a moment ago for both UDP and TCP on every one of `ips`: the server listens on
/// the same port with both.
pub fn free_port(ips: &[std::net::IpAddr]) -> u16 {
    for _ in 0..50 {
        let Ok(first) = UdpSocket::bind((ips[0], 0)) else {
            continue;
        };
        let port = first.local_addr().expect("bound").port();
        let udp: Vec<_> = ips[1..]
            .iter()
            .map(|ip| UdpSocket::bind((*ip, port)))
            .collect();
        let tcp: Vec<_> = ips
            .iter()
            .map(|ip| std::net::TcpListener::bind((*ip, port)))
            .collect();
        if udp.iter().all(Result::is_ok) && tcp.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no port free for UDP and TCP on {ips:?}");
}

/// A running `icebreaker serve` on UDP and TCP, and on TLS on a port of its own with a
/// self-signed certificate for [`TlsServer::NAME`], kept in a directory removed on drop. The
/// certificate is ECDSA, so DTLS listens too, by default on the TLS address over UDP.
pub struct TlsServer {
    /// The server; its `addr` takes UDP and TCP.
    pub server: Server,
    /// The TLS listen address.
    pub tls_addr: SocketAddr,
    /// The DTLS listen address: the TLS one, over UDP.
    pub dtls_addr: SocketAddr,
    /// The certificate the server was started with (its files may be rewritten).
    pub cert: TestCertificate,
    /// The directory of the certificate files.
    pub dir: PathBuf,
    /// A client configuration trusting the certificate, TLS 1.2 and 1.3, ALPN `stun.turn`.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

impl TlsServer {
    /// The name the certificate is made for.
    pub const NAME: &str = "localhost";

    /// Starts a server on a free port of 127.0.0.1 with `extra` flags; `name` tells the
    /// certificate directories of tests apart.
    pub fn start(name: &str, extra: &[&str]) -> TlsServer {
        let port = free_port(&[std::net::Ipv4Addr::LOCALHOST.into()]);
        TlsServer::start_on(name, SocketAddr::from(([127, 0, 0, 1], port)), extra)
    }

    /// As [`TlsServer::start`], listening on `addr` for UDP and TCP.
    pub fn start_on(name: &str, addr: SocketAddr, extra: &[&str]) -> TlsServer {
        let dir = std::env::temp_dir().join(format!(
            "icebreaker-tls-server-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let cert = test_certificate(&dir, &[TlsServer::NAME]);
        // Free for UDP too: DTLS listens on the same address by default.
        let tls_addr = SocketAddr::from((
            [127, 0, 0, 1],
            free_port(&[std::net::Ipv4Addr::LOCALHOST.into()]),
        ));
        let tls_listen = tls_addr.to_string();
        let cert_path = cert.cert_path.to_str().expect("UTF-8 path").to_owned();
        let key_path = cert.key_path.to_str().expect("UTF-8 path").to_owned();
        let mut flags = vec![
            "--tls-listen",
            &tls_listen,
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ];
        flags.extend_from_slice(extra);
        let server = Server::start_on(addr, &flags);
        let tls = stun_client::tls_config(&[&cert.cert_pem], rustls::ALL_VERSIONS);
        TlsServer {
            server,
            tls_addr,
            dtls_addr: tls_addr,
            cert,
            dir,
            tls,
        }
    }

    /// A new client of the server over `transport`.
    pub fn client(&self, transport: stun_client::Transport) -> stun_client::StunClient {
        use stun_client::{StunClient, Transport};
        match transport {
            Transport::Udp => StunClient::udp(self.server.addr),
            Transport::Tcp => StunClient::tcp(self.server.addr),
            Transport::Tls => StunClient::tls(self.tls_addr, &self.tls, TlsServer::NAME),
            Transport::Dtls => StunClient::dtls(self.dtls_addr),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The README's examples compile and run as doc tests, here where every crate they use is a
/// dependency.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
