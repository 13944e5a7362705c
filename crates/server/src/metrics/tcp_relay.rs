//! The series of TCP allocations (RFC 6062): peer connections opened and closed, and the bytes
//! spliced between them and their client data connections. Kept apart from the datagram
//! series: a byte stream has no packets to count.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use icebreaker_turn::{Event, PeerCloseReason};

use super::{Direction, Exposition, add_all, bump};

/// Who opened a peer connection: the label values, by `outgoing`.
const ORIGINS: [&str; 2] = ["peer", "connect"];

/// One worker's cells.
pub(super) struct TcpCells {
    opened: [AtomicU64; ORIGINS.len()],
    open: AtomicI64,
    closed: [AtomicU64; PeerCloseReason::ALL.len()],
    bytes: [AtomicU64; Direction::ALL.len()],
}

impl TcpCells {
    pub(super) fn new() -> TcpCells {
        TcpCells {
            opened: [const { AtomicU64::new(0) }; ORIGINS.len()],
            open: AtomicI64::new(0),
            closed: [const { AtomicU64::new(0) }; PeerCloseReason::ALL.len()],
            bytes: [const { AtomicU64::new(0) }; Direction::ALL.len()],
        }
    }

    /// Counts a peer connection event; others are not this module's.
    pub(super) fn record(&self, event: &Event) {
        match event {
            Event::PeerConnectionOpened { outgoing, .. } => {
                bump(&self.opened, usize::from(*outgoing));
                self.open.fetch_add(1, Relaxed);
            }
            Event::PeerConnectionClosed { reason, .. } => {
                let slot = PeerCloseReason::ALL.iter().position(|r| r == reason);
                bump(&self.closed, slot.unwrap_or(usize::MAX));
                self.open.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
    }

    /// Counts `bytes` spliced one way.
    #[inline]
    pub(super) fn relayed(&self, direction: Direction, bytes: usize) {
        if let Some(total) = self.bytes.get(direction as usize) {
            total.fetch_add(bytes as u64, Relaxed);
        }
    }
}

/// The sum of every worker's cells at one scrape.
#[derive(Clone, Default)]
pub(super) struct TcpTotals {
    opened: [u64; ORIGINS.len()],
    open: i64,
    closed: [u64; PeerCloseReason::ALL.len()],
    bytes: [u64; Direction::ALL.len()],
}

impl TcpTotals {
    pub(super) fn add(&mut self, cells: &TcpCells, live: bool) {
        add_all(&mut self.opened, &cells.opened);
        add_all(&mut self.closed, &cells.closed);
        add_all(&mut self.bytes, &cells.bytes);
        if live {
            self.open = self.open.wrapping_add(cells.open.load(Relaxed));
        }
    }

    pub(super) fn encode(&self, out: &mut Exposition) {
        let name = "icebreaker_turn_peer_connections_opened_total";
        out.family(
            name,
            "counter",
            "TCP connections between a TCP allocation's relayed address and a peer (RFC 6062) \
             established, by origin (connect: the server's, for a Connect; peer: the peer's).",
        );
        for (origin, &value) in ORIGINS.iter().zip(&self.opened) {
            out.sample(name, &[("origin", origin)], value);
        }

        let name = "icebreaker_turn_peer_connections_open";
        out.family(
            name,
            "gauge",
            "Peer connections of TCP allocations open now, bound to a data connection or \
             waiting for their ConnectionBind.",
        );
        out.sample(name, &[], self.open);

        let name = "icebreaker_turn_peer_connections_closed_total";
        out.family(
            name,
            "counter",
            "Peer connections of TCP allocations ended, by reason (closed: it or its data \
             connection closed; not_bound: no ConnectionBind within 30 s; allocation_ended; \
             peer_denied: a reloaded peer policy refuses the peer).",
        );
        for (reason, &value) in PeerCloseReason::ALL.iter().zip(&self.closed) {
            out.sample(name, &[("reason", reason.as_str())], value);
        }

        let name = "icebreaker_turn_tcp_relayed_bytes_total";
        out.family(
            name,
            "counter",
            "Bytes spliced between the data connections and peer connections of TCP \
             allocations, by direction.",
        );
        for (direction, &value) in Direction::ALL.iter().zip(&self.bytes) {
            out.sample(name, &[("direction", direction.as_str())], value);
        }
    }
}
