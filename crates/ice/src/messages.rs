//! The STUN messages of ICE: connectivity checks, their answers, gathering requests and
//! keepalives, written with the shared codec.

use core::net::SocketAddr;

use icebreaker_wire::attr::{
    ErrorCodeAttribute, IceControlled, IceControlling, Priority, UseCandidate, Username,
    XorMappedAddress,
};
use icebreaker_wire::{
    Class, ErrorCode, IntegrityKey, MessageType, MessageWriter, Method, TransactionId, WriteError,
};

/// Large enough for every message this module writes: USERNAME is at most 513 bytes.
const MAX_LEN: usize = 1024;

/// What a connectivity check carries (RFC 8445 §7.1).
pub(crate) struct CheckRequest<'a> {
    pub(crate) username: &'a str,
    pub(crate) password: &'a str,
    pub(crate) priority: u32,
    pub(crate) controlling: bool,
    pub(crate) tie_breaker: u64,
    pub(crate) nominate: bool,
}

pub(crate) fn check_request(
    tid: TransactionId,
    check: &CheckRequest<'_>,
) -> Result<Vec<u8>, WriteError> {
    let mut buf = [0u8; MAX_LEN];
    let binding = MessageType::new(Method::BINDING, Class::Request);
    let mut writer = MessageWriter::new(&mut buf, binding, tid)?;
    writer.add(&Username(check.username))?;
    writer.add(&Priority(check.priority))?;
    if check.controlling {
        writer.add(&IceControlling(check.tie_breaker))?;
        if check.nominate {
            writer.add(&UseCandidate)?;
        }
    } else {
        writer.add(&IceControlled(check.tie_breaker))?;
    }
    writer.add_message_integrity(&IntegrityKey::short_term(check.password))?;
    writer.add_fingerprint()?;
    let len = writer.finish();
    Ok(buf[..len].to_vec())
}

/// The success answer to a check: the source it came from, signed with our password.
pub(crate) fn check_success(
    tid: TransactionId,
    mapped: SocketAddr,
    password: &str,
) -> Result<Vec<u8>, WriteError> {
    let mut buf = [0u8; MAX_LEN];
    let success = MessageType::new(Method::BINDING, Class::Success);
    let mut writer = MessageWriter::new(&mut buf, success, tid)?;
    writer.add(&XorMappedAddress(mapped))?;
    writer.add_message_integrity(&IntegrityKey::short_term(password))?;
    writer.add_fingerprint()?;
    let len = writer.finish();
    Ok(buf[..len].to_vec())
}

/// 487 Role Conflict (RFC 8445 §7.3.1.1), signed like a success.
pub(crate) fn role_conflict(tid: TransactionId, password: &str) -> Result<Vec<u8>, WriteError> {
    let mut buf = [0u8; MAX_LEN];
    let error = MessageType::new(Method::BINDING, Class::Error);
    let mut writer = MessageWriter::new(&mut buf, error, tid)?;
    writer.add(&ErrorCodeAttribute {
        code: ErrorCode::ROLE_CONFLICT,
        reason: "Role Conflict",
    })?;
    writer.add_message_integrity(&IntegrityKey::short_term(password))?;
    writer.add_fingerprint()?;
    let len = writer.finish();
    Ok(buf[..len].to_vec())
}

/// A Binding request to a STUN server, for a server-reflexive candidate.
pub(crate) fn binding_request(tid: TransactionId) -> Result<Vec<u8>, WriteError> {
    let mut buf = [0u8; 64];
    let binding = MessageType::new(Method::BINDING, Class::Request);
    let mut writer = MessageWriter::new(&mut buf, binding, tid)?;
    writer.add_fingerprint()?;
    let len = writer.finish();
    Ok(buf[..len].to_vec())
}

/// A Binding indication: the keepalive of RFC 8445 §11, which needs no answer.
pub(crate) fn keepalive(tid: TransactionId) -> Result<Vec<u8>, WriteError> {
    let mut buf = [0u8; 64];
    let indication = MessageType::new(Method::BINDING, Class::Indication);
    let mut writer = MessageWriter::new(&mut buf, indication, tid)?;
    writer.add_fingerprint()?;
    let len = writer.finish();
    Ok(buf[..len].to_vec())
}
