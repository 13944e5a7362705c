//! The worker's DTLS side: its DTLS listener sockets, and the glue that lets the session table
//! ([`crate::dtls`]) reach the TURN core, the Binding service and the send queue.
//!
//! The kernel hashes a client's 4-tuple to one of the workers' `SO_REUSEPORT` sockets, so every
//! datagram of a session reaches the worker that holds it.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use icebreaker_stun::BindingService;
use icebreaker_turn::{ClientAction, ClientTransport, FiveTuple, TurnServer};
use icebreaker_wire::Message;
use mio::net::UdpSocket;
use tracing::debug;

use super::{Io, RelayTable, Worker, is_binding_request, send_to_peer};
use crate::batch::{BATCH, HEADROOM, SendQueue};
use crate::dtls::{DtlsServer, Host, Served, Transmit};
use crate::metrics::WorkerMetrics;
use crate::stream::CloseReason;

/// A DTLS listener socket of one worker.
pub(super) struct DtlsListener {
    pub(super) socket: UdpSocket,
    pub(super) local: SocketAddr,
}

/// One worker's DTLS listeners and sessions.
pub(super) struct DtlsSide {
    pub(super) listeners: Vec<DtlsListener>,
    pub(super) sessions: DtlsServer,
}

/// Sends a session's datagrams from the listener it lives on.
pub(super) struct Outbound<'a> {
    pub(super) listeners: &'a [DtlsListener],
    pub(super) send: &'a mut SendQueue,
}

impl Transmit for Outbound<'_> {
    fn transmit(&mut self, local: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        if let Some(listener) = self.listeners.iter().find(|l| l.local == local) {
            self.send.push(listener.socket.as_raw_fd(), to, datagram);
        }
    }
}

/// The worker's parts the session table works with while it serves.
struct WorkerHost<'a> {
    outbound: Outbound<'a>,
    relays: &'a mut RelayTable,
    core: &'a mut TurnServer,
    binding: &'a BindingService,
    metrics: &'a WorkerMetrics,
    out: &'a mut [u8],
    now: Instant,
}

impl Transmit for WorkerHost<'_> {
    fn transmit(&mut self, local: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        self.outbound.transmit(local, to, datagram);
    }
}

impl Host for WorkerHost<'_> {
    fn serve(&mut self, client: &FiveTuple, message: &[u8]) -> Served<'_> {
        if is_binding_request(message) {
            let Ok(request) = Message::parse(message) else {
                return Served::Nothing;
            };
            // As over a stream, the answer can only go back in the session: a CHANGE-REQUEST
            // for another address has nowhere to go.
            return match self
                .binding
                .handle(&request, client.server, client.client, self.out)
            {
                Some(reply) if reply.from == client.server => {
                    self.metrics
                        .binding(ClientTransport::Dtls, client.client.is_ipv6());
                    Served::Reply(&self.out[..reply.len])
                }
                _ => Served::Nothing,
            };
        }
        match self
            .core
            .handle_client(self.now, *client, message, self.out, self.relays)
        {
            // No ConnectionBind succeeds over DTLS (RFC 6062 data connections are TCP or TLS).
            ClientAction::Drop | ClientAction::PipeToPeer { .. } => Served::Nothing,
            ClientAction::Close => Served::Close(CloseReason::Throttled),
            ClientAction::Reply(n) => Served::Reply(&self.out[..n]),
            ClientAction::Relay {
                relay,
                peer,
                range,
                dont_fragment,
            } => {
                send_to_peer(
                    self.relays,
                    self.outbound.send,
                    self.metrics,
                    relay,
                    peer,
                    &message[range],
                    dont_fragment,
                );
                Served::Nothing
            }
        }
    }

    fn has_allocation(&self, client: &FiveTuple) -> bool {
        self.core.has_allocation(client)
    }

    fn opened(&mut self, _client: &FiveTuple) {
        self.metrics.connection_opened(ClientTransport::Dtls);
    }

    fn closed(&mut self, client: &FiveTuple, reason: CloseReason) {
        self.core.connection_closed(client, self.relays);
        self.metrics
            .connection_closed(ClientTransport::Dtls, reason);
    }
}

impl Worker {
    /// Receives what DTLS listener `index` holds and hands each datagram to its session.
    pub(super) fn drain_dtls_listener(&mut self, io: &mut Io, index: usize, now: Instant) {
        loop {
            let Some(dtls) = self.dtls.as_ref() else {
                return;
            };
            let Some(listener) = dtls.listeners.get(index) else {
                return;
            };
            let local = listener.local;
            let received = match io.recv.recv(listener.socket.as_raw_fd()) {
                Ok(n) => n,
                Err(error) => {
                    debug!(%error, "DTLS listener receive error");
                    continue;
                }
            };
            let Io { recv, send } = &mut *io;
            for i in 0..received {
                let Some((from, slot, len)) = recv.get_mut(i) else {
                    continue;
                };
                let datagram = &slot[HEADROOM..HEADROOM + len];
                self.with_dtls_host(send, now, |sessions, host| {
                    sessions.receive(now, local, from, datagram, host);
                });
            }
            io.send.flush();
            if received < BATCH {
                return;
            }
        }
    }

    /// When the DTLS sessions need [`Worker::dtls_timeout`] next.
    pub(super) fn dtls_poll_timeout(&self) -> Option<Instant> {
        self.dtls.as_ref()?.sessions.poll_timeout()
    }

    /// Runs the DTLS timers, limits and deferred closes due at `now`.
    pub(super) fn dtls_timeout(&mut self, io: &mut Io, now: Instant) {
        if self.dtls_poll_timeout().is_none_or(|at| at > now) {
            return;
        }
        self.with_dtls_host(&mut io.send, now, |sessions, host| {
            sessions.handle_timeout(now, host);
        });
        io.send.flush();
    }

    /// Closes every DTLS session, when the worker stops.
    pub(super) fn close_dtls(&mut self, io: &mut Io) {
        self.with_dtls_host(&mut io.send, Instant::now(), |sessions, host| {
            sessions.close_all(host);
        });
        io.send.flush();
    }

    /// Runs `run` on the sessions with the worker's core, Binding service and sockets lent
    /// to them, their datagrams queued on `send`.
    fn with_dtls_host(
        &mut self,
        send: &mut SendQueue,
        now: Instant,
        run: impl FnOnce(&mut DtlsServer, &mut WorkerHost<'_>),
    ) {
        let Worker {
            dtls,
            relays,
            core,
            binding,
            metrics,
            out,
            ..
        } = self;
        let Some(DtlsSide {
            listeners,
            sessions,
        }) = dtls.as_mut()
        else {
            return;
        };
        let mut host = WorkerHost {
            outbound: Outbound { listeners, send },
            relays,
            core,
            binding,
            metrics,
            out,
            now,
        };
        run(sessions, &mut host);
    }
}
