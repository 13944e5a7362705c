//! RFC 5780 behaviour discovery: mapping (§4.3) and filtering (§4.4) against a server's
//! OTHER-ADDRESS, and hairpinning (§4.5), which needs no help from the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use icebreaker_wire::ErrorCode;
use icebreaker_wire::TransactionId;
use icebreaker_wire::attr::ChangeRequest;

use super::lifetime::lifetime_not_asked;
use super::{
    Failure, HAIRPINNING, MAPPING_LIFETIME, NAT_FILTERING, NAT_MAPPING, NO_CHANGE, QUIET_WAIT, ask,
    local_address,
};
use crate::Settings;
use crate::net::{self, INITIAL_RTO, Response, StunSocket, TransactError};
use crate::report::Check;

/// The checks when the server cannot serve discovery, `why` being the reason: hairpinning
/// needs no RFC 5780, the lifetime does.
pub(super) async fn without_discovery(
    label: &str,
    server: SocketAddr,
    settings: &Settings,
    why: String,
) -> Vec<Check> {
    let quiet = settings.timeout.min(QUIET_WAIT);
    let hairpin = hairpinning(label, server, settings.timeout, quiet).await;
    let lifetime = if settings.lifetime.is_some() {
        Check::skip(
            label,
            MAPPING_LIFETIME,
            "measuring the mapping lifetime needs RESPONSE-PORT (RFC 5780), which this \
             server does not offer",
        )
    } else {
        lifetime_not_asked(label)
    };
    vec![
        Check::skip(label, NAT_MAPPING, why.clone()),
        Check::skip(label, NAT_FILTERING, why),
        hairpin,
        lifetime,
    ]
}

/// RFC 5780 §4.3, on one fresh socket.
pub(super) async fn mapping_behaviour(
    label: &str,
    server: SocketAddr,
    other: SocketAddr,
    timeout: Duration,
) -> Check {
    let mut socket = match StunSocket::for_server(server).await {
        Ok(socket) => socket,
        Err(e) => return Check::skip(label, NAT_MAPPING, format!("cannot open a socket: {e}")),
    };
    let alternate_ip = SocketAddr::new(other.ip(), server.port());
    let mut mapped = Vec::new();
    for to in [server, alternate_ip, other] {
        // Test III only tells the two dependent kinds apart.
        if let [first, second] = mapped[..]
            && first == second
        {
            break;
        }
        match ask(&mut socket, to, NO_CHANGE, timeout).await {
            Ok((answer, _)) => mapped.push(answer.address),
            Err(failure) => {
                let mut why = failure.describe(to, timeout);
                if to != server {
                    why.push_str(&format!(
                        "; the server announces OTHER-ADDRESS {other}, but the mapping test \
                         needs answers from its addresses (a firewall on the way, or a server \
                         that does not listen where it says)"
                    ));
                }
                return Check::skip(label, NAT_MAPPING, why);
            }
        }
    }
    let local = local_address(&socket, server).await;
    let value = match mapped[..] {
        [first, second] => mapping_value(local, first, second, None),
        [first, second, third] => mapping_value(local, first, second, Some(third)),
        _ => return Check::skip(label, NAT_MAPPING, "the mapping tests did not complete"),
    };
    Check::pass(label, NAT_MAPPING, value)
}

/// RFC 5780 §4.4, on one fresh socket that has talked to the primary address only.
pub(super) async fn filtering_behaviour(
    label: &str,
    server: SocketAddr,
    timeout: Duration,
    quiet: Duration,
) -> Check {
    let mut socket = match StunSocket::for_server(server).await {
        Ok(socket) => socket,
        Err(e) => return Check::skip(label, NAT_FILTERING, format!("cannot open a socket: {e}")),
    };
    if let Err(failure) = ask(&mut socket, server, NO_CHANGE, timeout).await {
        return Check::skip(label, NAT_FILTERING, failure.describe(server, timeout));
    }
    let both = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    let port_only = ChangeRequest {
        change_ip: false,
        change_port: true,
    };
    let from_other_address = match changed_answer(&mut socket, server, both, quiet).await {
        Ok(arrived) => arrived,
        Err(why) => return Check::skip(label, NAT_FILTERING, why),
    };
    let from_other_port = from_other_address
        || match changed_answer(&mut socket, server, port_only, quiet).await {
            Ok(arrived) => arrived,
            Err(why) => return Check::skip(label, NAT_FILTERING, why),
        };
    let behaviour = classify_filtering(from_other_address, from_other_port);
    Check::pass(label, NAT_FILTERING, filtering_value(behaviour))
}

/// RFC 5780 §4.5: a Binding request sent from a second socket to the first socket's mapped
/// address must come back through the NAT to the first socket.
pub(super) async fn hairpinning(
    label: &str,
    server: SocketAddr,
    timeout: Duration,
    quiet: Duration,
) -> Check {
    let (mut receiver, mut sender) = match (
        StunSocket::for_server(server).await,
        StunSocket::for_server(server).await,
    ) {
        (Ok(receiver), Ok(sender)) => (receiver, sender),
        (Err(e), _) | (_, Err(e)) => {
            return Check::skip(label, HAIRPINNING, format!("cannot open a socket: {e}"));
        }
    };
    let mapped = match ask(&mut receiver, server, NO_CHANGE, timeout).await {
        Ok((answer, _)) => answer.address,
        Err(failure) => {
            return Check::skip(label, HAIRPINNING, failure.describe(server, timeout));
        }
    };
    let id = sender.transaction_id();
    let request = match net::binding_request(id, NO_CHANGE, None) {
        Ok(request) => request,
        Err(e) => return Check::skip(label, HAIRPINNING, format!("cannot write a request: {e}")),
    };
    let arrived = send_until_received(&sender, mapped, &request, &receiver, &id, quiet).await;
    hairpin_check(label, arrived.is_some())
}

/// `other`, the OTHER-ADDRESS `server` announced, when it can serve the RFC 5780 tests;
/// otherwise why not.
pub(super) fn check_other_address(
    server: SocketAddr,
    other: SocketAddr,
) -> Result<SocketAddr, String> {
    let problem = if other.is_ipv4() != server.is_ipv4() {
        "is of another address family than the server's"
    } else if other.ip().is_unspecified() || other.port() == 0 {
        "is not an address one can send to"
    } else if other.ip() == server.ip() {
        "has the server's own IP, so no test can tell address-dependent behaviour apart"
    } else if other.port() == server.port() {
        "has the server's own port, so no test can tell port-dependent behaviour apart"
    } else {
        return Ok(other);
    };
    Err(format!(
        "the server's OTHER-ADDRESS {other} {problem}; RFC 5780 needs a second IP address \
         and a second port"
    ))
}

/// The reason the discovery checks skip against a server without RFC 5780.
pub(super) fn no_rfc5780() -> String {
    "the server does not implement RFC 5780 (no OTHER-ADDRESS in its answer), so NAT \
     behaviour cannot be measured against it; it needs two IP addresses: coturn from 4.7 \
     with `rfc5780` and two `listening-ip` addresses (it answers on `alt-listening-port` \
     too), icebreaker with `--other-address IP2:PORT2`; or give a second STUN server to \
     compare mappings"
        .into()
}

/// Asks `server` to answer from another address with CHANGE-REQUEST `change`: whether the
/// answer got through the NAT within `quiet` (retransmitting meanwhile), or why the test
/// cannot tell.
async fn changed_answer(
    socket: &mut StunSocket,
    server: SocketAddr,
    change: ChangeRequest,
    quiet: Duration,
) -> Result<bool, String> {
    match ask(socket, server, change, quiet).await {
        Ok((_, response)) if response.from == server => Err(format!(
            "the server ignored CHANGE-REQUEST: it answered from {server} instead of its \
             other address, so the filtering test cannot run against it"
        )),
        Ok(_) => Ok(true),
        Err(Failure::NoAnswer(TransactError::Timeout)) => Ok(false),
        Err(Failure::Refused(refusal)) if refusal.code == Some(ErrorCode::UNKNOWN_ATTRIBUTE) => {
            Err(format!(
                "the server refused CHANGE-REQUEST ({}): it announces OTHER-ADDRESS but does \
                 not implement the RFC 5780 filtering test",
                refusal.describe()
            ))
        }
        Err(Failure::Refused(refusal)) => Err(format!(
            "the server answered CHANGE-REQUEST with {}, so the filtering test cannot run",
            refusal.describe()
        )),
        Err(failure) => Err(failure.describe(server, quiet)),
    }
}

fn hairpin_check(label: &str, supported: bool) -> Check {
    if supported {
        return Check::pass(label, HAIRPINNING, "supported");
    }
    let mut check = Check::pass(label, HAIRPINNING, "not supported");
    check.explanation = Some(
        "the NAT does not send packets addressed to its own public address back inside: two \
         peers behind this same NAT reach each other only through their host candidates (on \
         one LAN) or through a TURN relay"
            .into(),
    );
    check
}

/// Sends `datagram` from `sender` to `to`, retransmitting as a transaction would, until
/// `receiver` gets a datagram with transaction ID `id` or `wait` has passed.
pub(super) async fn send_until_received(
    sender: &StunSocket,
    to: SocketAddr,
    datagram: &[u8],
    receiver: &StunSocket,
    id: &TransactionId,
    wait: Duration,
) -> Option<Response> {
    let deadline = Instant::now() + wait;
    let mut rto = INITIAL_RTO;
    loop {
        // An error (an ICMP message for an earlier datagram, say) means this one is lost too,
        // which is what the receiver will see.
        let _ = sender.send(to, datagram).await;
        let now = Instant::now();
        let next = (now + rto).min(deadline);
        rto = rto.saturating_mul(2);
        if let Some(got) = receiver
            .receive(id, next.saturating_duration_since(now))
            .await
        {
            return Some(got);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// The three kinds of mapping and of filtering behaviour (RFC 4787 §4.1, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

impl Behaviour {
    const fn as_str(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// RFC 5780 §4.3: the mapped addresses of test I (primary address), test II (the other IP,
/// primary port) and test III (the other IP and port; only needed when I and II differ).
fn classify_mapping(first: SocketAddr, second: SocketAddr, third: Option<SocketAddr>) -> Behaviour {
    if first == second {
        Behaviour::EndpointIndependent
    } else if third == Some(second) {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    }
}

/// The `nat-mapping` value for the mapped addresses of the three tests.
fn mapping_value(
    local: SocketAddr,
    first: SocketAddr,
    second: SocketAddr,
    third: Option<SocketAddr>,
) -> String {
    if first == local && second == local && third.is_none_or(|t| t == local) {
        return "no NAT".into();
    }
    let behaviour = classify_mapping(first, second, third);
    let detail = match (behaviour, third) {
        (Behaviour::EndpointIndependent, _) => {
            format!("{first} towards both server addresses")
        }
        (_, Some(third)) => format!("{first}, then {second}, then {third}"),
        (_, None) => format!("{first}, then {second}"),
    };
    format!("{} ({detail})", behaviour.as_str())
}

/// RFC 5780 §4.4: whether the answer from the other IP and port (test II) and the one from
/// the primary IP and other port (test III) got through.
fn classify_filtering(from_other_address: bool, from_other_port: bool) -> Behaviour {
    if from_other_address {
        Behaviour::EndpointIndependent
    } else if from_other_port {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    }
}

/// The `nat-filtering` value.
fn filtering_value(behaviour: Behaviour) -> String {
    let detail = match behaviour {
        Behaviour::EndpointIndependent => "an answer from the server's other IP and port got in",
        Behaviour::AddressDependent => "only answers from the server's IP got in",
        Behaviour::AddressAndPortDependent => "only answers from the server's IP and port got in",
    };
    format!("{} ({detail})", behaviour.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn mapping_kinds_follow_rfc_5780_section_4_3() {
        let (a, b, c) = (
            addr("192.0.2.9:1000"),
            addr("192.0.2.9:2000"),
            addr("192.0.2.9:3000"),
        );
        assert_eq!(classify_mapping(a, a, None), Behaviour::EndpointIndependent);
        assert_eq!(classify_mapping(a, b, Some(b)), Behaviour::AddressDependent);
        assert_eq!(
            classify_mapping(a, b, Some(c)),
            Behaviour::AddressAndPortDependent
        );
        assert_eq!(
            classify_mapping(a, b, None),
            Behaviour::AddressAndPortDependent
        );
    }

    #[test]
    fn mapping_values_start_with_the_kind_or_say_no_nat() {
        let local = addr("10.0.0.2:40000");
        let (a, b, c) = (
            addr("192.0.2.9:1000"),
            addr("192.0.2.9:2000"),
            addr("192.0.2.9:3000"),
        );
        assert_eq!(mapping_value(local, local, local, None), "no NAT");
        assert_eq!(
            mapping_value(local, a, a, None),
            "endpoint-independent (192.0.2.9:1000 towards both server addresses)"
        );
        assert!(mapping_value(local, a, b, Some(b)).starts_with("address-dependent ("));
        assert_eq!(
            mapping_value(local, a, b, Some(c)),
            "address-and-port-dependent (192.0.2.9:1000, then 192.0.2.9:2000, then \
             192.0.2.9:3000)"
        );
    }

    #[test]
    fn filtering_kinds_follow_rfc_5780_section_4_4() {
        assert_eq!(
            classify_filtering(true, true),
            Behaviour::EndpointIndependent
        );
        assert_eq!(classify_filtering(false, true), Behaviour::AddressDependent);
        assert_eq!(
            classify_filtering(false, false),
            Behaviour::AddressAndPortDependent
        );
        for behaviour in [
            Behaviour::EndpointIndependent,
            Behaviour::AddressDependent,
            Behaviour::AddressAndPortDependent,
        ] {
            let value = filtering_value(behaviour);
            assert!(
                value.starts_with(&format!("{} (", behaviour.as_str())),
                "{value}"
            );
        }
    }

    #[test]
    fn other_address_must_differ_in_ip_and_port_and_share_the_family() {
        let server = addr("192.0.2.1:3478");
        assert!(check_other_address(server, addr("192.0.2.2:3479")).is_ok());
        for bad in [
            "192.0.2.1:3479",
            "192.0.2.2:3478",
            "0.0.0.0:3479",
            "[2001:db8::2]:3479",
        ] {
            assert!(check_other_address(server, addr(bad)).is_err(), "{bad}");
        }
    }
}
