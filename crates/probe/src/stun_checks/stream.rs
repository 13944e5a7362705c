//! The STUN checks over a TCP or TLS connection: `connect` (and for TLS `tls` and
//! `tls-certificate`), then `binding` and `mapped-address` over that one connection. NAT
//! behaviour discovery is UDP's and is skipped with the reason. The `binding` and
//! `mapped-address` checks over one [`Link`] serve DTLS too ([`super::dtls`]).

use icebreaker_ice::uri::Transport;
use icebreaker_wire::TransactionId;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::{
    Answer, BINDING, BindingInfo, HAIRPINNING, MAPPED_ADDRESS, MAPPING_LIFETIME, NAT_FILTERING,
    NAT_MAPPING, NO_CHANGE, Run, explain_binding_refusal, read_answer,
};
use crate::net::{self, TransactError, transport_name};
use crate::report::Check;
use crate::stats::millis;
use crate::stream::{ConnectError, Dialer, Link};
use crate::tls::{self, TLS, TLS_CERTIFICATE};
use crate::{Settings, Target};

/// The check of the TCP connection.
pub const CONNECT: &str = "connect";

/// Connects to `target` over TCP or TLS and sends `settings.count` Binding requests one
/// after another on that connection. Returns `connect`, for TLS `tls` and
/// `tls-certificate`, then `binding` (round trips; a request unanswered within the timeout
/// counts as lost) and `mapped-address`, and what the answers said when the server
/// answered.
///
/// When the TLS handshake fails in a way that suggests a port without TLS, a Binding request
/// over plain TCP tells whether the port speaks plain STUN, for the explanation.
pub async fn binding_over_stream(
    target: &Target,
    settings: &Settings,
) -> (Vec<Check>, Option<BindingInfo>) {
    let label = target.label();
    let dialer = Dialer::new(target, settings);
    let mut checks = Vec::new();
    let skip_binding = |checks: &mut Vec<Check>, failed: &str| {
        checks.extend(skipped_bindings(&label, failed));
    };
    let connection = match dialer.connect(settings.timeout).await {
        Ok(connection) => connection,
        Err(ConnectError::Tls {
            connect,
            mut failure,
        }) => {
            checks.push(connect_check(&label, &dialer, connect));
            if failure.maybe_plain() {
                failure.plain_stun = Some(answers_plain_stun(&dialer, settings).await);
            }
            checks.extend(tls::failed_checks(&label, &failure, dialer.host()));
            skip_binding(&mut checks, TLS);
            return (checks, None);
        }
        Err(error) => {
            checks.push(Check::fail(&label, CONNECT, "", error.explain(&dialer)));
            if dialer.transport() == Transport::Tls {
                for name in [TLS, TLS_CERTIFICATE] {
                    checks.push(Check::skip(
                        &label,
                        name,
                        "depends on connect, which failed",
                    ));
                }
            }
            skip_binding(&mut checks, CONNECT);
            return (checks, None);
        }
    };
    checks.push(connect_check(&label, &dialer, connection.connect));
    if let Some(handshake) = &connection.tls {
        checks.extend(tls::checks(&label, handshake));
    }
    let mut link = Link::Stream {
        conn: connection.stream,
        rng: StdRng::from_os_rng(),
    };
    let info = binding_checks(&label, &dialer, &mut link, settings, &mut checks).await;
    (checks, info)
}

/// `binding` and `mapped-address` skipped because the check `failed` failed.
pub(super) fn skipped_bindings(label: &str, failed: &str) -> [Check; 2] {
    [BINDING, MAPPED_ADDRESS].map(|name| {
        let reason = format!("depends on {failed}, which failed");
        Check::skip(label, name, reason)
    })
}

/// The `binding` and `mapped-address` checks over `link`, pushed to `checks`; what the
/// answers said when some came.
pub(super) async fn binding_checks(
    label: &str,
    dialer: &Dialer,
    link: &mut Link,
    settings: &Settings,
    checks: &mut Vec<Check>,
) -> Option<BindingInfo> {
    let (binding, mapped) = bindings(label, dialer, link, settings).await;
    checks.push(binding);
    match mapped {
        Some((mapped, info)) => {
            checks.push(mapped);
            Some(info)
        }
        None => {
            checks.push(Check::skip(
                label,
                MAPPED_ADDRESS,
                "the server gave no usable Binding answer (see `binding`)",
            ));
            None
        }
    }
}

/// The `binding` check over `link`, and `mapped-address` with what the answers said when
/// some came.
async fn bindings(
    label: &str,
    dialer: &Dialer,
    link: &mut Link,
    settings: &Settings,
) -> (Check, Option<(Check, BindingInfo)>) {
    let server = dialer.server();
    let transport = dialer.transport();
    let sent = settings.count.max(1);
    let mut run = Run::default();
    let mut failure: Option<(String, String)> = None;
    for _ in 0..sent {
        let id = link.transaction_id();
        let request = match net::binding_request(id, NO_CHANGE, None) {
            Ok(request) => request,
            Err(e) => {
                failure = Some((
                    String::new(),
                    format!("cannot write a Binding request: {e}"),
                ));
                break;
            }
        };
        match link.transact(&request, settings.timeout).await {
            Ok(response) => match read_answer(&response.bytes) {
                Answer::Mapped(mapped) => run.record(mapped, &response),
                Answer::Refused(refusal) => {
                    let value = format!("error {}", refusal.describe());
                    failure = Some((value, explain_binding_refusal(&refusal)));
                    break;
                }
                Answer::Unusable(why) => {
                    let explanation =
                        format!("{why}: clients learn no server-reflexive address from it");
                    failure = Some(("unusable answer".into(), explanation));
                    break;
                }
            },
            Err(TransactError::Timeout) if run.first.is_some() => run.lost += 1,
            Err(error) => {
                let mut explanation = error.explain_over(server, settings.timeout, transport);
                if run.first.is_some() {
                    explanation = format!(
                        "after {} answers: {explanation}; clients lose their connection the \
                         same way",
                        run.answered
                    );
                }
                failure = Some(("no answer".into(), explanation));
                break;
            }
        }
    }
    let local = link
        .local_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::new(net::unspecified(server.ip()), 0));
    let mapped = run.mapped_address(label, local);
    let check = match (failure, mapped.is_some()) {
        (None, true) => run.check(label, sent),
        (Some((_, explanation)), true) => {
            let mut check = run.check(label, sent);
            check.status = crate::report::Status::Fail;
            check.explanation = Some(explanation);
            check
        }
        (Some((value, explanation)), false) => Check::fail(label, BINDING, value, explanation),
        (None, false) => Check::fail(label, BINDING, "no answer", "no request was sent"),
    };
    (check, mapped)
}

/// The passed `connect` check: the TCP handshake's duration.
fn connect_check(label: &str, dialer: &Dialer, took: std::time::Duration) -> Check {
    let value = format!("TCP to {} in {} ms", dialer.server(), millis(took));
    Check::pass(label, CONNECT, value).with_metric("connect_seconds", took.as_secs_f64())
}

/// Whether the server answers a Binding request over plain TCP on the same port.
async fn answers_plain_stun(dialer: &Dialer, settings: &Settings) -> bool {
    let Ok(connection) = dialer.plain().connect(settings.timeout).await else {
        return false;
    };
    let mut conn = connection.stream;
    let mut id = [0u8; 12];
    StdRng::from_os_rng().fill_bytes(&mut id);
    let Ok(request) = net::binding_request(TransactionId::new(id), NO_CHANGE, None) else {
        return false;
    };
    conn.transact(&request, settings.timeout)
        .await
        .is_ok_and(|response| response.message().is_some())
}

/// The NAT behaviour checks, skipped on a `transport` stream or over DTLS.
pub fn nat_skipped_on_stream(label: &str, transport: Transport) -> Vec<Check> {
    let reason = if transport == Transport::Dtls {
        "NAT behaviour discovery (RFC 5780) needs answers from the server's other address and \
         port, which cannot come inside one DTLS association (mapped-address shows this UDP \
         socket's mapping); probe the server's stun: or turn: URI over UDP for the rest"
            .to_owned()
    } else {
        format!(
            "NAT behaviour discovery (RFC 5780) runs over UDP: the NAT's mappings of a {} \
             connection say nothing about the UDP mappings media use; probe the server's \
             stun: or turn: URI over UDP for them",
            transport_name(transport)
        )
    };
    let mut checks = vec![Check::skip(label, NAT_MAPPING, reason)];
    for name in [NAT_FILTERING, HAIRPINNING, MAPPING_LIFETIME] {
        checks.push(Check::skip(label, name, "UDP only (see nat-mapping)"));
    }
    checks
}
