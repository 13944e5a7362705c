//! TURN over TLS: the certificate, read from PEM files and replaced while the server runs, and
//! the rustls configuration every TLS listener shares.
//!
//! A renewal (certbot, cert-manager) rewrites the files; the server notices on SIGHUP or when
//! the files' size or time changes, loads the new pair, and hands it to the next handshakes.
//! Sessions already open keep theirs: nothing is dropped. A pair that does not load (half
//! written, key not matching) is refused and the old one stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
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

/// The certificate in use, and where it comes from.
pub struct CertificateStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<FileStamp>,
    provider: Arc<CryptoProvider>,
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
        let key = load(&provider, cert_path, key_path)?;
        Ok(CertificateStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
            provider,
        })
    }

    /// Loads the files again and, if they hold a valid pair, uses it for the next handshakes.
    pub fn reload(&self) -> anyhow::Result<()> {
        let stamp = FileStamp::read(&self.cert_path, &self.key_path);
        let key = load(&self.provider, &self.cert_path, &self.key_path)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
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
        current.cert.first().cloned()
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.clone())
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

fn load(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("{}: cannot read the certificate", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert_path.display()))?;
    if chain.is_empty() {
        bail!("{}: no CERTIFICATE in the file", cert_path.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("{}: no PEM private key", key_path.display()))?;
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
    Ok(certified)
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
