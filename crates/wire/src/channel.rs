//! ChannelData messages: TURN's 4-byte-header fast path (RFC 8656 §12.4).

use core::fmt;

/// Length of the ChannelData header: channel number and length.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// Which channel numbers are valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChannelRange {
    /// 0x4000..=0x4FFF (RFC 8656 §12): 0x5000..=0x7FFF is reserved so that ChannelData
    /// cannot be mistaken for other protocols multiplexed on the same port (RFC 7983).
    #[default]
    Rfc8656,
    /// 0x4000..=0x7FFF, the range of RFC 5766, which older clients still draw from (coturn's
    /// own test client among them). Only for servers that choose to accept them.
    Rfc5766,
}

impl ChannelRange {
    /// The highest channel number of the range.
    pub const fn max(self) -> u16 {
        match self {
            ChannelRange::Rfc8656 => 0x4FFF,
            ChannelRange::Rfc5766 => 0x7FFF,
        }
    }
}

/// A TURN channel number: in 0x4000..=0x4FFF (RFC 8656 §12), unless made with
/// [`ChannelNumber::new_in`] and [`ChannelRange::Rfc5766`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(u16);

impl ChannelNumber {
    /// The lowest channel number.
    pub const MIN: ChannelNumber = ChannelNumber(0x4000);
    /// The highest channel number of RFC 8656.
    pub const MAX: ChannelNumber = ChannelNumber(0x4FFF);

    /// A channel number; `None` outside 0x4000..=0x4FFF.
    pub const fn new(value: u16) -> Option<ChannelNumber> {
        ChannelNumber::new_in(value, ChannelRange::Rfc8656)
    }

    /// A channel number; `None` outside `range`.
    pub const fn new_in(value: u16, range: ChannelRange) -> Option<ChannelNumber> {
        if value >= Self::MIN.0 && value <= range.max() {
            Some(ChannelNumber(value))
        } else {
            None
        }
    }

    /// The number.
    pub const fn value(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for ChannelNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelNumber({:#06x})", self.0)
    }
}

/// Whether ChannelData is carried in datagrams or in a byte stream: over TCP and TLS every
/// message is padded to a multiple of 4 bytes, over UDP and DTLS padding is optional
/// (RFC 8656 §12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP or DTLS: one message per datagram, no padding written.
    Datagram,
    /// TCP or TLS: messages back to back, padded to 4 bytes.
    Stream,
}

/// Why bytes are not a ChannelData message. Such a message is silently dropped
/// (RFC 8656 §12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    #[error("shorter than the 4-byte ChannelData header")]
    TooShort,
    /// The first two bits are not 01, or the number is outside the accepted range.
    #[error("channel number {0:#06x} is outside the accepted range")]
    InvalidChannel(u16),
    /// The length field reaches past the end of the buffer.
    #[error("length field {declared} exceeds the {available} bytes present")]
    Truncated {
        /// The length field.
        declared: usize,
        /// The bytes after the header.
        available: usize,
    },
}

/// A checked view of a ChannelData message.
///
/// Padding after the data is allowed and ignored: datagrams may carry it, streams must
/// (RFC 8656 §12.5).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    channel: ChannelNumber,
    data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Checks the header and the length against `buf`, with the channel numbers of RFC 8656.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<ChannelData<'a>, ChannelDataError> {
        ChannelData::parse_in(buf, ChannelRange::Rfc8656)
    }

    /// Checks the header and the length against `buf`, with the channel numbers of `range`.
    #[inline]
    pub fn parse_in(
        buf: &'a [u8],
        range: ChannelRange,
    ) -> Result<ChannelData<'a>, ChannelDataError> {
        let (header, rest) = buf
            .split_first_chunk::<CHANNEL_DATA_HEADER_LEN>()
            .ok_or(ChannelDataError::TooShort)?;
        let number = u16::from_be_bytes([header[0], header[1]]);
        let channel =
            ChannelNumber::new_in(number, range).ok_or(ChannelDataError::InvalidChannel(number))?;
        let declared = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let data = rest.get(..declared).ok_or(ChannelDataError::Truncated {
            declared,
            available: rest.len(),
        })?;
        Ok(ChannelData { channel, data })
    }

    /// The channel.
    pub const fn channel(&self) -> ChannelNumber {
        self.channel
    }

    /// The application data, without padding.
    pub const fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The bytes this message takes on `transport`, padding included.
    pub const fn framed_len(&self, transport: Transport) -> usize {
        framed_len(self.data.len(), transport)
    }
}

impl fmt::Debug for ChannelData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ChannelData({:?}, {} bytes)",
            self.channel,
            self.data.len()
        )
    }
}

/// The bytes a ChannelData message with `data_len` bytes of data takes on `transport`.
pub const fn framed_len(data_len: usize, transport: Transport) -> usize {
    match transport {
        Transport::Datagram => CHANNEL_DATA_HEADER_LEN + data_len,
        Transport::Stream => CHANNEL_DATA_HEADER_LEN + ((data_len + 3) & !3),
    }
}

/// Why a ChannelData message could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataWriteError {
    /// The buffer cannot hold the header, the data and the padding.
    #[error("buffer of {available} bytes cannot hold a {needed}-byte ChannelData message")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// More than 65535 bytes of data.
    #[error("{0} bytes of data exceed the 16-bit length field")]
    DataTooLong(usize),
}

/// Writes the header for `data_len` bytes of data that already sit at `buf[4..]`, and the
/// zeroed padding a stream needs after them; returns the framed length.
///
/// This is the relay's fast path: data received at offset 4 of a buffer becomes ChannelData
/// without being copied.
#[inline]
pub fn write_channel_data_header(
    buf: &mut [u8],
    channel: ChannelNumber,
    data_len: usize,
    transport: Transport,
) -> Result<usize, ChannelDataWriteError> {
    let len = u16::try_from(data_len).map_err(|_| ChannelDataWriteError::DataTooLong(data_len))?;
    let needed = framed_len(data_len, transport);
    let available = buf.len();
    let out = buf
        .get_mut(..needed)
        .ok_or(ChannelDataWriteError::BufferTooSmall { needed, available })?;
    out[..2].copy_from_slice(&channel.value().to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out[CHANNEL_DATA_HEADER_LEN + data_len..].fill(0);
    Ok(needed)
}

/// Writes a whole ChannelData message, copying `data`; returns the framed length.
#[inline]
pub fn write_channel_data(
    buf: &mut [u8],
    channel: ChannelNumber,
    data: &[u8],
    transport: Transport,
) -> Result<usize, ChannelDataWriteError> {
    let needed = framed_len(data.len(), transport);
    if buf.len() < needed {
        return Err(ChannelDataWriteError::BufferTooSmall {
            needed,
            available: buf.len(),
        });
    }
    buf[CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + data.len()].copy_from_slice(data);
    write_channel_data_header(buf, channel, data.len(), transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelNumber {
        ChannelNumber::new(0x4001).expect("in range")
    }

    #[test]
    fn write_then_parse_on_both_transports() {
        let mut buf = [0xAAu8; 16];
        let n =
            write_channel_data(&mut buf, channel(), b"hello", Transport::Datagram).expect("fits");
        assert_eq!(n, 9);
        assert_eq!(&buf[..4], &[0x40, 0x01, 0x00, 0x05]);
        let parsed = ChannelData::parse(&buf[..n]).expect("valid");
        assert_eq!(
            (parsed.channel(), parsed.data()),
            (channel(), &b"hello"[..])
        );

        let mut buf = [0xAAu8; 16];
        let n = write_channel_data(&mut buf, channel(), b"hello", Transport::Stream).expect("fits");
        assert_eq!(n, 12);
        assert_eq!(&buf[9..12], &[0, 0, 0], "stream padding is zeroed");
        let parsed = ChannelData::parse(&buf[..n]).expect("padding is accepted");
        assert_eq!(parsed.data(), b"hello");
        assert_eq!(parsed.framed_len(Transport::Stream), 12);
    }

    #[test]
    fn rejects_reserved_channels_and_short_buffers() {
        assert_eq!(
            ChannelData::parse(&[0x40, 0]),
            Err(ChannelDataError::TooShort)
        );
        assert_eq!(
            ChannelData::parse(&[0x50, 0x00, 0, 0]),
            Err(ChannelDataError::InvalidChannel(0x5000))
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0, 5, 1, 2]),
            Err(ChannelDataError::Truncated {
                declared: 5,
                available: 2
            })
        );
        assert!(matches!(
            write_channel_data(&mut [0u8; 8], channel(), b"hello", Transport::Datagram),
            Err(ChannelDataWriteError::BufferTooSmall { needed: 9, .. })
        ));
        assert_eq!(
            write_channel_data_header(&mut [0u8; 8], channel(), 70_000, Transport::Datagram),
            Err(ChannelDataWriteError::DataTooLong(70_000))
        );
        assert_eq!(ChannelNumber::new(0x3FFF), None);
        assert_eq!(ChannelNumber::new(0x5000), None);
        // RFC 5766's range, for servers that accept older clients.
        let legacy = [0x72, 0x26, 0, 1, 9];
        assert_eq!(
            ChannelData::parse(&legacy),
            Err(ChannelDataError::InvalidChannel(0x7226))
        );
        let parsed = ChannelData::parse_in(&legacy, ChannelRange::Rfc5766).expect("accepted");
        assert_eq!(
            (parsed.channel().value(), parsed.data()),
            (0x7226, &[9][..])
        );
        assert_eq!(ChannelNumber::new_in(0x8000, ChannelRange::Rfc5766), None);
    }
}
