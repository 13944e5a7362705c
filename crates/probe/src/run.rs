//! A whole run: every check against every URI, in order, into one [`Report`].

use std::net::SocketAddr;
use std::time::Instant;

use icebreaker_ice::uri::{Host, Scheme, ServerUri, Transport};

use crate::report::{Check, Report, Status};
use crate::stun_checks::BindingInfo;
use crate::{Settings, Target, audit, dtls, load, stun_checks, tls, turn_checks};

/// Runs every check the settings ask for against each URI, one server after another.
pub async fn run(uris: &[ServerUri], settings: &Settings) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let mut without_discovery: Vec<(Target, BindingInfo)> = Vec::new();
    for uri in uris {
        let server = match resolve(uri).await {
            Ok((server, check)) => {
                report.extend(check);
                server
            }
            Err(check) => {
                report.push(check);
                continue;
            }
        };
        let target = Target {
            uri: uri.clone(),
            server,
        };
        let label = target.label();
        let (checks, info) = match uri.transport {
            Transport::Udp => stun_checks::binding(&target, settings).await,
            Transport::Tcp | Transport::Tls => {
                stun_checks::binding_over_stream(&target, settings).await
            }
            Transport::Dtls => stun_checks::binding_over_dtls(&target, settings).await,
        };
        report.extend(checks);
        // A connection that cannot be made would fail every later check the same way, each
        // after its own timeout: say it once.
        let unreachable = report
            .checks
            .iter()
            .find(|c| {
                c.target == label
                    && [stun_checks::CONNECT, tls::TLS, dtls::DTLS].contains(&c.name.as_str())
                    && c.status == Status::Fail
            })
            .map(|c| format!("depends on {}, which failed", c.name));
        if let Some(reason) = unreachable {
            if uri.scheme == Scheme::Turn {
                report.extend(turn_checks::skipped(&label, &reason));
            }
            if settings.audit {
                report.extend(audit::skipped(&label, &reason));
            }
            if settings.load.is_some() && uri.scheme == Scheme::Turn {
                report.extend(load::skipped(&label, &reason));
            }
            continue;
        }
        if info.is_some() && uri.transport != Transport::Udp {
            report.extend(stun_checks::nat_skipped_on_stream(&label, uri.transport));
        } else if let Some(info) = info {
            report.extend(stun_checks::nat_behaviour(&target, settings, &info).await);
            // Behind a NAT without RFC 5780, a second server tells at least the mapping.
            let mapping_unknown = report
                .checks
                .iter()
                .any(|c| c.target == label && c.name == "nat-mapping" && c.status == Status::Skip);
            if mapping_unknown {
                without_discovery.push((target.clone(), info));
            }
        }
        if uri.scheme == Scheme::Turn {
            report.extend(turn_checks::turn(&target, settings).await);
        }
        if settings.audit {
            let (checks, findings) = audit::audit(&target, settings).await;
            report.extend(checks);
            report.findings.extend(findings);
        }
        if let Some(load_settings) = settings.load
            && uri.scheme == Scheme::Turn
        {
            report.extend(load::load(&target, settings, load_settings).await);
        }
    }
    if let Some(check) = stun_checks::mapping_across(&without_discovery, settings).await {
        // It answers what the first server's skipped RFC 5780 check could not.
        let skipped = report
            .checks
            .iter_mut()
            .find(|c| c.target == check.target && c.name == check.name && c.status == Status::Skip);
        match skipped {
            Some(skipped) => *skipped = check,
            None => report.push(check),
        }
    }
    report.finish(started.elapsed().as_secs_f64());
    report
}

/// The address to probe: the literal, or the first address of the name (IPv4 first), with
/// a `resolve` check for names.
async fn resolve(uri: &ServerUri) -> Result<(SocketAddr, Option<Check>), Check> {
    let label = uri.to_string();
    let name = match &uri.host {
        Host::Ip(ip) => return Ok((SocketAddr::new(*ip, uri.port), None)),
        Host::Name(name) => name,
    };
    let started = Instant::now();
    let found = tokio::net::lookup_host((name.as_str(), uri.port)).await;
    let mut addresses: Vec<SocketAddr> = match found {
        Ok(found) => found.collect(),
        Err(error) => {
            return Err(Check::fail(
                &label,
                "resolve",
                "no address",
                format!(
                    "{name} does not resolve ({error}): check the name's spelling and its DNS \
                     records, and this host's resolver"
                ),
            ));
        }
    };
    addresses.sort_by_key(|a| a.is_ipv6());
    addresses.dedup();
    let Some(&first) = addresses.first() else {
        return Err(Check::fail(
            &label,
            "resolve",
            "no address",
            format!("{name} has no A or AAAA record"),
        ));
    };
    let listed: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
    let check = Check::pass(
        &label,
        "resolve",
        format!("{} (probing {})", listed.join(", "), first.ip()),
    )
    .with_metric("resolve_seconds", started.elapsed().as_secs_f64());
    Ok((first, Some(check)))
}
