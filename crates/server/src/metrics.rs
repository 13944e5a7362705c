//! Live metrics: counters and gauges that the workers move as things happen, exposed in the
//! Prometheus text format by [`serve_http`].
//!
//! Each worker thread gets a [`WorkerMetrics`] with cells of its own; a scrape
//! ([`Metrics::encode`]) sums every worker's cells. So the relay path pays two relaxed atomic
//! adds per packet on a cache line no other core writes, and nothing waits for the session to
//! end before it counts (coturn updates its counters only then).
//!
//! # Why plain atomics and not prometheus-client
//!
//! prometheus-client (0.25) gives each labelled series one shared `AtomicU64`: every worker
//! would add to the same cache lines, which is the cross-core traffic the worker design avoids.
//! Keeping per-worker cells with it means a custom collector that sums them anyway, so the
//! library would only format the text. Every label here comes from a small closed set (a
//! method, an error code, a reason enum), so each series is a fixed array slot, found by a
//! `match` instead of a locked map lookup, and the exposition is a short loop over those
//! arrays. It also keeps one dependency (and its derive macros) out of the daemon. The price
//! is that this module writes the format itself: the version 0.0.4 text format, where label
//! values are escaped even though all of them are fixed ASCII today.
//!
//! Series whose labels are known in advance are exported at zero from the start, so that
//! `rate()` sees the first increment; an error code outside [`EXPORTED_ERRORS`] appears once
//! it has happened.

use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use icebreaker_turn::{AuthFailure, ClientTransport, DeleteReason, DenyReason, Event};
use icebreaker_wire::{ErrorCode, Method};

use crate::stream::CloseReason;

mod http;
mod tcp_relay;

pub use http::{MAX_REQUEST_HEAD, METRICS_CONTENT_TYPE, REQUEST_DEADLINE, serve_http};

/// The way a relayed packet went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client, through its allocation, to a peer.
    ClientToPeer,
    /// From a peer to the client whose allocation it reached.
    PeerToClient,
}

impl Direction {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToPeer => "client_to_peer",
            Direction::PeerToClient => "peer_to_client",
        }
    }

    const ALL: [Direction; 2] = [Direction::ClientToPeer, Direction::PeerToClient];
}

/// Error codes whose request series are exported before any such answer: those the TURN core
/// answers with, and 500, which the alert rules watch.
pub const EXPORTED_ERRORS: [ErrorCode; 15] = [
    ErrorCode::BAD_REQUEST,
    ErrorCode::UNAUTHENTICATED,
    ErrorCode::FORBIDDEN,
    ErrorCode::UNKNOWN_ATTRIBUTE,
    ErrorCode::ALLOCATION_MISMATCH,
    ErrorCode::STALE_NONCE,
    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
    ErrorCode::WRONG_CREDENTIALS,
    ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
    ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    ErrorCode::ALLOCATION_QUOTA_REACHED,
    ErrorCode::CONNECTION_ALREADY_EXISTS,
    ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE,
    ErrorCode::SERVER_ERROR,
    ErrorCode::INSUFFICIENT_CAPACITY,
];

/// Every metric of the server. Shared by the workers (through [`Metrics::worker`]) and the
/// HTTP endpoint.
pub struct Metrics {
    relay_port_capacity: u64,
    registry: Mutex<Registry>,
}

/// The cells of the workers that run, and what the ended ones counted.
struct Registry {
    live: Vec<Arc<Cells>>,
    /// Counters of workers that have ended, kept so that no counter goes backwards. Folded in
    /// at the next scrape, so that restarting workers does not grow the registry.
    retired: Totals,
}

impl Metrics {
    /// Metrics for a server whose relay port range holds `relay_port_capacity` ports (exported
    /// as a constant gauge, so that alerts can compute the fraction in use).
    pub fn new(relay_port_capacity: u64) -> Arc<Metrics> {
        Arc::new(Metrics {
            relay_port_capacity,
            registry: Mutex::new(Registry {
                live: Vec::new(),
                retired: Totals::default(),
            }),
        })
    }

    /// A handle for one worker thread, with cells of its own.
    pub fn worker(self: &Arc<Self>) -> WorkerMetrics {
        let cells = Arc::new(Cells::new());
        self.registry().live.push(Arc::clone(&cells));
        WorkerMetrics { cells }
    }

    /// The whole exposition, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let totals = {
            let mut registry = self.registry();
            let Registry { live, retired } = &mut *registry;
            let mut still_live = Vec::with_capacity(live.len());
            for cells in live.drain(..) {
                // Only the registry holds the cells of a worker that has ended (every clone of
                // its handle dropped), and nothing can clone them again: its counters are
                // final. Its allocations and ports went with it, so its gauges are left out.
                match Arc::try_unwrap(cells) {
                    Ok(cells) => retired.add(&cells, false),
                    Err(cells) => still_live.push(cells),
                }
            }
            *live = still_live;
            let mut totals = retired.clone();
            for cells in live.iter() {
                totals.add(cells, true);
            }
            totals
        };
        totals.encode(self.relay_port_capacity)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every update under the lock leaves the registry consistent, so a panic while it
        // was held harms nothing.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The metrics of one worker thread. Every method is a few relaxed atomic operations on cells
/// that only this worker (and its clones) write: no lock, no label lookup.
#[derive(Clone)]
pub struct WorkerMetrics {
    cells: Arc<Cells>,
}

// By hand: the derived form would print some two thousand counters.
impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("relay_port_capacity", &self.relay_port_capacity)
            .field("workers", &self.registry().live.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerMetrics").finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    /// Counts one event of the TURN core.
    pub fn record(&self, event: &Event) {
        let cells = &*self.cells;
        match event {
            Event::Answered { method, error } => {
                bump(&cells.requests, request_slot(*method, *error));
            }
            Event::AllocationCreated { relay, .. } => {
                cells.allocations_created.fetch_add(1, Relaxed);
                if let Some(active) = cells.allocations_active.get(family_slot(relay.ip())) {
                    active.fetch_add(1, Relaxed);
                }
            }
            // Refreshes are counted as answered requests; a lifetime is no metric.
            Event::AllocationRefreshed { .. } => {}
            Event::AllocationDeleted { relay, reason, .. } => {
                if let Some(active) = cells.allocations_active.get(family_slot(relay.ip())) {
                    active.fetch_sub(1, Relaxed);
                }
                bump(&cells.allocations_deleted, delete_slot(*reason));
            }
            Event::PeerDenied { reason, .. } => bump(&cells.peer_denied, *reason as usize),
            Event::AuthFailed { reason, .. } => bump(&cells.auth_failures, *reason as usize),
            Event::PeerConnectionOpened { .. } | Event::PeerConnectionClosed { .. } => {
                cells.tcp.record(event);
            }
        }
    }

    /// Counts one relayed packet of `bytes` payload bytes.
    #[inline]
    pub fn relayed(&self, direction: Direction, bytes: usize) {
        let i = direction as usize;
        bump(&self.cells.relayed_packets, i);
        if let Some(total) = self.cells.relayed_bytes.get(i) {
            total.fetch_add(bytes as u64, Relaxed);
        }
    }

    /// Counts `bytes` spliced one way between a data connection and its peer connection
    /// (RFC 6062).
    #[inline]
    pub fn tcp_relayed(&self, direction: Direction, bytes: usize) {
        self.cells.tcp.relayed(direction, bytes);
    }

    /// Counts one STUN Binding request answered over `transport`, from an IPv6 client or not.
    pub fn binding(&self, transport: ClientTransport, ipv6: bool) {
        bump(
            &self.cells.bindings,
            transport_slot(transport) * FAMILIES.len() + usize::from(ipv6),
        );
    }

    /// Counts a TCP or TLS connection accepted, or a DTLS session whose client proved its
    /// address, over `transport`.
    pub(crate) fn connection_opened(&self, transport: ClientTransport) {
        let t = transport_slot(transport);
        bump(&self.cells.connections_opened, t);
        if let Some(open) = self.cells.connections_open.get(t) {
            open.fetch_add(1, Relaxed);
        }
    }

    /// Counts a connection over `transport` closed for `reason`.
    pub(crate) fn connection_closed(&self, transport: ClientTransport, reason: CloseReason) {
        let t = transport_slot(transport);
        bump(
            &self.cells.connections_closed,
            t * CloseReason::ALL.len() + reason.index(),
        );
        if let Some(open) = self.cells.connections_open.get(t) {
            open.fetch_sub(1, Relaxed);
        }
    }

    /// Sets the number of relay ports this worker holds now.
    pub fn set_relay_ports_in_use(&self, ports: usize) {
        self.cells.relay_ports_in_use.store(ports as u64, Relaxed);
    }
}

const METHODS: [&str; 7] = [
    "Allocate",
    "Refresh",
    "CreatePermission",
    "ChannelBind",
    "Connect",
    "ConnectionBind",
    "other",
];

/// Result slots: success, then one per error code 300..=699 (all [`ErrorCode`] can hold).
const RESULTS: usize = 1 + 400;

const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

const TRANSPORTS: [ClientTransport; 4] = [
    ClientTransport::Udp,
    ClientTransport::Tcp,
    ClientTransport::Tls,
    ClientTransport::Dtls,
];

const DELETE_REASONS: [&str; 3] = ["refresh", "expired", "connection_closed"];

const AUTH_REASONS: usize = AuthFailure::ALL.len();

const DENY_REASONS: usize = DenyReason::ALL.len();

fn method_slot(method: Method) -> usize {
    match method {
        Method::ALLOCATE => 0,
        Method::REFRESH => 1,
        Method::CREATE_PERMISSION => 2,
        Method::CHANNEL_BIND => 3,
        Method::CONNECT => 4,
        Method::CONNECTION_BIND => 5,
        _ => 6,
    }
}

fn result_slot(error: Option<ErrorCode>) -> usize {
    match error {
        None => 0,
        Some(code) => usize::from(code.code().saturating_sub(299)).min(RESULTS - 1),
    }
}

fn request_slot(method: Method, error: Option<ErrorCode>) -> usize {
    method_slot(method) * RESULTS + result_slot(error)
}

fn result_label(slot: usize) -> String {
    if slot == 0 {
        "success".to_owned()
    } else {
        (slot + 299).to_string()
    }
}

fn exported_at_zero(result: usize) -> bool {
    result == 0
        || EXPORTED_ERRORS
            .iter()
            .any(|&e| result_slot(Some(e)) == result)
}

fn family_slot(ip: std::net::IpAddr) -> usize {
    // A dual-stack socket reports IPv4 relays as IPv4-mapped IPv6.
    usize::from(ip.to_canonical().is_ipv6())
}

fn transport_slot(transport: ClientTransport) -> usize {
    match transport {
        ClientTransport::Udp => 0,
        ClientTransport::Tcp => 1,
        ClientTransport::Tls => 2,
        ClientTransport::Dtls => 3,
    }
}

fn delete_slot(reason: DeleteReason) -> usize {
    // Exhaustive, so that a new reason in the core fails to compile here until it has a label.
    match reason {
        DeleteReason::Refresh => 0,
        DeleteReason::Expired => 1,
        DeleteReason::ConnectionClosed => 2,
    }
}

#[inline]
fn bump(cells: &[AtomicU64], slot: usize) {
    if let Some(cell) = cells.get(slot) {
        cell.fetch_add(1, Relaxed);
    }
}

/// One worker's cells. Aligned so that two workers' cells never share a cache line (or the
/// adjacent line the prefetcher pairs with it).
#[repr(align(128))]
struct Cells {
    relayed_packets: [AtomicU64; 2],
    relayed_bytes: [AtomicU64; 2],
    relay_ports_in_use: AtomicU64,
    allocations_created: AtomicU64,
    allocations_active: [AtomicI64; FAMILIES.len()],
    allocations_deleted: [AtomicU64; DELETE_REASONS.len()],
    auth_failures: [AtomicU64; AUTH_REASONS],
    peer_denied: [AtomicU64; DENY_REASONS],
    bindings: [AtomicU64; TRANSPORTS.len() * FAMILIES.len()],
    connections_opened: [AtomicU64; TRANSPORTS.len()],
    connections_open: [AtomicI64; TRANSPORTS.len()],
    connections_closed: [AtomicU64; TRANSPORTS.len() * CloseReason::ALL.len()],
    /// Method-major: `method_slot * RESULTS + result_slot`. 22 KiB, the price of finding any
    /// error code's slot without a map.
    requests: [AtomicU64; METHODS.len() * RESULTS],
    tcp: tcp_relay::TcpCells,
}

impl Cells {
    fn new() -> Cells {
        Cells {
            relayed_packets: [const { AtomicU64::new(0) }; 2],
            relayed_bytes: [const { AtomicU64::new(0) }; 2],
            relay_ports_in_use: AtomicU64::new(0),
            allocations_created: AtomicU64::new(0),
            allocations_active: [const { AtomicI64::new(0) }; FAMILIES.len()],
            allocations_deleted: [const { AtomicU64::new(0) }; DELETE_REASONS.len()],
            auth_failures: [const { AtomicU64::new(0) }; AUTH_REASONS],
            peer_denied: [const { AtomicU64::new(0) }; DENY_REASONS],
            bindings: [const { AtomicU64::new(0) }; TRANSPORTS.len() * FAMILIES.len()],
            connections_opened: [const { AtomicU64::new(0) }; TRANSPORTS.len()],
            connections_open: [const { AtomicI64::new(0) }; TRANSPORTS.len()],
            connections_closed: [const { AtomicU64::new(0) };
                TRANSPORTS.len() * CloseReason::ALL.len()],
            requests: [const { AtomicU64::new(0) }; METHODS.len() * RESULTS],
            tcp: tcp_relay::TcpCells::new(),
        }
    }
}

/// The sum of every worker's cells at one scrape.
#[derive(Clone)]
struct Totals {
    relayed_packets: [u64; 2],
    relayed_bytes: [u64; 2],
    relay_ports_in_use: u64,
    allocations_created: u64,
    allocations_active: [i64; FAMILIES.len()],
    allocations_deleted: [u64; DELETE_REASONS.len()],
    auth_failures: [u64; AUTH_REASONS],
    peer_denied: [u64; DENY_REASONS],
    bindings: [u64; TRANSPORTS.len() * FAMILIES.len()],
    connections_opened: [u64; TRANSPORTS.len()],
    connections_open: [i64; TRANSPORTS.len()],
    connections_closed: [u64; TRANSPORTS.len() * CloseReason::ALL.len()],
    requests: Vec<u64>,
    tcp: tcp_relay::TcpTotals,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            relayed_packets: [0; 2],
            relayed_bytes: [0; 2],
            relay_ports_in_use: 0,
            allocations_created: 0,
            allocations_active: [0; FAMILIES.len()],
            allocations_deleted: [0; DELETE_REASONS.len()],
            auth_failures: [0; AUTH_REASONS],
            peer_denied: [0; DENY_REASONS],
            bindings: [0; TRANSPORTS.len() * FAMILIES.len()],
            connections_opened: [0; TRANSPORTS.len()],
            connections_open: [0; TRANSPORTS.len()],
            connections_closed: [0; TRANSPORTS.len() * CloseReason::ALL.len()],
            requests: vec![0; METHODS.len() * RESULTS],
            tcp: tcp_relay::TcpTotals::default(),
        }
    }
}

fn add_all<const N: usize>(sums: &mut [u64], cells: &[AtomicU64; N]) {
    for (sum, cell) in sums.iter_mut().zip(cells) {
        *sum = sum.wrapping_add(cell.load(Relaxed));
    }
}

impl Totals {
    fn add(&mut self, cells: &Cells, live: bool) {
        add_all(&mut self.relayed_packets, &cells.relayed_packets);
        add_all(&mut self.relayed_bytes, &cells.relayed_bytes);
        self.allocations_created = self
            .allocations_created
            .wrapping_add(cells.allocations_created.load(Relaxed));
        add_all(&mut self.allocations_deleted, &cells.allocations_deleted);
        add_all(&mut self.auth_failures, &cells.auth_failures);
        add_all(&mut self.peer_denied, &cells.peer_denied);
        add_all(&mut self.bindings, &cells.bindings);
        add_all(&mut self.requests, &cells.requests);
        add_all(&mut self.connections_opened, &cells.connections_opened);
        add_all(&mut self.connections_closed, &cells.connections_closed);
        self.tcp.add(&cells.tcp, live);
        if live {
            for (sum, cell) in self
                .connections_open
                .iter_mut()
                .zip(&cells.connections_open)
            {
                *sum = sum.wrapping_add(cell.load(Relaxed));
            }
            self.relay_ports_in_use = self
                .relay_ports_in_use
                .wrapping_add(cells.relay_ports_in_use.load(Relaxed));
            for (sum, cell) in self
                .allocations_active
                .iter_mut()
                .zip(&cells.allocations_active)
            {
                *sum = sum.wrapping_add(cell.load(Relaxed));
            }
        }
    }

    fn encode(&self, relay_port_capacity: u64) -> String {
        let mut out = Exposition(String::with_capacity(16 * 1024));

        out.family(
            "icebreaker_build_info",
            "gauge",
            "The running build; always 1.",
        );
        out.sample(
            "icebreaker_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );

        let name = "icebreaker_stun_binding_requests_total";
        out.family(name, "counter", "STUN Binding requests answered.");
        for (t, transport) in TRANSPORTS.iter().enumerate() {
            for (f, family) in FAMILIES.iter().enumerate() {
                let value = self.bindings[t * FAMILIES.len() + f];
                out.sample(
                    name,
                    &[("transport", transport.as_str()), ("family", family)],
                    value,
                );
            }
        }

        // UDP has no connections; a DTLS session counts as one.
        let streams = [
            ClientTransport::Tcp,
            ClientTransport::Tls,
            ClientTransport::Dtls,
        ];
        let name = "icebreaker_connections_opened_total";
        out.family(
            name,
            "counter",
            "TCP and TLS connections accepted and DTLS sessions past the cookie exchange, by \
             transport.",
        );
        for transport in streams {
            let value = self.connections_opened[transport_slot(transport)];
            out.sample(name, &[("transport", transport.as_str())], value);
        }
        let name = "icebreaker_connections_open";
        out.family(
            name,
            "gauge",
            "TCP and TLS connections and DTLS sessions open now, by transport.",
        );
        for transport in streams {
            let value = self.connections_open[transport_slot(transport)];
            out.sample(name, &[("transport", transport.as_str())], value);
        }
        let name = "icebreaker_connections_closed_total";
        out.family(
            name,
            "counter",
            "TCP and TLS connections and DTLS sessions closed, by transport and reason (peer: \
             the client or network closed it; idle, slow_frame, frame_too_long, bad_frame, tls, \
             proxy_protocol, limit, backlog, throttled: the server did; peer_connection: a data \
             connection whose peer connection or allocation ended).",
        );
        for transport in streams {
            let t = transport_slot(transport);
            for reason in CloseReason::ALL {
                let value = self.connections_closed[t * CloseReason::ALL.len() + reason.index()];
                out.sample(
                    name,
                    &[
                        ("transport", transport.as_str()),
                        ("reason", reason.as_str()),
                    ],
                    value,
                );
            }
        }

        let name = "icebreaker_turn_requests_total";
        out.family(
            name,
            "counter",
            "TURN requests answered, by method and result (success or the error code).",
        );
        for (m, method) in METHODS.iter().enumerate() {
            let row = &self.requests[m * RESULTS..(m + 1) * RESULTS];
            for (slot, &value) in row.iter().enumerate() {
                if value > 0 || exported_at_zero(slot) {
                    let result = result_label(slot);
                    out.sample(name, &[("method", method), ("result", &result)], value);
                }
            }
        }

        let name = "icebreaker_turn_allocations_created_total";
        out.family(name, "counter", "TURN allocations created.");
        out.sample(name, &[], self.allocations_created);

        let name = "icebreaker_turn_allocations_active";
        out.family(
            name,
            "gauge",
            "TURN allocations that exist now, by relay address family.",
        );
        for (family, &value) in FAMILIES.iter().zip(&self.allocations_active) {
            out.sample(name, &[("family", family)], value);
        }

        let name = "icebreaker_turn_allocations_deleted_total";
        out.family(
            name,
            "counter",
            "TURN allocations ended, by reason (refresh: the client ended it; expired: its \
             lifetime ran out; connection_closed: its TCP, TLS or DTLS connection closed).",
        );
        for (reason, &value) in DELETE_REASONS.iter().zip(&self.allocations_deleted) {
            out.sample(name, &[("reason", reason)], value);
        }

        let name = "icebreaker_turn_auth_failures_total";
        out.family(
            name,
            "counter",
            "TURN requests that failed authentication, by reason. missing_integrity is every \
             client's first request and stale_nonce every nonce's end: both are normal.",
        );
        for (reason, &value) in AuthFailure::ALL.iter().zip(&self.auth_failures) {
            out.sample(name, &[("reason", reason.as_str())], value);
        }

        let name = "icebreaker_turn_peer_denied_total";
        out.family(
            name,
            "counter",
            "Peer addresses refused by the peer address policy, by reason.",
        );
        for (reason, &value) in DenyReason::ALL.iter().zip(&self.peer_denied) {
            out.sample(name, &[("reason", reason.as_str())], value);
        }

        let name = "icebreaker_turn_relayed_packets_total";
        out.family(name, "counter", "Packets relayed, by direction.");
        for (direction, &value) in Direction::ALL.iter().zip(&self.relayed_packets) {
            out.sample(name, &[("direction", direction.as_str())], value);
        }

        let name = "icebreaker_turn_relayed_bytes_total";
        out.family(
            name,
            "counter",
            "Payload bytes relayed (without STUN or ChannelData headers), by direction.",
        );
        for (direction, &value) in Direction::ALL.iter().zip(&self.relayed_bytes) {
            out.sample(name, &[("direction", direction.as_str())], value);
        }

        self.tcp.encode(&mut out);

        let name = "icebreaker_turn_relay_ports_in_use";
        out.family(name, "gauge", "Relay ports bound now.");
        out.sample(name, &[], self.relay_ports_in_use);

        let name = "icebreaker_turn_relay_ports_capacity";
        out.family(name, "gauge", "Ports in the configured relay port range.");
        out.sample(name, &[], relay_port_capacity);

        out.0
    }
}

/// A text exposition being written.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.0.push_str("# HELP ");
        self.0.push_str(name);
        self.0.push(' ');
        escape_into(&mut self.0, help, false);
        self.0.push_str("\n# TYPE ");
        self.0.push_str(name);
        self.0.push(' ');
        self.0.push_str(kind);
        self.0.push('\n');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(label);
                self.0.push_str("=\"");
                escape_into(&mut self.0, text, true);
                self.0.push('"');
            }
            self.0.push('}');
        }
        // Writing into a String cannot fail.
        let _ = writeln!(self.0, " {value}");
    }
}

/// Escapes backslash and newline (HELP text), and double quote too in label values.
fn escape_into(out: &mut String, text: &str, label_value: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_slots_follow_the_order_of_all() {
        for (i, reason) in AuthFailure::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
        for (i, reason) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
        for (i, transport) in TRANSPORTS.iter().enumerate() {
            assert_eq!(transport_slot(*transport), i);
        }
        for (i, direction) in Direction::ALL.iter().enumerate() {
            assert_eq!(*direction as usize, i);
        }
    }

    #[test]
    fn every_error_code_has_a_slot_of_its_own() {
        let mut seen = std::collections::BTreeSet::new();
        for code in 300..=699 {
            let code = ErrorCode::new(code).unwrap();
            let slot = result_slot(Some(code));
            assert!(slot < RESULTS);
            assert_eq!(result_label(slot), code.code().to_string());
            assert!(seen.insert(slot));
        }
        assert_eq!(result_label(result_slot(None)), "success");
        assert!(!seen.contains(&result_slot(None)));
    }

    #[test]
    fn ended_workers_leave_the_registry() {
        let metrics = Metrics::new(10);
        let kept = metrics.worker();
        for _ in 0..3 {
            metrics.worker().relayed(Direction::ClientToPeer, 1);
        }
        assert_eq!(metrics.registry().live.len(), 4);
        let text = metrics.encode();
        assert_eq!(metrics.registry().live.len(), 1);
        assert!(
            text.contains(
                "icebreaker_turn_relayed_packets_total{direction=\"client_to_peer\"} 3\n"
            )
        );
        drop(kept);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition(String::new());
        out.family("x", "gauge", "a \\ b\nc \"d\"");
        out.sample("x", &[("l", "q\"\\\n")], 1);
        assert_eq!(
            out.0,
            "# HELP x a \\\\ b\\nc \"d\"\n# TYPE x gauge\nx{l=\"q\\\"\\\\\\n\"} 1\n"
        );
    }
}
