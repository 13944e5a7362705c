//! Writes STUN messages into a caller's buffer: no allocation, padding always zeroed, integrity
//! and fingerprint computed in place.

use crate::attr::{AttrType, Attribute};
use crate::header::{HEADER_LEN, MAGIC_COOKIE, MAX_MESSAGE_LEN, MessageType, TransactionId};
use crate::integrity::{self, IntegrityKey};
use crate::message::padded;

/// Why a message could not be written. The buffer keeps the message as it was before the call
/// that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The buffer cannot hold the message so far plus this attribute.
    #[error("buffer of {available} bytes cannot hold {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The attribute value or the message would exceed its 16-bit length field.
    #[error("message or attribute longer than a 16-bit length field allows")]
    TooLong,
    /// RFC 8489 §14.5 to §14.7 allow only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT after
    /// MESSAGE-INTEGRITY, only FINGERPRINT after MESSAGE-INTEGRITY-SHA256, nothing after
    /// FINGERPRINT: a receiver would ignore the attribute.
    #[error("{attr} cannot follow {after}")]
    OutOfOrder {
        /// The attribute refused.
        attr: AttrType,
        /// The attribute it would have followed.
        after: AttrType,
    },
    /// A MESSAGE-INTEGRITY-SHA256 truncation outside 16..=32 bytes in steps of 4.
    #[error("MESSAGE-INTEGRITY-SHA256 cannot be {0} bytes")]
    InvalidTruncation(usize),
}

/// Writes one STUN message into a caller's buffer.
///
/// ```
/// use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method, TransactionId};
/// use icebreaker_wire::attr::XorMappedAddress;
///
/// let mut buf = [0u8; 64];
/// let tid = TransactionId::new([1; 12]);
/// let response = MessageType::new(Method::BINDING, Class::Success);
/// let mut writer = MessageWriter::new(&mut buf, response, tid)?;
/// writer.add(&XorMappedAddress("192.0.2.1:32853".parse()?))?;
/// writer.add_fingerprint()?;
/// let len = writer.finish();
///
/// let message = Message::parse(&buf[..len])?;
/// assert!(message.verify_fingerprint().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    transaction_id: TransactionId,
    last: Option<AttrType>,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message of type `message_type` by writing its header.
    #[inline]
    pub fn new(
        buf: &'b mut [u8],
        message_type: MessageType,
        transaction_id: TransactionId,
    ) -> Result<MessageWriter<'b>, WriteError> {
        let header = buf
            .get_mut(..HEADER_LEN)
            .ok_or(WriteError::BufferTooSmall {
                needed: HEADER_LEN,
                available: 0,
            })?;
        header[..2].copy_from_slice(&message_type.to_u16().to_be_bytes());
        header[2..4].fill(0);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..].copy_from_slice(transaction_id.as_bytes());
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
            transaction_id,
            last: None,
        })
    }

    /// Appends a typed attribute.
    #[inline]
    pub fn add<'x, A: Attribute<'x>>(&mut self, attr: &A) -> Result<(), WriteError> {
        let tid = self.transaction_id;
        let value = self.reserve(A::TYPE, attr.value_len())?;
        attr.encode(value, &tid);
        Ok(())
    }

    /// Appends an attribute from its type and raw value, e.g. one this crate does not know.
    pub fn add_raw(&mut self, attr_type: AttrType, value: &[u8]) -> Result<(), WriteError> {
        self.reserve(attr_type, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY, an HMAC-SHA1 over everything written so far
    /// (RFC 8489 §14.5).
    pub fn add_message_integrity(&mut self, key: &IntegrityKey) -> Result<(), WriteError> {
        let at = self.len;
        self.reserve(AttrType::MESSAGE_INTEGRITY, 20)?;
        let mac = integrity::compute_sha1(self.buf, at, key);
        self.buf[at + 4..at + 24].copy_from_slice(&mac);
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), full length.
    pub fn add_message_integrity_sha256(&mut self, key: &IntegrityKey) -> Result<(), WriteError> {
        self.add_message_integrity_sha256_truncated(key, 32)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 truncated to `len` bytes: 16 to 32 in steps of 4.
    pub fn add_message_integrity_sha256_truncated(
        &mut self,
        key: &IntegrityKey,
        len: usize,
    ) -> Result<(), WriteError> {
        if !crate::attr::MessageIntegritySha256::is_valid_len(len) {
            return Err(WriteError::InvalidTruncation(len));
        }
        let at = self.len;
        self.reserve(AttrType::MESSAGE_INTEGRITY_SHA256, len)?;
        let mac = integrity::compute_sha256(self.buf, at, len, key);
        self.buf[at + 4..at + 4 + len].copy_from_slice(&mac[..len]);
        Ok(())
    }

    /// Appends FINGERPRINT, a CRC-32 of everything written so far; nothing may follow it
    /// (RFC 8489 §14.7).
    pub fn add_fingerprint(&mut self) -> Result<(), WriteError> {
        let at = self.len;
        self.reserve(AttrType::FINGERPRINT, 4)?;
        let crc = integrity::compute_fingerprint(self.buf, at);
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// The bytes written so far: a complete message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Length of the message written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no attribute was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Ends the message and returns its length.
    #[inline]
    pub fn finish(self) -> usize {
        self.len
    }

    /// Writes the attribute header and zeroed padding for a `value_len`-byte value, updates
    /// the message length and returns the value's bytes for the caller to fill.
    #[inline]
    fn reserve(&mut self, attr_type: AttrType, value_len: usize) -> Result<&mut [u8], WriteError> {
        if let Some(after) = self
            .last
            .filter(|&last| !integrity::may_follow(last, attr_type))
        {
            return Err(WriteError::OutOfOrder {
                attr: attr_type,
                after,
            });
        }
        let value_len16 = u16::try_from(value_len).map_err(|_| WriteError::TooLong)?;
        let at = self.len;
        let end = at + 4 + padded(value_len);
        if end > MAX_MESSAGE_LEN {
            return Err(WriteError::TooLong);
        }
        if end > self.buf.len() {
            return Err(WriteError::BufferTooSmall {
                needed: end,
                available: self.buf.len(),
            });
        }
        self.buf[at..at + 2].copy_from_slice(&attr_type.0.to_be_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&value_len16.to_be_bytes());
        self.buf[at + 4 + value_len..end].fill(0);
        self.buf[2..4].copy_from_slice(&((end - HEADER_LEN) as u16).to_be_bytes());
        self.len = end;
        self.last = Some(attr_type);
        Ok(&mut self.buf[at + 4..at + 4 + value_len])
    }
}
