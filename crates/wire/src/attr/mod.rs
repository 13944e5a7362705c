//! STUN attributes: the type registry, the [`Attribute`] trait that decodes a value on demand and
//! encodes it into a caller buffer, and one type per attribute of RFC 8489, RFC 8656, RFC 6062,
//! RFC 5780 and RFC 8445.
//!
//! Decoding never allocates: strings and byte strings borrow from the message.

#[macro_use]
mod macros;
mod address;
mod any;
mod discovery;
mod ice;
mod stun;
mod turn;

use core::fmt;

pub use address::{
    AlternateServer, MappedAddress, OtherAddress, ResponseOrigin, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
pub use any::AnyAttribute;
pub use discovery::{ChangeRequest, Padding, ResponsePort};
pub use ice::{IceControlled, IceControlling, Priority, UseCandidate};
pub use stun::{
    AlternateDomain, ErrorCodeAttribute, Fingerprint, MessageIntegrity, MessageIntegritySha256,
    Nonce, PasswordAlgorithm, PasswordAlgorithms, PasswordAlgorithmsIter, Realm, Software,
    UnknownAttributes, UnknownAttributesIter, UserHash, Username,
};
pub use turn::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, ConnectionId, Data, DontFragment,
    EvenPort, Icmp, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
};

use crate::TransactionId;

/// An attribute type number (RFC 8489 §14).
///
/// Types below 0x8000 are comprehension-required: a receiver that does not know one must
/// reject a request carrying it with 420 (RFC 8489 §6.3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

macro_rules! attr_types {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        impl AttrType {
            $($(#[$doc])* pub const $name: AttrType = AttrType($value);)*

            /// The attribute's name in its RFC, or `None` for a type this crate does not know.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        #[cfg(test)]
        pub(crate) const ALL_KNOWN: &[AttrType] = &[$(AttrType::$name),*];
    };
}

attr_types! {
    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS";
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    CHANGE_REQUEST = 0x0003, "CHANGE-REQUEST";
    /// USERNAME (RFC 8489 §14.3).
    USERNAME = 0x0006, "USERNAME";
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5).
    MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY";
    /// ERROR-CODE (RFC 8489 §14.8).
    ERROR_CODE = 0x0009, "ERROR-CODE";
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
    UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES";
    /// CHANNEL-NUMBER (RFC 8656 §18.1).
    CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER";
    /// LIFETIME (RFC 8656 §18.2).
    LIFETIME = 0x000D, "LIFETIME";
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS";
    /// DATA (RFC 8656 §18.4).
    DATA = 0x0013, "DATA";
    /// REALM (RFC 8489 §14.9).
    REALM = 0x0014, "REALM";
    /// NONCE (RFC 8489 §14.10).
    NONCE = 0x0015, "NONCE";
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS";
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
    REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY";
    /// EVEN-PORT (RFC 8656 §18.7).
    EVEN_PORT = 0x0018, "EVEN-PORT";
    /// REQUESTED-TRANSPORT (RFC 8656 §18.8).
    REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT";
    /// DONT-FRAGMENT (RFC 8656 §18.9).
    DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT";
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256";
    /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
    PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM";
    /// USERHASH (RFC 8489 §14.4).
    USERHASH = 0x001E, "USERHASH";
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS";
    /// RESERVATION-TOKEN (RFC 8656 §18.10).
    RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN";
    /// PRIORITY (RFC 8445 §16.1).
    PRIORITY = 0x0024, "PRIORITY";
    /// USE-CANDIDATE (RFC 8445 §16.1).
    USE_CANDIDATE = 0x0025, "USE-CANDIDATE";
    /// PADDING (RFC 5780 §7.6).
    PADDING = 0x0026, "PADDING";
    /// RESPONSE-PORT (RFC 5780 §7.5).
    RESPONSE_PORT = 0x0027, "RESPONSE-PORT";
    /// CONNECTION-ID (RFC 6062 §6.2.1).
    CONNECTION_ID = 0x002A, "CONNECTION-ID";
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
    ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY";
    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
    ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE";
    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11).
    PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS";
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16).
    ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN";
    /// ICMP (RFC 8656 §18.13).
    ICMP = 0x8004, "ICMP";
    /// SOFTWARE (RFC 8489 §14.14).
    SOFTWARE = 0x8022, "SOFTWARE";
    /// ALTERNATE-SERVER (RFC 8489 §14.15).
    ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER";
    /// FINGERPRINT (RFC 8489 §14.7).
    FINGERPRINT = 0x8028, "FINGERPRINT";
    /// ICE-CONTROLLED (RFC 8445 §16.1).
    ICE_CONTROLLED = 0x8029, "ICE-CONTROLLED";
    /// ICE-CONTROLLING (RFC 8445 §16.1).
    ICE_CONTROLLING = 0x802A, "ICE-CONTROLLING";
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    RESPONSE_ORIGIN = 0x802B, "RESPONSE-ORIGIN";
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    OTHER_ADDRESS = 0x802C, "OTHER-ADDRESS";
}

impl AttrType {
    /// Whether a receiver must understand this attribute to process the message: types in
    /// 0x0000..=0x7FFF (RFC 8489 §14).
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// Whether this crate decodes the attribute.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "AttrType({:#06x})", self.0),
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why an attribute value could not be decoded. A request carrying one is answered with 400
/// (RFC 8489 §6.3.1); an indication or response carrying one is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// The value has a length the attribute does not allow.
    #[error("{attr}: a value of {len} bytes is not allowed")]
    InvalidLength {
        /// The attribute.
        attr: AttrType,
        /// The length found.
        len: usize,
    },
    /// An address attribute names a family other than IPv4 (0x01) or IPv6 (0x02).
    #[error("{attr}: unknown address family {family:#04x}")]
    UnknownAddressFamily {
        /// The attribute.
        attr: AttrType,
        /// The family byte found.
        family: u8,
    },
    /// A text attribute is not valid UTF-8.
    #[error("{attr}: not valid UTF-8")]
    InvalidUtf8 {
        /// The attribute.
        attr: AttrType,
    },
    /// A field holds a value its RFC does not allow (an error class outside 3..=6, a channel
    /// number outside 0x4000..=0x4FFF, a truncated algorithm list).
    #[error("{attr}: invalid value")]
    InvalidValue {
        /// The attribute.
        attr: AttrType,
    },
}

/// One attribute as it sits in a message: its type and its value without padding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// The type.
    pub attr_type: AttrType,
    /// The value, without padding.
    pub value: &'a [u8],
}

impl fmt::Debug for RawAttribute<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}[{} bytes]", self.attr_type, self.value.len())
    }
}

/// A typed attribute: how its value decodes from a message and encodes into a buffer.
///
/// Decoding borrows from the message and never allocates. Encoding writes exactly
/// [`value_len`](Attribute::value_len) bytes; the writer adds the header and zeroed padding.
pub trait Attribute<'a>: Sized {
    /// The attribute type this decodes.
    const TYPE: AttrType;

    /// Decodes a value (without padding). `tid` is the message's transaction ID, which the
    /// XOR address attributes need.
    fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttributeError>;

    /// The encoded length of the value, without padding.
    fn value_len(&self) -> usize;

    /// Encodes the value into `out`, which is exactly [`value_len`](Attribute::value_len) bytes.
    fn encode(&self, out: &mut [u8], tid: &TransactionId);
}

/// Checks that `value` has exactly `N` bytes and returns them as an array.
pub(crate) fn fixed<const N: usize>(
    attr: AttrType,
    value: &[u8],
) -> Result<[u8; N], AttributeError> {
    value.try_into().map_err(|_| AttributeError::InvalidLength {
        attr,
        len: value.len(),
    })
}

/// Decodes a UTF-8 attribute value of at most `max` bytes.
pub(crate) fn text(attr: AttrType, value: &[u8], max: usize) -> Result<&str, AttributeError> {
    if value.len() > max {
        return Err(AttributeError::InvalidLength {
            attr,
            len: value.len(),
        });
    }
    core::str::from_utf8(value).map_err(|_| AttributeError::InvalidUtf8 { attr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_have_unique_numbers_and_names() {
        for (i, a) in ALL_KNOWN.iter().enumerate() {
            for b in &ALL_KNOWN[i + 1..] {
                assert_ne!(a.0, b.0);
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(ALL_KNOWN.len(), 39);
    }

    #[test]
    fn comprehension_range() {
        assert!(AttrType::USERNAME.is_comprehension_required());
        assert!(!AttrType::SOFTWARE.is_comprehension_required());
        assert!(!AttrType(0x7FFF).is_known());
        assert_eq!(format!("{:?}", AttrType(0x7FFF)), "AttrType(0x7fff)");
    }
}
