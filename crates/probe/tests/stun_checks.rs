//! The STUN checks against a real `icebreaker serve` on loopback (with and without RFC 5780),
//! against ports that refuse or drop everything, and against small fake servers that answer
//! what a test chooses: a NAT's mapping, an RFC 3489 answer, an error, a lost request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use ice_probe::report::Status;
use ice_probe::stun_checks::{BindingInfo, binding, mapping_across, nat_behaviour};
use ice_probe::{Settings, Target};
use icebreaker_tests::{Server, free_udp_port};
use icebreaker_wire::attr::{ErrorCodeAttribute, MappedAddress, XorMappedAddress};
use icebreaker_wire::{Class, ErrorCode, Message, MessageType, MessageWriter, Method};

mod common;
use common::{find, metric};

fn target(server: SocketAddr) -> Target {
    Target {
        uri: format!("stun:{server}").parse().unwrap(),
        server,
    }
}

fn settings(timeout_secs: u64) -> Settings {
    Settings {
        timeout: Duration::from_secs(timeout_secs),
        ..Settings::default()
    }
}

/// `icebreaker serve` on 127.0.0.1 with RFC 5780's second address on 127.0.0.2.
fn rfc5780_server() -> (Server, SocketAddr) {
    let other = SocketAddr::from(([127, 0, 0, 2], free_udp_port()));
    let server = Server::start(&["--other-address", &other.to_string()]);
    (server, other)
}

#[tokio::test]
async fn an_rfc_5780_server_on_loopback_sees_no_nat_and_open_behaviour() {
    let (server, other) = rfc5780_server();
    let target = target(server.addr);
    let (checks, info) = binding(&target, &settings(3)).await;
    let check = find(&checks, "binding");
    assert_eq!(check.status, Status::Pass, "{check:#?}");
    assert!(check.value.starts_with("rtt "), "{}", check.value);
    assert!(
        check.value.ends_with("10 of 10 answered"),
        "{}",
        check.value
    );
    assert_eq!(metric(check, "loss_ratio"), 0.0);
    assert!(metric(check, "rtt_p95_seconds") < 1.0);
    let info = info.expect("binding info");
    assert_eq!(info.other_address, Some(other));
    assert_eq!(info.mapped, info.local);
    let mapped = find(&checks, "mapped-address");
    assert_eq!(mapped.status, Status::Pass);
    assert_eq!(
        mapped.value,
        format!("{} = local address: no NAT", info.mapped)
    );

    let started = Instant::now();
    let checks = nat_behaviour(&target, &settings(3), &info).await;
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nat-mapping",
            "nat-filtering",
            "hairpinning",
            "mapping-lifetime"
        ]
    );
    let mapping = find(&checks, "nat-mapping");
    assert_eq!(
        (mapping.status, mapping.value.as_str()),
        (Status::Pass, "no NAT")
    );
    let filtering = find(&checks, "nat-filtering");
    assert_eq!(filtering.status, Status::Pass, "{filtering:#?}");
    assert!(
        filtering.value.starts_with("endpoint-independent"),
        "{}",
        filtering.value
    );
    let hairpin = find(&checks, "hairpinning");
    assert_eq!(
        (hairpin.status, hairpin.value.as_str()),
        (Status::Pass, "supported")
    );
    assert_eq!(find(&checks, "mapping-lifetime").status, Status::Skip);
    // Every answer arrives, so nothing waits out a quiet period.
    assert!(started.elapsed() < Duration::from_secs(1), "{started:?}");
}

#[tokio::test]
async fn without_a_nat_the_mapping_outlives_the_lifetime_limit() {
    let (server, _) = rfc5780_server();
    let target = target(server.addr);
    let settings = Settings {
        lifetime: Some(Duration::from_secs(2)),
        ..settings(3)
    };
    let (_, info) = binding(&target, &settings).await;
    let started = Instant::now();
    let checks = nat_behaviour(&target, &settings, &info.unwrap()).await;
    let lifetime = find(&checks, "mapping-lifetime");
    assert_eq!(lifetime.status, Status::Pass, "{lifetime:#?}");
    assert_eq!(lifetime.value, "longer than 2 s");
    assert_eq!(metric(lifetime, "mapping_lifetime_seconds"), 2.0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn without_rfc_5780_the_discovery_checks_skip_and_say_why() {
    let server = Server::start(&[]);
    let target = target(server.addr);
    let settings = Settings {
        lifetime: Some(Duration::from_secs(2)),
        ..settings(3)
    };
    let (checks, info) = binding(&target, &settings).await;
    assert_eq!(find(&checks, "binding").status, Status::Pass);
    let info = info.unwrap();
    assert_eq!(info.other_address, None);
    let checks = nat_behaviour(&target, &settings, &info).await;
    for name in ["nat-mapping", "nat-filtering"] {
        let check = find(&checks, name);
        assert_eq!(check.status, Status::Skip, "{check:#?}");
        let why = check.explanation.as_deref().unwrap();
        assert!(why.contains("does not implement RFC 5780"), "{why}");
        assert!(why.contains("--other-address"), "{why}");
        assert!(why.contains("coturn"), "{why}");
    }
    // Hairpinning needs no help from the server.
    assert_eq!(find(&checks, "hairpinning").value, "supported");
    let lifetime = find(&checks, "mapping-lifetime");
    assert_eq!(lifetime.status, Status::Skip);
    assert!(
        lifetime
            .explanation
            .as_deref()
            .unwrap()
            .contains("RESPONSE-PORT")
    );
}

#[tokio::test]
async fn a_closed_port_is_reported_as_icmp_unreachable_at_once() {
    let closed = {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let started = Instant::now();
    let (checks, info) = binding(&target(closed), &settings(3)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(info.is_none());
    let check = find(&checks, "binding");
    assert_eq!(check.status, Status::Fail);
    let why = check.explanation.as_deref().unwrap();
    assert!(why.contains("ICMP port unreachable"), "{why}");
    assert_eq!(find(&checks, "mapped-address").status, Status::Skip);
}

#[tokio::test]
async fn a_port_that_drops_everything_times_out_once() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let (checks, info) = binding(&target(silent.local_addr().unwrap()), &settings(1)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1_500),
        "{took:?}: one request's timeout, not one per request"
    );
    assert!(info.is_none());
    let check = find(&checks, "binding");
    assert_eq!(check.status, Status::Fail);
    let why = check.explanation.as_deref().unwrap();
    assert!(why.starts_with("no answer from"), "{why}");
    assert!(why.contains("firewall"), "{why}");
    // The requests reached the port: it is the answers that are missing.
    silent.set_nonblocking(true).unwrap();
    assert!(silent.recv_from(&mut [0u8; 64]).is_ok());
}

/// How a fake server answers a Binding request.
#[derive(Clone, Copy)]
enum Reply {
    /// XOR-MAPPED-ADDRESS with this address, whoever asks.
    Mapped(SocketAddr),
    /// MAPPED-ADDRESS only, as an RFC 3489 server.
    Plain(SocketAddr),
    /// An error response.
    Error(ErrorCode),
    /// The source address, except that the `n`th request (from 0) of each source is never
    /// answered.
    LoseRequest(usize),
}

/// A Binding server on `ip` that answers as `reply` says, for as long as the test runs.
fn fake_server(ip: [u8; 4], reply: Reply) -> SocketAddr {
    let socket = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let Ok(request) = Message::parse(&buf[..len]) else {
                continue;
            };
            let id = request.transaction_id();
            // Counted per source port: the probe may watch for ICMP errors from another one.
            let asked: Vec<_> = seen
                .iter()
                .filter(|(f, _)| *f == from)
                .map(|(_, s)| *s)
                .collect();
            let nth = asked.iter().position(|&s| s == id).unwrap_or_else(|| {
                seen.push((from, id));
                asked.len()
            });
            let class = match reply {
                Reply::Error(_) => Class::Error,
                _ => Class::Success,
            };
            let mut out = [0u8; 128];
            let kind = MessageType::new(Method::BINDING, class);
            let mut writer = MessageWriter::new(&mut out, kind, id).unwrap();
            match reply {
                Reply::Mapped(mapped) => writer.add(&XorMappedAddress(mapped)).unwrap(),
                Reply::Plain(mapped) => writer.add(&MappedAddress(mapped)).unwrap(),
                Reply::Error(code) => writer.add(&ErrorCodeAttribute::bare(code)).unwrap(),
                Reply::LoseRequest(n) if n == nth => continue,
                Reply::LoseRequest(_) => writer.add(&XorMappedAddress(from)).unwrap(),
            }
            writer.add_fingerprint().unwrap();
            let len = writer.finish();
            let _ = socket.send_to(&out[..len], from);
        }
    });
    addr
}

#[tokio::test]
async fn a_mapping_other_than_the_local_address_is_behind_nat() {
    let nat = "198.51.100.7:1234".parse().unwrap();
    let server = fake_server([127, 0, 0, 1], Reply::Mapped(nat));
    let (checks, info) = binding(&target(server), &settings(2)).await;
    assert_eq!(find(&checks, "binding").status, Status::Pass);
    let info = info.unwrap();
    assert_eq!(info.mapped, nat);
    assert_eq!(info.local.ip(), std::net::Ipv4Addr::LOCALHOST);
    let mapped = find(&checks, "mapped-address");
    assert_eq!(mapped.status, Status::Pass);
    assert_eq!(
        mapped.value,
        format!("198.51.100.7:1234 (behind NAT: local {})", info.local)
    );
}

#[tokio::test]
async fn an_error_answer_fails_with_the_code_explained() {
    let server = fake_server([127, 0, 0, 1], Reply::Error(ErrorCode::UNAUTHENTICATED));
    let (checks, info) = binding(&target(server), &settings(2)).await;
    assert!(info.is_none());
    let check = find(&checks, "binding");
    assert_eq!(check.status, Status::Fail);
    assert_eq!(check.value, "error 401 Unauthenticated");
    let why = check.explanation.as_deref().unwrap();
    assert!(why.contains("credentials"), "{why}");

    let server = fake_server([127, 0, 0, 1], Reply::Error(ErrorCode::BAD_REQUEST));
    let (checks, _) = binding(&target(server), &settings(2)).await;
    assert_eq!(find(&checks, "binding").value, "error 400 Bad Request");
}

#[tokio::test]
async fn an_rfc_3489_server_is_usable_and_named() {
    let nat = "198.51.100.7:1234".parse().unwrap();
    let server = fake_server([127, 0, 0, 1], Reply::Plain(nat));
    let (checks, info) = binding(&target(server), &settings(2)).await;
    let check = find(&checks, "binding");
    assert_eq!(check.status, Status::Pass);
    assert!(
        check.value.contains("MAPPED-ADDRESS only"),
        "{}",
        check.value
    );
    assert_eq!(info.unwrap().mapped, nat);
}

#[tokio::test]
async fn a_lost_request_among_answered_ones_passes_with_its_loss() {
    let server = fake_server([127, 0, 0, 1], Reply::LoseRequest(1));
    let settings = Settings {
        count: 5,
        ..settings(1)
    };
    let (checks, info) = binding(&target(server), &settings).await;
    assert!(info.is_some());
    let check = find(&checks, "binding");
    assert_eq!(check.status, Status::Pass, "{check:#?}");
    assert!(
        check.value.ends_with("4 of 5 answered (20 % lost)"),
        "{}",
        check.value
    );
    assert!((metric(check, "loss_ratio") - 0.2).abs() < 1e-9);
}

fn no_rfc5780(server: SocketAddr, mapped: SocketAddr) -> (Target, BindingInfo) {
    let info = BindingInfo {
        mapped,
        local: "127.0.0.1:1".parse().unwrap(),
        other_address: None,
        response_origin: None,
        software: None,
    };
    (target(server), info)
}

#[tokio::test]
async fn two_servers_compare_mappings_without_rfc_5780() {
    let nat: SocketAddr = "198.51.100.7:1234".parse().unwrap();
    let moved: SocketAddr = "198.51.100.7:4321".parse().unwrap();
    let first = fake_server([127, 0, 0, 1], Reply::Mapped(nat));
    let same = fake_server([127, 0, 0, 3], Reply::Mapped(nat));
    let other = fake_server([127, 0, 0, 4], Reply::Mapped(moved));

    let targets = [no_rfc5780(first, nat), no_rfc5780(same, nat)];
    let check = mapping_across(&targets, &settings(2)).await.unwrap();
    assert_eq!(check.name, "nat-mapping");
    assert_eq!(check.status, Status::Pass);
    assert_eq!(
        check.value,
        "endpoint-independent (same mapping towards two servers)"
    );

    let targets = [no_rfc5780(first, nat), no_rfc5780(other, moved)];
    let check = mapping_across(&targets, &settings(2)).await.unwrap();
    assert_eq!(
        check.value,
        "address-dependent or address-and-port-dependent (two servers saw different \
         mappings; RFC 5780 needed to tell which)"
    );

    assert!(mapping_across(&targets[..1], &settings(2)).await.is_none());
    // A first server with RFC 5780 measures the mapping itself.
    let mut with_rfc5780 = targets.clone();
    with_rfc5780[0].1.other_address = Some("127.0.0.2:9".parse().unwrap());
    assert!(mapping_across(&with_rfc5780, &settings(2)).await.is_none());
}
