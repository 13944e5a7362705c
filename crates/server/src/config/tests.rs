use std::collections::BTreeSet;
use std::path::Path;

use clap::{CommandFactory, Parser};
use icebreaker_wire::credentials::{KeyAlgorithm, LongTermKey};

use super::*;

const SECRET: &str = "0123456789abcdef-one";
const OTHER_SECRET: &str = "0123456789abcdef-two";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

fn flags(args: &[&str]) -> Flags {
    Cli::try_parse_from(std::iter::once("icebreaker").chain(args.iter().copied()))
        .unwrap()
        .flags
}

fn load(text: &str, args: &[&str]) -> Result<Config, ConfigError> {
    Config::load_text(Some((Path::new("test.toml"), text)), &flags(args))
}

/// The message and, for file errors, the line, column and key.
fn file_error(text: &str) -> (usize, usize, Option<String>, String) {
    match load(text, &[]) {
        Err(ConfigError::File {
            line,
            column,
            key,
            reason,
            ..
        }) => (line, column, key, reason),
        other => panic!("expected a file error, got {other:?}"),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn defaults() {
    let config = Config::load(None, &Flags::default()).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen, ["0.0.0.0:3478".parse().unwrap()]);
    assert_eq!(config.realm, "icebreaker");
    assert!(config.users.is_empty() && config.auth_secrets.is_empty());
    assert_eq!((config.relay_ip, config.external_ip), (None, None));
    assert_eq!(config.relay_ports.to_string(), "49152-65535");
    assert!(config.allow_peers.is_empty() && config.deny_peers.is_empty());
    assert_eq!((config.other_address, config.metrics), (None, None));
    assert_eq!(config.threads, None);
    assert!(config.worker_threads().get() >= 1);
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.software, None);
    assert_eq!((config.user_quota, config.total_quota), (10, 10_000));
    assert_eq!((config.max_permissions, config.max_channels), (64, 64));
    assert_eq!(config.max_bandwidth, 0);
    assert_eq!((config.max_lifetime, config.default_lifetime), (3600, 600));
    assert_eq!((config.nonce_lifetime, config.drain_timeout), (600, 30));
    assert!(
        config.tcp_relay,
        "RFC 6062 TCP allocations are granted, as coturn does"
    );
    // An empty file is the defaults too.
    assert_eq!(load("", &[]).unwrap(), Config::default());
}

#[test]
fn flags_override_the_file() {
    let text = format!(
        r#"
        listen = ["127.0.0.1:3478", "[::1]:3478"]
        realm = "from-file"
        users = ["alice:a", "bob:b"]
        auth-secrets = ["{SECRET}"]
        user-quota = 3
        software = "from-file"
        "#
    );
    let config = load(&text, &[]).unwrap();
    assert_eq!(config.listen.len(), 2);
    assert_eq!(config.realm, "from-file");
    assert_eq!(config.users.len(), 2);
    assert_eq!(config.user_quota, 3);

    let config = load(
        &text,
        &[
            "--realm",
            "from-flag",
            "--listen",
            "10.0.0.1:1",
            "--user",
            "carol:c",
        ],
    )
    .unwrap();
    assert_eq!(config.realm, "from-flag");
    // A repeatable flag replaces the whole list.
    assert_eq!(config.listen, ["10.0.0.1:1".parse().unwrap()]);
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].name, "carol");
    // Keys without a flag keep the file's values.
    assert_eq!(config.auth_secrets.len(), 1);
    assert_eq!(config.user_quota, 3);
    assert_eq!(config.software.as_deref(), Some("from-file"));
}

#[test]
fn every_key_has_a_flag() {
    let config = Config::load(
        None,
        &flags(&[
            "--listen",
            "127.0.0.1:3478",
            "--listen",
            "[::1]:3479",
            "--realm",
            "example.org",
            "--user",
            "alice:secret",
            "--user",
            "bob:0x000102030405060708090a0b0c0d0e0f",
            "--auth-secret",
            SECRET,
            "--auth-secret",
            OTHER_SECRET,
            "--relay-ip",
            "10.0.0.5",
            "--external-ip",
            "203.0.113.10",
            "--relay-ports",
            "50000-50099",
            "--allow-peer",
            "127.0.0.0/8",
            "--allow-peer",
            "::1/128",
            "--deny-peer",
            "203.0.113.0/24",
            "--other-address",
            "203.0.113.11:3479",
            "--metrics",
            "127.0.0.1:9641",
            "--threads",
            "3",
            "--log-level",
            "debug",
            "--software",
            "icebreaker",
            "--user-quota",
            "2",
            "--total-quota",
            "20",
            "--max-permissions",
            "5",
            "--max-channels",
            "6",
            "--max-bandwidth",
            "125000",
            "--max-lifetime",
            "1800",
            "--default-lifetime",
            "300",
            "--nonce-lifetime",
            "120",
            "--drain-timeout",
            "7",
            "--rfc5766-channels",
            "--tls-listen",
            "127.0.0.1:5349",
            "--tls-listen",
            "127.0.0.1:443",
            "--tls-cert",
            "/etc/icebreaker/cert.pem",
            "--tls-key",
            "/etc/icebreaker/key.pem",
            "--dtls-listen",
            "127.0.0.1:5350",
            "--dtls-listen",
            "[::1]:5350",
            "--proxy-protocol",
            "--alternate-server",
            "203.0.113.20:3478",
            "--max-connections",
            "50",
            "--idle-timeout",
            "30",
            "--frame-timeout",
            "4",
            "--max-frame",
            "2048",
            "--no-tcp-relay",
        ]),
    )
    .unwrap();
    assert_eq!(
        config.listen,
        [
            "127.0.0.1:3478".parse().unwrap(),
            "[::1]:3479".parse().unwrap()
        ]
    );
    assert_eq!(config.realm, "example.org");
    assert_eq!(config.users.len(), 2);
    assert_eq!(
        config.users[0].key(KeyAlgorithm::Sha256, "example.org"),
        Some(LongTermKey::new(
            KeyAlgorithm::Sha256,
            "alice",
            "example.org",
            "secret"
        ))
    );
    let key: [u8; 16] = core::array::from_fn(|i| i as u8);
    assert!(config.users[1].credential == UserCredential::Md5Key(key));
    assert_eq!(config.auth_secrets.len(), 2);
    assert_eq!(config.auth_secrets[1].as_bytes(), OTHER_SECRET.as_bytes());
    assert_eq!(config.relay_ip, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(config.external_ip, Some("203.0.113.10".parse().unwrap()));
    assert_eq!(config.relay_ports, PortRange::new(50000, 50099).unwrap());
    assert_eq!(config.allow_peers, [net("127.0.0.0/8"), net("::1/128")]);
    assert_eq!(config.deny_peers, [net("203.0.113.0/24")]);
    assert_eq!(
        config.other_address,
        Some("203.0.113.11:3479".parse().unwrap())
    );
    assert_eq!(config.metrics, Some("127.0.0.1:9641".parse().unwrap()));
    assert_eq!(config.threads.map(NonZeroUsize::get), Some(3));
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.software.as_deref(), Some("icebreaker"));
    assert_eq!((config.user_quota, config.total_quota), (2, 20));
    assert_eq!((config.max_permissions, config.max_channels), (5, 6));
    assert_eq!(config.max_bandwidth, 125_000);
    assert_eq!((config.max_lifetime, config.default_lifetime), (1800, 300));
    assert_eq!((config.nonce_lifetime, config.drain_timeout), (120, 7));
    assert!(config.rfc5766_channels);
    assert_eq!(config.tls_listen.len(), 2);
    assert_eq!(config.effective_tls_listen(), config.tls_listen);
    let dtls: Vec<SocketAddr> = vec![
        "127.0.0.1:5350".parse().unwrap(),
        "[::1]:5350".parse().unwrap(),
    ];
    assert_eq!(config.dtls_listen.as_deref(), Some(&dtls[..]));
    assert_eq!(config.effective_dtls_listen(), dtls);
    assert_eq!(
        config.tls_cert.as_deref(),
        Some(Path::new("/etc/icebreaker/cert.pem"))
    );
    assert_eq!(
        config.tls_key.as_deref(),
        Some(Path::new("/etc/icebreaker/key.pem"))
    );
    assert!(config.proxy_protocol);
    assert_eq!(
        config.alternate_servers,
        ["203.0.113.20:3478".parse().unwrap()]
    );
    assert_eq!(config.max_connections, 50);
    assert_eq!((config.idle_timeout, config.frame_timeout), (30, 4));
    assert!(!config.tcp_relay);
    assert_eq!(config.max_frame, 2048);
}

#[test]
fn tls_listens_on_5349_by_default_once_a_certificate_is_set() {
    let config = load("", &[]).unwrap();
    assert!(
        config.effective_tls_listen().is_empty(),
        "no TLS by default"
    );
    let config = load(
        "listen = [\"127.0.0.1:3478\", \"[::1]:3478\"]\ntls-cert = \"c.pem\"\ntls-key = \"k.pem\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        config.effective_tls_listen(),
        [
            "127.0.0.1:5349".parse::<SocketAddr>().unwrap(),
            "[::1]:5349".parse().unwrap()
        ]
    );
}

#[test]
fn dtls_listens_where_tls_does_unless_told_otherwise() {
    let config = load("", &[]).unwrap();
    assert_eq!(config.dtls_listen, None);
    assert!(
        config.effective_dtls_listen().is_empty(),
        "no DTLS without a certificate"
    );

    let certificate = "listen = [\"127.0.0.1:3478\"]\ntls-cert = \"c.pem\"\ntls-key = \"k.pem\"\n";
    let config = load(certificate, &[]).unwrap();
    assert_eq!(
        config.effective_dtls_listen(),
        ["127.0.0.1:5349".parse::<SocketAddr>().unwrap()]
    );
    let config = load(certificate, &["--tls-listen", "127.0.0.1:443"]).unwrap();
    assert_eq!(
        config.effective_dtls_listen(),
        ["127.0.0.1:443".parse::<SocketAddr>().unwrap()],
        "DTLS follows the TLS addresses"
    );

    // An empty list, in the file or as `--dtls-listen none`, turns it off.
    let off = load(&format!("{certificate}dtls-listen = []\n"), &[]).unwrap();
    assert_eq!(off.dtls_listen, Some(Vec::new()));
    assert!(off.effective_dtls_listen().is_empty());
    let off = load(certificate, &["--dtls-listen", "none"]).unwrap();
    assert_eq!(off.dtls_listen, Some(Vec::new()));
    assert!(off.effective_dtls_listen().is_empty());

    let explicit = load(
        &format!("{certificate}dtls-listen = [\"127.0.0.1:5350\"]\n"),
        &[],
    )
    .unwrap();
    assert_eq!(
        explicit.effective_dtls_listen(),
        ["127.0.0.1:5350".parse::<SocketAddr>().unwrap()]
    );
    // An empty list needs no certificate.
    assert!(load("dtls-listen = []", &[]).is_ok());
}

/// Every key `to_toml` prints, commented out or not.
fn printed_keys() -> BTreeSet<String> {
    Config::default()
        .to_toml()
        .lines()
        .filter_map(|line| {
            let line = line.trim_start_matches("# ");
            let end = line.find([' ', '='])?;
            let key = &line[..end];
            (!key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .then(|| key.to_owned())
        })
        .collect()
}

#[test]
fn keys_and_flags_match() {
    let keys = printed_keys();
    assert_eq!(keys.len(), 35, "{keys:?}");
    let flags: BTreeSet<String> = Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = keys.iter().map(|k| flag_name(k).to_owned()).collect();
    assert_eq!(flags, expected);
}

#[test]
fn unknown_keys_are_errors() {
    let (line, column, key, reason) = file_error("realm = \"x\"\nlisten-on = \"1.2.3.4:1\"\n");
    assert_eq!((line, column, key), (2, 1, None));
    assert!(reason.contains("unknown field `listen-on`"), "{reason}");

    // Nested tables are not part of the format: their name is an unknown key.
    let (line, _, _, reason) = file_error("\n\n[limits]\nuser-quota = 3\n");
    assert_eq!(line, 3);
    assert!(reason.contains("unknown field `limits`"), "{reason}");

    let error = load("realm = \"x\"\nlisten-on = 1\n", &[]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("test.toml:2:1: unknown field `listen-on`"),
        "{error}"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let (line, column, key, _) = file_error("realm = \"x\"\nuser-quota = = 3\n");
    assert_eq!((line, key), (2, None));
    assert!(column > 1);
    // Columns count characters, not bytes.
    let (line, column, _, _) = file_error("realm = \"ééé\" x\n");
    assert_eq!((line, column), (1, 15));
}

#[test]
fn bad_values_name_their_key() {
    let (line, column, key, reason) =
        file_error("realm = \"x\"\nallow-peers = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n");
    assert_eq!((line, column, key.as_deref()), (2, 30, Some("allow-peers")));
    assert!(!reason.is_empty());

    for (text, key) in [
        ("relay-ports = \"80-90\"", "relay-ports"),
        ("relay-ports = \"60000-50000\"", "relay-ports"),
        ("relay-ports = \"50000\"", "relay-ports"),
        ("log-level = \"verbose\"", "log-level"),
        ("deny-peers = [\"not-a-net\"]", "deny-peers"),
        ("listen = [\"1.2.3.4\"]", "listen"),
        ("users = [\"nopassword\"]", "users"),
        ("auth-secrets = [\"short\"]", "auth-secrets"),
        (
            "auth-secrets = [\"CHANGE-ME: openssl rand -base64 32\"]",
            "auth-secrets",
        ),
        ("threads = 0", "threads"),
        ("user-quota = -1", "user-quota"),
        ("user-quota = \"ten\"", "user-quota"),
        ("dtls-listen = [\"127.0.0.1\"]", "dtls-listen"),
        ("dtls-listen = \"127.0.0.1:5349\"", "dtls-listen"),
    ] {
        let (line, _, found, reason) = file_error(&format!("\n{text}\n"));
        assert_eq!((line, found.as_deref()), (2, Some(key)), "{text}: {reason}");
    }
    // A password in the wrong place is not echoed.
    let (_, _, key, reason) = file_error("users = \"alice:hunter2\"");
    assert_eq!(
        (key.as_deref(), reason.as_str()),
        (Some("users"), "expected an array of strings")
    );
    let (_, _, _, reason) = file_error("log-level = \"verbose\"");
    assert!(reason.contains("`trace`"), "{reason}");
}

#[test]
fn bad_flags_are_refused_by_name() {
    for args in [
        &["--relay-ports", "80-90"][..],
        &["--log-level", "verbose"],
        &["--allow-peer", "10.0.0.0/33"],
        &["--deny-peer", "10.0.0.1"],
        &["--auth-secret", "short"],
        &["--threads", "0"],
        &["--dtls-listen", "127.0.0.1"],
    ] {
        let error = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .err()
            .unwrap_or_else(|| panic!("{args:?} accepted"))
            .to_string();
        assert!(error.contains(args[0]), "{args:?}: {error}");
    }
}

#[test]
fn rules_across_values() {
    let check = |text: &str, args: &[&str], expected: &str| {
        let error = load(text, args).unwrap_err().to_string();
        assert_eq!(error, expected);
    };
    check(
        "realm = \"x\"\nmax-lifetime = 7200\n",
        &[],
        "test.toml:2:16: max-lifetime: must be 1 to 3600 seconds (RFC 8656 §7.2)",
    );
    check(
        "",
        &["--max-lifetime", "7200"],
        "--max-lifetime: must be 1 to 3600 seconds (RFC 8656 §7.2)",
    );
    // The default default-lifetime (600) against a lower max-lifetime from a flag.
    check(
        "",
        &["--max-lifetime", "300"],
        "default-lifetime: must be 1 to max-lifetime (300) seconds",
    );
    check(
        "",
        &["--user-quota", "0"],
        "--user-quota: must be at least 1",
    );
    check(
        "max-channels = 5000",
        &[],
        "test.toml:1:16: max-channels: at most 4096: there are no more channel numbers",
    );
    check(
        "listen = []",
        &[],
        "test.toml:1:10: listen: at least one address is needed",
    );
    check(
        "realm = \"\"",
        &[],
        "test.toml:1:9: realm: must have 1 to 127 characters",
    );
    check(
        "users = [\"a:1\", \"a:2\"]",
        &[],
        "test.toml:1:9: users: user `a` appears twice",
    );
    check(
        "",
        &["--external-ip", "0.0.0.0"],
        "--external-ip: must be one address, not the unspecified address",
    );
    check(
        "tls-cert = \"c.pem\"",
        &[],
        "tls-key: tls-cert needs tls-key",
    );
    check(
        "",
        &["--tls-key", "k.pem"],
        "tls-cert: tls-key needs tls-cert",
    );
    check(
        "",
        &["--tls-listen", "127.0.0.1:5349"],
        "--tls-listen: needs tls-cert and tls-key",
    );
    check(
        "",
        &["--dtls-listen", "127.0.0.1:5349"],
        "--dtls-listen: needs tls-cert and tls-key",
    );
    check(
        "dtls-listen = [\"127.0.0.1:5349\"]",
        &[],
        "test.toml:1:15: dtls-listen: needs tls-cert and tls-key",
    );
    check(
        "",
        &["--max-frame", "100"],
        "--max-frame: must be 1024 to 65555 bytes: room for any TURN request, and no more than a length field can say",
    );
    check(
        "",
        &["--frame-timeout", "0"],
        "--frame-timeout: must be at least 1",
    );
    check(
        "",
        &["--alternate-server", "0.0.0.0:3478"],
        "--alternate-server: 0.0.0.0:3478 must be one address with a port",
    );
    // A valid flag fixes an invalid file value.
    assert!(
        load(
            "max-lifetime = 7200",
            &["--max-lifetime", "60", "--default-lifetime", "60"]
        )
        .is_ok()
    );
}

#[test]
fn to_toml_redacts_and_loads_back() {
    let config = Config::load(
        None,
        &flags(&[
            "--user",
            "alice:hunter2-password",
            "--user",
            "bob:0x000102030405060708090a0b0c0d0e0f",
            "--auth-secret",
            SECRET,
            "--external-ip",
            "203.0.113.10",
            "--allow-peer",
            "127.0.0.0/8",
            "--software",
            "quote \" and \\ backslash",
            "--threads",
            "2",
            "--max-bandwidth",
            "1000",
        ]),
    )
    .unwrap();
    let text = config.to_toml();
    assert!(
        !text.contains("hunter2") && !text.contains("0001020304"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
    assert!(
        text.contains("users = [\"alice:<redacted>\", \"bob:<redacted>\"]"),
        "{text}"
    );
    assert!(text.contains("auth-secrets = [\"<redacted>\"]"), "{text}");
    assert!(text.contains("# relay-ip is not set"), "{text}");
    assert!(text.contains("# dtls-listen is not set"), "{text}");

    // With the secret put back, the printed configuration is the configuration.
    let reloaded = load(
        &text.replace("\"<redacted>\"", &format!("\"{SECRET}\"")),
        &[],
    )
    .unwrap();
    assert_eq!(reloaded.to_toml(), text);
    assert_eq!(reloaded.software, config.software);
    assert_eq!(reloaded.auth_secrets, config.auth_secrets);
    assert_eq!(
        Config::default().to_toml(),
        load(&Config::default().to_toml(), &[]).unwrap().to_toml()
    );
    // DTLS turned off stays off through a print and a load.
    let off = load("dtls-listen = []", &[]).unwrap();
    assert!(off.to_toml().contains("dtls-listen = []\n"));
    assert_eq!(load(&off.to_toml(), &[]).unwrap(), off);
}

#[test]
fn warnings() {
    assert_eq!(Config::default().warnings().len(), 1);
    let config = Config::load(None, &flags(&["--auth-secret", SECRET])).unwrap();
    assert!(config.warnings().is_empty());
    let config = Config::load(
        None,
        &flags(&["--auth-secret", SECRET, "--allow-peer", "::/0"]),
    )
    .unwrap();
    assert!(config.warnings()[0].contains("::/0"));
}

#[test]
fn tcp_relay_is_a_key_and_a_negative_flag() {
    assert!(!load("tcp-relay = false", &[]).unwrap().tcp_relay);
    assert!(load("tcp-relay = true", &[]).unwrap().tcp_relay);
    // The flag only turns it off, over the file too.
    assert!(
        !load("tcp-relay = true", &["--no-tcp-relay"])
            .unwrap()
            .tcp_relay
    );
    assert!(!load("", &["--no-tcp-relay"]).unwrap().tcp_relay);
    let (_, _, key, _) = file_error("tcp-relay = \"no\"");
    assert_eq!(key.as_deref(), Some("tcp-relay"));
    // Printed, it loads back.
    let off = load("tcp-relay = false", &[]).unwrap();
    assert!(off.to_toml().contains("tcp-relay = false\n"));
    assert_eq!(load(&off.to_toml(), &[]).unwrap(), off);
}

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/icebreaker.example.toml"
);

#[test]
fn example_config() {
    let path = Path::new(EXAMPLE);
    // The example's secret is a placeholder that must be replaced before use.
    let error = Config::load(Some(path), &Flags::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("auth-secrets: this is the example's placeholder"),
        "{error}"
    );

    let text = std::fs::read_to_string(path).unwrap();
    let placeholder = format!("\"{SECRET_PLACEHOLDER}: openssl rand -base64 32\"");
    assert!(text.contains(&placeholder));
    let config = load(&text.replace(&placeholder, &format!("\"{SECRET}\"")), &[]).unwrap();
    assert_eq!(config.realm, "turn.example.com");
    assert_eq!(config.external_ip, Some("203.0.113.10".parse().unwrap()));
    assert_eq!(config.relay_ports, PortRange::new(50000, 59999).unwrap());
    assert_eq!(config.metrics, Some("127.0.0.1:9641".parse().unwrap()));
    assert_eq!(config.auth_secrets.len(), 1);
    assert!(config.warnings().is_empty());

    // The example documents every key, commented out or not.
    for key in printed_keys() {
        assert!(
            text.lines().any(|line| line
                .trim_start_matches("# ")
                .starts_with(&format!("{key} ="))),
            "the example does not show `{key}`"
        );
    }
}

#[test]
fn line_columns() {
    assert_eq!(line_column("abc", 0), (1, 1));
    assert_eq!(line_column("a\nbc", 3), (2, 2));
    assert_eq!(line_column("é\né", 5), (2, 2));
    // Inside a character: its start.
    assert_eq!(line_column("é\né", 4), (2, 1));
    assert_eq!(line_column("é", 1), (1, 1));
    assert_eq!(line_column("ab", 99), (1, 3));
}
