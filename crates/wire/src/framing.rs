//! Cutting a TCP or TLS byte stream into STUN messages and ChannelData frames
//! (RFC 8656 §12.5, RFC 8489 §6.2.2).
//!
//! Over a stream, STUN messages and ChannelData follow each other with no other framing: the
//! first two bits tell them apart (00 STUN, 01 ChannelData) and each carries its own length.
//! ChannelData over a stream is padded to a multiple of 4 bytes.

use crate::channel::{CHANNEL_DATA_HEADER_LEN, ChannelNumber, ChannelRange, Transport, framed_len};
use crate::header::{HEADER_LEN, MAGIC_COOKIE};

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A STUN message: parse it with [`crate::Message::parse`].
    Stun,
    /// A ChannelData message, padding included: parse it with
    /// [`crate::ChannelData::parse`].
    ChannelData,
}

/// A whole frame at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// What it holds.
    pub kind: FrameKind,
    /// Its length in bytes, padding included: the next frame starts there.
    pub len: usize,
}

/// Whether the bytes read so far hold a whole frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// A whole frame is at the start of the buffer.
    Complete(Frame),
    /// More bytes are needed: the buffer must grow to at least `needed` bytes. Once 4 bytes
    /// are in, `needed` is the frame's full length.
    Incomplete {
        /// Total bytes needed from the start of the buffer.
        needed: usize,
    },
}

/// Why a stream cannot be framed. The stream has lost sync and must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The first two bits are 10 or 11: neither STUN nor ChannelData.
    #[error("first byte {0:#04x} starts neither STUN nor ChannelData")]
    UnknownFrame(u8),
    /// A ChannelData frame with a channel number in the reserved range 0x5000..=0x7FFF.
    #[error("reserved channel number {0:#06x}")]
    InvalidChannel(u16),
    /// A STUN length field that is not a multiple of 4.
    #[error("STUN length field {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// A STUN header without the magic cookie.
    #[error("wrong magic cookie {0:#010x}")]
    BadMagicCookie(u32),
}

/// Looks at the bytes read so far from a stream and says whether a whole frame is there, and
/// how long it is.
#[inline]
pub fn frame(buf: &[u8]) -> Result<Framing, FramingError> {
    frame_in(buf, ChannelRange::Rfc8656)
}

/// As [`frame`], with channel numbers of `range`: a server that accepts RFC 5766's wider
/// range must also frame it.
#[inline]
pub fn frame_in(buf: &[u8], range: ChannelRange) -> Result<Framing, FramingError> {
    let Some(head) = buf.first_chunk::<4>() else {
        return Ok(Framing::Incomplete {
            needed: CHANNEL_DATA_HEADER_LEN,
        });
    };
    let first = u16::from_be_bytes([head[0], head[1]]);
    let length = u16::from_be_bytes([head[2], head[3]]);
    let (kind, len) = match head[0] >> 6 {
        0b00 => {
            if !length.is_multiple_of(4) {
                return Err(FramingError::UnalignedLength(length));
            }
            if let Some(cookie) = buf.get(4..8) {
                let cookie = u32::from_be_bytes([cookie[0], cookie[1], cookie[2], cookie[3]]);
                if cookie != MAGIC_COOKIE {
                    return Err(FramingError::BadMagicCookie(cookie));
                }
            }
            (FrameKind::Stun, HEADER_LEN + usize::from(length))
        }
        0b01 => {
            if ChannelNumber::new_in(first, range).is_none() {
                return Err(FramingError::InvalidChannel(first));
            }
            (
                FrameKind::ChannelData,
                framed_len(usize::from(length), Transport::Stream),
            )
        }
        _ => return Err(FramingError::UnknownFrame(head[0])),
    };
    if buf.len() >= len {
        Ok(Framing::Complete(Frame { kind, len }))
    } else {
        Ok(Framing::Incomplete { needed: len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5766_channels_frame_only_when_their_range_is_accepted() {
        let stream = [0x5F, 0xFF, 0x00, 0x01, 0xAA, 0, 0, 0];
        assert_eq!(frame(&stream), Err(FramingError::InvalidChannel(0x5FFF)));
        assert_eq!(
            frame_in(&stream, ChannelRange::Rfc5766),
            Ok(Framing::Complete(Frame {
                kind: FrameKind::ChannelData,
                len: 8
            }))
        );
    }

    #[test]
    fn frames_split_and_joined() {
        let mut stream = [0u8; 20 + 8 + 12];
        // A Binding request with no attributes.
        stream[..2].copy_from_slice(&[0x00, 0x01]);
        stream[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        // ChannelData with 3 bytes of data: padded to 8 on a stream.
        stream[20..24].copy_from_slice(&[0x40, 0x00, 0x00, 0x03]);
        // ChannelData with 8 bytes.
        stream[28..32].copy_from_slice(&[0x4F, 0xFF, 0x00, 0x08]);

        assert_eq!(frame(&stream[..3]), Ok(Framing::Incomplete { needed: 4 }));
        assert_eq!(frame(&stream[..4]), Ok(Framing::Incomplete { needed: 20 }));
        let first = Frame {
            kind: FrameKind::Stun,
            len: 20,
        };
        assert_eq!(frame(&stream), Ok(Framing::Complete(first)));
        assert_eq!(
            frame(&stream[20..27]),
            Ok(Framing::Incomplete { needed: 8 }),
            "padding is part of the frame"
        );
        assert_eq!(
            frame(&stream[20..]),
            Ok(Framing::Complete(Frame {
                kind: FrameKind::ChannelData,
                len: 8
            }))
        );
        assert_eq!(
            frame(&stream[28..]),
            Ok(Framing::Complete(Frame {
                kind: FrameKind::ChannelData,
                len: 12
            }))
        );
    }

    #[test]
    fn largest_lengths_are_reported_not_rejected() {
        assert_eq!(
            frame(&[0x00, 0x01, 0xFF, 0xFC]),
            Ok(Framing::Incomplete { needed: 20 + 65532 })
        );
        assert_eq!(
            frame(&[0x40, 0x00, 0xFF, 0xFF]),
            Ok(Framing::Incomplete { needed: 4 + 65536 })
        );
    }

    #[test]
    fn garbage_is_an_error() {
        // A TLS ClientHello sent to a plain TCP listener.
        assert_eq!(
            frame(&[0x16, 0x03, 0x01, 0x00, 0xF4, 0x01, 0x00, 0x00]),
            Err(FramingError::BadMagicCookie(0xF401_0000))
        );
        assert_eq!(
            frame(&[0x80, 0, 0, 0]),
            Err(FramingError::UnknownFrame(0x80))
        );
        assert_eq!(
            frame(&[0x50, 0, 0, 0]),
            Err(FramingError::InvalidChannel(0x5000))
        );
        assert_eq!(
            frame(&[0x00, 0x01, 0x00, 0x02]),
            Err(FramingError::UnalignedLength(2))
        );
        assert_eq!(
            frame(&[0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4]),
            Err(FramingError::BadMagicCookie(0x0102_0304))
        );
    }
}
