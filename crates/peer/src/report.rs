//! What a run found, printed at the end: human-readable lines, or with `--json` one JSON
//! object whose field names are stable (scripts and the NAT-matrix harness parse them).

use std::fmt::Write as _;

use icebreaker_ice::Candidate;
use serde::Serialize;

use crate::probe::RttStats;

/// One end of a selected pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `host`, `srflx`, `prflx` or `relay`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `IP:PORT`, or `[IPv6]:PORT`.
    pub address: String,
    /// A local relayed candidate's transport to its TURN server, `udp`, `tcp` or `tls` (as
    /// WebRTC's statistics name it); absent otherwise, the remote one's included, which no
    /// candidate line tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_protocol: Option<&'static str>,
}

impl Endpoint {
    /// The candidate's type and address.
    pub fn of(candidate: &Candidate) -> Endpoint {
        Endpoint {
            kind: candidate.kind.token().to_owned(),
            address: candidate.address.to_string(),
            relay_protocol: None,
        }
    }
}

/// A selected candidate pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Selection {
    /// The local candidate (as the peer sees it: server-reflexive or peer-reflexive when a NAT
    /// maps the host address).
    pub local: Endpoint,
    /// The remote candidate.
    pub remote: Endpoint,
    /// When it was selected, in milliseconds since the start.
    pub at_ms: f64,
}

/// A STUN or TURN server that gave no candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatherFailure {
    /// The server's address.
    pub server: String,
    /// Why, in words.
    pub reason: String,
}

/// A relayed candidate lost after it was allocated: its TCP or TLS connection to the TURN
/// server broke, or its allocation could not be refreshed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RelayLost {
    /// The TURN server's address.
    pub server: String,
    /// `tcp` or `tls`.
    pub transport: &'static str,
    /// The relayed address that was lost.
    pub relayed: String,
    /// Why, in words.
    pub reason: String,
}

/// The outcome of a run. Serialised as the `--json` object; the field names are part of
/// the command's interface.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// `offer` or `answer`.
    pub role: &'static str,
    /// Whether a pair was ever selected.
    pub connected: bool,
    /// From the moment both sides' credentials were known here (the answer reached the
    /// offerer, the offer reached the answerer) to the first selected pair, in milliseconds.
    pub connect_ms: Option<f64>,
    /// The pair selected last (the one in use at the end), if any.
    pub selected: Option<Selection>,
    /// Every selection in order: one, plus one per completed ICE restart.
    pub pairs: Vec<Selection>,
    /// Offerer: probes sent. Answerer: 0.
    pub sent: u32,
    /// Offerer: probes whose echo came back within 2 s of the last send. Answerer: probes it
    /// echoed.
    pub echoed: u32,
    /// Offerer: the share of probes not echoed, 0.0 to 1.0. Answerer: null.
    pub loss: Option<f64>,
    /// Offerer: round-trip times in milliseconds, null when nothing was echoed. Answerer:
    /// null.
    pub rtt_ms: Option<RttStats>,
    /// ICE restarts: done by the offerer, answered by the answerer.
    pub restarts: u32,
    /// Whether the peer stopped answering consent checks (RFC 7675).
    pub consent_lost: bool,
    /// STUN and TURN servers that gave no candidate.
    pub gather_failed: Vec<GatherFailure>,
    /// Relayed candidates lost after they were gathered.
    pub relays_lost: Vec<RelayLost>,
    /// Why the run failed; null on success.
    pub error: Option<String>,
}

impl Report {
    /// The report of a run that failed before its agent started.
    pub fn failed(role: &'static str, error: String) -> Report {
        Report {
            role,
            connected: false,
            connect_ms: None,
            selected: None,
            pairs: Vec::new(),
            sent: 0,
            echoed: 0,
            loss: None,
            rtt_ms: None,
            restarts: 0,
            consent_lost: false,
            gather_failed: Vec::new(),
            relays_lost: Vec::new(),
            error: Some(error),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// The report as human-readable lines.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        for (index, pair) in self.pairs.iter().enumerate() {
            let what = if index == 0 {
                match self.connect_ms {
                    Some(ms) => format!("connected in {ms:.1} ms"),
                    None => "connected".to_owned(),
                }
            } else {
                format!("after restart {index}")
            };
            let over = match pair.local.relay_protocol {
                Some(protocol) => format!(" over {protocol}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "selected: local {} {}{over} -> remote {} {} ({what}, at {:.3} s)",
                pair.local.kind,
                pair.local.address,
                pair.remote.kind,
                pair.remote.address,
                pair.at_ms / 1e3
            );
        }
        if !self.connected {
            let _ = writeln!(out, "not connected");
        }
        for failure in &self.gather_failed {
            let _ = writeln!(
                out,
                "no candidate from {}: {}",
                failure.server, failure.reason
            );
        }
        for lost in &self.relays_lost {
            let _ = writeln!(
                out,
                "relayed candidate {} lost ({} to {}): {}",
                lost.relayed, lost.transport, lost.server, lost.reason
            );
        }
        if self.role == "offer" {
            let _ = write!(out, "sent {}, echoed {}", self.sent, self.echoed);
            if let Some(loss) = self.loss {
                let _ = write!(out, ", loss {:.1} %", loss * 100.0);
            }
            out.push('\n');
        } else {
            let _ = writeln!(out, "echoed {}", self.echoed);
        }
        if let Some(rtt) = &self.rtt_ms {
            let _ = writeln!(
                out,
                "rtt min {:.3} ms, mean {:.3} ms, p95 {:.3} ms, max {:.3} ms",
                rtt.min, rtt.mean, rtt.p95, rtt.max
            );
        }
        let _ = writeln!(out, "restarts {}", self.restarts);
        if self.consent_lost {
            let _ = writeln!(out, "consent lost: the peer stopped answering");
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "failed: {error}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn report() -> Report {
        let pair = Selection {
            local: Endpoint {
                kind: "srflx".into(),
                address: "198.51.100.18:40031".into(),
                relay_protocol: None,
            },
            remote: Endpoint {
                kind: "host".into(),
                address: "10.0.2.2:50000".into(),
                relay_protocol: None,
            },
            at_ms: 1234.5,
        };
        Report {
            role: "offer",
            connected: true,
            connect_ms: Some(12.3),
            selected: Some(pair.clone()),
            pairs: vec![pair],
            sent: 100,
            echoed: 99,
            loss: Some(0.01),
            rtt_ms: Some(RttStats {
                min: 0.1,
                mean: 0.2,
                p95: 0.3,
                max: 0.4,
            }),
            restarts: 0,
            consent_lost: false,
            gather_failed: Vec::new(),
            relays_lost: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn the_json_field_names_are_stable() {
        let json: serde_json::Value = serde_json::from_str(&report().to_json().unwrap()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "role",
            "connected",
            "connect_ms",
            "selected",
            "pairs",
            "sent",
            "echoed",
            "loss",
            "rtt_ms",
            "restarts",
            "consent_lost",
            "gather_failed",
            "relays_lost",
            "error",
        ];
        let mut keys = keys;
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["selected"]["local"]["type"], "srflx");
        assert_eq!(json["selected"]["local"]["address"], "198.51.100.18:40031");
        assert_eq!(json["selected"]["remote"]["type"], "host");
        assert_eq!(json["pairs"][0]["at_ms"], 1234.5);
        assert_eq!(json["rtt_ms"]["p95"], 0.3);
        assert_eq!(json["loss"], 0.01);
        assert!(json["error"].is_null());
        assert!(json["selected"]["local"].get("relay_protocol").is_none());
    }

    #[test]
    fn a_relay_names_its_protocol_and_a_lost_one_is_told() {
        let mut report = report();
        let local = Endpoint {
            kind: "relay".into(),
            address: "203.0.113.1:50000".into(),
            relay_protocol: Some("tls"),
        };
        report.pairs[0].local = local.clone();
        report.selected = Some(report.pairs[0].clone());
        report.relays_lost.push(RelayLost {
            server: "203.0.113.1:5349".into(),
            transport: "tls",
            relayed: "203.0.113.1:50000".into(),
            reason: "the server closed the connection".into(),
        });
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["selected"]["local"]["relay_protocol"], "tls");
        assert_eq!(json["relays_lost"][0]["transport"], "tls");
        let text = report.to_human();
        assert!(
            text.contains("selected: local relay 203.0.113.1:50000 over tls -> remote host"),
            "{text}"
        );
        assert!(
            text.contains(
                "relayed candidate 203.0.113.1:50000 lost (tls to 203.0.113.1:5349): the server \
                 closed the connection"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_human_form_names_the_pair_like_a_candidate_line() {
        let text = report().to_human();
        assert!(
            text.contains(
                "selected: local srflx 198.51.100.18:40031 -> remote host 10.0.2.2:50000 \
                 (connected in 12.3 ms"
            ),
            "{text}"
        );
        assert!(text.contains("sent 100, echoed 99, loss 1.0 %"), "{text}");
        assert!(text.contains("rtt min 0.100 ms, mean 0.200 ms, p95 0.300 ms, max 0.400 ms"));
        assert!(text.contains("restarts 0"));
    }
}
