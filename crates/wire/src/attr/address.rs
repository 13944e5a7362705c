//! Address attributes, plain (MAPPED-ADDRESS, RFC 8489 §14.1) and XOR-obfuscated
//! (XOR-MAPPED-ADDRESS, RFC 8489 §14.2), and every attribute that shares one of the two forms.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{AttrType, Attribute, AttributeError};
use crate::{MAGIC_COOKIE, TransactionId};

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// The 16 bytes an IPv6 address is XORed with: the magic cookie, then the transaction ID.
fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(tid.as_bytes());
    key
}

fn decode_address(
    attr: AttrType,
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, AttributeError> {
    let invalid_length = AttributeError::InvalidLength {
        attr,
        len: value.len(),
    };
    if value.len() < 4 {
        return Err(invalid_length);
    }
    let family = value[1];
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (family, value.len()) {
        (FAMILY_IPV4, 8) => {
            let mut octets = [value[4], value[5], value[6], value[7]];
            if xor.is_some() {
                for (o, k) in octets.iter_mut().zip(MAGIC_COOKIE.to_be_bytes()) {
                    *o ^= k;
                }
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_IPV6, 20) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&value[4..20]);
            if let Some(tid) = xor {
                for (o, k) in octets.iter_mut().zip(xor_key(tid)) {
                    *o ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        (FAMILY_IPV4 | FAMILY_IPV6, _) => return Err(invalid_length),
        (family, _) => return Err(AttributeError::UnknownAddressFamily { attr, family }),
    };
    Ok(SocketAddr::new(ip, port))
}

fn address_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn encode_address(addr: &SocketAddr, out: &mut [u8], xor: Option<&TransactionId>) {
    out[0] = 0;
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            let mut octets = ip.octets();
            if xor.is_some() {
                for (o, k) in octets.iter_mut().zip(MAGIC_COOKIE.to_be_bytes()) {
                    *o ^= k;
                }
            }
            out[4..8].copy_from_slice(&octets);
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            let mut octets = ip.octets();
            if let Some(tid) = xor {
                for (o, k) in octets.iter_mut().zip(xor_key(tid)) {
                    *o ^= k;
                }
            }
            out[4..20].copy_from_slice(&octets);
        }
    }
}

macro_rules! address_attribute {
    ($(#[$doc:meta])* $name:ident, $attr:ident, xor = $xor:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attribute<'a> for $name {
            const TYPE: AttrType = AttrType::$attr;

            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttributeError> {
                decode_address(Self::TYPE, value, $xor.then_some(tid)).map($name)
            }

            fn value_len(&self) -> usize {
                address_len(&self.0)
            }

            fn encode(&self, out: &mut [u8], tid: &TransactionId) {
                encode_address(&self.0, out, $xor.then_some(tid))
            }
        }
    };
}

address_attribute!(
    /// MAPPED-ADDRESS: the client's reflexive address in clear, from RFC 3489 servers
    /// (RFC 8489 §14.1).
    MappedAddress, MAPPED_ADDRESS, xor = false
);
address_attribute!(
    /// XOR-MAPPED-ADDRESS: the client's reflexive transport address (RFC 8489 §14.2).
    XorMappedAddress, XOR_MAPPED_ADDRESS, xor = true
);
address_attribute!(
    /// XOR-PEER-ADDRESS: a peer of a TURN allocation; a CreatePermission may carry several
    /// (RFC 8656 §18.3).
    XorPeerAddress, XOR_PEER_ADDRESS, xor = true
);
address_attribute!(
    /// XOR-RELAYED-ADDRESS: the address the TURN server allocated; a dual allocation carries
    /// two (RFC 8656 §18.5).
    XorRelayedAddress, XOR_RELAYED_ADDRESS, xor = true
);
address_attribute!(
    /// ALTERNATE-SERVER: where a 300 Try Alternate sends the client (RFC 8489 §14.15).
    AlternateServer, ALTERNATE_SERVER, xor = false
);
address_attribute!(
    /// RESPONSE-ORIGIN: the address a response was sent from (RFC 5780 §7.3).
    ResponseOrigin, RESPONSE_ORIGIN, xor = false
);
address_attribute!(
    /// OTHER-ADDRESS: the server's alternate address and port for behaviour discovery
    /// (RFC 5780 §7.4).
    OtherAddress, OTHER_ADDRESS, xor = false
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<'a, A: Attribute<'a> + PartialEq + core::fmt::Debug>(
        attr: A,
        buf: &'a mut [u8; 20],
        tid: &TransactionId,
    ) {
        let len = attr.value_len();
        attr.encode(&mut buf[..len], tid);
        assert_eq!(A::decode(&buf[..len], tid), Ok(attr));
    }

    #[test]
    fn both_families_round_trip_plain_and_xor() {
        let tid = TransactionId::new(*b"0123456789ab");
        let v4: SocketAddr = "192.0.2.1:32853".parse().expect("literal");
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().expect("literal");
        round_trip(XorMappedAddress(v4), &mut [0; 20], &tid);
        round_trip(XorMappedAddress(v6), &mut [0; 20], &tid);
        round_trip(MappedAddress(v4), &mut [0; 20], &tid);
        round_trip(OtherAddress(v6), &mut [0; 20], &tid);
    }

    #[test]
    fn xor_hides_the_address_on_the_wire() {
        // RFC 8489 §14.2: 192.0.2.1:32853 is carried as 0xA147 / 0xE112A643.
        let tid = TransactionId::new([0; 12]);
        let mut out = [0u8; 8];
        XorMappedAddress("192.0.2.1:32853".parse().expect("literal")).encode(&mut out, &tid);
        assert_eq!(out, [0x00, 0x01, 0xA1, 0x47, 0xE1, 0x12, 0xA6, 0x43]);
    }

    #[test]
    fn rejects_bad_lengths_and_families() {
        let tid = TransactionId::new([0; 12]);
        let err = XorPeerAddress::decode(&[], &tid);
        assert!(matches!(
            err,
            Err(AttributeError::InvalidLength { len: 0, .. })
        ));
        let err = XorPeerAddress::decode(&[0, 1, 0, 0, 1, 2, 3], &tid);
        assert!(matches!(
            err,
            Err(AttributeError::InvalidLength { len: 7, .. })
        ));
        let err = XorPeerAddress::decode(&[0, 2, 0, 0, 1, 2, 3, 4], &tid);
        assert!(matches!(
            err,
            Err(AttributeError::InvalidLength { len: 8, .. })
        ));
        let err = MappedAddress::decode(&[0, 3, 0, 0, 1, 2, 3, 4], &tid);
        assert!(matches!(
            err,
            Err(AttributeError::UnknownAddressFamily { family: 3, .. })
        ));
    }
}
