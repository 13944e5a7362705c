//! The ICE agent with TURN servers reached over TCP, TLS and DTLS: the real sans-IO TURN core
//! on a virtual clock plays the server, and the test plays the driver, carrying the agent's
//! connection transmits to the core (over TCP and TLS as a byte stream, split and joined as
//! the test says; over DTLS one record each, some lost if the test says so) and the core's
//! answers back through [`Agent::handle_connection_input`].

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::Sockets;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use icebreaker_ice::candidate::candidate_priority;
use icebreaker_ice::uri::Transport;
use icebreaker_ice::{
    Agent, AgentConfig, Candidate, CandidateKind, ConnectionState, Event, SendError,
    TurnConnection, TurnServerConfig,
};
use icebreaker_turn::{
    ClientAction, ClientTransport, FiveTuple, PEER_HEADROOM, PeerAction, Quotas, TurnConfig,
    TurnServer, UserCredential,
};
use icebreaker_wire::framing::{self, Framing};
use icebreaker_wire::{Message, Method};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

const SERVER: &str = "203.0.113.1:3478";
/// A's one socket: its host candidate, and the socket its relays belong to.
const A: &str = "192.0.2.1:5000";
/// B's one socket. B has no TURN server: a relay-only A reaches B's host candidate.
const B: &str = "198.51.100.2:6000";
/// Unix time at the start of every test.
const UNIX_START: u64 = 1_795_219_200;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn turn(password: &str) -> TurnServerConfig {
    TurnServerConfig {
        server: addr(SERVER),
        username: "alice".into(),
        password: password.into(),
    }
}

fn client_transport(transport: Transport) -> ClientTransport {
    match transport {
        Transport::Udp => ClientTransport::Udp,
        Transport::Tcp => ClientTransport::Tcp,
        Transport::Tls => ClientTransport::Tls,
        Transport::Dtls => ClientTransport::Dtls,
    }
}

/// One connection as the server side sees it.
struct Accepted {
    connection: TurnConnection,
    /// The client's address on the connection, as the server sees it.
    client: SocketAddr,
    /// Bytes from the agent not framed yet.
    from_agent: Vec<u8>,
}

/// Agent A (with TURN servers), agent B (host only) and the TURN core, wired together with no
/// delay. What crosses the wire is queued and delivered in order.
struct World {
    now: Instant,
    server: TurnServer,
    sockets: Sockets,
    a: Agent,
    b: Agent,
    accepted: Vec<Accepted>,
    /// Datagrams in flight: from, to, bytes.
    udp: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Server-to-agent connection bytes in flight.
    to_a: VecDeque<(TurnConnection, Vec<u8>)>,
    /// Stream bytes reach A in pieces of at most this many bytes...
    piece: usize,
    /// ...or, when set, everything in flight on a stream reaches A in one read.
    join: bool,
    /// Connection bytes from A are dropped rather than given to the server.
    blackhole: bool,
    /// This many of A's next DTLS records are lost on the way to the server.
    lose_records: usize,
    /// Every connection transmit of A: the connection and the bytes.
    connection_sent: Vec<(TurnConnection, Vec<u8>)>,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    a_received: Vec<Vec<u8>>,
    b_received: Vec<Vec<u8>>,
    /// Candidates not yet signalled to the other side.
    a_outbox: Vec<Candidate>,
    b_outbox: Vec<Candidate>,
}

impl World {
    fn new(relay_only: bool, servers: &[(&str, Transport)]) -> World {
        let now = Instant::now();
        let mut config = TurnConfig::new("example.org", 50_000..=50_099);
        config.users = vec![("alice".into(), UserCredential::Password("secret".into()))];
        config.nonce_secret = [9; 32];
        config.peer_policy.server_addresses = vec![addr(SERVER).ip()];
        let server = TurnServer::new(
            config,
            Arc::new(Quotas::new(100, 10)),
            Box::new(ChaCha8Rng::seed_from_u64(7)),
            now,
            UNIX_START,
        );
        let a_config = AgentConfig {
            controlling: true,
            relay_only,
            ..AgentConfig::default()
        };
        let mut a = Agent::new(a_config, Box::new(ChaCha8Rng::seed_from_u64(1)), now);
        a.add_local_socket(addr(A));
        for (password, transport) in servers {
            a.add_turn_server(turn(password), *transport);
        }
        let mut b = Agent::new(
            AgentConfig::default(),
            Box::new(ChaCha8Rng::seed_from_u64(2)),
            now,
        );
        b.add_local_socket(addr(B));
        let mut world = World {
            now,
            server,
            sockets: Sockets::default(),
            a,
            b,
            accepted: Vec::new(),
            udp: VecDeque::new(),
            to_a: VecDeque::new(),
            piece: usize::MAX,
            join: false,
            blackhole: false,
            lose_records: 0,
            connection_sent: Vec::new(),
            a_events: Vec::new(),
            b_events: Vec::new(),
            a_received: Vec::new(),
            b_received: Vec::new(),
            a_outbox: Vec::new(),
            b_outbox: Vec::new(),
        };
        world.a.gather(now);
        world.b.gather(now);
        world
    }

    /// Signaling: credentials both ways, then candidates as they come.
    fn exchange_credentials(&mut self) {
        let a = self.a.local_credentials().clone();
        let b = self.b.local_credentials().clone();
        self.a.set_remote_credentials(self.now, b);
        self.b.set_remote_credentials(self.now, a);
    }

    /// Drains both agents and delivers everything in flight until the wire is quiet.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            self.drain_agents();
            if let Some((from, to, payload)) = self.udp.pop_front() {
                self.deliver_udp(from, to, payload);
                continue;
            }
            if let Some((connection, bytes)) = self.to_a.pop_front() {
                if !connection.transport.is_stream() {
                    let data = self.a.handle_connection_input(self.now, connection, &bytes);
                    self.a_received.extend(data);
                    continue;
                }
                let mut bytes = bytes;
                if self.join {
                    while let Some(position) = self.to_a.iter().position(|(c, _)| *c == connection)
                    {
                        let (_, more) = self.to_a.remove(position).unwrap();
                        bytes.extend(more);
                    }
                }
                for piece in bytes.chunks(self.piece.max(1)) {
                    let data = self.a.handle_connection_input(self.now, connection, piece);
                    self.a_received.extend(data);
                }
                continue;
            }
            return;
        }
        panic!("the wire never went quiet");
    }

    fn drain_agents(&mut self) {
        while let Some(t) = self.a.poll_transmit() {
            match t.connection {
                Some(connection) => {
                    assert_eq!((t.local, t.remote), (connection.local, connection.server));
                    self.connection_sent.push((connection, t.payload.clone()));
                    if self.blackhole {
                        continue;
                    }
                    if connection.transport == Transport::Dtls && self.lose_records > 0 {
                        self.lose_records -= 1;
                        continue;
                    }
                    self.carry_to_server(connection, &t.payload);
                }
                None => self.udp.push_back((t.local, t.remote, t.payload)),
            }
        }
        while let Some(t) = self.b.poll_transmit() {
            assert_eq!(t.connection, None, "B has no TURN server");
            self.udp.push_back((t.local, t.remote, t.payload));
        }
        while let Some(event) = self.a.poll_event() {
            if let Event::LocalCandidate(c) = &event {
                self.a_outbox.push(c.clone());
            }
            if event == Event::GatheringComplete {
                self.b.end_of_remote_candidates();
            }
            self.a_events.push(event);
        }
        while let Some(event) = self.b.poll_event() {
            if let Event::LocalCandidate(c) = &event {
                self.b_outbox.push(c.clone());
            }
            if event == Event::GatheringComplete {
                self.a.end_of_remote_candidates();
            }
            self.b_events.push(event);
        }
        for candidate in std::mem::take(&mut self.a_outbox) {
            let line: Candidate = candidate.to_string().parse().unwrap();
            self.b.add_remote_candidate(self.now, line);
        }
        for candidate in std::mem::take(&mut self.b_outbox) {
            let line: Candidate = candidate.to_string().parse().unwrap();
            self.a.add_remote_candidate(self.now, line);
        }
    }

    /// Connection bytes from A reach the server: over a stream framed as a server would, each
    /// frame to the core; over DTLS the record whole, which must be one message.
    fn carry_to_server(&mut self, connection: TurnConnection, bytes: &[u8]) {
        let index = match self
            .accepted
            .iter()
            .position(|c| c.connection == connection)
        {
            Some(index) => index,
            None => {
                let port = 40_000 + self.accepted.len() as u16;
                self.accepted.push(Accepted {
                    connection,
                    client: SocketAddr::new(connection.local.ip(), port),
                    from_agent: Vec::new(),
                });
                self.accepted.len() - 1
            }
        };
        if !connection.transport.is_stream() {
            assert_eq!(
                one_message_len(bytes),
                bytes.len(),
                "a DTLS record holds one message, unpadded: {bytes:?}"
            );
        }
        self.accepted[index].from_agent.extend_from_slice(bytes);
        let five_tuple = FiveTuple {
            client: self.accepted[index].client,
            server: connection.server,
            transport: client_transport(connection.transport),
        };
        loop {
            let buffer = &self.accepted[index].from_agent;
            let len = if connection.transport.is_stream() {
                match framing::frame(buffer).unwrap() {
                    Framing::Complete(frame) => frame.len,
                    Framing::Incomplete { .. } => return,
                }
            } else if buffer.is_empty() {
                return;
            } else {
                buffer.len()
            };
            let frame: Vec<u8> = self.accepted[index].from_agent.drain(..len).collect();
            let mut out = vec![0u8; 2048];
            match self.server.handle_client(
                self.now,
                five_tuple,
                &frame,
                &mut out,
                &mut self.sockets,
            ) {
                ClientAction::Reply(len) => {
                    self.to_a.push_back((connection, out[..len].to_vec()));
                }
                ClientAction::Relay {
                    relay, peer, range, ..
                } => self.udp.push_back((relay, peer, frame[range].to_vec())),
                // No throttling and no TCP allocation (RFC 6062) in these tests.
                ClientAction::Drop | ClientAction::Close | ClientAction::PipeToPeer { .. } => {}
            }
        }
    }

    fn deliver_udp(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        if to == addr(B) {
            if let Some(data) = self.b.handle_input(self.now, to, from, &payload) {
                self.b_received.push(data.to_vec());
            }
        } else if to == addr(A) {
            if let Some(data) = self.a.handle_input(self.now, to, from, &payload) {
                self.a_received.push(data.to_vec());
            }
        } else if to == addr(SERVER) {
            // A's relay over UDP.
            let five_tuple = FiveTuple {
                client: from,
                server: to,
                transport: ClientTransport::Udp,
            };
            let mut out = vec![0u8; 2048];
            match self.server.handle_client(
                self.now,
                five_tuple,
                &payload,
                &mut out,
                &mut self.sockets,
            ) {
                ClientAction::Reply(len) => self.udp.push_back((to, from, out[..len].to_vec())),
                ClientAction::Relay {
                    relay, peer, range, ..
                } => self.udp.push_back((relay, peer, payload[range].to_vec())),
                // No throttling and no TCP allocation (RFC 6062) in these tests.
                ClientAction::Drop | ClientAction::Close | ClientAction::PipeToPeer { .. } => {}
            }
        } else if self.sockets.bound.contains(&to) {
            let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + 3];
            let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
            buf[range.clone()].copy_from_slice(&payload);
            let mut out = vec![0u8; 2048];
            let (client, bytes) = match self
                .server
                .handle_peer(self.now, to, from, &mut buf, range, &mut out)
            {
                PeerAction::ForwardInPlace { client, range } => (client, buf[range].to_vec()),
                PeerAction::Forward { client, len } => (client, out[..len].to_vec()),
                PeerAction::Drop => return,
            };
            match self.accepted.iter().find(|c| c.client == client.client) {
                Some(accepted) => self.to_a.push_back((accepted.connection, bytes)),
                None => self.udp.push_back((client.server, client.client, bytes)),
            }
        }
    }

    /// Runs timers and the wire for `duration` of virtual time.
    fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        for _ in 0..1_000_000 {
            self.settle();
            let next = [
                self.a.poll_timeout(),
                self.b.poll_timeout(),
                self.server.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|at| *at <= until) else {
                self.now = until;
                self.settle();
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            if self.a.poll_timeout().is_some_and(|at| at <= now) {
                self.a.handle_timeout(now);
            }
            if self.b.poll_timeout().is_some_and(|at| at <= now) {
                self.b.handle_timeout(now);
            }
            if self.server.poll_timeout().is_some_and(|at| at <= now) {
                self.server.handle_timeout(now, &mut self.sockets);
            }
        }
        panic!("the agents never went idle");
    }

    fn run_until_connected(&mut self) {
        for _ in 0..200 {
            if self.a.state() == ConnectionState::Connected
                && self.b.state() == ConnectionState::Connected
            {
                return;
            }
            self.run_for(Duration::from_millis(50));
        }
        panic!("no connection; A's events: {:#?}", self.a_events);
    }

    fn relayed(&self) -> Vec<Candidate> {
        self.a
            .local_candidates()
            .filter(|c| c.kind == CandidateKind::Relayed)
            .cloned()
            .collect()
    }

    /// A's one relay failed while allocating: its connection closed and gathering ended.
    fn assert_gathering_failed_and_ended(&self) {
        assert!(
            self.a_events
                .iter()
                .any(|e| matches!(e, Event::GatherFailed { .. }))
        );
        assert_eq!(self.connections_closed().len(), 1, "{:?}", self.a_events);
        assert!(self.a_events.contains(&Event::GatheringComplete));
    }

    fn connections_closed(&self) -> Vec<(TurnConnection, String)> {
        self.a_events
            .iter()
            .filter_map(|e| match e {
                Event::ConnectionClosed {
                    connection, reason, ..
                } => Some((*connection, reason.clone())),
                _ => None,
            })
            .collect()
    }
}

fn connection(transport: Transport) -> TurnConnection {
    TurnConnection {
        local: addr(A),
        server: addr(SERVER),
        transport,
    }
}

fn tcp_stream() -> TurnConnection {
    connection(Transport::Tcp)
}

/// The length of the STUN message or ChannelData `bytes` starts with, without padding.
fn one_message_len(bytes: &[u8]) -> usize {
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if bytes[0] >> 6 == 0b01 {
        4 + length
    } else {
        20 + length
    }
}

/// A connects relay-only through its TURN server over `transport` to B, and data flows both
/// ways, in ChannelData once the channel is bound, with lengths that need padding.
fn relay_only_over(transport: Transport, piece: usize, join: bool) -> World {
    let mut world = World::new(true, &[("secret", transport)]);
    world.piece = piece;
    world.join = join;
    world.exchange_credentials();
    world.run_until_connected();
    let relayed = world.relayed();
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    assert_eq!(world.a.relay_transport(relayed[0].address), Some(transport));
    let (local, remote) = world.a.selected_pair().unwrap();
    assert_eq!(local.kind, CandidateKind::Relayed);
    assert_eq!(remote.address, addr(B));
    // Every byte for the server went over the connection.
    assert!(
        world
            .connection_sent
            .iter()
            .all(|(s, _)| s.transport == transport),
        "{:?}",
        world.connection_sent
    );
    world.run_for(Duration::from_secs(1));
    for round in 0u8..20 {
        let now = world.now;
        let data = [0x80, round, 1, 2, 3];
        world
            .a
            .send(now, &data[..(2 + usize::from(round) % 4)])
            .unwrap();
        world
            .b
            .send(now, &data[..(2 + usize::from(round) % 3)])
            .unwrap();
        world.run_for(Duration::from_millis(20));
    }
    assert_eq!(world.b_received.len(), 20, "{:?}", world.b_received);
    assert_eq!(world.a_received.len(), 20, "{:?}", world.a_received);
    assert_eq!(world.a_received[7], vec![0x80, 7, 1]);
    // The channel was bound: the last data went as ChannelData, padded to 4 bytes on a
    // stream, not in a DTLS record (RFC 8656 §12.5).
    let (_, last) = world.connection_sent.last().unwrap();
    assert_eq!(last[0] >> 6, 0b01, "{last:?}");
    if transport.is_stream() {
        assert_eq!(last.len() % 4, 0, "{last:?}");
    } else {
        assert_eq!(last.len(), 4 + 5, "{last:?}");
    }
    world
}

#[test]
fn a_turn_server_over_tcp_gives_a_relayed_candidate_and_carries_the_session() {
    let world = relay_only_over(Transport::Tcp, usize::MAX, false);
    assert!(world.connections_closed().is_empty());
    assert!(
        !world
            .a_events
            .iter()
            .any(|e| matches!(e, Event::GatherFailed { .. }))
    );
}

#[test]
fn over_tls_the_same_with_the_tls_transport_named() {
    let world = relay_only_over(Transport::Tls, usize::MAX, false);
    let (stream, _) = world.connection_sent[0];
    assert_eq!(stream.transport, Transport::Tls);
    assert_eq!((stream.local, stream.server), (addr(A), addr(SERVER)));
}

#[test]
fn over_dtls_each_message_is_one_record_and_channel_data_is_not_padded() {
    let world = relay_only_over(Transport::Dtls, usize::MAX, false);
    assert!(world.connections_closed().is_empty());
    assert!(
        world
            .connection_sent
            .iter()
            .all(|(c, bytes)| *c == connection(Transport::Dtls)
                && one_message_len(bytes) == bytes.len()),
        "{:?}",
        world.connection_sent
    );
}

#[test]
fn requests_over_dtls_are_retransmitted_as_over_udp() {
    let mut world = World::new(true, &[("secret", Transport::Dtls)]);
    world.blackhole = true;
    world.run_for(Duration::from_secs(60));
    let sent = &world.connection_sent;
    assert!(sent.len() > 3, "{} transmissions", sent.len());
    assert!(
        sent.iter().all(|(_, bytes)| bytes == &sent[0].1),
        "the same Allocate each time"
    );
    world.assert_gathering_failed_and_ended();
}

#[test]
fn lost_dtls_records_are_sent_again_and_the_relay_comes_up() {
    let mut world = World::new(true, &[("secret", Transport::Dtls)]);
    world.lose_records = 2;
    world.exchange_credentials();
    world.run_until_connected();
    let (local, _) = world.a.selected_pair().unwrap();
    assert_eq!(local.kind, CandidateKind::Relayed);
    let first = Message::parse(&world.connection_sent[0].1).unwrap();
    let second = Message::parse(&world.connection_sent[1].1).unwrap();
    assert_eq!(first.transaction_id(), second.transaction_id());
    assert!(world.connections_closed().is_empty());
}

#[test]
fn stream_bytes_split_into_single_bytes_or_joined_are_framed() {
    relay_only_over(Transport::Tcp, 1, false);
    relay_only_over(Transport::Tcp, 3, false);
    relay_only_over(Transport::Tcp, usize::MAX, true);
    relay_only_over(Transport::Tls, 7, true);
}

#[test]
fn a_partial_frame_waits_for_the_rest() {
    let mut world = World::new(true, &[("secret", Transport::Tcp)]);
    // The Allocate reaches the server; its 401 is held and handed to A in two reads.
    world.drain_agents();
    assert_eq!(world.connection_sent.len(), 1, "one Allocate");
    let (stream, challenge) = world.to_a.pop_front().unwrap();
    assert_eq!(stream, tcp_stream());
    let half = challenge.len() / 2;
    let now = world.now;
    assert!(
        world
            .a
            .handle_connection_input(now, stream, &challenge[..half])
            .is_empty()
    );
    world.drain_agents();
    assert_eq!(
        world.connection_sent.len(),
        1,
        "nothing before the whole 401"
    );
    world
        .a
        .handle_connection_input(now, stream, &challenge[half..]);
    world.drain_agents();
    assert_eq!(world.connection_sent.len(), 2, "the authenticated Allocate");
    let retry = Message::parse(&world.connection_sent[1].1).unwrap();
    assert_eq!(retry.method(), Method::ALLOCATE);
    world.settle();
    assert_eq!(world.relayed().len(), 1);
}

#[test]
fn relays_rank_udp_then_dtls_then_tcp_then_tls_with_distinct_foundations() {
    let mut world = World::new(
        true,
        &[
            ("secret", Transport::Tls),
            ("secret", Transport::Udp),
            ("secret", Transport::Tcp),
            ("secret", Transport::Dtls),
        ],
    );
    world.run_for(Duration::from_secs(1));
    let relayed = world.relayed();
    assert_eq!(relayed.len(), 4, "{relayed:?}");
    let by = |transport| {
        relayed
            .iter()
            .find(|c| world.a.relay_transport(c.address) == Some(transport))
            .unwrap()
            .clone()
    };
    let (udp, dtls) = (by(Transport::Udp), by(Transport::Dtls));
    let (tcp, tls) = (by(Transport::Tcp), by(Transport::Tls));
    assert!(
        udp.priority > dtls.priority && dtls.priority > tcp.priority && tcp.priority > tls.priority,
        "{udp}\n{dtls}\n{tcp}\n{tls}"
    );
    // Over UDP the priority is what it always was: the socket's local preference.
    assert_eq!(
        udp.priority,
        candidate_priority(CandidateKind::Relayed, u16::MAX, 1)
    );
    let foundations: HashSet<&str> = [&udp, &dtls, &tcp, &tls]
        .iter()
        .map(|c| c.foundation.as_str())
        .collect();
    assert_eq!(foundations.len(), 4);
    // One connection per transport but UDP, whose relay's transmits carry none.
    let connections: HashSet<TurnConnection> =
        world.connection_sent.iter().map(|(c, _)| *c).collect();
    assert_eq!(connections.len(), 3);
    assert!(world.a.relay_transport(addr(A)).is_none());
}

#[test]
fn over_a_connection_the_mapped_address_gives_no_server_reflexive_candidate() {
    for transport in [Transport::Tcp, Transport::Dtls] {
        let mut world = World::new(false, &[("secret", transport)]);
        world.run_for(Duration::from_secs(1));
        // The server saw A's connection from another port than A's UDP socket: over UDP that
        // would be a server-reflexive candidate, over TCP it is no UDP address at all, over
        // DTLS the address of another socket.
        let relayed = world.relayed();
        assert_eq!(relayed[0].related, Some(addr("192.0.2.1:40000")));
        let kinds: Vec<CandidateKind> = world.a.local_candidates().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [CandidateKind::Host, CandidateKind::Relayed],
            "{transport:?}"
        );
    }
}

#[test]
fn requests_over_a_stream_are_sent_once() {
    let mut world = World::new(true, &[("secret", Transport::Tcp)]);
    world.blackhole = true;
    world.run_for(Duration::from_secs(30));
    assert_eq!(
        world.connection_sent.len(),
        1,
        "no retransmission over a stream"
    );
    world.run_for(Duration::from_secs(10));
    world.assert_gathering_failed_and_ended();
}

#[test]
fn a_connection_lost_while_allocating_fails_that_relay_and_ice_goes_on() {
    let mut world = World::new(false, &[("secret", Transport::Tcp)]);
    world.blackhole = true;
    world.drain_agents();
    let sent = world.connection_sent.len();
    world
        .a
        .handle_connection_closed(tcp_stream(), "connection refused");
    world.drain_agents();
    let closed = world.connections_closed();
    assert_eq!(closed, [(tcp_stream(), "connection refused".to_owned())]);
    let failure = world
        .a_events
        .iter()
        .find_map(|e| match e {
            Event::GatherFailed { server, reason } => Some((*server, reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(failure.0, addr(SERVER));
    assert!(
        failure.1.contains("TCP") && failure.1.contains("refused"),
        "{}",
        failure.1
    );
    assert!(world.a_events.contains(&Event::GatheringComplete));
    // Closing again, or bytes on the closed stream, change nothing.
    world.a.handle_connection_closed(tcp_stream(), "again");
    assert!(
        world
            .a
            .handle_connection_input(world.now, tcp_stream(), &[0; 20])
            .is_empty()
    );
    world.blackhole = false;
    world.exchange_credentials();
    world.run_until_connected();
    let (local, _) = world.a.selected_pair().unwrap();
    assert_eq!(local.kind, CandidateKind::Host);
    world.run_for(Duration::from_secs(700));
    assert_eq!(
        world.connection_sent.len(),
        sent,
        "nothing more on the lost stream"
    );
    assert_eq!(world.connections_closed().len(), 1);
}

#[test]
fn losing_the_connection_of_the_selected_relay_fails_at_once() {
    for transport in [Transport::Tcp, Transport::Dtls] {
        let mut world = relay_only_over(transport, usize::MAX, false);
        world
            .a
            .handle_connection_closed(connection(transport), "the server closed the connection");
        world.drain_agents();
        assert_eq!(world.a.state(), ConnectionState::Failed);
        let closed_at = world
            .a_events
            .iter()
            .position(|e| matches!(e, Event::ConnectionClosed { .. }))
            .unwrap();
        assert!(
            world.a_events[closed_at..].contains(&Event::StateChanged(ConnectionState::Failed))
        );
        assert_eq!(
            world.a.send(world.now, b"\x80x"),
            Err(SendError::NotConnected)
        );
        assert!(world.a.selected_pair().is_none());
    }
}

#[test]
fn a_stream_that_loses_its_framing_is_closed() {
    let mut world = relay_only_over(Transport::Tcp, usize::MAX, false);
    let data =
        world
            .a
            .handle_connection_input(world.now, tcp_stream(), &[0xFF, 0, 0, 4, 1, 2, 3, 4]);
    assert!(data.is_empty());
    world.drain_agents();
    let closed = world.connections_closed();
    assert_eq!(closed.len(), 1);
    assert!(closed[0].1.contains("framing"), "{}", closed[0].1);
    assert_eq!(world.a.state(), ConnectionState::Failed);
}

#[test]
fn closing_releases_the_allocation_over_the_stream_then_ends_it() {
    let mut world = relay_only_over(Transport::Tcp, usize::MAX, false);
    assert_eq!(world.server.allocation_count(), 1);
    let sent = world.connection_sent.len();
    let now = world.now;
    world.a.close(now);
    world.settle();
    let release = Message::parse(&world.connection_sent[sent].1).unwrap();
    assert_eq!(release.method(), Method::REFRESH);
    assert_eq!(world.server.allocation_count(), 0);
    assert_eq!(
        world.connections_closed(),
        [(tcp_stream(), "the agent closed".to_owned())]
    );
}

#[test]
fn udp_turn_servers_still_send_datagrams() {
    let mut world = World::new(true, &[("secret", Transport::Udp)]);
    world.exchange_credentials();
    world.run_until_connected();
    assert!(world.connection_sent.is_empty());
    assert!(world.connections_closed().is_empty());
    let relayed = world.relayed();
    assert_eq!(
        world.a.relay_transport(relayed[0].address),
        Some(Transport::Udp)
    );
}
