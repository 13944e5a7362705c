//! TLS for `stuns:` and `turns:` URIs: the handshake with what it negotiated, the server's
//! certificate verified against the system's roots and `--ca` files (or looked past with
//! `--insecure`), and the `tls` and `tls-certificate` checks that report them.
//!
//! Every connection gets its own verifier, which records the certificate it saw and the
//! verdict: a failed handshake can then still show which certificate the server sent, and
//! with `--insecure` the report says whether verification would have passed.

pub mod cert;

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

/// The ALPN protocol of STUN and TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// The check of the handshake.
pub const TLS: &str = "tls";
/// The check of the server's certificate.
pub const TLS_CERTIFICATE: &str = "tls-certificate";

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
            .map_err(|e| TlsFailure::new(Failure::Other(e.to_string()), started.elapsed()))?;
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
                let mut failure = TlsFailure::new(classify(&error), took);
                failure.certificate = certificate;
                failure.roots_problem = self.roots_problem.clone();
                return Err(failure);
            }
            Err(_) => {
                let mut failure = TlsFailure::new(Failure::Timeout(timeout), took);
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
        let verification = match seen.map(|s| s.verdict) {
            Some(Ok(())) if !self.insecure => Verification::Verified(self.trusted.clone()),
            Some(verdict) => Verification::Skipped(verdict.err()),
            None => Verification::Skipped(None),
        };
        let handshake = Handshake {
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
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
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

/// What a successful handshake negotiated.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// `TLS 1.3` or `TLS 1.2`.
    pub version: String,
    /// `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: Option<String>,
    /// The key exchange group: `X25519`.
    pub group: Option<String>,
    /// The ALPN protocol the server chose; `None` when it chose none.
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
    /// No answer within the timeout.
    Timeout(Duration),
    /// Anything else.
    Other(String),
}

/// A failed handshake, with what could still be learnt.
#[derive(Clone, Debug)]
pub struct TlsFailure {
    /// Why it failed.
    pub failure: Failure,
    /// How long it ran.
    pub took: Duration,
    /// The server's certificate, when it sent one.
    pub certificate: Option<CertInfo>,
    /// Why this host has no roots, when that is part of the story.
    pub roots_problem: Option<String>,
    /// Whether the port answers a STUN Binding request over plain TCP, when the handshake
    /// failed as if the server spoke no TLS there; set by the caller that tried.
    pub plain_stun: Option<bool>,
}

impl TlsFailure {
    fn new(failure: Failure, took: Duration) -> TlsFailure {
        TlsFailure {
            failure,
            took,
            certificate: None,
            roots_problem: None,
            plain_stun: None,
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

    /// The cause in plain words with what to do, for a client connecting to `host`.
    pub fn explain(&self, host: &str) -> String {
        let mut text = match &self.failure {
            Failure::Certificate(error) => explain_certificate(error, self, host),
            Failure::Alert(AlertDescription::NoApplicationProtocol) => {
                "the server refused the ALPN protocol stun.turn (RFC 7443) with a \
                 no_application_protocol alert: it expects another protocol on this port"
                    .into()
            }
            Failure::Alert(
                alert @ (AlertDescription::HandshakeFailure
                | AlertDescription::ProtocolVersion
                | AlertDescription::InsufficientSecurity
                | AlertDescription::IllegalParameter),
            ) => format!(
                "the server ended the handshake with a {alert:?} alert: it shares no protocol \
                 version or cipher suite with this probe (TLS 1.2 and 1.3 with current \
                 ciphers, as browsers); a server that offers only TLS 1.0/1.1 or old ciphers \
                 is refused by browsers too"
            ),
            Failure::Alert(alert) => {
                format!("the server ended the handshake with a {alert:?} alert")
            }
            Failure::Alpn => "the server chose an ALPN protocol other than the stun.turn \
                              offered: it is not a STUN/TURN server"
                .into(),
            Failure::NotTls(what) => format!(
                "the server answered the TLS ClientHello with something that is not TLS \
                 ({what}): it speaks another protocol on this port"
            ),
            Failure::Closed => "the server closed the connection during the TLS handshake: \
                                it speaks no TLS on this port, or it refused this client"
                .into(),
            Failure::Timeout(waited) => format!(
                "no answer to the TLS ClientHello in {:.1} s: the server accepted the TCP \
                 connection but speaks no TLS on it (plain STUN over TCP waits for a STUN \
                 message), or it is overloaded",
                waited.as_secs_f64()
            ),
            Failure::Other(error) => format!("the TLS handshake failed: {error}"),
        };
        if self.plain_stun == Some(true) {
            text.push_str(
                ". This port answers STUN over plain TCP: it is a turn:HOST:PORT?transport=tcp \
                 port; TLS (turns:) is usually on port 5349",
            );
        }
        text
    }
}

/// The likely cause and fix of a refused certificate.
fn explain_certificate(error: &CertificateError, failure: &TlsFailure, host: &str) -> String {
    let now = unix_now();
    let self_signed = failure.certificate.as_ref().is_some_and(|c| c.self_issued);
    match error {
        CertificateError::UnknownIssuer => {
            let mut text = "the certificate is not signed by an authority this host trusts \
                            (unknown issuer)"
                .to_owned();
            if self_signed {
                text.push_str(", it is self-signed");
            }
            text.push_str(
                ": clients refuse it as well. Use a certificate from a public CA (for example \
                 Let's Encrypt) with its intermediate certificates; to probe a server with a \
                 private CA or a test certificate, pass that certificate with --ca FILE (or \
                 --insecure to look past it)",
            );
            if let Some(problem) = &failure.roots_problem {
                text.push_str(&format!("; note: {problem}"));
            }
            text
        }
        CertificateError::NotValidForNameContext { presented, .. } => {
            // The certificate's own subjectAltName reads better than rustls' debug forms.
            let names = match &failure.certificate {
                Some(certificate) if !certificate.names.is_empty() => certificate.names.clone(),
                _ => presented.clone(),
            };
            format!(
                "the certificate is not valid for {host}: it names {}; clients connecting to \
                 {host} refuse it. Get a certificate that names {host}, or give clients a URI \
                 with one of its names",
                if names.is_empty() {
                    "nothing usable".to_owned()
                } else {
                    names.join(", ")
                }
            )
        }
        CertificateError::NotValidForName => format!(
            "the certificate is not valid for {host}: clients connecting to {host} refuse it; \
             get a certificate that names {host}"
        ),
        CertificateError::ExpiredContext { not_after, .. } => {
            let not_after = i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX);
            format!(
                "the certificate expired on {} ({} days ago): clients refuse it; renew it \
                 (for example `certbot renew`) and make the server load the new one",
                cert::date(not_after),
                (now - not_after).div_euclid(86_400)
            )
        }
        CertificateError::Expired => "the certificate has expired: clients refuse it; renew \
                                      it and make the server load the new one"
            .into(),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "the certificate is not valid before {}: this host's clock is wrong, or the \
             certificate was installed early",
            cert::date(i64::try_from(not_before.as_secs()).unwrap_or(i64::MAX))
        ),
        CertificateError::NotValidYet => "the certificate is not valid yet: this host's clock \
                                          is wrong, or the certificate was installed early"
            .into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the certificate is not for TLS servers (its extended key usage lacks \
             serverAuth): clients refuse it"
                .into()
        }
        other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate (basicConstraints CA:TRUE) as its own: clients \
             refuse it. `openssl req -x509` makes such certificates unless given `-addext \
             basicConstraints=critical,CA:FALSE`; better, sign a server certificate with the CA"
                .into()
        }
        other => format!("the certificate is invalid ({other:?}): clients refuse it"),
    }
}

/// The short reason a certificate verification gives.
fn short_reason(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "unknown issuer".into()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "not valid for this name".into(),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired".into(),
        rustls::Error::InvalidCertificate(other)
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            "a CA certificate used as the server's own".into()
        }
        rustls::Error::InvalidCertificate(other) => format!("{other:?}"),
        other => other.to_string(),
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

/// The `tls` and `tls-certificate` checks of a handshake that succeeded.
pub fn checks(label: &str, handshake: &Handshake) -> Vec<Check> {
    let mut value = handshake.version.clone();
    for part in [&handshake.cipher_suite, &handshake.group]
        .into_iter()
        .flatten()
    {
        value.push_str(&format!(", {part}"));
    }
    match &handshake.alpn {
        Some(alpn) => value.push_str(&format!(", ALPN {alpn}")),
        None => value.push_str(", no ALPN (the server ignored stun.turn)"),
    }
    value.push_str(&format!(", {} ms", millis(handshake.took)));
    let tls = Check::pass(label, TLS, value)
        .with_metric("tls_handshake_seconds", handshake.took.as_secs_f64());
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

/// The `tls` and `tls-certificate` checks of a failed handshake with `host`.
pub fn failed_checks(label: &str, failure: &TlsFailure, host: &str) -> Vec<Check> {
    let explanation = failure.explain(host);
    let value = match &failure.failure {
        Failure::Certificate(_) => "certificate refused".to_owned(),
        Failure::Timeout(_) => "no handshake".to_owned(),
        _ => format!("failed after {} ms", millis(failure.took)),
    };
    let tls = Check::fail(label, TLS, value, explanation)
        .with_metric("tls_handshake_seconds", failure.took.as_secs_f64());
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
                format!("refused: {reason} (see tls)"),
            )
        }
        (_, Some(certificate)) => {
            let mut check = Check::skip(
                label,
                TLS_CERTIFICATE,
                "the handshake failed after the certificate (see tls)",
            );
            check.value = certificate.describe(unix_now());
            check
        }
        (_, None) => Check::skip(
            label,
            TLS_CERTIFICATE,
            "the handshake failed before a certificate came (see tls)",
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
        TlsFailure::new(failure, Duration::from_millis(3))
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
