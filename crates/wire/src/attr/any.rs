//! [`AnyAttribute`]: every attribute this crate knows in one enum, for tools that print or
//! rewrite whole messages, for fuzzing and for round-trip tests.

use super::*;
use crate::{ChannelNumber, MessageWriter, TransactionId, WriteError};

macro_rules! any_attribute {
    ($($variant:ident($ty:ty),)*) => {
        /// Any attribute, decoded; types this crate does not know stay raw.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum AnyAttribute<'a> {
            $($variant($ty),)*
            /// An attribute type this crate does not know.
            Unknown(RawAttribute<'a>),
        }

        impl<'a> AnyAttribute<'a> {
            /// Decodes a raw attribute of any type.
            pub fn decode(
                raw: RawAttribute<'a>,
                tid: &TransactionId,
            ) -> Result<AnyAttribute<'a>, AttributeError> {
                $(if raw.attr_type == <$ty as Attribute<'a>>::TYPE {
                    return <$ty as Attribute<'a>>::decode(raw.value, tid).map(AnyAttribute::$variant);
                })*
                Ok(AnyAttribute::Unknown(raw))
            }

            /// The attribute's type.
            pub fn attr_type(&self) -> AttrType {
                match self {
                    $(AnyAttribute::$variant(_) => <$ty as Attribute<'a>>::TYPE,)*
                    AnyAttribute::Unknown(raw) => raw.attr_type,
                }
            }
        }

        impl MessageWriter<'_> {
            /// Appends an attribute of any type.
            pub fn add_any(&mut self, attr: &AnyAttribute<'_>) -> Result<(), WriteError> {
                match attr {
                    $(AnyAttribute::$variant(a) => self.add(a),)*
                    AnyAttribute::Unknown(raw) => self.add_raw(raw.attr_type, raw.value),
                }
            }
        }
    };
}

any_attribute! {
    MappedAddress(MappedAddress),
    XorMappedAddress(XorMappedAddress),
    XorPeerAddress(XorPeerAddress),
    XorRelayedAddress(XorRelayedAddress),
    AlternateServer(AlternateServer),
    ResponseOrigin(ResponseOrigin),
    OtherAddress(OtherAddress),
    Username(Username<'a>),
    Realm(Realm<'a>),
    Nonce(Nonce<'a>),
    Software(Software<'a>),
    AlternateDomain(AlternateDomain<'a>),
    MessageIntegrity(MessageIntegrity),
    MessageIntegritySha256(MessageIntegritySha256<'a>),
    Fingerprint(Fingerprint),
    UserHash(UserHash),
    ErrorCode(ErrorCodeAttribute<'a>),
    UnknownAttributes(UnknownAttributes<'a>),
    PasswordAlgorithm(PasswordAlgorithm<'a>),
    PasswordAlgorithms(PasswordAlgorithms<'a>),
    ChannelNumber(ChannelNumber),
    Lifetime(Lifetime),
    Data(Data<'a>),
    RequestedAddressFamily(RequestedAddressFamily),
    AdditionalAddressFamily(AdditionalAddressFamily),
    EvenPort(EvenPort),
    RequestedTransport(RequestedTransport),
    DontFragment(DontFragment),
    ReservationToken(ReservationToken),
    AddressErrorCode(AddressErrorCode<'a>),
    Icmp(Icmp),
    ConnectionId(ConnectionId),
    ChangeRequest(ChangeRequest),
    ResponsePort(ResponsePort),
    Padding(Padding<'a>),
    Priority(Priority),
    UseCandidate(UseCandidate),
    IceControlled(IceControlled),
    IceControlling(IceControlling),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_type_has_a_variant() {
        let tid = TransactionId::new([0; 12]);
        for &t in ALL_KNOWN {
            let decoded = AnyAttribute::decode(
                RawAttribute {
                    attr_type: t,
                    value: &[],
                },
                &tid,
            );
            // An empty value is invalid for most types; what matters is that the type was
            // recognised rather than left raw.
            assert!(
                !matches!(decoded, Ok(AnyAttribute::Unknown(_))),
                "{t:?} has no variant"
            );
        }
    }
}
