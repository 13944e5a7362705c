//! The 20-byte STUN header: message type (method and class), magic cookie, transaction ID.

use core::fmt;

/// The fixed magic cookie of every RFC 5389/8489 message (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Length of the STUN header in bytes (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;

/// Largest STUN message: the 16-bit length field counts the bytes after the header.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + u16::MAX as usize;

/// A STUN method: the 12 method bits of the message type (RFC 8489 §5).
///
/// Every method of RFC 8489, RFC 8656 and RFC 6062 has a named constant; other values are
/// carried as they are so that a server can answer them with 400.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489 §18.1).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656 §7).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656 §8).
    pub const REFRESH: Method = Method(0x004);
    /// Send, indication only (RFC 8656 §11).
    pub const SEND: Method = Method(0x006);
    /// Data, indication only (RFC 8656 §11).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656 §10).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656 §12).
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// Connect (RFC 6062 §4.3).
    pub const CONNECT: Method = Method(0x00A);
    /// ConnectionBind (RFC 6062 §4.4).
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// ConnectionAttempt, indication only (RFC 6062 §4.4).
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// A method from its 12-bit number; `None` when the value does not fit in 12 bits.
    pub const fn new(value: u16) -> Option<Method> {
        if value <= 0x0FFF {
            Some(Method(value))
        } else {
            None
        }
    }

    /// The 12-bit method number.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The method's name in the RFCs, or `None` for a method no RFC here defines.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Method::BINDING => "Binding",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            Method::CONNECT => "Connect",
            Method::CONNECTION_BIND => "ConnectionBind",
            Method::CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => return None,
        })
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Method({:#05x})", self.0),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The class of a message: the two class bits of the message type (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or an error response.
    Request,
    /// An indication: never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response, carrying ERROR-CODE.
    Error,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    /// Whether this is a success or an error response.
    pub const fn is_response(self) -> bool {
        matches!(self, Class::Success | Class::Error)
    }
}

/// The message type: a method and a class, interleaved in 14 bits (RFC 8489 §5, figure 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// A message type from a method and a class.
    pub const fn new(method: Method, class: Class) -> MessageType {
        MessageType { method, class }
    }

    /// Decodes the 16-bit type field; `None` when either of the two top bits is set, which
    /// means the bytes are not a STUN message (RFC 8489 §5).
    pub const fn from_u16(value: u16) -> Option<MessageType> {
        if value & 0xC000 != 0 {
            return None;
        }
        let method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2);
        let class = match ((value >> 7) & 0b10) | ((value >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        Some(MessageType {
            method: Method(method),
            class,
        })
    }

    /// Encodes the 16-bit type field.
    pub const fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }

    /// The success response type for this method.
    pub const fn success(self) -> MessageType {
        MessageType::new(self.method, Class::Success)
    }

    /// The error response type for this method.
    pub const fn error(self) -> MessageType {
        MessageType::new(self.method, Class::Error)
    }
}

/// The 96-bit transaction ID (RFC 8489 §5).
///
/// The codec never draws one itself: callers bring their own random source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TransactionId([u8; 12]);

impl TransactionId {
    /// A transaction ID from its 12 bytes.
    pub const fn new(bytes: [u8; 12]) -> TransactionId {
        TransactionId(bytes)
    }

    /// The 12 bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransactionId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl From<[u8; 12]> for TransactionId {
    fn from(bytes: [u8; 12]) -> TransactionId {
        TransactionId(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_matches_rfc_examples() {
        // RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111.
        let binding = MessageType::new(Method::BINDING, Class::Request);
        assert_eq!(binding.to_u16(), 0x0001);
        assert_eq!(binding.success().to_u16(), 0x0101);
        assert_eq!(binding.error().to_u16(), 0x0111);
        // RFC 8656: Allocate request 0x0003, Send indication 0x0016, Data indication 0x0017.
        assert_eq!(
            MessageType::new(Method::ALLOCATE, Class::Request).to_u16(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Method::SEND, Class::Indication).to_u16(),
            0x0016
        );
        assert_eq!(
            MessageType::new(Method::DATA, Class::Indication).to_u16(),
            0x0017
        );
        // RFC 6062: ConnectionAttempt indication 0x001C.
        assert_eq!(
            MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication).to_u16(),
            0x001C
        );
    }

    #[test]
    fn rfc_6062_methods() {
        // RFC 6062 §6.1: Connect 0x000A, ConnectionBind 0x000B (requests and responses),
        // ConnectionAttempt 0x000C (an indication).
        for (method, value, name) in [
            (Method::CONNECT, 0x000A, "Connect"),
            (Method::CONNECTION_BIND, 0x000B, "ConnectionBind"),
            (Method::CONNECTION_ATTEMPT, 0x000C, "ConnectionAttempt"),
        ] {
            assert_eq!(method.value(), value);
            assert_eq!(Method::new(value), Some(method));
            assert_eq!(method.name(), Some(name));
        }
        let connect = MessageType::new(Method::CONNECT, Class::Request);
        assert_eq!(connect.to_u16(), 0x000A);
        assert_eq!(connect.success().to_u16(), 0x010A);
        assert_eq!(connect.error().to_u16(), 0x011A);
        let bind = MessageType::new(Method::CONNECTION_BIND, Class::Request);
        assert_eq!(bind.to_u16(), 0x000B);
        assert_eq!(bind.success().to_u16(), 0x010B);
        assert_eq!(bind.error().to_u16(), 0x011B);
        assert_eq!(
            MessageType::from_u16(0x001C),
            Some(MessageType::new(
                Method::CONNECTION_ATTEMPT,
                Class::Indication
            ))
        );
    }

    #[test]
    fn message_type_round_trips_every_14_bit_value() {
        for value in 0..0x4000u16 {
            let decoded = MessageType::from_u16(value).expect("top bits clear");
            assert_eq!(decoded.to_u16(), value);
        }
        assert_eq!(MessageType::from_u16(0x4000), None);
        assert_eq!(MessageType::from_u16(0x8001), None);
    }

    #[test]
    fn method_rejects_values_over_12_bits() {
        assert_eq!(Method::new(0x0FFF).map(Method::value), Some(0x0FFF));
        assert_eq!(Method::new(0x1000), None);
        assert_eq!(format!("{:?}", Method::CHANNEL_BIND), "ChannelBind");
        assert_eq!(
            format!("{:?}", Method::new(0x0ABC).expect("12 bits")),
            "Method(0xabc)"
        );
    }
}
