//! What a failed TLS or DTLS handshake means for the operator: the likely cause in plain
//! words, with what to do.

use tokio_rustls::rustls::{self, AlertDescription, CertificateError};

use super::{Failure, Protocol, TlsFailure, cert, unix_now};

impl TlsFailure {
    /// The cause in plain words with what to do, for a client connecting to `host`.
    pub fn explain(&self, host: &str) -> String {
        if self.protocol == Protocol::Dtls {
            return self.explain_dtls(host);
        }
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
                 version or cipher suite with this client (TLS 1.2 and 1.3 with current \
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
            Failure::PortUnreachable => "nothing listens on this port".into(),
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

    /// [`TlsFailure::explain`] for a DTLS handshake: what differs from TLS is the
    /// transport's (no connection, ICMP, silence) and what the DTLS library offers.
    fn explain_dtls(&self, host: &str) -> String {
        let mut text = match &self.failure {
            Failure::Certificate(error) => explain_certificate(error, self, host),
            Failure::Alert(
                alert @ (AlertDescription::HandshakeFailure
                | AlertDescription::ProtocolVersion
                | AlertDescription::InsufficientSecurity
                | AlertDescription::IllegalParameter),
            ) => format!(
                "the server ended the DTLS handshake with a {alert:?} alert: it shares no \
                 protocol version or cipher suite with this client, which speaks DTLS 1.2 and \
                 1.3 with ECDHE-ECDSA and AES-GCM or ChaCha20 only: a server with an RSA \
                 certificate is refused here (clients with other DTLS libraries may accept \
                 it); serve an ECDSA certificate for DTLS"
            ),
            Failure::Alert(alert) => {
                format!("the server ended the DTLS handshake with a {alert:?} alert")
            }
            Failure::Alpn => "the server chose an ALPN protocol this client did not offer".into(),
            Failure::NotTls(what) => format!(
                "the server answered the DTLS ClientHello with {what}: it speaks another \
                 protocol on this UDP port"
            ),
            Failure::Closed => "the server closed the DTLS association during the handshake: \
                                it refused this client"
                .into(),
            Failure::PortUnreachable => "the host answered the DTLS ClientHello with ICMP port \
                                         unreachable: nothing listens on that UDP port; check \
                                         the port and that the server runs (coturn serves DTLS \
                                         on its TLS listening port unless no-dtls is set)"
                .into(),
            Failure::Timeout(waited) => format!(
                "no answer to the DTLS ClientHello in {:.1} s: nothing speaks DTLS on that UDP \
                 port (coturn with no-dtls, or a plain STUN port, ignores it), a firewall on the \
                 way drops it, or the host is down",
                waited.as_secs_f64()
            ),
            Failure::Other(error) => format!("the DTLS handshake failed: {error}"),
        };
        if self.plain_stun == Some(true) {
            text.push_str(
                ". This port answers STUN over plain UDP: it is a turn:HOST:PORT or \
                 stun:HOST:PORT port; DTLS (turns:HOST?transport=udp) is usually on port 5349",
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
            if failure.leaf_only && !self_signed {
                text.push_str(
                    "; note: the probe saw the server's own certificate but not the \
                     intermediate certificates it sends (DTLS 1.3 encrypts them), so a \
                     certificate signed by an intermediate CA cannot be chained here: pass the \
                     intermediate with --ca FILE, or probe the same certificate over TLS \
                     (turns:)",
                );
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
pub(super) fn short_reason(error: &rustls::Error) -> String {
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
