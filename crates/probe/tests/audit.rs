//! The audit against a real `icebreaker serve` on loopback: nothing found with the safe
//! defaults, the loopback relay and the server's own address found once a lab allow list
//! opens 127.0.0.0/8, and without credentials only the stranger checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ice_probe::audit::audit;
use ice_probe::report::{Check, Finding, Severity, Status};
use ice_probe::{Credentials, Settings, Target};
use icebreaker_tests::Server;
use icebreaker_wire::attr::{
    Lifetime, RequestedTransport, Software, XorMappedAddress, XorRelayedAddress,
};
use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method};

mod common;
use common::find;

const RELAY_CHECKS: [&str; 7] = [
    "audit-relay-loopback",
    "audit-relay-unspecified",
    "audit-relay-private",
    "audit-relay-metadata",
    "audit-relay-multicast",
    "audit-relay-server-address",
    "audit-relay-ipv6-forms",
];

fn target(server: &Server) -> Target {
    Target {
        uri: format!("turn:{}", server.addr).parse().unwrap(),
        server: server.addr,
    }
}

fn settings(credentials: bool) -> Settings {
    Settings {
        credentials: credentials.then(|| Credentials {
            username: "alice".into(),
            password: "secret".into(),
            rest: false,
        }),
        timeout: Duration::from_secs(2),
        audit: true,
        ..Settings::default()
    }
}

/// Waits for the server's metrics to show every allocation the audit made released by the
/// audit itself (a Refresh with LIFETIME 0): how many it made.
fn all_released(server: &Server) -> f64 {
    let created = "icebreaker_turn_allocations_created_total";
    let active = "icebreaker_turn_allocations_active{family=\"ipv4\"}";
    let released = "icebreaker_turn_allocations_deleted_total{reason=\"refresh\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let made = server.metric(created);
        if made > 0.0 && server.metric(active) == 0.0 && server.metric(released) == made {
            return made;
        }
        assert!(
            Instant::now() < deadline,
            "allocations left: {} made, {} active, {} released",
            made,
            server.metric(active),
            server.metric(released)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stranger checks pass on icebreaker whatever its peer policy.
fn strangers_pass(checks: &[Check]) {
    let allocate = find(checks, "audit-unauthenticated-allocate");
    assert_eq!(allocate.status, Status::Pass, "{allocate:?}");
    assert_eq!(allocate.value, "401 with REALM and NONCE");
    let amplification = find(checks, "audit-amplification");
    assert_eq!(amplification.status, Status::Pass, "{amplification:?}");
    let factor = amplification
        .metrics
        .iter()
        .find(|m| m.name == "amplification_factor")
        .map(|m| m.value)
        .unwrap();
    assert!(factor > 1.0 && factor <= 3.0, "{amplification:?}");
    let software = find(checks, "audit-software");
    assert_eq!(software.status, Status::Pass, "{software:?}");
}

#[tokio::test]
async fn the_defaults_leave_nothing_to_find() {
    let server = Server::start(&["--user", "alice:secret"]);
    let (checks, findings) = audit(&target(&server), &settings(true)).await;
    assert!(findings.is_empty(), "{findings:#?}");
    strangers_pass(&checks);
    assert_eq!(checks.len(), 3 + RELAY_CHECKS.len(), "{checks:#?}");
    for check in &checks {
        assert!(check.name.starts_with("audit-"), "{check:?}");
        assert_ne!(check.status, Status::Fail, "{check:?}");
    }
    for name in RELAY_CHECKS {
        let relay = find(&checks, name);
        assert!(!relay.value.contains("accepted"), "{relay:?}");
        assert!(!relay.value.contains("no answer"), "{relay:?}");
        assert!(!relay.value.contains("not tested"), "{relay:?}");
    }
    for name in [
        "audit-relay-loopback",
        "audit-relay-metadata",
        "audit-relay-server-address",
    ] {
        let relay = find(&checks, name);
        assert_eq!(relay.status, Status::Pass, "{relay:?}");
        assert!(relay.value.contains("(ChannelBind)"), "{relay:?}");
    }
    let loopback = find(&checks, "audit-relay-loopback");
    assert!(
        loopback
            .value
            .starts_with("refused 403: 127.0.0.1, 127.1.2.3"),
        "{loopback:?}"
    );
    // The relay is IPv4: IPv6 peers are refused before the policy is asked.
    let forms = find(&checks, "audit-relay-ipv6-forms");
    assert_eq!(forms.status, Status::Skip, "{forms:?}");
    assert!(forms.value.starts_with("not applicable (443"), "{forms:?}");
    // One allocation for the CreatePermission probes and a fresh one for each ChannelBind.
    assert_eq!(all_released(&server), 3.0);
    let own = find(&checks, "audit-relay-server-address");
    let listen = server.addr.to_string();
    assert!(own.value.contains(&listen), "{own:?}");
    assert!(own.value.contains("127.0.0.1:22"), "{own:?}");
}

#[tokio::test]
async fn a_lab_allow_list_opens_loopback_and_the_server_itself() {
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let (checks, findings) = audit(&target(&server), &settings(true)).await;
    strangers_pass(&checks);
    let found = |name: &str| -> &Finding {
        findings
            .iter()
            .find(|f| f.check == name)
            .unwrap_or_else(|| panic!("no finding from {name}: {findings:#?}"))
    };
    for name in ["audit-relay-loopback", "audit-relay-server-address"] {
        let relay = find(&checks, name);
        assert_eq!(relay.status, Status::Fail, "{relay:?}");
        assert!(relay.value.starts_with("accepted: "), "{relay:?}");
        let finding = found(name);
        assert_eq!(finding.severity, Severity::Critical, "{finding:?}");
        assert!(finding.detail.contains("--allow-peer"), "{finding:?}");
        assert!(
            finding.detail.contains("CreatePermission 127.0.0.1:"),
            "{finding:?}"
        );
        assert!(!finding.title.contains('\n'), "{finding:?}");
    }
    let loopback = find(&checks, "audit-relay-loopback");
    assert!(
        loopback.value.contains("127.0.0.1 (ChannelBind)"),
        "{loopback:?}"
    );
    assert!(
        found("audit-relay-loopback")
            .detail
            .contains("allow-loopback-peers")
    );
    assert!(
        find(&checks, "audit-relay-server-address")
            .value
            .contains(&server.addr.to_string())
    );
    // A fresh allocation after each granted probe, never more than one at a time.
    let made = all_released(&server);
    assert!((3.0..=12.0).contains(&made), "{made} allocations");
    // Everything outside 127.0.0.0/8 is still refused.
    assert_eq!(findings.len(), 2, "{findings:#?}");
    for name in [
        "audit-relay-unspecified",
        "audit-relay-private",
        "audit-relay-metadata",
    ] {
        assert_eq!(find(&checks, name).status, Status::Pass, "{name}");
    }
}

#[tokio::test]
async fn without_credentials_only_strangers_are_audited() {
    let server = Server::start(&["--user", "alice:secret"]);
    let (checks, findings) = audit(&target(&server), &settings(false)).await;
    assert!(findings.is_empty(), "{findings:#?}");
    strangers_pass(&checks);
    assert_eq!(
        server.metric("icebreaker_turn_allocations_created_total"),
        0.0
    );
    for name in RELAY_CHECKS {
        let relay = find(&checks, name);
        assert_eq!(relay.status, Status::Skip, "{relay:?}");
        let explanation = relay.explanation.as_deref().unwrap_or_default();
        assert!(explanation.contains("credentials"), "{relay:?}");
    }
}

#[tokio::test]
async fn a_long_software_attribute_is_disclosure_and_amplification() {
    let software = "icebreaker 0.1.0 (built for the audit test)";
    let server = Server::start(&["--user", "alice:secret", "--software", software]);
    let (checks, findings) = audit(&target(&server), &settings(false)).await;
    let disclosed = find(&checks, "audit-software");
    assert_eq!(disclosed.status, Status::Fail, "{disclosed:?}");
    assert!(disclosed.value.contains(software), "{disclosed:?}");
    let amplification = find(&checks, "audit-amplification");
    assert_eq!(amplification.status, Status::Fail, "{amplification:?}");
    let severities: Vec<(&str, Severity)> = findings
        .iter()
        .map(|f| (f.check.as_str(), f.severity))
        .collect();
    assert_eq!(
        severities,
        [
            ("audit-amplification", Severity::Medium),
            ("audit-software", Severity::Low)
        ],
        "{findings:#?}"
    );
    for finding in &findings {
        assert!(
            finding.detail.contains("no-software-attribute"),
            "{finding:?}"
        );
        assert!(finding.detail.contains("--software"), "{finding:?}");
    }
}

/// A server that relays for anyone and names itself: every Binding and every Allocate with
/// REQUESTED-TRANSPORT succeeds. Counts the Refresh requests with LIFETIME 0 it gets.
fn open_relay() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let released = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&released);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut out = [0u8; 256];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let Ok(request) = Message::parse(&buf[..len]) else {
                continue;
            };
            let (method, id) = (request.method(), request.transaction_id());
            let transport = request.get::<RequestedTransport>().ok().flatten();
            let success = MessageType::new(method, Class::Success);
            let mut writer = MessageWriter::new(&mut out, success, id).unwrap();
            match method {
                Method::ALLOCATE if transport.is_some() => {
                    writer.add(&XorRelayedAddress(addr)).unwrap();
                    writer.add(&Lifetime(600)).unwrap();
                }
                Method::REFRESH => {
                    if request.get::<Lifetime>().ok().flatten() == Some(Lifetime(0)) {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    writer.add(&Lifetime(0)).unwrap();
                }
                _ => writer.add(&XorMappedAddress(from)).unwrap(),
            }
            writer.add(&Software("OpenRelay 1.2.3")).unwrap();
            let len = writer.finish();
            let _ = socket.send_to(&out[..len], from);
        }
    });
    (addr, released)
}

#[tokio::test]
async fn an_open_relay_is_critical_and_its_allocation_is_released() {
    let (addr, released) = open_relay();
    let target = Target {
        uri: format!("turn:{addr}").parse().unwrap(),
        server: addr,
    };
    let (checks, findings) = audit(&target, &settings(false)).await;
    let open = find(&checks, "audit-unauthenticated-allocate");
    assert_eq!(open.status, Status::Fail, "{open:?}");
    assert_eq!(open.value, format!("success, relayed {addr}"));
    let critical = findings
        .iter()
        .find(|f| f.severity == Severity::Critical)
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(critical.check, "audit-unauthenticated-allocate");
    assert!(critical.detail.contains("no-auth"), "{critical:?}");
    assert_eq!(released.load(Ordering::SeqCst), 1);
    assert_eq!(find(&checks, "audit-software").status, Status::Fail);
}
