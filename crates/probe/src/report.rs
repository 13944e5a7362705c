//! What a run found: checks with their status, measured value and explanation, audit
//! findings with their severity, and the exit code they add up to.

use serde::Serialize;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The server did what it should.
    Pass,
    /// It did not; the check's explanation says why and what to look at.
    Fail,
    /// The check could not run here (no credentials, no RFC 5780 support, an earlier check
    /// failed); the explanation says why. A skip does not fail the run.
    Skip,
}

impl Status {
    /// `pass`, `fail` or `skip`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// A number a check measured, for `--json` and `--prometheus`: `rtt_p95_seconds`,
/// `loss_ratio`, `amplification_factor`. Names are snake case with a unit suffix, as
/// Prometheus wants them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    /// The metric's name without the `ice_probe_` prefix.
    pub name: &'static str,
    /// Its value.
    pub value: f64,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// The server URI the check ran against, as printed by
    /// [`ServerUri`](icebreaker_ice::uri::ServerUri)'s `Display`.
    pub target: String,
    /// A stable identifier: `binding`, `nat-mapping`, `allocate`, `audit-relay-loopback`.
    pub name: String,
    /// Pass, fail or skip.
    pub status: Status,
    /// What was measured or seen, short: `0.21 / 0.25 / 0.40 ms (min / mean / p95), 0 % loss`.
    pub value: String,
    /// For a failure or a skip, the likely cause in plain words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// Numbers behind the value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

impl Check {
    /// A passed check.
    pub fn pass(target: &str, name: &str, value: impl Into<String>) -> Check {
        Check::new(target, name, Status::Pass, value.into(), None)
    }

    /// A failed check with its explanation.
    pub fn fail(
        target: &str,
        name: &str,
        value: impl Into<String>,
        explanation: impl Into<String>,
    ) -> Check {
        Check::new(
            target,
            name,
            Status::Fail,
            value.into(),
            Some(explanation.into()),
        )
    }

    /// A skipped check with the reason it could not run.
    pub fn skip(target: &str, name: &str, reason: impl Into<String>) -> Check {
        Check::new(
            target,
            name,
            Status::Skip,
            String::new(),
            Some(reason.into()),
        )
    }

    fn new(
        target: &str,
        name: &str,
        status: Status,
        value: String,
        explanation: Option<String>,
    ) -> Check {
        Check {
            target: target.to_owned(),
            name: name.to_owned(),
            status,
            value,
            explanation,
            metrics: Vec::new(),
        }
    }

    /// The check with one more measured number.
    pub fn with_metric(mut self, name: &'static str, value: f64) -> Check {
        self.metrics.push(Metric { name, value });
        self
    }
}

/// How bad an audit finding is, as a vulnerability scanner grades it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; not a weakness by itself.
    Info,
    /// Discloses something or eases an attack a little.
    Low,
    /// A weakness an attacker can use with effort, or against third parties.
    Medium,
    /// Reaches the operator's internal network or hands out relaying to strangers.
    High,
    /// Reaches the server host itself or cloud credentials.
    Critical,
}

impl Severity {
    /// Every severity, most severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// `critical`, `high`, `medium`, `low` or `info`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A weakness the audit found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The server URI it was found on.
    pub target: String,
    /// How bad it is.
    pub severity: Severity,
    /// The check that found it (a [`Check::name`]).
    pub check: String,
    /// One line: what the server does that it should not.
    pub title: String,
    /// The evidence and what to change.
    pub detail: String,
}

/// Everything a run found, in the order the checks ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Every check.
    pub checks: Vec<Check>,
    /// Audit findings, most severe first once [`Report::finish`] ran.
    pub findings: Vec<Finding>,
    /// How long the run took, in seconds.
    pub duration_seconds: f64,
}

impl Report {
    /// Adds a check.
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Adds checks.
    pub fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        self.checks.extend(checks);
    }

    /// Orders findings most severe first, keeping the run's order within a severity.
    pub fn finish(&mut self, duration_seconds: f64) {
        self.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        self.duration_seconds = duration_seconds;
    }

    /// Whether a check failed or the audit found something above [`Severity::Info`].
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
            || self.findings.iter().any(|f| f.severity > Severity::Info)
    }

    /// The process exit code: 0 when everything passed, 1 when something failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed())
    }

    /// How many checks ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn finding(severity: Severity, title: &str) -> Finding {
        Finding {
            target: "turn:192.0.2.1:3478".into(),
            severity,
            check: "audit".into(),
            title: title.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn a_failed_check_or_a_finding_above_info_fails_the_run() {
        let mut report = Report::default();
        report.push(Check::pass("stun:a", "binding", "1 ms"));
        report.push(Check::skip("stun:a", "nat-mapping", "no OTHER-ADDRESS"));
        assert_eq!(report.exit_code(), 0);
        report.findings.push(finding(Severity::Info, "fyi"));
        assert_eq!(report.exit_code(), 0);
        report.findings.push(finding(Severity::Low, "SOFTWARE"));
        assert_eq!(report.exit_code(), 1);

        let mut report = Report::default();
        report.push(Check::fail("stun:a", "binding", "", "no answer"));
        assert_eq!(report.exit_code(), 1);
        assert_eq!(report.count(Status::Fail), 1);
    }

    #[test]
    fn findings_are_ordered_most_severe_first_and_stable_within_a_severity() {
        let mut report = Report::default();
        for (severity, title) in [
            (Severity::Low, "a"),
            (Severity::Critical, "b"),
            (Severity::Low, "c"),
            (Severity::High, "d"),
        ] {
            report.findings.push(finding(severity, title));
        }
        report.finish(1.5);
        let titles: Vec<&str> = report.findings.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(titles, ["b", "d", "a", "c"]);
    }
}
