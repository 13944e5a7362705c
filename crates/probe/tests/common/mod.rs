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
