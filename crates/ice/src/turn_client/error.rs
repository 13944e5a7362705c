//! Why a TURN operation failed, worded for the operator who reads it in a log or a diagnostic
//! tool's output.

use core::net::{IpAddr, SocketAddr};

use icebreaker_wire::ErrorCode;

/// Why an allocation, a refresh, a permission or a channel binding failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// No response arrived after the whole retransmission schedule (RFC 8489 §6.2.1).
    #[error(
        "no answer from the TURN server: wrong address or port, UDP blocked by a firewall, \
         or the server is down"
    )]
    Timeout,
    /// The server answered with an error response.
    #[error("{}", rejection(*.code, .reason))]
    Rejected {
        /// The error code, 400 to 699.
        code: u16,
        /// The reason phrase the server gave; often empty.
        reason: String,
    },
    /// 300 Try Alternate: the server sends the client elsewhere (RFC 8489 §10). This client
    /// talks to one server only; its owner may start another one towards `server`.
    #[error("the server redirects to {}", alternate(.server))]
    TryAlternate {
        /// The ALTERNATE-SERVER of the response, if it had a valid one.
        server: Option<SocketAddr>,
    },
    /// The server's answer cannot be used: an attribute RFC 8656 requires is missing or
    /// malformed, or a challenge that looks like a downgrade attack.
    #[error("the server's answer is unusable: {0}")]
    InvalidResponse(&'static str),
    /// The request could not be written: the username, realm or nonce is too long for a STUN
    /// message.
    #[error("the request could not be encoded: username, realm or nonce too long")]
    Encode,
}

impl TurnError {
    /// The STUN error code, for [`TurnError::Rejected`] and [`TurnError::TryAlternate`].
    pub fn code(&self) -> Option<u16> {
        match self {
            TurnError::Rejected { code, .. } => Some(*code),
            TurnError::TryAlternate { .. } => Some(ErrorCode::TRY_ALTERNATE.code()),
            _ => None,
        }
    }
}

fn alternate(server: &Option<SocketAddr>) -> String {
    match server {
        Some(server) => server.to_string(),
        None => "another server (300 Try Alternate without a usable ALTERNATE-SERVER)".into(),
    }
}

/// What an operator should understand from an error code.
fn rejection(code: u16, reason: &str) -> String {
    let meaning = match code {
        400 => "the server rejected the request as malformed (400 Bad Request)",
        401 => "wrong username or password (401 Unauthenticated)",
        403 => "forbidden by the server's peer policy (403 Forbidden)",
        420 => "the server does not understand an attribute it must (420 Unknown Attribute)",
        437 => {
            "allocation mismatch (437): the server has no allocation for this client address \
             (it expired, or a NAT changed the address), or for an Allocate already has one \
             (wait for it to expire or use another local port)"
        }
        438 => "stale nonce again and again (438 Stale Nonce; clock skew?)",
        440 => "the server cannot relay this address family (440 Address Family not Supported)",
        441 => {
            "these credentials are not the ones that created the allocation \
             (441 Wrong Credentials)"
        }
        442 => "the server does not relay UDP (442 Unsupported Transport Protocol)",
        443 => {
            "the peer's address family differs from the relayed address's \
             (443 Peer Address Family Mismatch)"
        }
        486 => "allocation quota reached for this user (486 Allocation Quota Reached)",
        500 => "the server failed (500 Server Error)",
        508 => {
            "server out of capacity: no relay port, permission or channel left, or draining \
             (508 Insufficient Capacity)"
        }
        _ => "",
    };
    let mut text = if meaning.is_empty() {
        match ErrorCode::new(code).and_then(ErrorCode::reason) {
            Some(name) => format!("the server refused the request ({code} {name})"),
            None => format!("the server refused the request (error {code})"),
        }
    } else {
        meaning.to_owned()
    };
    if !reason.is_empty() {
        text.push_str(": the server says \"");
        text.extend(reason.chars().flat_map(char::escape_default));
        text.push('"');
    }
    text
}

/// Why [`TurnClient::send_to`](super::TurnClient::send_to) could not wrap data for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TurnSendError {
    /// There is no allocation: not yet made, failed, or deallocated.
    #[error("no TURN allocation to send through")]
    NotAllocated,
    /// No permission was requested for the peer's IP address, so the server would drop the
    /// data (RFC 8656 §9).
    #[error("no permission was requested for {0}: create one before sending to it")]
    NoPermission(IpAddr),
    /// The data does not fit in one Send indication or ChannelData message.
    #[error("{0} bytes do not fit in one TURN message")]
    TooLarge(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: u16, reason: &str) -> String {
        TurnError::Rejected {
            code,
            reason: reason.into(),
        }
        .to_string()
    }

    #[test]
    fn messages_name_the_cause() {
        assert_eq!(
            rejected(401, ""),
            "wrong username or password (401 Unauthenticated)"
        );
        assert!(rejected(438, "").contains("clock skew?"));
        assert!(rejected(486, "").contains("allocation quota reached"));
        assert!(rejected(508, "").contains("server out of capacity"));
        assert!(rejected(403, "").contains("forbidden by the server's peer policy"));
        assert!(rejected(441, "").contains("credentials"));
        assert_eq!(
            rejected(487, ""),
            "the server refused the request (487 Role Conflict)"
        );
        assert_eq!(
            rejected(599, "x"),
            "the server refused the request (error 599): the server says \"x\""
        );
        // A reason phrase comes from the network: control characters are escaped.
        assert!(rejected(500, "a\nb").ends_with("\"a\\nb\""));
        assert_eq!(
            TurnError::TryAlternate {
                server: Some("192.0.2.1:3478".parse().unwrap())
            }
            .to_string(),
            "the server redirects to 192.0.2.1:3478"
        );
        assert_eq!(TurnError::Timeout.code(), None);
        assert_eq!(
            TurnError::Rejected {
                code: 403,
                reason: String::new()
            }
            .code(),
            Some(403)
        );
    }
}
