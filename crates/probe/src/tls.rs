//! TLS for `stuns:` and `turns:` URIs: the handshake with what it negotiated, the server's
//! certificate verified against the system's roots and `--ca` files (or looked past with
//! `--insecure`), and the `tls` and `tls-certificate` checks that report them. DTLS
//! ([`crate::dtls`]) verifies its certificates with the same [`TlsClient`] and reports them
//! with the same checks, its handshake as `dtls`.
//!
//! Every connection gets its own verifier, which records the certificate it saw and the
//! verdict: a failed handshake can then still show which certificate the server sent, and
//! with `--insecure` the report says whether verification would have passed.

pub mod cert;
mod explain;

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::verify_tls13_signature;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring, verify_tls12_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, ProtocolVersion,
    RootCertStore, SignatureScheme,
};

use crate::report::Check;
use crate::stats::millis;
use cert::CertInfo;
use explain::short_reason;

/// The ALPN protocol of STUN and TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// The check of the handshake.
pub const TLS: &str = "tls";
/// The check of the server's certificate, over TLS and DTLS.
pub const TLS_CERTIFICATE: &str = "tls-certificate";

/// Which handshake a [`Handshake`] or a [`TlsFailure`] is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TLS over TCP: `turns:`, `stuns:`.
    Tls,
    /// DTLS over UDP: `turns:…?transport=udp`, `stuns:…?transport=udp`.
    Dtls,
}

impl Protocol {
    /// The check that reports the handshake: `tls` or `dtls`.
    pub const fn check(self) -> &'static str {
        match self {
            Protocol::Tls => TLS,
            Protocol::Dtls => crate::dtls::DTLS,
        }
    }

    /// `TLS` or `DTLS`, for explanations.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tls => "TLS",
            Protocol::Dtls => "DTLS",
        }
    }

    /// The metric of the handshake's duration.
    const fn metric(self) -> &'static str {
        match self {
            Protocol::Tls => "tls_handshake_seconds",
            Protocol::Dtls => "dtls_handshake_seconds",
        }
    }
}

/// What the command line says about trusting servers' certificates.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Certificates trusted besides the system's roots: a private CA, or a self-signed
    /// server certificate (`--ca`).
    pub ca: Vec<CertificateDer<'static>>,
    /// Accept any certificate (`--insecure`); the report says it was not verified.
    pub insecure: bool,
}

/// The certificates of a PEM file given with `--ca`.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("--ca {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--ca {}: not a readable PEM file ({e:?})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--ca {}: no certificate in it (a PEM file with -----BEGIN CERTIFICATE----- \
             blocks is expected)",
            path.display()
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("--ca {}: unusable certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

/// The system's trusted roots, read once per process: what `load_native_certs` found, and
/// what went wrong reading them.
struct SystemRoots {
    certs: Vec<CertificateDer<'static>>,
    problem: Option<String>,
}

fn system_roots() -> &'static SystemRoots {
    static ROOTS: OnceLock<SystemRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let problem = match (found.certs.is_empty(), found.errors.first()) {
            (true, Some(error)) => Some(format!("the system's roots could not be read: {error}")),
            (true, None) => {
                Some("the system has no trusted roots (install ca-certificates)".into())
            }
            (false, _) => None,
        };
        SystemRoots {
            certs: found.certs,
            problem,
        }
    })
}

/// Makes TLS connections with the run's trust settings.
#[derive(Debug)]
pub struct TlsClient {
    provider: Arc<CryptoProvider>,
    /// `None` when there is no root at all to verify with.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    insecure: bool,
    /// `system roots and 1 --ca certificate`, for the report.
    trusted: String,
    /// Why the system roots are missing, if they are.
    roots_problem: Option<String>,
}

impl TlsClient {
    /// A client trusting the system's roots and `options.ca`.
    pub fn new(options: &TlsOptions) -> TlsClient {
        let provider = Arc::new(ring::default_provider());
        let system = system_roots();
        let mut roots = RootCertStore::empty();
        let (system_count, _) = roots.add_parsable_certificates(system.certs.iter().cloned());
        let (ca_count, _) = roots.add_parsable_certificates(options.ca.iter().cloned());
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let system_roots = format!("{system_count} system root{}", plural(system_count));
        let ca_roots = format!("{ca_count} --ca certificate{}", plural(ca_count));
        let trusted = match (system_count, ca_count) {
            (_, 0) => system_roots,
            (0, _) => ca_roots,
            _ => format!("{system_roots} and {ca_roots}"),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok();
        TlsClient {
            provider,
            webpki,
            insecure: options.insecure,
            trusted,
            roots_problem: if ca_count == 0 {
                system.problem.clone()
            } else {
                None
            },
        }
    }

    /// Verifies `end_entity` with `intermediates` for `name` now, as the TLS handshake does
    /// (chain to a trusted root, the name, the validity period, the key usage), whatever
    /// `--insecure` says: for DTLS, whose library leaves this to the application.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
    ) -> Result<(), rustls::Error> {
        verify_with(
            self.webpki.as_deref(),
            end_entity,
            intermediates,
            name,
            UnixTime::now(),
        )
    }

    /// Whether `--insecure` lets a handshake go on whatever the certificate.
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// What a handshake that went through reports of the certificate's `verdict` (`None`
    /// when no certificate was verified).
    pub fn verification(&self, verdict: Option<Result<(), rustls::Error>>) -> Verification {
        match verdict {
            Some(Ok(())) if !self.insecure => Verification::Verified(self.trusted.clone()),
            Some(verdict) => Verification::Skipped(verdict.err()),
            None => Verification::Skipped(None),
        }
    }

    /// A handshake refused for the certificate's `error`, with the certificate `der`.
    pub fn refused(&self, error: rustls::Error, der: &[u8], protocol: Protocol) -> TlsFailure {
        let failure = match error {
            rustls::Error::InvalidCertificate(certificate) => Failure::Certificate(certificate),
            other => Failure::Other(other.to_string()),
        };
        let mut failure = TlsFailure::new(failure, Duration::ZERO, protocol);
        failure.certificate = cert::parse(der);
        failure.roots_problem = self.roots_problem.clone();
        failure
    }

    /// Runs the handshake on `tcp` for `name`, offering ALPN `stun.turn`, within `timeout`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
        timeout: Duration,
    ) -> Result<(TlsStream<TcpStream>, Handshake), TlsFailure> {
        let recorder = Arc::new(Recorder {
            provider: self.provider.clone(),
            webpki: self.webpki.clone(),
            insecure: self.insecure,
            seen: Mutex::new(None),
        });
        let started = Instant::now();
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| {
                TlsFailure::new(
                    Failure::Other(e.to_string()),
                    started.elapsed(),
                    Protocol::Tls,
                )
            })?;
        let mut config = config
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
        let connector = TlsConnector::from(Arc::new(config));
        let result = tokio::time::timeout(timeout, connector.connect(name, tcp)).await;
        let took = started.elapsed();
        let seen = recorder.seen.lock().ok().and_then(|mut seen| seen.take());
        let certificate = seen.as_ref().and_then(|s| cert::parse(&s.end_entity));
        let stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let mut failure = TlsFailure::new(classify(&error), took, Protocol::Tls);
                failure.certificate = certificate;
                failure.roots_problem = self.roots_problem.clone();
                return Err(failure);
            }
            Err(_) => {
                let mut failure = TlsFailure::new(Failure::Timeout(timeout), took, Protocol::Tls);
                failure.certificate = certificate;
                return Err(failure);
            }
        };
        let (_, connection) = stream.get_ref();
        let version = match connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
            Some(ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "unknown version".to_owned(),
        };
        let verification = self.verification(seen.map(|s| s.verdict));
        let handshake = Handshake {
            protocol: Protocol::Tls,
            version,
            cipher_suite: connection
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
            group: connection
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name())),
            alpn: connection
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            took,
            certificate,
            verification,
        };
        Ok((stream, handshake))
    }
}

/// What a verifier saw: the server's certificate and whether it verified.
struct Seen {
    end_entity: CertificateDer<'static>,
    verdict: Result<(), rustls::Error>,
}

/// Verifies like rustls' own verifier and records what it saw; with `insecure`, accepts
/// whatever the verdict. The handshake's signatures are always checked: they prove the
/// server holds the key of the certificate it sent.
struct Recorder {
    provider: Arc<CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    insecure: bool,
    seen: Mutex<Option<Seen>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.webpki {
            Some(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ()),
            None => verify_with(None, end_entity, intermediates, server_name, now),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Seen {
                end_entity: end_entity.clone().into_owned(),
                verdict: verdict.clone(),
            });
        }
        match verdict {
            Err(error) if !self.insecure => Err(error),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies a server certificate with `webpki`, or refuses it as of an unknown issuer when
/// there is no root to verify with.
fn verify_with(
    webpki: Option<&WebPkiServerVerifier>,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    match webpki {
        Some(webpki) => webpki
            .verify_server_cert(end_entity, intermediates, name, &[], now)
            .map(|_| ()),
        None => Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )),
    }
}

/// What a successful handshake negotiated.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// TLS or DTLS.
    pub protocol: Protocol,
    /// `TLS 1.3`, `TLS 1.2`, `DTLS 1.3` or `DTLS 1.2`.
    pub version: String,
    /// `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: Option<String>,
    /// The key exchange group: `X25519`.
    pub group: Option<String>,
    /// The ALPN protocol the server chose; `None` when it chose none (and always over DTLS,
    /// where the probe offers none).
    pub alpn: Option<String>,
    /// From the ClientHello to the end of the handshake.
    pub took: Duration,
    /// The server's certificate, when it could be read.
    pub certificate: Option<CertInfo>,
    /// Whether the certificate was verified.
    pub verification: Verification,
}

/// Whether the server's certificate was verified.
#[derive(Clone, Debug)]
pub enum Verification {
    /// Verified against these roots.
    Verified(String),
    /// Not verified (`--insecure`): the error verification would have given, if any.
    Skipped(Option<rustls::Error>),
}

/// Why a handshake failed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The certificate did not verify.
    Certificate(CertificateError),
    /// The server sent a TLS alert.
    Alert(AlertDescription),
    /// The server chose an ALPN protocol this probe did not offer.
    Alpn,
    /// The server's bytes are not TLS.
    NotTls(String),
    /// The server closed the connection during the handshake.
    Closed,
    /// DTLS: the host answered with ICMP port unreachable.
    PortUnreachable,
    /// No answer within the timeout.
    Timeout(Duration),
    /// Anything else.
    Other(String),
}

/// A failed handshake, with what could still be learnt.
#[derive(Clone, Debug)]
pub struct TlsFailure {
    /// TLS or DTLS.
    pub protocol: Protocol,
    /// Why it failed.
    pub failure: Failure,
    /// How long it ran.
    pub took: Duration,
    /// The server's certificate, when it sent one.
    pub certificate: Option<CertInfo>,
    /// Why this host has no roots, when that is part of the story.
    pub roots_problem: Option<String>,
    /// Whether the port answers a STUN Binding request over plain TCP (for DTLS, plain
    /// UDP), when the handshake failed as if the server spoke no TLS there; set by the caller
    /// that tried.
    pub plain_stun: Option<bool>,
    /// The certificate was verified without the intermediates the server sent (DTLS 1.3
    /// encrypts them out of the probe's sight).
    pub leaf_only: bool,
}

impl TlsFailure {
    /// A failure of a `protocol` handshake that ran for `took`.
    pub fn new(failure: Failure, took: Duration, protocol: Protocol) -> TlsFailure {
        TlsFailure {
            protocol,
            failure,
            took,
            certificate: None,
            roots_problem: None,
            plain_stun: None,
            leaf_only: false,
        }
    }

    /// Whether the failure looks like a port that speaks no TLS, so that trying plain STUN
    /// over TCP there is worth it.
    pub fn maybe_plain(&self) -> bool {
        matches!(
            self.failure,
            Failure::NotTls(_) | Failure::Closed | Failure::Timeout(_)
        )
    }
}

/// The failure a handshake's I/O error stands for.
fn classify(error: &io::Error) -> Failure {
    if let Some(error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match error {
            rustls::Error::InvalidCertificate(certificate) => {
                Failure::Certificate(certificate.clone())
            }
            rustls::Error::AlertReceived(alert) => Failure::Alert(*alert),
            rustls::Error::NoApplicationProtocol => Failure::Alpn,
            rustls::Error::InvalidMessage(what) => Failure::NotTls(format!("{what:?}")),
            other => Failure::Other(other.to_string()),
        };
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Failure::Closed,
        _ => Failure::Other(error.to_string()),
    }
}

/// The `tls` (or `dtls`) and `tls-certificate` checks of a handshake that succeeded.
pub fn checks(label: &str, handshake: &Handshake) -> Vec<Check> {
    let protocol = handshake.protocol;
    let mut value = handshake.version.clone();
    for part in [&handshake.cipher_suite, &handshake.group]
        .into_iter()
        .flatten()
    {
        value.push_str(&format!(", {part}"));
    }
    match (&handshake.alpn, protocol) {
        (Some(alpn), _) => value.push_str(&format!(", ALPN {alpn}")),
        (None, Protocol::Tls) => value.push_str(", no ALPN (the server ignored stun.turn)"),
        // The DTLS library offers no ALPN.
        (None, Protocol::Dtls) => {}
    }
    value.push_str(&format!(", {} ms", millis(handshake.took)));
    let tls = Check::pass(label, protocol.check(), value)
        .with_metric(protocol.metric(), handshake.took.as_secs_f64());
    let now = unix_now();
    let described = handshake.certificate.as_ref().map_or_else(
        || "(certificate not readable)".to_owned(),
        |c| c.describe(now),
    );
    let certificate = match &handshake.verification {
        Verification::Verified(trusted) => Check::pass(
            label,
            TLS_CERTIFICATE,
            format!("{described}; verified against {trusted}"),
        ),
        Verification::Skipped(would) => {
            let verdict = match would {
                Some(error) => format!("verification would have failed: {}", short_reason(error)),
                None => "verification would have passed".to_owned(),
            };
            let mut check = Check::skip(
                label,
                TLS_CERTIFICATE,
                format!("not verified (--insecure): {verdict}"),
            );
            check.value = described;
            check
        }
    };
    let certificate = match handshake.certificate.as_ref().and_then(|c| c.not_after) {
        Some(not_after) => {
            certificate.with_metric("tls_certificate_expiry_seconds", (not_after - now) as f64)
        }
        None => certificate,
    };
    vec![tls, certificate]
}

/// The `tls` (or `dtls`) and `tls-certificate` checks of a failed handshake with `host`.
pub fn failed_checks(label: &str, failure: &TlsFailure, host: &str) -> Vec<Check> {
    let protocol = failure.protocol;
    let handshake = protocol.check();
    let explanation = failure.explain(host);
    let value = match &failure.failure {
        Failure::Certificate(_) => "certificate refused".to_owned(),
        Failure::Timeout(_) | Failure::PortUnreachable => "no handshake".to_owned(),
        _ => format!("failed after {} ms", millis(failure.took)),
    };
    let tls = Check::fail(label, handshake, value, explanation)
        .with_metric(protocol.metric(), failure.took.as_secs_f64());
    let certificate = match (&failure.failure, &failure.certificate) {
        (Failure::Certificate(error), certificate) => {
            let described = certificate.as_ref().map_or_else(
                || "(certificate not readable)".to_owned(),
                |c| c.describe(unix_now()),
            );
            let reason = short_reason(&rustls::Error::InvalidCertificate(error.clone()));
            Check::fail(
                label,
                TLS_CERTIFICATE,
                described,
                format!("refused: {reason} (see {handshake})"),
            )
        }
        (_, Some(certificate)) => {
            let mut check = Check::skip(
                label,
                TLS_CERTIFICATE,
                format!("the handshake failed after the certificate (see {handshake})"),
            );
            check.value = certificate.describe(unix_now());
            check
        }
        (_, None) => Check::skip(
            label,
            TLS_CERTIFICATE,
            format!("the handshake failed before a certificate came (see {handshake})"),
        ),
    };
    vec![tls, certificate]
}

fn unix_now() -> i64 {
    i64::try_from(crate::cli::unix_now().as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn failure(failure: Failure) -> TlsFailure {
        TlsFailure::new(failure, Duration::from_millis(3), Protocol::Tls)
    }

    #[test]
    fn failures_are_explained_with_what_to_do() {
        let unknown = failure(Failure::Certificate(CertificateError::UnknownIssuer));
        let text = unknown.explain("turn.example.org");
        assert!(
            text.contains("unknown issuer") && text.contains("--ca FILE"),
            "{text}"
        );

        let mismatch = failure(Failure::Certificate(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("turn.example.org").unwrap(),
                presented: vec!["DnsName(\"other.example.org\")".into()],
            },
        ));
        let text = mismatch.explain("turn.example.org");
        assert!(text.contains("not valid for turn.example.org"), "{text}");
        assert!(text.contains("other.example.org"), "{text}");

        let expired = failure(Failure::Certificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
        }));
        let text = expired.explain("h");
        assert!(text.contains("expired on 2023-11-14"), "{text}");

        let mut timeout = failure(Failure::Timeout(Duration::from_secs(3)));
        assert!(timeout.maybe_plain());
        timeout.plain_stun = Some(true);
        let text = timeout.explain("h");
        assert!(
            text.contains("no answer to the TLS ClientHello in 3.0 s"),
            "{text}"
        );
        assert!(text.contains("?transport=tcp"), "{text}");
        assert!(failure(Failure::Closed).explain("h").contains("closed"));
        let alert = failure(Failure::Alert(AlertDescription::ProtocolVersion));
        assert!(alert.explain("h").contains("TLS 1.2 and 1.3"));
        assert!(!alert.maybe_plain());
    }

    #[test]
    fn dtls_failures_speak_of_udp_and_name_the_dtls_check() {
        let dtls = |failure| TlsFailure::new(failure, Duration::from_millis(3), Protocol::Dtls);
        let mut timeout = dtls(Failure::Timeout(Duration::from_secs(2)));
        assert!(timeout.maybe_plain());
        timeout.plain_stun = Some(true);
        let text = timeout.explain("h");
        assert!(
            text.starts_with("no answer to the DTLS ClientHello in 2.0 s"),
            "{text}"
        );
        assert!(text.contains("answers STUN over plain UDP"), "{text}");
        let text = dtls(Failure::PortUnreachable).explain("h");
        assert!(text.contains("ICMP port unreachable"), "{text}");
        let text = dtls(Failure::Alert(AlertDescription::HandshakeFailure)).explain("h");
        assert!(text.contains("RSA certificate"), "{text}");
        let mut unknown = dtls(Failure::Certificate(CertificateError::UnknownIssuer));
        let text = unknown.explain("h");
        assert!(
            !text.contains("intermediate certificates it sends"),
            "{text}"
        );
        unknown.leaf_only = true;
        let text = unknown.explain("h");
        assert!(text.contains("DTLS 1.3 encrypts them"), "{text}");

        let label = "turns:h:5349?transport=udp";
        let checks = failed_checks(label, &dtls(Failure::PortUnreachable), "h");
        assert_eq!(checks[0].name, crate::dtls::DTLS);
        assert_eq!(checks[0].value, "no handshake");
        assert_eq!(checks[0].metrics[0].name, "dtls_handshake_seconds");
        assert_eq!(
            checks[1].explanation.as_deref(),
            Some("the handshake failed before a certificate came (see dtls)")
        );
    }

    #[test]
    fn a_dtls_handshake_is_reported_without_alpn() {
        let handshake = Handshake {
            protocol: Protocol::Dtls,
            version: "DTLS 1.2".into(),
            cipher_suite: Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()),
            group: Some("X25519".into()),
            alpn: None,
            took: Duration::from_millis(4),
            certificate: None,
            verification: Verification::Verified("1 --ca certificate".into()),
        };
        let checks = checks("turns:h:5349?transport=udp", &handshake);
        assert_eq!(checks[0].name, crate::dtls::DTLS);
        assert_eq!(
            checks[0].value,
            "DTLS 1.2, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, X25519, 4.00 ms"
        );
        assert_eq!(checks[1].name, TLS_CERTIFICATE);
        assert_eq!(checks[1].status, crate::report::Status::Pass);
    }

    #[test]
    fn io_errors_are_classified() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert!(matches!(classify(&eof), Failure::Closed));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(classify(&reset), Failure::Closed));
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            classify(&refused),
            Failure::Certificate(CertificateError::UnknownIssuer)
        ));
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
        );
        assert!(matches!(classify(&alert), Failure::Alert(_)));
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("ice-probe-ca-{}", std::process::id()));
        let made = icebreaker_tests::test_certificate(&dir, &["localhost"]);
        assert_eq!(load_ca(&made.cert_path).unwrap().len(), 1);
        let error = load_ca(&made.key_path).unwrap_err();
        assert!(error.contains("no certificate"), "{error}");
        let error = load_ca(&dir.join("missing.pem")).unwrap_err();
        assert!(error.contains("missing.pem"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
