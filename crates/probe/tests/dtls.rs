//! The probe over DTLS (`turns:…?transport=udp`, `stuns:…?transport=udp`) against coturn's
//! `turnserver` on loopback, which speaks DTLS 1.2: every check of a clean run, a certificate
//! chain through an intermediate CA, the certificate refused for an unknown issuer and for
//! another name, `--insecure`, a port without DTLS, and the audit and a short load over DTLS.
//! Then DTLS 1.3: against `icebreaker serve` (DTLS on its TLS address over UDP), and against a
//! server written here with the probe's own DTLS library, which asks for a client
//! certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Dtls, DtlsCertificate, Output};
use icebreaker_wire::attr::XorMappedAddress;
use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method};
use tokio::net::UdpSocket;

use ice_probe::report::{Check, Report, Severity, Status};
use ice_probe::stun_checks::binding_over_dtls;
use ice_probe::tls::load_ca;
use ice_probe::turn_checks::CHECK_NAMES;
use ice_probe::{LoadSettings, Settings, Target};
use icebreaker_tests::{TestCertificate, TlsServer, have_tool};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls::pki_types::CertificateDer;

mod common;
use common::{
    as_alice, assert_skipped_after, dtls_coturn_serving, explanation, find, metric, probe,
    relay_outcome, start_dtls_coturn, statuses, trusting,
};

fn settings() -> Settings {
    Settings {
        count: 3,
        ..as_alice()
    }
}

fn trusting_coturn(coturn: &icebreaker_tests::Coturn) -> Settings {
    trusting(
        load_ca(coturn.cert_path().expect("coturn serves DTLS")).unwrap(),
        settings(),
    )
}

/// The DTLS and Binding checks of `turns:HOST:PORT?transport=udp` with `server` behind any
/// `host`, resolvable or not.
async fn probe_as(host: &str, server: SocketAddr, settings: &Settings) -> Vec<Check> {
    let target = Target {
        uri: format!("turns:{host}:{}?transport=udp", server.port())
            .parse()
            .unwrap(),
        server,
    };
    binding_over_dtls(&target, settings).await.0
}

/// The DTLS handshake, the certificate and every TURN check passed with nothing lost; NAT
/// discovery was skipped.
fn assert_all_passed(report: &Report) {
    let checks = &report.checks;
    for name in ["dtls", "tls-certificate", "binding", "mapped-address"]
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
    assert_eq!(nat.status, Status::Skip, "{nat:#?}");
    assert!(
        explanation(nat).contains("inside one DTLS association"),
        "{nat:#?}"
    );
    assert!(
        checks
            .iter()
            .all(|c| c.name != "connect" && c.name != "tls")
    );
    assert_eq!(report.exit_code(), 0, "{report:#?}");
}

#[tokio::test]
async fn every_check_passes_over_dtls() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_dtls_coturn(true);
    let report = probe(
        &format!("turns:{}?transport=udp", coturn.dtls_addr()),
        &trusting_coturn(&coturn),
    )
    .await;
    assert_all_passed(&report);
    let dtls = find(&report.checks, "dtls");
    // coturn's OpenSSL speaks DTLS 1.2; the suite and group come from its ServerHello and
    // ServerKeyExchange.
    assert!(
        dtls.value
            .starts_with("DTLS 1.2, TLS_ECDHE_ECDSA_WITH_AES_"),
        "{dtls:#?}"
    );
    assert!(!dtls.value.contains("ALPN"), "{dtls:#?}");
    assert!(metric(dtls, "dtls_handshake_seconds") > 0.0);
    let certificate = find(&report.checks, "tls-certificate");
    assert!(
        certificate
            .value
            .starts_with("CN=rcgen self signed cert (localhost, 127.0.0.1), self-signed"),
        "{certificate:#?}"
    );
    assert!(
        certificate.value.contains("verified against")
            && certificate.value.contains("1 --ca certificate"),
        "{certificate:#?}"
    );
    assert!(metric(certificate, "tls_certificate_expiry_seconds") > 86_400.0);
    let mapped = find(&report.checks, "mapped-address");
    assert!(mapped.value.contains("no NAT"), "{mapped:#?}");

    // stuns: by name: the name is checked against the certificate's DNS names.
    let port = coturn.dtls_addr().port();
    let report = probe(
        &format!("stuns:localhost:{port}?transport=udp"),
        &trusting_coturn(&coturn),
    )
    .await;
    for name in ["resolve", "dtls", "tls-certificate", "binding"] {
        let check = find(&report.checks, name);
        assert_eq!(check.status, Status::Pass, "{check:#?}");
    }
    assert!(report.checks.iter().all(|c| c.name != "allocate"));
    assert_eq!(report.exit_code(), 0, "{report:#?}");
}

/// A server certificate for localhost and 127.0.0.1 signed by an intermediate CA, which a
/// root CA signed.
struct Chain {
    /// The server's certificate, then the intermediate's, as coturn wants them.
    chain_pem: String,
    /// The server's key, PEM.
    key_pem: String,
    /// The server's certificate and key (PKCS#8), DER.
    leaf: DtlsCertificate,
    /// The root's certificate.
    root: CertificateDer<'static>,
}

impl Chain {
    /// Writes the chain and the key into `dir` for coturn.
    fn write(&self, dir: &Path) -> TestCertificate {
        let cert_path = dir.join("chain.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, &self.chain_pem).unwrap();
        std::fs::write(&key_path, &self.key_pem).unwrap();
        TestCertificate {
            cert_pem: self.chain_pem.clone(),
            key_pem: self.key_pem.clone(),
            cert_path,
            key_path,
        }
    }
}

fn chain_through_an_intermediate() -> Chain {
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca("Probe Test Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let intermediate_key = KeyPair::generate().unwrap();
    let intermediate_params = ca("Probe Test Intermediate");
    let intermediate = intermediate_params
        .signed_by(&intermediate_key, &root_issuer)
        .unwrap();
    let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "turn.test");
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &intermediate_issuer).unwrap();
    Chain {
        chain_pem: leaf.pem() + &intermediate.pem(),
        key_pem: key.serialize_pem(),
        leaf: DtlsCertificate {
            certificate: leaf.der().to_vec(),
            private_key: key.serialize_der(),
        },
        root: root.der().clone(),
    }
}

#[tokio::test]
async fn a_certificate_from_an_intermediate_ca_verifies_against_the_root() {
    if !have_tool("turnserver") {
        return;
    }
    let chain = chain_through_an_intermediate();
    let coturn = dtls_coturn_serving(true, |dir| chain.write(dir));
    // Only the root is trusted: the intermediate must come from the server's handshake.
    let settings = trusting(vec![chain.root.clone()], settings());
    let checks = probe_as("localhost", coturn.dtls_addr(), &settings).await;
    let dtls = find(&checks, "dtls");
    assert_eq!(dtls.status, Status::Pass, "{dtls:#?}");
    let certificate = find(&checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Pass, "{certificate:#?}");
    assert!(
        certificate.value.starts_with(
            "CN=turn.test (localhost, 127.0.0.1), issued by CN=Probe Test Intermediate"
        ),
        "{certificate:#?}"
    );
    assert_eq!(find(&checks, "binding").status, Status::Pass);
}

#[tokio::test]
async fn a_wrong_ca_fails_tls_certificate_as_an_unknown_issuer() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_dtls_coturn(true);
    let other_root = chain_through_an_intermediate().root;
    let report = probe(
        &format!("turns:{}?transport=udp", coturn.dtls_addr()),
        &trusting(vec![other_root], settings()),
    )
    .await;
    let dtls = find(&report.checks, "dtls");
    assert_eq!(dtls.status, Status::Fail, "{dtls:#?}");
    assert_eq!(dtls.value, "certificate refused");
    let text = explanation(dtls);
    assert!(
        text.starts_with(
            "the certificate is not signed by an authority this host trusts (unknown issuer), \
             it is self-signed"
        ),
        "{text}"
    );
    assert!(text.contains("--ca FILE"), "{text}");
    let certificate = find(&report.checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Fail, "{certificate:#?}");
    assert_eq!(
        explanation(certificate),
        "refused: unknown issuer (see dtls)"
    );
    assert!(
        certificate.value.contains("(localhost, 127.0.0.1)"),
        "{certificate:#?}"
    );
    // Nothing else is tried: it would fail the same way.
    assert_skipped_after(&report.checks, "dtls");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn insecure_passes_and_says_the_certificate_is_unverified() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_dtls_coturn(true);
    let mut settings = settings();
    settings.tls.insecure = true;
    let report = probe(
        &format!("turns:{}?transport=udp", coturn.dtls_addr()),
        &settings,
    )
    .await;
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
    for name in ["dtls", "binding"].into_iter().chain(CHECK_NAMES) {
        let check = find(&report.checks, name);
        assert_eq!(check.status, Status::Pass, "{check:#?}");
    }
    assert_eq!(report.exit_code(), 0, "{report:#?}");
}

#[tokio::test]
async fn a_certificate_for_other_names_is_refused() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_dtls_coturn(true);
    let checks = probe_as(
        "turn.example.org",
        coturn.dtls_addr(),
        &trusting_coturn(&coturn),
    )
    .await;
    let dtls = find(&checks, "dtls");
    assert_eq!(dtls.status, Status::Fail, "{dtls:#?}");
    assert!(
        explanation(dtls).starts_with(
            "the certificate is not valid for turn.example.org: it names localhost, 127.0.0.1;"
        ),
        "{dtls:#?}"
    );
    let certificate = find(&checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Fail, "{certificate:#?}");
    assert_eq!(
        explanation(certificate),
        "refused: not valid for this name (see dtls)"
    );
    assert_eq!(find(&checks, "binding").status, Status::Skip);
}

#[tokio::test]
async fn a_port_without_dtls_is_explained() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_dtls_coturn(false);
    let mut settings = settings();
    settings.timeout = Duration::from_secs(1);
    // The plain UDP port of a coturn without DTLS: the ClientHello gets no answer, a Binding
    // request over plain UDP does.
    let report = probe(&format!("turns:{}?transport=udp", coturn.addr), &settings).await;
    let dtls = find(&report.checks, "dtls");
    assert_eq!(dtls.status, Status::Fail, "{dtls:#?}");
    assert_eq!(dtls.value, "no handshake");
    let text = explanation(dtls);
    assert!(
        text.starts_with("no answer to the DTLS ClientHello in 1.0 s"),
        "{text}"
    );
    assert!(
        text.contains("This port answers STUN over plain UDP"),
        "{text}"
    );
    assert_eq!(
        explanation(find(&report.checks, "tls-certificate")),
        "the handshake failed before a certificate came (see dtls)"
    );
    assert_eq!(report.exit_code(), 1);
}

/// The relay checks' names and statuses, and the relay findings.
#[tokio::test]
async fn the_audit_and_a_load_run_over_dtls() {
    if !have_tool("turnserver") {
        return;
    }
    let coturn = start_dtls_coturn(true);
    let mut settings = trusting_coturn(&coturn);
    settings.audit = true;
    let udp = probe(&format!("turn:{}", coturn.addr), &settings).await;
    settings.load = Some(LoadSettings {
        allocations: 4,
        duration: Duration::from_secs(1),
        rate: 20,
        size: 100,
    });
    let dtls = probe(
        &format!("turns:{}?transport=udp", coturn.dtls_addr()),
        &settings,
    )
    .await;
    let (checks, findings) = relay_outcome(&dtls);
    assert_eq!(checks.len(), 7, "{dtls:#?}");
    let (udp_checks, udp_findings) = relay_outcome(&udp);
    assert_eq!(statuses(&checks), statuses(&udp_checks));
    assert_eq!(findings, udp_findings);
    assert!(
        findings.contains(&(Severity::Critical, "audit-relay-loopback".to_owned())),
        "{findings:?}"
    );
    let amplification = find(&dtls.checks, "audit-amplification");
    assert_eq!(amplification.status, Status::Skip);
    assert!(
        explanation(amplification).contains("cookie exchange"),
        "{amplification:#?}"
    );
    assert_eq!(
        find(&dtls.checks, "audit-unauthenticated-allocate").status,
        Status::Pass
    );
    for name in ["load-allocate", "load-relay"] {
        let check = find(&dtls.checks, name);
        assert_eq!(check.status, Status::Pass, "{check:#?}");
    }
}

#[tokio::test]
async fn every_check_passes_against_icebreaker_over_dtls_13() {
    let server = TlsServer::start("ice-probe-dtls", &["--user", "alice:secret"]);
    let settings = trusting(load_ca(&server.cert.cert_path).unwrap(), settings());
    let port = server.dtls_addr.port();
    let report = probe(&format!("turns:localhost:{port}?transport=udp"), &settings).await;
    assert_all_passed(&report);
    let dtls = find(&report.checks, "dtls");
    assert!(dtls.value.starts_with("DTLS 1.3, TLS13_"), "{dtls:#?}");
    let certificate = find(&report.checks, "tls-certificate");
    assert!(
        certificate.value.contains("(localhost), self-signed"),
        "{certificate:#?}"
    );
}

/// A DTLS server on loopback written with the probe's own DTLS library: DTLS 1.3 when the
/// client offers it, a client certificate required (the library's default), STUN Binding
/// requests answered with the client's address. One association per client address.
async fn dtls_server(certificate: DtlsCertificate) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let config = Arc::new(dimpl::Config::default());
        let mut sessions: HashMap<SocketAddr, Dtls> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        let mut out = vec![0u8; 65_536];
        loop {
            let received =
                tokio::time::timeout(Duration::from_millis(20), socket.recv_from(&mut buf)).await;
            let now = Instant::now();
            if let Ok(Ok((len, peer))) = received {
                let dtls = sessions
                    .entry(peer)
                    .or_insert_with(|| Dtls::new_auto(config.clone(), certificate.clone(), now));
                let fed = dtls
                    .handle_timeout(now)
                    .and_then(|()| dtls.handle_packet(&buf[..len]));
                if fed.is_err() {
                    sessions.remove(&peer);
                }
            }
            for (peer, dtls) in &mut sessions {
                let _ = dtls.handle_timeout(now);
                for request in drain(dtls, &mut out, &socket, *peer).await {
                    if let Some(answer) = binding_answer(&request, *peer) {
                        let _ = dtls.send_application_data(&answer);
                    }
                }
                drain(dtls, &mut out, &socket, *peer).await;
            }
        }
    });
    addr
}

/// Sends what `dtls` has to send to `peer`; the records it received.
async fn drain(
    dtls: &mut Dtls,
    out: &mut Vec<u8>,
    socket: &UdpSocket,
    peer: SocketAddr,
) -> Vec<Vec<u8>> {
    let mut received = Vec::new();
    loop {
        match dtls.poll_output(out) {
            Output::Packet(packet) => {
                let _ = socket.send_to(packet, peer).await;
            }
            Output::BufferTooSmall { needed } => out.resize(needed, 0),
            Output::ApplicationData(data) => received.push(data.to_vec()),
            Output::Timeout(_) => return received,
            _ => {}
        }
    }
}

/// The success answer to a Binding request: XOR-MAPPED-ADDRESS `peer`.
fn binding_answer(request: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
    let message = Message::parse(request).ok()?;
    let mut out = vec![0u8; 128];
    let kind = MessageType::new(Method::BINDING, Class::Success);
    let mut writer = MessageWriter::new(&mut out, kind, message.transaction_id()).ok()?;
    writer.add(&XorMappedAddress(peer)).ok()?;
    let len = writer.finish();
    out.truncate(len);
    Some(out)
}

#[tokio::test]
async fn dtls_13_with_a_client_certificate_asked_for_is_reported() {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let server = dtls_server(DtlsCertificate {
        certificate: made.cert.der().to_vec(),
        private_key: made.signing_key.serialize_der(),
    })
    .await;
    let checks = probe_as(
        "localhost",
        server,
        &trusting(vec![made.cert.der().clone()], settings()),
    )
    .await;
    let dtls = find(&checks, "dtls");
    assert_eq!(dtls.status, Status::Pass, "{dtls:#?}");
    assert!(dtls.value.starts_with("DTLS 1.3, TLS13_"), "{dtls:#?}");
    // The version, the suite and the group from the ServerHello, the time.
    assert_eq!(dtls.value.split(", ").count(), 4, "{dtls:#?}");
    let certificate = find(&checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Pass, "{certificate:#?}");
    assert!(
        certificate
            .value
            .starts_with("CN=rcgen self signed cert (localhost), self-signed"),
        "{certificate:#?}"
    );
    let binding = find(&checks, "binding");
    assert_eq!(binding.status, Status::Pass, "{binding:#?}");
    assert!(binding.value.contains("3 of 3 answered"), "{binding:#?}");
    assert_eq!(find(&checks, "mapped-address").status, Status::Pass);
}

#[tokio::test]
async fn over_dtls_13_an_intermediate_the_probe_cannot_see_is_explained() {
    // The library serves its own certificate only, as a server that sends its intermediate
    // looks to the probe under DTLS 1.3, which encrypts it.
    let chain = chain_through_an_intermediate();
    let server = dtls_server(chain.leaf.clone()).await;
    let checks = probe_as(
        "localhost",
        server,
        &trusting(vec![chain.root.clone()], settings()),
    )
    .await;
    let dtls = find(&checks, "dtls");
    assert_eq!(dtls.status, Status::Fail, "{dtls:#?}");
    let text = explanation(dtls);
    assert!(text.contains("(unknown issuer)"), "{text}");
    assert!(text.contains("DTLS 1.3 encrypts them"), "{text}");
    assert!(
        text.contains("pass the intermediate with --ca FILE"),
        "{text}"
    );
    let certificate = find(&checks, "tls-certificate");
    assert!(
        certificate
            .value
            .contains("issued by CN=Probe Test Intermediate"),
        "{certificate:#?}"
    );
}
