//! Tests of the table, JSON and Prometheus output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::report::Finding;

const STUN: &str = "stun:stun.example.com:3478";
const TURN: &str = "turn:turn.example.com:3478?transport=udp";

fn finding(target: &str, severity: Severity, check: &str, title: &str) -> Finding {
    Finding {
        target: target.into(),
        severity,
        check: check.into(),
        title: title.into(),
        detail: "Send to 127.0.0.1:9 was relayed. Refuse loopback, private and link-local \
                     peers (denied-peer-ip in coturn; icebreaker refuses them by default)."
            .into(),
    }
}

fn sample() -> Report {
    let mut report = Report::default();
    report.push(
        Check::pass(
            STUN,
            "binding",
            "0.21 / 0.25 / 0.40 ms (min / mean / p95), 0 % loss",
        )
        .with_metric("rtt_p95_seconds", 0.0004)
        .with_metric("loss_ratio", 0.0),
    );
    report.push(Check::pass(STUN, "mapped-address", "203.0.113.7:54012"));
    report.push(Check::skip(
        STUN,
        "nat-mapping",
        "the server sent no OTHER-ADDRESS, so it does not support RFC 5780 NAT behaviour \
             discovery (coturn needs a second IP address for it: --alt-listening-ip)",
    ));
    report.push(
        Check::fail(
            TURN,
            "allocate",
            "401 Unauthorized",
            "the server refused the credentials: check --user and --password, and that \
                 the realm the server announced (icebreaker) is the one the user belongs to",
        )
        .with_metric("rtt_p95_seconds", 0.0012),
    );
    report.push(Check::pass(
        TURN,
        "audit-relay-loopback",
        "relayed to 127.0.0.1:9",
    ));
    report.findings.push(finding(
        TURN,
        Severity::Critical,
        "audit-relay-loopback",
        "Relays to the server's own loopback addresses",
    ));
    report.findings.push(finding(
        TURN,
        Severity::Low,
        "audit-software",
        "SOFTWARE discloses the server version",
    ));
    report.finish(2.3);
    report
}

#[test]
fn the_sample_table_reads_as_documented() {
    let text = table(&sample(), false);
    println!("{text}");
    let expected = "\
stun:stun.example.com:3478
  PASS  binding               0.21 / 0.25 / 0.40 ms (min / mean / p95), 0 % loss
  PASS  mapped-address        203.0.113.7:54012
  SKIP  nat-mapping           the server sent no OTHER-ADDRESS, so it does not support RFC 5780 NAT
                              behaviour discovery (coturn needs a second IP address for it:
                              --alt-listening-ip)

turn:turn.example.com:3478?transport=udp
  FAIL  allocate              401 Unauthorized
                              the server refused the credentials: check --user and --password, and
                              that the realm the server announced (icebreaker) is the one the user
                              belongs to
  PASS  audit-relay-loopback  relayed to 127.0.0.1:9

Findings
  CRITICAL  Relays to the server's own loopback addresses
            turn:turn.example.com:3478?transport=udp (audit-relay-loopback)
            Send to 127.0.0.1:9 was relayed. Refuse loopback, private and link-local peers
            (denied-peer-ip in coturn; icebreaker refuses them by default).

  LOW       SOFTWARE discloses the server version
            turn:turn.example.com:3478?transport=udp (audit-software)
            Send to 127.0.0.1:9 was relayed. Refuse loopback, private and link-local peers
            (denied-peer-ip in coturn; icebreaker refuses them by default).

3 passed, 1 failed, 1 skipped; 2 findings (1 critical, 1 low) in 2.3 s
";
    assert_eq!(text, expected);
}

#[test]
fn columns_align_on_chars_across_targets() {
    let mut report = Report::default();
    report.push(Check::pass("stun:a", "b", "x"));
    report.push(Check::pass("stun:a", "déjà-vu-ü", "y"));
    report.push(Check::fail("stun:b", "a-much-longer-name", "z", "w"));
    let text = table(&report, false);
    let columns: Vec<usize> = text
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.chars().count() - 1)
        .collect();
    // Every row and the explanation under it end with their one-char value at the same
    // char column.
    assert_eq!(columns.len(), 4, "{text}");
    assert!(columns.iter().all(|&c| c == columns[0]), "{text}");
    assert_eq!(columns[0], 2 + 4 + 2 + "a-much-longer-name".len() + 2);
    assert!(text.lines().all(|l| l == l.trim_end()), "trailing spaces");
}

#[test]
fn long_text_wraps_on_spaces_without_breaking_words() {
    let word = "x".repeat(120);
    let explanation = format!(
        "{} {word} {}",
        "the quick brown fox jumps over the lazy dog".repeat(4),
        "and then some more words to wrap ".repeat(4)
    );
    let mut report = Report::default();
    report.push(Check::fail("stun:a", "binding", "timeout", &explanation));
    let text = table(&report, false);
    let lines: Vec<&str> = text.lines().collect();
    let indent = 2 + 4 + 2 + "binding".len() + 2;
    let wrapped: Vec<&str> = lines[2..]
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect();
    assert!(wrapped.len() > 3, "{text}");
    for line in &wrapped {
        assert!(line.starts_with(&" ".repeat(indent)), "{line:?}");
        assert!(!line[indent..].starts_with(' '), "{line:?}");
        if !line.contains(&word) {
            assert!(line.chars().count() <= LINE_WIDTH, "{line:?}");
        }
    }
    assert!(
        wrapped.iter().any(|l| l.trim() == word),
        "long word kept whole"
    );
    let words: Vec<&str> = wrapped.iter().flat_map(|l| l.split_whitespace()).collect();
    let original: Vec<&str> = explanation.split_whitespace().collect();
    assert_eq!(words, original);
}

#[test]
fn wrap_keeps_fitting_text_and_gives_nothing_for_empty_text() {
    assert_eq!(wrap("a  b", 10), ["a  b"]);
    assert!(wrap("", 10).is_empty());
    assert!(wrap("   ", 10).is_empty());
    assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
    assert_eq!(wrap("a bbbbbbbbbb c", 4), ["a", "bbbbbbbbbb", "c"]);
    assert_eq!(wrap("é é é", 3), ["é é", "é"]);
}

#[test]
fn a_pass_shows_no_explanation_and_a_skip_puts_its_reason_on_the_row() {
    let mut check = Check::pass("stun:a", "binding", "1 ms");
    check.explanation = Some("hidden".into());
    let mut report = Report::default();
    report.push(check);
    report.push(Check::skip("stun:a", "nat-mapping", "no OTHER-ADDRESS"));
    report.push(Check::pass("stun:a", "empty", ""));
    let text = table(&report, false);
    assert!(!text.contains("hidden"));
    assert!(
        text.contains("  SKIP  nat-mapping  no OTHER-ADDRESS\n"),
        "{text}"
    );
    assert!(text.contains("  PASS  empty\n"), "{text}");
    assert!(
        text.ends_with("2 passed, 0 failed, 1 skipped in 0.0 s\n"),
        "{text}"
    );
}

#[test]
fn colour_only_when_asked() {
    let report = sample();
    let plain = table(&report, false);
    assert!(!plain.contains('\x1b'));
    let coloured = table(&report, true);
    for expected in [
        "\x1b[1mstun:stun.example.com:3478\x1b[0m\n",
        "  \x1b[32mPASS\x1b[0m  binding ",
        "  \x1b[31mFAIL\x1b[0m  allocate ",
        "  \x1b[33mSKIP\x1b[0m  nat-mapping ",
        "\x1b[1mFindings\x1b[0m\n",
        "  \x1b[1;31mCRITICAL\x1b[0m  Relays",
        "  \x1b[36mLOW\x1b[0m       SOFTWARE",
    ] {
        assert!(coloured.contains(expected), "{expected:?} in\n{coloured}");
    }
    assert_eq!(strip_sgr(&coloured), plain);
}

#[test]
fn every_severity_has_its_tag() {
    let mut report = Report::default();
    for severity in Severity::ALL {
        report
            .findings
            .push(finding("turn:a", severity, "audit", "t"));
    }
    let coloured = table(&report, true);
    for tag in [
        "\x1b[1;31mCRITICAL\x1b[0m",
        "\x1b[31mHIGH\x1b[0m    ",
        "\x1b[33mMEDIUM\x1b[0m  ",
        "\x1b[36mLOW\x1b[0m     ",
        "  INFO      t\n",
    ] {
        assert!(coloured.contains(tag), "{tag:?} in\n{coloured}");
    }
    assert!(coloured.ends_with(
        "0 passed, 0 failed, 0 skipped; 5 findings \
             (1 critical, 1 high, 1 medium, 1 low, 1 info) in 0.0 s\n"
    ));
}

#[test]
fn hostile_server_text_cannot_reach_the_terminal() {
    let hostile =
        "coturn\x1b]0;owned\x07\x1b[2J\u{9b}31m\rPASS\n  PASS  forged \u{202e}gnp.exe\t\x7f";
    let mut report = Report::default();
    report.push(Check::fail(hostile, hostile, hostile, hostile));
    report.findings.push(Finding {
        target: hostile.into(),
        severity: Severity::Low,
        check: hostile.into(),
        title: hostile.into(),
        detail: hostile.into(),
    });
    for colour in [false, true] {
        let text = table(&report, colour);
        let text = if colour { strip_sgr(&text) } else { text };
        for bad in ['\x1b', '\x07', '\u{9b}', '\r', '\t', '\x7f', '\u{202e}'] {
            assert!(!text.contains(bad), "{bad:?} in {text:?}");
        }
        assert!(!text.contains("\n  PASS  forged"), "{text}");
        assert!(text.contains(r"coturn\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\rPASS\n"));
        assert!(text.contains(r"\u{202e}gnp.exe\t\u{7f}"));
    }
    assert_eq!(clean("plain ünïcode 日本"), "plain ünïcode 日本");
    assert!(matches!(clean("plain"), Cow::Borrowed(_)));
}

#[test]
fn summary_counts_and_durations() {
    let mut report = Report::default();
    report.push(Check::pass("turn:a", "audit-software", ""));
    report.duration_seconds = 0.042;
    assert_eq!(
        summary(&report),
        "1 passed, 0 failed, 0 skipped; 0 findings in 0.04 s"
    );
    report
        .findings
        .push(finding("turn:a", Severity::Medium, "audit", "t"));
    report.duration_seconds = 12.345;
    assert_eq!(
        summary(&report),
        "1 passed, 0 failed, 0 skipped; 1 finding (1 medium) in 12.3 s"
    );
    assert_eq!(
        table(&Report::default(), false),
        "0 passed, 0 failed, 0 skipped in 0.0 s\n"
    );
}

#[test]
fn json_is_the_report_with_passed() {
    let report = sample();
    let text = json(&report);
    assert!(text.starts_with("{\n  \"passed\": false,\n"), "{text}");
    assert!(!text.ends_with('\n'));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["passed"], false);
    assert_eq!(value["duration_seconds"], 2.3);
    let checks = value["checks"].as_array().unwrap();
    assert_eq!(checks.len(), report.checks.len());
    assert_eq!(checks[0]["target"], STUN);
    assert_eq!(checks[0]["status"], "pass");
    assert_eq!(checks[0]["metrics"][0]["name"], "rtt_p95_seconds");
    assert_eq!(checks[0]["metrics"][0]["value"], 0.0004);
    assert!(checks[0].get("explanation").is_none());
    assert_eq!(checks[2]["status"], "skip");
    assert_eq!(
        checks[3]["explanation"],
        report.checks[3].explanation.as_deref().unwrap()
    );
    assert_eq!(value["findings"][0]["severity"], "critical");
    assert_eq!(value["findings"][1]["check"], "audit-software");
    // The rest is exactly serde's view of the Report.
    let mut rest = value.as_object().unwrap().clone();
    rest.remove("passed");
    assert_eq!(
        serde_json::Value::Object(rest),
        serde_json::to_value(&report).unwrap()
    );

    let mut report = Report::default();
    report.push(Check::pass("stun:a", "x\"\n\u{1b}", "").with_metric("nan", f64::NAN));
    let value: serde_json::Value = serde_json::from_str(&json(&report)).unwrap();
    assert_eq!(value["passed"], true);
    assert_eq!(value["checks"][0]["name"], "x\"\n\u{1b}");
    assert!(value["checks"][0]["metrics"][0]["value"].is_null());
}

#[test]
fn the_sample_prometheus_output_reads_as_documented() {
    let text = prometheus(&sample(), 1_717_171_717.5);
    println!("{text}");
    let expected = r#"# HELP ice_probe_success Whether the last ice-probe run passed: no failed check and no finding above info.
# TYPE ice_probe_success gauge
ice_probe_success 0
# HELP ice_probe_duration_seconds How long the last ice-probe run took.
# TYPE ice_probe_duration_seconds gauge
ice_probe_duration_seconds 2.3
# HELP ice_probe_last_run_timestamp_seconds When the last ice-probe run ended, in seconds since the Unix epoch.
# TYPE ice_probe_last_run_timestamp_seconds gauge
ice_probe_last_run_timestamp_seconds 1717171717.5
# HELP ice_probe_check_success Whether an ice-probe check passed (1) or failed (0); skipped checks are absent.
# TYPE ice_probe_check_success gauge
ice_probe_check_success{target="stun:stun.example.com:3478",check="binding"} 1
ice_probe_check_success{target="stun:stun.example.com:3478",check="mapped-address"} 1
ice_probe_check_success{target="turn:turn.example.com:3478?transport=udp",check="allocate"} 0
ice_probe_check_success{target="turn:turn.example.com:3478?transport=udp",check="audit-relay-loopback"} 1
# HELP ice_probe_findings Findings of the ice-probe security audit, by target and severity.
# TYPE ice_probe_findings gauge
ice_probe_findings{target="turn:turn.example.com:3478?transport=udp",severity="critical"} 1
ice_probe_findings{target="turn:turn.example.com:3478?transport=udp",severity="high"} 0
ice_probe_findings{target="turn:turn.example.com:3478?transport=udp",severity="medium"} 0
ice_probe_findings{target="turn:turn.example.com:3478?transport=udp",severity="low"} 1
ice_probe_findings{target="turn:turn.example.com:3478?transport=udp",severity="info"} 0
# HELP ice_probe_rtt_p95_seconds The rtt_p95_seconds an ice-probe check measured in the last run.
# TYPE ice_probe_rtt_p95_seconds gauge
ice_probe_rtt_p95_seconds{target="stun:stun.example.com:3478",check="binding"} 0.0004
ice_probe_rtt_p95_seconds{target="turn:turn.example.com:3478?transport=udp",check="allocate"} 0.0012
# HELP ice_probe_loss_ratio The loss_ratio an ice-probe check measured in the last run.
# TYPE ice_probe_loss_ratio gauge
ice_probe_loss_ratio{target="stun:stun.example.com:3478",check="binding"} 0
"#;
    assert_eq!(text, expected);
    assert_well_formed(&text);
}

#[test]
fn prometheus_escapes_labels_renames_metrics_and_keeps_series_unique() {
    let target = "turn:a\"b\\c\nd";
    let mut report = Report::default();
    report.push(
        Check::pass(target, "load", "")
            .with_metric("requests_total", 1000.0)
            .with_metric("duration_seconds", 5.0)
            .with_metric("weird-name.x", 1e-9)
            .with_metric("huge", 1e300)
            .with_metric("nan", f64::NAN)
            .with_metric("inf", f64::INFINITY)
            .with_metric("neg_inf", f64::NEG_INFINITY)
            .with_metric("requests_total", 7.0),
    );
    report.push(Check::pass(target, "load", "again").with_metric("huge", 2.0));
    report.push(Check::skip("stun:b", "nat-mapping", "no"));
    report.push(Check::pass("stun:b", "binding", ""));
    report.duration_seconds = 5.5;
    let text = prometheus(&report, 0.0);
    assert_well_formed(&text);
    let labels = r#"{target="turn:a\"b\\c\nd",check="load"}"#;
    for line in [
        format!("ice_probe_check_success{labels} 1\n"),
        format!("ice_probe_requests{labels} 1000\n"),
        format!("ice_probe_metric_duration_seconds{labels} 5\n"),
        format!("ice_probe_weird_name_x{labels} 1e-9\n"),
        format!("ice_probe_huge{labels} 1e300\n"),
        format!("ice_probe_nan{labels} NaN\n"),
        format!("ice_probe_inf{labels} +Inf\n"),
        format!("ice_probe_neg_inf{labels} -Inf\n"),
        "ice_probe_duration_seconds 5.5\n".to_owned(),
        "ice_probe_success 1\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} in\n{text}");
    }
    // One series per label set: the first value wins.
    assert_eq!(text.matches("ice_probe_requests{").count(), 1);
    assert_eq!(text.matches("ice_probe_huge{").count(), 1);
    assert_eq!(text.matches("ice_probe_check_success{").count(), 2);
    assert!(!text.contains("nat-mapping"), "skipped checks are absent");
    assert!(!text.contains("ice_probe_findings"), "no audit ran");
    assert!(!text.contains("_total{"));
    assert!(!text.contains("_total gauge"));
}

#[test]
fn findings_are_counted_for_every_audited_target_and_severity() {
    let mut report = Report::default();
    report.push(Check::pass("turn:clean", "audit-software", ""));
    report.push(Check::pass("stun:unaudited", "binding", ""));
    report
        .findings
        .push(finding("turn:other", Severity::High, "audit-x", "t"));
    report
        .findings
        .push(finding("turn:other", Severity::High, "audit-y", "t"));
    let text = prometheus(&report, 0.0);
    assert_well_formed(&text);
    for severity in Severity::ALL {
        let s = severity.as_str();
        assert!(text.contains(&format!(
            "ice_probe_findings{{target=\"turn:clean\",severity=\"{s}\"}} 0\n"
        )));
        let n = if severity == Severity::High { 2 } else { 0 };
        assert!(text.contains(&format!(
            "ice_probe_findings{{target=\"turn:other\",severity=\"{s}\"}} {n}\n"
        )));
    }
    assert!(!text.contains("ice_probe_findings{target=\"stun:unaudited\""));
    assert!(text.contains("ice_probe_success 0\n"));
}

#[test]
fn sample_values_read_back() {
    for value in [
        0.0,
        1.0,
        -1.0,
        0.1,
        2.3,
        1e-5,
        9.99e-6,
        1e15,
        123_456.789,
        1e-300,
        f64::MAX,
    ] {
        let text = sample_value(value);
        assert_eq!(text.parse::<f64>().unwrap(), value, "{text}");
    }
    assert_eq!(sample_value(0.25), "0.25");
    assert_eq!(sample_value(1_717_171_717.0), "1717171717");
    assert_eq!(sample_value(f64::MIN_POSITIVE), "2.2250738585072014e-308");
}

#[test]
fn write_atomically_replaces_the_file_and_leaves_no_temporary() {
    let dir = std::env::temp_dir().join(format!(
        "ice-probe-output-test-{}-{}",
        std::process::id(),
        SEQUENCE_FOR_TESTS.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ice_probe.prom");
    write_atomically(&path, "first\n").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "first\n");
    write_atomically(&path, "second\n").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "second\n");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [OsString::from("ice_probe.prom")]);

    // A directory in the way: the rename fails and the temporary file goes again.
    let blocked = dir.join("blocked.prom");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("inside"), "x").unwrap();
    assert!(write_atomically(&blocked, "x").is_err());
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [OsString::from("blocked.prom"), "ice_probe.prom".into()]
    );

    assert!(write_atomically(&dir.join("missing").join("x.prom"), "x").is_err());
    assert_eq!(
        write_atomically(Path::new("/"), "x").unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    fs::remove_dir_all(&dir).unwrap();
}

static SEQUENCE_FOR_TESTS: AtomicU64 = AtomicU64::new(0);

/// Removes the SGR sequences [`Paint`] writes.
fn strip_sgr(text: &str) -> String {
    let mut out = text.to_owned();
    for style in [BOLD, RED, BOLD_RED, GREEN, YELLOW, CYAN, "0"] {
        out = out.replace(&format!("\x1b[{style}m"), "");
    }
    out
}

/// Checks the text exposition format: every line a HELP, a TYPE or a sample
/// `name{label="value",...} value`; HELP then TYPE once per family, before its samples;
/// each family's samples together; no series twice; a final newline.
fn assert_well_formed(text: &str) {
    assert!(text.ends_with('\n'));
    let mut done: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut series = std::collections::HashSet::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(!done.iter().any(|d| d == name), "{name} twice");
            if let Some(previous) = current.replace(name.to_owned()) {
                done.push(previous);
            }
            assert_eq!(lines.next(), Some(format!("# TYPE {name} gauge").as_str()));
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let family = current.as_deref().expect("a sample before any HELP");
        let (series_text, value) = line.rsplit_once(' ').unwrap();
        assert!(
            matches!(value, "NaN" | "+Inf" | "-Inf") || value.parse::<f64>().is_ok(),
            "{line}"
        );
        let (name, labels) = match series_text.split_once('{') {
            Some((name, labels)) => (name, Some(labels.strip_suffix('}').unwrap())),
            None => (series_text, None),
        };
        assert_eq!(name, family, "families are contiguous: {line}");
        if let Some(labels) = labels {
            parse_labels(labels);
        }
        assert!(
            series.insert(series_text.to_owned()),
            "duplicate {series_text}"
        );
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `a="x",b="y\"z"`: every label name valid, every value escaped correctly.
fn parse_labels(mut labels: &str) {
    loop {
        let (name, rest) = labels.split_once("=\"").unwrap();
        assert!(valid_name(name) && !name.contains(':'), "{name}");
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (_, '\\') => {
                    let (_, c) = chars.next().unwrap();
                    assert!(matches!(c, '\\' | '"' | 'n'), "bad escape \\{c}");
                }
                (_, '\n') => panic!("raw newline in a label value"),
                (i, '"') => break i,
                _ => {}
            }
        };
        labels = &rest[end + 1..];
        if labels.is_empty() {
            return;
        }
        labels = labels.strip_prefix(',').unwrap();
    }
}
