//! The worker's side of TCP allocations (RFC 6062): listeners on relayed addresses, the
//! connections the server opens to peers for a Connect, the connections peers open, and the
//! splice of each with its client data connection.
//!
//! The TURN core decides; this module owns the sockets. After every call into the core the
//! worker drains its commands (connect, close) and its messages for control connections
//! ([`Worker::tcp_work`]). A peer connection and its data connection live together in one
//! [`Pair`] under one poll token; [`Pair::pump`] moves bytes both ways through two bounded
//! buffers, so that a side that cannot take more stops the other from being read (its TCP
//! window then closes on the sender). A FIN on one side is passed on as a FIN (a TLS
//! close_notify towards a TLS client) once what came before it is delivered; the pair closes
//! when both directions have ended, or at once when either side fails.
//!
//! A ConnectionBind names a connection id whose top 8 bits are the tag of the worker whose core
//! issued it. `SO_REUSEPORT` hands a new connection to any worker, so the first frame of each
//! is looked at ([`TcpRelay::route`]) and a ConnectionBind for another worker's id is moved
//! there, TLS session and unread bytes included, through that worker's control channel.

mod pair;
mod sockets;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use icebreaker_turn::{Command, ConnectionId, connection_bind_id, connection_id_tag};
use mio::net::TcpStream;
use mio::{Interest, Token, Waker};
use tracing::debug;

use super::streams::Detached;
use super::{CONN_BASE, Control, Io, Worker};
use crate::metrics::Direction;
use crate::stream::{CloseReason, FrameReader};
use pair::{DataConnection, Pair, Pumped};
pub(super) use sockets::Listeners;
pub(crate) use sockets::TcpRelayPorts;
use sockets::{connect_from, connect_outcome};

/// TCP relay tokens start here, above every UDP relay socket (one per port and family):
/// listeners first, then pairs, all below [`CONN_BASE`].
pub(super) const TCP_BASE: usize = 1 << 22;
/// Listener slots: one per port and family is all there can be.
const LISTENER_SLOTS: usize = 1 << 18;
/// Pair tokens start here.
const PAIR_BASE: usize = TCP_BASE + LISTENER_SLOTS;
/// Pair slots, so that no pair token reaches the connection range.
const PAIR_SLOTS: usize = CONN_BASE - PAIR_BASE;

/// Raw bytes read per call.
const SCRATCH: usize = 16 * 1024;
/// Connections accepted per listener per wakeup; the rest wait for the next round.
const ACCEPTS_PER_ROUND: usize = 64;
/// Rounds of the core's commands and messages drained per wakeup: closing a control
/// connection while sending a message yields more commands, but not forever.
const DRAIN_ROUNDS: usize = 16;

/// Another worker of the same server, to hand a connection to.
pub(crate) struct Sibling {
    /// Its control channel.
    pub(crate) sender: Sender<Control>,
    /// Wakes its event loop.
    pub(crate) waker: Arc<Waker>,
}

/// What the workers of one server share for TCP allocations.
#[derive(Clone)]
pub(crate) struct Crew {
    /// Every worker, by index, the worker itself included.
    pub(crate) workers: Arc<[Sibling]>,
    /// The listening ports of TCP allocations.
    pub(crate) ports: TcpRelayPorts,
}

/// How a new client connection leaves the stream side after a frame.
pub(super) enum Handover {
    /// Its ConnectionBind succeeded (the answer is queued): from now on it is the data
    /// connection of peer connection `id`, and the bytes of its reader from `from` on are the
    /// client's first data.
    Pipe { id: ConnectionId, from: usize },
    /// Its first frame is a ConnectionBind for a connection of worker `worker`, which gets it
    /// with the bytes of its reader from `from` on.
    Route { worker: usize, from: usize },
}

/// The pairs of one worker, and the connections waiting to move in.
pub(super) struct TcpRelay {
    pairs: Vec<Option<Pair>>,
    free: Vec<usize>,
    by_id: HashMap<ConnectionId, usize>,
    /// Peer connections allowed at once on this worker.
    max_pairs: usize,
    /// Pairs that used their budget with work left, for the next round.
    again: Vec<(usize, ConnectionId)>,
    /// Listeners with connections perhaps left in their backlog.
    accept_again: Vec<SocketAddr>,
    /// Connections other workers handed over, to adopt.
    pub(super) adopted: Vec<Detached>,
    /// This worker's index among `crew`.
    index: usize,
    crew: Option<Crew>,
    scratch: Vec<u8>,
}

impl TcpRelay {
    /// No pairs yet; at most `max_pairs` peer connections at once.
    pub(super) fn new(max_pairs: usize) -> TcpRelay {
        TcpRelay {
            pairs: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            max_pairs: max_pairs.min(PAIR_SLOTS),
            again: Vec::new(),
            accept_again: Vec::new(),
            adopted: Vec::new(),
            index: 0,
            crew: None,
            scratch: vec![0; SCRATCH],
        }
    }

    /// When the loop must come round again at once: some pair or listener has work left.
    pub(super) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        (!self.again.is_empty() || !self.accept_again.is_empty() || !self.adopted.is_empty())
            .then_some(now)
    }

    /// The worker a new connection whose first frame is `frame` belongs to, when that is
    /// another one: a ConnectionBind carries the tag of the worker that issued its id.
    pub(super) fn route(&self, frame: &[u8]) -> Option<usize> {
        let crew = self.crew.as_ref()?;
        let worker = usize::from(connection_id_tag(connection_bind_id(frame)?));
        (worker != self.index && worker < crew.workers.len()).then_some(worker)
    }

    fn insert(&mut self, pair: Pair) -> Option<usize> {
        if self.by_id.len() >= self.max_pairs {
            return None;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(None);
            self.pairs.len() - 1
        });
        self.by_id.insert(pair.id, slot);
        self.pairs[slot] = Some(pair);
        Some(slot)
    }

    fn remove(&mut self, slot: usize) -> Option<Pair> {
        let pair = self.pairs.get_mut(slot).and_then(Option::take)?;
        self.by_id.remove(&pair.id);
        self.free.push(slot);
        Some(pair)
    }
}

/// How a pair ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Both directions finished.
    Finished,
    /// The peer connection failed.
    PeerFailed,
    /// The data connection failed or closed.
    ClientFailed,
    /// The core commanded it closed, and forgot it already.
    Commanded,
}

impl Worker {
    /// Joins the server's other workers: connection ids get this worker's tag, ConnectionBinds
    /// for the others' ids are moved to them, and TCP relay ports are shared out.
    pub(crate) fn join_crew(&mut self, index: usize, crew: Crew) {
        // More than 256 workers share the last tag: a ConnectionBind that reaches the wrong
        // one of them is answered 400.
        self.core
            .set_connection_id_tag(u8::try_from(index).unwrap_or(u8::MAX));
        self.relays.tcp.ports = crew.ports.clone();
        self.tcp.index = index;
        self.tcp.crew = Some(crew);
    }

    /// Handles readiness of TCP relay token `token` (a listener or a pair).
    pub(super) fn tcp_ready(&mut self, token: usize, now: Instant) {
        if token < PAIR_BASE {
            let relay = self
                .relays
                .tcp
                .slots
                .get(token - TCP_BASE)
                .and_then(|s| s.as_ref().map(|(addr, _)| *addr));
            if let Some(relay) = relay {
                self.accept_peers(relay, now);
            }
            return;
        }
        let slot = token - PAIR_BASE;
        let Some(pair) = self.tcp.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if pair.connecting {
            let id = pair.id;
            match connect_outcome(&pair.peer) {
                None => return,
                Some(Err(error)) => {
                    debug!(id = id.0, %error, "connection to a peer failed");
                    if let Some(mut pair) = self.tcp.remove(slot) {
                        let _ = self.poll.registry().deregister(&mut pair.peer);
                    }
                    self.core.peer_connect_failed(id);
                    return;
                }
                Some(Ok(())) => {
                    pair.connecting = false;
                    self.core.peer_connected(now, id);
                }
            }
        }
        self.pump_pair(slot);
    }

    /// What the TCP side owes after a round of events: connections other workers moved here,
    /// pairs and listeners with work left, then the core's commands and its messages for
    /// control connections, which are flushed.
    pub(super) fn tcp_work(&mut self, io: &mut Io, now: Instant) {
        for connection in std::mem::take(&mut self.tcp.adopted) {
            self.adopt(io, connection, now);
        }
        for (slot, id) in std::mem::take(&mut self.tcp.again) {
            if self.tcp.by_id.get(&id) == Some(&slot) {
                self.pump_pair(slot);
            }
        }
        for relay in std::mem::take(&mut self.tcp.accept_again) {
            self.accept_peers(relay, now);
        }
        for _ in 0..DRAIN_ROUNDS {
            let mut busy = false;
            while let Some(command) = self.core.poll_command() {
                busy = true;
                match command {
                    Command::Connect { id, relay, peer } => self.connect(id, relay, peer),
                    Command::Close { id } => {
                        if let Some(&slot) = self.tcp.by_id.get(&id) {
                            self.end_pair(slot, Ending::Commanded);
                        }
                    }
                }
            }
            let mut sent = false;
            while let Some(transmit) = self.core.poll_transmit(&mut self.out) {
                sent = true;
                let message = &self.out[..transmit.len];
                self.streams.send_to(&transmit.client, message);
            }
            if sent {
                self.flush_connections();
            }
            if !busy && !sent {
                break;
            }
        }
    }

    /// Connection `slot` of the stream side leaves it after a frame: spliced with its peer
    /// connection, or moved to the worker that holds that connection. `closing` is why the
    /// read that brought the frame also ended the connection, if it did.
    pub(super) fn hand_over(
        &mut self,
        slot: usize,
        handover: Handover,
        closing: Option<CloseReason>,
        now: Instant,
    ) {
        let Some(detached) = self.detach(slot) else {
            return;
        };
        match handover {
            Handover::Pipe { id, from } => self.pipe(detached, id, from, closing),
            Handover::Route { worker, from } => {
                if let Some(reason) = closing.filter(|&r| r != CloseReason::Peer) {
                    self.close_detached(detached, reason);
                    return;
                }
                // A FIN that came with the frame is read again there.
                self.route_to(detached, worker, from, now);
            }
        }
    }

    fn route_to(&mut self, detached: Detached, worker: usize, from: usize, now: Instant) {
        let Detached {
            link,
            reader,
            five_tuple,
        } = detached;
        let mut unread = FrameReader::default();
        unread.push(reader.bytes().get(from..).unwrap_or_default(), now);
        let moving = Detached {
            link,
            reader: unread,
            five_tuple,
        };
        let Some(sibling) = self.tcp.crew.as_ref().and_then(|c| c.workers.get(worker)) else {
            self.close_detached(moving, CloseReason::Peer);
            return;
        };
        match sibling.sender.send(Control::Adopt(Box::new(moving))) {
            Ok(()) => {
                let _ = sibling.waker.wake();
                debug!(client = ?five_tuple, worker, "ConnectionBind moved to its worker");
            }
            Err(unsent) => {
                if let Control::Adopt(moving) = unsent.0 {
                    self.close_detached(*moving, CloseReason::Peer);
                }
            }
        }
    }

    /// Splices the data connection `detached` with peer connection `id`.
    fn pipe(
        &mut self,
        detached: Detached,
        id: ConnectionId,
        from: usize,
        closing: Option<CloseReason>,
    ) {
        let Detached {
            mut link,
            reader,
            five_tuple,
        } = detached;
        let slot = self.tcp.by_id.get(&id).copied().filter(|&slot| {
            self.tcp
                .pairs
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|p| !p.connecting && p.client.is_none())
        });
        let registered = slot.is_some_and(|slot| {
            let token = Token(PAIR_BASE + slot);
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(link.stream_mut(), token, interest)
                .is_ok()
        });
        let (Some(slot), true) = (slot, registered) else {
            // The peer connection ended meanwhile.
            let data = Detached {
                link,
                reader: FrameReader::default(),
                five_tuple,
            };
            self.close_detached(data, CloseReason::PeerConnection);
            if let Some(slot) = slot {
                self.end_pair(slot, Ending::ClientFailed);
            } else {
                self.core.peer_connection_closed(id);
            }
            return;
        };
        let Some(pair) = self.tcp.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let early = std::mem::take(&mut pair.early);
        // In pieces as the pump sends them, well within what TLS takes in one write.
        let sent = early.chunks(SCRATCH).all(|piece| link.send(piece, false));
        if !early.is_empty() {
            self.metrics
                .tcp_relayed(Direction::PeerToClient, early.len());
        }
        let first = reader.bytes().get(from..).unwrap_or_default();
        if !first.is_empty() {
            pair.to_peer.extend_from_slice(first);
            self.metrics
                .tcp_relayed(Direction::ClientToPeer, first.len());
        }
        pair.client = Some(DataConnection { link, five_tuple });
        debug!(client = ?five_tuple, id = id.0, "data connection bound");
        match closing {
            _ if !sent => {}
            None => return self.pump_pair(slot),
            // The client sent its data and its end at once.
            Some(CloseReason::Peer) => {
                pair.client_done = true;
                return self.pump_pair(slot);
            }
            Some(_) => {}
        }
        self.end_pair(slot, Ending::ClientFailed);
    }

    /// Opens the connection of a [`Command::Connect`].
    fn connect(&mut self, id: ConnectionId, relay: SocketAddr, peer: SocketAddr) {
        let stream = match connect_from(relay, peer) {
            Ok(stream) => TcpStream::from_std(stream),
            Err(error) => {
                debug!(%relay, %peer, %error, "cannot connect to a peer");
                self.core.peer_connect_failed(id);
                return;
            }
        };
        if !self.add_pair(Pair::new(id, stream, true)) {
            debug!(%relay, %peer, "no room for another peer connection");
            self.core.peer_connect_failed(id);
        }
    }

    /// Takes `pair` in and watches its peer connection; false when this worker holds all the
    /// peer connections it may, or the poller refuses.
    fn add_pair(&mut self, pair: Pair) -> bool {
        let Some(slot) = self.tcp.insert(pair) else {
            return false;
        };
        let Some(pair) = self.tcp.pairs.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = Token(PAIR_BASE + slot);
        if self
            .poll
            .registry()
            .register(&mut pair.peer, token, interest)
            .is_err()
        {
            self.tcp.remove(slot);
            return false;
        }
        true
    }

    /// Accepts the connections peers opened to the relayed address `relay`.
    fn accept_peers(&mut self, relay: SocketAddr, now: Instant) {
        for _ in 0..ACCEPTS_PER_ROUND {
            let Some(&index) = self.relays.tcp.by_addr.get(&relay) else {
                return;
            };
            let Some((_, listener)) = self.relays.tcp.slots.get(index).and_then(Option::as_ref)
            else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors, most likely: the backlog waits for the next event.
                    debug!(%relay, %error, "accept failed on a TCP relay");
                    return;
                }
            };
            if self.tcp.by_id.len() >= self.tcp.max_pairs {
                debug!(%relay, %peer, "no room for another peer connection");
                continue;
            }
            let Some(id) = self.core.accept_peer_connection(now, relay, peer) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            if !self.add_pair(Pair::new(id, stream, false)) {
                self.core.peer_connection_closed(id);
            }
        }
        self.tcp.accept_again.push(relay);
    }

    /// Pumps pair `slot` and acts on what came of it.
    fn pump_pair(&mut self, slot: usize) {
        let TcpRelay {
            pairs,
            scratch,
            again,
            ..
        } = &mut self.tcp;
        let Some(pair) = pairs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if pair.connecting {
            return;
        }
        match pair.pump(scratch, &self.metrics) {
            Pumped::Idle => {}
            Pumped::Again => again.push((slot, pair.id)),
            Pumped::Done => self.end_pair(slot, Ending::Finished),
            Pumped::PeerFailed => self.end_pair(slot, Ending::PeerFailed),
            Pumped::ClientFailed => self.end_pair(slot, Ending::ClientFailed),
        }
    }

    /// Closes pair `slot`, both connections, and tells the core unless it asked.
    fn end_pair(&mut self, slot: usize, ending: Ending) {
        let Some(mut pair) = self.tcp.remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut pair.peer);
        if let Some(mut client) = pair.client.take() {
            let reason = match ending {
                Ending::Finished | Ending::ClientFailed => CloseReason::Peer,
                Ending::PeerFailed | Ending::Commanded => {
                    // Its last words, if the socket takes them at once.
                    client.link.close_notify();
                    CloseReason::PeerConnection
                }
            };
            let _ = client.link.flush();
            let _ = self.poll.registry().deregister(client.link.stream_mut());
            self.streams.connection_ended();
            self.metrics
                .connection_closed(client.five_tuple.transport, reason);
            debug!(client = ?client.five_tuple, id = pair.id.0, reason = reason.as_str(), "data connection closed");
        }
        match ending {
            Ending::Commanded => {}
            Ending::Finished | Ending::PeerFailed | Ending::ClientFailed if pair.connecting => {
                self.core.peer_connect_failed(pair.id);
            }
            Ending::Finished | Ending::PeerFailed | Ending::ClientFailed => {
                self.core.peer_connection_closed(pair.id);
            }
        }
    }

    /// Closes a connection taken off the stream side that goes nowhere.
    fn close_detached(&mut self, detached: Detached, reason: CloseReason) {
        let Detached {
            mut link,
            five_tuple,
            ..
        } = detached;
        let _ = link.flush();
        self.streams.connection_ended();
        self.metrics.connection_closed(five_tuple.transport, reason);
        debug!(client = ?five_tuple, reason = reason.as_str(), "connection closed");
    }
}
