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

/// coturn on loopback for the stream tests: loopback peers allowed (so that the probe's two
/// allocations can reach each other, and the audit has something to find), UDP and TCP on one
/// port, and with `tls` TLS on a port of its own.
pub fn start_coturn(tls: bool) -> icebreaker_tests::Coturn {
    icebreaker_tests::Coturn::start(icebreaker_tests::CoturnListeners {
        udp: true,
        tcp: true,
        tls,
        rfc5780: false,
        extra: &["--allow-loopback-peers"],
    })
}

/// coturn on loopback serving DTLS, for the DTLS tests: the shared launcher
/// ([`icebreaker_tests::Coturn`]) turns DTLS off. UDP on `addr`; with `dtls`, DTLS on a port of
/// its own (coturn's TLS listening port, its TCP side turned off) with a self-signed ECDSA
/// P-256 certificate for localhost and 127.0.0.1; without it, no DTLS anywhere. Loopback peers
/// are allowed, as in [`start_coturn`]. Stopped when dropped.
pub struct DtlsCoturn {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// The plain UDP listening address.
    pub addr: std::net::SocketAddr,
    /// The DTLS listening address.
    pub dtls: std::net::SocketAddr,
    /// The certificate the DTLS listener serves.
    pub cert: icebreaker_tests::TestCertificate,
}

impl DtlsCoturn {
    /// Starts it and returns once it answers a Binding request over UDP.
    pub fn start(dtls: bool) -> DtlsCoturn {
        DtlsCoturn::serving(dtls, |dir| {
            icebreaker_tests::test_certificate(dir, &["localhost", "127.0.0.1"])
        })
    }

    /// Starts it with the certificate `make` writes into the directory it is given.
    pub fn serving(
        dtls: bool,
        make: impl FnOnce(&std::path::Path) -> icebreaker_tests::TestCertificate,
    ) -> DtlsCoturn {
        use std::net::{SocketAddr, UdpSocket};
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        let port = icebreaker_tests::free_udp_port();
        let dtls_port = icebreaker_tests::free_udp_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!(
            "ice-probe-dtls-coturn-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let cert = make(&dir);
        // Relay ports of their own, as the shared launcher picks them.
        let relay_base = 61_000 + (port % 200) * 20;
        let mut command = Command::new("turnserver");
        command
            .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--tls-listening-port={dtls_port}"))
            .arg(format!("--cert={}", cert.cert_path.display()))
            .arg(format!("--pkey={}", cert.key_path.display()))
            .arg(format!("--min-port={relay_base}"))
            .arg(format!("--max-port={}", relay_base + 19))
            .args([
                "--user=alice:secret",
                "--realm=example.org",
                "--lt-cred-mech",
                "--allow-loopback-peers",
                "--no-tcp",
                "--no-tls",
                "--no-cli",
            ])
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .args(["--simple-log", "--no-stdout-log"]);
        if !dtls {
            command.arg("--no-dtls");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start turnserver: {e}"));
        let coturn = DtlsCoturn {
            child,
            dir,
            addr,
            dtls: SocketAddr::from(([127, 0, 0, 1], dtls_port)),
            cert,
        };
        // coturn opens every listener before it answers on any.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
        let request = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let _ = socket.send_to(&request, addr);
            let mut buf = [0u8; 512];
            if socket.recv_from(&mut buf).is_ok() {
                return coturn;
            }
        }
        panic!("turnserver did not answer on {addr}");
    }
}

impl Drop for DtlsCoturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
