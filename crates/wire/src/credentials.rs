//! Credentials: short-term and long-term keys (RFC 8489 §9), USERHASH (RFC 8489 §14.4), the
//! nonce cookie (RFC 8489 §9.2) and TURN REST API ephemeral credentials.
//!
//! Passwords, usernames and realms are used as the UTF-8 bytes given. RFC 8489 asks for the
//! PRECIS OpaqueString profile (RFC 8265) first; for ASCII credentials, which is what
//! deployments use, that is the identity.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use crate::IntegrityKey;
use crate::attr::PasswordAlgorithm;

/// The algorithm of a long-term key (RFC 8489 §18.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// MD5 of `username:realm:password`, 16 bytes: the only one RFC 5389 clients know.
    Md5,
    /// SHA-256 of `username:realm:password`, 32 bytes (RFC 8489 §9.2.2).
    Sha256,
}

impl KeyAlgorithm {
    /// The algorithm a PASSWORD-ALGORITHM number names, if this crate supports it.
    pub const fn from_password_algorithm(number: u16) -> Option<KeyAlgorithm> {
        match number {
            PasswordAlgorithm::MD5 => Some(KeyAlgorithm::Md5),
            PasswordAlgorithm::SHA256 => Some(KeyAlgorithm::Sha256),
            _ => None,
        }
    }

    /// The PASSWORD-ALGORITHM number.
    pub const fn password_algorithm(self) -> u16 {
        match self {
            KeyAlgorithm::Md5 => PasswordAlgorithm::MD5,
            KeyAlgorithm::Sha256 => PasswordAlgorithm::SHA256,
        }
    }
}

/// A long-term key: a digest of `username:realm:password`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum LongTermKey {
    /// The MD5 key.
    Md5([u8; 16]),
    /// The SHA-256 key.
    Sha256([u8; 32]),
}

impl LongTermKey {
    /// Derives the key (RFC 8489 §9.2.2).
    pub fn new(
        algorithm: KeyAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> LongTermKey {
        let parts = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        match algorithm {
            KeyAlgorithm::Md5 => LongTermKey::Md5(digest_parts::<Md5>(&parts).into()),
            KeyAlgorithm::Sha256 => LongTermKey::Sha256(digest_parts::<Sha256>(&parts).into()),
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            LongTermKey::Md5(key) => key,
            LongTermKey::Sha256(key) => key,
        }
    }

    /// The key ready for MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256.
    pub fn integrity_key(&self) -> IntegrityKey {
        IntegrityKey::new(self.as_bytes())
    }
}

impl core::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LongTermKey::Md5(_) => "LongTermKey::Md5(..)",
            LongTermKey::Sha256(_) => "LongTermKey::Sha256(..)",
        })
    }
}

fn digest_parts<D: Digest>(parts: &[&[u8]]) -> digest::Output<D> {
    let mut hasher = D::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

impl IntegrityKey {
    /// The short-term key: the password itself (RFC 8489 §9.1.1), as ICE uses it.
    pub fn short_term(password: &str) -> IntegrityKey {
        IntegrityKey::new(password.as_bytes())
    }

    /// The long-term key of `username`, `realm` and `password` (RFC 8489 §9.2.2).
    pub fn long_term(
        algorithm: KeyAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> IntegrityKey {
        LongTermKey::new(algorithm, username, realm, password).integrity_key()
    }
}

/// USERHASH: SHA-256 of `username:realm` (RFC 8489 §14.4).
pub fn user_hash(username: &str, realm: &str) -> [u8; 32] {
    digest_parts::<Sha256>(&[username.as_bytes(), b":", realm.as_bytes()]).into()
}

/// The nonce cookie: a NONCE starting with it announces security features (RFC 8489 §9.2).
pub const NONCE_COOKIE: &str = "obMatJos2";

/// The security features a server announces in its nonce (RFC 8489 §9.2, §18.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SecurityFeatures {
    /// Bit 0: the server supports PASSWORD-ALGORITHMS.
    pub password_algorithms: bool,
    /// Bit 1: the server supports USERHASH.
    pub username_anonymity: bool,
}

impl SecurityFeatures {
    /// The nonce prefix announcing these features: the cookie and 4 base64 characters of the
    /// 24-bit feature set. The server appends its own opaque nonce.
    pub fn nonce_prefix(self) -> [u8; 13] {
        let mut bits = [0u8; 3];
        if self.password_algorithms {
            bits[0] |= 0x80;
        }
        if self.username_anonymity {
            bits[0] |= 0x40;
        }
        let mut prefix = [0u8; 13];
        prefix[..9].copy_from_slice(NONCE_COOKIE.as_bytes());
        // Three bytes always encode to exactly four base64 characters.
        let _ = STANDARD.encode_slice(bits, &mut prefix[9..]);
        prefix
    }

    /// The features a nonce announces; `None` when it does not start with the cookie and four
    /// valid base64 characters.
    pub fn from_nonce(nonce: &str) -> Option<SecurityFeatures> {
        let encoded = nonce.strip_prefix(NONCE_COOKIE)?.get(..4)?;
        let mut bits = [0u8; 3];
        let n = STANDARD.decode_slice(encoded, &mut bits).ok()?;
        (n == 3).then_some(SecurityFeatures {
            password_algorithms: bits[0] & 0x80 != 0,
            username_anonymity: bits[0] & 0x40 != 0,
        })
    }
}

/// Why a TURN REST API username is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestCredentialError {
    /// The part before the first `:` is not a decimal Unix time.
    #[error("username does not start with a numeric expiry time")]
    NotNumeric,
    /// The expiry time has passed.
    #[error("credentials expired at {expiry}, now is {now}")]
    Expired {
        /// The expiry time in the username.
        expiry: u64,
        /// The time it was checked at.
        now: u64,
    },
}

/// A TURN REST API username, `expiry:user`, as coturn and the "REST API for Access to TURN
/// Services" draft define it: the expiry is a Unix time in seconds, the user part is optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RestUsername<'a> {
    /// Unix time, in seconds, after which the credentials are refused.
    pub expiry: u64,
    /// The application's user id; empty when the username is only a time.
    pub user: &'a str,
}

impl<'a> RestUsername<'a> {
    /// Splits a username at its first `:`.
    pub fn parse(username: &'a str) -> Result<RestUsername<'a>, RestCredentialError> {
        let (expiry, user) = username.split_once(':').unwrap_or((username, ""));
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RestCredentialError::NotNumeric);
        }
        let expiry = expiry
            .parse()
            .map_err(|_| RestCredentialError::NotNumeric)?;
        Ok(RestUsername { expiry, user })
    }

    /// Parses `username` and checks that it has not expired at `now` (Unix seconds).
    pub fn check(username: &'a str, now: u64) -> Result<RestUsername<'a>, RestCredentialError> {
        let parsed = RestUsername::parse(username)?;
        if parsed.expiry < now {
            return Err(RestCredentialError::Expired {
                expiry: parsed.expiry,
                now,
            });
        }
        Ok(parsed)
    }
}

/// The password of a TURN REST API username: base64 of HMAC-SHA1(secret, username), always
/// 28 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RestPassword([u8; 28]);

impl RestPassword {
    /// Computes the password the holder of `secret` gives to `username`.
    pub fn new(secret: &[u8], username: &str) -> RestPassword {
        let mut mac: Hmac<Sha1> = match KeyInit::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(username.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 28];
        // 20 bytes always encode to exactly 28 base64 characters.
        let _ = STANDARD.encode_slice(tag, &mut out);
        RestPassword(out)
    }

    /// The password.
    pub fn as_str(&self) -> &str {
        // Base64 output is ASCII.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl core::fmt::Debug for RestPassword {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RestPassword(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5769_long_term_key() {
        // RFC 5769 §2.4: username "マトリックス", realm "example.org", password "TheMatrIX"
        // after SASLprep.
        let key = LongTermKey::new(
            KeyAlgorithm::Md5,
            "マトリックス",
            "example.org",
            "TheMatrIX",
        );
        assert_eq!(
            key.as_bytes(),
            &[
                0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51, 0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda,
                0xb2, 0xa9
            ]
        );
    }

    #[test]
    fn rest_password_matches_an_independent_computation() {
        // echo -n "1700000000:alice" | openssl dgst -sha1 -hmac "north" -binary | base64
        let password = RestPassword::new(b"north", "1700000000:alice");
        assert_eq!(password.as_str(), "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn rest_username_rules() {
        assert_eq!(
            RestUsername::parse("1700000000:alice"),
            Ok(RestUsername {
                expiry: 1_700_000_000,
                user: "alice"
            })
        );
        assert_eq!(RestUsername::parse("1700000000").map(|u| u.user), Ok(""));
        assert_eq!(
            RestUsername::parse("alice:1700000000"),
            Err(RestCredentialError::NotNumeric)
        );
        assert_eq!(
            RestUsername::parse(":alice"),
            Err(RestCredentialError::NotNumeric)
        );
        assert_eq!(
            RestUsername::parse("+1:alice"),
            Err(RestCredentialError::NotNumeric)
        );
        assert_eq!(
            RestUsername::parse("99999999999999999999999:x"),
            Err(RestCredentialError::NotNumeric)
        );
        assert!(RestUsername::check("1700000000:alice", 1_700_000_000).is_ok());
        assert_eq!(
            RestUsername::check("1700000000:alice", 1_700_000_001),
            Err(RestCredentialError::Expired {
                expiry: 1_700_000_000,
                now: 1_700_000_001
            })
        );
    }

    #[test]
    fn nonce_cookie_round_trip() {
        let features = SecurityFeatures {
            password_algorithms: true,
            username_anonymity: true,
        };
        let prefix = features.nonce_prefix();
        // RFC 8489 §9.2: both features set encode as "wAAA".
        assert_eq!(&prefix, b"obMatJos2wAAA");
        let nonce = core::str::from_utf8(&prefix).expect("ascii");
        assert_eq!(SecurityFeatures::from_nonce(nonce), Some(features));
        // RFC 8489 numbers bit 0 as the most significant (§9.2, §18.1). The B.1 sample nonce's
        // "AAAC" sets only bit 22, which is unassigned: no known feature.
        assert_eq!(
            SecurityFeatures::from_nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
            Some(SecurityFeatures::default())
        );
        assert_eq!(
            SecurityFeatures::from_nonce("f//499k954d6OL34oL9FSTvy64sA"),
            None
        );
    }
}
