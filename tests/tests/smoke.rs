//! The shared harness itself: the server starts from the test crate and answers its health
//! check.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use icebreaker_tests::Server;

#[test]
fn the_harness_starts_a_server_that_is_healthy() {
    let server = Server::start(&["--user", "alice:secret"]);
    assert!(server.http_get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(
        server.banner[0].starts_with("icebreaker "),
        "{:?}",
        server.banner
    );
}
