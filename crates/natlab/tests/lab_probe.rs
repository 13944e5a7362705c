//! `ice-probe` behind each of the lab's NAT types, against `icebreaker serve` with RFC 5780:
//! its `nat-mapping`, `nat-filtering`, `hairpinning` and `mapped-address` checks must
//! describe the NAT the router was set to, and `mapping-lifetime` the router's UDP timeout.
//!
//! Needs root and `ip`, `nft` and `conntrack`; without them the tests print why and pass,
//! unless `ICEBREAKER_REQUIRE_TOOLS` is set. Every wait is bounded.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use icebreaker_natlab::lab::{Lab, LabProcess, Node, ROUTER1_WAN_IP, ROUTER2_WAN_IP, SERVER_IP};
use icebreaker_natlab::{Filtering, Mapping, NatType};
use icebreaker_tests::workspace_bin;
use serde_json::Value;

mod common;
use common::{lab, serve_with_rfc5780};

/// How long one probe run may take: a few round trips on veth links, one-second waits for
/// answers a NAT drops, and with `--lifetime 8` two passes of at most 8 s.
const PROBE_RUN: Duration = Duration::from_secs(40);

fn mapping_name(mapping: Mapping) -> &'static str {
    match mapping {
        Mapping::EndpointIndependent => "endpoint-independent",
        Mapping::AddressDependent => "address-dependent",
        Mapping::AddressAndPortDependent => "address-and-port-dependent",
    }
}

fn filtering_name(filtering: Filtering) -> &'static str {
    match filtering {
        Filtering::EndpointIndependent => "endpoint-independent",
        Filtering::AddressDependent => "address-dependent",
        Filtering::AddressAndPortDependent => "address-and-port-dependent",
    }
}

/// Starts `ice-probe stun:SERVER_IP:3478 --json` with `args` in `host`.
fn probe(lab: &Lab, host: Node, args: &[&str]) -> LabProcess {
    let mut cmd = Command::new(workspace_bin("ice-probe", "ice-probe"));
    cmd.arg(format!("stun:{SERVER_IP}:3478"));
    cmd.arg("--json").args(args);
    lab.spawn(host, cmd).unwrap()
}

/// Waits for a probe run to succeed: its JSON report, and all it printed for messages.
fn report(run: &LabProcess) -> (Value, String) {
    let status = run.wait_timeout(PROBE_RUN).unwrap();
    let printed = format!("{status:?}\n{}{}", run.stdout(), run.stderr());
    assert!(status.is_some_and(|s| s.success()), "{printed}");
    let report =
        serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("not JSON ({e}): {printed}"));
    (report, printed)
}

/// The check named `name` in a report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

/// The value of the check named `name`.
fn value<'a>(report: &'a Value, name: &str) -> &'a str {
    check(report, name)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no value for {name} in {report:#}"))
}

#[test]
fn ice_probe_names_each_nat_type_against_icebreaker() {
    let Some(lab) = lab() else {
        return;
    };
    let server = serve_with_rfc5780(&lab);
    // Two types at a time, one behind each router; the second pair with hairpinning on.
    for (round, pair) in NatType::ALL.chunks(2).enumerate() {
        let hairpin = round == 1;
        let runs: Vec<_> = pair
            .iter()
            .zip([(Node::Host1, ROUTER1_WAN_IP), (Node::Host2, ROUTER2_WAN_IP)])
            .map(|(&nat, (host, wan))| {
                lab.set_nat(host, nat, hairpin).unwrap();
                let run = probe(&lab, host, &["--count", "3", "--timeout", "2"]);
                (nat, wan, run)
            })
            .collect();
        for (nat, wan, run) in runs {
            let (report, printed) = report(&run);
            let context = format!("{nat} (hairpin {hairpin}): {printed}");
            let mapping = value(&report, "nat-mapping");
            assert!(
                mapping.starts_with(mapping_name(nat.mapping())),
                "nat-mapping {mapping:?}\n{context}"
            );
            let filtering = value(&report, "nat-filtering");
            assert!(
                filtering.starts_with(filtering_name(nat.filtering())),
                "nat-filtering {filtering:?}\n{context}"
            );
            let mapped = value(&report, "mapped-address");
            assert!(
                mapped.starts_with(&format!("{wan}:")) && mapped.contains("(behind NAT: local "),
                "mapped-address {mapped:?}\n{context}"
            );
            let expected = if hairpin {
                "supported"
            } else {
                "not supported"
            };
            assert_eq!(value(&report, "hairpinning"), expected, "{context}");
            eprintln!(
                "{nat}: nat-mapping {mapping}; nat-filtering {filtering}; hairpinning {expected}"
            );
        }
    }
    assert!(server.try_wait().unwrap().is_none(), "the server died");
}

#[test]
fn ice_probe_estimates_the_mapping_lifetime_of_a_router() {
    let Some(lab) = lab() else {
        return;
    };
    let server = serve_with_rfc5780(&lab);
    // Plain masquerading: the mapping is the conntrack entry, which every packet refreshes.
    lab.set_nat(Node::Router1, NatType::PortRestricted, false)
        .unwrap();
    lab.set_udp_timeout(Node::Router1, 3).unwrap();
    let run = probe(&lab, Node::Host1, &["--count", "1", "--lifetime", "8"]);
    // Doubling finds the mapping alive at 2 s and gone at 4 s; the second pass narrows that.
    let (report, printed) = report(&run);
    let lifetime = check(&report, "mapping-lifetime");
    assert_eq!(lifetime["status"], "pass", "{printed}");
    let value = lifetime["value"].as_str().unwrap_or_default();
    assert!(value.starts_with("between "), "{value}\n{printed}");
    let lower_bound = lifetime["metrics"]
        .as_array()
        .and_then(|metrics| {
            metrics
                .iter()
                .find(|m| m["name"] == "mapping_lifetime_seconds")
        })
        .and_then(|m| m["value"].as_f64())
        .unwrap_or_else(|| panic!("no mapping_lifetime_seconds: {printed}"));
    eprintln!("UDP timeout 3 s: mapping-lifetime {value}");
    assert!(
        (2.0..3.5).contains(&lower_bound),
        "{lower_bound}\n{printed}"
    );
    assert!(server.try_wait().unwrap().is_none(), "the server died");
}
