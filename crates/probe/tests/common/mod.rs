//! What the probe's integration tests share.

#![allow(dead_code, unreachable_pub, clippy::panic)]

use ice_probe::report::Check;

/// The check named `name`; the test fails without one.
pub fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:#?}"))
}

/// The value of `check`'s metric `name`; the test fails without one.
pub fn metric(check: &Check, name: &str) -> f64 {
    check
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} metric in {check:#?}"))
        .value
}

/// A coturn `turnserver` on loopback for the stream tests, stopped by its PID when dropped:
/// long-term credentials `alice:secret`, loopback peers allowed (so that the probe's two
/// allocations can reach each other, and the audit has something to find), UDP and TCP on
/// `port`, and with a certificate TLS on `tls_port` (coturn also takes TLS on `port`).
pub struct Coturn {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// The UDP and TCP listening address.
    pub addr: std::net::SocketAddr,
    /// The TLS listening address, when started with a certificate.
    pub tls_addr: Option<std::net::SocketAddr>,
    /// The certificate's PEM file, trusted with `--ca`.
    pub cert: Option<std::path::PathBuf>,
}

impl Coturn {
    /// coturn with TLS on a second port with a self-signed certificate for localhost and
    /// 127.0.0.1 when `tls`; without TLS at all (a plain TCP port) otherwise.
    pub fn start(tls: bool) -> Coturn {
        use std::process::{Command, Stdio};
        let port = icebreaker_tests::free_udp_port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let dir =
            std::env::temp_dir().join(format!("ice-probe-streams-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let relay_base = 50_000 + (port % 500) * 20;
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
            .args(["--allow-loopback-peers", "--no-dtls", "--no-cli"])
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .args(["--simple-log", "--no-stdout-log"]);
        let (tls_addr, cert) = if tls {
            let made = icebreaker_tests::test_certificate(&dir, &["localhost", "127.0.0.1"]);
            let tls_port = icebreaker_tests::free_tcp_port();
            command
                .arg(format!("--tls-listening-port={tls_port}"))
                .arg(format!("--cert={}", made.cert_path.display()))
                .arg(format!("--pkey={}", made.key_path.display()));
            (
                Some(std::net::SocketAddr::from(([127, 0, 0, 1], tls_port))),
                Some(made.cert_path),
            )
        } else {
            command.arg("--no-tls");
            (None, None)
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start turnserver: {e}"));
        let coturn = Coturn {
            child,
            dir,
            addr,
            tls_addr,
            cert,
        };
        coturn.wait_until_serving();
        coturn
    }

    /// Waits until the TCP (and TLS) ports accept connections and UDP answers a Binding.
    fn wait_until_serving(&self) {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + Duration::from_secs(15);
        for addr in std::iter::once(self.addr).chain(self.tls_addr) {
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "turnserver does not listen on {addr}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
        let request = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
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
