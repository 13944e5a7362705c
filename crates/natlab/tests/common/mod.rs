//! What the namespace-lab tests share.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;
use std::time::Duration;

use icebreaker_natlab::lab::{Lab, LabProcess, Node, SERVER_IP, SERVER_IP2};
use icebreaker_tests::icebreaker_bin;

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

/// `icebreaker serve` in the public namespace on `SERVER_IP:3478`, with RFC 5780 on
/// `SERVER_IP2:3479` and the user `alice:secret`, once it serves.
pub fn serve_with_rfc5780(lab: &Lab) -> LabProcess {
    let mut serve = Command::new(icebreaker_bin());
    serve.args(["serve", "--listen", &format!("{SERVER_IP}:3478")]);
    serve.args(["--other-address", &format!("{SERVER_IP2}:3479")]);
    serve.args(["--user", "alice:secret", "--relay-ports", "49152-49199"]);
    serve.args(["--threads", "1", "--drain-timeout", "1"]);
    let server = lab
        .spawn(Node::Public, serve)
        .expect("start icebreaker serve");
    assert!(
        server
            .wait_for_stdout("iceServers", Duration::from_secs(30))
            .is_some(),
        "icebreaker serve did not start:\n{}{}",
        server.stdout(),
        server.stderr()
    );
    server
}
