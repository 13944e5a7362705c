//! STUN error codes by name (RFC 8489 §14.8, RFC 8656 §19, RFC 6062 §6.3, RFC 8445 §7.3.1.1).

use core::fmt;

/// A STUN error code: a number from 300 to 699, carried in ERROR-CODE as a class (hundreds) and
/// a number (0 to 99).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(u16);

impl ErrorCode {
    /// 300 Try Alternate: use the server in ALTERNATE-SERVER (RFC 8489).
    pub const TRY_ALTERNATE: ErrorCode = ErrorCode(300);
    /// 400 Bad Request: the request was malformed (RFC 8489).
    pub const BAD_REQUEST: ErrorCode = ErrorCode(400);
    /// 401 Unauthenticated: missing or wrong credentials (RFC 8489).
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode(401);
    /// 403 Forbidden: the request is valid but refused, e.g. by peer policy (RFC 8656).
    pub const FORBIDDEN: ErrorCode = ErrorCode(403);
    /// 405 Mobility Forbidden (RFC 8016).
    pub const MOBILITY_FORBIDDEN: ErrorCode = ErrorCode(405);
    /// 420 Unknown Attribute: a comprehension-required attribute was not understood (RFC 8489).
    pub const UNKNOWN_ATTRIBUTE: ErrorCode = ErrorCode(420);
    /// 437 Allocation Mismatch (RFC 8656).
    pub const ALLOCATION_MISMATCH: ErrorCode = ErrorCode(437);
    /// 438 Stale Nonce: retry with the NONCE in this response (RFC 8489).
    pub const STALE_NONCE: ErrorCode = ErrorCode(438);
    /// 440 Address Family not Supported (RFC 8656).
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: ErrorCode = ErrorCode(440);
    /// 441 Wrong Credentials: not the credentials that made the allocation (RFC 8656).
    pub const WRONG_CREDENTIALS: ErrorCode = ErrorCode(441);
    /// 442 Unsupported Transport Protocol (RFC 8656).
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: ErrorCode = ErrorCode(442);
    /// 443 Peer Address Family Mismatch (RFC 8656).
    pub const PEER_ADDRESS_FAMILY_MISMATCH: ErrorCode = ErrorCode(443);
    /// 446 Connection Already Exists (RFC 6062).
    pub const CONNECTION_ALREADY_EXISTS: ErrorCode = ErrorCode(446);
    /// 447 Connection Timeout or Failure (RFC 6062).
    pub const CONNECTION_TIMEOUT_OR_FAILURE: ErrorCode = ErrorCode(447);
    /// 486 Allocation Quota Reached (RFC 8656).
    pub const ALLOCATION_QUOTA_REACHED: ErrorCode = ErrorCode(486);
    /// 487 Role Conflict (RFC 8445).
    pub const ROLE_CONFLICT: ErrorCode = ErrorCode(487);
    /// 500 Server Error (RFC 8489).
    pub const SERVER_ERROR: ErrorCode = ErrorCode(500);
    /// 508 Insufficient Capacity (RFC 8656).
    pub const INSUFFICIENT_CAPACITY: ErrorCode = ErrorCode(508);

    /// An error code from its number; `None` outside 300..=699 (RFC 8489 §14.8).
    pub const fn new(code: u16) -> Option<ErrorCode> {
        if code >= 300 && code <= 699 {
            Some(ErrorCode(code))
        } else {
            None
        }
    }

    /// The number, e.g. 401.
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The class: the hundreds digit, 3 to 6.
    pub const fn class(self) -> u8 {
        (self.0 / 100) as u8
    }

    /// The number within the class, 0 to 99.
    pub const fn number(self) -> u8 {
        (self.0 % 100) as u8
    }

    /// The reason phrase the RFCs suggest, or `None` for a code they do not name.
    pub const fn reason(self) -> Option<&'static str> {
        Some(match self.0 {
            300 => "Try Alternate",
            400 => "Bad Request",
            401 => "Unauthenticated",
            403 => "Forbidden",
            405 => "Mobility Forbidden",
            420 => "Unknown Attribute",
            437 => "Allocation Mismatch",
            438 => "Stale Nonce",
            440 => "Address Family not Supported",
            441 => "Wrong Credentials",
            442 => "Unsupported Transport Protocol",
            443 => "Peer Address Family Mismatch",
            446 => "Connection Already Exists",
            447 => "Connection Timeout or Failure",
            486 => "Allocation Quota Reached",
            487 => "Role Conflict",
            500 => "Server Error",
            508 => "Insufficient Capacity",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{} {}", self.0, reason),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_and_number_split_the_code() {
        let code = ErrorCode::STALE_NONCE;
        assert_eq!((code.class(), code.number()), (4, 38));
        assert_eq!(ErrorCode::new(299), None);
        assert_eq!(ErrorCode::new(700), None);
        assert_eq!(ErrorCode::new(699).map(ErrorCode::code), Some(699));
        assert_eq!(
            ErrorCode::ALLOCATION_QUOTA_REACHED.to_string(),
            "486 Allocation Quota Reached"
        );
        assert_eq!(
            ErrorCode::new(599).map(|c| c.to_string()),
            Some("599".to_string())
        );
    }

    #[test]
    fn rfc_6062_codes() {
        let exists = ErrorCode::CONNECTION_ALREADY_EXISTS;
        assert_eq!(
            (exists.code(), exists.class(), exists.number()),
            (446, 4, 46)
        );
        assert_eq!(exists.reason(), Some("Connection Already Exists"));
        let failed = ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE;
        assert_eq!(
            (failed.code(), failed.class(), failed.number()),
            (447, 4, 47)
        );
        assert_eq!(failed.to_string(), "447 Connection Timeout or Failure");
    }
}
