//! Macros for the attribute shapes that recur: a big-endian integer, and a flag with no value.

/// An attribute whose value is one big-endian integer of the given width.
macro_rules! int_attribute {
    ($(#[$doc:meta])* $name:ident($int:ty), $attr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $int);

        impl<'a> $crate::attr::Attribute<'a> for $name {
            const TYPE: $crate::attr::AttrType = $crate::attr::AttrType::$attr;

            fn decode(
                value: &'a [u8],
                _: &$crate::TransactionId,
            ) -> Result<Self, $crate::attr::AttributeError> {
                $crate::attr::fixed(Self::TYPE, value).map(|b| $name(<$int>::from_be_bytes(b)))
            }

            fn value_len(&self) -> usize {
                core::mem::size_of::<$int>()
            }

            fn encode(&self, out: &mut [u8], _: &$crate::TransactionId) {
                out.copy_from_slice(&self.0.to_be_bytes());
            }
        }
    };
}

/// An attribute that carries no value: its presence is the message.
macro_rules! flag_attribute {
    ($(#[$doc:meta])* $name:ident, $attr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name;

        impl<'a> $crate::attr::Attribute<'a> for $name {
            const TYPE: $crate::attr::AttrType = $crate::attr::AttrType::$attr;

            fn decode(
                value: &'a [u8],
                _: &$crate::TransactionId,
            ) -> Result<Self, $crate::attr::AttributeError> {
                $crate::attr::fixed::<0>(Self::TYPE, value).map(|_| $name)
            }

            fn value_len(&self) -> usize {
                0
            }

            fn encode(&self, _: &mut [u8], _: &$crate::TransactionId) {}
        }
    };
}
