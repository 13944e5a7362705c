//! The probe over TCP and TLS against coturn's `turnserver` on loopback: every TURN check over
//! `turn:…?transport=tcp` and `turns:`, the TLS handshake and certificate checks with and
//! without `--ca` and with `--insecure`, a plain TCP port probed as TLS, and the audit's relay
//! findings over TCP and TLS equal to those over UDP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ice_probe::Settings;
use ice_probe::report::{Report, Severity, Status};
use ice_probe::tls::load_ca;
use ice_probe::turn_checks::CHECK_NAMES;
use icebreaker_tests::have_tool;

mod common;
use common::{
    as_alice, assert_skipped_after, explanation, find, metric, probe, relay_outcome, start_coturn,
    statuses, trusting,
};
use icebreaker_tests::Coturn;

fn trusting_coturn(coturn: &Coturn) -> Settings {
    trusting(load_ca(coturn.cert_path().unwrap()).unwrap(), as_alice())
}

/// Every TURN check passed with nothing lost, and the NAT checks were skipped as UDP's.
fn assert_turn_passed(report: &Report) {
    let checks = &report.checks;
    for name in ["connect", "binding", "mapped-address"]
        .into_iter()
        .chain(CHECK_NAMES)
    {
        let check = find(checks, name);
        assert_eq!(check.status, Status::Pass, "{check:#?}");
    }
    for name in ["relay-data", "channel-data"] {
        let check = find(checks, name);
        assert_eq!(metric(check, "loss_ratio"), 0.0, "{check:#?}");
    }
    let nat = find(checks, "nat-mapping");
    assert_eq!(nat.status, Status::Skip);
    assert!(explanation(nat).contains("runs over UDP"), "{nat:#?}");
    assert!(metric(find(checks, "connect"), "connect_seconds") > 0.0);
}

#[tokio::test]
async fn every_turn_check_passes_over_tcp() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_coturn(false);
    let report = probe(&format!("turn:{}?transport=tcp", coturn.addr), &as_alice()).await;
    assert_turn_passed(&report);
    assert!(report.checks.iter().all(|c| c.name != "tls"), "{report:#?}");
    let mapped = find(&report.checks, "mapped-address");
    assert!(mapped.value.contains("no NAT"), "{mapped:#?}");
    assert_eq!(report.exit_code(), 0, "{report:#?}");
}

#[tokio::test]
async fn turns_with_the_ca_passes_and_reports_the_handshake() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_coturn(true);
    let tls_port = coturn.tls.unwrap().port();
    // By address (verified against the certificate's IP) and by name (SNI).
    for host in ["127.0.0.1", "localhost"] {
        let report = probe(
            &format!("turns:{host}:{tls_port}"),
            &trusting_coturn(&coturn),
        )
        .await;
        assert_turn_passed(&report);
        let tls = find(&report.checks, "tls");
        assert_eq!(tls.status, Status::Pass, "{tls:#?}");
        assert!(
            tls.value.starts_with("TLS 1.3, ") || tls.value.starts_with("TLS 1.2, "),
            "{tls:#?}"
        );
        assert!(tls.value.contains("ALPN stun.turn"), "{tls:#?}");
        assert!(metric(tls, "tls_handshake_seconds") > 0.0);
        let certificate = find(&report.checks, "tls-certificate");
        assert_eq!(certificate.status, Status::Pass, "{certificate:#?}");
        assert!(
            certificate
                .value
                .contains("(localhost, 127.0.0.1), self-signed"),
            "{certificate:#?}"
        );
        assert!(
            certificate.value.contains("1 --ca certificate"),
            "{certificate:#?}"
        );
        assert!(metric(certificate, "tls_certificate_expiry_seconds") > 86_400.0);
        assert_eq!(report.exit_code(), 0, "{report:#?}");
    }
}

#[tokio::test]
async fn turns_without_the_ca_fails_with_the_unknown_issuer() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_coturn(true);
    let uri = format!("turns:{}", coturn.tls.unwrap());
    let report = probe(&uri, &as_alice()).await;
    let tls = find(&report.checks, "tls");
    assert_eq!(tls.status, Status::Fail, "{tls:#?}");
    assert!(explanation(tls).contains("unknown issuer"), "{tls:#?}");
    assert!(explanation(tls).contains("self-signed"), "{tls:#?}");
    assert!(explanation(tls).contains("--ca FILE"), "{tls:#?}");
    let certificate = find(&report.checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Fail, "{certificate:#?}");
    assert!(certificate.value.contains("localhost"), "{certificate:#?}");
    // Nothing else is tried: it would fail the same way.
    assert_skipped_after(&report.checks, "tls");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn insecure_passes_and_says_the_certificate_is_unverified() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_coturn(true);
    let uri = format!("turns:{}", coturn.tls.unwrap());
    let mut settings = as_alice();
    settings.tls.insecure = true;
    let report = probe(&uri, &settings).await;
    assert_turn_passed(&report);
    assert_eq!(find(&report.checks, "tls").status, Status::Pass);
    let certificate = find(&report.checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Skip, "{certificate:#?}");
    assert_eq!(
        explanation(certificate),
        "not verified (--insecure): verification would have failed: unknown issuer"
    );
    assert!(
        certificate.value.contains("self-signed"),
        "{certificate:#?}"
    );
    assert_eq!(report.exit_code(), 0, "{report:#?}");
}

#[tokio::test]
async fn a_plain_tcp_port_probed_as_tls_is_explained() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_coturn(false);
    let mut settings = as_alice();
    settings.timeout = Duration::from_secs(1);
    let report = probe(&format!("turns:{}", coturn.addr), &settings).await;
    assert_eq!(find(&report.checks, "connect").status, Status::Pass);
    let tls = find(&report.checks, "tls");
    assert_eq!(tls.status, Status::Fail, "{tls:#?}");
    let text = explanation(tls);
    assert!(text.contains("speaks no TLS"), "{text}");
    assert!(
        text.contains("answers STUN over plain TCP") && text.contains("?transport=tcp"),
        "{text}"
    );
    assert_eq!(find(&report.checks, "tls-certificate").status, Status::Skip);
    assert_eq!(report.exit_code(), 1);
}

/// A relay check's name, status and value.
#[tokio::test]
async fn the_audit_over_tcp_and_tls_finds_what_it_finds_over_udp() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_coturn(true);
    let mut settings = trusting_coturn(&coturn);
    settings.audit = true;
    let udp = probe(&format!("turn:{}", coturn.addr), &settings).await;
    let tcp = probe(&format!("turn:{}?transport=tcp", coturn.addr), &settings).await;
    let tls = probe(&format!("turns:{}", coturn.tls.unwrap()), &settings).await;
    let (udp_checks, udp_findings) = relay_outcome(&udp);
    assert_eq!(udp_checks.len(), 7, "{udp:#?}");
    for (name, report) in [("tcp", &tcp), ("tls", &tls)] {
        let (checks, findings) = relay_outcome(report);
        assert_eq!(statuses(&checks), statuses(&udp_checks), "{name}");
        assert_eq!(findings, udp_findings, "{name}");
        for critical in ["audit-relay-loopback", "audit-relay-metadata"] {
            assert!(
                findings.contains(&(Severity::Critical, critical.to_owned())),
                "{name}: {findings:?}"
            );
        }
        let loopback = find(&report.checks, "audit-relay-loopback");
        assert!(
            loopback
                .value
                .starts_with("accepted: 127.0.0.1, 127.1.2.3, 127.0.0.1 (ChannelBind)"),
            "{name}: {loopback:#?}"
        );
        let amplification = find(&report.checks, "audit-amplification");
        assert_eq!(amplification.status, Status::Skip, "{name}");
        assert!(explanation(amplification).contains("spoofed source"));
        assert_eq!(
            find(&report.checks, "audit-unauthenticated-allocate").status,
            Status::Pass,
            "{name}"
        );
    }
    // The relay-target values are the same, IP for IP, apart from the port of the server's
    // own address.
    let (tcp_checks, _) = relay_outcome(&tcp);
    for ((name, _, udp_value), (_, _, tcp_value)) in udp_checks.iter().zip(&tcp_checks) {
        if name != "audit-relay-server-address" {
            assert_eq!(udp_value, tcp_value, "{name}");
        }
    }
}

#[tokio::test]
async fn a_short_load_runs_over_tls() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_coturn(true);
    let mut settings = trusting_coturn(&coturn);
    settings.load = Some(ice_probe::LoadSettings {
        allocations: 4,
        duration: Duration::from_secs(1),
        rate: 20,
        size: 100,
    });
    let report = probe(&format!("turns:{}", coturn.tls.unwrap()), &settings).await;
    for name in ["load-allocate", "load-relay"] {
        let check = find(&report.checks, name);
        assert_eq!(check.status, Status::Pass, "{check:#?}");
    }
}
