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
mod tests;
