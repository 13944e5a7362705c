//! Interop with coturn's client tools (Debian package `coturn`, 4.6.1) against the real
//! `icebreaker serve` on loopback: `turnutils_uclient` relaying to `turnutils_peer` with
//! long-term and TURN REST credentials, `turnutils_stunclient` for Binding, and
//! `turnutils_natdiscovery` for the RFC 5780 behaviour tests against a server with an
//! `--other-address`. uclient relays over UDP, TCP (`-t`), TLS (`-t -S`) and DTLS (`-S`), and
//! through RFC 6062 TCP allocations (`-T`, over TCP and TLS).
//!
//! Over DTLS, uclient draws each session's OpenSSL method at random between DTLS 1.0 alone and
//! DTLS 1.2 (ECDHE-ECDSA suites), and draws again when a handshake fails. The server refuses
//! DTLS 1.0 (RFC 8996) with an immediate `protocol_version` alert: a silent drop would leave
//! uclient waiting out its handshake timeout, and the run would hang.
//!
//! Every tool runs under a deadline and is killed when it passes it, so a hang fails the test
//! instead of blocking the run. A missing tool skips the test (fails it under
//! `ICEBREAKER_REQUIRE_TOOLS`, which `scripts/test` sets).
//!
//! What the tools print, and what these tests read of it:
//! - uclient ends with `start_mclient: tot_send_msgs=N, tot_recv_msgs=N`,
//!   `start_mclient: tot_send_bytes ~ N, tot_recv_bytes ~ N` and
//!   `Total lost packets N (P%), total send dropped N (P%)`; it exits 255 when an Allocate,
//!   ChannelBind or CreatePermission fails.
//! - stunclient prints `IPv4. UDP reflexive addr: IP:PORT`.
//! - natdiscovery prints `Response origin: : IP:PORT`, `Other addr: : IP:PORT`,
//!   `UDP reflexive addr: IP:PORT` per response and a verdict per test, such as
//!   `NAT with Endpoint Independent Filtering!`.
//!
//! coturn's client draws channel numbers at random from 0x4000-0x7FFF, RFC 5766's range, where
//! RFC 8656 allows only 0x4000-0x4FFF: the servers for uclient run with `--rfc5766-channels`,
//! the switch that exists for such clients. Without it three binds in four get 400.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use icebreaker_tests::{
    Server, ToolRun, TurnutilsPeer, UclientStats, free_port, free_udp_port, have_tool,
    metric_reaching, run_tool, test_certificate,
};

/// Longest any one tool may run. uclient's runs take 4 to 7 seconds on loopback.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);
/// uclient clients (`-m`) and messages per client (`-n`).
const CLIENTS: u64 = 4;
const MESSAGES: u64 = 50;
/// A TURN REST secret of at least 16 bytes.
const REST_SECRET: &str = "coturn-interop-rest-secret";

const TO_PEER: &str = r#"icebreaker_turn_relayed_packets_total{direction="client_to_peer"}"#;
const TO_CLIENT: &str = r#"icebreaker_turn_relayed_packets_total{direction="peer_to_client"}"#;
const BYTES_TO_PEER: &str = r#"icebreaker_turn_relayed_bytes_total{direction="client_to_peer"}"#;
const BYTES_TO_CLIENT: &str = r#"icebreaker_turn_relayed_bytes_total{direction="peer_to_client"}"#;

/// A server for uclient: long-term user alice, loopback peers allowed, and a user quota
/// above uclient's needs (each client also makes and deletes a probe allocation).
fn uclient_server(auth: &[&str]) -> Server {
    let mut flags = vec![
        "--allow-peer",
        "127.0.0.0/8",
        "--user-quota",
        "100",
        "--rfc5766-channels",
    ];
    flags.extend_from_slice(auth);
    Server::start(&flags)
}

/// Runs uclient with `mode` flags and `credentials` through `server` to `peer`: `CLIENTS`
/// clients of `MESSAGES` messages of `length` bytes each.
fn uclient(
    server: &Server,
    peer: &TurnutilsPeer,
    mode: &[&str],
    credentials: &[&str],
    length: u64,
) -> ToolRun {
    uclient_on(server.addr.port(), peer, mode, credentials, length)
}

/// As [`uclient`], to the server's port `server_port` (its TLS port, say).
fn uclient_on(
    server_port: u16,
    peer: &TurnutilsPeer,
    mode: &[&str],
    credentials: &[&str],
    length: u64,
) -> ToolRun {
    let (clients, messages, length) = (
        CLIENTS.to_string(),
        MESSAGES.to_string(),
        length.to_string(),
    );
    let (peer_port, server_port) = (peer.port.to_string(), server_port.to_string());
    let mut args: Vec<&str> = mode.to_vec();
    args.extend_from_slice(credentials);
    args.extend_from_slice(&[
        "-m",
        &clients,
        "-n",
        &messages,
        "-l",
        &length,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-p",
        &server_port,
        "127.0.0.1",
    ]);
    run_tool("turnutils_uclient", &args, TOOL_DEADLINE)
}

/// How uclient reaches the server.
#[derive(Clone, Copy, Debug)]
enum Over {
    Udp,
    /// `-t`: TCP to the listen port.
    Tcp,
    /// `-t -S`: TLS to the TLS port, with a self-signed certificate (uclient does not verify).
    Tls,
    /// `-S`: DTLS to the same port over UDP, the default DTLS address.
    Dtls,
}

/// uclient in `mode` relays every message there and back over UDP, and the server counted
/// each one.
fn relays_without_loss(mode: &[&str], length: u64) {
    relays_without_loss_over(Over::Udp, mode, length);
}

/// As [`relays_without_loss`], with uclient reaching the server `over` a transport.
fn relays_without_loss_over(over: Over, mode: &[&str], length: u64) {
    if !(have_tool("turnutils_uclient") && have_tool("turnutils_peer")) {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "icebreaker-uclient-{over:?}-{length}-{}",
        std::process::id()
    ));
    let certificate = test_certificate(&dir, &["localhost", "127.0.0.1"]);
    // Free for UDP too: DTLS listens on the TLS address by default.
    let tls_port = free_port(&[std::net::Ipv4Addr::LOCALHOST.into()]);
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port)).to_string();
    let (cert, key) = (
        certificate.cert_path.to_string_lossy().into_owned(),
        certificate.key_path.to_string_lossy().into_owned(),
    );
    let mut flags = vec!["--user", "alice:secret"];
    if let Over::Tls | Over::Dtls = over {
        flags.extend(["--tls-listen", &tls, "--tls-cert", &cert, "--tls-key", &key]);
    }
    let server = uclient_server(&flags);
    let peer = TurnutilsPeer::start();
    let (prefix, port): (&[&str], u16) = match over {
        Over::Udp => (&[], server.addr.port()),
        Over::Tcp => (&["-t"], server.addr.port()),
        Over::Tls => (&["-t", "-S"], tls_port),
        Over::Dtls => (&["-S"], tls_port),
    };
    let mode: Vec<&str> = prefix.iter().chain(mode).copied().collect();
    let mode = mode.as_slice();
    let ran = uclient_on(port, &peer, mode, &["-u", "alice", "-w", "secret"], length);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ran.success,
        "turnutils_uclient {mode:?} -l {length} exited with {:?}:\n{}",
        ran.code, ran.output
    );
    let expected = CLIENTS * MESSAGES;
    assert_eq!(
        UclientStats::parse(&ran.output),
        UclientStats {
            sent: expected,
            received: expected,
            sent_bytes: expected * length,
            received_bytes: expected * length,
            lost: 0,
            send_dropped: 0,
        },
        "uclient {mode:?} -l {length}:\n{}",
        ran.output
    );
    assert_relayed(&server, expected, length);
    let stream = match over {
        Over::Udp => None,
        Over::Tcp => Some("tcp"),
        Over::Tls => Some("tls"),
        Over::Dtls => Some("dtls"),
    };
    if let Some(transport) = stream {
        let series = format!("icebreaker_connections_opened_total{{transport=\"{transport}\"}}");
        assert!(
            server.metric(&series) >= CLIENTS as f64,
            "every client came over {transport}"
        );
    }
}

/// The server counted `packets` datagrams of `length` bytes each way, no more, no fewer.
fn assert_relayed(server: &Server, packets: u64, length: u64) {
    let (packets, bytes) = (packets as f64, (packets * length) as f64);
    for (series, want) in [
        (TO_PEER, packets),
        (TO_CLIENT, packets),
        (BYTES_TO_PEER, bytes),
        (BYTES_TO_CLIENT, bytes),
    ] {
        assert_eq!(metric_reaching(server, series, want), want, "{series}");
    }
}

#[test]
fn uclient_relays_100_byte_send_indications_without_loss() {
    relays_without_loss(&["-c", "-s"], 100);
}

#[test]
fn uclient_relays_1200_byte_send_indications_without_loss() {
    relays_without_loss(&["-c", "-s"], 1200);
}

#[test]
fn uclient_relays_100_byte_channel_data_without_loss() {
    relays_without_loss(&["-c"], 100);
}

#[test]
fn uclient_relays_1200_byte_channel_data_without_loss() {
    relays_without_loss(&["-c"], 1200);
}

#[test]
fn uclient_over_tcp_relays_channel_data_and_send_indications_without_loss() {
    relays_without_loss_over(Over::Tcp, &["-c"], 100);
    relays_without_loss_over(Over::Tcp, &["-c", "-s"], 1200);
}

#[test]
fn uclient_over_tls_relays_channel_data_and_send_indications_without_loss() {
    relays_without_loss_over(Over::Tls, &["-c"], 1200);
    relays_without_loss_over(Over::Tls, &["-c", "-s"], 100);
}

#[test]
fn uclient_over_dtls_relays_channel_data_and_send_indications_without_loss() {
    relays_without_loss_over(Over::Dtls, &["-c"], 1200);
    relays_without_loss_over(Over::Dtls, &["-c", "-s"], 100);
}

#[test]
fn uclient_relays_rtp_and_rtcp_pairs_through_reserved_even_ports() {
    // Without -c, each client allocates an even port with R set (EVEN-PORT 0x80), then its
    // RTCP allocation from a second socket with the RESERVATION-TOKEN it got. The RTCP Allocate
    // often reaches another worker than the RTP one; the token must work there too. uclient
    // counts and sends its messages on the RTP stream.
    relays_without_loss(&["-s"], 100);
}

#[test]
fn uclient_relays_through_tcp_allocations_without_loss() {
    // `-T -y`: two clients on TCP control connections make TCP allocations (RFC 6062) and
    // relay to each other, with no turnutils_peer: each permits the other's relayed address,
    // one Connects to it, the other gets a ConnectionAttempt, both bind data connections, and
    // every message crosses two splices. The server's two workers often split the control
    // and data connections of a client, so ConnectionBinds are moved between them too.
    tcp_allocations_without_loss(Over::Tcp);
}

#[test]
fn uclient_over_tls_relays_through_tcp_allocations_without_loss() {
    // `-T -y -S`: the same with TLS control and data connections.
    tcp_allocations_without_loss(Over::Tls);
}

/// uclient `-T -y` over TCP or TLS: 2 clients of 20 messages of 100 bytes, none lost.
fn tcp_allocations_without_loss(over: Over) {
    if !have_tool("turnutils_uclient") {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "icebreaker-uclient-tcp-relay-{over:?}-{}",
        std::process::id()
    ));
    let mut flags: Vec<String> = ["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]
        .map(String::from)
        .to_vec();
    let tls_port = free_port(&[std::net::Ipv4Addr::LOCALHOST.into()]);
    let mode = match over {
        Over::Tls => {
            let certificate = test_certificate(&dir, &["localhost", "127.0.0.1"]);
            flags.extend([
                "--tls-listen".into(),
                format!("127.0.0.1:{tls_port}"),
                "--tls-cert".into(),
                certificate.cert_path.to_string_lossy().into_owned(),
                "--tls-key".into(),
                certificate.key_path.to_string_lossy().into_owned(),
                "--dtls-listen".into(),
                "none".into(),
            ]);
            "-T -y -S"
        }
        _ => "-T -y",
    };
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(&flags);
    let port = match over {
        Over::Tls => tls_port,
        _ => server.addr.port(),
    };
    let command = format!("{mode} -n 20 -m 2 -l 100 -u alice -w secret -p {port} 127.0.0.1");
    let args: Vec<&str> = command.split(' ').collect();
    let ran = run_tool("turnutils_uclient", &args, TOOL_DEADLINE);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ran.success,
        "turnutils_uclient {mode} exited with {:?}:\n{}",
        ran.code, ran.output
    );
    // Two clients of 20 messages of 100 bytes, each sent to the other.
    assert_eq!(
        UclientStats::parse(&ran.output),
        UclientStats {
            sent: 40,
            received: 40,
            sent_bytes: 4000,
            received_bytes: 4000,
            lost: 0,
            send_dropped: 0,
        },
        "uclient {mode}:\n{}",
        ran.output
    );
    for direction in ["client_to_peer", "peer_to_client"] {
        let series =
            format!("icebreaker_turn_tcp_relayed_bytes_total{{direction=\"{direction}\"}}");
        assert_eq!(
            metric_reaching(&server, &series, 4000.0),
            4000.0,
            "{series}"
        );
    }
    for origin in ["connect", "peer"] {
        let series =
            format!("icebreaker_turn_peer_connections_opened_total{{origin=\"{origin}\"}}");
        assert!(metric_reaching(&server, &series, 1.0) >= 1.0, "{series}");
    }
}

#[test]
fn uclient_relays_with_turn_rest_credentials_and_fails_with_a_wrong_secret() {
    if !(have_tool("turnutils_uclient") && have_tool("turnutils_peer")) {
        return;
    }
    let server = uclient_server(&["--auth-secret", REST_SECRET]);
    let peer = TurnutilsPeer::start();
    let length = 100;
    // uclient makes the username itself: `-u alice -W S` sends USERNAME "EXPIRY:alice" with
    // EXPIRY one day ahead, and base64(HMAC-SHA1(S, username)) as the password.
    let ran = uclient(
        &server,
        &peer,
        &["-c", "-s"],
        &["-u", "alice", "-W", REST_SECRET],
        length,
    );
    assert!(
        ran.success,
        "uclient -W exited with {:?}:\n{}",
        ran.code, ran.output
    );
    let expected = CLIENTS * MESSAGES;
    let stats = UclientStats::parse(&ran.output);
    assert_eq!(
        (stats.sent, stats.received, stats.lost),
        (expected, expected, 0),
        "{}",
        ran.output
    );
    assert_relayed(&server, expected, length);

    // After the good run: a wrong password draws the per-source failure throttle.
    let wrong = uclient(
        &server,
        &peer,
        &["-c", "-s"],
        &["-u", "alice", "-W", "not-the-secret-at-all"],
        length,
    );
    assert!(
        !wrong.success,
        "uclient with a wrong secret succeeded:\n{}",
        wrong.output
    );
    assert!(
        wrong.output.contains("Cannot complete Allocation"),
        "{}",
        wrong.output
    );
    let bad_integrity = r#"icebreaker_turn_auth_failures_total{reason="bad_integrity"}"#;
    assert!(metric_reaching(&server, bad_integrity, 1.0) >= 1.0);
    assert_relayed(&server, expected, length);
}

#[test]
fn stunclient_gets_its_mapped_address() {
    if !have_tool("turnutils_stunclient") {
        return;
    }
    let server = Server::start(&["--user", "alice:secret"]);
    let port = server.addr.port().to_string();
    let ran = run_tool(
        "turnutils_stunclient",
        &["-p", &port, "127.0.0.1"],
        TOOL_DEADLINE,
    );
    assert!(
        ran.success,
        "stunclient exited with {:?}:\n{}",
        ran.code, ran.output
    );
    let mapped = addresses_after(&ran.output, "UDP reflexive addr: ");
    assert!(!mapped.is_empty(), "no mapped address:\n{}", ran.output);
    for addr in mapped {
        assert_eq!(addr.ip(), server.addr.ip(), "{}", ran.output);
        assert!(
            addr.port() != 0 && addr.port() != server.addr.port(),
            "{}",
            ran.output
        );
    }
    let bindings = r#"icebreaker_stun_binding_requests_total{transport="udp",family="ipv4"}"#;
    assert!(metric_reaching(&server, bindings, 1.0) >= 1.0);
}

/// Every `IP:PORT` printed right after `marker`, in order.
fn addresses_after(output: &str, marker: &str) -> Vec<SocketAddr> {
    output
        .lines()
        .filter_map(|l| l.split_once(marker))
        .map(|(_, rest)| {
            let word = rest.split_whitespace().next().unwrap_or_default();
            word.parse()
                .unwrap_or_else(|_| panic!("not an address after {marker:?}: {rest:?}"))
        })
        .collect()
}

/// A server on 127.0.0.1:P1 with its RFC 5780 other address 127.0.0.2:P2 (every 127/8
/// address is loopback on Linux): it serves all four combinations.
fn rfc5780_server() -> (Server, u16, u16) {
    let primary = free_udp_port();
    let other = loop {
        let port = free_udp_port();
        if port != primary && port != 0 {
            break port;
        }
    };
    let server = Server::start_on(
        SocketAddr::from(([127, 0, 0, 1], primary)),
        &[
            "--user",
            "alice:secret",
            "--other-address",
            &format!("127.0.0.2:{other}"),
        ],
    );
    (server, primary, other)
}

#[test]
fn natdiscovery_finds_endpoint_independent_mapping_and_filtering() {
    if !have_tool("turnutils_natdiscovery") {
        return;
    }
    let (_server, primary, other) = rfc5780_server();
    let port = primary.to_string();
    // -L 127.0.0.1 makes the local address comparable with the mapped one: "No NAT!".
    for extra in [&[][..], &["-P"][..]] {
        let mut args = vec!["-m", "-f", "-L", "127.0.0.1", "-p", &port];
        args.extend_from_slice(extra);
        args.push("127.0.0.1");
        let ran = run_tool("turnutils_natdiscovery", &args, TOOL_DEADLINE);
        let out = &ran.output;
        assert!(
            ran.success,
            "natdiscovery {args:?} exited with {:?}:\n{out}",
            ran.code
        );
        for verdict in [
            "-= Mapping Behavior Discovery =-",
            "No NAT! (Endpoint Independent Mapping)",
            "NAT with Endpoint Independent Mapping!",
            "-= Filtering Behavior Discovery =-",
            "NAT with Endpoint Independent Filtering!",
        ] {
            assert!(out.contains(verdict), "no {verdict:?} in {args:?}:\n{out}");
        }
        for verdict in ["Address Dependent", "Address and Port Dependent"] {
            assert!(!out.contains(verdict), "{verdict:?} in {args:?}:\n{out}");
        }
        // Mapping test II went to the other IP on the primary port; filtering test II asked
        // for a change of IP and port and got it. OTHER-ADDRESS differs from the address a
        // request reached in IP and port, so its port is always the other one.
        let origins = addresses_after(out, "Response origin: : ");
        let expect = |ip: [u8; 4], port: u16| SocketAddr::from((ip, port));
        assert!(origins.contains(&expect([127, 0, 0, 2], primary)), "{out}");
        assert!(origins.contains(&expect([127, 0, 0, 2], other)), "{out}");
        let others = addresses_after(out, "Other addr: : ");
        assert!(!others.is_empty(), "{out}");
        assert!(others.iter().all(|a| a.port() == other), "{out}");
        let mapped = addresses_after(out, "UDP reflexive addr: ");
        let local = addresses_after(out, "Local addr: : ");
        assert_eq!(mapped, local, "{out}");
        assert!(mapped.len() >= 4, "{out}");
    }
}

#[test]
fn stunclient_rfc5780_mode_gets_answers_from_the_other_address() {
    if !have_tool("turnutils_stunclient") {
        return;
    }
    let (_server, primary, other) = rfc5780_server();
    let port = primary.to_string();
    // -f: a plain request, then CHANGE-REQUEST (IP and port) with RESPONSE-PORT, then
    // CHANGE-REQUEST with 1500 bytes of PADDING from a second socket.
    let ran = run_tool(
        "turnutils_stunclient",
        &["-f", "-p", &port, "127.0.0.1"],
        TOOL_DEADLINE,
    );
    let out = &ran.output;
    assert!(
        ran.success,
        "stunclient -f exited with {:?}:\n{out}",
        ran.code
    );
    for n in 1..=3 {
        assert!(out.contains(&format!("RFC 5780 response {n}")), "{out}");
    }
    let origins = addresses_after(out, "Response origin: : ");
    let changed = SocketAddr::from(([127, 0, 0, 2], other));
    assert_eq!(
        origins.iter().filter(|&&a| a == changed).count(),
        2,
        "{out}"
    );
    assert!(
        addresses_after(out, "Other addr: : ").contains(&changed),
        "{out}"
    );
}
