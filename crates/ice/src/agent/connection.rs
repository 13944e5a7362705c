//! TURN servers reached over TCP or TLS (RFC 8656 §3.1) or DTLS (RFC 7350): the agent's side
//! of the connection the driver keeps for each such relay, and their candidates' priorities
//! and foundations.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use icebreaker_wire::framing::{self, Framing};

use super::{Agent, ConnectionState, Event, PairState, RelayStatus, Transmit, TurnServerConfig};
use crate::candidate::{CandidateKind, foundation};
use crate::uri::Transport;

/// A TCP, TLS or DTLS connection to a TURN server, one per relay not over plain UDP: the agent
/// names it in [`Transmit::connection`] and [`Event::ConnectionClosed`], the driver in
/// [`Agent::handle_connection_input`] and [`Agent::handle_connection_closed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TurnConnection {
    /// The UDP socket ([`Agent::add_local_socket`]) whose relayed candidate the connection
    /// carries: the connection leaves from its IP address.
    pub local: SocketAddr,
    /// The TURN server.
    pub server: SocketAddr,
    /// [`Transport::Tcp`], [`Transport::Tls`] or [`Transport::Dtls`].
    pub transport: Transport,
}

/// The local preference of a relayed candidate: its socket's, lowered by a quarter of the
/// range for each step down UDP, DTLS, TCP, TLS, so that with up to 64 sockets every relay
/// over one transport ranks above every relay over the next (RFC 8445 §5.1.2.1). DTLS adds a
/// handshake and a record header to UDP but keeps its datagrams: a lost record delays no
/// other. A stream adds head-of-line blocking, and TLS framing besides.
pub(super) fn relay_preference(socket_preference: u16, transport: Transport) -> u16 {
    let penalty = match transport {
        Transport::Udp => 0,
        Transport::Dtls => 0x4000,
        Transport::Tcp => 0x8000,
        Transport::Tls => 0xC000,
    };
    socket_preference.saturating_sub(penalty)
}

/// A relayed candidate's foundation. Candidates obtained over different transport protocols
/// have different foundations (RFC 8445 §5.1.1.3); over UDP it is the plain one.
pub(super) fn relay_foundation(base: IpAddr, server: IpAddr, transport: Transport) -> String {
    let udp = foundation(CandidateKind::Relayed, base, Some(server));
    if transport == Transport::Udp {
        return udp;
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(udp.as_bytes());
    hasher.update(transport.as_str().as_bytes());
    hasher.finalize().to_string()
}

impl Agent {
    /// A TURN server reached over `transport` (UDP, TCP, TLS or DTLS); those of
    /// [`AgentConfig::turn_servers`](super::AgentConfig::turn_servers) are over UDP. Call
    /// before [`Agent::gather`]; one added later is used from the next gathering (an ICE
    /// restart). Adding the same server with the same transport twice changes nothing.
    pub fn add_turn_server(&mut self, server: TurnServerConfig, transport: Transport) {
        if !self
            .turn_servers
            .iter()
            .any(|(s, t)| s.server == server.server && *t == transport)
        {
            self.turn_servers.push((server, transport));
        }
    }

    /// Bytes read from `connection`. Over TCP and TLS they are split anywhere: the agent
    /// frames them (RFC 8656 §12.5) and keeps a partial frame for the next read; a stream
    /// that loses its framing is closed ([`Event::ConnectionClosed`]). Over DTLS they are one
    /// record, holding one STUN message or ChannelData. Returns the application data the peer
    /// sent through the relay, one entry per datagram. Bytes for a connection the agent does
    /// not know or has closed are ignored.
    pub fn handle_connection_input(
        &mut self,
        now: Instant,
        connection: TurnConnection,
        bytes: &[u8],
    ) -> Vec<Vec<u8>> {
        let mut received = Vec::new();
        if self.state == ConnectionState::Closed {
            return received;
        }
        let Some(index) = self.connection_relay(connection) else {
            return received;
        };
        if !connection.transport.is_stream() {
            received.extend(self.relay_input(now, index, bytes).map(<[u8]>::to_vec));
            return received;
        }
        let mut inbox = std::mem::take(&mut self.relays[index].inbox);
        inbox.extend_from_slice(bytes);
        let mut start = 0;
        // Every frame is at least 4 bytes long, so this ends within the buffer.
        let lost = loop {
            let frame = match framing::frame(&inbox[start..]) {
                Ok(Framing::Complete(frame)) => frame,
                Ok(Framing::Incomplete { .. }) => break None,
                Err(error) => break Some(error),
            };
            let end = start + frame.len;
            let app = self.relay_input(now, index, &inbox[start..end]);
            received.extend(app.map(<[u8]>::to_vec));
            start = end;
            if self.relays[index].closed {
                return received;
            }
        };
        if let Some(error) = lost {
            self.lose_connection(index, &format!("the stream lost its framing: {error}"));
            return received;
        }
        inbox.drain(..start);
        self.relays[index].inbox = inbox;
        received
    }

    /// One message from the server of relay `index`, over UDP or a connection: the
    /// application data it relayed from the peer, if any, within `message`.
    pub(super) fn relay_input<'p>(
        &mut self,
        now: Instant,
        index: usize,
        message: &'p [u8],
    ) -> Option<&'p [u8]> {
        let relayed = self.relays[index].client.relayed_address();
        let peer_data = self.relays[index]
            .client
            .handle_input(now, &mut *self.rng, message);
        let app = match (peer_data, relayed) {
            (Some(data), Some(relayed)) => {
                self.handle_from_peer(now, relayed, data.peer, data.data)
            }
            _ => None,
        };
        self.drain_relay(now, index);
        app
    }

    /// `connection` could not be opened, ended or failed; `reason` says how. Its relay fails
    /// (see [`Event::ConnectionClosed`], which follows) and the rest of ICE goes on. Nothing
    /// happens for a connection the agent does not know or has closed.
    pub fn handle_connection_closed(&mut self, connection: TurnConnection, reason: &str) {
        if let Some(index) = self.connection_relay(connection) {
            self.lose_connection(index, reason);
        }
    }

    /// The transport to its TURN server of the local relayed candidate at `address` (the
    /// `relayProtocol` of WebRTC's statistics); `None` for any other candidate.
    pub fn relay_transport(&self, address: SocketAddr) -> Option<Transport> {
        self.local
            .iter()
            .find(|l| l.candidate.address == address)
            .and_then(|l| l.relay_transport)
    }

    /// The open relay over `connection`.
    fn connection_relay(&self, connection: TurnConnection) -> Option<usize> {
        self.relays.iter().position(|r| {
            r.transport != Transport::Udp
                && !r.closed
                && r.socket == connection.local
                && r.client.server() == connection.server
                && r.transport == connection.transport
        })
    }

    /// Queues bytes of relay `index` for its server: a datagram from its socket, or bytes
    /// for its connection unless that is closed.
    pub(super) fn relay_transmit(&mut self, index: usize, payload: Vec<u8>) {
        let relay = &self.relays[index];
        if relay.closed {
            return;
        }
        let (local, remote) = (relay.socket, relay.client.server());
        let connection = (relay.transport != Transport::Udp).then_some(TurnConnection {
            local,
            server: remote,
            transport: relay.transport,
        });
        self.transmits.push_back(Transmit {
            local,
            remote,
            payload,
            connection,
        });
    }

    /// Ends the connection of relay `index`, if it has an open one, and tells the driver.
    pub(super) fn close_connection(&mut self, index: usize, reason: &str) {
        let relay = &mut self.relays[index];
        if relay.transport == Transport::Udp || relay.closed {
            return;
        }
        relay.closed = true;
        relay.inbox = Vec::new();
        let connection = TurnConnection {
            local: relay.socket,
            server: relay.client.server(),
            transport: relay.transport,
        };
        self.events.push_back(Event::ConnectionClosed {
            connection,
            relayed: relay.client.relayed_address(),
            reason: reason.to_owned(),
        });
    }

    /// The connection of relay `index` broke: the relay fails as if its allocation had, and
    /// everything that ran over it with it.
    fn lose_connection(&mut self, index: usize, reason: &str) {
        self.close_connection(index, reason);
        let status = self.relays[index].status;
        self.relays[index].status = RelayStatus::Failed;
        match status {
            RelayStatus::Allocating => {
                let transport = self.relays[index].transport.as_str().to_ascii_uppercase();
                self.events.push_back(Event::GatherFailed {
                    server: self.relays[index].client.server(),
                    reason: format!("TURN over {transport}: {reason}"),
                });
                self.update_gathering();
            }
            RelayStatus::Ready => {
                let relayed = self.relays[index].client.relayed_address();
                self.fail_pairs(|local, _| Some(local.base) == relayed);
                if self
                    .nominating
                    .and_then(|pair| self.pairs.get(pair))
                    .is_some_and(|pair| pair.state == PairState::Failed)
                {
                    self.nominating = None;
                }
                // Nothing can flow on the selected pair any more: say so now rather than at
                // the consent timeout.
                if self
                    .path
                    .as_ref()
                    .is_some_and(|path| Some(path.send_from) == relayed)
                {
                    self.path = None;
                    self.set_state(ConnectionState::Failed);
                }
                self.update_failed();
            }
            RelayStatus::Failed => {}
        }
    }
}
