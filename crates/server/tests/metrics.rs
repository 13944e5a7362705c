//! The metrics module from outside: which series each event moves, the grammar of the
//! exposition, and the alert rules in `deploy/prometheus` checked against the names and labels
//! the exporter emits, so that they cannot drift apart. The HTTP endpoint is tested in
//! `metrics_http.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::Duration;

use icebreaker::metrics::{Direction, Metrics, WorkerMetrics};
use icebreaker_turn::{
    AuthFailure, ClientTransport, ConnectionId, DeleteReason, DenyReason, Event, FiveTuple,
    PeerCloseReason,
};
use icebreaker_wire::{ErrorCode, Method};

// --- The exposition --------------------------------------------------------------------------

/// One sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    /// `name{a="x",b="y"}`, labels in the order written.
    fn key(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(l, v)| format!("{l}=\"{v}\""))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// Parses a text exposition, failing on anything outside the grammar: `# HELP name text`, then
/// `# TYPE name counter|gauge`, then that family's samples `name{label="value",...} value`,
/// no timestamps, no blank lines, no series twice.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut samples = Vec::new();
    let mut keys = BTreeSet::new();
    let mut families = BTreeSet::new();
    let mut help: Option<String> = None;
    let mut family: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(is_metric_name(name), "{line}");
            assert!(!text.trim().is_empty(), "{line}: empty help");
            help = Some(name.to_owned());
            family = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and kind");
            assert_eq!(help.as_deref(), Some(name), "{line}: TYPE without its HELP");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(families.insert(name.to_owned()), "{line}: family twice");
            family = Some(name.to_owned());
        } else {
            assert!(!line.starts_with('#'), "{line}: unknown comment");
            let sample = parse_sample(line);
            assert_eq!(
                family.as_deref(),
                Some(sample.name.as_str()),
                "{line}: outside its family"
            );
            assert!(keys.insert(sample.key()), "{line}: series twice");
            samples.push(sample);
        }
    }
    samples
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or_else(|| panic!("{line}: no value"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "{line}");
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            let (label, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("{line}: bad label"));
            assert!(
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !label.starts_with(|c: char| c.is_ascii_digit()),
                "{line}: label name {label:?}"
            );
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("{line}: bad escape {other:?}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("{line}: unterminated label value"),
                }
            };
            labels.push((label.to_owned(), value));
            rest = &after[end + 1..];
            if let Some(next) = rest.strip_prefix(',') {
                rest = next;
            } else {
                rest = rest
                    .strip_prefix('}')
                    .unwrap_or_else(|| panic!("{line}: labels not closed"));
                break;
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("{line}: no space before the value"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("{line}: value {value:?} is not a number"));
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Every series of the exposition by key.
fn values(metrics: &Metrics) -> BTreeMap<String, f64> {
    parse(&metrics.encode())
        .into_iter()
        .map(|s| (s.key(), s.value))
        .collect()
}

/// The series that `act` changed, with how much; fails if a series disappears.
fn changes(metrics: &Metrics, act: impl FnOnce()) -> BTreeMap<String, f64> {
    let before = values(metrics);
    act();
    let after = values(metrics);
    for key in before.keys() {
        assert!(after.contains_key(key), "{key} disappeared");
    }
    after
        .into_iter()
        .filter_map(|(key, value)| {
            let delta = value - before.get(&key).copied().unwrap_or(0.0);
            (delta != 0.0).then_some((key, delta))
        })
        .collect()
}

fn expect(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

// --- Events ------------------------------------------------------------------------------------

fn five_tuple() -> FiveTuple {
    FiveTuple {
        client: "192.0.2.1:40000".parse().unwrap(),
        server: "198.51.100.1:3478".parse().unwrap(),
        transport: ClientTransport::Udp,
    }
}

fn answered(method: Method, error: Option<u16>) -> Event {
    Event::Answered {
        method,
        error: error.map(|code| ErrorCode::new(code).unwrap()),
    }
}

fn created(relay: &str) -> Event {
    Event::AllocationCreated {
        five_tuple: five_tuple(),
        relay: relay.parse().unwrap(),
        username: "alice".into(),
        lifetime: Duration::from_secs(600),
    }
}

fn deleted(relay: &str, reason: DeleteReason) -> Event {
    Event::AllocationDeleted {
        five_tuple: five_tuple(),
        relay: relay.parse().unwrap(),
        reason,
    }
}

fn denied(reason: DenyReason) -> Event {
    Event::PeerDenied {
        five_tuple: five_tuple(),
        peer: "10.1.2.3:9".parse().unwrap(),
        reason,
    }
}

fn peer_opened(outgoing: bool) -> Event {
    Event::PeerConnectionOpened {
        five_tuple: five_tuple(),
        id: ConnectionId(0x0100_0001),
        peer: "203.0.113.9:443".parse().unwrap(),
        outgoing,
    }
}

fn peer_closed(reason: PeerCloseReason) -> Event {
    Event::PeerConnectionClosed {
        five_tuple: five_tuple(),
        id: ConnectionId(0x0100_0001),
        peer: "203.0.113.9:443".parse().unwrap(),
        reason,
    }
}

fn auth_failed(reason: AuthFailure) -> Event {
    Event::AuthFailed {
        five_tuple: five_tuple(),
        reason,
    }
}

/// One event of every kind, and one call of every other recording method.
fn record_one_of_each(worker: &WorkerMetrics) {
    worker.record(&answered(Method::ALLOCATE, None));
    worker.record(&answered(Method::ALLOCATE, Some(508)));
    worker.record(&created("203.0.113.5:50000"));
    worker.record(&Event::AllocationRefreshed {
        five_tuple: five_tuple(),
        relay: "203.0.113.5:50000".parse().unwrap(),
        lifetime: Duration::from_secs(600),
    });
    worker.record(&deleted("203.0.113.5:50000", DeleteReason::Expired));
    worker.record(&denied(DenyReason::LinkLocal));
    worker.record(&auth_failed(AuthFailure::BadIntegrity));
    worker.relayed(Direction::ClientToPeer, 100);
    worker.record(&peer_opened(true));
    worker.record(&peer_closed(PeerCloseReason::NotBound));
    worker.tcp_relayed(Direction::PeerToClient, 10);
    worker.binding(ClientTransport::Udp, false);
    worker.set_relay_ports_in_use(1);
}

/// Something a worker does, and the series it must move by how much.
type Case = (Box<dyn Fn(&WorkerMetrics)>, BTreeMap<String, f64>);

#[test]
fn each_event_moves_exactly_its_series() {
    let requests = "icebreaker_turn_requests_total";
    let cases: Vec<Case> = vec![
        (
            Box::new(|w| w.record(&answered(Method::ALLOCATE, None))),
            expect(&[(
                &format!("{requests}{{method=\"Allocate\",result=\"success\"}}"),
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.record(&answered(Method::REFRESH, Some(438)))),
            expect(&[(
                &format!("{requests}{{method=\"Refresh\",result=\"438\"}}"),
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.record(&answered(Method::CHANNEL_BIND, Some(403)))),
            expect(&[(
                &format!("{requests}{{method=\"ChannelBind\",result=\"403\"}}"),
                1.0,
            )]),
        ),
        (
            // A code outside the exported set appears when it happens.
            Box::new(|w| w.record(&answered(Method::CREATE_PERMISSION, Some(599)))),
            expect(&[(
                &format!("{requests}{{method=\"CreatePermission\",result=\"599\"}}"),
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.record(&answered(Method::CONNECT, Some(447)))),
            expect(&[(
                &format!("{requests}{{method=\"Connect\",result=\"447\"}}"),
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.record(&answered(Method::CONNECTION_BIND, None))),
            expect(&[(
                &format!("{requests}{{method=\"ConnectionBind\",result=\"success\"}}"),
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.record(&peer_opened(true))),
            expect(&[
                (
                    "icebreaker_turn_peer_connections_opened_total{origin=\"connect\"}",
                    1.0,
                ),
                ("icebreaker_turn_peer_connections_open", 1.0),
            ]),
        ),
        (
            Box::new(|w| w.record(&peer_opened(false))),
            expect(&[
                (
                    "icebreaker_turn_peer_connections_opened_total{origin=\"peer\"}",
                    1.0,
                ),
                ("icebreaker_turn_peer_connections_open", 1.0),
            ]),
        ),
        (
            Box::new(|w| w.tcp_relayed(Direction::ClientToPeer, 1000)),
            expect(&[(
                "icebreaker_turn_tcp_relayed_bytes_total{direction=\"client_to_peer\"}",
                1000.0,
            )]),
        ),
        (
            Box::new(|w| w.record(&answered(Method::BINDING, Some(400)))),
            expect(&[(
                &format!("{requests}{{method=\"other\",result=\"400\"}}"),
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.record(&created("203.0.113.5:50000"))),
            expect(&[
                ("icebreaker_turn_allocations_created_total", 1.0),
                ("icebreaker_turn_allocations_active{family=\"ipv4\"}", 1.0),
            ]),
        ),
        (
            Box::new(|w| w.record(&created("[2001:db8::5]:50000"))),
            expect(&[
                ("icebreaker_turn_allocations_created_total", 1.0),
                ("icebreaker_turn_allocations_active{family=\"ipv6\"}", 1.0),
            ]),
        ),
        (
            Box::new(|w| w.record(&created("[::ffff:203.0.113.5]:50000"))),
            expect(&[
                ("icebreaker_turn_allocations_created_total", 1.0),
                ("icebreaker_turn_allocations_active{family=\"ipv4\"}", 1.0),
            ]),
        ),
        (
            Box::new(|w| {
                w.record(&Event::AllocationRefreshed {
                    five_tuple: five_tuple(),
                    relay: "203.0.113.5:50000".parse().unwrap(),
                    lifetime: Duration::from_secs(600),
                });
            }),
            expect(&[]),
        ),
        (
            Box::new(|w| w.record(&deleted("203.0.113.5:50000", DeleteReason::Expired))),
            expect(&[
                ("icebreaker_turn_allocations_active{family=\"ipv4\"}", -1.0),
                (
                    "icebreaker_turn_allocations_deleted_total{reason=\"expired\"}",
                    1.0,
                ),
            ]),
        ),
        (
            Box::new(|w| w.record(&deleted("[2001:db8::5]:50000", DeleteReason::Refresh))),
            expect(&[
                ("icebreaker_turn_allocations_active{family=\"ipv6\"}", -1.0),
                (
                    "icebreaker_turn_allocations_deleted_total{reason=\"refresh\"}",
                    1.0,
                ),
            ]),
        ),
        (
            Box::new(|w| w.relayed(Direction::ClientToPeer, 100)),
            expect(&[
                (
                    "icebreaker_turn_relayed_packets_total{direction=\"client_to_peer\"}",
                    1.0,
                ),
                (
                    "icebreaker_turn_relayed_bytes_total{direction=\"client_to_peer\"}",
                    100.0,
                ),
            ]),
        ),
        (
            Box::new(|w| w.relayed(Direction::PeerToClient, 1200)),
            expect(&[
                (
                    "icebreaker_turn_relayed_packets_total{direction=\"peer_to_client\"}",
                    1.0,
                ),
                (
                    "icebreaker_turn_relayed_bytes_total{direction=\"peer_to_client\"}",
                    1200.0,
                ),
            ]),
        ),
        (
            Box::new(|w| w.binding(ClientTransport::Udp, false)),
            expect(&[(
                "icebreaker_stun_binding_requests_total{transport=\"udp\",family=\"ipv4\"}",
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.binding(ClientTransport::Tls, true)),
            expect(&[(
                "icebreaker_stun_binding_requests_total{transport=\"tls\",family=\"ipv6\"}",
                1.0,
            )]),
        ),
        (
            Box::new(|w| w.set_relay_ports_in_use(7)),
            expect(&[("icebreaker_turn_relay_ports_in_use", 7.0)]),
        ),
    ];
    for (act, expected) in cases {
        let metrics = Metrics::new(1000);
        let worker = metrics.worker();
        assert_eq!(changes(&metrics, || act(&worker)), expected);
    }

    for reason in AuthFailure::ALL {
        let metrics = Metrics::new(1000);
        let worker = metrics.worker();
        let key = format!(
            "icebreaker_turn_auth_failures_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        let moved = changes(&metrics, || worker.record(&auth_failed(reason)));
        assert_eq!(moved, expect(&[(&key, 1.0)]));
    }
    for reason in DenyReason::ALL {
        let metrics = Metrics::new(1000);
        let worker = metrics.worker();
        let key = format!(
            "icebreaker_turn_peer_denied_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        let moved = changes(&metrics, || worker.record(&denied(reason)));
        assert_eq!(moved, expect(&[(&key, 1.0)]));
    }
    for reason in PeerCloseReason::ALL {
        let metrics = Metrics::new(1000);
        let worker = metrics.worker();
        let key = format!(
            "icebreaker_turn_peer_connections_closed_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        let moved = changes(&metrics, || worker.record(&peer_closed(reason)));
        let open = "icebreaker_turn_peer_connections_open";
        assert_eq!(moved, expect(&[(&key, 1.0), (open, -1.0)]));
    }
}

#[test]
fn known_series_are_exported_at_zero_from_the_start() {
    let values = values(&Metrics::new(16384));
    for key in [
        "icebreaker_turn_requests_total{method=\"Allocate\",result=\"success\"}",
        "icebreaker_turn_requests_total{method=\"Allocate\",result=\"486\"}",
        "icebreaker_turn_requests_total{method=\"Allocate\",result=\"500\"}",
        "icebreaker_turn_requests_total{method=\"Allocate\",result=\"508\"}",
        "icebreaker_turn_requests_total{method=\"other\",result=\"401\"}",
        "icebreaker_turn_auth_failures_total{reason=\"missing_integrity\"}",
        "icebreaker_turn_peer_denied_total{reason=\"link_local\"}",
        "icebreaker_turn_allocations_active{family=\"ipv6\"}",
        "icebreaker_stun_binding_requests_total{transport=\"dtls\",family=\"ipv6\"}",
        "icebreaker_turn_relay_ports_in_use",
        "icebreaker_turn_requests_total{method=\"Connect\",result=\"447\"}",
        "icebreaker_turn_requests_total{method=\"ConnectionBind\",result=\"success\"}",
        "icebreaker_turn_peer_connections_closed_total{reason=\"not_bound\"}",
        "icebreaker_turn_peer_connections_opened_total{origin=\"peer\"}",
        "icebreaker_turn_peer_connections_open",
        "icebreaker_turn_tcp_relayed_bytes_total{direction=\"peer_to_client\"}",
        "icebreaker_connections_closed_total{transport=\"tls\",reason=\"peer_connection\"}",
    ] {
        assert_eq!(values.get(key), Some(&0.0), "{key}");
    }
    assert_eq!(values["icebreaker_turn_relay_ports_capacity"], 16384.0);
    let build = format!(
        "icebreaker_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(values[&build], 1.0);
}

#[test]
fn no_address_or_username_reaches_a_label() {
    let metrics = Metrics::new(1000);
    record_one_of_each(&metrics.worker());
    let text = metrics.encode();
    for secret in [
        "alice",
        "192.0.2.1",
        "203.0.113.5",
        "10.1.2.3",
        "198.51.100.1",
        "203.0.113.9",
    ] {
        assert!(!text.contains(secret), "{secret} in the exposition");
    }
}

#[test]
fn workers_add_up() {
    let metrics = Metrics::new(1000);
    let (a, b) = (metrics.worker(), metrics.worker());
    let moved = changes(&metrics, || {
        a.relayed(Direction::ClientToPeer, 100);
        b.relayed(Direction::ClientToPeer, 50);
        b.relayed(Direction::ClientToPeer, 25);
        a.record(&created("203.0.113.5:50000"));
        b.record(&created("203.0.113.5:50001"));
        a.set_relay_ports_in_use(3);
        b.set_relay_ports_in_use(4);
        a.record(&auth_failed(AuthFailure::Expired));
        b.record(&auth_failed(AuthFailure::Expired));
    });
    assert_eq!(
        moved,
        expect(&[
            (
                "icebreaker_turn_relayed_packets_total{direction=\"client_to_peer\"}",
                3.0
            ),
            (
                "icebreaker_turn_relayed_bytes_total{direction=\"client_to_peer\"}",
                175.0
            ),
            ("icebreaker_turn_allocations_created_total", 2.0),
            ("icebreaker_turn_allocations_active{family=\"ipv4\"}", 2.0),
            ("icebreaker_turn_relay_ports_in_use", 7.0),
            (
                "icebreaker_turn_auth_failures_total{reason=\"expired\"}",
                2.0
            ),
        ])
    );
}

#[test]
fn workers_count_from_their_own_threads() {
    let metrics = Metrics::new(1000);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let worker = metrics.worker();
            thread::spawn(move || {
                for _ in 0..10_000 {
                    worker.relayed(Direction::PeerToClient, 10);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let values = values(&metrics);
    let packets = "icebreaker_turn_relayed_packets_total{direction=\"peer_to_client\"}";
    let bytes = "icebreaker_turn_relayed_bytes_total{direction=\"peer_to_client\"}";
    assert_eq!(values[packets], 40_000.0);
    assert_eq!(values[bytes], 400_000.0);
}

#[test]
fn an_ended_worker_keeps_its_counts_but_not_its_gauges() {
    let metrics = Metrics::new(1000);
    let stays = metrics.worker();
    let ends = metrics.worker();
    let clone = ends.clone();
    for worker in [&stays, &ends] {
        worker.record(&created("203.0.113.5:50000"));
        worker.set_relay_ports_in_use(2);
        worker.relayed(Direction::ClientToPeer, 10);
    }
    drop(ends);
    let active = "icebreaker_turn_allocations_active{family=\"ipv4\"}";
    let ports = "icebreaker_turn_relay_ports_in_use";
    let packets = "icebreaker_turn_relayed_packets_total{direction=\"client_to_peer\"}";
    // A clone still runs: the worker has not ended.
    assert_eq!(values(&metrics)[ports], 4.0);
    drop(clone);
    let after = values(&metrics);
    assert_eq!(after[active], 1.0);
    assert_eq!(after[ports], 2.0);
    assert_eq!(after[packets], 2.0);
    assert_eq!(after["icebreaker_turn_allocations_created_total"], 2.0);
    // Its counts were folded into the registry's; they stay there, scrape after scrape.
    assert_eq!(values(&metrics), after);
    let restarted = metrics.worker();
    restarted.relayed(Direction::ClientToPeer, 10);
    assert_eq!(values(&metrics)[packets], 3.0);
}

// --- The alert rules ---------------------------------------------------------------------------

const RULES: &str = include_str!("../../../deploy/prometheus/icebreaker.rules.yml");
const PROMETHEUS: &str = include_str!("../../../deploy/prometheus/prometheus.yml");

/// Every metric name and label matcher the rules use is one the exporter emits, so that a
/// renamed metric or label value fails here rather than silently never alerting.
#[test]
fn the_alert_rules_use_only_what_the_exporter_emits() {
    let metrics = Metrics::new(1000);
    record_one_of_each(&metrics.worker());
    let samples = parse(&metrics.encode());

    let mut used = BTreeSet::new();
    for (at, _) in RULES.match_indices("icebreaker_") {
        if RULES[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &RULES[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        let series: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        assert!(
            !series.is_empty(),
            "the rules use {name}, which the exporter does not emit"
        );
        used.insert(name.to_owned());

        let Some(selector) = rest[end..].strip_prefix('{') else {
            continue;
        };
        let selector = &selector[..selector.find('}').expect("selector closed")];
        for matcher in selector.split(',').map(str::trim) {
            let (label, op, value) = ["!=", "=~", "!~", "="]
                .iter()
                .find_map(|op| {
                    matcher
                        .split_once(op)
                        .map(|(l, v)| (l.trim(), *op, v.trim().trim_matches('"')))
                })
                .unwrap_or_else(|| panic!("matcher {matcher:?}"));
            let emitted: BTreeSet<&str> = series
                .iter()
                .flat_map(|s| &s.labels)
                .filter(|(l, _)| l == label)
                .map(|(_, v)| v.as_str())
                .collect();
            assert!(!emitted.is_empty(), "{name} has no label {label}");
            // Regular expressions are checked when they are plain alternations.
            let literals: Vec<&str> = match op {
                "=" | "!=" => vec![value],
                _ if value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|') =>
                {
                    value.split('|').collect()
                }
                _ => vec![],
            };
            for literal in literals {
                assert!(
                    emitted.contains(literal),
                    "{name}{{{label}{op}...}}: {literal:?} is not a value of {label}: {emitted:?}"
                );
            }
        }
    }
    for name in [
        "icebreaker_turn_auth_failures_total",
        "icebreaker_turn_relay_ports_in_use",
        "icebreaker_turn_relay_ports_capacity",
        "icebreaker_turn_requests_total",
    ] {
        assert!(used.contains(name), "no rule uses {name}");
    }
    assert!(RULES.contains("up{job=\"icebreaker\"} == 0"));
}

#[test]
fn the_scrape_config_loads_the_rules_and_scrapes_the_metrics_port() {
    assert!(PROMETHEUS.contains("icebreaker.rules.yml"));
    assert!(PROMETHEUS.contains("icebreaker:9641"));
    assert!(PROMETHEUS.contains("job_name: icebreaker"));
}
