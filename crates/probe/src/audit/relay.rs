//! The relay-target checks: from an authenticated allocation, CreatePermission (and
//! ChannelBind for the main targets) towards every address a relay must refuse, in every
//! encoding; one check per category, a finding per category the server relays to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use icebreaker_ice::turn_client::{TurnError, TurnState};

use crate::net::TurnSession;
use crate::report::{Check, Finding, Severity, Status};
use crate::stream::Dialer;
use crate::turn_checks::explain_session;
use crate::{Credentials, Settings, Target};

/// The port of relay targets other than the server's own addresses: HTTP, what an attacker
/// looks for behind a relay. Permissions cover whole IP addresses, so the port rarely matters.
const PEER_PORT: u16 = 80;
/// Ports of the server's own address that no relay range plausibly holds, with its listening
/// port added: SSH and HTTP.
const OWN_PORTS: [u16; 2] = [22, PEER_PORT];
/// Relay probes in a row without an answer before the rest are given up: the server has
/// stopped answering, and each costs a whole timeout and a fresh allocation.
const MAX_SILENT: u32 = 3;

/// Every relay check skipped for `reason`.
pub(super) fn skipped(label: &str, reason: &str) -> Vec<Check> {
    Category::ALL
        .iter()
        .map(|category| Check::skip(label, category.check_name(), reason))
        .collect()
}

/// Runs every probe, one allocation at a time, then makes one check per category.
pub(super) async fn checks(
    label: &str,
    target: &Target,
    dialer: &Dialer,
    settings: &Settings,
    credentials: &Credentials,
) -> (Vec<Check>, Vec<Finding>) {
    let mut relay = Relay {
        dialer,
        credentials,
        timeout: settings.timeout,
        session: None,
    };
    let relayed = match relay.open().await {
        Ok(relayed) => relayed,
        Err(why) => {
            relay.retire().await;
            let reason = format!("{why}; the relay policy was not tested");
            return (skipped(label, &reason), Vec::new());
        }
    };
    let mut results = Vec::new();
    let mut silent = 0;
    // Once the server stops answering or allocating, the remaining probes would each wait
    // out a timeout for nothing.
    let mut stopped: Option<String> = None;
    for probe in probes(target.server, relayed) {
        let verdict = match &stopped {
            Some(why) => Verdict::NotTested(why.clone()),
            None => relay.probe(&probe).await,
        };
        silent = if verdict == Verdict::NoAnswer {
            silent + 1
        } else {
            0
        };
        if stopped.is_none() {
            if silent >= MAX_SILENT {
                stopped = Some(format!(
                    "{MAX_SILENT} requests in a row went unanswered, so the rest were not sent"
                ));
            } else if let Verdict::NotTested(why) = &verdict {
                stopped = Some(why.clone());
            }
        }
        results.push((probe, verdict));
    }
    relay.retire().await;
    let mut checks = Vec::new();
    let mut findings = Vec::new();
    for category in Category::ALL {
        let mine: Vec<(Probe, Verdict)> = results
            .iter()
            .filter(|(probe, _)| probe.category == category)
            .cloned()
            .collect();
        let (check, finding) = category_check(label, category, &mine);
        checks.push(check);
        findings.extend(finding);
    }
    (checks, findings)
}

/// A category's check, and its finding when the server granted a probe.
fn category_check(
    label: &str,
    category: Category,
    results: &[(Probe, Verdict)],
) -> (Check, Option<Finding>) {
    let name = category.check_name();
    let (status, value) = summarize(results);
    match status {
        Status::Pass => (Check::pass(label, name, value), None),
        Status::Fail => {
            let accepted = || {
                results
                    .iter()
                    .filter(|(_, verdict)| *verdict == Verdict::Accepted)
                    .map(|(probe, _)| probe)
            };
            let severity = accepted()
                .map(Probe::severity)
                .max()
                .unwrap_or(Severity::Medium);
            let evidence = accepted()
                .map(|probe| format!("{} {}", probe.request.as_str(), probe.peer))
                .collect::<Vec<_>>()
                .join(", ");
            let finding = Finding {
                target: label.into(),
                severity,
                check: name.into(),
                title: category.title().into(),
                detail: format!(
                    "granted from an authenticated allocation: {evidence}. {} Fix: {}",
                    category.harm(),
                    category.fix()
                ),
            };
            let check = Check::fail(label, name, value, category.title());
            (check, Some(finding))
        }
        Status::Skip => {
            let mut check = Check::skip(label, name, skip_reason(results));
            check.value = value;
            (check, None)
        }
    }
}

/// Which relay check a probe belongs to: what the peer reaches, or for the IPv6 spellings
/// how it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Loopback,
    Unspecified,
    Private,
    Metadata,
    Multicast,
    ServerAddress,
    Ipv6Forms,
}

impl Category {
    const ALL: [Category; 7] = [
        Category::Loopback,
        Category::Unspecified,
        Category::Private,
        Category::Metadata,
        Category::Multicast,
        Category::ServerAddress,
        Category::Ipv6Forms,
    ];

    const fn check_name(self) -> &'static str {
        match self {
            Category::Loopback => "audit-relay-loopback",
            Category::Unspecified => "audit-relay-unspecified",
            Category::Private => "audit-relay-private",
            Category::Metadata => "audit-relay-metadata",
            Category::Multicast => "audit-relay-multicast",
            Category::ServerAddress => "audit-relay-server-address",
            Category::Ipv6Forms => "audit-relay-ipv6-forms",
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Category::Loopback => "relays to loopback addresses: clients reach the server host",
            Category::Unspecified => "relays to the unspecified address (0.0.0.0 or ::)",
            Category::Private => "relays into private, carrier-grade NAT or link-local networks",
            Category::Metadata => "relays to the cloud metadata service (169.254.169.254)",
            Category::Multicast => "relays to multicast or broadcast addresses",
            Category::ServerAddress => {
                "relays to the server's own address outside the relay port range"
            }
            Category::Ipv6Forms => {
                "relays to IPv4 addresses spelled as IPv6 (mapped, compatible, NAT64, 6to4, \
                 Teredo)"
            }
        }
    }

    const fn harm(self) -> &'static str {
        match self {
            Category::Loopback => {
                "Any user can reach services that listen only on the server's loopback \
                 interface (databases, admin consoles, the TURN server's own CLI)."
            }
            Category::Unspecified => {
                "On Linux, 0.0.0.0 reaches the host's own services (coturn CVE-2020-26262)."
            }
            Category::Private => {
                "Any user can reach hosts of the operator's internal networks through the \
                 relay."
            }
            Category::Metadata => {
                "Any user can ask the cloud metadata service for the instance's credentials."
            }
            Category::Multicast => {
                "Any user can send to every host of a local network segment at once."
            }
            Category::ServerAddress => {
                "Any user can reach the server host's other services (SSH, HTTP, metrics) \
                 from the inside."
            }
            Category::Ipv6Forms => {
                "The policy judges the IPv6 spelling and not the IPv4 address it stands for, \
                 so denied IPv4 addresses are reachable anyway (coturn CVE-2026-27624)."
            }
        }
    }

    const fn fix(self) -> &'static str {
        match self {
            Category::Loopback => {
                "coturn: remove `allow-loopback-peers` (off by default) and add \
                 `denied-peer-ip=127.0.0.0-127.255.255.255` and `denied-peer-ip=::1`; \
                 icebreaker: remove the `--allow-peer` entry covering 127.0.0.0/8."
            }
            Category::Unspecified => {
                "coturn: upgrade to 4.5.2 or later and add \
                 `denied-peer-ip=0.0.0.0-0.255.255.255` and `denied-peer-ip=::`; icebreaker: \
                 remove the `--allow-peer` entry covering 0.0.0.0/8."
            }
            Category::Private => {
                "coturn: add `denied-peer-ip=10.0.0.0-10.255.255.255`, \
                 `172.16.0.0-172.31.255.255`, `192.168.0.0-192.168.255.255`, \
                 `100.64.0.0-100.127.255.255`, `169.254.0.0-169.254.255.255`, \
                 `fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff` and \
                 `fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff`; icebreaker: narrow or \
                 remove the `--allow-peer` entries covering them."
            }
            Category::Metadata => {
                "coturn: add `denied-peer-ip=169.254.0.0-169.254.255.255` and \
                 `denied-peer-ip=fd00:ec2::254`; icebreaker: remove the `--allow-peer` entry \
                 covering 169.254.0.0/16."
            }
            Category::Multicast => {
                "coturn: set `no-multicast-peers` and add \
                 `denied-peer-ip=255.255.255.255`; icebreaker: remove the `--allow-peer` \
                 entry covering 224.0.0.0/4 or 255.255.255.255."
            }
            Category::ServerAddress => {
                "coturn: add a `denied-peer-ip=` for each of the host's own addresses \
                 (listening, relay and interface addresses) outside `min-port`-`max-port`; \
                 icebreaker refuses them outside `--relay-ports` unless an `--allow-peer` \
                 entry covers them: remove it."
            }
            Category::Ipv6Forms => {
                "coturn: upgrade to a release that fixes CVE-2026-27624 and deny \
                 ::ffff:0:0/96, 64:ff9b::/96, 2002::/16 and 2001::/32 with `denied-peer-ip=` \
                 ranges; icebreaker judges them by the IPv4 address: remove `--allow-peer` \
                 entries covering them."
            }
        }
    }
}

/// The TURN request a probe makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RelayRequest {
    CreatePermission,
    ChannelBind,
}

impl RelayRequest {
    const fn as_str(self) -> &'static str {
        match self {
            RelayRequest::CreatePermission => "CreatePermission",
            RelayRequest::ChannelBind => "ChannelBind",
        }
    }
}

/// One relay target and how it is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Probe {
    category: Category,
    peer: SocketAddr,
    request: RelayRequest,
}

impl Probe {
    /// How bad it is that the server granted this probe.
    fn severity(&self) -> Severity {
        match self.category {
            Category::ServerAddress => Severity::Critical,
            _ => address_severity(self.peer.ip()),
        }
    }

    /// The probe in a check's value: the IP address, with the port where it matters, and the
    /// request when it is not CreatePermission.
    fn label(&self) -> String {
        let peer = match self.category {
            Category::ServerAddress => self.peer.to_string(),
            _ => match self.peer.ip() {
                // Printed ::7f00:1 otherwise; advisories and configurations write ::127.0.0.1.
                IpAddr::V6(v6) if v6.segments()[..6] == [0; 6] && !v6.is_loopback() => {
                    embedded_ipv4(v6).map_or_else(|| v6.to_string(), |v4| format!("::{v4}"))
                }
                ip => ip.to_string(),
            },
        };
        match self.request {
            RelayRequest::CreatePermission => peer,
            RelayRequest::ChannelBind => format!("{peer} (ChannelBind)"),
        }
    }
}

/// Every relay probe against a server at `server` whose allocation got `relayed`.
fn probes(server: SocketAddr, relayed: SocketAddr) -> Vec<Probe> {
    use Category::*;
    use RelayRequest::*;
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let v6 = |text: &str| text.parse::<IpAddr>().ok();
    let loopback = v4(127, 0, 0, 1);
    let metadata = v4(169, 254, 169, 254);
    let listed: [(Category, Option<IpAddr>, RelayRequest); 26] = [
        (Loopback, Some(loopback), CreatePermission),
        (Loopback, Some(v4(127, 1, 2, 3)), CreatePermission),
        (Loopback, v6("::1"), CreatePermission),
        (Loopback, Some(loopback), ChannelBind),
        (Unspecified, Some(v4(0, 0, 0, 0)), CreatePermission),
        (Unspecified, v6("::"), CreatePermission),
        (Private, Some(v4(10, 0, 0, 1)), CreatePermission),
        (Private, Some(v4(172, 16, 0, 1)), CreatePermission),
        (Private, Some(v4(192, 168, 0, 1)), CreatePermission),
        (Private, Some(v4(100, 64, 0, 1)), CreatePermission),
        (Private, Some(v4(169, 254, 1, 1)), CreatePermission),
        (Private, v6("fc00::1"), CreatePermission),
        (Private, v6("fe80::1"), CreatePermission),
        (Metadata, Some(metadata), CreatePermission),
        (Metadata, v6("fd00:ec2::254"), CreatePermission),
        (Metadata, Some(metadata), ChannelBind),
        (Multicast, Some(v4(224, 0, 0, 1)), CreatePermission),
        (Multicast, Some(v4(255, 255, 255, 255)), CreatePermission),
        (Multicast, v6("ff02::1"), CreatePermission),
        (Ipv6Forms, v6("::ffff:127.0.0.1"), CreatePermission),
        (Ipv6Forms, v6("::127.0.0.1"), CreatePermission),
        (Ipv6Forms, v6("64:ff9b::7f00:1"), CreatePermission),
        (Ipv6Forms, v6("2002:7f00:1::"), CreatePermission),
        // Teredo: server 127.0.0.1, client 127.0.0.1 (stored inverted).
        (Ipv6Forms, v6("2001:0:7f00:1::80ff:fffe"), CreatePermission),
        (Ipv6Forms, v6("::ffff:169.254.169.254"), CreatePermission),
        (Ipv6Forms, v6("64:ff9b::a9fe:a9fe"), CreatePermission),
    ];
    let mut probes: Vec<Probe> = listed
        .into_iter()
        .filter_map(|(category, ip, request)| {
            Some(Probe {
                category,
                peer: SocketAddr::new(ip?, PEER_PORT),
                request,
            })
        })
        .collect();
    let mut own_ips = vec![server.ip()];
    if relayed.ip() != server.ip() {
        own_ips.push(relayed.ip());
    }
    let mut ports = vec![server.port()];
    ports.extend(OWN_PORTS.iter().filter(|p| **p != server.port()));
    for ip in &own_ips {
        for port in &ports {
            probes.push(Probe {
                category: ServerAddress,
                peer: SocketAddr::new(*ip, *port),
                request: CreatePermission,
            });
        }
        if let IpAddr::V4(v4) = ip {
            probes.push(Probe {
                category: ServerAddress,
                peer: SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), server.port()),
                request: CreatePermission,
            });
        }
    }
    probes.push(Probe {
        category: ServerAddress,
        peer: server,
        request: ChannelBind,
    });
    probes
}

/// How bad relaying to `ip` is, judged by the IPv4 address an IPv6 spelling stands for:
/// loopback and cloud metadata critical, private ranges high, unspecified, multicast and
/// broadcast medium, anything else informational.
fn address_severity(ip: IpAddr) -> Severity {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() || v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Severity::Critical
            } else if v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
            {
                Severity::High
            } else if a == 0 || v4.is_multicast() || v4.is_broadcast() {
                Severity::Medium
            } else {
                Severity::Info
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Severity::Critical
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80 {
                Severity::High
            } else if v6.is_unspecified() || v6.is_multicast() {
                Severity::Medium
            } else {
                Severity::Info
            }
        }
    }
}

/// The IPv4 address an IPv6 spelling stands for: IPv4-mapped, IPv4-compatible (not `::` or
/// `::1`), NAT64 (64:ff9b::/96), 6to4 (2002::/16) or Teredo's client (2001::/32).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let pair = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    let low = pair(s[6], s[7]);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        Some(mapped)
    } else if (s[..6] == [0; 6] && u32::from(low) > 1) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(low)
    } else if s[0] == 0x2002 {
        Some(pair(s[1], s[2]))
    } else if s[..2] == [0x2001, 0] {
        Some(Ipv4Addr::from(!u32::from(low)))
    } else {
        None
    }
}

/// What a probe's request got.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// Granted: the weakness.
    Accepted,
    /// An error code other than 443: 403 is the policy, others refuse too.
    Refused(u16),
    /// 443: the peer's family differs from the relay's, so the policy was not asked.
    NotApplicable,
    /// The request went unanswered.
    NoAnswer,
    /// The request could not be made; why.
    NotTested(String),
}

fn verdict(result: &Result<(), TurnError>) -> Verdict {
    match result {
        Ok(()) => Verdict::Accepted,
        Err(error) => match error.code() {
            Some(443) => Verdict::NotApplicable,
            Some(code) => Verdict::Refused(code),
            None if matches!(error, TurnError::Timeout) => Verdict::NoAnswer,
            None => Verdict::NotTested(error.to_string()),
        },
    }
}

/// A relay check's status and value from its probes: fail when one was accepted, pass when
/// none was and one was refused, skip when nothing could be judged. The value lists the
/// probes by outcome, accepted first.
fn summarize(results: &[(Probe, Verdict)]) -> (Status, String) {
    let mut groups: Vec<(u8, String, Vec<String>)> = Vec::new();
    for (probe, verdict) in results {
        let (rank, heading) = match verdict {
            Verdict::Accepted => (0, "accepted".to_owned()),
            Verdict::Refused(code) => (1, format!("refused {code}")),
            Verdict::NotApplicable => (2, "not applicable (443, family mismatch)".to_owned()),
            Verdict::NoAnswer => (3, "no answer".to_owned()),
            Verdict::NotTested(_) => (4, "not tested".to_owned()),
        };
        match groups.iter_mut().find(|(_, h, _)| *h == heading) {
            Some((_, _, labels)) => labels.push(probe.label()),
            None => groups.push((rank, heading, vec![probe.label()])),
        }
    }
    groups.sort_by_key(|(rank, _, _)| *rank);
    let value = groups
        .iter()
        .map(|(_, heading, labels)| format!("{heading}: {}", labels.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    let status = if groups.iter().any(|(rank, _, _)| *rank == 0) {
        Status::Fail
    } else if groups.iter().any(|(rank, _, _)| *rank == 1) {
        Status::Pass
    } else {
        Status::Skip
    };
    (status, value)
}

/// Why a relay check could not judge anything.
fn skip_reason(results: &[(Probe, Verdict)]) -> String {
    let verdicts = || results.iter().map(|(_, verdict)| verdict);
    if let Some(Verdict::NotTested(why)) = verdicts().find(|v| matches!(v, Verdict::NotTested(_))) {
        return why.clone();
    }
    if verdicts().any(|v| *v == Verdict::NoAnswer) {
        return "the server did not answer these requests: nothing can be concluded".into();
    }
    if verdicts().any(|v| *v == Verdict::NotApplicable) {
        return "not applicable: the relay is of the other address family and the server \
                refused these peers with 443 before its peer policy"
            .into();
    }
    "nothing to test".into()
}

/// One allocation at a time for the relay probes, over the URI's transport.
struct Relay<'a> {
    dialer: &'a Dialer,
    credentials: &'a Credentials,
    timeout: Duration,
    session: Option<TurnSession>,
}

impl Relay<'_> {
    /// Bounds one operation: the client gives up after `timeout` per transaction, and an
    /// Allocate takes two (the challenge, then the signed request), a stale nonce one more.
    fn limit(&self) -> Duration {
        self.timeout.saturating_mul(3)
    }

    /// Makes a fresh allocation: its relayed address, or why not.
    async fn open(&mut self) -> Result<SocketAddr, String> {
        let Credentials {
            username, password, ..
        } = self.credentials;
        let mut session = TurnSession::open(self.dialer, username, password, self.timeout)
            .await
            .map_err(|e| e.explain(self.dialer))?;
        let allocated = tokio::time::timeout(self.limit(), session.allocate()).await;
        let outcome = match allocated {
            Ok(Ok((relayed, _, _))) => Ok(relayed),
            Ok(Err(error)) if session.is_stream() || session.is_dtls() => Err(format!(
                "cannot allocate: {}",
                explain_session(&session, &error, self.credentials)
            )),
            Ok(Err(error)) => Err(format!("cannot allocate: {error}")),
            Err(_) => Err("the allocation did not complete in time".into()),
        };
        // Kept even on failure: a success may be on its way, and retire() releases it.
        self.session = Some(session);
        outcome
    }

    /// Releases the allocation, if any.
    async fn retire(&mut self) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        // The client releases only what it has or may be getting; asked otherwise it does
        // nothing and would leave deallocate() waiting for an answer that never comes.
        if matches!(
            session.client().state(),
            TurnState::Allocating | TurnState::Allocated
        ) {
            let _ = tokio::time::timeout(self.limit(), session.deallocate()).await;
        }
    }

    /// Runs one probe on the current allocation, or a fresh one.
    async fn probe(&mut self, probe: &Probe) -> Verdict {
        let usable = self
            .session
            .as_ref()
            .is_some_and(|s| s.client().state() == TurnState::Allocated);
        if !usable {
            self.retire().await;
            if let Err(why) = self.open().await {
                self.retire().await;
                return Verdict::NotTested(why);
            }
        }
        let limit = self.limit();
        let Some(session) = self.session.as_mut() else {
            return Verdict::NotTested("no allocation".into());
        };
        let result = match probe.request {
            RelayRequest::CreatePermission => {
                tokio::time::timeout(limit, session.create_permission(probe.peer)).await
            }
            RelayRequest::ChannelBind => {
                tokio::time::timeout(limit, async {
                    session.bind_channel(probe.peer).await.map(|_| ())
                })
                .await
            }
        };
        let verdict = verdict(&result.unwrap_or(Err(TurnError::Timeout)));
        // The client asks for a permission once per IP address and keeps a granted one, so
        // another probe of that address on this allocation would never reach the server; a
        // ChannelBind also creates a permission whose answer may still be on its way, and an
        // unanswered request may still be pending. Each of those ends the allocation.
        if verdict == Verdict::Accepted
            || verdict == Verdict::NoAnswer
            || probe.request == RelayRequest::ChannelBind
        {
            self.retire().await;
        }
        verdict
    }
}

#[cfg(test)]
mod tests;
