//! The TURN checks and the load against a real `icebreaker serve` on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ice_probe::report::{Check, Status};
use ice_probe::turn_checks::CHECK_NAMES;
use ice_probe::{Credentials, LoadSettings, Settings, Target};
use icebreaker_tests::Server;
use icebreaker_wire::credentials::RestPassword;

mod common;
use common::{find, metric};

const SECRET: &str = "probe-test-shared-secret";

fn target(server: &Server) -> Target {
    Target {
        uri: format!("turn:{}", server.addr).parse().unwrap(),
        server: server.addr,
    }
}

fn settings(username: &str, password: &str, rest: bool) -> Settings {
    Settings {
        credentials: Some(Credentials {
            username: username.into(),
            password: password.into(),
            rest,
        }),
        timeout: Duration::from_secs(2),
        ..Settings::default()
    }
}

fn rest_settings(expiry: u64) -> Settings {
    let username = format!("{expiry}:probe");
    let password = RestPassword::new(SECRET.as_bytes(), &username);
    settings(&username, password.as_str(), true)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_all_pass(checks: &[Check]) {
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECK_NAMES);
    for check in checks {
        assert_eq!(check.status, Status::Pass, "{check:#?}");
    }
    for name in ["relay-data", "channel-data"] {
        let check = find(checks, name);
        assert_eq!(metric(check, "loss_ratio"), 0.0, "{check:#?}");
        assert!(
            check.value.ends_with("0 % loss (20 of 20)"),
            "{}",
            check.value
        );
    }
}

/// The allocations the server holds, from its metrics; made sure the metrics counted some.
fn allocations(server: &Server) -> f64 {
    assert!(server.metric("icebreaker_turn_allocations_created_total") > 0.0);
    let body = server.http_get("/metrics");
    body.lines()
        .filter(|line| line.starts_with("icebreaker_turn_allocations_active"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn every_turn_check_passes_against_icebreaker() {
    let server = Server::start(&["--user", "alice:secret"]);
    let checks =
        ice_probe::turn_checks::turn(&target(&server), &settings("alice", "secret", false)).await;
    assert_all_pass(&checks);
    let allocate = find(&checks, "allocate");
    assert!(allocate.value.contains("SHA-256"), "{}", allocate.value);
    assert!(metric(allocate, "allocate_seconds") > 0.0);
    let relayed = find(&checks, "relayed-address");
    assert!(relayed.value.starts_with("127.0.0.1:"), "{}", relayed.value);
    assert!(relayed.value.ends_with("(IPv4)"), "{}", relayed.value);
    let channel = find(&checks, "channel-data");
    assert!(
        channel.value.starts_with("channel 0x4000, rtt "),
        "{}",
        channel.value
    );
    assert!(metric(channel, "channel_bind_seconds") > 0.0);
    assert!(metric(channel, "rtt_p95_seconds") >= metric(channel, "rtt_min_seconds"));
    assert_eq!(find(&checks, "refresh").value, "lifetime 600 s");
    assert!(
        find(&checks, "deallocate")
            .value
            .starts_with("2 released in ")
    );
}

#[tokio::test]
async fn without_credentials_turn_is_one_skip() {
    let server = Server::start(&["--user", "alice:secret"]);
    let checks = ice_probe::turn_checks::turn(&target(&server), &Settings::default()).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].name, "allocate");
    assert_eq!(checks[0].status, Status::Skip);
    assert!(
        checks[0]
            .explanation
            .as_deref()
            .unwrap()
            .contains("--password")
    );
}

#[tokio::test]
async fn a_wrong_password_fails_allocate_and_skips_the_rest() {
    let server = Server::start(&["--user", "alice:secret"]);
    let checks =
        ice_probe::turn_checks::turn(&target(&server), &settings("alice", "wrong", false)).await;
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECK_NAMES);
    let allocate = &checks[0];
    assert_eq!(allocate.status, Status::Fail);
    let explanation = allocate.explanation.as_deref().unwrap();
    assert!(
        explanation.contains("wrong username or password"),
        "{explanation}"
    );
    for check in &checks[1..] {
        assert_eq!(check.status, Status::Skip, "{check:#?}");
        assert_eq!(
            check.explanation.as_deref(),
            Some("depends on allocate, which failed")
        );
    }
}

#[tokio::test]
async fn rest_credentials_pass_and_expired_ones_point_at_the_secret_or_the_clock() {
    let server = Server::start(&["--auth-secret", SECRET]);
    let checks =
        ice_probe::turn_checks::turn(&target(&server), &rest_settings(unix_now() + 3600)).await;
    assert_all_pass(&checks);

    let checks =
        ice_probe::turn_checks::turn(&target(&server), &rest_settings(unix_now() - 60)).await;
    let allocate = &checks[0];
    assert_eq!(allocate.status, Status::Fail, "{allocate:#?}");
    let explanation = allocate.explanation.as_deref().unwrap();
    assert!(explanation.contains("secret"), "{explanation}");
    assert!(explanation.contains("clock"), "{explanation}");
    assert!(explanation.contains("expired"), "{explanation}");
}

#[tokio::test]
async fn a_user_quota_of_one_fails_the_second_allocation_and_releases_the_first() {
    let server = Server::start(&["--user", "alice:secret", "--user-quota", "1"]);
    let checks =
        ice_probe::turn_checks::turn(&target(&server), &settings("alice", "secret", false)).await;
    let status = |name: &str| find(&checks, name).status;
    assert_eq!(status("allocate"), Status::Pass);
    assert_eq!(status("relayed-address"), Status::Pass);
    let permission = find(&checks, "permission");
    assert_eq!(permission.status, Status::Fail);
    let explanation = permission.explanation.as_deref().unwrap();
    assert!(explanation.contains("second allocation"), "{explanation}");
    assert!(explanation.contains("486"), "{explanation}");
    assert!(
        explanation.contains("other allocations of this user"),
        "{explanation}"
    );
    assert_eq!(status("relay-data"), Status::Skip);
    assert_eq!(status("channel-data"), Status::Skip);
    assert_eq!(status("refresh"), Status::Pass);
    assert_eq!(status("deallocate"), Status::Pass);
    assert_eq!(
        find(&checks, "deallocate").value.split(' ').next(),
        Some("1")
    );

    // Released: the quota lets a new run allocate at once.
    let again =
        ice_probe::turn_checks::turn(&target(&server), &settings("alice", "secret", false)).await;
    assert_eq!(find(&again, "allocate").status, Status::Pass, "{again:#?}");
}

#[tokio::test]
async fn a_peer_policy_that_refuses_the_relay_gets_a_403_explained() {
    // The defaults let two allocations of one server reach each other, even on loopback;
    // an explicit deny list does not.
    let server = Server::start(&["--user", "alice:secret", "--deny-peer", "127.0.0.0/8"]);
    let checks =
        ice_probe::turn_checks::turn(&target(&server), &settings("alice", "secret", false)).await;
    let permission = find(&checks, "permission");
    assert_eq!(permission.status, Status::Fail, "{permission:#?}");
    let explanation = permission.explanation.as_deref().unwrap();
    assert!(explanation.contains("403"), "{explanation}");
    assert!(explanation.contains("peer policy"), "{explanation}");
    assert_eq!(find(&checks, "relay-data").status, Status::Skip);
    assert_eq!(find(&checks, "deallocate").status, Status::Pass);
    assert_eq!(allocations(&server), 0.0);
}

#[tokio::test]
async fn nothing_is_left_allocated_after_a_run() {
    let server = Server::start(&["--user", "alice:secret"]);
    let mut settings = settings("alice", "secret", false);
    settings.packets = 5;
    let checks = ice_probe::turn_checks::turn(&target(&server), &settings).await;
    assert_eq!(find(&checks, "deallocate").status, Status::Pass);
    assert_eq!(allocations(&server), 0.0);
}

#[tokio::test]
async fn a_small_load_passes_without_loss() {
    let server = Server::start(&["--user", "alice:secret"]);
    let load = LoadSettings {
        allocations: 4,
        duration: Duration::from_secs(1),
        rate: 50,
        size: 200,
    };
    let started = std::time::Instant::now();
    let checks =
        ice_probe::load::load(&target(&server), &settings("alice", "secret", false), load).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["load-allocate", "load-relay"]);
    let allocate = &checks[0];
    assert_eq!(allocate.status, Status::Pass, "{allocate:#?}");
    assert!(
        allocate.value.starts_with("4 of 4 allocations in "),
        "{}",
        allocate.value
    );
    let relay = &checks[1];
    assert_eq!(relay.status, Status::Pass, "{relay:#?}");
    assert_eq!(metric(relay, "load_sent_total"), 200.0, "{relay:#?}");
    assert_eq!(metric(relay, "load_received_total"), 200.0, "{relay:#?}");
    assert_eq!(metric(relay, "loss_ratio"), 0.0);
    assert!(
        relay
            .value
            .starts_with("sent 200, received 200 (0 % loss), rtt p50/p95/max ")
    );
    assert_eq!(allocations(&server), 0.0);
}

#[tokio::test]
async fn a_load_beyond_the_quota_fails_allocate_and_releases_what_it_got() {
    let server = Server::start(&["--user", "alice:secret", "--user-quota", "2"]);
    let load = LoadSettings {
        allocations: 3,
        duration: Duration::from_secs(1),
        rate: 10,
        size: 100,
    };
    let checks =
        ice_probe::load::load(&target(&server), &settings("alice", "secret", false), load).await;
    let allocate = &checks[0];
    assert_eq!(allocate.status, Status::Fail, "{allocate:#?}");
    assert!(
        allocate.value.starts_with("2 of 3 allocations"),
        "{}",
        allocate.value
    );
    let explanation = allocate.explanation.as_deref().unwrap();
    assert!(
        explanation.starts_with("1 failed; the first: allocation quota"),
        "{explanation}"
    );
    assert_eq!(checks[1].status, Status::Skip);
    assert_eq!(allocations(&server), 0.0);
}

#[tokio::test]
async fn a_run_cancelled_midway_still_releases_its_allocations() {
    let server = Server::start(&["--user", "alice:secret"]);
    let mut settings = settings("alice", "secret", false);
    // 20 s of relay-data: the timeout cuts it in the middle of the exchange.
    settings.packets = 1_000;
    let target = target(&server);
    let run = ice_probe::turn_checks::turn(&target, &settings);
    let cut = tokio::time::timeout(Duration::from_millis(500), run).await;
    assert!(cut.is_err(), "the run should still be relaying");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while allocations(&server) > 0.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(allocations(&server), 0.0);
}
