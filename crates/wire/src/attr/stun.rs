//! The attributes of STUN itself (RFC 8489 §14).

use core::fmt;

use super::{AttrType, Attribute, AttributeError, fixed, text};
use crate::{ErrorCode, TransactionId};

/// Most bytes RFC 8489 lets a receiver accept for REALM, NONCE and SOFTWARE: fewer than 128
/// characters, up to 763 bytes when decoding.
const MAX_TEXT_DECODED: usize = 763;

macro_rules! text_attribute {
    ($(#[$doc:meta])* $name:ident, $attr:ident, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> Attribute<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$attr;

            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
                text(Self::TYPE, value, $max).map($name)
            }

            fn value_len(&self) -> usize {
                self.0.len()
            }

            fn encode(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(self.0.as_bytes());
            }
        }
    };
}

text_attribute!(
    /// USERNAME: at most 513 bytes of UTF-8 (RFC 8489 §14.3).
    Username, USERNAME, max = 513
);
text_attribute!(
    /// REALM: fewer than 128 characters (RFC 8489 §14.9).
    Realm, REALM, max = MAX_TEXT_DECODED
);
text_attribute!(
    /// NONCE: fewer than 128 characters; with RFC 8489 §9.2 it may start with the nonce cookie
    /// `obMatJos2` announcing security features (RFC 8489 §14.10).
    Nonce, NONCE, max = MAX_TEXT_DECODED
);
text_attribute!(
    /// SOFTWARE: a description of the agent, fewer than 128 characters (RFC 8489 §14.14).
    Software, SOFTWARE, max = MAX_TEXT_DECODED
);
text_attribute!(
    /// ALTERNATE-DOMAIN: the TLS name of the server in ALTERNATE-SERVER, at most 255 bytes
    /// (RFC 8489 §14.16).
    AlternateDomain, ALTERNATE_DOMAIN, max = 255
);

/// MESSAGE-INTEGRITY: an HMAC-SHA1 over the message before it (RFC 8489 §14.5). Write it with
/// [`MessageWriter::add_message_integrity`](crate::MessageWriter::add_message_integrity) and
/// check it with [`Message::verify_integrity`](crate::Message::verify_integrity); this type
/// exposes the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageIntegrity(pub [u8; 20]);

impl<'a> Attribute<'a> for MessageIntegrity {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        fixed(Self::TYPE, value).map(MessageIntegrity)
    }

    fn value_len(&self) -> usize {
        20
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&self.0);
    }
}

/// MESSAGE-INTEGRITY-SHA256: an HMAC-SHA256 over the message before it, possibly truncated to
/// 16..=32 bytes in steps of 4 (RFC 8489 §14.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

impl<'a> MessageIntegritySha256<'a> {
    /// Whether `len` is a length RFC 8489 §14.6 allows.
    pub const fn is_valid_len(len: usize) -> bool {
        len >= 16 && len <= 32 && len.is_multiple_of(4)
    }
}

impl<'a> Attribute<'a> for MessageIntegritySha256<'a> {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY_SHA256;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        if Self::is_valid_len(value.len()) {
            Ok(MessageIntegritySha256(value))
        } else {
            Err(AttributeError::InvalidLength {
                attr: Self::TYPE,
                len: value.len(),
            })
        }
    }

    fn value_len(&self) -> usize {
        self.0.len()
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.0);
    }
}

/// FINGERPRINT: CRC-32 of the message before it, XORed with 0x5354554e (RFC 8489 §14.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u32);

impl<'a> Attribute<'a> for Fingerprint {
    const TYPE: AttrType = AttrType::FINGERPRINT;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        fixed(Self::TYPE, value).map(|b| Fingerprint(u32::from_be_bytes(b)))
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&self.0.to_be_bytes());
    }
}

/// USERHASH: SHA-256 of `username ":" realm`, sent instead of USERNAME to hide it
/// (RFC 8489 §14.4). Compute it with [`crate::credentials::user_hash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserHash(pub [u8; 32]);

impl<'a> Attribute<'a> for UserHash {
    const TYPE: AttrType = AttrType::USERHASH;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        fixed(Self::TYPE, value).map(UserHash)
    }

    fn value_len(&self) -> usize {
        32
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&self.0);
    }
}

/// ERROR-CODE: an error code and a reason phrase of fewer than 128 characters
/// (RFC 8489 §14.8).
///
/// The codec decodes any class from 3 to 6 and number from 0 to 99; codes it has no name for
/// are kept as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCodeAttribute<'a> {
    /// The code.
    pub code: ErrorCode,
    /// The reason phrase; may be empty.
    pub reason: &'a str,
}

impl<'a> ErrorCodeAttribute<'a> {
    /// An ERROR-CODE with the given code and no reason phrase: the smallest answer, which a
    /// server gives to strangers.
    pub const fn bare(code: ErrorCode) -> ErrorCodeAttribute<'static> {
        ErrorCodeAttribute { code, reason: "" }
    }
}

/// Decodes the class/number/reason layout shared by ERROR-CODE and ADDRESS-ERROR-CODE, which
/// starts at byte 2 of `value`.
pub(super) fn decode_error_code(
    attr: AttrType,
    value: &[u8],
) -> Result<(ErrorCode, &str), AttributeError> {
    if value.len() < 4 {
        return Err(AttributeError::InvalidLength {
            attr,
            len: value.len(),
        });
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttributeError::InvalidValue { attr });
    }
    let code = ErrorCode::new(class * 100 + number).ok_or(AttributeError::InvalidValue { attr })?;
    let reason = text(attr, &value[4..], MAX_TEXT_DECODED)?;
    Ok((code, reason))
}

/// Encodes class, number and reason from byte 2 of `out`.
pub(super) fn encode_error_code(code: ErrorCode, reason: &str, out: &mut [u8]) {
    out[2] = code.class();
    out[3] = code.number();
    out[4..].copy_from_slice(reason.as_bytes());
}

impl<'a> Attribute<'a> for ErrorCodeAttribute<'a> {
    const TYPE: AttrType = AttrType::ERROR_CODE;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        let (code, reason) = decode_error_code(Self::TYPE, value)?;
        Ok(ErrorCodeAttribute { code, reason })
    }

    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out[..2].fill(0);
        encode_error_code(self.code, self.reason, out);
    }
}

/// A list of attribute types held either as received wire bytes or as a caller's slice, so
/// that both directions stay free of allocation.
#[derive(Clone, Copy)]
enum TypeList<'a> {
    Wire(&'a [u8]),
    Items(&'a [AttrType]),
}

/// UNKNOWN-ATTRIBUTES: the comprehension-required attributes a 420 response did not understand
/// (RFC 8489 §14.13).
#[derive(Clone, Copy)]
pub struct UnknownAttributes<'a>(TypeList<'a>);

impl<'a> UnknownAttributes<'a> {
    /// UNKNOWN-ATTRIBUTES listing `types`.
    pub const fn new(types: &'a [AttrType]) -> UnknownAttributes<'a> {
        UnknownAttributes(TypeList::Items(types))
    }

    /// The listed types.
    pub fn iter(&self) -> UnknownAttributesIter<'a> {
        UnknownAttributesIter(self.0)
    }
}

/// Iterator over the types of [`UnknownAttributes`].
#[derive(Clone)]
pub struct UnknownAttributesIter<'a>(TypeList<'a>);

impl Iterator for UnknownAttributesIter<'_> {
    type Item = AttrType;

    fn next(&mut self) -> Option<AttrType> {
        match &mut self.0 {
            TypeList::Wire(bytes) => {
                let (head, rest) = bytes.split_first_chunk::<2>()?;
                *bytes = rest;
                Some(AttrType(u16::from_be_bytes(*head)))
            }
            TypeList::Items(items) => {
                let (head, rest) = items.split_first()?;
                *items = rest;
                Some(*head)
            }
        }
    }
}

impl PartialEq for UnknownAttributes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UnknownAttributes<'_> {}

impl fmt::Debug for UnknownAttributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Attribute<'a> for UnknownAttributes<'a> {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        if !value.len().is_multiple_of(2) {
            return Err(AttributeError::InvalidLength {
                attr: Self::TYPE,
                len: value.len(),
            });
        }
        Ok(UnknownAttributes(TypeList::Wire(value)))
    }

    fn value_len(&self) -> usize {
        2 * self.iter().count()
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(self.iter()) {
            chunk.copy_from_slice(&t.0.to_be_bytes());
        }
    }
}

/// PASSWORD-ALGORITHM: the algorithm a client chose for the long-term key (RFC 8489 §14.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithm<'a> {
    /// The algorithm number: [`PasswordAlgorithm::MD5`] or [`PasswordAlgorithm::SHA256`].
    pub algorithm: u16,
    /// The algorithm's parameters; empty for both algorithms RFC 8489 defines.
    pub parameters: &'a [u8],
}

impl PasswordAlgorithm<'static> {
    /// MD5 (RFC 8489 §18.5.1.1).
    pub const MD5: u16 = 0x0001;
    /// SHA-256 (RFC 8489 §18.5.1.2).
    pub const SHA256: u16 = 0x0002;

    /// An algorithm without parameters.
    pub const fn new(algorithm: u16) -> PasswordAlgorithm<'static> {
        PasswordAlgorithm {
            algorithm,
            parameters: &[],
        }
    }
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Splits one algorithm entry (number, parameter length, padded parameters) off `bytes`.
fn split_algorithm(bytes: &[u8]) -> Option<(PasswordAlgorithm<'_>, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    let algorithm = u16::from_be_bytes([head[0], head[1]]);
    let param_len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let parameters = rest.get(..param_len)?;
    let rest = rest.get(padded(param_len)..)?;
    Some((
        PasswordAlgorithm {
            algorithm,
            parameters,
        },
        rest,
    ))
}

fn encode_algorithm(alg: &PasswordAlgorithm<'_>, out: &mut [u8]) -> usize {
    let len = alg.parameters.len();
    out[..2].copy_from_slice(&alg.algorithm.to_be_bytes());
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    out[4..4 + len].copy_from_slice(alg.parameters);
    out[4 + len..4 + padded(len)].fill(0);
    4 + padded(len)
}

impl<'a> Attribute<'a> for PasswordAlgorithm<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        match split_algorithm(value) {
            Some((alg, [])) => Ok(alg),
            _ => Err(AttributeError::InvalidValue { attr: Self::TYPE }),
        }
    }

    fn value_len(&self) -> usize {
        4 + padded(self.parameters.len())
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        encode_algorithm(self, out);
    }
}

/// PASSWORD-ALGORITHMS: the algorithms a server offers, in its order of preference
/// (RFC 8489 §14.11).
#[derive(Clone, Copy)]
pub struct PasswordAlgorithms<'a>(PasswordAlgorithmsSource<'a>);

#[derive(Clone, Copy)]
enum PasswordAlgorithmsSource<'a> {
    Wire(&'a [u8]),
    Items(&'a [PasswordAlgorithm<'a>]),
}

impl<'a> PasswordAlgorithms<'a> {
    /// PASSWORD-ALGORITHMS listing `algorithms`.
    pub const fn new(algorithms: &'a [PasswordAlgorithm<'a>]) -> PasswordAlgorithms<'a> {
        PasswordAlgorithms(PasswordAlgorithmsSource::Items(algorithms))
    }

    /// The listed algorithms, in order.
    pub fn iter(&self) -> PasswordAlgorithmsIter<'a> {
        PasswordAlgorithmsIter(self.0)
    }
}

/// Iterator over the entries of [`PasswordAlgorithms`].
#[derive(Clone)]
pub struct PasswordAlgorithmsIter<'a>(PasswordAlgorithmsSource<'a>);

impl<'a> Iterator for PasswordAlgorithmsIter<'a> {
    type Item = PasswordAlgorithm<'a>;

    fn next(&mut self) -> Option<PasswordAlgorithm<'a>> {
        match &mut self.0 {
            PasswordAlgorithmsSource::Wire(bytes) => {
                let (alg, rest) = split_algorithm(bytes)?;
                *bytes = rest;
                Some(alg)
            }
            PasswordAlgorithmsSource::Items(items) => {
                let (head, rest) = items.split_first()?;
                *items = rest;
                Some(*head)
            }
        }
    }
}

impl PartialEq for PasswordAlgorithms<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for PasswordAlgorithms<'_> {}

impl fmt::Debug for PasswordAlgorithms<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Attribute<'a> for PasswordAlgorithms<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        // Validate the whole list once so that iteration never meets a truncated entry.
        let mut rest = value;
        while !rest.is_empty() {
            rest = split_algorithm(rest)
                .ok_or(AttributeError::InvalidValue { attr: Self::TYPE })?
                .1;
        }
        Ok(PasswordAlgorithms(PasswordAlgorithmsSource::Wire(value)))
    }

    fn value_len(&self) -> usize {
        self.iter().map(|a| 4 + padded(a.parameters.len())).sum()
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let mut at = 0;
        for alg in self.iter() {
            at += encode_algorithm(&alg, &mut out[at..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId::new([7; 12]);

    #[test]
    fn error_code_layout() {
        let attr = ErrorCodeAttribute {
            code: ErrorCode::STALE_NONCE,
            reason: "Stale Nonce",
        };
        let mut out = [0xFFu8; 15];
        attr.encode(&mut out, &TID);
        assert_eq!(&out[..4], &[0, 0, 4, 38]);
        assert_eq!(ErrorCodeAttribute::decode(&out, &TID), Ok(attr));
        let bad_class = [0, 0, 2, 0];
        assert!(ErrorCodeAttribute::decode(&bad_class, &TID).is_err());
        let bad_number = [0, 0, 4, 100];
        assert!(ErrorCodeAttribute::decode(&bad_number, &TID).is_err());
        assert!(ErrorCodeAttribute::decode(&[], &TID).is_err());
    }

    #[test]
    fn password_algorithms_round_trip_and_reject_truncation() {
        let list = [
            PasswordAlgorithm::new(PasswordAlgorithm::SHA256),
            PasswordAlgorithm {
                algorithm: 9,
                parameters: b"abc",
            },
        ];
        let attr = PasswordAlgorithms::new(&list);
        let mut out = [0xFFu8; 12];
        assert_eq!(attr.value_len(), 12);
        attr.encode(&mut out, &TID);
        assert_eq!(out, [0, 2, 0, 0, 0, 9, 0, 3, b'a', b'b', b'c', 0]);
        assert_eq!(PasswordAlgorithms::decode(&out, &TID), Ok(attr));
        assert!(PasswordAlgorithms::decode(&out[..10], &TID).is_err());
        assert!(PasswordAlgorithm::decode(&out, &TID).is_err());
    }

    #[test]
    fn unknown_attributes_round_trip() {
        let types = [AttrType(0x0031), AttrType(0x7FFF)];
        let attr = UnknownAttributes::new(&types);
        let mut out = [0u8; 4];
        attr.encode(&mut out, &TID);
        assert_eq!(UnknownAttributes::decode(&out, &TID), Ok(attr));
        assert!(UnknownAttributes::decode(&out[..3], &TID).is_err());
    }

    #[test]
    fn text_limits() {
        let long = [b'a'; 514];
        assert!(Username::decode(&long[..513], &TID).is_ok());
        assert!(Username::decode(&long, &TID).is_err());
        assert!(Realm::decode(&[0xFF, 0xFE], &TID).is_err());
        assert!(MessageIntegritySha256::decode(&[0; 12], &TID).is_err());
        assert!(MessageIntegritySha256::decode(&[0; 18], &TID).is_err());
        assert!(MessageIntegritySha256::decode(&[0; 36], &TID).is_err());
        assert!(MessageIntegritySha256::decode(&[0; 20], &TID).is_ok());
        assert!(MessageIntegrity::decode(&[0; 19], &TID).is_err());
    }
}
