//! A checked, zero-copy view of a STUN message.

use core::fmt;

use crate::attr::{AttrType, Attribute, AttributeError, RawAttribute};
use crate::header::{HEADER_LEN, MAGIC_COOKIE, MessageType, TransactionId};
use crate::integrity::{self, IntegrityAlgorithm, IntegrityKey, VerifyError};

/// Why bytes are not a STUN message. Such bytes are silently dropped (RFC 8489 §6.3): no
/// answer, no state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the 20 bytes of a header.
    #[error("{0} bytes are fewer than a STUN header")]
    TooShort(usize),
    /// One of the two top bits of the type is set: not STUN (perhaps ChannelData, DTLS, RTP).
    #[error("not a STUN message: the top two bits are not 00")]
    NotStun,
    /// The magic cookie is not 0x2112A442.
    #[error("wrong magic cookie {0:#010x}")]
    BadMagicCookie(u32),
    /// The length field is not a multiple of 4.
    #[error("length field {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The length field disagrees with the bytes present.
    #[error("length field says {declared} bytes of attributes, {available} are present")]
    LengthMismatch {
        /// Bytes the header declares after itself.
        declared: usize,
        /// Bytes present after the header.
        available: usize,
    },
    /// An attribute runs past the end of the message.
    #[error("attribute at offset {0} runs past the end of the message")]
    AttributeOverrun(usize),
    /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    #[error("attribute after FINGERPRINT")]
    AttributeAfterFingerprint,
}

/// A STUN message whose header and attribute layout have been checked.
///
/// [`Message::parse`] validates the header, the magic cookie, the length and the whole
/// attribute walk once; after that no accessor can panic or read out of bounds. Attribute
/// values are decoded on demand by the typed getters.
///
/// Attributes after MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT, and attributes after MESSAGE-INTEGRITY-SHA256 except FINGERPRINT
/// (RFC 8489 §14.5, §14.6): no getter or iterator returns them.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    bytes: &'a [u8],
    message_type: MessageType,
    transaction_id: TransactionId,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
}

impl<'a> Message<'a> {
    /// Checks that `bytes` is exactly one STUN message, as a UDP datagram or one frame cut
    /// from a stream by [`crate::framing::frame`] must be.
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let header: &[u8; HEADER_LEN] = bytes
            .first_chunk()
            .ok_or(ParseError::TooShort(bytes.len()))?;
        let message_type = MessageType::from_u16(u16::from_be_bytes([header[0], header[1]]))
            .ok_or(ParseError::NotStun)?;
        let length = u16::from_be_bytes([header[2], header[3]]);
        let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie(cookie));
        }
        if !length.is_multiple_of(4) {
            return Err(ParseError::UnalignedLength(length));
        }
        let declared = usize::from(length);
        let available = bytes.len() - HEADER_LEN;
        if declared != available {
            return Err(ParseError::LengthMismatch {
                declared,
                available,
            });
        }
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&header[8..]);
        let mut message = Message {
            bytes,
            message_type,
            transaction_id: TransactionId::new(tid),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        message.walk_attributes()?;
        Ok(message)
    }

    /// Walks every attribute once, checking bounds and recording where the integrity and
    /// fingerprint attributes sit.
    #[inline]
    fn walk_attributes(&mut self) -> Result<(), ParseError> {
        let end = self.bytes.len();
        let mut at = HEADER_LEN;
        while at < end {
            let (attr_type, value_len) =
                attr_header(self.bytes, at).ok_or(ParseError::AttributeOverrun(at))?;
            let next = at + 4 + padded(value_len);
            if next > end {
                return Err(ParseError::AttributeOverrun(at));
            }
            match attr_type {
                AttrType::MESSAGE_INTEGRITY
                    if self.integrity.is_none() && self.integrity_sha256.is_none() =>
                {
                    self.integrity = Some(at);
                }
                AttrType::MESSAGE_INTEGRITY_SHA256 if self.integrity_sha256.is_none() => {
                    self.integrity_sha256 = Some(at);
                }
                AttrType::FINGERPRINT => {
                    if next != end {
                        return Err(ParseError::AttributeAfterFingerprint);
                    }
                    self.fingerprint = Some(at);
                }
                _ => {}
            }
            at = next;
        }
        Ok(())
    }

    /// The message type.
    pub const fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The method.
    pub const fn method(&self) -> crate::Method {
        self.message_type.method
    }

    /// The class.
    pub const fn class(&self) -> crate::Class {
        self.message_type.class
    }

    /// The transaction ID.
    pub const fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// The whole message.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Length of the whole message, header included.
    pub const fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the message has no attributes.
    pub const fn is_empty(&self) -> bool {
        self.bytes.len() == HEADER_LEN
    }

    /// Offset of the MESSAGE-INTEGRITY attribute header, if the message has one that counts.
    pub const fn integrity_offset(&self) -> Option<usize> {
        self.integrity
    }

    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header, if the message has one that
    /// counts.
    pub const fn integrity_sha256_offset(&self) -> Option<usize> {
        self.integrity_sha256
    }

    /// Offset of the FINGERPRINT attribute header, if any.
    pub const fn fingerprint_offset(&self) -> Option<usize> {
        self.fingerprint
    }

    /// The attributes that count, in order, raw.
    #[inline]
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            bytes: self.bytes,
            at: HEADER_LEN,
            phase: Phase::All,
        }
    }

    /// The first attribute of type `A`, decoded; `Ok(None)` when there is none. A request
    /// whose attribute does not decode is answered with 400.
    #[inline]
    pub fn get<A: Attribute<'a>>(&self) -> Result<Option<A>, AttributeError> {
        self.raw(A::TYPE)
            .map(|raw| A::decode(raw.value, &self.transaction_id))
            .transpose()
    }

    /// Every attribute of type `A`, decoded, in order (XOR-PEER-ADDRESS may repeat).
    pub fn get_all<A: Attribute<'a>>(
        &self,
    ) -> impl Iterator<Item = Result<A, AttributeError>> + 'a {
        let tid = self.transaction_id;
        self.attributes()
            .filter(|raw| raw.attr_type == A::TYPE)
            .map(move |raw| A::decode(raw.value, &tid))
    }

    /// Whether an attribute of type `attr_type` is present.
    pub fn has(&self, attr_type: AttrType) -> bool {
        self.raw(attr_type).is_some()
    }

    /// The first attribute of type `attr_type`, raw.
    #[inline]
    pub fn raw(&self, attr_type: AttrType) -> Option<RawAttribute<'a>> {
        self.attributes().find(|raw| raw.attr_type == attr_type)
    }

    /// The comprehension-required attributes this codec does not know: a request carrying
    /// any is answered with 420 and UNKNOWN-ATTRIBUTES listing them (RFC 8489 §6.3.1).
    pub fn unknown_comprehension_required(&self) -> impl Iterator<Item = AttrType> + 'a {
        self.attributes()
            .map(|raw| raw.attr_type)
            .filter(|t| t.is_comprehension_required() && !t.is_known())
    }

    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1) in constant time.
    #[inline]
    pub fn verify_message_integrity(&self, key: &IntegrityKey) -> Result<(), VerifyError> {
        let at = self.integrity.ok_or(VerifyError::Missing)?;
        integrity::verify_sha1(self.bytes, at, key)
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated) in constant time.
    #[inline]
    pub fn verify_message_integrity_sha256(&self, key: &IntegrityKey) -> Result<(), VerifyError> {
        let at = self.integrity_sha256.ok_or(VerifyError::Missing)?;
        integrity::verify_sha256(self.bytes, at, key)
    }

    /// Verifies the strongest integrity attribute present, MESSAGE-INTEGRITY-SHA256 before
    /// MESSAGE-INTEGRITY, and says which one it was: a response must use the same
    /// (RFC 8489 §9.2.4).
    #[inline]
    pub fn verify_integrity(&self, key: &IntegrityKey) -> Result<IntegrityAlgorithm, VerifyError> {
        if self.integrity_sha256.is_some() {
            self.verify_message_integrity_sha256(key)
                .map(|()| IntegrityAlgorithm::Sha256)
        } else {
            self.verify_message_integrity(key)
                .map(|()| IntegrityAlgorithm::Sha1)
        }
    }

    /// Verifies FINGERPRINT (RFC 8489 §14.7). A message whose FINGERPRINT is wrong is
    /// dropped.
    #[inline]
    pub fn verify_fingerprint(&self) -> Result<(), VerifyError> {
        let at = self.fingerprint.ok_or(VerifyError::Missing)?;
        integrity::verify_fingerprint(self.bytes, at)
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("type", &self.message_type)
            .field("transaction_id", &self.transaction_id)
            .field("attributes", &DebugAttributes(*self))
            .finish()
    }
}

struct DebugAttributes<'a>(Message<'a>);

impl fmt::Debug for DebugAttributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tid = self.0.transaction_id;
        f.debug_list()
            .entries(
                self.0
                    .attributes()
                    .map(|raw| crate::attr::AnyAttribute::decode(raw, &tid)),
            )
            .finish()
    }
}

/// Which attributes the iterator still yields: RFC 8489 §14.5 and §14.6 make everything after
/// the integrity attributes invisible except the ones that may follow them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    All,
    AfterIntegrity,
    AfterIntegritySha256,
}

/// Iterator over the attributes of a [`Message`] that count, raw.
#[derive(Clone)]
pub struct Attributes<'a> {
    bytes: &'a [u8],
    at: usize,
    phase: Phase,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    #[inline]
    fn next(&mut self) -> Option<RawAttribute<'a>> {
        loop {
            let (attr_type, len) = attr_header(self.bytes, self.at)?;
            let value = self.bytes.get(self.at + 4..self.at + 4 + len)?;
            self.at += 4 + padded(len);
            let visible = match (self.phase, attr_type) {
                (Phase::All, AttrType::MESSAGE_INTEGRITY) => {
                    self.phase = Phase::AfterIntegrity;
                    true
                }
                (Phase::All | Phase::AfterIntegrity, AttrType::MESSAGE_INTEGRITY_SHA256) => {
                    self.phase = Phase::AfterIntegritySha256;
                    true
                }
                (Phase::All, _) | (_, AttrType::FINGERPRINT) => true,
                _ => false,
            };
            if visible {
                return Some(RawAttribute { attr_type, value });
            }
        }
    }
}

/// Type and value length of the attribute whose header starts at `at`, if 4 bytes are there.
#[inline]
fn attr_header(bytes: &[u8], at: usize) -> Option<(AttrType, usize)> {
    let header: &[u8; 4] = bytes.get(at..)?.first_chunk()?;
    Some((
        AttrType(u16::from_be_bytes([header[0], header[1]])),
        usize::from(u16::from_be_bytes([header[2], header[3]])),
    ))
}

pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}
