//! What the probe's integration tests share.

#![allow(dead_code, unreachable_pub, clippy::panic)]

use std::time::Duration;

use ice_probe::report::{Check, Report, Severity, Status};
use ice_probe::tls::TlsOptions;
use ice_probe::{Credentials, Settings, run};
use icebreaker_ice::uri::ServerUri;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// The settings of a probe as `alice:secret`, waiting 2 s for each answer.
pub fn as_alice() -> Settings {
    Settings {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "secret".into(),
            rest: false,
        }),
        timeout: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// `settings`, trusting `ca` besides the system's roots.
pub fn trusting(ca: Vec<CertificateDer<'static>>, settings: Settings) -> Settings {
    Settings {
        tls: TlsOptions {
            ca,
            insecure: false,
        },
        ..settings
    }
}

/// Probes `uri` with `settings`.
pub async fn probe(uri: &str, settings: &Settings) -> Report {
    let uri: ServerUri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
    run::run(&[uri], settings).await
}

/// The check named `name`; the test fails without one.
pub fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:#?}"))
}

/// `check`'s explanation, empty without one.
pub fn explanation(check: &Check) -> &str {
    check.explanation.as_deref().unwrap_or_default()
}

/// After the handshake check `failed` failed, the Binding and TURN checks were skipped for it:
/// they would fail the same way.
pub fn assert_skipped_after(checks: &[Check], failed: &str) {
    for name in ["binding", "allocate", "deallocate"] {
        let check = find(checks, name);
        assert_eq!(check.status, Status::Skip, "{check:#?}");
        assert_eq!(
            explanation(check),
            format!("depends on {failed}, which failed")
        );
    }
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
        dtls: false,
        rfc5780: false,
        extra: &["--allow-loopback-peers"],
    })
}

/// coturn on loopback for the DTLS tests: UDP, and with `dtls` DTLS on a port of its own with
/// a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1; loopback peers allowed.
pub fn start_dtls_coturn(dtls: bool) -> icebreaker_tests::Coturn {
    dtls_coturn_serving(dtls, |dir| {
        icebreaker_tests::test_certificate(dir, &["localhost", "127.0.0.1"])
    })
}

/// As [`start_dtls_coturn`], with the certificate `make` writes into the directory it is given.
pub fn dtls_coturn_serving(
    dtls: bool,
    make: impl FnOnce(&std::path::Path) -> icebreaker_tests::TestCertificate,
) -> icebreaker_tests::Coturn {
    icebreaker_tests::Coturn::start_with_certificate(
        icebreaker_tests::CoturnListeners {
            udp: true,
            tcp: false,
            tls: false,
            dtls,
            rfc5780: false,
            extra: &["--allow-loopback-peers"],
        },
        make,
    )
}

pub type RelayCheck = (String, Status, String);

/// The relay checks' statuses and values, and the relay findings, of an audit.
pub fn relay_outcome(report: &Report) -> (Vec<RelayCheck>, Vec<(Severity, String)>) {
    let checks = report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("audit-relay-"))
        .map(|c| (c.name.clone(), c.status, c.value.clone()))
        .collect::<Vec<_>>();
    let findings = report
        .findings
        .iter()
        .filter(|f| f.check.starts_with("audit-relay-"))
        .map(|f| (f.severity, f.check.clone()))
        .collect();
    (checks, findings)
}

/// The names and statuses of relay checks, without their values (which name ports that differ
/// from one allocation to the next).
pub fn statuses(checks: &[RelayCheck]) -> Vec<(String, Status)> {
    checks.iter().map(|(n, s, _)| (n.clone(), *s)).collect()
}
