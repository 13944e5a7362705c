//! The behaviour-discovery attributes of RFC 5780 §7.

use super::{AttrType, Attribute, AttributeError, fixed};
use crate::TransactionId;

const CHANGE_IP: u8 = 0x04;
const CHANGE_PORT: u8 = 0x02;

/// CHANGE-REQUEST: asks the server to answer from its other IP address and/or port
/// (RFC 5780 §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ChangeRequest {
    /// Flag A: answer from the other IP address.
    pub change_ip: bool,
    /// Flag B: answer from the other port.
    pub change_port: bool,
}

impl<'a> Attribute<'a> for ChangeRequest {
    const TYPE: AttrType = AttrType::CHANGE_REQUEST;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        let flags = fixed::<4>(Self::TYPE, value)?[3];
        Ok(ChangeRequest {
            change_ip: flags & CHANGE_IP != 0,
            change_port: flags & CHANGE_PORT != 0,
        })
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let mut flags = 0;
        if self.change_ip {
            flags |= CHANGE_IP;
        }
        if self.change_port {
            flags |= CHANGE_PORT;
        }
        out.copy_from_slice(&[0, 0, 0, flags]);
    }
}

/// RESPONSE-PORT: the port the response should be sent to, on the request's source IP
/// (RFC 5780 §7.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponsePort(pub u16);

impl<'a> Attribute<'a> for ResponsePort {
    const TYPE: AttrType = AttrType::RESPONSE_PORT;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        let b = fixed::<4>(Self::TYPE, value)?;
        Ok(ResponsePort(u16::from_be_bytes([b[0], b[1]])))
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..].fill(0);
    }
}

/// PADDING: bytes that make a request bigger, to probe for fragmentation (RFC 5780 §7.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Padding<'a>(pub &'a [u8]);

impl<'a> Attribute<'a> for Padding<'a> {
    const TYPE: AttrType = AttrType::PADDING;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttributeError> {
        Ok(Padding(value))
    }

    fn value_len(&self) -> usize {
        self.0.len()
    }

    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.0);
    }
}
