//! What a failed TURN request means for the operator: the likely cause in plain words,
//! with the settings of icebreaker and coturn to look at.

use std::time::{SystemTime, UNIX_EPOCH};

use icebreaker_ice::turn_client::TurnError;

use crate::Credentials;
use crate::net::TurnSession;

/// The plain explanation of a failed TURN request, with its likely cause. `credentials`
/// tells static passwords from TURN REST ones, whose failures point at the shared secret
/// and at the clocks rather than at a typo.
pub fn explain(error: &TurnError, credentials: &Credentials) -> String {
    explain_at(error, credentials, SystemTime::now())
}

/// [`explain`] for a request of `session`: over a stream or DTLS, a broken connection or a
/// silent server mean something else than over UDP.
pub fn explain_session(
    session: &TurnSession,
    error: &TurnError,
    credentials: &Credentials,
) -> String {
    if let Some(why) = session.broken() {
        return format!(
            "{why} before the answer came; the server deletes the allocations of a closed \
             connection, and clients lose theirs the same way"
        );
    }
    if session.is_stream() && *error == TurnError::Timeout {
        return "no answer from the server within the timeout: it accepted the connection but \
                does not answer TURN requests on it, or it is overloaded"
            .to_owned();
    }
    if session.is_dtls() && *error == TurnError::Timeout {
        return "no answer from the server within the timeout: the DTLS handshake succeeded but \
                the server does not answer TURN requests inside the association, or it is \
                overloaded"
            .to_owned();
    }
    explain(error, credentials)
}

/// [`explain`] with the clock given, so that REST expiries can be judged in tests.
fn explain_at(error: &TurnError, credentials: &Credentials, now: SystemTime) -> String {
    match error {
        TurnError::Timeout => "no answer from the server within the timeout: a firewall on \
            the way blocks its UDP port, the server is down, or what listens there does not \
            speak TURN over UDP"
            .to_owned(),
        TurnError::TryAlternate {
            server: Some(server),
        } => format!(
            "the server redirects to {server} (300 Try Alternate): it is overloaded or \
             balances its clients this way; probe {server} and give clients that address"
        ),
        TurnError::TryAlternate { server: None } => "the server redirects elsewhere \
            (300 Try Alternate) without naming a usable ALTERNATE-SERVER: it is misconfigured"
            .to_owned(),
        TurnError::Rejected { code, reason } => match rejection(*code, credentials, now) {
            Some(cause) if reason.is_empty() => cause,
            Some(cause) => {
                let reason: String = reason.chars().flat_map(char::escape_default).collect();
                format!("{cause} (the server says \"{reason}\")")
            }
            None => error.to_string(),
        },
        other => other.to_string(),
    }
}

/// The likely cause of an error code, when there is more to say than its name.
fn rejection(code: u16, credentials: &Credentials, now: SystemTime) -> Option<String> {
    let text = match code {
        401 if credentials.rest => format!(
            "the server refused the REST credentials (401 Unauthenticated): the shared \
             secret differs from the server's (icebreaker --auth-secret, coturn \
             static-auth-secret), or the username's expiry has passed by the server's clock{}",
            rest_expiry(&credentials.username, now)
        ),
        401 => "the server refused the credentials (401 Unauthenticated): wrong username or \
            password, or the user is not defined on the server (for its realm)"
            .to_owned(),
        403 => "forbidden by the server's peer policy (403 Forbidden): it refuses to relay to \
            the peer's address; loopback, private and link-local ranges and the server's own \
            addresses are refused by default (allow a range for a lab with icebreaker \
            --allow-peer CIDR, coturn allowed-peer-ip)"
            .to_owned(),
        437 => "allocation mismatch (437 Allocation Mismatch): the server has no allocation \
            for this client's address and port (it expired or was released, or a NAT on the \
            way changed the mapping); for an Allocate, an allocation from this address and \
            port exists already"
            .to_owned(),
        438 => {
            let mut text = "the server declared even its fresh nonces stale (438 Stale Nonce, \
                repeatedly): its clock jumps, or several servers behind this address do not \
                share their nonce secret or their time"
                .to_owned();
            if credentials.rest {
                text.push_str(
                    "; with REST credentials also compare the server's clock with this \
                     host's (NTP)",
                );
            }
            text
        }
        441 => "the allocation was made with other credentials (441 Wrong Credentials): \
            another client uses the same local address and port, or the credentials changed \
            between requests"
            .to_owned(),
        486 => format!(
            "allocation quota reached for user {} (486 Allocation Quota Reached): other \
             allocations of this user are still alive, from other clients or from earlier runs \
             that did not release theirs (they expire with their lifetime, 10 minutes by \
             default); raise the per-user quota (icebreaker --user-quota, coturn user-quota) \
             or wait",
            credentials.username
        ),
        508 => "the server is out of capacity (508 Insufficient Capacity): no relay port left \
            in its range, its total allocation quota reached, or it is draining before a \
            restart; widen the relay port range (icebreaker --relay-ports, coturn \
            min-port/max-port) or raise the total quota (icebreaker --total-quota, coturn \
            total-quota)"
            .to_owned(),
        _ => return None,
    };
    Some(text)
}

/// What this host's clock says about a REST username's expiry, `EXPIRY:USER`; empty when
/// the username carries none.
fn rest_expiry(username: &str, now: SystemTime) -> String {
    let Some(expiry) = username
        .split(':')
        .next()
        .and_then(|first| first.parse::<u64>().ok())
    else {
        return String::new();
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if expiry <= now {
        format!(
            "; by this host's clock it expired {} s ago: mint fresh credentials, and check \
             the clock of whatever minted these",
            now - expiry
        )
    } else {
        format!(
            "; by this host's clock it expires in {} s, so either the secret is wrong or \
             the server's clock is ahead by more than that (check NTP on both)",
            expiry - now
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use super::*;

    fn credentials(username: &str, rest: bool) -> Credentials {
        Credentials {
            username: username.into(),
            password: "x".into(),
            rest,
        }
    }

    fn rejected(code: u16) -> TurnError {
        TurnError::Rejected {
            code,
            reason: String::new(),
        }
    }

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn a_401_blames_the_password_or_for_rest_the_secret_and_the_clock() {
        let static_user = credentials("alice", false);
        let text = explain(&rejected(401), &static_user);
        assert!(text.contains("wrong username or password"), "{text}");

        let rest = credentials("1700000000:alice", true);
        let expired = explain_at(&rejected(401), &rest, at(1_700_000_100));
        assert!(expired.contains("shared secret"), "{expired}");
        assert!(expired.contains("expired 100 s ago"), "{expired}");
        let valid = explain_at(&rejected(401), &rest, at(1_699_999_000));
        assert!(valid.contains("expires in 1000 s"), "{valid}");
        assert!(valid.contains("clock"), "{valid}");

        let no_expiry = explain_at(&rejected(401), &credentials("alice", true), at(0));
        assert!(no_expiry.ends_with("by the server's clock"), "{no_expiry}");
    }

    #[test]
    fn every_known_code_names_its_likely_cause() {
        let user = credentials("alice", false);
        let cases = [
            (438, "clock"),
            (441, "other credentials"),
            (486, "other allocations of this user"),
            (508, "relay port"),
            (403, "peer policy"),
            (437, "no allocation"),
        ];
        for (code, cause) in cases {
            let text = explain(&rejected(code), &user);
            assert!(text.contains(cause), "{code}: {text}");
        }
        let rest = explain(&rejected(438), &credentials("1:alice", true));
        assert!(rest.contains("server's clock"), "{rest}");
        assert!(explain(&rejected(486), &user).contains("user alice"));
    }

    #[test]
    fn timeouts_redirects_and_unknown_codes_are_explained() {
        let user = credentials("alice", false);
        let timeout = explain(&TurnError::Timeout, &user);
        assert!(timeout.contains("no answer"), "{timeout}");
        assert!(timeout.contains("firewall"), "{timeout}");
        assert!(timeout.contains("TURN over UDP"), "{timeout}");

        let alternate = TurnError::TryAlternate {
            server: Some("192.0.2.7:3478".parse().unwrap()),
        };
        assert!(explain(&alternate, &user).contains("redirects to 192.0.2.7:3478"));
        let nowhere = TurnError::TryAlternate { server: None };
        assert!(explain(&nowhere, &user).contains("300 Try Alternate"));

        // Unknown codes fall back to the client's wording, reason included.
        let odd = TurnError::Rejected {
            code: 599,
            reason: "busy".into(),
        };
        assert_eq!(explain(&odd, &user), odd.to_string());
    }

    #[test]
    fn the_server_reason_is_kept_and_escaped() {
        let error = TurnError::Rejected {
            code: 508,
            reason: "no ports\n".into(),
        };
        let text = explain(&error, &credentials("alice", false));
        assert!(
            text.ends_with("(the server says \"no ports\\n\")"),
            "{text}"
        );
    }
}
