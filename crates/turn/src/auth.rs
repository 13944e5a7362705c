//! Long-term credentials for TURN (RFC 8489 §9.2, RFC 8656 §5): static users, TURN REST API
//! secrets, stateless nonces, and the throttles that keep strangers and password guessers
//! cheap to serve.

use core::net::{IpAddr, SocketAddr};
use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use icebreaker_wire::attr::{
    Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, UserHash, Username,
};
use icebreaker_wire::credentials::{
    KeyAlgorithm, LongTermKey, NONCE_COOKIE, RestPassword, RestUsername, SecurityFeatures,
    user_hash,
};
use icebreaker_wire::{ErrorCode, IntegrityAlgorithm, IntegrityKey, Message, VerifyError};
use sha2::Sha256;

/// A static user's credential.
#[derive(Clone, PartialEq, Eq)]
pub enum UserCredential {
    /// The password: both MD5 and SHA-256 keys can be derived.
    Password(String),
    /// Only the MD5 long-term key, `MD5(user:realm:password)`, so that the password itself need
    /// not be stored (as coturn's `user:0xKEY`). Such a user cannot use SHA-256.
    Md5Key([u8; 16]),
}

impl core::fmt::Debug for UserCredential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            UserCredential::Password(_) => "Password(<redacted>)",
            UserCredential::Md5Key(_) => "Md5Key(<redacted>)",
        })
    }
}

/// Why a request failed authentication. Small and closed, so that it can label a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY: the normal first request of every client (401).
    MissingIntegrity,
    /// Integrity present but USERNAME/USERHASH, REALM or NONCE missing or malformed (400).
    MalformedCredentials,
    /// A REALM that is not ours (401).
    WrongRealm,
    /// The nonce expired (438 with a fresh one).
    StaleNonce,
    /// The nonce is not one this server gave this client address (438 with a fresh one).
    InvalidNonce,
    /// PASSWORD-ALGORITHM(S) missing one half, tampered with or unsupported (400).
    BadAlgorithm,
    /// No such user, and not a TURN REST username either (401).
    UnknownUser,
    /// A TURN REST username whose time has passed (401).
    Expired,
    /// The MAC does not match: wrong password or secret (401).
    BadIntegrity,
    /// Too many failures from this source address recently: the request is dropped unanswered.
    Throttled,
}

impl AuthFailure {
    /// The error code to answer with, or `None` to drop the request.
    pub const fn error_code(self) -> Option<ErrorCode> {
        match self {
            AuthFailure::MissingIntegrity
            | AuthFailure::WrongRealm
            | AuthFailure::UnknownUser
            | AuthFailure::Expired
            | AuthFailure::BadIntegrity => Some(ErrorCode::UNAUTHENTICATED),
            AuthFailure::MalformedCredentials | AuthFailure::BadAlgorithm => {
                Some(ErrorCode::BAD_REQUEST)
            }
            AuthFailure::StaleNonce | AuthFailure::InvalidNonce => Some(ErrorCode::STALE_NONCE),
            AuthFailure::Throttled => None,
        }
    }

    /// A short lowercase name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingIntegrity => "missing_integrity",
            AuthFailure::MalformedCredentials => "malformed",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::InvalidNonce => "invalid_nonce",
            AuthFailure::BadAlgorithm => "bad_algorithm",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::Throttled => "throttled",
        }
    }

    /// Every reason, for metrics that list all label values up front.
    pub const ALL: [AuthFailure; 10] = [
        AuthFailure::MissingIntegrity,
        AuthFailure::MalformedCredentials,
        AuthFailure::WrongRealm,
        AuthFailure::StaleNonce,
        AuthFailure::InvalidNonce,
        AuthFailure::BadAlgorithm,
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::BadIntegrity,
        AuthFailure::Throttled,
    ];
}

/// A request that authenticated.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The username (for USERHASH, the user it names).
    pub username: Box<str>,
    /// The key that verified it; responses are signed with it.
    pub key: IntegrityKey,
    /// The integrity attribute that verified; responses use the same.
    pub algorithm: IntegrityAlgorithm,
}

struct UserKeys {
    md5: IntegrityKey,
    sha256: Option<IntegrityKey>,
}

/// The password algorithms this server offers, in order of preference (RFC 8489 §9.2.1).
pub const OFFERED_ALGORITHMS: [PasswordAlgorithm<'static>; 2] = [
    PasswordAlgorithm::new(PasswordAlgorithm::SHA256),
    PasswordAlgorithm::new(PasswordAlgorithm::MD5),
];

/// Bytes of the nonce's MAC: 96 bits, which no online guessing reaches.
const NONCE_MAC_LEN: usize = 12;
/// Raw nonce: expiry (4 bytes, Unix seconds) then the MAC.
const NONCE_RAW_LEN: usize = 4 + NONCE_MAC_LEN;
/// Longest nonce this server writes: the cookie with its features, then the base64 raw nonce.
pub const MAX_NONCE_LEN: usize = NONCE_COOKIE.len() + 4 + 22;

/// A nonce this server wrote, held on the stack.
#[derive(Clone, Copy)]
pub struct NonceBuf {
    bytes: [u8; MAX_NONCE_LEN],
    len: usize,
}

impl NonceBuf {
    /// The nonce.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into it.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// The credential store and nonce authority of one realm.
pub struct Authenticator {
    realm: Box<str>,
    users: HashMap<Box<str>, UserKeys>,
    user_hashes: HashMap<[u8; 32], Box<str>>,
    rest_secrets: Vec<Box<[u8]>>,
    nonce_mac: Hmac<Sha256>,
    nonce_lifetime: u32,
}

impl Authenticator {
    /// A store for `realm` with static `users` and TURN REST `rest_secrets`. Nonces are MACed
    /// with `nonce_secret`, which every worker of a server must share, and live
    /// `nonce_lifetime_secs`.
    pub fn new(
        realm: &str,
        users: &[(String, UserCredential)],
        rest_secrets: &[Vec<u8>],
        nonce_secret: &[u8; 32],
        nonce_lifetime_secs: u32,
    ) -> Authenticator {
        let mut keys = HashMap::new();
        let mut user_hashes = HashMap::new();
        for (name, credential) in users {
            let user_keys = match credential {
                UserCredential::Password(password) => UserKeys {
                    md5: IntegrityKey::long_term(KeyAlgorithm::Md5, name, realm, password),
                    sha256: Some(IntegrityKey::long_term(
                        KeyAlgorithm::Sha256,
                        name,
                        realm,
                        password,
                    )),
                },
                UserCredential::Md5Key(key) => UserKeys {
                    md5: LongTermKey::Md5(*key).integrity_key(),
                    sha256: None,
                },
            };
            keys.insert(name.as_str().into(), user_keys);
            user_hashes.insert(user_hash(name, realm), name.as_str().into());
        }
        let nonce_mac = match Hmac::<Sha256>::new_from_slice(nonce_secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        Authenticator {
            realm: realm.into(),
            users: keys,
            user_hashes,
            rest_secrets: rest_secrets.iter().map(|s| s.as_slice().into()).collect(),
            nonce_mac,
            nonce_lifetime: nonce_lifetime_secs,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A fresh nonce for `client`, valid from `unix_now` for the nonce lifetime. With
    /// `announce`, it starts with the nonce cookie announcing PASSWORD-ALGORITHMS
    /// (RFC 8489 §9.2).
    pub fn nonce(&self, client: SocketAddr, unix_now: u64, announce: bool) -> NonceBuf {
        let expiry = u32::try_from(unix_now.saturating_add(u64::from(self.nonce_lifetime)))
            .unwrap_or(u32::MAX);
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&self.nonce_tag(expiry, client, announce));
        let mut out = NonceBuf {
            bytes: [0; MAX_NONCE_LEN],
            len: 0,
        };
        if announce {
            let prefix = SecurityFeatures {
                password_algorithms: true,
                username_anonymity: true,
            }
            .nonce_prefix();
            out.bytes[..prefix.len()].copy_from_slice(&prefix);
            out.len = prefix.len();
        }
        // 16 bytes always encode to 22 characters without padding.
        out.len += URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out.bytes[out.len..])
            .unwrap_or(0);
        out
    }

    fn nonce_tag(&self, expiry: u32, client: SocketAddr, announce: bool) -> [u8; NONCE_MAC_LEN] {
        let mut mac = self.nonce_mac.clone();
        mac.update(&[u8::from(announce)]);
        mac.update(&expiry.to_be_bytes());
        let ip = match client.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        mac.update(&ip.octets());
        mac.update(&client.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; NONCE_MAC_LEN];
        out.copy_from_slice(&tag[..NONCE_MAC_LEN]);
        out
    }

    /// Checks a nonce: ours, for this client, not expired. Returns whether it announced
    /// the security features.
    fn check_nonce(
        &self,
        nonce: &str,
        client: SocketAddr,
        unix_now: u64,
    ) -> Result<bool, AuthFailure> {
        let (announce, encoded) = match nonce.strip_prefix(NONCE_COOKIE) {
            Some(rest) => (true, rest.get(4..).ok_or(AuthFailure::InvalidNonce)?),
            None => (false, nonce),
        };
        let mut raw = [0u8; NONCE_RAW_LEN + 2];
        let n = URL_SAFE_NO_PAD
            .decode_slice(encoded, &mut raw)
            .map_err(|_| AuthFailure::InvalidNonce)?;
        if n != NONCE_RAW_LEN {
            return Err(AuthFailure::InvalidNonce);
        }
        let expiry = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let expected = self.nonce_tag(expiry, client, announce);
        if !constant_time_eq(&expected, &raw[4..NONCE_RAW_LEN]) {
            return Err(AuthFailure::InvalidNonce);
        }
        if u64::from(expiry) < unix_now {
            return Err(AuthFailure::StaleNonce);
        }
        Ok(announce)
    }

    /// Whether the request's NONCE is one this server gave `client`, expired or not.
    pub(crate) fn nonce_names(
        &self,
        request: &Message<'_>,
        client: SocketAddr,
        unix_now: u64,
    ) -> bool {
        let Ok(Some(nonce)) = request.get::<Nonce>() else {
            return false;
        };
        matches!(
            self.check_nonce(nonce.0, client, unix_now),
            Ok(_) | Err(AuthFailure::StaleNonce)
        )
    }

    /// Authenticates a request from `client` (RFC 8489 §9.2.4).
    pub fn authenticate(
        &self,
        request: &Message<'_>,
        client: SocketAddr,
        unix_now: u64,
    ) -> Result<Authenticated, AuthFailure> {
        if request.integrity_offset().is_none() && request.integrity_sha256_offset().is_none() {
            return Err(AuthFailure::MissingIntegrity);
        }
        let malformed = |_| AuthFailure::MalformedCredentials;
        let username = request.get::<Username>().map_err(malformed)?;
        let userhash = request.get::<UserHash>().map_err(malformed)?;
        let realm = request.get::<Realm>().map_err(malformed)?;
        let nonce = request.get::<Nonce>().map_err(malformed)?;
        let (Some(realm), Some(nonce)) = (realm, nonce) else {
            return Err(AuthFailure::MalformedCredentials);
        };
        if username.is_none() && userhash.is_none() {
            return Err(AuthFailure::MalformedCredentials);
        }
        let announced = self.check_nonce(nonce.0, client, unix_now)?;
        if realm.0 != &*self.realm {
            return Err(AuthFailure::WrongRealm);
        }
        let algorithm = self.key_algorithm(request, announced)?;
        let name: &str = match (username, userhash) {
            (Some(Username(name)), _) => name,
            (None, Some(hash)) => self
                .user_hashes
                .get(&hash.0)
                .ok_or(AuthFailure::UnknownUser)?,
            (None, None) => return Err(AuthFailure::MalformedCredentials),
        };

        if let Some(keys) = self.users.get(name) {
            let key = match algorithm {
                KeyAlgorithm::Md5 => &keys.md5,
                KeyAlgorithm::Sha256 => keys.sha256.as_ref().ok_or(AuthFailure::BadAlgorithm)?,
            };
            return verify(request, key).map(|algorithm| Authenticated {
                username: name.into(),
                key: key.clone(),
                algorithm,
            });
        }
        if self.rest_secrets.is_empty() {
            return Err(AuthFailure::UnknownUser);
        }
        match RestUsername::check(name, unix_now) {
            Ok(_) => {}
            Err(icebreaker_wire::credentials::RestCredentialError::Expired { .. }) => {
                return Err(AuthFailure::Expired);
            }
            Err(_) => return Err(AuthFailure::UnknownUser),
        }
        // Several secrets during a rotation: any of them may have issued the credentials.
        let mut last = AuthFailure::BadIntegrity;
        for secret in &self.rest_secrets {
            let password = RestPassword::new(secret, name);
            let key = IntegrityKey::long_term(algorithm, name, &self.realm, password.as_str());
            match verify(request, &key) {
                Ok(algorithm) => {
                    return Ok(Authenticated {
                        username: name.into(),
                        key,
                        algorithm,
                    });
                }
                Err(failure) => last = failure,
            }
        }
        Err(last)
    }

    /// The long-term key algorithm a request chose (RFC 8489 §9.2.4): MD5 unless it carries
    /// both PASSWORD-ALGORITHMS, identical to the list this server offers, and a
    /// PASSWORD-ALGORITHM from it.
    fn key_algorithm(
        &self,
        request: &Message<'_>,
        announced: bool,
    ) -> Result<KeyAlgorithm, AuthFailure> {
        let bad = |_| AuthFailure::BadAlgorithm;
        let chosen = request.get::<PasswordAlgorithm>().map_err(bad)?;
        let offered = request.get::<PasswordAlgorithms>().map_err(bad)?;
        match (chosen, offered) {
            (None, None) => Ok(KeyAlgorithm::Md5),
            (Some(chosen), Some(offered)) => {
                if !announced || offered != PasswordAlgorithms::new(&OFFERED_ALGORITHMS) {
                    return Err(AuthFailure::BadAlgorithm);
                }
                if !OFFERED_ALGORITHMS.contains(&chosen) {
                    return Err(AuthFailure::BadAlgorithm);
                }
                KeyAlgorithm::from_password_algorithm(chosen.algorithm)
                    .ok_or(AuthFailure::BadAlgorithm)
            }
            _ => Err(AuthFailure::BadAlgorithm),
        }
    }
}

fn verify(request: &Message<'_>, key: &IntegrityKey) -> Result<IntegrityAlgorithm, AuthFailure> {
    request.verify_integrity(key).map_err(|e| match e {
        VerifyError::InvalidLength => AuthFailure::MalformedCredentials,
        VerifyError::Missing | VerifyError::Mismatch => AuthFailure::BadIntegrity,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fixed array of token buckets indexed by a hash of the source IP address: bounded memory
/// whatever the number of sources, so that spoofed floods create no per-source state. Sources
/// that share a bucket share its budget.
pub(crate) struct Throttle {
    buckets: Box<[Bucket]>,
    per_second: f64,
    burst: f64,
    seed: u64,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

impl Throttle {
    pub(crate) fn new(buckets: usize, per_second: f64, burst: f64, seed: u64) -> Throttle {
        Throttle {
            buckets: vec![
                Bucket {
                    tokens: burst,
                    updated_ms: 0
                };
                buckets.max(1)
            ]
            .into_boxed_slice(),
            per_second,
            burst,
            seed,
        }
    }

    fn index(&self, ip: IpAddr) -> usize {
        use core::hash::BuildHasher;
        let hash = foldhash::fast::FixedState::with_seed(self.seed).hash_one(ip);
        (hash % self.buckets.len() as u64) as usize
    }

    /// Takes one token for `ip` at `now_ms`; false when its bucket is empty.
    pub(crate) fn take(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        let i = self.index(ip);
        let (per_second, burst) = (self.per_second, self.burst);
        let bucket = &mut self.buckets[i];
        let elapsed = now_ms.saturating_sub(bucket.updated_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `ip`'s bucket still has a token, without taking one.
    pub(crate) fn has(&self, ip: IpAddr, now_ms: u64) -> bool {
        let bucket = &self.buckets[self.index(ip)];
        let elapsed = now_ms.saturating_sub(bucket.updated_ms) as f64 / 1000.0;
        (bucket.tokens + elapsed * self.per_second).min(self.burst) >= 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(
            "example.org",
            &[("alice".into(), UserCredential::Password("secret".into()))],
            &[b"rest-secret".to_vec()],
            &[7; 32],
            600,
        )
    }

    #[test]
    fn nonces_are_bound_to_the_client_and_expire() {
        let auth = authenticator();
        let client: SocketAddr = "198.51.100.1:5000".parse().expect("literal");
        let other: SocketAddr = "198.51.100.1:5001".parse().expect("literal");
        for announce in [false, true] {
            let nonce = auth.nonce(client, 1_000, announce);
            assert_eq!(
                auth.check_nonce(nonce.as_str(), client, 1_000),
                Ok(announce)
            );
            assert_eq!(
                auth.check_nonce(nonce.as_str(), client, 1_600),
                Ok(announce)
            );
            assert_eq!(
                auth.check_nonce(nonce.as_str(), client, 1_601),
                Err(AuthFailure::StaleNonce)
            );
            assert_eq!(
                auth.check_nonce(nonce.as_str(), other, 1_000),
                Err(AuthFailure::InvalidNonce)
            );
        }
        assert_eq!(
            auth.check_nonce("garbage", client, 1_000),
            Err(AuthFailure::InvalidNonce)
        );
    }

    #[test]
    fn stripping_the_cookie_invalidates_the_nonce() {
        let auth = authenticator();
        let client: SocketAddr = "198.51.100.1:5000".parse().expect("literal");
        let nonce = auth.nonce(client, 1_000, true);
        let stripped = &nonce.as_str()[NONCE_COOKIE.len() + 4..];
        assert_eq!(
            auth.check_nonce(stripped, client, 1_000),
            Err(AuthFailure::InvalidNonce)
        );
        assert!(nonce.as_str().len() <= MAX_NONCE_LEN);
    }

    #[test]
    fn throttle_refills_over_time_and_bounds_memory() {
        let mut t = Throttle::new(16, 2.0, 3.0, 1);
        let ip: IpAddr = "198.51.100.9".parse().expect("literal");
        assert!(t.take(ip, 0) && t.take(ip, 0) && t.take(ip, 0));
        assert!(!t.take(ip, 0));
        assert!(!t.has(ip, 400));
        assert!(t.take(ip, 500));
        assert_eq!(t.buckets.len(), 16);
    }
}
