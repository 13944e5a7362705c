//! The STUN checks: Binding round trips and the mapped address (`binding`, `mapped-address`),
//! NAT behaviour discovery by RFC 5780 (`nat-mapping`, `nat-filtering`, `hairpinning`,
//! `mapping-lifetime`), and, for servers without RFC 5780, the mapping compared across two
//! servers. Over TCP and TLS, the connection's checks (`connect`, `tls`, `tls-certificate`)
//! come first and NAT behaviour discovery, which is UDP's, is skipped; over DTLS the
//! handshake's (`dtls`, `tls-certificate`), and NAT behaviour discovery, which needs answers
//! from the server's other address, is skipped too.
//!
//! NAT behaviour belongs to the network the probe runs in, not to the server: those checks
//! pass whenever they could run, and their value says what was found. They skip, with the
//! reason, when the server cannot support them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use icebreaker_wire::attr::{
    AttrType, ChangeRequest, ErrorCodeAttribute, MappedAddress, OtherAddress, ResponseOrigin,
    Software, UnknownAttributes, XorMappedAddress,
};
use icebreaker_wire::{Class, ErrorCode, Message, Method};

use crate::net::{self, Response, StunSocket, TransactError};
use crate::report::Check;
use crate::stats::RttStats;
use crate::{Settings, Target};
use discovery::{
    check_other_address, filtering_behaviour, hairpinning, mapping_behaviour, no_rfc5780,
    without_discovery,
};
use lifetime::{lifetime_not_asked, mapping_lifetime};

mod discovery;
mod dtls;
mod lifetime;
mod stream;

pub use dtls::binding_over_dtls;
pub use stream::{CONNECT, binding_over_stream, nat_skipped_on_stream};

const BINDING: &str = "binding";
const MAPPED_ADDRESS: &str = "mapped-address";
const NAT_MAPPING: &str = "nat-mapping";
const NAT_FILTERING: &str = "nat-filtering";
const HAIRPINNING: &str = "hairpinning";
const MAPPING_LIFETIME: &str = "mapping-lifetime";

/// The longest wait for an answer that a NAT may rightly drop (filtering, hairpinning, an
/// expired mapping): answers that do arrive take one round trip, so waiting the whole timeout
/// for each would only slow the run down.
const QUIET_WAIT: Duration = Duration::from_secs(1);

/// No CHANGE-REQUEST flag: a plain Binding request.
const NO_CHANGE: ChangeRequest = ChangeRequest {
    change_ip: false,
    change_port: false,
};

/// What the `binding` check learnt, for the checks that build on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingInfo {
    /// The server-reflexive address: XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from a server that
    /// only speaks RFC 3489.
    pub mapped: SocketAddr,
    /// The probe socket's address as the system routes to the server: the source IP the
    /// system picks towards it and the socket's port. Equal to `mapped` when no NAT is on the
    /// way.
    pub local: SocketAddr,
    /// OTHER-ADDRESS: the server's second IP and port when it offers RFC 5780.
    pub other_address: Option<SocketAddr>,
    /// RESPONSE-ORIGIN: where the answer says it was sent from (RFC 5780 §7.3).
    pub response_origin: Option<SocketAddr>,
    /// SOFTWARE: how the server describes itself, when it does.
    pub software: Option<String>,
}

/// Sends `settings.count` Binding requests to `target.server`, one after another from one
/// socket, each allowed `settings.timeout` with retransmissions. Returns the `binding` check
/// (round trips and loss) and the `mapped-address` check, and what the answers said when the
/// server answered.
///
/// A first request left unanswered ends the run: the server is not answering, and waiting
/// for the others would only repeat that.
pub async fn binding(target: &Target, settings: &Settings) -> (Vec<Check>, Option<BindingInfo>) {
    let label = target.label();
    let server = target.server;
    let failed = |value: String, explanation: String| {
        let skipped = Check::skip(
            &label,
            MAPPED_ADDRESS,
            "the server gave no usable Binding answer (see `binding`)",
        );
        (
            vec![Check::fail(&label, BINDING, value, explanation), skipped],
            None,
        )
    };
    let mut socket = match StunSocket::connected_to(server).await {
        Ok(socket) => socket,
        Err(e) => return failed(String::new(), format!("cannot open a UDP socket: {e}")),
    };
    let sent = settings.count.max(1);
    let mut run = Run::default();
    for _ in 0..sent {
        match ask(&mut socket, server, NO_CHANGE, settings.timeout).await {
            Ok((mapped, response)) => run.record(mapped, &response),
            Err(Failure::NoAnswer(TransactError::Timeout)) if run.first.is_some() => run.lost += 1,
            Err(Failure::NoAnswer(e)) => {
                return failed("no answer".into(), e.explain(server, settings.timeout));
            }
            Err(Failure::Refused(refusal)) => {
                let value = format!("error {}", refusal.describe());
                return failed(value, explain_binding_refusal(&refusal));
            }
            Err(Failure::Unusable(why)) => {
                return failed(
                    "unusable answer".into(),
                    format!("{why}: clients learn no server-reflexive address from it"),
                );
            }
        }
    }
    let local = local_address(&socket, server).await;
    let Some((mapped, info)) = run.mapped_address(&label, local) else {
        return failed("no answer".into(), "no request was sent".into());
    };
    (vec![run.check(&label, sent), mapped], Some(info))
}

/// Discovers the behaviour of the NAT between the probe and the server by RFC 5780:
/// `nat-mapping` (§4.3), `nat-filtering` (§4.4), `hairpinning` (§4.5) and, when
/// `settings.lifetime` asks for it, `mapping-lifetime` (§4.6). `info` is what
/// [`binding`] learnt from the server.
///
/// Mapping and filtering need the server's OTHER-ADDRESS and skip without it; hairpinning
/// only needs a mapped address. Each test uses fresh sockets, so that one test's traffic
/// opens nothing in the NAT that another test would then measure; the three short tests run
/// at the same time. The lifetime search takes up to about twice `settings.lifetime`.
pub async fn nat_behaviour(target: &Target, settings: &Settings, info: &BindingInfo) -> Vec<Check> {
    let label = target.label();
    let server = target.server;
    let timeout = settings.timeout;
    let quiet = timeout.min(QUIET_WAIT);
    let other = match info.other_address {
        Some(other) => check_other_address(server, other),
        None => Err(no_rfc5780()),
    };
    let other = match other {
        Ok(other) => other,
        Err(why) => return without_discovery(&label, server, settings, why).await,
    };
    let (mapping, filtering, hairpin) = tokio::join!(
        mapping_behaviour(&label, server, other, timeout),
        filtering_behaviour(&label, server, timeout, quiet),
        hairpinning(&label, server, timeout, quiet),
    );
    let lifetime = match settings.lifetime {
        Some(max) => mapping_lifetime(&label, server, max, timeout, quiet).await,
        None => lifetime_not_asked(&label),
    };
    vec![mapping, filtering, hairpin, lifetime]
}

/// Compares the mappings two servers see for one socket, for when the first server has no
/// RFC 5780: the same mapping towards both means endpoint-independent mapping; different
/// ones mean a mapping that depends on the destination, without telling which kind.
///
/// Takes the first target and the next one of the same family on another IP address. `None`
/// when there is no such pair, or when the first server offers RFC 5780, whose
/// `nat-mapping` check says more.
pub async fn mapping_across(
    targets: &[(Target, BindingInfo)],
    settings: &Settings,
) -> Option<Check> {
    let ((first, first_info), rest) = targets.split_first()?;
    if first_info.other_address.is_some() {
        return None;
    }
    let (second, _) = rest.iter().find(|(t, _)| {
        t.server.is_ipv4() == first.server.is_ipv4() && t.server.ip() != first.server.ip()
    })?;
    let label = first.label();
    let mut socket = match StunSocket::for_server(first.server).await {
        Ok(socket) => socket,
        Err(e) => {
            let why = format!("cannot open a UDP socket: {e}");
            return Some(Check::skip(&label, NAT_MAPPING, why));
        }
    };
    let mut mapped = Vec::new();
    for server in [first.server, second.server] {
        match ask(&mut socket, server, NO_CHANGE, settings.timeout).await {
            Ok((answer, _)) => mapped.push(answer.address),
            Err(failure) => {
                let why = format!(
                    "cannot compare the mappings two servers see: {}",
                    failure.describe(server, settings.timeout)
                );
                return Some(Check::skip(&label, NAT_MAPPING, why));
            }
        }
    }
    let local = local_address(&socket, first.server).await;
    let value = match mapped[..] {
        [a, b] if a == b && a == local => "no NAT",
        [a, b] if a == b => "endpoint-independent (same mapping towards two servers)",
        _ => {
            "address-dependent or address-and-port-dependent (two servers saw different \
             mappings; RFC 5780 needed to tell which)"
        }
    };
    Some(Check::pass(&label, NAT_MAPPING, value))
}

/// The results of the `binding` requests so far.
#[derive(Default)]
struct Run {
    /// The first answer: the mapping and the server's RFC 5780 addresses.
    first: Option<Mapped>,
    /// Another mapped address than the first answer's, if one came.
    changed: Option<SocketAddr>,
    /// Round trips of requests answered at the first transmission.
    clean: Vec<Duration>,
    /// Round trips of requests that needed retransmissions: ambiguous (Karn's algorithm),
    /// used only when no clean one exists.
    retransmitted: Vec<Duration>,
    answered: u32,
    lost: u32,
}

impl Run {
    /// The `mapped-address` check and what the first answer said, compared with the
    /// socket's `local` address; `None` before any answer.
    fn mapped_address(&self, label: &str, local: SocketAddr) -> Option<(Check, BindingInfo)> {
        let first = self.first.clone()?;
        let mut value = if first.address == local {
            format!("{} = local address: no NAT", first.address)
        } else {
            format!("{} (behind NAT: local {local})", first.address)
        };
        if let Some(other) = self.changed {
            value.push_str(&format!(
                "; changed to {other} between requests: the NAT or a load balancer moved the \
                 mapping"
            ));
        }
        let info = BindingInfo {
            mapped: first.address,
            local,
            other_address: first.other_address,
            response_origin: first.response_origin,
            software: first.software,
        };
        Some((Check::pass(label, MAPPED_ADDRESS, value), info))
    }

    fn record(&mut self, mapped: Mapped, response: &Response) {
        self.answered += 1;
        if response.retransmitted {
            self.retransmitted.push(response.rtt);
        } else {
            self.clean.push(response.rtt);
        }
        match &self.first {
            None => self.first = Some(mapped),
            Some(first) if first.address != mapped.address && self.changed.is_none() => {
                self.changed = Some(mapped.address);
            }
            Some(_) => {}
        }
    }

    /// The `binding` check, passed: some answers came.
    fn check(&self, label: &str, sent: u32) -> Check {
        let samples = if self.clean.is_empty() {
            &self.retransmitted
        } else {
            &self.clean
        };
        let stats = RttStats::from_samples(samples);
        let mut value = match &stats {
            Some(stats) => format!("rtt {}, ", stats.summary()),
            None => String::new(),
        };
        value.push_str(&format!("{} of {sent} answered", self.answered));
        if self.lost > 0 {
            let percent = f64::from(self.lost) * 100.0 / f64::from(sent);
            value.push_str(&format!(" ({percent:.0} % lost)"));
        }
        if !self.retransmitted.is_empty() {
            value.push_str(&format!(
                ", {} needed a retransmission",
                self.retransmitted.len()
            ));
        }
        if self.first.as_ref().is_some_and(|m| m.legacy) {
            value.push_str(
                ", MAPPED-ADDRESS only (an RFC 3489 server: clients that require \
                 XOR-MAPPED-ADDRESS learn nothing, and ALGs may rewrite the plain address)",
            );
        }
        let check = Check::pass(label, BINDING, value);
        let check = match stats {
            Some(stats) => stats.metrics(check),
            None => check,
        };
        check.with_metric("loss_ratio", f64::from(self.lost) / f64::from(sent))
    }
}

/// The local address to compare a mapped address with: the source IP the system picks
/// towards `server`, and the socket's port.
async fn local_address(socket: &StunSocket, server: SocketAddr) -> SocketAddr {
    let bound = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(net::unspecified(server.ip()), 0));
    let ip: IpAddr = StunSocket::route_source(server).await.unwrap_or(bound.ip());
    SocketAddr::new(ip, bound.port())
}

/// Why one Binding request got no usable answer.
enum Failure {
    NoAnswer(TransactError),
    Refused(Refusal),
    Unusable(String),
}

impl Failure {
    /// In words, for a check's explanation.
    fn describe(&self, to: SocketAddr, waited: Duration) -> String {
        match self {
            Failure::NoAnswer(e) => e.explain(to, waited),
            Failure::Refused(refusal) => format!("{to} answered {}", refusal.describe()),
            Failure::Unusable(why) => format!("{to}: {why}"),
        }
    }
}

/// Sends one Binding request with CHANGE-REQUEST `change` to `to` and reads the answer.
async fn ask(
    socket: &mut StunSocket,
    to: SocketAddr,
    change: ChangeRequest,
    wait: Duration,
) -> Result<(Mapped, Response), Failure> {
    let id = socket.transaction_id();
    let request = net::binding_request(id, change, None)
        .map_err(|e| Failure::Unusable(format!("cannot write a Binding request: {e}")))?;
    let response = socket
        .transact(to, &request, wait)
        .await
        .map_err(Failure::NoAnswer)?;
    match read_answer(&response.bytes) {
        Answer::Mapped(mapped) => Ok((mapped, response)),
        Answer::Refused(refusal) => Err(Failure::Refused(refusal)),
        Answer::Unusable(why) => Err(Failure::Unusable(why)),
    }
}

/// What one answer to a Binding request says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Mapped(Mapped),
    Refused(Refusal),
    /// Nothing a client can use, and why.
    Unusable(String),
}

/// A Binding success.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapped {
    address: SocketAddr,
    /// Only MAPPED-ADDRESS came, as from an RFC 3489 server.
    legacy: bool,
    other_address: Option<SocketAddr>,
    response_origin: Option<SocketAddr>,
    software: Option<String>,
}

/// A Binding error response.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Refusal {
    code: Option<ErrorCode>,
    reason: String,
    unknown: Vec<AttrType>,
}

impl Refusal {
    /// `420 Unknown Attribute`, with the server's own reason phrase when it differs.
    fn describe(&self) -> String {
        let Some(code) = self.code else {
            return "an error without ERROR-CODE".into();
        };
        let mut text = code.to_string();
        let standard = code.reason().unwrap_or_default();
        if !self.reason.is_empty() && !self.reason.eq_ignore_ascii_case(standard) {
            text.push_str(&format!(" \"{}\"", self.reason));
        }
        if !self.unknown.is_empty() {
            let names: Vec<String> = self.unknown.iter().map(ToString::to_string).collect();
            text.push_str(&format!(" [{}]", names.join(", ")));
        }
        text
    }
}

fn read_answer(bytes: &[u8]) -> Answer {
    let Ok(message) = Message::parse(bytes) else {
        return Answer::Unusable("the answer is not a well-formed STUN message".into());
    };
    if message.method() != Method::BINDING {
        return Answer::Unusable("the answer is not a Binding response".into());
    }
    match message.class() {
        Class::Success => {}
        Class::Error => {
            let error = message.get::<ErrorCodeAttribute>().ok().flatten();
            let unknown = message
                .get::<UnknownAttributes>()
                .ok()
                .flatten()
                .map(|list| list.iter().collect())
                .unwrap_or_default();
            return Answer::Refused(Refusal {
                code: error.map(|e| e.code),
                reason: error.map(|e| e.reason.to_owned()).unwrap_or_default(),
                unknown,
            });
        }
        Class::Request | Class::Indication => {
            return Answer::Unusable("the answer is a request or an indication".into());
        }
    }
    let (address, legacy) = match message.get::<XorMappedAddress>() {
        Ok(Some(XorMappedAddress(address))) => (address, false),
        Err(e) => return Answer::Unusable(format!("its XOR-MAPPED-ADDRESS is malformed ({e})")),
        Ok(None) => match message.get::<MappedAddress>() {
            Ok(Some(MappedAddress(address))) => (address, true),
            _ => {
                return Answer::Unusable(
                    "a success without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS".into(),
                );
            }
        },
    };
    Answer::Mapped(Mapped {
        address,
        legacy,
        other_address: message.get::<OtherAddress>().ok().flatten().map(|a| a.0),
        response_origin: message.get::<ResponseOrigin>().ok().flatten().map(|a| a.0),
        software: message
            .get::<Software>()
            .ok()
            .flatten()
            .map(|s| s.0.to_owned()),
    })
}

/// Why a server refusing a plain Binding request matters, and where to look.
fn explain_binding_refusal(refusal: &Refusal) -> String {
    let code = refusal.code.map(ErrorCode::code);
    match code {
        Some(401) => "the server wants credentials for a plain Binding request; browsers send \
                      STUN Binding requests without any, so they get no server-reflexive \
                      candidate from it (coturn does this with `secure-stun`)"
            .into(),
        Some(420) => format!(
            "the server does not understand {} of a plain RFC 8489 Binding request: an old or \
             partial STUN implementation",
            if refusal.unknown.is_empty() {
                "an attribute".to_owned()
            } else {
                let names: Vec<String> = refusal.unknown.iter().map(ToString::to_string).collect();
                names.join(", ")
            }
        ),
        Some(400) => "the server calls a plain RFC 8489 Binding request malformed: something \
                      else listens on this port, or the server is broken"
            .into(),
        Some(300) => "the server redirects clients elsewhere (ALTERNATE-SERVER), which not \
                      every client follows; point clients at the alternate server instead"
            .into(),
        Some(500..=599) => "the server failed to answer (a server error); its logs say why".into(),
        _ => "the server refused a plain Binding request, which any STUN server must answer".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use icebreaker_wire::{MessageType, MessageWriter, TransactionId};

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn answer(class: Class, write: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let kind = MessageType::new(Method::BINDING, class);
        let mut writer = MessageWriter::new(&mut buf, kind, TransactionId::new([3; 12])).unwrap();
        write(&mut writer);
        writer.add_fingerprint().unwrap();
        let len = writer.finish();
        buf.truncate(len);
        buf
    }

    #[test]
    fn answers_are_read_with_their_rfc_5780_attributes() {
        let mapped = addr("203.0.113.7:50000");
        let other = addr("192.0.2.2:3479");
        let bytes = answer(Class::Success, |w| {
            w.add(&XorMappedAddress(mapped)).unwrap();
            w.add(&OtherAddress(other)).unwrap();
            w.add(&Software("probe test")).unwrap();
        });
        let Answer::Mapped(got) = read_answer(&bytes) else {
            panic!("{:?}", read_answer(&bytes));
        };
        assert_eq!(got.address, mapped);
        assert!(!got.legacy);
        assert_eq!(got.other_address, Some(other));
        assert_eq!(got.software.as_deref(), Some("probe test"));
    }

    #[test]
    fn an_rfc_3489_answer_gives_its_plain_mapped_address() {
        let mapped = addr("203.0.113.7:50000");
        let bytes = answer(Class::Success, |w| w.add(&MappedAddress(mapped)).unwrap());
        let Answer::Mapped(got) = read_answer(&bytes) else {
            panic!("not mapped");
        };
        assert_eq!((got.address, got.legacy), (mapped, true));
    }

    #[test]
    fn a_success_without_an_address_is_unusable() {
        let bytes = answer(Class::Success, |_| {});
        assert!(matches!(read_answer(&bytes), Answer::Unusable(_)));
        assert!(matches!(
            read_answer(b"not stun at all"),
            Answer::Unusable(_)
        ));
    }

    #[test]
    fn error_answers_are_refusals_explained_by_code() {
        let unknown = [AttrType::CHANGE_REQUEST];
        let bytes = answer(Class::Error, |w| {
            w.add(&ErrorCodeAttribute::bare(ErrorCode::UNKNOWN_ATTRIBUTE))
                .unwrap();
            w.add(&UnknownAttributes::new(&unknown)).unwrap();
        });
        let Answer::Refused(refusal) = read_answer(&bytes) else {
            panic!("not refused");
        };
        assert_eq!(refusal.code, Some(ErrorCode::UNKNOWN_ATTRIBUTE));
        assert_eq!(refusal.describe(), "420 Unknown Attribute [CHANGE-REQUEST]");
        assert!(explain_binding_refusal(&refusal).contains("CHANGE-REQUEST"));

        let bytes = answer(Class::Error, |w| {
            let error = ErrorCodeAttribute {
                code: ErrorCode::UNAUTHENTICATED,
                reason: "go away",
            };
            w.add(&error).unwrap();
        });
        let Answer::Refused(refusal) = read_answer(&bytes) else {
            panic!("not refused");
        };
        assert_eq!(refusal.describe(), "401 Unauthenticated \"go away\"");
        assert!(explain_binding_refusal(&refusal).contains("secure-stun"));
    }

    #[test]
    fn binding_values_count_loss_and_retransmissions() {
        let mapped = Mapped {
            address: addr("203.0.113.7:50000"),
            legacy: false,
            other_address: None,
            response_origin: None,
            software: None,
        };
        let response = |ms: u64, retransmitted: bool| Response {
            bytes: Vec::new(),
            from: addr("192.0.2.1:3478"),
            rtt: Duration::from_millis(ms),
            retransmitted,
        };
        let mut run = Run::default();
        run.record(mapped.clone(), &response(1, false));
        run.record(mapped.clone(), &response(3, false));
        run.record(mapped, &response(2, true));
        run.lost = 1;
        let check = run.check("stun:192.0.2.1:3478", 4);
        assert_eq!(
            check.value,
            "rtt 1.00 / 2.00 / 3.00 ms (min / mean / p95), 3 of 4 answered (25 % lost), 1 \
             needed a retransmission"
        );
        let loss = check
            .metrics
            .iter()
            .find(|m| m.name == "loss_ratio")
            .unwrap();
        assert!((loss.value - 0.25).abs() < 1e-9);
        assert!(check.metrics.iter().any(|m| m.name == "rtt_p95_seconds"));
    }
}
