//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT: computed in place, verified in
//! constant time, without copying the message.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::attr::{AttrType, MessageIntegritySha256};
use crate::header::HEADER_LEN;

/// XORed into the CRC-32 of FINGERPRINT so that it differs from other protocols' CRCs
/// (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The HMAC a message is protected with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntegrityAlgorithm {
    /// MESSAGE-INTEGRITY, HMAC-SHA1 (RFC 8489 §14.5).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256, HMAC-SHA256 (RFC 8489 §14.6).
    Sha256,
}

/// Why an integrity or fingerprint check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The message has no such attribute. A request without integrity is answered with 401.
    #[error("attribute missing")]
    Missing,
    /// The attribute has a length its RFC does not allow. A request is answered with 400.
    #[error("attribute has an invalid length")]
    InvalidLength,
    /// The value does not match. A request with a wrong MAC is answered with 401; a message
    /// with a wrong FINGERPRINT is dropped.
    #[error("value does not match")]
    Mismatch,
}

/// A key for MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256, with both HMACs' inner and outer
/// pads already hashed so that each message costs only its own blocks.
///
/// Build it from a short-term password or a long-term key
/// ([`crate::credentials`]) once per session or user, and keep it.
#[derive(Clone)]
pub struct IntegrityKey {
    sha1: Hmac<Sha1>,
    sha256: Hmac<Sha256>,
}

impl IntegrityKey {
    /// A key from its bytes: the password itself for short-term credentials, the MD5 or
    /// SHA-256 digest of `username:realm:password` for long-term ones (RFC 8489 §9).
    pub fn new(key: &[u8]) -> IntegrityKey {
        IntegrityKey {
            sha1: hmac_from(key),
            sha256: hmac_from(key),
        }
    }

    pub(crate) fn sha1(&self) -> Hmac<Sha1> {
        self.sha1.clone()
    }

    pub(crate) fn sha256(&self) -> Hmac<Sha256> {
        self.sha256.clone()
    }
}

impl fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntegrityKey(..)")
    }
}

fn hmac_from<M: KeyInit>(key: &[u8]) -> M {
    match M::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length: longer ones are hashed, shorter ones padded.
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// Feeds `bytes[..at]` to `mac` with the header's length field replaced by `length`: the
/// integrity attributes are computed as if the message ended right after them.
#[inline]
fn update_with_length<M: Mac>(mac: &mut M, bytes: &[u8], at: usize, length: usize) {
    mac.update(&bytes[..2]);
    mac.update(&(length as u16).to_be_bytes());
    mac.update(&bytes[4..at]);
}

/// The MESSAGE-INTEGRITY value for a message whose MI attribute header starts at `at`.
pub(crate) fn compute_sha1(bytes: &[u8], at: usize, key: &IntegrityKey) -> [u8; 20] {
    let mut mac = key.sha1();
    update_with_length(&mut mac, bytes, at, at + 4 + 20 - HEADER_LEN);
    mac.finalize().into_bytes().into()
}

/// The full MESSAGE-INTEGRITY-SHA256 value for an attribute at `at` with a value of
/// `value_len` bytes.
pub(crate) fn compute_sha256(
    bytes: &[u8],
    at: usize,
    value_len: usize,
    key: &IntegrityKey,
) -> [u8; 32] {
    let mut mac = key.sha256();
    update_with_length(&mut mac, bytes, at, at + 4 + value_len - HEADER_LEN);
    mac.finalize().into_bytes().into()
}

/// CRC-32 of `bytes[..at]` XORed as FINGERPRINT requires.
#[inline]
pub(crate) fn compute_fingerprint(bytes: &[u8], at: usize) -> u32 {
    crc32fast::hash(&bytes[..at]) ^ FINGERPRINT_XOR
}

#[inline]
fn value_at(bytes: &[u8], at: usize) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
    &bytes[at + 4..at + 4 + len]
}

#[inline]
pub(crate) fn verify_sha1(bytes: &[u8], at: usize, key: &IntegrityKey) -> Result<(), VerifyError> {
    let value = value_at(bytes, at);
    if value.len() != 20 {
        return Err(VerifyError::InvalidLength);
    }
    let mut mac = key.sha1();
    update_with_length(&mut mac, bytes, at, at + 4 + 20 - HEADER_LEN);
    mac.verify_slice(value).map_err(|_| VerifyError::Mismatch)
}

pub(crate) fn verify_sha256(
    bytes: &[u8],
    at: usize,
    key: &IntegrityKey,
) -> Result<(), VerifyError> {
    let value = value_at(bytes, at);
    if !MessageIntegritySha256::is_valid_len(value.len()) {
        return Err(VerifyError::InvalidLength);
    }
    let mut mac = key.sha256();
    update_with_length(&mut mac, bytes, at, at + 4 + value.len() - HEADER_LEN);
    mac.verify_truncated_left(value)
        .map_err(|_| VerifyError::Mismatch)
}

#[inline]
pub(crate) fn verify_fingerprint(bytes: &[u8], at: usize) -> Result<(), VerifyError> {
    let value: [u8; 4] = value_at(bytes, at)
        .try_into()
        .map_err(|_| VerifyError::InvalidLength)?;
    if u32::from_be_bytes(value) == compute_fingerprint(bytes, at) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Whether `next` may follow `last` without a receiver ignoring it (RFC 8489 §14.5 to §14.7).
pub(crate) fn may_follow(last: AttrType, next: AttrType) -> bool {
    match last {
        AttrType::FINGERPRINT => false,
        AttrType::MESSAGE_INTEGRITY_SHA256 => next == AttrType::FINGERPRINT,
        AttrType::MESSAGE_INTEGRITY => matches!(
            next,
            AttrType::MESSAGE_INTEGRITY_SHA256 | AttrType::FINGERPRINT
        ),
        _ => true,
    }
}
