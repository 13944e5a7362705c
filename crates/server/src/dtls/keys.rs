//! The private key of new DTLS sessions, parsed once per worker thread instead of once per
//! session.
//!
//! dimpl parses the key it is given in every new `Dtls` value. With RustCrypto, parsing a P-256
//! key derives its public key, about 125 µs: most of what a spoofed ClientHello would cost the
//! worker, and twice that for DTLS 1.2, whose auto-sensed session is built twice. This key
//! provider keeps the last key it parsed on each thread and hands out shared handles to it:
//! ECDSA signing keeps no state between signatures, and a worker drives its sessions one at a
//! time, so the lock around it is never contended.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use dimpl::CryptoError;
use dimpl::crypto::{
    Buf, CryptoProvider, HashAlgorithm, KeyProvider, SignatureAlgorithm, SigningKey,
};

/// RustCrypto's provider with the caching key provider.
pub(super) fn provider() -> CryptoProvider {
    CryptoProvider {
        key_provider: &CACHING_KEYS,
        ..dimpl::crypto::rust_crypto::default_provider()
    }
}

static CACHING_KEYS: CachingKeys = CachingKeys;

#[derive(Debug)]
struct CachingKeys;

/// One parsed key, shared by the sessions of a thread.
type Shared = Arc<Mutex<Box<dyn SigningKey>>>;

thread_local! {
    /// The DER of the last key parsed on this thread, and the key.
    static LAST: RefCell<Option<(Vec<u8>, Shared)>> = const { RefCell::new(None) };
}

impl KeyProvider for CachingKeys {
    fn load_private_key(&self, key_der: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        let cached = LAST.with_borrow(|last| {
            last.as_ref()
                .filter(|(der, _)| der.as_slice() == key_der)
                .map(|(_, key)| key.clone())
        });
        let key = match cached {
            Some(key) => key,
            None => {
                let parsed = dimpl::crypto::rust_crypto::default_provider()
                    .key_provider
                    .load_private_key(key_der)?;
                let key: Shared = Arc::new(Mutex::new(parsed));
                // A renewed certificate replaces the entry; sessions of the old one keep their
                // handle.
                LAST.set(Some((key_der.to_vec(), key.clone())));
                key
            }
        };
        let (algorithm, hash, hashes) = {
            let key = key.lock().unwrap_or_else(PoisonError::into_inner);
            (
                key.algorithm(),
                key.hash_algorithm(),
                key.supported_hash_algorithms().to_vec(),
            )
        };
        Ok(Box::new(SharedKey {
            key,
            algorithm,
            hash,
            hashes,
        }))
    }
}

/// A session's handle on a shared key.
struct SharedKey {
    key: Shared,
    algorithm: SignatureAlgorithm,
    hash: HashAlgorithm,
    hashes: Vec<HashAlgorithm>,
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey for SharedKey {
    fn sign(
        &mut self,
        data: &[u8],
        hash_alg: HashAlgorithm,
        out: &mut Buf,
    ) -> Result<(), CryptoError> {
        self.key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sign(data, hash_alg, out)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn hash_algorithm(&self) -> HashAlgorithm {
        self.hash
    }

    fn supported_hash_algorithms(&self) -> &[HashAlgorithm] {
        &self.hashes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key_der() -> Vec<u8> {
        rcgen::KeyPair::generate().unwrap().serialize_der()
    }

    #[test]
    fn a_key_is_parsed_once_per_thread_and_replaced_by_another() {
        let (first, second) = (key_der(), key_der());
        let one = CACHING_KEYS.load_private_key(&first).unwrap();
        let cached = LAST.with_borrow(|last| last.as_ref().map(|(_, k)| k.clone()).unwrap());
        let two = CACHING_KEYS.load_private_key(&first).unwrap();
        assert_eq!(Arc::strong_count(&cached), 4, "one parse, three handles");
        assert_eq!(one.algorithm(), two.algorithm());
        drop(cached);

        let mut other = CACHING_KEYS.load_private_key(&second).unwrap();
        LAST.with_borrow(|last| assert_eq!(last.as_ref().unwrap().0, second));
        // The old handles still sign.
        let mut one = one;
        let mut out = Buf::new();
        one.sign(b"data", one.hash_algorithm(), &mut out).unwrap();
        assert!(!out.is_empty());
        let mut out = Buf::new();
        other
            .sign(b"data", other.hash_algorithm(), &mut out)
            .unwrap();
        assert!(!out.is_empty());
        assert!(CACHING_KEYS.load_private_key(b"not a key").is_err());
    }
}
