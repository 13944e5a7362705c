//! The outputs of a run: the table an operator reads, JSON, and Prometheus textfile metrics,
//! with an atomic file write for node_exporter's textfile collector.
//!
//! Check values, explanations and finding details carry text a server chose (reason phrases,
//! SOFTWARE strings). The table escapes control characters in everything it prints, so a
//! hostile server cannot send escape sequences to the operator's terminal or forge rows.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::report::{Check, Report, Severity, Status};

/// The table's line width: text wraps on spaces to fit it.
const LINE_WIDTH: usize = 100;
/// The narrowest a wrapped column gets, however long the check names are.
const MIN_WRAP_WIDTH: usize = 40;
/// Rows and findings are indented by this much under their header.
const INDENT: &str = "  ";
/// Between columns.
const GAP: &str = "  ";
/// The width of the severity column: `CRITICAL`.
const SEVERITY_WIDTH: usize = 8;

/// The human report, ending with a newline.
///
/// Checks are grouped under a header line per target, targets in the order they first
/// appear. Each check is one row: `PASS`, `FAIL` or `SKIP`, the check's name, its value,
/// columns aligned across the whole table. A failure's or a skip's explanation follows on
/// the next lines, indented to the value column (a skip has no value, so its explanation
/// starts on the row itself). Values, explanations and finding details wrap on spaces at
/// about 100 columns; a word longer than that keeps its own line unbroken. Then, if the
/// audit found something, a `Findings` section, most severe first as [`Report::finish`]
/// ordered them: the severity tag and title, then the target with the check, then the
/// detail. Last a summary:
///
/// ```text
/// 12 passed, 1 failed, 3 skipped; 2 findings (1 critical, 1 low) in 2.3 s
/// ```
///
/// The findings clause is left out when there are no findings and no `audit*` check ran.
/// With `colour`, status and severity tags are coloured with ANSI SGR escapes (PASS green,
/// FAIL red, SKIP yellow; CRITICAL bold red, HIGH red, MEDIUM yellow, LOW cyan, INFO plain)
/// and headers are bold; without it the text has no escape at all. Widths count `char`s.
pub fn table(report: &Report, colour: bool) -> String {
    let paint = Paint(colour);
    let mut out = String::new();

    let name_width = report
        .checks
        .iter()
        .map(|c| clean(&c.name).chars().count())
        .max()
        .unwrap_or(0);
    let value_column = INDENT.len() + 4 + GAP.len() + name_width + GAP.len();
    let value_width = LINE_WIDTH.saturating_sub(value_column).max(MIN_WRAP_WIDTH);
    let value_indent = " ".repeat(value_column);

    for (i, target) in first_seen(report.checks.iter().map(|c| c.target.as_str()))
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&paint.apply(BOLD, &clean(target)));
        out.push('\n');
        for check in report.checks.iter().filter(|c| c.target == target) {
            let mut lines = wrap(&clean(&check.value), value_width);
            if check.status != Status::Pass
                && let Some(explanation) = &check.explanation
            {
                lines.extend(wrap(&clean(explanation), value_width));
            }
            let (tag, style) = status_tag(check.status);
            let name = clean(&check.name);
            out.push_str(INDENT);
            out.push_str(&paint.apply(style, tag));
            out.push_str(GAP);
            out.push_str(&name);
            let mut lines = lines.into_iter();
            if let Some(first) = lines.next() {
                pad(&mut out, name_width - name.chars().count());
                out.push_str(GAP);
                out.push_str(&first);
            }
            out.push('\n');
            for line in lines {
                out.push_str(&value_indent);
                out.push_str(&line);
                out.push('\n');
            }
        }
    }

    if !report.findings.is_empty() {
        if !report.checks.is_empty() {
            out.push('\n');
        }
        out.push_str(&paint.apply(BOLD, "Findings"));
        out.push('\n');
        let column = INDENT.len() + SEVERITY_WIDTH + GAP.len();
        let indent = " ".repeat(column);
        let width = LINE_WIDTH.saturating_sub(column).max(MIN_WRAP_WIDTH);
        for (i, finding) in report.findings.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let (tag, style) = severity_tag(finding.severity);
            let where_ = format!("{} ({})", clean(&finding.target), clean(&finding.check));
            let mut lines = wrap(&clean(&finding.title), width).into_iter();
            out.push_str(INDENT);
            out.push_str(&paint.apply(style, tag));
            out.push_str(GAP);
            match lines.next() {
                Some(first) => {
                    pad(&mut out, SEVERITY_WIDTH - tag.len());
                    out.push_str(&first);
                }
                // An untitled finding: trim the gap again.
                None => out.truncate(out.trim_end().len()),
            }
            out.push('\n');
            let rest = lines
                .chain(wrap(&where_, width))
                .chain(wrap(&clean(&finding.detail), width));
            for line in rest {
                out.push_str(&indent);
                out.push_str(&line);
                out.push('\n');
            }
        }
    }

    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&summary(report));
    out.push('\n');
    out
}

/// The report as pretty-printed JSON, without a trailing newline: an object with `passed`
/// (the opposite of [`Report::failed`]) first, then the [`Report`]'s own fields, `checks`,
/// `findings` and `duration_seconds`. A measurement that is not finite becomes `null`.
pub fn json(report: &Report) -> String {
    #[derive(Serialize)]
    struct Json<'a> {
        passed: bool,
        #[serde(flatten)]
        report: &'a Report,
    }
    let passed = !report.failed();
    serde_json::to_string_pretty(&Json { passed, report }).unwrap_or_else(|error| {
        // Not reachable with the Report's types; still a valid document if it ever is.
        let error = serde_json::Value::String(error.to_string());
        format!("{{\n  \"passed\": {passed},\n  \"error\": {error}\n}}")
    })
}

/// The report in the Prometheus text exposition format, for node_exporter's textfile
/// collector: gauges only, no timestamps on samples, a `# HELP` and a `# TYPE` line before
/// the samples of each family, each family's samples together, ending with a newline.
///
/// | family | labels | value |
/// |---|---|---|
/// | `ice_probe_success` | | 1 when the run passed (not [`Report::failed`]), else 0 |
/// | `ice_probe_duration_seconds` | | how long the run took |
/// | `ice_probe_last_run_timestamp_seconds` | | `now_unix`, when the run ended |
/// | `ice_probe_check_success` | `target`, `check` | 1 for a passed check, 0 for a failed one; skipped checks have no sample |
/// | `ice_probe_findings` | `target`, `severity` | findings of that severity, 0 included, for every target an `audit*` check ran against or a finding names |
/// | `ice_probe_<metric>` | `target`, `check` | every [`Metric`](crate::report::Metric) of every check |
///
/// A check metric's name loses a `_total` suffix (each run is a snapshot, so its counts are
/// gauges, and `_total` is reserved for counters), has characters outside `[a-zA-Z0-9_]`
/// replaced by `_`, and gets a `metric_` prefix if it would otherwise be one of the families
/// above (`duration_seconds` becomes `ice_probe_metric_duration_seconds`). When a target
/// and check pair, or a target, check and metric, repeats, the first sample is kept, so no
/// series is exposed twice. Label values are escaped as the format requires (`\\`, `\"`,
/// `\n`); values are decimal, or `NaN`, `+Inf`, `-Inf`.
pub fn prometheus(report: &Report, now_unix: f64) -> String {
    let mut out = Exposition::default();
    out.sample(
        SUCCESS,
        "Whether the last ice-probe run passed: no failed check and no finding above info.",
        &[],
        f64::from(u8::from(!report.failed())),
    );
    out.sample(
        DURATION,
        "How long the last ice-probe run took.",
        &[],
        report.duration_seconds,
    );
    out.sample(
        TIMESTAMP,
        "When the last ice-probe run ended, in seconds since the Unix epoch.",
        &[],
        now_unix,
    );
    for check in &report.checks {
        let value = match check.status {
            Status::Pass => 1.0,
            Status::Fail => 0.0,
            Status::Skip => continue,
        };
        out.sample(
            CHECK_SUCCESS,
            "Whether an ice-probe check passed (1) or failed (0); skipped checks are absent.",
            &[("target", &check.target), ("check", &check.name)],
            value,
        );
    }
    let audited = first_seen(
        report
            .checks
            .iter()
            .filter(|c| is_audit(c))
            .map(|c| c.target.as_str())
            .chain(report.findings.iter().map(|f| f.target.as_str())),
    );
    for target in audited {
        for severity in Severity::ALL {
            let count = report
                .findings
                .iter()
                .filter(|f| f.target == target && f.severity == severity)
                .count();
            out.sample(
                FINDINGS,
                "Findings of the ice-probe security audit, by target and severity.",
                &[("target", target), ("severity", severity.as_str())],
                count as f64,
            );
        }
    }
    for check in &report.checks {
        for metric in &check.metrics {
            let name = check_metric_name(metric.name);
            let help = format!(
                "The {} an ice-probe check measured in the last run.",
                metric.name
            );
            out.sample(
                &name,
                &help,
                &[("target", &check.target), ("check", &check.name)],
                metric.value,
            );
        }
    }
    out.render()
}

/// Writes `contents` to `path` so that no reader ever sees part of it: into a new file
/// `.NAME.PID.N.tmp` in the same directory (a name node_exporter's textfile collector, which
/// reads `*.prom`, ignores), flushed to disk, then renamed over `path`. The temporary file
/// is created exclusively, so a symbolic link planted at its name is not followed, and is
/// removed again if anything fails.
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let Some(file_name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        ));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        let mut name = OsString::from(".");
        name.push(file_name);
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        name.push(format!(".{}.{sequence}.tmp", std::process::id()));
        let tmp = dir.join(name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            // Left behind by a killed run that had the same process id.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    };
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all());
    drop(file);
    let result = written.and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

const SUCCESS: &str = "ice_probe_success";
const DURATION: &str = "ice_probe_duration_seconds";
const TIMESTAMP: &str = "ice_probe_last_run_timestamp_seconds";
const CHECK_SUCCESS: &str = "ice_probe_check_success";
const FINDINGS: &str = "ice_probe_findings";
/// The families [`prometheus`] always owns; check metrics are renamed away from them.
const RESERVED: [&str; 5] = [SUCCESS, DURATION, TIMESTAMP, CHECK_SUCCESS, FINDINGS];

const BOLD: &str = "1";
const RED: &str = "31";
const BOLD_RED: &str = "1;31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const CYAN: &str = "36";
const PLAIN: &str = "";

/// ANSI SGR colouring, or none.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn apply(self, style: &str, text: &str) -> String {
        if self.0 && !style.is_empty() {
            format!("\x1b[{style}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

fn status_tag(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Pass => ("PASS", GREEN),
        Status::Fail => ("FAIL", RED),
        Status::Skip => ("SKIP", YELLOW),
    }
}

fn severity_tag(severity: Severity) -> (&'static str, &'static str) {
    match severity {
        Severity::Critical => ("CRITICAL", BOLD_RED),
        Severity::High => ("HIGH", RED),
        Severity::Medium => ("MEDIUM", YELLOW),
        Severity::Low => ("LOW", CYAN),
        Severity::Info => ("INFO", PLAIN),
    }
}

fn is_audit(check: &Check) -> bool {
    check.name.starts_with("audit")
}

/// `12 passed, 1 failed, 3 skipped; 2 findings (1 critical, 1 low) in 2.3 s`.
fn summary(report: &Report) -> String {
    let mut line = format!(
        "{} passed, {} failed, {} skipped",
        report.count(Status::Pass),
        report.count(Status::Fail),
        report.count(Status::Skip),
    );
    let findings = report.findings.len();
    if findings > 0 || report.checks.iter().any(is_audit) {
        let plural = if findings == 1 { "" } else { "s" };
        let _ = write!(line, "; {findings} finding{plural}");
        let by_severity: Vec<String> = Severity::ALL
            .into_iter()
            .filter_map(|severity| {
                let n = report
                    .findings
                    .iter()
                    .filter(|f| f.severity == severity)
                    .count();
                (n > 0).then(|| format!("{n} {}", severity.as_str()))
            })
            .collect();
        if !by_severity.is_empty() {
            let _ = write!(line, " ({})", by_severity.join(", "));
        }
    }
    let seconds = report.duration_seconds;
    if seconds.abs() < 1.0 && seconds != 0.0 {
        let _ = write!(line, " in {seconds:.2} s");
    } else {
        let _ = write!(line, " in {seconds:.1} s");
    }
    line
}

/// The distinct items, in the order they first appear.
fn first_seen<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// `text` safe to print on a terminal: control characters (C0, DEL, C1, which hold ESC and
/// CSI), line and paragraph separators and bidirectional overrides are written as Rust
/// escapes (`\n`, `\u{1b}`), so nothing a server sent can move the cursor, start an escape
/// sequence, break a line or reorder what the operator reads.
fn clean(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            )
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` in lines of at most `width` chars, broken at spaces; a word longer than `width`
/// gets a line of its own, unbroken. Text that fits is returned as is; empty text gives no
/// line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    if text.chars().count() <= width {
        return vec![text.to_owned()];
    }
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut line_width = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let word_width = word.chars().count();
        if line_width > 0 && line_width + 1 + word_width > width {
            lines.push(std::mem::take(&mut line));
            line_width = 0;
        }
        if line_width > 0 {
            line.push(' ');
            line_width += 1;
        }
        line.push_str(word);
        line_width += word_width;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `ice_probe_` and the check metric's name, made a valid, non-counter, unreserved name.
fn check_metric_name(name: &str) -> String {
    let name = name.strip_suffix("_total").unwrap_or(name);
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let full = format!("ice_probe_{name}");
    if RESERVED.contains(&full.as_str()) {
        format!("ice_probe_metric_{name}")
    } else {
        full
    }
}

/// Metric families in the order their first sample came, each with its samples.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

struct Family {
    name: String,
    help: String,
    /// Rendered label sets (`{a="b"}` or empty) with their values.
    samples: Vec<(String, f64)>,
}

impl Exposition {
    /// Adds a sample to the family `name`, made with `help` if it is new; a repeated label
    /// set is dropped.
    fn sample(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let index = match self.families.iter().position(|f| f.name == name) {
            Some(index) => index,
            None => {
                self.families.push(Family {
                    name: name.to_owned(),
                    help: help.to_owned(),
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        let family = &mut self.families[index];
        let labels = render_labels(labels);
        if !family.samples.iter().any(|(l, _)| *l == labels) {
            family.samples.push((labels, value));
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for family in &self.families {
            let name = &family.name;
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (labels, value) in &family.samples {
                let _ = writeln!(out, "{name}{labels} {}", sample_value(*value));
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// A sample value as the exposition format spells it: shortest decimal that reads back the
/// same, exponent notation for very large or small magnitudes, `NaN`, `+Inf`, `-Inf`.
fn sample_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value != 0.0 && !(1e-5..1e15).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
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
}
