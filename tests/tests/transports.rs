//! TURN over UDP, TCP, TLS and DTLS against the real `icebreaker serve` on loopback: relaying
//! without loss on each transport, the relay-target deny list on each, allocations that die
//! with their connection, the PROXY protocol, TLS versions, ALPN and certificate reload, and
//! ALTERNATE-SERVER at capacity. The stream limits are in `transports_limits.rs`; what is
//! particular to DTLS (versions, cookies, its limits, reload) in `dtls.rs`.
//!
//! Every wait has a deadline; the servers are killed when a test ends, pass or fail.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use icebreaker_tests::stun_client::{
    StunClient, Transport, binding_request, certificate_der, tls_config,
};
use icebreaker_tests::{
    Server, TlsServer, connections_closed as closed, echo_peer, free_port, metric_reaching,
    metric_settling, missing, test_certificate,
};
use icebreaker_wire::ErrorCode;
use icebreaker_wire::MessageWriter;
use icebreaker_wire::attr::{AdditionalAddressFamily, AddressFamily, AlternateServer};

const USER: &str = "alice";
const PASSWORD: &str = "secret";
const USER_FLAG: &str = "alice:secret";

/// What a relayed packet or an answer may take on loopback.
const WAIT: Duration = Duration::from_secs(3);

/// A server with user alice, TLS and `extra` flags on 127.0.0.1.
fn start(name: &str, extra: &[&str]) -> TlsServer {
    let mut flags = vec!["--user", USER_FLAG];
    flags.extend_from_slice(extra);
    TlsServer::start(name, &flags)
}

/// A server as [`start`] makes, listening on [::1] too (same port), or `None` (reported) on a
/// host without IPv6 on loopback. Its metrics port is kept outside its relay port range, so
/// that the metrics address is a server address no allocation can have.
fn start_dual(name: &str, extra: &[&str]) -> Option<TlsServer> {
    if let Err(e) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) {
        missing("IPv6 on loopback", &format!("cannot bind [::1]: {e}"));
        return None;
    }
    for _ in 0..5 {
        let port = free_port(&[Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]);
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port)).to_string();
        let mut flags = vec!["--user", USER_FLAG, "--listen", &v6];
        flags.extend_from_slice(extra);
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stack = TlsServer::start_on(name, v4, &flags);
        if !relay_ports(&stack.server).contains(&stack.server.metrics.port()) {
            return Some(stack);
        }
    }
    panic!("the metrics port fell in the relay port range five times");
}

/// The relay port range the server was started with, from its command line.
fn relay_ports(server: &Server) -> RangeInclusive<u16> {
    let path = format!("/proc/{}/cmdline", server.child.id());
    let cmdline = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let range = args
        .iter()
        .skip_while(|a| *a != "--relay-ports")
        .nth(1)
        .expect("the server is started with --relay-ports");
    let (min, max) = range.split_once('-').expect("MIN-MAX");
    min.parse().expect("a port")..=max.parse().expect("a port")
}

/// The sum of every series of metric `name`, whatever their labels.
fn metric_sum(server: &Server, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    server
        .http_get("/metrics")
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The payload of relayed packet `n`: odd sizes, so that stream padding is exercised, and
/// contents that differ from packet to packet.
fn payload(n: usize) -> Vec<u8> {
    const SIZES: [usize; 4] = [1, 3, 101, 1199];
    let len = SIZES[n % SIZES.len()];
    (0..len).map(|j| (n * 7 + j) as u8).collect()
}

/// Packets relayed each way, per transport and per method.
const PACKETS: usize = 200;

#[test]
fn relays_over_udp_tcp_tls_and_dtls_without_loss() {
    let stack = start("relay", &["--allow-peer", "127.0.0.0/8"]);
    let server = &stack.server;
    let peer = echo_peer([127, 0, 0, 1]);
    let mut clients = Vec::new();
    for (i, transport) in Transport::ALL.into_iter().enumerate() {
        let mut client = stack.client(transport);
        assert_eq!(
            client.binding(),
            client.local_addr(),
            "Binding over {transport:?}"
        );
        let relayed = client.allocate_relayed(USER, PASSWORD);
        assert_eq!(relayed.ip(), server.addr.ip(), "{transport:?}");
        client
            .create_permission(peer)
            .expect_success("CreatePermission");
        // Before the channel is bound the peer's answers come back as Data indications.
        for n in 0..PACKETS {
            let sent = payload(n);
            client.send_indication(peer, &sent);
            let (from, data) = client.recv_data(WAIT);
            assert_eq!(from, peer, "{transport:?} Data {n}");
            assert_eq!(data, sent, "{transport:?} Data {n}");
        }
        let channel = 0x4000 + i as u16;
        client
            .channel_bind(channel, peer)
            .expect_success("ChannelBind");
        for n in 0..PACKETS {
            let sent = payload(n);
            client.send_channel_data(channel, &sent);
            let (on, data) = client.recv_channel_data(WAIT);
            assert_eq!(on, channel, "{transport:?} ChannelData {n}");
            assert_eq!(data, sent, "{transport:?} ChannelData {n}");
        }
        clients.push(client);
    }

    let relayed = (2 * PACKETS * Transport::ALL.len()) as f64;
    for direction in ["client_to_peer", "peer_to_client"] {
        let series = format!("icebreaker_turn_relayed_packets_total{{direction=\"{direction}\"}}");
        assert_eq!(
            metric_reaching(server, &series, relayed),
            relayed,
            "{series}"
        );
    }
    for transport in Transport::ALL {
        let series = format!(
            "icebreaker_stun_binding_requests_total{{transport=\"{}\",family=\"ipv4\"}}",
            transport.label()
        );
        assert_eq!(server.metric(&series), 1.0, "{series}");
    }
    let connections = [Transport::Tcp, Transport::Tls, Transport::Dtls];
    for transport in connections {
        let label = transport.label();
        let opened = format!("icebreaker_connections_opened_total{{transport=\"{label}\"}}");
        let open = format!("icebreaker_connections_open{{transport=\"{label}\"}}");
        assert_eq!(server.metric(&opened), 1.0, "{opened}");
        assert_eq!(server.metric(&open), 1.0, "{open}");
    }
    drop(clients);
    for transport in connections {
        let series = closed(transport, "peer");
        assert_eq!(metric_settling(server, &series, 1.0), 1.0, "{series}");
        let open = format!(
            "icebreaker_connections_open{{transport=\"{}\"}}",
            transport.label()
        );
        assert_eq!(metric_settling(server, &open, 0.0), 0.0, "{open}");
    }
}

#[test]
fn relay_targets_are_refused_over_every_transport() {
    // No --allow-peer: the built-in deny list applies.
    let Some(stack) = start_dual("catalogue", &[]) else {
        return;
    };
    let server = &stack.server;
    let dual = |w: &mut MessageWriter<'_>| {
        w.add(&AdditionalAddressFamily(AddressFamily::Ipv6))
            .expect("fits");
    };
    let dual_allocate = |client: &mut StunClient| {
        let answer = client.allocate(USER, PASSWORD, dual);
        answer.expect_success("dual Allocate");
        let relayed = answer.relayed();
        assert!(
            matches!(relayed[..], [v4, v6] if v4.is_ipv4() && v6.is_ipv6()),
            "a dual allocation has an IPv4 and an IPv6 relayed address: {answer:?}"
        );
        relayed
    };

    // Another allocation on the same server, whose relayed addresses are legitimate peers.
    let mut other = StunClient::udp(server.addr);
    let other_relayed = dual_allocate(&mut other);

    let port = 9;
    let mut denied: Vec<SocketAddr> = [
        "127.0.0.1",
        "0.0.0.0",
        "10.1.2.3",
        "100.64.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "255.255.255.255",
    ]
    .iter()
    .map(|ip| SocketAddr::new(ip.parse().expect("an IPv4 literal"), port))
    .collect();
    // A server address on a port outside the relay range is another service of the host.
    assert!(!relay_ports(server).contains(&server.metrics.port()));
    denied.push(server.metrics);
    denied.extend(
        [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "fe80::1",
            "fc00::1",
        ]
        .iter()
        .map(|ip| SocketAddr::new(ip.parse().expect("an IPv6 literal"), port)),
    );

    let denied_before = metric_sum(server, "icebreaker_turn_peer_denied_total");
    for transport in Transport::ALL {
        let mut client = stack.client(transport);
        dual_allocate(&mut client);
        for (k, &peer) in denied.iter().enumerate() {
            let answer = client.create_permission(peer);
            assert_eq!(
                answer.error_code(),
                Some(ErrorCode::FORBIDDEN),
                "CreatePermission to {peer} over {transport:?}: {answer:?}"
            );
            let answer = client.channel_bind(0x4000 + k as u16, peer);
            assert_eq!(
                answer.error_code(),
                Some(ErrorCode::FORBIDDEN),
                "ChannelBind to {peer} over {transport:?}: {answer:?}"
            );
        }
        for (k, &peer) in other_relayed.iter().enumerate() {
            client
                .create_permission(peer)
                .expect_success(&format!("CreatePermission to {peer} over {transport:?}"));
            client
                .channel_bind(0x4100 + k as u16, peer)
                .expect_success(&format!("ChannelBind to {peer} over {transport:?}"));
        }
    }
    let refusals = (2 * denied.len() * Transport::ALL.len()) as f64;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut grown = metric_sum(server, "icebreaker_turn_peer_denied_total") - denied_before;
    while grown < refusals && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        grown = metric_sum(server, "icebreaker_turn_peer_denied_total") - denied_before;
    }
    assert!(
        grown >= refusals,
        "icebreaker_turn_peer_denied_total grew by {grown}, expected {refusals}"
    );
}

#[test]
fn closing_a_connection_deletes_its_allocation() {
    let stack = start("close", &[]);
    let server = &stack.server;
    let active = "icebreaker_turn_allocations_active{family=\"ipv4\"}";
    let deleted = "icebreaker_turn_allocations_deleted_total{reason=\"connection_closed\"}";
    let mut tcp = stack.client(Transport::Tcp);
    tcp.allocate_relayed(USER, PASSWORD);
    let mut tls = stack.client(Transport::Tls);
    tls.allocate_relayed(USER, PASSWORD);
    let mut dtls = stack.client(Transport::Dtls);
    dtls.allocate_relayed(USER, PASSWORD);
    assert_eq!(metric_settling(server, active, 3.0), 3.0, "{active}");
    assert_eq!(server.metric(deleted), 0.0, "{deleted}");

    drop(tcp);
    assert_eq!(metric_reaching(server, deleted, 1.0), 1.0, "{deleted}");
    drop(tls);
    assert_eq!(metric_reaching(server, deleted, 2.0), 2.0, "{deleted}");
    // A DTLS session ends with the client's close_notify.
    drop(dtls);
    assert_eq!(metric_reaching(server, deleted, 3.0), 3.0, "{deleted}");
    assert_eq!(metric_settling(server, active, 0.0), 0.0, "{active}");
    assert_eq!(server.metric("icebreaker_turn_relay_ports_in_use"), 0.0);
}

/// The PROXY protocol v2 signature.
const PROXY_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol v2 header for a TCP connection over IPv4 from `source` to `destination`.
fn proxy_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(from), IpAddr::V4(to)) = (source.ip(), destination.ip()) else {
        panic!("IPv4 addresses only");
    };
    let mut header = PROXY_SIGNATURE.to_vec();
    // Version 2, command PROXY; family INET, transport STREAM; 12 bytes of addresses.
    header.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    header.extend_from_slice(&from.octets());
    header.extend_from_slice(&to.octets());
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

/// A PROXY protocol v2 LOCAL header (a balancer's own connection): no addresses.
fn proxy_local_header() -> Vec<u8> {
    let mut header = PROXY_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    header
}

/// A TCP connection to `to` that starts with `preface`.
fn connect_with(to: SocketAddr, preface: &[u8]) -> TcpStream {
    use std::io::Write as _;
    let mut stream = TcpStream::connect(to).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    stream.write_all(preface).expect("write the preface");
    stream
}

#[test]
fn proxy_protocol_headers_name_the_client() {
    let stack = start("proxy", &["--proxy-protocol"]);
    let server = &stack.server;

    let source: SocketAddr = "203.0.113.7:4000".parse().expect("literal");
    let mut proxied = StunClient::from_tcp(connect_with(
        server.addr,
        &proxy_header(source, server.addr),
    ));
    assert_eq!(proxied.binding(), source);
    // The nonce is bound to the named source, and the allocation made for it works.
    proxied.allocate_relayed(USER, PASSWORD);

    let mut local = StunClient::from_tcp(connect_with(server.addr, &proxy_local_header()));
    assert_eq!(local.binding(), local.local_addr());

    let mut direct = StunClient::tcp(server.addr);
    direct.send_raw(&binding_request());
    assert!(
        direct.wait_closed(WAIT),
        "a connection without header was served"
    );
    let refused = closed(Transport::Tcp, "proxy_protocol");
    assert_eq!(metric_reaching(server, &refused, 1.0), 1.0, "{refused}");

    // Over TLS the header comes before the ClientHello.
    let source: SocketAddr = "203.0.113.8:4001".parse().expect("literal");
    let stream = connect_with(stack.tls_addr, &proxy_header(source, stack.tls_addr));
    let mut tls = StunClient::from_tls(stream, &stack.tls, TlsServer::NAME);
    assert_eq!(tls.binding(), source);
    assert_eq!(
        server.metric(&closed(Transport::Tls, "proxy_protocol")),
        0.0
    );
}

#[test]
fn tls_offers_stun_turn_and_both_versions_and_refuses_plain_tcp() {
    let stack = start("tls", &[]);
    let server = &stack.server;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = tls_config(&[&stack.cert.cert_pem], &[version]);
        let mut client = StunClient::tls(stack.tls_addr, &config, TlsServer::NAME);
        let session = client.tls_session().expect("a TLS client");
        assert_eq!(session.protocol_version(), Some(expected));
        assert_eq!(
            session.alpn_protocol(),
            Some(&b"stun.turn"[..]),
            "{expected:?}"
        );
        assert_eq!(client.binding(), client.local_addr(), "{expected:?}");
        client.allocate_relayed(USER, PASSWORD);
    }

    let mut plain = StunClient::tcp(stack.tls_addr);
    plain.send_raw(&binding_request());
    assert!(
        plain.wait_closed(WAIT),
        "a plain Binding on the TLS port was kept"
    );
    let refused = closed(Transport::Tls, "tls");
    assert_eq!(metric_reaching(server, &refused, 1.0), 1.0, "{refused}");
    let bindings = "icebreaker_stun_binding_requests_total{transport=\"tls\",family=\"ipv4\"}";
    assert_eq!(server.metric(bindings), 2.0, "{bindings}");
}

/// The DER of the leaf certificate the server presented to `client`.
fn leaf(client: &StunClient) -> Vec<u8> {
    client
        .tls_session()
        .and_then(|s| s.peer_certificates())
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .to_vec()
}

#[test]
fn tls_certificates_reload_without_dropping_sessions() {
    let stack = start("reload", &["--allow-peer", "127.0.0.0/8"]);
    let peer = echo_peer([127, 0, 0, 1]);
    let mut old = stack.client(Transport::Tls);
    assert_eq!(leaf(&old), certificate_der(&stack.cert.cert_pem));
    old.allocate_relayed(USER, PASSWORD);
    old.create_permission(peer)
        .expect_success("CreatePermission");
    old.channel_bind(0x4000, peer).expect_success("ChannelBind");
    let relays = |client: &mut StunClient, n: usize| {
        client.send_channel_data(0x4000, &payload(n));
        assert_eq!(client.recv_channel_data(WAIT), (0x4000, payload(n)));
    };
    relays(&mut old, 1);

    // A renewal rewrites both files in place, with a certificate for another set of names.
    let renewed = test_certificate(&stack.dir, &[TlsServer::NAME, "renewed.localhost"]);
    let renewed_der = certificate_der(&renewed.cert_pem);
    let both = tls_config(
        &[&stack.cert.cert_pem, &renewed.cert_pem],
        rustls::ALL_VERSIONS,
    );
    let started = Instant::now();
    loop {
        let client = StunClient::tls(stack.tls_addr, &both, TlsServer::NAME);
        if leaf(&client) == renewed_der {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the renewed certificate was not served within 5 s"
        );
        thread::sleep(Duration::from_millis(200));
    }
    relays(&mut old, 3);

    // A broken key file, then SIGHUP: the reload is refused and the renewed pair stays.
    std::fs::write(&renewed.key_path, "-----BEGIN PRIVATE KEY-----\nbroken\n").expect("write");
    let pid = stack.server.child.id().to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(hup.success());
    // Over more than one file check (2 s) and signal check, every new session succeeds.
    let watch = Instant::now();
    let mut sessions = 0;
    while watch.elapsed() < Duration::from_millis(2_600) {
        let mut client = StunClient::tls(stack.tls_addr, &both, TlsServer::NAME);
        assert_eq!(leaf(&client), renewed_der, "after {:?}", watch.elapsed());
        assert_eq!(client.binding(), client.local_addr());
        sessions += 1;
        thread::sleep(Duration::from_millis(250));
    }
    assert!(sessions >= 5, "only {sessions} sessions in the watch");
    relays(&mut old, 101);
    old.refresh(600)
        .expect_success("Refresh on the session older than both reloads");
}

#[test]
fn allocate_at_capacity_is_sent_to_an_alternate_server() {
    let port = free_port(&[Ipv4Addr::LOCALHOST.into()]);
    let server = Server::start_on(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        &[
            "--user",
            USER_FLAG,
            "--user",
            "bob:hunter2",
            "--total-quota",
            "1",
            "--alternate-server",
            "192.0.2.10:3478",
        ],
    );
    let alternate: SocketAddr = "192.0.2.10:3478".parse().expect("literal");
    let mut alice = StunClient::udp(server.addr);
    alice.allocate_relayed(USER, PASSWORD);

    for mut bob in [StunClient::udp(server.addr), StunClient::tcp(server.addr)] {
        let transport = bob.transport();
        let answer = bob.allocate("bob", "hunter2", |_| {});
        assert_eq!(
            answer.error_code(),
            Some(ErrorCode::TRY_ALTERNATE),
            "{transport:?}: {answer:?}"
        );
        let message = answer.message();
        assert_eq!(
            message.get::<AlternateServer>(),
            Ok(Some(AlternateServer(alternate))),
            "{transport:?}"
        );
        // A refusal after authentication is signed, so that the client can trust the redirect.
        assert!(
            message.integrity_offset().is_some(),
            "{transport:?}: unsigned 300"
        );
        message
            .verify_message_integrity(&bob.key())
            .expect("signed with bob's key");
    }

    // Once alice's allocation is gone there is room again.
    alice.refresh(0).expect_success("Refresh 0");
    let mut bob = StunClient::tcp(server.addr);
    bob.allocate_relayed("bob", "hunter2");
}
