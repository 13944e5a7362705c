//! What the namespace-lab tests share.

#![allow(dead_code, unreachable_pub)]

use icebreaker_natlab::lab::Lab;

/// Whether this machine can build a lab; says why not.
pub fn available() -> bool {
    match Lab::check_available() {
        Ok(()) => true,
        Err(why) => {
            icebreaker_tests::missing("the namespace lab", &why);
            false
        }
    }
}

/// A fresh lab, or `None` (after saying why) when this machine cannot build one.
pub fn lab() -> Option<Lab> {
    available().then(|| Lab::new().expect("bring up the lab"))
}
