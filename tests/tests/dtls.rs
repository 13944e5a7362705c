//! TURN and STUN over DTLS against the real `icebreaker serve` on loopback, with a blocking
//! client on dimpl's client role (`icebreaker_tests::dtls_client`): Binding and relaying over
//! DTLS 1.2 and 1.3, the allocation deleted with its session, the idle, handshake and
//! connection limits, certificate reload, and the start-up rules (an ECDSA certificate, ports
//! of its own). Relaying without loss and the relay-target deny list over DTLS are in
//! `transports.rs`, beside the other transports.
//!
//! Every wait has a deadline; the servers are killed when a test ends, pass or fail.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::dtls_client::{DtlsClient, DtlsVersion, is_client_hello};
use icebreaker_tests::stun_client::{StunClient, Transport, certificate_der};
use icebreaker_tests::{
    Server, TlsServer, connections_closed as closed, echo_peer, free_port, icebreaker_bin,
    metric_reaching, metric_settling, run_tool, test_certificate,
};

const USER: &str = "alice";
const PASSWORD: &str = "secret";

/// What a relayed packet or an answer may take on loopback.
const WAIT: Duration = Duration::from_secs(3);

fn start(name: &str, extra: &[&str]) -> TlsServer {
    let mut flags = vec!["--user", "alice:secret"];
    flags.extend_from_slice(extra);
    TlsServer::start(name, &flags)
}

fn opened(transport: Transport) -> String {
    format!(
        "icebreaker_connections_opened_total{{transport=\"{}\"}}",
        transport.label()
    )
}

/// `series` once it reaches `want`, or whatever it is after `within`: limits are checked once a
/// second, so a close comes up to a second after its deadline.
fn metric_within(server: &Server, series: &str, want: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let value = server.metric(series);
        if value >= want || Instant::now() > deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn binding_and_relaying_work_over_dtls_1_2_and_1_3() {
    let stack = start("relay", &["--allow-peer", "127.0.0.0/8"]);
    let server = &stack.server;
    let peer = echo_peer([127, 0, 0, 1]);
    let leaf = certificate_der(&stack.cert.cert_pem);
    let versions = [
        (DtlsVersion::V12, dimpl::ProtocolVersion::DTLS1_2),
        (DtlsVersion::V13, dimpl::ProtocolVersion::DTLS1_3),
        (DtlsVersion::Auto, dimpl::ProtocolVersion::DTLS1_3),
    ];
    for (i, (offered, negotiated)) in versions.into_iter().enumerate() {
        let session = DtlsClient::connect(stack.dtls_addr, offered);
        assert_eq!(session.protocol_version(), Some(negotiated), "{offered:?}");
        assert_eq!(session.peer_certificate(), Some(&leaf[..]), "{offered:?}");
        let mut client = StunClient::from_dtls(session);
        assert_eq!(client.binding(), client.local_addr(), "{offered:?}");
        let relayed = client.allocate_relayed(USER, PASSWORD);
        assert_eq!(relayed.ip(), server.addr.ip());
        client
            .create_permission(peer)
            .expect_success("CreatePermission");
        for data in [&b"x"[..], &[7u8; 1199], b"hello over DTLS"] {
            client.send_indication(peer, data);
            assert_eq!(client.recv_data(WAIT), (peer, data.to_vec()), "{offered:?}");
        }
        let channel = 0x4000 + i as u16;
        client
            .channel_bind(channel, peer)
            .expect_success("ChannelBind");
        for data in [&b"abc"[..], &[9u8; 1199], &[1, 2, 3, 4, 5]] {
            client.send_channel_data(channel, data);
            // One ChannelData per record: never padded, as over UDP.
            assert_eq!(client.recv_channel_data(WAIT), (channel, data.to_vec()));
        }
    }
    let bindings = "icebreaker_stun_binding_requests_total{transport=\"dtls\",family=\"ipv4\"}";
    assert_eq!(metric_reaching(server, bindings, 3.0), 3.0, "{bindings}");
    assert_eq!(server.metric(&opened(Transport::Dtls)), 3.0);
    let to_client = "icebreaker_turn_relayed_packets_total{direction=\"peer_to_client\"}";
    assert_eq!(
        metric_reaching(server, to_client, 18.0),
        18.0,
        "{to_client}"
    );
}

#[test]
fn the_allocation_goes_with_its_session() {
    let stack = start("close", &[]);
    let server = &stack.server;
    let active = "icebreaker_turn_allocations_active{family=\"ipv4\"}";
    let deleted = "icebreaker_turn_allocations_deleted_total{reason=\"connection_closed\"}";
    let mut client = StunClient::dtls(stack.dtls_addr);
    client.allocate_relayed(USER, PASSWORD);
    assert_eq!(metric_settling(server, active, 1.0), 1.0, "{active}");
    assert_eq!(server.metric("icebreaker_turn_relay_ports_in_use"), 1.0);

    client.close_dtls();
    assert_eq!(metric_reaching(server, deleted, 1.0), 1.0, "{deleted}");
    assert_eq!(metric_settling(server, active, 0.0), 0.0, "{active}");
    assert_eq!(server.metric("icebreaker_turn_relay_ports_in_use"), 0.0);
    let peer = closed(Transport::Dtls, "peer");
    assert_eq!(server.metric(&peer), 1.0, "{peer}");
    let open = "icebreaker_connections_open{transport=\"dtls\"}";
    assert_eq!(metric_settling(server, open, 0.0), 0.0, "{open}");
}

#[test]
fn idle_and_slow_sessions_are_closed_and_unproved_ones_are_not_counted() {
    let stack = start("limits", &["--idle-timeout", "1", "--frame-timeout", "1"]);
    let server = &stack.server;

    // A client that sends only its first ClientHello never proves its address: it is no
    // connection, only a short-lived entry.
    let mut spoofer = DtlsClient::start(stack.dtls_addr, DtlsVersion::V12);
    let sent = Cell::new(0);
    spoofer.drive_for(Duration::from_millis(500), |datagram| {
        sent.set(sent.get() + 1);
        sent.get() == 1 && is_client_hello(datagram)
    });
    assert!(!spoofer.is_connected());

    // One that answers the cookie and then stalls (its DTLS 1.3 Finished never leaves) is a
    // connection, closed as slow.
    let mut stalled = DtlsClient::start(stack.dtls_addr, DtlsVersion::Auto);
    stalled.drive_for(Duration::from_millis(500), is_client_hello);
    assert_eq!(metric_reaching(server, &opened(Transport::Dtls), 1.0), 1.0);
    let slow = closed(Transport::Dtls, "slow_frame");
    assert_eq!(
        metric_within(server, &slow, 1.0, Duration::from_secs(5)),
        1.0,
        "{slow}"
    );

    // A silent session without an allocation is closed, and told so; one with an
    // allocation lives on.
    let mut silent = StunClient::dtls(stack.dtls_addr);
    let mut allocated = StunClient::dtls(stack.dtls_addr);
    allocated.allocate_relayed(USER, PASSWORD);
    assert!(
        silent.wait_closed(Duration::from_secs(5)),
        "an idle session was kept"
    );
    let idle = closed(Transport::Dtls, "idle");
    assert_eq!(metric_reaching(server, &idle, 1.0), 1.0, "{idle}");
    thread::sleep(Duration::from_millis(1_500));
    allocated
        .refresh(600)
        .expect_success("Refresh on a session with an allocation");
    assert_eq!(server.metric(&idle), 1.0, "{idle}");
    assert_eq!(
        server.metric(&slow),
        1.0,
        "the unproved client was counted: {slow}"
    );
    assert_eq!(server.metric(&opened(Transport::Dtls)), 3.0);
}

#[test]
fn dtls_sessions_and_tcp_connections_share_max_connections() {
    let stack = start("max", &["--max-connections", "1"]);
    let server = &stack.server;
    let mut first = StunClient::dtls(stack.dtls_addr);
    assert_eq!(first.binding(), first.local_addr());

    let mut second = DtlsClient::start(stack.dtls_addr, DtlsVersion::Auto);
    second.drive_for(Duration::from_secs(1), |_| true);
    assert!(!second.is_connected(), "a DTLS session beyond the limit");
    let limit = closed(Transport::Dtls, "limit");
    assert!(metric_reaching(server, &limit, 1.0) >= 1.0, "{limit}");

    let mut tcp = StunClient::tcp(server.addr);
    assert!(
        tcp.wait_closed(WAIT),
        "a TCP connection beside a DTLS session at the limit"
    );
    let tcp_limit = closed(Transport::Tcp, "limit");
    assert_eq!(metric_reaching(server, &tcp_limit, 1.0), 1.0, "{tcp_limit}");

    drop(first);
    let open = "icebreaker_connections_open{transport=\"dtls\"}";
    assert_eq!(metric_settling(server, open, 0.0), 0.0, "{open}");
    let mut again = StunClient::dtls(stack.dtls_addr);
    assert_eq!(again.binding(), again.local_addr());
}

#[test]
fn a_renewed_certificate_serves_new_dtls_sessions_and_old_ones_go_on() {
    let stack = start("reload", &[]);
    let mut old = StunClient::dtls(stack.dtls_addr);
    old.allocate_relayed(USER, PASSWORD);
    let renewed = test_certificate(&stack.dir, &[TlsServer::NAME, "renewed.localhost"]);
    let renewed_der = certificate_der(&renewed.cert_pem);
    let started = Instant::now();
    loop {
        let session = DtlsClient::connect(stack.dtls_addr, DtlsVersion::Auto);
        if session.peer_certificate() == Some(&renewed_der[..]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the renewed certificate was not served within 5 s"
        );
        thread::sleep(Duration::from_millis(200));
    }
    old.refresh(600)
        .expect_success("Refresh on the session older than the reload");
}

/// An Ed25519 certificate and key, which TLS takes and DTLS cannot, written into `dir`.
fn ed25519_certificate(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    )
}

/// Runs `icebreaker serve` with `args`, which must refuse to start; returns what it printed.
fn refused(args: &[&str]) -> String {
    let bin = icebreaker_bin();
    let mut all = vec!["serve", "--user", "alice:secret", "--threads", "1"];
    all.extend_from_slice(args);
    let ran = run_tool(
        bin.to_str().expect("UTF-8 path"),
        &all,
        Duration::from_secs(20),
    );
    assert!(!ran.success, "started with {args:?}:\n{}", ran.output);
    ran.output
}

#[test]
fn dtls_needs_an_ecdsa_certificate_and_ports_of_its_own() {
    let dir = std::env::temp_dir().join(format!("icebreaker-dtls-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let localhost = [std::net::Ipv4Addr::LOCALHOST.into()];
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port(&localhost))).to_string();
    let secure = SocketAddr::from(([127, 0, 0, 1], free_port(&localhost))).to_string();
    let (ed_cert, ed_key) = ed25519_certificate(&dir.join("ed25519"));

    // Asked for explicitly with a certificate DTLS cannot use: no start, and why.
    let output = refused(&[
        "--listen",
        &listen,
        "--tls-cert",
        &ed_cert,
        "--tls-key",
        &ed_key,
        "--tls-listen",
        &secure,
        "--dtls-listen",
        &secure,
    ]);
    assert!(
        output.contains("dtls-listen") && output.contains("ECDSA P-256 or P-384"),
        "{output}"
    );

    // By default the same certificate serves TLS, and DTLS stays off.
    let server = Server::start_on(
        listen.parse().unwrap(),
        &[
            "--user",
            "alice:secret",
            "--tls-cert",
            &ed_cert,
            "--tls-key",
            &ed_key,
            "--tls-listen",
            &secure,
        ],
    );
    let banner = server.banner.join("\n");
    assert!(banner.contains(&format!("tls {secure}")), "{banner}");
    assert!(!banner.contains("dtls"), "{banner}");
    let mut attempt = DtlsClient::start(secure.parse().unwrap(), DtlsVersion::Auto);
    attempt.drive_for(Duration::from_millis(500), |_| true);
    assert!(!attempt.is_connected());
    drop(server);

    let ecdsa = test_certificate(&dir.join("ecdsa"), &["localhost"]);
    let (cert, key) = (
        ecdsa.cert_path.to_string_lossy().into_owned(),
        ecdsa.key_path.to_string_lossy().into_owned(),
    );
    // DTLS on a UDP listen address would split its datagrams with STUN.
    let output = refused(&[
        "--listen",
        &listen,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--dtls-listen",
        &listen,
    ]);
    assert!(output.contains("also a UDP listen address"), "{output}");

    // A port another program holds.
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let output = refused(&[
        "--listen",
        &listen,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--dtls-listen",
        &taken,
    ]);
    assert!(
        output.contains(&format!("udp {taken} is already in use")),
        "{output}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
