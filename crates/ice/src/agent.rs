//! The ICE agent (RFC 8445): one data stream, one component, UDP; TURN servers over UDP,
//! TCP, TLS or DTLS.

mod connection;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_wire::attr::{
    ErrorCodeAttribute, IceControlled, IceControlling, Priority, UseCandidate, Username,
    XorMappedAddress,
};
use icebreaker_wire::{Class, ErrorCode, IntegrityKey, Message, Method, TransactionId};
use rand_core::RngCore;

use crate::candidate::{
    Candidate, CandidateKind, CandidateTransport, candidate_priority, foundation,
};
use crate::messages::{self, CheckRequest};
use crate::turn_client::{TurnClient, TurnClientConfig, TurnEvent};
use crate::uri::Transport;

pub use connection::TurnConnection;

/// A TURN server to allocate a relayed candidate on, with long-term credentials. Those of
/// [`AgentConfig::turn_servers`] are reached over UDP; [`Agent::add_turn_server`] adds one
/// over TCP or TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnServerConfig {
    /// The server's address.
    pub server: SocketAddr,
    /// The long-term username (or a TURN REST username).
    pub username: String,
    /// The password.
    pub password: String,
}

/// The agent's timers. The defaults are RFC 8445's and RFC 7675's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Ta: the pacing between two checks (RFC 8445 §14.2).
    pub pacing: Duration,
    /// The first retransmission timeout of a check or a gathering request (RFC 8445 §14.3).
    pub check_rto: Duration,
    /// How many times a check is sent before its pair fails (RFC 8489's Rc).
    pub check_transmits: u32,
    /// How long the controlling agent waits, after the first pair works, for better pairs
    /// still being checked before it nominates the best direct pair that works. Checks to
    /// addresses that cannot answer (another site's private addresses) stay in progress for
    /// the whole retransmission schedule, so without this wait every connection through a
    /// NAT would wait for them.
    pub direct_nomination_delay: Duration,
    /// The same wait before a relayed pair is nominated: longer, because a direct pair that
    /// needs a retransmission to get through a NAT's filter is worth waiting for.
    pub relay_nomination_delay: Duration,
    /// Tr: a Binding indication goes out when nothing else was sent on the selected pair for
    /// this long (RFC 8445 §11).
    pub keepalive_interval: Duration,
    /// The mean interval of consent checks on the selected pair (RFC 7675 §5.1: 5 s,
    /// randomised by ±20 %).
    pub consent_interval: Duration,
    /// Consent is lost when no check was answered for this long (RFC 7675: 30 s).
    pub consent_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            pacing: Duration::from_millis(50),
            check_rto: Duration::from_millis(500),
            check_transmits: 7,
            direct_nomination_delay: Duration::from_millis(300),
            relay_nomination_delay: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(15),
            consent_interval: Duration::from_secs(5),
            consent_timeout: Duration::from_secs(30),
        }
    }
}

/// What the agent is asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// Whether this agent starts as the controlling one (the offerer, RFC 8445 §6.1.1).
    pub controlling: bool,
    /// STUN servers for server-reflexive candidates.
    pub stun_servers: Vec<SocketAddr>,
    /// TURN servers for relayed candidates, reached over UDP (see [`Agent::add_turn_server`]
    /// for TCP and TLS).
    pub turn_servers: Vec<TurnServerConfig>,
    /// Offer and use only relayed candidates (WebRTC's `iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// The timers.
    pub timing: Timing,
}

/// A username fragment and password (RFC 8445 §5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `ice-ufrag`.
    pub ufrag: String,
    /// `ice-pwd`.
    pub pwd: String,
}

impl Credentials {
    /// Fresh random credentials: 8 characters of ufrag (48 bits) and 24 of password
    /// (144 bits), over RFC 8445's minimums of 24 and 128 bits.
    pub fn random(rng: &mut dyn RngCore) -> Credentials {
        Credentials {
            ufrag: random_ice_chars(rng, 8),
            pwd: random_ice_chars(rng, 24),
        }
    }
}

fn random_ice_chars(rng: &mut dyn RngCore, len: usize) -> String {
    const ICE_CHARS: &[u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| char::from(ICE_CHARS[(rng.next_u32() % 64) as usize]))
        .collect()
}

/// Where the agent stands (the checklist's state and consent, seen from the application).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Gathering; no check sent yet.
    New,
    /// Checks are running and no pair is selected.
    Checking,
    /// A pair is selected and consent holds: data flows.
    Connected,
    /// Every pair failed, or consent was lost.
    Failed,
    /// [`Agent::close`] was called.
    Closed,
}

/// What the agent tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A local candidate to trickle to the peer (RFC 8838).
    LocalCandidate(Candidate),
    /// Gathering of this generation is over: signal end-of-candidates.
    GatheringComplete,
    /// A STUN or TURN server did not give a candidate.
    GatherFailed {
        /// The server.
        server: SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// The connection state changed.
    StateChanged(ConnectionState),
    /// A pair was selected: data now goes over it.
    Selected {
        /// The local candidate of the valid pair.
        local: Candidate,
        /// The remote candidate.
        remote: Candidate,
    },
    /// The peer stopped answering consent checks for the consent timeout (RFC 7675).
    ConsentLost,
    /// The agent is done with a TCP, TLS or DTLS connection to a TURN server: the driver
    /// closes it, after writing the transmits [`Agent::poll_transmit`] gave for it before this
    /// event, and never reopens it. Whatever was relayed over it is gone: a relay still allocating
    /// also gives [`Event::GatherFailed`]; an allocated one's pairs fail, and when the
    /// selected pair ran over it the agent turns [`ConnectionState::Failed`] (the other
    /// candidates' checks go on). [`Agent::close`] ends every connection this way too.
    ConnectionClosed {
        /// The connection.
        connection: TurnConnection,
        /// The relayed candidate that went with it, when the allocation had been made.
        relayed: Option<SocketAddr>,
        /// Why, in words.
        reason: String,
    },
}

/// Bytes for the driver to send: a datagram from its UDP socket bound to `local`, or bytes
/// for a connection to a TURN server reached over TCP, TLS or DTLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The local socket's address (for a connection, the UDP socket the relay belongs to).
    pub local: SocketAddr,
    /// The destination (for a connection, the TURN server).
    pub remote: SocketAddr,
    /// The bytes.
    pub payload: Vec<u8>,
    /// `None`: a UDP datagram. `Some`: write the payload to this connection (over DTLS, as one
    /// record), opening it first if this is its first transmit (its `local` and `server` are
    /// the fields above).
    pub connection: Option<TurnConnection>,
}

/// Why [`Agent::send`] could not send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No pair is selected (yet, or any more).
    #[error("no candidate pair is selected")]
    NotConnected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PairState {
    Frozen,
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

#[derive(Debug)]
struct LocalCandidate {
    candidate: Candidate,
    /// The address a packet of this candidate leaves from: the host socket, or for a relayed
    /// candidate the relayed address itself (sent through its TURN client).
    base: SocketAddr,
    local_preference: u16,
    /// A relayed candidate's transport to its TURN server (what browsers report as
    /// `relayProtocol`); a candidate line has no field for it.
    relay_transport: Option<Transport>,
}

#[derive(Debug)]
struct Pair {
    local: usize,
    remote: usize,
    state: PairState,
    /// The local candidate the peer saw (RFC 8445 §7.2.5.3.2): the valid pair's.
    valid_local: Option<usize>,
    /// The controlled side got USE-CANDIDATE on this pair.
    nominated_by_peer: bool,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum RelayStatus {
    Allocating,
    Ready,
    Failed,
}

struct Relay {
    socket: SocketAddr,
    client: TurnClient,
    status: RelayStatus,
    permitted: HashSet<IpAddr>,
    local_preference: u16,
    /// How the server is reached: UDP from `socket`, or a TCP, TLS or DTLS connection.
    transport: Transport,
    /// Stream bytes read and not yet framed.
    inbox: Vec<u8>,
    /// The connection is over ([`Event::ConnectionClosed`] went out): nothing more is sent
    /// or read on it. Never set over UDP.
    closed: bool,
}

#[derive(Debug)]
enum TxKind {
    Gather { server: SocketAddr },
    Check { pair: usize, nominate: bool },
    Consent,
}

#[derive(Debug)]
struct Transaction {
    kind: TxKind,
    generation: u32,
    local: SocketAddr,
    remote: SocketAddr,
    /// The password that signs the answer; None for a STUN server's.
    password: Option<String>,
    payload: Vec<u8>,
    next_at: Instant,
    rto: Duration,
    transmits: u32,
    max_transmits: u32,
    /// Superseded by a triggered check: no more retransmissions and no failure, but an
    /// answer still counts until the transaction would have timed out (RFC 8445 §7.3.1.4).
    cancelled: bool,
}

/// The selected pair, kept apart from the checklist so that data keeps flowing on it while an
/// ICE restart checks new pairs.
#[derive(Debug)]
struct Path {
    local: Candidate,
    remote: Candidate,
    /// The address to send from: a host socket or a relayed address.
    send_from: SocketAddr,
    local_ufrag: String,
    remote_credentials: Credentials,
    generation: u32,
    last_sent: Instant,
    consent_expires: Instant,
    next_consent: Instant,
}

/// A check that arrived before the peer's credentials (RFC 8445 §7.3: answered, and replayed
/// once the answer arrives).
#[derive(Debug)]
struct EarlyCheck {
    local: SocketAddr,
    remote: SocketAddr,
    priority: u32,
    nominate: bool,
}

/// An ICE agent: a sans-IO state machine for one data stream with one component.
///
/// # Call order
///
/// 1. [`Agent::new`], then [`Agent::add_local_socket`] for each UDP socket the driver bound
///    (one per interface address), [`Agent::add_turn_server`] for each TURN server reached
///    over TCP, TLS or DTLS, then [`Agent::gather`].
/// 2. Signal [`Agent::local_credentials`] and every [`Event::LocalCandidate`] to the peer;
///    pass the peer's with [`Agent::set_remote_credentials`] and
///    [`Agent::add_remote_candidate`], and [`Agent::end_of_remote_candidates`].
/// 3. For each datagram on a socket: [`Agent::handle_input`]; what it returns is
///    application data. For bytes read from a TURN server's TCP, TLS or DTLS connection:
///    [`Agent::handle_connection_input`], likewise; when that connection ends:
///    [`Agent::handle_connection_closed`].
/// 4. Whenever [`Agent::poll_timeout`] passes: [`Agent::handle_timeout`].
/// 5. After any call: drain [`Agent::poll_transmit`] (send each from its `local` socket, or
///    write it to the connection its `connection` names) and [`Agent::poll_event`].
///
/// Data goes out with [`Agent::send`] once [`Event::Selected`] came.
///
/// ## TURN over TCP, TLS or DTLS
///
/// A TURN server reached over a connection (RFC 8656 §3.1: `turn:...?transport=tcp`,
/// `turns:`; RFC 7350: `turns:...?transport=udp`, DTLS) gives one relayed candidate per local
/// socket of its address family, still relaying UDP on the server's side, with a lower
/// priority than one over UDP (RFC 8445 §5.1.2.1: UDP, then DTLS, then TCP, then TLS) and no
/// server-reflexive candidate (the server saw another socket). The agent still opens nothing;
/// for each such relay the driver keeps one connection, named by a [`TurnConnection`]:
///
/// - A [`Transmit`] whose `connection` is `Some` is written to that connection rather than
///   sent from a UDP socket. The first one for a connection is the driver's cue to open it
///   (from the IP of [`TurnConnection::local`], TLS and DTLS naming and verifying the server
///   as its URI does); until it is up the driver keeps the bytes, in order. Over TCP and TLS
///   requests go once, with no retransmission: the stream delivers them or breaks. Over DTLS
///   each transmit is one record, which may be lost like a UDP datagram: requests are
///   retransmitted as over UDP, and ChannelData is not padded.
/// - Everything read from the connection goes to [`Agent::handle_connection_input`]: over TCP
///   and TLS as read, in pieces of any size (the agent cuts the stream into STUN messages and
///   ChannelData itself), over DTLS one record at a time. It returns the application data
///   that came relayed from the peer.
/// - When the connection cannot be opened, ends or fails: [`Agent::handle_connection_closed`].
///   That relay fails; the other candidates go on.
/// - [`Event::ConnectionClosed`] says the agent is done with a connection (its allocation
///   failed, was lost or was released): the driver closes it and never reopens it.
///
/// [`Agent::relay_transport`] tells which transport a local relayed candidate came over.
pub struct Agent {
    config: AgentConfig,
    rng: Box<dyn RngCore + Send>,
    controlling: bool,
    tie_breaker: u64,
    generation: u32,
    local_credentials: Credentials,
    /// The credentials of the generation before a restart: still answered, for the consent
    /// of the path in use, until a new pair is selected.
    previous_credentials: Option<Credentials>,
    remote_credentials: Option<Credentials>,
    sockets: Vec<SocketAddr>,
    /// [`AgentConfig::turn_servers`] over UDP, then those added with their transport.
    turn_servers: Vec<(TurnServerConfig, Transport)>,
    local: Vec<LocalCandidate>,
    remote: Vec<Candidate>,
    pairs: Vec<Pair>,
    triggered: VecDeque<usize>,
    relays: Vec<Relay>,
    transactions: HashMap<TransactionId, Transaction>,
    early_checks: Vec<EarlyCheck>,
    next_check_at: Instant,
    first_valid_at: Option<Instant>,
    nominating: Option<usize>,
    path: Option<Path>,
    state: ConnectionState,
    gathering: bool,
    remote_complete: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Agent {
    /// A new agent with fresh credentials and tie-breaker drawn from `rng`.
    pub fn new(config: AgentConfig, mut rng: Box<dyn RngCore + Send>, now: Instant) -> Agent {
        let local_credentials = Credentials::random(&mut *rng);
        let tie_breaker = rng.next_u64();
        let turn_servers = config
            .turn_servers
            .iter()
            .map(|server| (server.clone(), Transport::Udp))
            .collect();
        Agent {
            controlling: config.controlling,
            config,
            rng,
            tie_breaker,
            generation: 0,
            local_credentials,
            previous_credentials: None,
            remote_credentials: None,
            sockets: Vec::new(),
            turn_servers,
            local: Vec::new(),
            remote: Vec::new(),
            pairs: Vec::new(),
            triggered: VecDeque::new(),
            relays: Vec::new(),
            transactions: HashMap::new(),
            early_checks: Vec::new(),
            next_check_at: now,
            first_valid_at: None,
            nominating: None,
            path: None,
            state: ConnectionState::New,
            gathering: false,
            remote_complete: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// This generation's ufrag and password, for the offer or answer.
    pub fn local_credentials(&self) -> &Credentials {
        &self.local_credentials
    }

    /// Whether the agent is controlling now (a role conflict can change it).
    pub fn is_controlling(&self) -> bool {
        self.controlling
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The selected pair's local and remote candidates.
    pub fn selected_pair(&self) -> Option<(&Candidate, &Candidate)> {
        self.path.as_ref().map(|p| (&p.local, &p.remote))
    }

    /// This generation's local candidates, peer-reflexive ones included.
    pub fn local_candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.local.iter().map(|l| &l.candidate)
    }

    /// A UDP socket the driver bound: a host candidate (unless relay-only) and the base of
    /// server-reflexive and relayed candidates. Call before [`Agent::gather`].
    pub fn add_local_socket(&mut self, addr: SocketAddr) {
        if !self.sockets.contains(&addr) {
            self.sockets.push(addr);
        }
    }

    /// Starts gathering on every socket: host candidates at once, server-reflexive ones from
    /// each STUN server, relayed ones from each TURN server of the socket's address family.
    pub fn gather(&mut self, now: Instant) {
        self.gathering = true;
        if self.state == ConnectionState::New {
            self.set_state(ConnectionState::Checking);
        }
        let sockets = self.sockets.clone();
        for (index, &socket) in sockets.iter().enumerate() {
            let local_preference = u16::MAX.saturating_sub(index as u16 * 256);
            if !self.config.relay_only {
                let host = Candidate::new(
                    CandidateKind::Host,
                    socket,
                    foundation(CandidateKind::Host, socket.ip(), None),
                    local_preference,
                    None,
                );
                self.add_local_candidate(now, host, socket, local_preference);
                for server in self.config.stun_servers.clone() {
                    if server.is_ipv4() == socket.is_ipv4() {
                        self.start_gather_request(now, socket, server);
                    }
                }
            }
            for (turn, transport) in self.turn_servers.clone() {
                if turn.server.is_ipv4() != socket.is_ipv4() {
                    continue;
                }
                match self.relays.iter().position(|r| {
                    r.socket == socket
                        && r.client.server() == turn.server
                        && r.transport == transport
                }) {
                    Some(existing) => {
                        // A restart keeps the allocation: the path in use may run over it.
                        if self.relays[existing].status == RelayStatus::Ready {
                            self.add_relayed_candidate(now, existing);
                        }
                    }
                    None => {
                        let mut client_config =
                            TurnClientConfig::new(turn.server, &turn.username, &turn.password);
                        client_config.reliable = transport.is_stream();
                        let mut client = TurnClient::new(client_config);
                        client.allocate(now, &mut *self.rng);
                        self.relays.push(Relay {
                            socket,
                            client,
                            status: RelayStatus::Allocating,
                            permitted: HashSet::new(),
                            local_preference: connection::relay_preference(
                                local_preference,
                                transport,
                            ),
                            transport,
                            inbox: Vec::new(),
                            closed: false,
                        });
                        self.drain_relay(now, self.relays.len() - 1);
                    }
                }
            }
        }
        self.update_gathering();
    }

    /// The peer's ufrag and password. New ones (the peer restarted) drop the peer's old
    /// candidates and pairs; the selected pair carries on until a new one is selected.
    pub fn set_remote_credentials(&mut self, now: Instant, credentials: Credentials) {
        if self.remote_credentials.as_ref() == Some(&credentials) {
            return;
        }
        if self.remote_credentials.is_some() {
            self.forget_remote();
            let generation = self.generation;
            self.transactions.retain(|_, t| {
                !(t.generation == generation && matches!(t.kind, TxKind::Check { .. }))
            });
        }
        self.remote_credentials = Some(credentials);
        for early in std::mem::take(&mut self.early_checks) {
            self.learn_from_check(
                now,
                early.local,
                early.remote,
                early.priority,
                early.nominate,
            );
        }
    }

    /// A candidate from the peer. TCP candidates, other components and unknown address
    /// families are skipped.
    pub fn add_remote_candidate(&mut self, now: Instant, candidate: Candidate) {
        if candidate.transport != CandidateTransport::Udp || candidate.component != 1 {
            return;
        }
        if let Some(existing) = self
            .remote
            .iter()
            .position(|r| r.address == candidate.address)
        {
            // A peer-reflexive candidate learnt first takes the signalled one's identity.
            if self.remote[existing].kind == CandidateKind::PeerReflexive {
                self.remote[existing] = candidate;
            }
            return;
        }
        self.remote.push(candidate);
        let remote = self.remote.len() - 1;
        for local in 0..self.local.len() {
            self.add_pair(now, local, remote);
        }
    }

    /// The peer said it has no more candidates for this generation.
    pub fn end_of_remote_candidates(&mut self) {
        self.remote_complete = true;
    }

    /// An ICE restart (RFC 8445 §9): new credentials, gathering anew, new checks. The
    /// selected pair keeps carrying data until a pair of the new generation is selected.
    /// Returns the new credentials for the signaling channel.
    pub fn restart(&mut self, now: Instant) -> Credentials {
        let fresh = Credentials::random(&mut *self.rng);
        self.previous_credentials = Some(std::mem::replace(
            &mut self.local_credentials,
            fresh.clone(),
        ));
        self.generation += 1;
        self.local.clear();
        self.forget_remote();
        self.early_checks.clear();
        self.remote_credentials = None;
        self.transactions
            .retain(|_, t| matches!(t.kind, TxKind::Consent));
        if self.state == ConnectionState::Failed {
            self.set_state(ConnectionState::Checking);
        }
        self.gather(now);
        fresh
    }

    /// Ends the session: releases every TURN allocation (a Refresh with lifetime 0, sent
    /// once, as RFC 8656 §7 allows) and stops checks, consent and keepalives. Drain
    /// [`Agent::poll_transmit`] once more before closing the sockets.
    pub fn close(&mut self, now: Instant) {
        for index in 0..self.relays.len() {
            if self.relays[index].status == RelayStatus::Ready {
                self.relays[index].client.deallocate(now, &mut *self.rng);
                self.drain_relay(now, index);
            }
            self.close_connection(index, "the agent closed");
        }
        self.relays.clear();
        self.transactions.clear();
        self.forget_remote();
        self.path = None;
        self.gathering = false;
        self.set_state(ConnectionState::Closed);
    }

    /// Drops the peer's candidates of this generation and the checklist built on them; the
    /// selected pair, kept apart, carries on.
    fn forget_remote(&mut self) {
        self.remote.clear();
        self.pairs.clear();
        self.triggered.clear();
        self.nominating = None;
        self.first_valid_at = None;
        self.remote_complete = false;
    }

    /// Sends application data over the selected pair.
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), SendError> {
        let path = self.path.as_mut().ok_or(SendError::NotConnected)?;
        path.last_sent = now;
        let (from, to) = (path.send_from, path.remote.address);
        self.send_from(now, from, to, data.to_vec());
        Ok(())
    }

    /// A datagram that arrived on the socket bound to `local` from `remote`. Returns the
    /// application data it carried, if any: a datagram that is not STUN, from a pair that
    /// works, or relayed data from such a peer.
    pub fn handle_input<'p>(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        packet: &'p [u8],
    ) -> Option<&'p [u8]> {
        if self.state == ConnectionState::Closed {
            return None;
        }
        if let Some(index) = self.relays.iter().position(|r| {
            r.socket == local && r.client.server() == remote && r.transport == Transport::Udp
        }) {
            // A STUN server that is also the TURN server answers gathering requests here.
            if let Ok(message) = Message::parse(packet)
                && message.class().is_response()
                && self.transactions.contains_key(&message.transaction_id())
            {
                self.handle_response(now, local, remote, &message);
                return None;
            }
            return self.relay_input(now, index, packet);
        }
        self.handle_from_peer(now, local, remote, packet)
    }

    /// Runs the timers that are due: retransmissions, the next paced check, nomination,
    /// consent and keepalives, and the TURN clients' refreshes.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ConnectionState::Closed {
            return;
        }
        for index in 0..self.relays.len() {
            if !self.relays[index].closed
                && self.relays[index]
                    .client
                    .poll_timeout()
                    .is_some_and(|at| at <= now)
            {
                self.relays[index]
                    .client
                    .handle_timeout(now, &mut *self.rng);
                self.drain_relay(now, index);
            }
        }
        self.retransmit(now);
        if now >= self.next_check_at && self.send_next_check(now) {
            self.next_check_at = now + self.config.timing.pacing;
        }
        self.maybe_nominate(now);
        self.run_consent(now);
        self.update_failed();
    }

    /// The earliest time [`Agent::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == ConnectionState::Closed {
            return None;
        }
        let mut earliest: Option<Instant> = None;
        let mut consider = |at: Instant| {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        };
        for relay in self.relays.iter().filter(|r| !r.closed) {
            if let Some(at) = relay.client.poll_timeout() {
                consider(at);
            }
        }
        for transaction in self.transactions.values() {
            consider(transaction.next_at);
        }
        if self.has_checks_to_send() {
            consider(self.next_check_at);
        }
        if let Some(at) = self.nomination_deadline() {
            consider(at);
        }
        if let Some(path) = &self.path {
            consider(path.next_consent);
            consider(path.consent_expires);
            consider(path.last_sent + self.config.timing.keepalive_interval);
        }
        earliest
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state;
            self.events.push_back(Event::StateChanged(state));
        }
    }

    fn new_transaction_id(&mut self) -> TransactionId {
        let mut bytes = [0u8; 12];
        self.rng.fill_bytes(&mut bytes);
        TransactionId::new(bytes)
    }

    /// Sends `payload` from a host socket, or through the TURN client when `from` is a
    /// relayed address.
    fn send_from(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        if let Some(index) = self
            .relays
            .iter()
            .position(|r| r.client.relayed_address() == Some(from))
        {
            if let Ok(datagram) = self.relays[index].client.send_to(to, &payload) {
                self.relay_transmit(index, datagram);
            }
            self.drain_relay(now, index);
            return;
        }
        self.transmits.push_back(Transmit {
            local: from,
            remote: to,
            payload,
            connection: None,
        });
    }

    fn drain_relay(&mut self, now: Instant, index: usize) {
        while let Some(payload) = self.relays[index].client.poll_transmit() {
            self.relay_transmit(index, payload);
        }
        while let Some(event) = self.relays[index].client.poll_event() {
            match event {
                TurnEvent::Allocated { mapped, .. } => {
                    self.relays[index].status = RelayStatus::Ready;
                    self.add_relayed_candidate(now, index);
                    // Over a connection the server saw another socket than this one (over TCP, not
                    // even a UDP one): no server-reflexive candidate.
                    if let Some(mapped) = mapped
                        && !self.config.relay_only
                        && self.relays[index].transport == Transport::Udp
                    {
                        let socket = self.relays[index].socket;
                        let server = self.relays[index].client.server();
                        self.add_server_reflexive(now, socket, server, mapped);
                    }
                    self.update_gathering();
                }
                TurnEvent::AllocationFailed(error) => {
                    self.relays[index].status = RelayStatus::Failed;
                    self.events.push_back(Event::GatherFailed {
                        server: self.relays[index].client.server(),
                        reason: error.to_string(),
                    });
                    self.close_connection(index, &format!("the allocation failed: {error}"));
                    self.update_gathering();
                }
                TurnEvent::PermissionCreated(ip) => {
                    self.relays[index].permitted.insert(ip);
                }
                TurnEvent::PermissionFailed { peer, .. } => {
                    let relayed = self.relays[index].client.relayed_address();
                    self.fail_pairs(|local, remote| {
                        Some(local.base) == relayed && remote.address.ip() == peer
                    });
                }
                TurnEvent::RefreshFailed(error) => {
                    self.relays[index].status = RelayStatus::Failed;
                    let relayed = self.relays[index].client.relayed_address();
                    self.fail_pairs(|local, _| Some(local.base) == relayed);
                    self.close_connection(index, &format!("the allocation was lost: {error}"));
                }
                _ => {}
            }
        }
    }

    fn fail_pairs(&mut self, matches: impl Fn(&LocalCandidate, &Candidate) -> bool) {
        for pair in &mut self.pairs {
            if matches(&self.local[pair.local], &self.remote[pair.remote]) {
                pair.state = PairState::Failed;
            }
        }
    }

    fn add_relayed_candidate(&mut self, now: Instant, index: usize) {
        let relay = &self.relays[index];
        let Some(relayed) = relay.client.relayed_address() else {
            return;
        };
        let candidate = Candidate::new(
            CandidateKind::Relayed,
            relayed,
            connection::relay_foundation(
                relay.socket.ip(),
                relay.client.server().ip(),
                relay.transport,
            ),
            relay.local_preference,
            relay.client.mapped_address(),
        );
        let local_preference = relay.local_preference;
        let transport = relay.transport;
        self.add_local_candidate(now, candidate, relayed, local_preference);
        if let Some(local) = self
            .local
            .iter_mut()
            .find(|l| l.candidate.address == relayed)
        {
            local.relay_transport = Some(transport);
        }
    }

    fn add_server_reflexive(
        &mut self,
        _now: Instant,
        socket: SocketAddr,
        server: SocketAddr,
        mapped: SocketAddr,
    ) {
        // The same address as a host candidate means no NAT: nothing new to offer.
        if self.local.iter().any(|l| l.candidate.address == mapped) {
            return;
        }
        let local_preference = self
            .local
            .iter()
            .find(|l| l.base == socket && l.candidate.kind == CandidateKind::Host)
            .map_or(u16::MAX, |l| l.local_preference);
        let candidate = Candidate::new(
            CandidateKind::ServerReflexive,
            mapped,
            foundation(
                CandidateKind::ServerReflexive,
                socket.ip(),
                Some(server.ip()),
            ),
            local_preference,
            Some(socket),
        );
        // Server-reflexive candidates are offered but never paired: checks leave from their
        // base, the host candidate (RFC 8445 §6.1.2.4).
        self.events
            .push_back(Event::LocalCandidate(candidate.clone()));
        self.local.push(LocalCandidate {
            candidate,
            base: socket,
            local_preference,
            relay_transport: None,
        });
    }

    fn add_local_candidate(
        &mut self,
        now: Instant,
        candidate: Candidate,
        base: SocketAddr,
        local_preference: u16,
    ) {
        if self
            .local
            .iter()
            .any(|l| l.candidate.address == candidate.address)
        {
            return;
        }
        self.events
            .push_back(Event::LocalCandidate(candidate.clone()));
        self.local.push(LocalCandidate {
            candidate,
            base,
            local_preference,
            relay_transport: None,
        });
        let local = self.local.len() - 1;
        for remote in 0..self.remote.len() {
            self.add_pair(now, local, remote);
        }
    }

    /// Pairs a host or relayed local candidate with a remote one of the same family, unless
    /// an equal pair exists (RFC 8445 §6.1.2).
    fn add_pair(&mut self, now: Instant, local: usize, remote: usize) -> Option<usize> {
        let local_candidate = &self.local[local];
        let kind = local_candidate.candidate.kind;
        if !matches!(kind, CandidateKind::Host | CandidateKind::Relayed)
            || (self.config.relay_only && kind != CandidateKind::Relayed)
            || local_candidate.base.is_ipv4() != self.remote[remote].address.is_ipv4()
        {
            return None;
        }
        if let Some(existing) = self
            .pairs
            .iter()
            .position(|p| p.local == local && p.remote == remote)
        {
            return Some(existing);
        }
        let foundations = self.foundations(local, remote);
        let shares_foundation = self
            .pairs
            .iter()
            .any(|p| self.foundations(p.local, p.remote) == foundations);
        self.pairs.push(Pair {
            local,
            remote,
            state: if shares_foundation {
                PairState::Frozen
            } else {
                PairState::Waiting
            },
            valid_local: None,
            nominated_by_peer: false,
        });
        if kind == CandidateKind::Relayed {
            let base = self.local[local].base;
            let peer = self.remote[remote].address;
            if let Some(index) = self
                .relays
                .iter()
                .position(|r| r.client.relayed_address() == Some(base))
            {
                self.relays[index]
                    .client
                    .create_permission(now, &mut *self.rng, peer);
                self.drain_relay(now, index);
            }
        }
        Some(self.pairs.len() - 1)
    }

    fn foundations(&self, local: usize, remote: usize) -> (&str, &str) {
        (
            &self.local[local].candidate.foundation,
            &self.remote[remote].foundation,
        )
    }

    /// RFC 8445 §6.1.2.3: G is the controlling agent's candidate priority, D the other's.
    fn pair_priority(&self, pair: &Pair) -> u64 {
        let local = u64::from(self.local[pair.local].candidate.priority);
        let remote = u64::from(self.remote[pair.remote].priority);
        let (g, d) = if self.controlling {
            (local, remote)
        } else {
            (remote, local)
        };
        (g.min(d) << 32) + 2 * g.max(d) + u64::from(g > d)
    }

    fn start_gather_request(&mut self, now: Instant, socket: SocketAddr, server: SocketAddr) {
        let tid = self.new_transaction_id();
        let Ok(payload) = messages::binding_request(tid) else {
            return;
        };
        self.start_transaction(
            now,
            tid,
            TxKind::Gather { server },
            (socket, server),
            None,
            payload,
        );
    }

    /// Sends a new request, retransmitted on the check schedule until answered.
    fn start_transaction(
        &mut self,
        now: Instant,
        tid: TransactionId,
        kind: TxKind,
        (local, remote): (SocketAddr, SocketAddr),
        password: Option<String>,
        payload: Vec<u8>,
    ) {
        let transaction = Transaction {
            kind,
            generation: self.generation,
            local,
            remote,
            password,
            payload,
            next_at: now,
            rto: self.config.timing.check_rto,
            transmits: 0,
            max_transmits: self.config.timing.check_transmits,
            cancelled: false,
        };
        self.transactions.insert(tid, transaction);
        self.retransmit_one(now, tid);
    }

    /// Sends (or re-sends) a transaction and schedules the next try.
    fn retransmit_one(&mut self, now: Instant, tid: TransactionId) {
        let Some(transaction) = self.transactions.get_mut(&tid) else {
            return;
        };
        transaction.transmits += 1;
        // RFC 8489 §6.2.1: the last wait is 16 RTOs rather than another doubling.
        let wait = if transaction.transmits >= transaction.max_transmits {
            transaction.rto * 16
        } else {
            transaction.rto * (1 << (transaction.transmits - 1).min(16))
        };
        transaction.next_at = now + wait.min(self.config.timing.consent_timeout);
        let (local, remote, payload) = (
            transaction.local,
            transaction.remote,
            transaction.payload.clone(),
        );
        self.send_from(now, local, remote, payload);
    }

    fn retransmit(&mut self, now: Instant) {
        let due: Vec<TransactionId> = self
            .transactions
            .iter()
            .filter(|(_, t)| t.next_at <= now)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in due {
            let expired = self
                .transactions
                .get(&tid)
                .is_some_and(|t| t.transmits >= t.max_transmits || t.cancelled);
            if !expired {
                self.retransmit_one(now, tid);
                continue;
            }
            let Some(transaction) = self.transactions.remove(&tid) else {
                continue;
            };
            if transaction.generation != self.generation || transaction.cancelled {
                continue;
            }
            match transaction.kind {
                TxKind::Gather { server } => {
                    self.events.push_back(Event::GatherFailed {
                        server,
                        reason: "no answer from the STUN server".into(),
                    });
                    self.update_gathering();
                }
                TxKind::Check { pair, .. } => {
                    if let Some(pair) = self.pairs.get_mut(pair) {
                        pair.state = PairState::Failed;
                    }
                    if self.nominating == Some(pair) {
                        self.nominating = None;
                    }
                }
                TxKind::Consent => {}
            }
        }
    }

    fn has_checks_to_send(&self) -> bool {
        self.remote_credentials.is_some()
            && (!self.triggered.is_empty()
                || self
                    .pairs
                    .iter()
                    .any(|p| matches!(p.state, PairState::Waiting | PairState::Frozen)))
    }

    /// A pair whose local candidate is relayed waits for the TURN permission of its peer.
    fn can_check(&self, pair: &Pair) -> bool {
        let local = &self.local[pair.local];
        if local.candidate.kind != CandidateKind::Relayed {
            return true;
        }
        let peer = self.remote[pair.remote].address.ip();
        self.relays.iter().any(|r| {
            r.client.relayed_address() == Some(local.base)
                && r.status == RelayStatus::Ready
                && r.permitted.contains(&peer)
        })
    }

    /// One paced check: the triggered queue first, then the best waiting pair, unfreezing
    /// the best frozen one when none waits (RFC 8445 §6.1.4.2).
    fn send_next_check(&mut self, now: Instant) -> bool {
        if self.remote_credentials.is_none() {
            return false;
        }
        let mut deferred = VecDeque::new();
        let mut sent = false;
        while let Some(pair) = self.triggered.pop_front() {
            if self.pairs.get(pair).is_some_and(|p| self.can_check(p)) {
                sent = self.send_check(now, pair, false);
                break;
            }
            deferred.push_back(pair);
        }
        deferred.extend(self.triggered.drain(..));
        self.triggered = deferred;
        if sent {
            return true;
        }
        let best = |state: PairState| {
            self.pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.state == state && self.can_check(p))
                .max_by_key(|(_, p)| self.pair_priority(p))
                .map(|(i, _)| i)
        };
        let next = best(PairState::Waiting).or_else(|| best(PairState::Frozen));
        match next {
            Some(pair) => self.send_check(now, pair, false),
            None => false,
        }
    }

    fn send_check(&mut self, now: Instant, pair: usize, nominate: bool) -> bool {
        let Some(remote_credentials) = self.remote_credentials.clone() else {
            return false;
        };
        let (local, remote) = (self.pairs[pair].local, self.pairs[pair].remote);
        let priority = candidate_priority(
            CandidateKind::PeerReflexive,
            self.local[local].local_preference,
            1,
        );
        let username = format!(
            "{}:{}",
            remote_credentials.ufrag, self.local_credentials.ufrag
        );
        let tid = self.new_transaction_id();
        let Ok(payload) = messages::check_request(
            tid,
            &CheckRequest {
                username: &username,
                password: &remote_credentials.pwd,
                priority,
                controlling: self.controlling,
                tie_breaker: self.tie_breaker,
                nominate,
            },
        ) else {
            return false;
        };
        // A check already running on the pair is superseded (RFC 8445 §7.3.1.4).
        if !nominate {
            let generation = self.generation;
            let linger = self.config.timing.check_rto * 16;
            for t in self.transactions.values_mut() {
                if t.generation == generation
                    && matches!(t.kind, TxKind::Check { pair: p, nominate: false } if p == pair)
                    && !t.cancelled
                {
                    t.cancelled = true;
                    t.next_at = now + linger;
                }
            }
        }
        if self.pairs[pair].state != PairState::Succeeded {
            self.pairs[pair].state = PairState::InProgress;
        }
        let addresses = (self.local[local].base, self.remote[remote].address);
        self.start_transaction(
            now,
            tid,
            TxKind::Check { pair, nominate },
            addresses,
            Some(remote_credentials.pwd),
            payload,
        );
        true
    }

    fn handle_from_peer<'p>(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        packet: &'p [u8],
    ) -> Option<&'p [u8]> {
        // STUN starts with two zero bits (RFC 7983); anything else is the application's.
        if packet.first().is_some_and(|b| *b < 4)
            && let Ok(message) = Message::parse(packet)
        {
            if message.method() == Method::BINDING {
                match message.class() {
                    Class::Request => self.handle_request(now, local, remote, &message),
                    Class::Success | Class::Error => {
                        self.handle_response(now, local, remote, &message)
                    }
                    Class::Indication => {}
                }
            }
            return None;
        }
        // Data may come on a pair the peer nominated before this side's own check of it
        // succeeds (RFC 8445 §11: be ready to receive before selecting).
        let from_working_pair = self
            .path
            .as_ref()
            .is_some_and(|p| p.send_from == local && p.remote.address == remote)
            || self.pairs.iter().any(|p| {
                (p.state == PairState::Succeeded || p.nominated_by_peer)
                    && self.local[p.local].base == local
                    && self.remote[p.remote].address == remote
            });
        from_working_pair.then_some(packet)
    }

    fn handle_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        message: &Message<'_>,
    ) {
        if message.fingerprint_offset().is_some() && message.verify_fingerprint().is_err() {
            return;
        }
        let Ok(Some(Username(username))) = message.get::<Username>() else {
            return;
        };
        let Some((ours, _theirs)) = username.split_once(':') else {
            return;
        };
        let (password, current) = if ours == self.local_credentials.ufrag {
            (self.local_credentials.pwd.clone(), true)
        } else if let Some(previous) = self
            .previous_credentials
            .as_ref()
            .filter(|c| c.ufrag == ours)
        {
            (previous.pwd.clone(), false)
        } else {
            return;
        };
        // A request that fails integrity is dropped rather than answered with 401: an
        // attacker learns nothing and no answer is amplified.
        if message
            .verify_message_integrity(&IntegrityKey::short_term(&password))
            .is_err()
        {
            return;
        }
        let tid = message.transaction_id();
        let remote_controlling = message.get::<IceControlling>().ok().flatten();
        let remote_controlled = message.get::<IceControlled>().ok().flatten();
        // Role conflict (RFC 8445 §7.3.1.1).
        if self.controlling
            && let Some(IceControlling(theirs)) = remote_controlling
        {
            if self.tie_breaker >= theirs {
                if let Ok(answer) = messages::role_conflict(tid, &password) {
                    self.send_from(now, local, remote, answer);
                }
                return;
            }
            self.switch_role();
        } else if !self.controlling
            && let Some(IceControlled(theirs)) = remote_controlled
        {
            if self.tie_breaker >= theirs {
                self.switch_role();
            } else {
                if let Ok(answer) = messages::role_conflict(tid, &password) {
                    self.send_from(now, local, remote, answer);
                }
                return;
            }
        }
        if let Ok(answer) = messages::check_success(tid, remote, &password) {
            self.send_from(now, local, remote, answer);
        }
        if !current {
            return;
        }
        let priority = message
            .get::<Priority>()
            .ok()
            .flatten()
            .map_or(0, |Priority(p)| p);
        let nominate = !self.controlling && matches!(message.get::<UseCandidate>(), Ok(Some(_)));
        if self.remote_credentials.is_none() {
            self.early_checks.push(EarlyCheck {
                local,
                remote,
                priority,
                nominate,
            });
            return;
        }
        self.learn_from_check(now, local, remote, priority, nominate);
    }

    fn switch_role(&mut self) {
        self.controlling = !self.controlling;
        self.nominating = None;
    }

    /// What a check from the peer teaches (RFC 8445 §7.3.1.3 to §7.3.1.5): a peer-reflexive
    /// candidate, a triggered check, a nomination.
    fn learn_from_check(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        priority: u32,
        nominate: bool,
    ) {
        let remote_index = match self.remote.iter().position(|r| r.address == remote) {
            Some(index) => index,
            None => {
                if priority == 0 {
                    return;
                }
                let mut candidate = Candidate::new(
                    CandidateKind::PeerReflexive,
                    remote,
                    foundation(CandidateKind::PeerReflexive, remote.ip(), None),
                    0,
                    None,
                );
                candidate.priority = priority;
                self.remote.push(candidate);
                self.remote.len() - 1
            }
        };
        let Some(local_index) = self.local.iter().position(|l| {
            l.base == local
                && matches!(
                    l.candidate.kind,
                    CandidateKind::Host | CandidateKind::Relayed
                )
        }) else {
            return;
        };
        let Some(pair) = self.add_pair(now, local_index, remote_index) else {
            return;
        };
        if nominate {
            self.pairs[pair].nominated_by_peer = true;
        }
        match self.pairs[pair].state {
            PairState::Succeeded => {
                if nominate {
                    self.select(now, pair);
                }
            }
            // An in-progress check may have been lost (a TURN permission not yet installed on
            // the far side drops it): RFC 8445 §7.3.1.4 replaces it with a triggered check,
            // so that the answer comes within a round trip, not a retransmission timeout.
            PairState::Frozen | PairState::Waiting | PairState::InProgress | PairState::Failed => {
                self.pairs[pair].state = PairState::Waiting;
                if !self.triggered.contains(&pair) {
                    self.triggered.push_back(pair);
                }
            }
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        message: &Message<'_>,
    ) {
        let tid = message.transaction_id();
        let Some(transaction) = self.transactions.get(&tid) else {
            return;
        };
        if let Some(password) = &transaction.password
            && message
                .verify_message_integrity(&IntegrityKey::short_term(password))
                .is_err()
        {
            return;
        }
        let Some(transaction) = self.transactions.remove(&tid) else {
            return;
        };
        let current = transaction.generation == self.generation;
        let success = message.class() == Class::Success;
        let mapped = message
            .get::<XorMappedAddress>()
            .ok()
            .flatten()
            .map(|XorMappedAddress(a)| a);
        match transaction.kind {
            TxKind::Gather { server } => {
                if current
                    && success
                    && let Some(mapped) = mapped
                {
                    self.add_server_reflexive(now, transaction.local, server, mapped);
                } else if current {
                    self.events.push_back(Event::GatherFailed {
                        server,
                        reason: "the STUN server refused the Binding request".into(),
                    });
                }
                if current {
                    self.update_gathering();
                }
            }
            TxKind::Consent => {
                if success
                    && let Some(path) = self.path.as_mut()
                    && path.send_from == transaction.local
                    && path.remote.address == transaction.remote
                {
                    path.consent_expires = now + self.config.timing.consent_timeout;
                }
            }
            TxKind::Check { pair, nominate } => {
                if !current || pair >= self.pairs.len() {
                    return;
                }
                if !success {
                    let code = message
                        .get::<ErrorCodeAttribute>()
                        .ok()
                        .flatten()
                        .map(|e| e.code);
                    if code == Some(ErrorCode::ROLE_CONFLICT) {
                        // RFC 8445 §7.2.5.1: take the other role and check again.
                        self.switch_role();
                        self.pairs[pair].state = PairState::Waiting;
                        self.triggered.push_back(pair);
                    } else {
                        self.pairs[pair].state = PairState::Failed;
                    }
                    if self.nominating == Some(pair) {
                        self.nominating = None;
                    }
                    return;
                }
                // Non-symmetric addresses fail the check (RFC 8445 §7.2.5.2.1).
                if remote != transaction.remote || local != transaction.local {
                    self.pairs[pair].state = PairState::Failed;
                    return;
                }
                self.check_succeeded(now, pair, mapped, nominate);
            }
        }
    }

    fn check_succeeded(
        &mut self,
        now: Instant,
        pair: usize,
        mapped: Option<SocketAddr>,
        nominate: bool,
    ) {
        let local = self.pairs[pair].local;
        let base = self.local[local].base;
        let valid_local = match mapped {
            Some(mapped) if mapped != self.local[local].candidate.address => {
                match self
                    .local
                    .iter()
                    .position(|l| l.candidate.address == mapped && l.base == base)
                {
                    Some(existing) => existing,
                    None => {
                        // A mapping no server reported: a local peer-reflexive candidate
                        // (RFC 8445 §7.2.5.3.1), never signalled.
                        let local_preference = self.local[local].local_preference;
                        let candidate = Candidate::new(
                            CandidateKind::PeerReflexive,
                            mapped,
                            foundation(CandidateKind::PeerReflexive, base.ip(), None),
                            local_preference,
                            Some(base),
                        );
                        self.local.push(LocalCandidate {
                            candidate,
                            base,
                            local_preference,
                            relay_transport: self.local[local].relay_transport,
                        });
                        self.local.len() - 1
                    }
                }
            }
            _ => local,
        };
        let foundations = self.foundations(local, self.pairs[pair].remote);
        let (local_foundation, remote_foundation) =
            (foundations.0.to_owned(), foundations.1.to_owned());
        {
            let entry = &mut self.pairs[pair];
            entry.state = PairState::Succeeded;
            entry.valid_local = Some(valid_local);
        }
        // Unfreeze the pairs that share the foundations (RFC 8445 §7.2.5.3.3).
        for index in 0..self.pairs.len() {
            let same = {
                let (l, r) = self.foundations(self.pairs[index].local, self.pairs[index].remote);
                l == local_foundation && r == remote_foundation
            };
            if same && self.pairs[index].state == PairState::Frozen {
                self.pairs[index].state = PairState::Waiting;
            }
        }
        self.first_valid_at.get_or_insert(now);
        if (nominate && self.controlling)
            || (!self.controlling && self.pairs[pair].nominated_by_peer)
        {
            self.select(now, pair);
        }
        self.maybe_nominate(now);
    }

    fn nomination_deadline(&self) -> Option<Instant> {
        if !self.controlling || self.nominating.is_some() || self.selected_this_generation() {
            return None;
        }
        let best = self.best_valid_pair()?;
        self.first_valid_at
            .map(|at| at + self.nomination_wait(best))
    }

    fn selected_this_generation(&self) -> bool {
        self.path
            .as_ref()
            .is_some_and(|p| p.generation == self.generation)
    }

    fn best_valid_pair(&self) -> Option<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PairState::Succeeded)
            .max_by_key(|(_, p)| self.pair_priority(p))
            .map(|(i, _)| i)
    }

    fn nomination_wait(&self, pair: usize) -> Duration {
        let pair = &self.pairs[pair];
        let relayed = self.local[pair.local].candidate.kind.is_relayed()
            || self.remote[pair.remote].kind.is_relayed();
        if relayed {
            self.config.timing.relay_nomination_delay
        } else {
            self.config.timing.direct_nomination_delay
        }
    }

    /// Regular nomination (RFC 8445 §8.1.1): the controlling agent nominates the best pair
    /// that works once no better pair is still being checked, or once the nomination delay
    /// of its kind (direct or relayed) has passed since the first pair worked.
    fn maybe_nominate(&mut self, now: Instant) {
        if !self.controlling || self.nominating.is_some() || self.selected_this_generation() {
            return;
        }
        let Some(best) = self.best_valid_pair() else {
            return;
        };
        let best_priority = self.pair_priority(&self.pairs[best]);
        let better_pending = self.pairs.iter().any(|p| {
            matches!(
                p.state,
                PairState::Frozen | PairState::Waiting | PairState::InProgress
            ) && self.pair_priority(p) > best_priority
        });
        let waited = self
            .first_valid_at
            .is_some_and(|at| now >= at + self.nomination_wait(best));
        if better_pending && !waited {
            return;
        }
        if self.send_check(now, best, true) {
            self.nominating = Some(best);
        }
    }

    fn select(&mut self, now: Instant, pair: usize) {
        let Some(remote_credentials) = self.remote_credentials.clone() else {
            return;
        };
        let entry = &self.pairs[pair];
        let local = self.local[entry.valid_local.unwrap_or(entry.local)]
            .candidate
            .clone();
        let relayed = self.local[entry.local].candidate.kind == CandidateKind::Relayed;
        let remote = self.remote[entry.remote].clone();
        let send_from = self.local[entry.local].base;
        if let Some(path) = &self.path
            && path.generation == self.generation
            && path.send_from == send_from
            && path.remote.address == remote.address
        {
            return;
        }
        let jitter = self.consent_jitter();
        self.path = Some(Path {
            local: local.clone(),
            remote: remote.clone(),
            send_from,
            local_ufrag: self.local_credentials.ufrag.clone(),
            remote_credentials,
            generation: self.generation,
            last_sent: now,
            consent_expires: now + self.config.timing.consent_timeout,
            next_consent: now + jitter,
        });
        self.nominating = None;
        self.previous_credentials = None;
        if relayed
            && let Some(index) = self
                .relays
                .iter()
                .position(|r| r.client.relayed_address() == Some(send_from))
        {
            // Channel data costs 4 bytes a packet where a Send indication costs 36.
            let _ = self.relays[index]
                .client
                .bind_channel(now, &mut *self.rng, remote.address);
            self.drain_relay(now, index);
        }
        self.events.push_back(Event::Selected { local, remote });
        self.set_state(ConnectionState::Connected);
    }

    fn consent_jitter(&mut self) -> Duration {
        // RFC 7675 §5.1: uniformly within 0.8 to 1.2 times the interval.
        let factor = 0.8 + 0.4 * f64::from(self.rng.next_u32()) / f64::from(u32::MAX);
        self.config.timing.consent_interval.mul_f64(factor)
    }

    fn run_consent(&mut self, now: Instant) {
        let Some(path) = &self.path else {
            return;
        };
        if now >= path.consent_expires {
            self.path = None;
            self.events.push_back(Event::ConsentLost);
            self.set_state(ConnectionState::Failed);
            return;
        }
        if now >= path.next_consent {
            let jitter = self.consent_jitter();
            let tid = self.new_transaction_id();
            let Some(path) = self.path.as_mut() else {
                return;
            };
            path.next_consent = now + jitter;
            path.last_sent = now;
            let username = format!("{}:{}", path.remote_credentials.ufrag, path.local_ufrag);
            let priority = candidate_priority(CandidateKind::PeerReflexive, u16::MAX, 1);
            let request = CheckRequest {
                username: &username,
                password: &path.remote_credentials.pwd,
                priority,
                controlling: self.controlling,
                tie_breaker: self.tie_breaker,
                nominate: false,
            };
            if let Ok(payload) = messages::check_request(tid, &request) {
                let (from, to, password) = (
                    path.send_from,
                    path.remote_address(),
                    path.remote_credentials.pwd.clone(),
                );
                // One request per interval, no retransmission: the next interval's request
                // is the retry, and the transaction is forgotten at the consent timeout.
                self.transactions.insert(
                    tid,
                    Transaction {
                        kind: TxKind::Consent,
                        generation: self.generation,
                        local: from,
                        remote: to,
                        password: Some(password),
                        payload: payload.clone(),
                        next_at: now + self.config.timing.consent_timeout,
                        rto: self.config.timing.consent_timeout,
                        transmits: 1,
                        max_transmits: 1,
                        cancelled: false,
                    },
                );
                self.send_from(now, from, to, payload);
            }
            return;
        }
        if now >= path.last_sent + self.config.timing.keepalive_interval {
            let tid = self.new_transaction_id();
            if let (Ok(payload), Some(path)) = (messages::keepalive(tid), self.path.as_mut()) {
                path.last_sent = now;
                let (from, to) = (path.send_from, path.remote_address());
                self.send_from(now, from, to, payload);
            }
        }
    }

    fn update_gathering(&mut self) {
        if !self.gathering {
            return;
        }
        let generation = self.generation;
        let pending_requests = self
            .transactions
            .values()
            .any(|t| t.generation == generation && matches!(t.kind, TxKind::Gather { .. }));
        let pending_relays = self
            .relays
            .iter()
            .any(|r| r.status == RelayStatus::Allocating);
        if !pending_requests && !pending_relays {
            self.gathering = false;
            self.events.push_back(Event::GatheringComplete);
        }
    }

    /// Every pair failed, both sides have said all their candidates, and nothing is selected.
    fn update_failed(&mut self) {
        if self.state != ConnectionState::Checking
            || self.path.is_some()
            || self.gathering
            || !self.remote_complete
            || self.remote_credentials.is_none()
        {
            return;
        }
        let done = self.pairs.iter().all(|p| p.state == PairState::Failed)
            && !self
                .transactions
                .values()
                .any(|t| matches!(t.kind, TxKind::Check { .. }));
        if done {
            self.set_state(ConnectionState::Failed);
        }
    }
}

impl Path {
    fn remote_address(&self) -> SocketAddr {
        self.remote.address
    }
}
