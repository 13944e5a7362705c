//! Zero-copy STUN, TURN and ICE message codec.
//!
//! `icebreaker-wire` reads and writes the messages of STUN (RFC 8489, RFC 5389), TURN
//! (RFC 8656, RFC 6062), NAT behaviour discovery (RFC 5780) and ICE connectivity checks
//! (RFC 8445), and TURN's ChannelData. It does no I/O and never allocates on a parse or write
//! path:
//!
//! - [`Message::parse`] checks a buffer once (header, magic cookie, length, alignment, the
//!   whole attribute walk) and returns a view whose accessors cannot panic. Typed getters
//!   ([`Message::get`]) decode attributes on demand; unknown ones are available raw.
//! - [`MessageWriter`] writes into a caller's buffer, zeroes padding, and computes
//!   MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT in place.
//! - [`ChannelData`] and [`write_channel_data`] handle TURN channels, and
//!   [`framing::frame`] cuts a TCP or TLS stream into messages.
//! - [`credentials`] derives short-term, long-term (MD5 and SHA-256) and TURN REST API keys.
//!
//! Malformed input is an error value, never a panic: [`ParseError`] means "drop silently",
//! [`attr::AttributeError`] on a request means "answer 400".
//!
//! ```
//! use icebreaker_wire::attr::{Lifetime, Username};
//! use icebreaker_wire::{Class, IntegrityKey, Message, MessageType, MessageWriter, Method,
//!     TransactionId};
//!
//! let key = IntegrityKey::short_term("secret");
//! let mut buf = [0u8; 128];
//! let refresh = MessageType::new(Method::REFRESH, Class::Request);
//! let mut writer = MessageWriter::new(&mut buf, refresh, TransactionId::new([9; 12]))?;
//! writer.add(&Username("alice"))?;
//! writer.add(&Lifetime(600))?;
//! writer.add_message_integrity(&key)?;
//! writer.add_fingerprint()?;
//! let len = writer.finish();
//!
//! let message = Message::parse(&buf[..len])?;
//! message.verify_fingerprint()?;
//! message.verify_message_integrity(&key)?;
//! assert_eq!(message.get::<Lifetime>()?, Some(Lifetime(600)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod attr;
mod channel;
pub mod credentials;
mod error_code;
pub mod framing;
mod header;
mod integrity;
mod message;
mod writer;

pub use channel::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, ChannelDataError, ChannelDataWriteError, ChannelNumber,
    ChannelRange, Transport, framed_len, write_channel_data, write_channel_data_header,
};
pub use error_code::ErrorCode;
pub use header::{
    Class, HEADER_LEN, MAGIC_COOKIE, MAX_MESSAGE_LEN, MessageType, Method, TransactionId,
};
pub use integrity::{FINGERPRINT_XOR, IntegrityAlgorithm, IntegrityKey, VerifyError};
pub use message::{Attributes, Message, ParseError};
pub use writer::{MessageWriter, WriteError};
