//! TURN over TLS and DTLS: the certificate, read from PEM files and replaced while the server
//! runs, and the rustls configuration every TLS listener shares.
//!
//! A renewal (certbot, cert-manager) rewrites the files; the server notices on SIGHUP or when
//! the files' size or time changes, loads the new pair, and hands it to the next handshakes.
//! Sessions already open keep theirs: nothing is dropped. A pair that does not load (half
//! written, key not matching) is refused and the old one stays.
//!
//! DTLS (dimpl) signs with ECDSA P-256 or P-384 only. Each load records whether the pair can
//! serve DTLS; once DTLS listens ([`CertificateStore::require_dtls`]), a pair that cannot is
//! refused like a broken one, so that a renewal never turns DTLS off behind the operator's back.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use dimpl::DtlsCertificate;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of STUN and TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// What identifies a version of the two files: a rewrite changes one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    cert: (Option<SystemTime>, u64),
    key: (Option<SystemTime>, u64),
}

impl FileStamp {
    fn read(cert: &Path, key: &Path) -> FileStamp {
        let stamp_of = |path: &Path| {
            std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
        };
        FileStamp {
            cert: stamp_of(cert),
            key: stamp_of(key),
        }
    }
}

/// One loaded pair: as rustls holds it, and as dimpl takes it (or why it cannot).
struct Loaded {
    tls: Arc<CertifiedKey>,
    dtls: Result<DtlsCertificate, String>,
}

/// The certificate in use, and where it comes from.
pub struct CertificateStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    stamp: Mutex<FileStamp>,
    provider: Arc<CryptoProvider>,
    /// Whether DTLS listens, so that a pair DTLS cannot use is refused.
    dtls_required: AtomicBool,
}

impl fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertificateStore {
    /// Loads the pair; fails with a message naming the file at fault.
    pub fn open(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertificateStore> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = FileStamp::read(cert_path, key_path);
        let loaded = load(&provider, cert_path, key_path)?;
        Ok(CertificateStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            stamp: Mutex::new(stamp),
            provider,
            dtls_required: AtomicBool::new(false),
        })
    }

    /// Loads the files again and, if they hold a valid pair, uses it for the next handshakes.
    pub fn reload(&self) -> anyhow::Result<()> {
        let stamp = FileStamp::read(&self.cert_path, &self.key_path);
        let loaded = load(&self.provider, &self.cert_path, &self.key_path)?;
        if let Err(reason) = &loaded.dtls
            && self.dtls_required.load(Ordering::Relaxed)
        {
            bail!(
                "{} cannot serve DTLS, which is listening: {reason}",
                self.cert_path.display()
            );
        }
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(loaded);
        }
        if let Ok(mut seen) = self.stamp.lock() {
            *seen = stamp;
        }
        Ok(())
    }

    /// Reloads when either file changed since the last load; `Ok(true)` when it did.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = FileStamp::read(&self.cert_path, &self.key_path);
        let changed = self.stamp.lock().map_or(true, |seen| *seen != now);
        if !changed {
            return Ok(false);
        }
        match self.reload() {
            Ok(()) => Ok(true),
            Err(error) => {
                // Remember the broken version so that it is reported once, not every tick; a
                // later write changes the stamp again.
                if let Ok(mut seen) = self.stamp.lock() {
                    *seen = now;
                }
                Err(error)
            }
        }
    }

    /// The leaf certificate in use, DER: for tests and logs.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.read().ok()?;
        current.tls.cert.first().cloned()
    }

    /// The pair in use as dimpl takes it, for the next DTLS handshake; `Err` with the reason
    /// when it is not ECDSA P-256 or P-384.
    pub fn dtls_certificate(&self) -> Result<DtlsCertificate, String> {
        let current = self
            .current
            .read()
            .map_err(|_| "the certificate store is poisoned".to_owned())?;
        current.dtls.clone()
    }

    /// From now on, refuses to load a pair that DTLS cannot use: DTLS listens.
    pub fn require_dtls(&self) {
        self.dtls_required.store(true, Ordering::Relaxed);
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.tls.clone())
    }
}

/// The rustls configuration of every TLS listener: TLS 1.2 and 1.3, ALPN `stun.turn`, the
/// certificate from `store`.
pub fn server_config(store: Arc<CertificateStore>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(store.provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    // Relayed media must not wait for a flush of buffered plaintext: every frame is written
    // out at once and queued by the worker, which bounds the queue itself.
    config.send_half_rtt_data = false;
    Ok(Arc::new(config))
}

fn load(provider: &CryptoProvider, cert_path: &Path, key_path: &Path) -> anyhow::Result<Loaded> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("{}: cannot read the certificate", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert_path.display()))?;
    if chain.is_empty() {
        bail!("{}: no CERTIFICATE in the file", cert_path.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("{}: no PEM private key", key_path.display()))?;
    let dtls = dtls_pair(&chain[0], key_der.secret_der());
    let key = provider
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("{}: unsupported private key", key_path.display()))?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().with_context(|| {
        format!(
            "{} does not belong to the certificate in {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(Loaded {
        tls: Arc::new(certified),
        dtls,
    })
}

/// The leaf and key as dimpl takes them, checked the way it will use them: dimpl panics on a
/// key it cannot parse, so nothing it would refuse may reach it. It sends the leaf alone,
/// without the chain.
fn dtls_pair(leaf: &[u8], key: &[u8]) -> Result<DtlsCertificate, String> {
    const NOT_ECDSA: &str = "DTLS needs an ECDSA P-256 or P-384 certificate";
    // dimpl's reason names an ASN.1 detail (an RSA key has no curve parameter): say it plainly.
    dimpl::crypto::cert_named_group(leaf).map_err(|_| {
        format!(
            "{NOT_ECDSA}, and this one's key is not (RSA, Ed25519 and other curves are TLS only)"
        )
    })?;
    dimpl::crypto::rust_crypto::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| format!("{NOT_ECDSA}; this private key: {error}"))?;
    Ok(DtlsCertificate {
        certificate: leaf.to_vec(),
        private_key: key.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key, certified.cert.der().to_vec())
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("icebreaker-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_rewritten_pair_replaces_the_certificate_and_a_broken_one_keeps_the_old() {
        let dir = temp_dir("reload");
        let (cert, key, first) = pair(&dir, "first.example");
        let store = CertificateStore::open(&cert, &key).unwrap();
        assert_eq!(store.leaf().unwrap().as_ref(), first);
        assert!(!store.reload_if_changed().unwrap(), "nothing changed yet");

        let (_, _, second) = pair(&dir, "second.example.org");
        assert!(store.reload_if_changed().unwrap());
        assert_eq!(store.leaf().unwrap().as_ref(), second);

        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
        let error = store.reload_if_changed().unwrap_err().to_string();
        assert!(error.contains("key.pem"), "{error}");
        assert_eq!(store.leaf().unwrap().as_ref(), second, "the old pair stays");
        assert!(!store.reload_if_changed().unwrap(), "reported once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_by_name() {
        let dir = temp_dir("mismatch");
        let (cert, _, _) = pair(&dir, "one.example");
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let (_, other_key, _) = pair(&other, "two.example");
        let error = CertificateStore::open(&cert, &other_key).unwrap_err();
        assert!(
            format!("{error:#}").contains("does not belong"),
            "{error:#}"
        );
        let missing = CertificateStore::open(&dir.join("none.pem"), &other_key).unwrap_err();
        assert!(format!("{missing:#}").contains("none.pem"), "{missing:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An Ed25519 pair: fine for TLS, not for DTLS, which signs with ECDSA only.
    fn ed25519_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn an_ecdsa_pair_serves_dtls_and_once_dtls_listens_another_is_refused() {
        let dir = temp_dir("dtls");
        let (cert, key, der) = pair(&dir, "localhost");
        let store = CertificateStore::open(&cert, &key).unwrap();
        let dtls = store.dtls_certificate().unwrap();
        assert_eq!(dtls.certificate, der);
        assert!(!dtls.private_key.is_empty());

        // Without DTLS listening, an Ed25519 renewal is taken: TLS can use it.
        ed25519_pair(&dir);
        assert!(store.reload_if_changed().unwrap());
        let reason = store.dtls_certificate().unwrap_err();
        assert!(reason.contains("ECDSA P-256 or P-384"), "{reason}");

        let (_, _, ecdsa) = pair(&dir, "again.localhost");
        assert!(store.reload_if_changed().unwrap());
        store.require_dtls();
        ed25519_pair(&dir);
        let error = format!("{:#}", store.reload_if_changed().unwrap_err());
        assert!(error.contains("cannot serve DTLS"), "{error}");
        assert_eq!(store.dtls_certificate().unwrap().certificate, ecdsa);
        assert_eq!(
            store.leaf().unwrap().as_ref(),
            ecdsa,
            "TLS keeps the old pair too"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_configuration_offers_stun_turn_and_both_tls_versions() {
        let dir = temp_dir("config");
        let (cert, key, _) = pair(&dir, "localhost");
        let store = Arc::new(CertificateStore::open(&cert, &key).unwrap());
        let config = server_config(store).unwrap();
        assert_eq!(config.alpn_protocols, [b"stun.turn".to_vec()]);
        let versions: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.version().version)
            .collect();
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_3));
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
