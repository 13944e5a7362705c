//! The `tls` and `tls-certificate` checks against TLS servers written here, each with the
//! certificate or the misbehaviour a test needs: a CA-signed certificate over TLS 1.3 with
//! ALPN, an expired one, one for another name, a TLS 1.2 server without ALPN, and servers
//! that answer the ClientHello with HTTP or by closing the connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ice_probe::report::{Check, Status};
use ice_probe::stun_checks::binding_over_stream;
use ice_probe::tls::TlsOptions;
use ice_probe::{Settings, Target};
use icebreaker_wire::attr::XorMappedAddress;
use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

mod common;
use common::{explanation, find};

/// A test CA and what it signs.
struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Probe Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names`, valid until `not_after` (year) when given.
    fn sign(
        &self,
        names: &[&str],
        not_after: Option<i32>,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "turn.test");
        if let Some(year) = not_after {
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert, key)
    }
}

/// A TLS server on loopback with `cert`, answering STUN Binding requests, for a few
/// connections.
async fn tls_server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: bool,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    if alpn {
        config.alpn_protocols = vec![b"stun.turn".to_vec()];
    }
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    answer_bindings(stream, peer).await;
                }
            });
        }
    });
    addr
}

/// Answers up to 100 Binding requests on `stream` with the peer's address.
async fn answer_bindings(mut stream: impl AsyncRead + AsyncWrite + Unpin, peer: SocketAddr) {
    for _ in 0..100 {
        let mut header = [0u8; 20];
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut request = header.to_vec();
        request.resize(20 + len, 0);
        if stream.read_exact(&mut request[20..]).await.is_err() {
            return;
        }
        let Ok(message) = Message::parse(&request) else {
            return;
        };
        let mut out = vec![0u8; 128];
        let kind = MessageType::new(Method::BINDING, Class::Success);
        let mut writer = MessageWriter::new(&mut out, kind, message.transaction_id()).unwrap();
        writer.add(&XorMappedAddress(peer)).unwrap();
        let len = writer.finish();
        if stream.write_all(&out[..len]).await.is_err() {
            return;
        }
    }
}

/// A TCP server that answers whatever comes with `reply` and closes, for a few connections.
async fn rude_server(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let mut hello = [0u8; 512];
            let _ = tcp.read(&mut hello).await;
            let _ = tcp.write_all(reply).await;
        }
    });
    addr
}

/// The connection checks of `stuns:HOST:PORT`, trusting `ca`.
async fn probe(host: &str, server: SocketAddr, ca: Option<&Ca>) -> Vec<Check> {
    let target = Target {
        uri: format!("stuns:{host}:{}", server.port()).parse().unwrap(),
        server,
    };
    let settings = Settings {
        count: 3,
        timeout: Duration::from_secs(1),
        tls: TlsOptions {
            ca: ca.map(|ca| vec![ca.cert.clone()]).unwrap_or_default(),
            insecure: false,
        },
        ..Settings::default()
    };
    binding_over_stream(&target, &settings).await.0
}

#[tokio::test]
async fn a_ca_signed_certificate_verifies_over_tls_13_with_alpn() {
    let ca = Ca::new();
    let (cert, key) = ca.sign(&["localhost"], None);
    let server = tls_server(cert, key, &[&rustls::version::TLS13], true).await;
    let checks = probe("localhost", server, Some(&ca)).await;
    let tls = find(&checks, "tls");
    assert_eq!(tls.status, Status::Pass, "{tls:#?}");
    assert!(tls.value.starts_with("TLS 1.3, TLS13_"), "{tls:#?}");
    assert!(tls.value.contains("ALPN stun.turn"), "{tls:#?}");
    let certificate = find(&checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Pass, "{certificate:#?}");
    assert!(
        certificate
            .value
            .starts_with("CN=turn.test (localhost), issued by CN=Probe Test CA, expires "),
        "{certificate:#?}"
    );
    let binding = find(&checks, "binding");
    assert_eq!(binding.status, Status::Pass, "{binding:#?}");
    assert!(binding.value.contains("3 of 3 answered"), "{binding:#?}");
    assert_eq!(find(&checks, "mapped-address").status, Status::Pass);
}

#[tokio::test]
async fn tls_12_without_alpn_still_passes() {
    let ca = Ca::new();
    let (cert, key) = ca.sign(&["127.0.0.1"], None);
    let server = tls_server(cert, key, &[&rustls::version::TLS12], false).await;
    let checks = probe("127.0.0.1", server, Some(&ca)).await;
    let tls = find(&checks, "tls");
    assert_eq!(tls.status, Status::Pass, "{tls:#?}");
    assert!(tls.value.starts_with("TLS 1.2, TLS_ECDHE_"), "{tls:#?}");
    assert!(tls.value.contains("no ALPN"), "{tls:#?}");
}

#[tokio::test]
async fn an_expired_certificate_is_explained() {
    let ca = Ca::new();
    let (cert, key) = ca.sign(&["localhost"], Some(2020));
    let server = tls_server(cert, key, &[&rustls::version::TLS13], true).await;
    let checks = probe("localhost", server, Some(&ca)).await;
    let tls = find(&checks, "tls");
    assert_eq!(tls.status, Status::Fail, "{tls:#?}");
    assert!(
        explanation(tls).starts_with("the certificate expired on 2020-01-01 ("),
        "{tls:#?}"
    );
    assert!(explanation(tls).contains("renew it"), "{tls:#?}");
    let certificate = find(&checks, "tls-certificate");
    assert_eq!(certificate.status, Status::Fail, "{certificate:#?}");
    assert!(
        certificate.value.contains("expired 2020-01-01"),
        "{certificate:#?}"
    );
    assert_eq!(find(&checks, "binding").status, Status::Skip);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_explained() {
    let ca = Ca::new();
    let (cert, key) = ca.sign(&["other.test"], None);
    let server = tls_server(cert, key, &[&rustls::version::TLS13], true).await;
    let checks = probe("127.0.0.1", server, Some(&ca)).await;
    let tls = find(&checks, "tls");
    assert_eq!(tls.status, Status::Fail, "{tls:#?}");
    assert!(
        explanation(tls)
            .starts_with("the certificate is not valid for 127.0.0.1: it names other.test;"),
        "{tls:#?}"
    );
    let certificate = find(&checks, "tls-certificate");
    assert_eq!(
        explanation(certificate),
        "refused: not valid for this name (see tls)"
    );
}

#[tokio::test]
async fn a_server_answering_with_http_or_closing_speaks_no_tls() {
    let http = rude_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let checks = probe("127.0.0.1", http, None).await;
    let tls = find(&checks, "tls");
    assert_eq!(tls.status, Status::Fail, "{tls:#?}");
    assert!(explanation(tls).contains("is not TLS"), "{tls:#?}");
    // Neither does it answer plain STUN: no suggestion of ?transport=tcp.
    assert!(!explanation(tls).contains("transport=tcp"), "{tls:#?}");

    let closing = rude_server(b"").await;
    let checks = probe("127.0.0.1", closing, None).await;
    let tls = find(&checks, "tls");
    assert_eq!(tls.status, Status::Fail, "{tls:#?}");
    assert!(
        explanation(tls).starts_with("the server closed the connection during the TLS handshake"),
        "{tls:#?}"
    );
    assert_eq!(
        explanation(find(&checks, "tls-certificate")),
        "the handshake failed before a certificate came (see tls)"
    );
}
