//! The security audit (`--audit`), reported like a vulnerability scanner: every item is a
//! check named `audit-…`, and every weakness is also a [`Finding`] with a severity, the
//! evidence and the fix (coturn's options and icebreaker's flags).
//!
//! Items, in order (the catalogue of `design/security.md`):
//!
//! - `audit-unauthenticated-allocate`: an Allocate without credentials must get 401 with
//!   REALM and NONCE; a success is an open relay.
//! - `audit-amplification`: the answers to the smallest requests a stranger can send, as a
//!   multiple of their size (metric `amplification_factor`); above [`MAX_AMPLIFICATION`] the
//!   server amplifies reflection attacks with spoofed sources.
//! - `audit-software`: a SOFTWARE attribute in answers to strangers discloses the version.
//! - `audit-relay-…`, with credentials and a `turn:` URI: from an authenticated allocation,
//!   CreatePermission (and ChannelBind for the main ones) towards loopback, unspecified,
//!   private, cloud metadata, multicast, the server's own addresses outside any relay port
//!   range, and IPv6 spellings of IPv4 addresses. 403 is a pass; 443 (an IPv6 peer on an IPv4
//!   relay) is "not applicable". Nothing is ever sent to these peers: a granted permission is
//!   the evidence.
//!
//! The relay probes run one at a time on one allocation at a time, released when done, so the
//! audit never holds more than one allocation against the user's quota.
//!
//! Everything runs over the URI's transport, TCP, TLS and DTLS included: a peer filter that
//! a server applies to UDP clients only is a known bug (pion/turn #570). Amplification is the
//! exception: a reflection attack needs a spoofed source, which a stream's handshake or the
//! DTLS cookie exchange rules out, so it is skipped there.

mod relay;

use std::io;
use std::net::SocketAddr;

use icebreaker_ice::uri::{Scheme, Transport};
use icebreaker_wire::attr::{
    ErrorCodeAttribute, Lifetime, Nonce, Realm, RequestedTransport, Software, XorRelayedAddress,
};
use icebreaker_wire::{Class, Message, MessageType, MessageWriter, Method};
use icebreaker_wire::{TransactionId, WriteError};

use crate::net::{Response, TransactError, transport_name};
use crate::report::{Check, Finding, Severity};
use crate::stream::{ConnectError, Dialer, Link};
use crate::{Settings, Target};

/// The largest answer-to-request size ratio tolerated for a stranger's request
/// (`design/security.md`): above it, spoofed requests make the server a reflection amplifier.
pub const MAX_AMPLIFICATION: f64 = 3.0;

const UNAUTHENTICATED_ALLOCATE: &str = "audit-unauthenticated-allocate";
const AMPLIFICATION: &str = "audit-amplification";
const SOFTWARE: &str = "audit-software";

/// Runs the audit against `target`: the checks in the order above, and the findings.
///
/// Over the URI's transport: UDP, TCP, TLS or DTLS (a relay filter skipped over TCP is a
/// known bug, pion/turn #570). Amplification is UDP's alone and skipped on the others. The stranger
/// checks need no credentials; the relay checks need [`Settings::credentials`] and a `turn:`
/// URI and are skipped, with the reason, otherwise.
pub async fn audit(target: &Target, settings: &Settings) -> (Vec<Check>, Vec<Finding>) {
    let mut audit = Audit {
        label: target.label(),
        checks: Vec::new(),
        findings: Vec::new(),
    };
    let dialer = Dialer::new(target, settings);
    audit.strangers(&dialer, settings).await;
    match (&settings.credentials, target.uri.scheme) {
        (Some(credentials), Scheme::Turn) => {
            let (checks, findings) =
                relay::checks(&audit.label, target, &dialer, settings, credentials).await;
            audit.checks.extend(checks);
            audit.findings.extend(findings);
        }
        (None, _) => audit.skip_relay(
            "needs TURN credentials (--user and --password, or --secret): the relay policy \
             can only be tested from an authenticated allocation",
        ),
        (Some(_), Scheme::Stun) => {
            audit.skip_relay("a stun: URI: the relay policy is audited on turn: URIs")
        }
    }
    (audit.checks, audit.findings)
}

/// Every audit check skipped for `reason`: when the connection to the server failed, each
/// would fail the same way.
pub fn skipped(label: &str, reason: &str) -> Vec<Check> {
    let mut checks: Vec<Check> = [UNAUTHENTICATED_ALLOCATE, AMPLIFICATION, SOFTWARE]
        .into_iter()
        .map(|name| Check::skip(label, name, reason))
        .collect();
    checks.extend(relay::skipped(label, reason));
    checks
}

/// What the audit found so far.
struct Audit {
    label: String,
    checks: Vec<Check>,
    findings: Vec<Finding>,
}

/// A request a stranger may send, and what came back.
struct Exchange {
    what: &'static str,
    /// The request's size; 0 when it could not be sent.
    request: usize,
    answer: Result<Response, TransactError>,
    /// The socket or connection it went from, to release an allocation it got.
    socket: Option<Link>,
}

/// Sends one stranger request, described as in [`STRANGER_REQUESTS`], from a socket or
/// connection of its own.
async fn ask(
    dialer: &Dialer,
    settings: &Settings,
    (what, method, transport, fingerprint): (&'static str, Method, bool, bool),
) -> Exchange {
    let unsent = |error: TransactError| Exchange {
        what,
        request: 0,
        answer: Err(error),
        socket: None,
    };
    let mut socket = match Link::open(dialer, settings.timeout).await {
        Ok(socket) => socket,
        Err(ConnectError::Io(error)) => return unsent(TransactError::Io(error)),
        Err(error) => return unsent(TransactError::Connect(error.explain(dialer))),
    };
    let id = socket.transaction_id();
    let Ok(request) = stranger_request(id, method, transport, fingerprint) else {
        return unsent(TransactError::Io(io::ErrorKind::InvalidInput.into()));
    };
    let answer = socket.transact(&request, settings.timeout).await;
    Exchange {
        what,
        request: request.len(),
        answer,
        socket: Some(socket),
    }
}

/// The stranger requests, the smallest of their kind: (description, method, with
/// REQUESTED-TRANSPORT UDP, with FINGERPRINT). "Allocate" is the one RFC 8656 clients send.
const STRANGER_REQUESTS: [(&str, Method, bool, bool); 4] = [
    ("Binding", Method::BINDING, false, false),
    ("Binding with FINGERPRINT", Method::BINDING, false, true),
    ("bare Allocate", Method::ALLOCATE, false, false),
    ("Allocate", Method::ALLOCATE, true, false),
];

impl Audit {
    fn skip(&mut self, name: &str, reason: &str) {
        self.checks.push(Check::skip(&self.label, name, reason));
    }

    fn skip_relay(&mut self, reason: &str) {
        let skipped = relay::skipped(&self.label, reason);
        self.checks.extend(skipped);
    }

    fn find(&mut self, severity: Severity, check: &str, title: String, detail: String) {
        self.findings.push(Finding {
            target: self.label.clone(),
            severity,
            check: check.into(),
            title,
            detail,
        });
    }

    /// The checks of what anyone on the Internet gets from the server.
    async fn strangers(&mut self, dialer: &Dialer, settings: &Settings) {
        // Concurrently, each on its own socket: a server that answers nothing costs one
        // timeout, not four.
        let [a, b, c, d] = STRANGER_REQUESTS.map(|request| ask(dialer, settings, request));
        let (a, b, c, d) = tokio::join!(a, b, c, d);
        let mut exchanges = [a, b, c, d];
        if let Some(Exchange {
            answer: Ok(answer),
            socket: Some(socket),
            ..
        }) = exchanges.iter_mut().find(|e| e.what == "Allocate")
            && answer
                .message()
                .is_some_and(|m| m.class() == Class::Success)
        {
            // Releasing an allocation nobody should have got; a server that gave it without
            // credentials takes a Refresh without them too.
            let id = socket.transaction_id();
            if let Ok(refresh) = release_request(id) {
                let _ = socket.transact(&refresh, settings.timeout).await;
            }
        }
        let allocate = exchanges.iter().find(|e| e.what == "Allocate");
        self.unauthenticated_allocate(dialer, settings, allocate);
        match dialer.transport() {
            Transport::Udp => self.amplification(&exchanges),
            Transport::Dtls => self.skip(
                AMPLIFICATION,
                "reflection amplification of STUN needs a spoofed source address: over DTLS \
                 the server answers STUN inside an association only, after a handshake whose \
                 cookie exchange proves the source; probe the server's UDP URI for it",
            ),
            Transport::Tcp | Transport::Tls => self.skip(
                AMPLIFICATION,
                "reflection amplification needs a spoofed source address, which only UDP \
                 allows: over TCP and TLS the handshake proves the source first; probe the \
                 server's UDP URI for it",
            ),
        }
        self.software(&exchanges);
    }

    fn unauthenticated_allocate(
        &mut self,
        dialer: &Dialer,
        settings: &Settings,
        exchange: Option<&Exchange>,
    ) {
        let name = UNAUTHENTICATED_ALLOCATE;
        let transport = dialer.transport();
        let answer = match exchange.map(|e| &e.answer) {
            Some(Ok(answer)) => answer,
            Some(Err(e)) => {
                let reason = format!(
                    "{}; without an answer to an Allocate the server is no TURN server on {}, \
                     or it drops strangers (which is fine)",
                    e.explain_over(dialer.server(), settings.timeout, transport),
                    transport_name(transport)
                );
                return self.skip(name, &reason);
            }
            None => return self.skip(name, "no Allocate was sent"),
        };
        let check = match allocate_answer(answer.message().as_ref()) {
            AllocateAnswer::Challenge => Check::pass(&self.label, name, "401 with REALM and NONCE"),
            AllocateAnswer::Refused(code) => Check::pass(
                &self.label,
                name,
                format!("refused with {code} (a TURN server answers 401 with REALM and NONCE)"),
            ),
            AllocateAnswer::IncompleteChallenge(missing) => Check::fail(
                &self.label,
                name,
                format!("401 without {missing}"),
                format!(
                    "the challenge lacks {missing}: clients cannot compute the long-term key, \
                     so no one can allocate (RFC 8489 §9.2.4)"
                ),
            ),
            AllocateAnswer::Unusable => {
                let mut check = Check::skip(
                    &self.label,
                    name,
                    "the answer to an Allocate is neither a success nor an error with ERROR-CODE",
                );
                check.value = format!("{} bytes, not understood", answer.bytes.len());
                check
            }
            AllocateAnswer::Open(relayed) => {
                let relayed = relayed.map_or_else(|| "no address".into(), |a| a.to_string());
                self.find(
                    Severity::Critical,
                    name,
                    "open relay: an Allocate without credentials succeeded".into(),
                    format!(
                        "an Allocate with REQUESTED-TRANSPORT UDP and no MESSAGE-INTEGRITY got \
                         a success (relayed address {relayed}): anyone can relay through this \
                         server, hide behind its address and spend its bandwidth. coturn: \
                         remove `no-auth` and enable `lt-cred-mech` with `user=` entries or \
                         `use-auth-secret` with `static-auth-secret=`; icebreaker always \
                         authenticates TURN requests."
                    ),
                );
                Check::fail(
                    &self.label,
                    name,
                    format!("success, relayed {relayed}"),
                    "the server allocates for anyone: an open relay",
                )
            }
        };
        self.checks.push(check);
    }

    fn amplification(&mut self, exchanges: &[Exchange]) {
        let answered: Vec<(&str, usize, usize)> = exchanges
            .iter()
            .filter_map(|e| match &e.answer {
                Ok(answer) => Some((e.what, e.request, answer.bytes.len())),
                Err(_) => None,
            })
            .collect();
        let Some(factor) = largest_amplification(&answered) else {
            return self.skip(AMPLIFICATION, "no answer to any stranger request");
        };
        let evidence = answered
            .iter()
            .map(|(what, request, answer)| format!("{what} {request} → {answer} B"))
            .collect::<Vec<_>>()
            .join(", ");
        let value = format!("{factor:.2}× at most: {evidence}");
        let check = if amplifies(factor) {
            self.find(
                Severity::Medium,
                AMPLIFICATION,
                format!(
                    "answers strangers with up to {factor:.1}× the bytes they sent \
                     (reflection amplification)"
                ),
                format!(
                    "{evidence}. With a spoofed source address an attacker makes the server \
                     send the victim {factor:.1} times the traffic the attacker spends; keep \
                     answers to strangers at most {MAX_AMPLIFICATION}× their request. coturn: \
                     `no-software-attribute`, `no-rfc5780` when NAT behaviour discovery is \
                     not needed, a short `realm`; icebreaker: no `--software`, a short \
                     `--realm`."
                ),
            );
            Check::fail(
                &self.label,
                AMPLIFICATION,
                value,
                format!("above {MAX_AMPLIFICATION}×: usable for reflection attacks"),
            )
        } else {
            Check::pass(&self.label, AMPLIFICATION, value)
        };
        self.checks
            .push(check.with_metric("amplification_factor", factor));
    }

    fn software(&mut self, exchanges: &[Exchange]) {
        let mut answers = 0;
        let mut disclosed: Vec<(&str, String)> = Vec::new();
        for exchange in exchanges {
            let Ok(answer) = &exchange.answer else {
                continue;
            };
            answers += 1;
            if let Some(software) = answer.message().and_then(|m| software_of(&m)) {
                disclosed.push((exchange.what, software));
            }
        }
        if answers == 0 {
            return self.skip(SOFTWARE, "no answer to any stranger request");
        }
        let Some((_, software)) = disclosed.first() else {
            let value = format!("no SOFTWARE in {answers} answers to strangers");
            return self.checks.push(Check::pass(&self.label, SOFTWARE, value));
        };
        let software = software.clone();
        let requests = disclosed
            .iter()
            .map(|(what, _)| *what)
            .collect::<Vec<_>>()
            .join(", ");
        self.find(
            Severity::Low,
            SOFTWARE,
            format!("answers to strangers name the software: {software:?}"),
            format!(
                "the answers to {requests} without credentials carry SOFTWARE {software:?}: \
                 anyone learns the implementation and version to match against known \
                 vulnerabilities, and every answer grows. coturn: `no-software-attribute`; \
                 icebreaker: remove `--software` (`software` in the config file)."
            ),
        );
        self.checks.push(Check::fail(
            &self.label,
            SOFTWARE,
            format!("SOFTWARE {software:?}"),
            "version disclosure to anyone who asks",
        ));
    }
}

/// Writes a stranger's request: no credentials, optionally REQUESTED-TRANSPORT UDP and
/// FINGERPRINT.
fn stranger_request(
    id: TransactionId,
    method: Method,
    transport: bool,
    fingerprint: bool,
) -> Result<Vec<u8>, WriteError> {
    let mut buf = vec![0u8; 64];
    let mut writer = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), id)?;
    if transport {
        writer.add(&RequestedTransport::UDP)?;
    }
    if fingerprint {
        writer.add_fingerprint()?;
    }
    let len = writer.finish();
    buf.truncate(len);
    Ok(buf)
}

/// A Refresh with LIFETIME 0 and no credentials.
fn release_request(id: TransactionId) -> Result<Vec<u8>, WriteError> {
    let mut buf = vec![0u8; 64];
    let kind = MessageType::new(Method::REFRESH, Class::Request);
    let mut writer = MessageWriter::new(&mut buf, kind, id)?;
    writer.add(&Lifetime(0))?;
    let len = writer.finish();
    buf.truncate(len);
    Ok(buf)
}

/// What an Allocate without credentials got.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AllocateAnswer {
    /// A success: an open relay, with its relayed address if it gave a readable one.
    Open(Option<SocketAddr>),
    /// 401 with REALM and NONCE, as RFC 8656 wants.
    Challenge,
    /// 401 lacking what a client needs to authenticate.
    IncompleteChallenge(&'static str),
    /// Another error code: not a relay for strangers either.
    Refused(u16),
    /// Not a success, nor an error with a readable ERROR-CODE.
    Unusable,
}

fn allocate_answer(message: Option<&Message<'_>>) -> AllocateAnswer {
    let Some(message) = message else {
        return AllocateAnswer::Unusable;
    };
    match message.class() {
        Class::Success => AllocateAnswer::Open(
            message
                .get::<XorRelayedAddress>()
                .ok()
                .flatten()
                .map(|a| a.0),
        ),
        Class::Error => match message.get::<ErrorCodeAttribute>() {
            Ok(Some(error)) if error.code.code() == 401 => {
                let realm = matches!(message.get::<Realm>(), Ok(Some(_)));
                let nonce = matches!(message.get::<Nonce>(), Ok(Some(_)));
                match (realm, nonce) {
                    (true, true) => AllocateAnswer::Challenge,
                    (false, true) => AllocateAnswer::IncompleteChallenge("REALM"),
                    (true, false) => AllocateAnswer::IncompleteChallenge("NONCE"),
                    (false, false) => AllocateAnswer::IncompleteChallenge("REALM and NONCE"),
                }
            }
            Ok(Some(error)) => AllocateAnswer::Refused(error.code.code()),
            _ => AllocateAnswer::Unusable,
        },
        _ => AllocateAnswer::Unusable,
    }
}

/// The SOFTWARE attribute's text, if any.
fn software_of(message: &Message<'_>) -> Option<String> {
    message
        .get::<Software>()
        .ok()
        .flatten()
        .map(|s| s.0.to_owned())
}

/// The largest answer-to-request ratio among (what, request bytes, answer bytes); `None`
/// without any.
fn largest_amplification(answered: &[(&str, usize, usize)]) -> Option<f64> {
    answered
        .iter()
        .filter(|(_, request, _)| *request > 0)
        .map(|(_, request, answer)| *answer as f64 / *request as f64)
        .reduce(f64::max)
}

/// Whether a ratio makes a reflection amplifier: strictly above [`MAX_AMPLIFICATION`].
fn amplifies(factor: f64) -> bool {
    factor > MAX_AMPLIFICATION
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use icebreaker_wire::ErrorCode;

    #[test]
    fn amplification_is_the_largest_ratio_and_three_is_tolerated() {
        assert_eq!(largest_amplification(&[]), None);
        let answered = [("Binding", 20, 32), ("Allocate", 28, 84), ("x", 0, 10)];
        assert_eq!(largest_amplification(&answered), Some(3.0));
        assert!(!amplifies(3.0));
        assert!(amplifies(3.01));
        assert!(!amplifies(1.6));
    }

    fn answer(class: Class, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let kind = MessageType::new(Method::ALLOCATE, class);
        let mut writer = MessageWriter::new(&mut buf, kind, TransactionId::new([1; 12])).unwrap();
        build(&mut writer);
        let len = writer.finish();
        buf.truncate(len);
        buf
    }

    #[test]
    fn answers_to_an_unauthenticated_allocate() {
        let judge = |bytes: &[u8]| allocate_answer(Message::parse(bytes).ok().as_ref());
        let challenge = answer(Class::Error, |w| {
            w.add(&ErrorCodeAttribute::bare(ErrorCode::UNAUTHENTICATED))
                .unwrap();
            w.add(&Realm("example.org")).unwrap();
            w.add(&Nonce("abcdef")).unwrap();
        });
        assert_eq!(judge(&challenge), AllocateAnswer::Challenge);
        let no_nonce = answer(Class::Error, |w| {
            w.add(&ErrorCodeAttribute::bare(ErrorCode::UNAUTHENTICATED))
                .unwrap();
            w.add(&Realm("example.org")).unwrap();
        });
        assert_eq!(
            judge(&no_nonce),
            AllocateAnswer::IncompleteChallenge("NONCE")
        );
        let bad = answer(Class::Error, |w| {
            w.add(&ErrorCodeAttribute::bare(ErrorCode::BAD_REQUEST))
                .unwrap();
        });
        assert_eq!(judge(&bad), AllocateAnswer::Refused(400));
        let relayed: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let open = answer(Class::Success, |w| {
            w.add(&XorRelayedAddress(relayed)).unwrap();
            w.add(&Lifetime(600)).unwrap();
            w.add(&Software("relay 1.0")).unwrap();
        });
        assert_eq!(judge(&open), AllocateAnswer::Open(Some(relayed)));
        let message = Message::parse(&open).unwrap();
        assert_eq!(software_of(&message).as_deref(), Some("relay 1.0"));
        assert_eq!(software_of(&Message::parse(&bad).unwrap()), None);
        assert_eq!(judge(&[0u8; 3]), AllocateAnswer::Unusable);
        assert_eq!(
            judge(&answer(Class::Error, |_| {})),
            AllocateAnswer::Unusable
        );
    }

    #[test]
    fn stranger_requests_are_as_small_as_asked() {
        let id = TransactionId::new([2; 12]);
        assert_eq!(
            stranger_request(id, Method::BINDING, false, false)
                .unwrap()
                .len(),
            20
        );
        let fingerprinted = stranger_request(id, Method::BINDING, false, true).unwrap();
        assert_eq!(fingerprinted.len(), 28);
        assert!(
            Message::parse(&fingerprinted)
                .unwrap()
                .verify_fingerprint()
                .is_ok()
        );
        let allocate = stranger_request(id, Method::ALLOCATE, true, false).unwrap();
        assert_eq!(allocate.len(), 28);
        let message = Message::parse(&allocate).unwrap();
        assert_eq!(
            message.get::<RequestedTransport>().unwrap(),
            Some(RequestedTransport::UDP)
        );
        let release = release_request(id).unwrap();
        let release = Message::parse(&release).unwrap();
        assert_eq!(release.get::<Lifetime>().unwrap(), Some(Lifetime(0)));
    }
}
