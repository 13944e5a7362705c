//! The attributes of TURN (RFC 8656 §18) and of TURN TCP allocations (RFC 6062 §6.2).

use super::stun::{decode_error_code, encode_error_code};
use super::{AttrType, Attribute, AttributeError, fixed};
use crate::{ChannelNumber, ErrorCode, TransactionId};

impl<'a> Attribute<'a> for ChannelNumber {
    const TYPE: AttrType = AttrType::CHANNEL_NUMBER;

    /// A number outside 0x4000..=0x4FFF is [`AttributeError::InvalidValue`], which a
    /// ChannelBind answers with 400 (RFC 8656 §12.2).
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        let b = fixed::<4>(Self::TYPE, value)?;
        ChannelNumber::new(u16::from_be_bytes([b[0], b[1]]))
            .ok_or(AttributeError::InvalidValue { attr: Self::TYPE })
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out[..2].copy_from_slice(&self.value().to_be_bytes());
        out[2..].fill(0);
    }
}

int_attribute!(
    /// LIFETIME: seconds until an allocation expires unless refreshed; 0 in a Refresh deletes
    /// it (RFC 8656 §18.2).
    Lifetime(u32), LIFETIME
);

int_attribute!(
    /// CONNECTION-ID: names a TCP connection to a peer of a TCP allocation (RFC 6062 §6.2.1).
    ConnectionId(u32), CONNECTION_ID
);

flag_attribute!(
    /// DONT-FRAGMENT: the client asks that the relayed UDP datagram have the DF bit set
    /// (RFC 8656 §18.9).
    DontFragment, DONT_FRAGMENT
);

/// DATA: the application data of a Send or Data indication (RFC 8656 §18.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Data<'a>(pub &'a [u8]);

impl<'a> Attribute<'a> for Data<'a> {
    const TYPE: AttrType = AttrType::DATA;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        Ok(Data(value))
    }

    fn value_len(&self) -> usize {
        self.0.len()
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.0);
    }
}

/// An address family as TURN numbers it (RFC 8656 §18.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4, 0x01.
    Ipv4,
    /// IPv6, 0x02.
    Ipv6,
}

impl AddressFamily {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            AddressFamily::Ipv4 => 0x01,
            AddressFamily::Ipv6 => 0x02,
        }
    }

    /// The family of a wire value, if it is one.
    pub const fn from_u8(value: u8) -> Option<AddressFamily> {
        match value {
            0x01 => Some(AddressFamily::Ipv4),
            0x02 => Some(AddressFamily::Ipv6),
            _ => None,
        }
    }

    fn decode(attr: AttrType, value: u8) -> Result<AddressFamily, AttributeError> {
        AddressFamily::from_u8(value).ok_or(AttributeError::UnknownAddressFamily {
            attr,
            family: value,
        })
    }
}

macro_rules! family_attribute {
    ($(#[$doc:meta])* $name:ident, $attr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub AddressFamily);

        impl<'a> Attribute<'a> for $name {
            const TYPE: AttrType = AttrType::$attr;

            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
                let b = fixed::<4>(Self::TYPE, value)?;
                AddressFamily::decode(Self::TYPE, b[0]).map($name)
            }

            fn value_len(&self) -> usize {
                4
            }

            fn encode(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&[self.0.to_u8(), 0, 0, 0]);
            }
        }
    };
}

family_attribute!(
    /// REQUESTED-ADDRESS-FAMILY: the family of the relayed address a client wants; an unknown
    /// family is answered with 440 (RFC 8656 §18.6).
    RequestedAddressFamily, REQUESTED_ADDRESS_FAMILY
);
family_attribute!(
    /// ADDITIONAL-ADDRESS-FAMILY: asks for a second relayed address, of this family (IPv6),
    /// in a dual allocation (RFC 8656 §18.11).
    AdditionalAddressFamily, ADDITIONAL_ADDRESS_FAMILY
);

/// EVEN-PORT: asks for an even relay port, and with `reserve_next` for the next port to be
/// kept for a later allocation (RFC 8656 §18.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EvenPort {
    /// The R bit: reserve the next higher port.
    pub reserve_next: bool,
}

impl<'a> Attribute<'a> for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        let [flags] = fixed::<1>(Self::TYPE, value)?;
        Ok(EvenPort {
            reserve_next: flags & 0x80 != 0,
        })
    }

    fn value_len(&self) -> usize {
        1
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out[0] = if self.reserve_next { 0x80 } else { 0 };
    }
}

/// REQUESTED-TRANSPORT: the transport of the relayed address, as an IP protocol number
/// (RFC 8656 §18.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    /// UDP, protocol 17 (RFC 8656).
    pub const UDP: RequestedTransport = RequestedTransport(17);
    /// TCP, protocol 6 (RFC 6062).
    pub const TCP: RequestedTransport = RequestedTransport(6);
}

impl<'a> Attribute<'a> for RequestedTransport {
    const TYPE: AttrType = AttrType::REQUESTED_TRANSPORT;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        Ok(RequestedTransport(fixed::<4>(Self::TYPE, value)?[0]))
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&[self.0, 0, 0, 0]);
    }
}

/// RESERVATION-TOKEN: names a relay port kept by an earlier EVEN-PORT allocation
/// (RFC 8656 §18.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservationToken(pub [u8; 8]);

impl<'a> Attribute<'a> for ReservationToken {
    const TYPE: AttrType = AttrType::RESERVATION_TOKEN;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        fixed(Self::TYPE, value).map(ReservationToken)
    }

    fn value_len(&self) -> usize {
        8
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&self.0);
    }
}

/// ADDRESS-ERROR-CODE: why one family of a dual allocation could not be allocated
/// (RFC 8656 §18.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressErrorCode<'a> {
    /// The family that failed.
    pub family: AddressFamily,
    /// The error code.
    pub code: ErrorCode,
    /// The reason phrase; may be empty.
    pub reason: &'a str,
}

impl<'a> Attribute<'a> for AddressErrorCode<'a> {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        let (code, reason) = decode_error_code(Self::TYPE, value)?;
        let family = AddressFamily::decode(Self::TYPE, value[0])?;
        Ok(AddressErrorCode {
            family,
            code,
            reason,
        })
    }

    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out[0] = self.family.to_u8();
        out[1] = 0;
        encode_error_code(self.code, self.reason, out);
    }
}

/// ICMP: an ICMP error the relay received for a peer, passed to the client in a Data
/// indication (RFC 8656 §18.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// ICMP type, 7 bits (0..=127).
    pub icmp_type: u8,
    /// ICMP code, 9 bits (0..=511).
    pub code: u16,
    /// Error data: the next-hop MTU for "fragmentation needed" / "packet too big", else 0.
    pub error_data: u32,
}

impl<'a> Attribute<'a> for Icmp {
    const TYPE: AttrType = AttrType::ICMP;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        let b = fixed::<8>(Self::TYPE, value)?;
        let word = u16::from_be_bytes([b[2], b[3]]);
        Ok(Icmp {
            icmp_type: (word >> 9) as u8,
            code: word & 0x01FF,
            error_data: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    fn value_len(&self) -> usize {
        8
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let word = (u16::from(self.icmp_type & 0x7F) << 9) | (self.code & 0x01FF);
        out[..2].fill(0);
        out[2..4].copy_from_slice(&word.to_be_bytes());
        out[4..].copy_from_slice(&self.error_data.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId::new([0; 12]);

    #[test]
    fn channel_number_range_is_enforced() {
        assert!(ChannelNumber::decode(&[0x40, 0x00, 0, 0], &TID).is_ok());
        assert!(ChannelNumber::decode(&[0x4F, 0xFF, 0, 0], &TID).is_ok());
        for bad in [[0x3F, 0xFF, 0, 0], [0x50, 0x00, 0, 0], [0xFF, 0xFF, 0, 0]] {
            assert_eq!(
                ChannelNumber::decode(&bad, &TID),
                Err(AttributeError::InvalidValue {
                    attr: AttrType::CHANNEL_NUMBER
                })
            );
        }
    }

    #[test]
    fn requested_family_reports_unknown_family() {
        assert_eq!(
            RequestedAddressFamily::decode(&[0x02, 0, 0, 0], &TID),
            Ok(RequestedAddressFamily(AddressFamily::Ipv6))
        );
        assert!(matches!(
            RequestedAddressFamily::decode(&[0x03, 0, 0, 0], &TID),
            Err(AttributeError::UnknownAddressFamily { family: 3, .. })
        ));
    }

    #[test]
    fn icmp_fields_keep_their_widths() {
        let icmp = Icmp {
            icmp_type: 127,
            code: 511,
            error_data: 1280,
        };
        let mut out = [0xFF; 8];
        icmp.encode(&mut out, &TID);
        assert_eq!(&out[..4], &[0, 0, 0xFF, 0xFF]);
        assert_eq!(Icmp::decode(&out, &TID), Ok(icmp));
    }

    #[test]
    fn connection_id_is_four_bytes_big_endian() {
        // RFC 6062 §6.2.1: type 0x002A, a 32-bit value, comprehension-required.
        assert_eq!(ConnectionId::TYPE, AttrType(0x002A));
        assert_eq!(ConnectionId::TYPE.name(), Some("CONNECTION-ID"));
        assert!(ConnectionId::TYPE.is_comprehension_required());
        assert!(ConnectionId::TYPE.is_known());
        let id = ConnectionId(0x5A12_3456);
        assert_eq!(id.value_len(), 4);
        let mut out = [0u8; 4];
        id.encode(&mut out, &TID);
        assert_eq!(out, [0x5A, 0x12, 0x34, 0x56]);
        assert_eq!(ConnectionId::decode(&out, &TID), Ok(id));
        for bad in [&[0u8; 3][..], &[0u8; 5][..], &[][..]] {
            assert_eq!(
                ConnectionId::decode(bad, &TID),
                Err(AttributeError::InvalidLength {
                    attr: AttrType::CONNECTION_ID,
                    len: bad.len()
                })
            );
        }
    }

    #[test]
    fn requested_transport_numbers() {
        // IP protocol numbers: UDP 17 (RFC 8656 §18.8), TCP 6 (RFC 6062 §4.1).
        let mut out = [0xFF; 4];
        RequestedTransport::TCP.encode(&mut out, &TID);
        assert_eq!(out, [6, 0, 0, 0], "RFFU zeroed");
        assert_eq!(
            RequestedTransport::decode(&[17, 0, 0, 0], &TID),
            Ok(RequestedTransport::UDP)
        );
    }

    #[test]
    fn even_port_flag() {
        assert_eq!(
            EvenPort::decode(&[0x80], &TID),
            Ok(EvenPort { reserve_next: true })
        );
        assert!(EvenPort::decode(&[], &TID).is_err());
    }
}
