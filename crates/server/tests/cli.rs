//! The `icebreaker` binary's subcommands that need no network: `check-config` and
//! `credentials`, run as an operator would run them.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use icebreaker_wire::credentials::{RestPassword, RestUsername};

const SECRET: &str = "0123456789abcdef-cli-secret";

fn icebreaker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icebreaker"))
        .args(args)
        .output()
        .expect("run icebreaker")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Writes `text` to a file of its own under the target directory.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn check_config_prints_the_effective_config_redacted() {
    let path = config_file(
        "good",
        &format!(
            "realm = \"example.org\"\nusers = [\"alice:hunter2-password\"]\n\
             auth-secrets = [\"{SECRET}\"]\nrelay-ports = \"50000-50999\"\n"
        ),
    );
    let output = icebreaker(&[
        "check-config",
        path.to_str().unwrap(),
        "--realm",
        "from-flag.org",
        "--max-lifetime",
        "1200",
    ]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(out.contains("realm = \"from-flag.org\""), "{out}");
    assert!(out.contains("relay-ports = \"50000-50999\""), "{out}");
    assert!(out.contains("max-lifetime = 1200"), "{out}");
    assert!(out.contains("users = [\"alice:<redacted>\"]"), "{out}");
    assert!(out.contains("auth-secrets = [\"<redacted>\"]"), "{out}");
    assert!(!out.contains("hunter2") && !out.contains(SECRET), "{out}");
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

#[test]
fn check_config_warns_about_a_server_nobody_can_use() {
    let path = config_file("no-credentials", "realm = \"example.org\"\n");
    let output = icebreaker(&["check-config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stderr(&output).starts_with("warning: no users and no auth-secrets"));
}

#[test]
fn check_config_errors_give_file_line_column() {
    let path = config_file(
        "unknown-key",
        "realm = \"x\"\n\nrelay_ports = \"50000-50999\"\n",
    );
    let output = icebreaker(&["check-config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let expected = format!("error: {}:3:1: unknown field `relay_ports`", path.display());
    assert!(
        stderr(&output).starts_with(&expected),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());

    let path = config_file("bad-cidr", "allow-peers = [\"10.0.0.0/40\"]\n");
    let output = icebreaker(&["check-config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let expected = format!("error: {}:1:16: allow-peers: ", path.display());
    assert!(
        stderr(&output).starts_with(&expected),
        "{}",
        stderr(&output)
    );

    // A flag's value is named by its flag.
    let path = config_file("empty", "");
    let output = icebreaker(&[
        "check-config",
        path.to_str().unwrap(),
        "--max-lifetime",
        "9000",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with("error: --max-lifetime: must be 1 to 3600"),
        "{}",
        stderr(&output)
    );

    let output = icebreaker(&["check-config", "/nonexistent/icebreaker.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("error: /nonexistent/icebreaker.toml: "));
}

#[test]
fn check_config_refuses_the_example_until_its_secret_is_replaced() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/icebreaker.example.toml"
    );
    let output = icebreaker(&["check-config", example]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(": auth-secrets: this is the example's placeholder"),
        "{}",
        stderr(&output)
    );
}

fn check_credentials(username: &str, credential: &str, ttl: u64, before: u64, after: u64) {
    let parsed = RestUsername::parse(username).unwrap();
    assert_eq!(parsed.user, "alice");
    assert!(
        (before + ttl..=after + ttl).contains(&parsed.expiry),
        "{username}"
    );
    assert_eq!(
        credential,
        RestPassword::new(SECRET.as_bytes(), username).as_str()
    );
}

#[test]
fn credentials_json() {
    let before = now();
    let output = icebreaker(&[
        "credentials",
        "--secret",
        SECRET,
        "--user",
        "alice",
        "--ttl",
        "3600",
        "--uri",
        "turn:turn.example.com:3478?transport=udp",
        "--uri",
        "turns:turn.example.com:443",
        "--json",
    ]);
    let after = now();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let server = &json["iceServers"][0];
    assert_eq!(
        server["urls"],
        serde_json::json!([
            "turn:turn.example.com:3478?transport=udp",
            "turns:turn.example.com:443"
        ])
    );
    check_credentials(
        server["username"].as_str().unwrap(),
        server["credential"].as_str().unwrap(),
        3600,
        before,
        after,
    );
    assert!(stderr(&output).is_empty());
}

#[test]
fn credentials_text() {
    let before = now();
    let output = icebreaker(&["credentials", "--secret", SECRET, "--user", "alice"]);
    let after = now();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let field = |name: &str| {
        out.lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .to_owned()
    };
    let username = field("username:");
    let credential = field("credential:");
    check_credentials(&username, &credential, 86_400, before, after);

    // The snippet follows the text and carries the same credentials and the default URI.
    let json: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let server = &json["iceServers"][0];
    assert_eq!(server["urls"], serde_json::json!(["turn:127.0.0.1:3478"]));
    assert_eq!(server["username"], username.as_str());
    assert_eq!(server["credential"], credential.as_str());
}

#[test]
fn credentials_warn_about_a_secret_the_server_refuses() {
    let output = icebreaker(&[
        "credentials",
        "--secret",
        "short",
        "--user",
        "bob",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stderr(&output).starts_with("warning: an Icebreaker server refuses this secret"));

    let output = icebreaker(&[
        "credentials",
        "--secret",
        SECRET,
        "--user",
        "bob",
        "--ttl",
        "0",
    ]);
    assert_eq!(output.status.code(), Some(2));
}
