//! The worker's TCP and TLS side: accepting connections, feeding their frames to the same TURN
//! core and Binding service as UDP, writing answers and relayed data back, and closing the
//! connections that break a limit.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use icebreaker_turn::{ClientAction, ClientTransport, FiveTuple};
use icebreaker_wire::Message;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use tracing::debug;

use super::tcp_relay::Handover;
use super::{CONN_BASE, Io, Worker, is_binding_request};
use crate::stream::{Arrival, CloseReason, FrameReader, Link, StreamLimits, overdue};

/// How often connections are checked against their limits.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Raw bytes read per call: a few TLS records or a few dozen small frames.
const SCRATCH: usize = 64 * 1024;

/// What every worker's stream side is configured with.
#[derive(Clone)]
pub(crate) struct StreamSettings {
    /// Timeouts and the frame bound.
    pub(crate) limits: StreamLimits,
    /// The TLS configuration, when TLS listeners exist.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether every connection starts with a PROXY protocol v2 header.
    pub(crate) proxy_protocol: bool,
    /// Connections allowed at once across all workers.
    pub(crate) max_connections: usize,
    /// Connections open now across all workers.
    pub(crate) open: Arc<AtomicUsize>,
}

pub(super) struct StreamListener {
    pub(super) listener: TcpListener,
    pub(super) local: SocketAddr,
    pub(super) tls: bool,
}

struct Connection {
    link: Link<TcpStream>,
    reader: FrameReader,
    five_tuple: FiveTuple,
    last_read: Instant,
    /// Whether the poller also watches for room to write.
    writable: bool,
    /// Whether its first frame was looked at for a ConnectionBind of another worker's.
    routed: bool,
}

/// A connection taken off the stream side, still counted against the connection limit: to
/// become a data connection (RFC 6062), or to move to another worker.
pub(crate) struct Detached {
    pub(crate) link: Link<TcpStream>,
    pub(crate) reader: FrameReader,
    pub(crate) five_tuple: FiveTuple,
}

/// One worker's listeners and connections.
pub(super) struct Streams {
    pub(super) listeners: Vec<StreamListener>,
    settings: StreamSettings,
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    by_client: HashMap<FiveTuple, usize>,
    /// Connections with bytes queued since the last flush.
    dirty: Vec<usize>,
    scratch: Vec<u8>,
    next_sweep: Option<Instant>,
}

impl Streams {
    pub(super) fn new(listeners: Vec<StreamListener>, settings: StreamSettings) -> Streams {
        Streams {
            listeners,
            settings,
            connections: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            dirty: Vec::new(),
            scratch: vec![0; SCRATCH],
            next_sweep: None,
        }
    }

    /// When the next limit check is due, if any connection is open.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Takes a slot under the server-wide connection limit.
    fn admit(&self) -> bool {
        let open = &self.settings.open;
        if open.fetch_add(1, Ordering::Relaxed) >= self.settings.max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues `frame` towards the stream client `client`; false when there is no such
    /// connection or it is not reading.
    pub(super) fn send_to(&mut self, client: &FiveTuple, frame: &[u8]) -> bool {
        let Some(&slot) = self.by_client.get(client) else {
            return false;
        };
        let Some(connection) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        let sent = connection.link.send(frame, true);
        self.dirty.push(slot);
        sent
    }

    /// A connection taken off with [`Worker::detach`] has closed: its place under the limit
    /// is free.
    pub(super) fn connection_ended(&self) {
        self.settings.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Keeps `connection` in `slot`, found by its client, and swept for limits from now on.
    fn insert(&mut self, slot: usize, connection: Connection, now: Instant) {
        self.by_client.insert(connection.five_tuple, slot);
        self.connections[slot] = Some(connection);
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }
}

impl Worker {
    /// Accepts every pending connection of stream listener `index`.
    pub(super) fn accept(&mut self, index: usize, now: Instant) {
        loop {
            let Some(listener) = self.streams.listeners.get(index) else {
                return;
            };
            let (local, tls) = (listener.local, listener.tls);
            let (mut stream, client) = match listener.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors, most likely: the backlog waits for the next event.
                    debug!(%local, %error, "accept failed");
                    return;
                }
            };
            let transport = if tls {
                ClientTransport::Tls
            } else {
                ClientTransport::Tcp
            };
            self.metrics.connection_opened(transport);
            if !self.streams.admit() {
                self.metrics
                    .connection_closed(transport, CloseReason::Limit);
                continue;
            }
            let session = match (&self.streams.settings.tls, tls) {
                (Some(config), true) => match rustls::ServerConnection::new(config.clone()) {
                    Ok(session) => Some(session),
                    Err(error) => {
                        debug!(%error, "cannot start a TLS session");
                        self.streams.connection_ended();
                        self.metrics.connection_closed(transport, CloseReason::Tls);
                        continue;
                    }
                },
                _ => None,
            };
            // Answers are small and latency matters more than packing them.
            let _ = stream.set_nodelay(true);
            let Some(slot) = self.watch(&mut stream, transport) else {
                continue;
            };
            let five_tuple = FiveTuple {
                client,
                server: local,
                transport,
            };
            let proxy = self.streams.settings.proxy_protocol;
            self.streams.insert(
                slot,
                Connection {
                    link: Link::new(stream, session, proxy, now),
                    reader: FrameReader::default(),
                    five_tuple,
                    last_read: now,
                    writable: false,
                    routed: false,
                },
                now,
            );
        }
    }

    /// A slot for a new connection, whose readiness the event loop now reports; `None` when
    /// it cannot be watched, and the connection is counted closed.
    fn watch(&mut self, stream: &mut TcpStream, transport: ClientTransport) -> Option<usize> {
        let slot = self.streams.free.pop().unwrap_or_else(|| {
            self.streams.connections.push(None);
            self.streams.connections.len() - 1
        });
        if let Err(error) =
            self.poll
                .registry()
                .register(stream, Token(CONN_BASE + slot), Interest::READABLE)
        {
            debug!(%error, "cannot watch a connection");
            self.streams.free.push(slot);
            self.streams.connection_ended();
            self.metrics.connection_closed(transport, CloseReason::Peer);
            return None;
        }
        Some(slot)
    }

    /// Handles readiness of connection `slot`.
    pub(super) fn connection_ready(
        &mut self,
        io: &mut Io,
        slot: usize,
        readable: bool,
        writable: bool,
        now: Instant,
    ) {
        if writable {
            self.streams.dirty.push(slot);
        }
        if !readable {
            return;
        }
        let Streams {
            connections,
            by_client,
            scratch,
            ..
        } = &mut self.streams;
        let Some(connection) = connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let arrival = connection
            .link
            .read_into(&mut connection.reader, scratch, now);
        connection.last_read = now;
        let mut closing = None;
        match arrival {
            Arrival::Open => {}
            Arrival::ClientAddress(client) => {
                by_client.remove(&connection.five_tuple);
                connection.five_tuple.client = client;
                by_client.insert(connection.five_tuple, slot);
            }
            // Frames that arrived before the close are still served: a Refresh with LIFETIME 0
            // followed by FIN must delete the allocation with a proper answer.
            Arrival::Closed(reason) => closing = Some(reason),
        }
        match self.serve_frames(io, slot, now) {
            Ok(None) => {}
            Ok(Some(handover)) => {
                io.send.flush();
                self.hand_over(slot, handover, closing, now);
                return;
            }
            Err(reason) => closing = Some(reason),
        }
        io.send.flush();
        self.streams.dirty.push(slot);
        if let Some(reason) = closing {
            self.close(slot, reason);
        }
    }

    /// Serves every whole frame connection `slot` holds, until one hands the connection over
    /// to the TCP relay side.
    fn serve_frames(
        &mut self,
        io: &mut Io,
        slot: usize,
        now: Instant,
    ) -> Result<Option<Handover>, CloseReason> {
        let limits = self.streams.settings.limits;
        let Worker {
            streams,
            relays,
            core,
            binding,
            metrics,
            out,
            tcp,
            ..
        } = self;
        let Some(connection) = streams.connections.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(None);
        };
        let Connection {
            link,
            reader,
            five_tuple,
            routed,
            ..
        } = connection;
        let five_tuple = *five_tuple;
        while let Some(range) = reader.next_frame(&limits, now)? {
            let frame = &reader.bytes()[range.clone()];
            if !*routed {
                *routed = true;
                if let Some(worker) = tcp.route(frame) {
                    let from = range.start;
                    return Ok(Some(Handover::Route { worker, from }));
                }
            }
            if is_binding_request(frame) {
                let Ok(request) = Message::parse(frame) else {
                    continue;
                };
                // Over a stream the answer can only go back on the connection: a CHANGE-REQUEST
                // for another address has nowhere to go.
                if let Some(reply) =
                    binding.handle(&request, five_tuple.server, five_tuple.client, out)
                    && reply.from == five_tuple.server
                {
                    metrics.binding(five_tuple.transport, five_tuple.client.is_ipv6());
                    link.send(&out[..reply.len], false);
                }
                continue;
            }
            match core.handle_client(now, five_tuple, frame, out, relays) {
                ClientAction::Drop => {}
                ClientAction::Close => return Err(CloseReason::Throttled),
                ClientAction::PipeToPeer { len, id } => {
                    link.send(&out[..len], false);
                    let from = range.end;
                    return Ok(Some(Handover::Pipe { id, from }));
                }
                ClientAction::Reply(n) => {
                    link.send(&out[..n], false);
                }
                ClientAction::Relay {
                    relay,
                    peer,
                    range,
                    dont_fragment,
                } => super::send_to_peer(
                    relays,
                    &mut io.send,
                    metrics,
                    relay,
                    peer,
                    &frame[range],
                    dont_fragment,
                ),
            }
        }
        Ok(None)
    }

    /// Takes connection `slot` off the stream side, to hand it over: no longer watched, but
    /// still counted against the connection limit.
    pub(super) fn detach(&mut self, slot: usize) -> Option<Detached> {
        let connection = self.unwatch(slot)?;
        Some(Detached {
            link: connection.link,
            reader: connection.reader,
            five_tuple: connection.five_tuple,
        })
    }

    /// Takes connection `slot` out of the event loop and the slot table, the twin of
    /// [`Worker::watch`] and [`Streams::insert`]; `None` when the slot is empty.
    fn unwatch(&mut self, slot: usize) -> Option<Connection> {
        let mut connection = self
            .streams
            .connections
            .get_mut(slot)
            .and_then(Option::take)?;
        let _ = self
            .poll
            .registry()
            .deregister(connection.link.stream_mut());
        self.streams.by_client.remove(&connection.five_tuple);
        self.streams.free.push(slot);
        Some(connection)
    }

    /// Takes in a connection another worker read a ConnectionBind on for this worker's core,
    /// and serves the bytes it brought.
    pub(super) fn adopt(&mut self, io: &mut Io, detached: Detached, now: Instant) {
        let Detached {
            mut link,
            reader,
            five_tuple,
        } = detached;
        let Some(slot) = self.watch(link.stream_mut(), five_tuple.transport) else {
            return;
        };
        self.streams.insert(
            slot,
            Connection {
                link,
                reader,
                five_tuple,
                last_read: now,
                writable: false,
                routed: true,
            },
            now,
        );
        // No readiness event announces the bytes already read.
        self.connection_ready(io, slot, true, true, now);
    }

    /// Writes out what connections queued; watches for room to write where the socket was
    /// full, and stops watching where it drained.
    pub(super) fn flush_connections(&mut self) {
        let mut dirty = std::mem::take(&mut self.streams.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for slot in dirty.drain(..) {
            let Some(connection) = self
                .streams
                .connections
                .get_mut(slot)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            let blocked = match connection.link.flush() {
                Ok(blocked) => blocked,
                Err(_) => {
                    self.close(slot, CloseReason::Peer);
                    continue;
                }
            };
            if blocked != connection.writable {
                let interest = if blocked {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                let token = Token(CONN_BASE + slot);
                if self
                    .poll
                    .registry()
                    .reregister(connection.link.stream_mut(), token, interest)
                    .is_ok()
                {
                    connection.writable = blocked;
                }
            }
        }
        // Keep the allocation of the list for the next round.
        self.streams.dirty = dirty;
    }

    /// Closes the connections past a limit, and schedules the next check.
    pub(super) fn sweep_connections(&mut self, now: Instant) {
        if self.streams.next_sweep.is_none_or(|at| at > now) {
            return;
        }
        let limits = self.streams.settings.limits;
        let overdue: Vec<(usize, CloseReason)> = self
            .streams
            .connections
            .iter()
            .enumerate()
            .filter_map(|(slot, connection)| {
                let connection = connection.as_ref()?;
                let partial = connection
                    .link
                    .setting_up_since()
                    .or(connection.reader.partial_since());
                let allocated = self.core.has_allocation(&connection.five_tuple);
                overdue(&limits, now, connection.last_read, partial, allocated)
                    .map(|reason| (slot, reason))
            })
            .collect();
        for (slot, reason) in overdue {
            self.close(slot, reason);
        }
        self.streams.next_sweep =
            (!self.streams.by_client.is_empty()).then(|| now + SWEEP_INTERVAL);
    }

    /// Closes connection `slot`: its allocation goes with it.
    pub(super) fn close(&mut self, slot: usize, reason: CloseReason) {
        let Some(mut connection) = self.unwatch(slot) else {
            return;
        };
        // Last words (a TLS alert, an answer) go out if the socket takes them at once.
        let _ = connection.link.flush();
        self.streams.connection_ended();
        self.core
            .connection_closed(&connection.five_tuple, &mut self.relays);
        self.metrics
            .connection_closed(connection.five_tuple.transport, reason);
        debug!(client = ?connection.five_tuple, reason = reason.as_str(), "connection closed");
    }

    /// Closes every connection, when the worker stops.
    pub(super) fn close_all(&mut self) {
        for slot in 0..self.streams.connections.len() {
            self.close(slot, CloseReason::Peer);
        }
    }
}
