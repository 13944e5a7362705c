//! What the probe's integration tests share.

#![allow(dead_code, unreachable_pub, clippy::panic)]

use ice_probe::report::Check;

/// The check named `name`; the test fails without one.
pub fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:#?}"))
}

/// The value of `check`'s metric `name`; the test fails without one.
pub fn metric(check: &Check, name: &str) -> f64 {
    check
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} metric in {check:#?}"))
        .value
}

/// coturn on loopback for the stream tests: loopback peers allowed (so that the probe's two
/// allocations can reach each other, and the audit has something to find), UDP and TCP on one
/// port, and with `tls` TLS on a port of its own.
pub fn start_coturn(tls: bool) -> icebreaker_tests::Coturn {
    icebreaker_tests::Coturn::start(icebreaker_tests::CoturnListeners {
        udp: true,
        tcp: true,
        tls,
        rfc5780: false,
        extra: &["--allow-loopback-peers"],
    })
}
