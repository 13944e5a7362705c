//! Two ICE agents behind NATs, a STUN/TURN server between them, and a signaling channel: the
//! scenario of the NAT matrix, run in the simulator ([`Scenario`]), and the table its results
//! are printed in ([`MatrixTable`]), shared with the namespace lab.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use icebreaker_ice::{
    Agent, AgentConfig, Candidate, CandidateKind, ConnectionState, Event, Timing, TurnServerConfig,
};
use icebreaker_turn::TurnConfig;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::NatType;
use crate::nat::NatConfig;
use crate::sim::{Datagram, HostId, NatId, Network, Node, TurnNode};

/// The STUN and TURN server's address, as in the namespace lab.
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 3478);
/// The TURN user of the scenarios.
pub const TURN_USER: (&str, &str) = ("alice", "secret");

/// What one peer's datagrams carry: a marker byte that is not STUN, a kind and a sequence.
const DATA: u8 = 0x80;
const ECHO: u8 = 0x81;

/// A sans-IO ICE agent as a simulator node: it records what happens, echoes data when asked,
/// and keeps what it would signal in an outbox for the scenario to carry.
pub struct IceNode {
    /// The agent.
    pub agent: Agent,
    /// Every event, with its time.
    pub events: Vec<(Instant, Event)>,
    /// Data received, with its time.
    pub received: Vec<(Instant, Vec<u8>)>,
    echo: bool,
    outbox: VecDeque<Signal>,
}

/// What the signaling channel carries between the two agents.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Signal {
    Candidate(String),
    EndOfCandidates,
}

impl IceNode {
    fn new(agent: Agent, echo: bool) -> IceNode {
        IceNode {
            agent,
            events: Vec::new(),
            received: Vec::new(),
            echo,
            outbox: VecDeque::new(),
        }
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.agent.poll_event() {
            match &event {
                Event::LocalCandidate(candidate) => {
                    self.outbox
                        .push_back(Signal::Candidate(candidate.to_string()));
                }
                Event::GatheringComplete => self.outbox.push_back(Signal::EndOfCandidates),
                _ => {}
            }
            self.events.push((now, event));
        }
    }

    /// How many times a pair was selected.
    pub fn selections(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Selected { .. }))
            .count()
    }
}

impl Node for IceNode {
    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) {
        if let Some(data) = self.agent.handle_input(now, local, remote, payload) {
            let mut data = data.to_vec();
            if self.echo && data.first() == Some(&DATA) {
                data[0] = ECHO;
                let _ = self.agent.send(now, &data);
            }
            self.received.push((now, data));
        }
        self.drain_events(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.agent.handle_timeout(now);
        self.drain_events(now);
    }

    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.agent.poll_transmit().map(|t| Datagram {
            local: t.local,
            remote: t.remote,
            payload: t.payload,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.agent.poll_timeout()
    }
}

/// How one peer of a scenario is set up.
#[derive(Clone, Copy, Debug)]
pub struct PeerSetup {
    /// The NAT in front of it.
    pub nat: NatType,
    /// Relayed candidates only.
    pub relay_only: bool,
    /// The agent's timers.
    pub timing: Timing,
    /// The NAT's mapping lifetime.
    pub mapping_lifetime: Duration,
}

impl PeerSetup {
    /// A peer behind `nat` with default timers and a two-minute mapping lifetime.
    pub fn behind(nat: NatType) -> PeerSetup {
        PeerSetup {
            nat,
            relay_only: false,
            timing: Timing::default(),
            mapping_lifetime: Duration::from_secs(120),
        }
    }
}

/// Which peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The offerer, controlling, on 10.0.1.2 behind 198.51.100.18.
    Offerer,
    /// The answerer, controlled, on 10.0.2.2 behind 198.51.100.34.
    Answerer,
}

/// The result of a transfer: datagrams the offerer sent and got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Sent by the offerer.
    pub sent: usize,
    /// Echoed back by the answerer and received.
    pub echoed: usize,
}

impl Transfer {
    /// The share of datagrams that did not come back.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - self.echoed as f64 / self.sent as f64
    }
}

/// Two ICE agents behind NATs, with the project's TURN core (which also answers STUN
/// Binding) on [`SERVER`], in a seeded simulated network. Signaling takes one step of
/// [`Scenario::SIGNALING_STEP`].
pub struct Scenario {
    /// The network.
    pub net: Network,
    server: HostId,
    offerer: HostId,
    answerer: HostId,
    offerer_nat: NatId,
    answerer_nat: NatId,
    sequence: u32,
}

impl Scenario {
    /// The signaling channel's latency, and the step in which the scenario runs.
    pub const SIGNALING_STEP: Duration = Duration::from_millis(20);

    /// Builds the network: the server, two NATs, an agent behind each, gathering.
    pub fn new(seed: u64, offerer: PeerSetup, answerer: PeerSetup) -> Scenario {
        let start = Instant::now();
        let mut net = Network::new(seed, start);
        let mut config = TurnConfig::new("natlab", 49_152..=49_999);
        config.users = vec![(
            TURN_USER.0.into(),
            icebreaker_turn::UserCredential::Password(TURN_USER.1.into()),
        )];
        let server = TurnNode::with_config(SERVER, config, seed ^ 0x5eed, start);
        let server = net.add_public_host(SERVER.ip(), server);

        let mut add_peer = |setup: PeerSetup,
                            external: [u8; 4],
                            internal: [u8; 4],
                            port: u16,
                            controlling: bool,
                            seed: u64| {
            let mut nat = NatConfig::new(setup.nat, IpAddr::from(external));
            nat.mapping_lifetime = setup.mapping_lifetime;
            let nat = net.add_nat(nat);
            let config = AgentConfig {
                controlling,
                stun_servers: vec![SERVER],
                turn_servers: vec![TurnServerConfig {
                    server: SERVER,
                    username: TURN_USER.0.into(),
                    password: TURN_USER.1.into(),
                }],
                relay_only: setup.relay_only,
                timing: setup.timing,
            };
            let mut agent = Agent::new(config, Box::new(ChaCha8Rng::seed_from_u64(seed)), start);
            agent.add_local_socket(SocketAddr::from((internal, port)));
            agent.gather(start);
            let node = IceNode::new(agent, !controlling);
            let host = net.add_private_host(nat, IpAddr::from(internal), node);
            (host, nat)
        };
        let (offerer, offerer_nat) = add_peer(
            offerer,
            [198, 51, 100, 18],
            [10, 0, 1, 2],
            40_001,
            true,
            seed + 1,
        );
        let (answerer, answerer_nat) = add_peer(
            answerer,
            [198, 51, 100, 34],
            [10, 0, 2, 2],
            40_002,
            false,
            seed + 2,
        );
        let mut scenario = Scenario {
            net,
            server,
            offerer,
            answerer,
            offerer_nat,
            answerer_nat,
            sequence: 0,
        };
        scenario.exchange_credentials();
        scenario
    }

    fn host(&self, side: Side) -> HostId {
        match side {
            Side::Offerer => self.offerer,
            Side::Answerer => self.answerer,
        }
    }

    /// The ICE node of one side.
    pub fn node(&self, side: Side) -> &IceNode {
        match self.net.node::<IceNode>(self.host(side)) {
            Some(node) => node,
            None => unreachable!("both hosts are ICE nodes"),
        }
    }

    fn node_mut(&mut self, side: Side) -> &mut IceNode {
        match self.net.node_mut::<IceNode>(self.host(side)) {
            Some(node) => node,
            None => unreachable!("both hosts are ICE nodes"),
        }
    }

    /// The STUN/TURN server.
    pub fn server(&self) -> Option<&TurnNode> {
        self.net.node::<TurnNode>(self.server)
    }

    /// The NAT in front of one side.
    pub fn nat(&self, side: Side) -> NatId {
        match side {
            Side::Offerer => self.offerer_nat,
            Side::Answerer => self.answerer_nat,
        }
    }

    fn exchange_credentials(&mut self) {
        let now = self.net.now();
        let offer = self.node(Side::Offerer).agent.local_credentials().clone();
        let answer = self.node(Side::Answerer).agent.local_credentials().clone();
        self.node_mut(Side::Answerer)
            .agent
            .set_remote_credentials(now, offer);
        self.node_mut(Side::Offerer)
            .agent
            .set_remote_credentials(now, answer);
    }

    /// Carries what each side has to signal to the other: candidates as RFC 8839 text.
    fn signal(&mut self) {
        let now = self.net.now();
        for (from, to) in [
            (Side::Offerer, Side::Answerer),
            (Side::Answerer, Side::Offerer),
        ] {
            let messages: Vec<Signal> = self.node_mut(from).outbox.drain(..).collect();
            for message in messages {
                let node = self.node_mut(to);
                match message {
                    Signal::Candidate(line) => {
                        if let Ok(candidate) = line.parse::<Candidate>() {
                            node.agent.add_remote_candidate(now, candidate);
                        }
                    }
                    Signal::EndOfCandidates => node.agent.end_of_remote_candidates(),
                }
            }
        }
    }

    /// Runs for `duration`, signaling every step.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.net.now() + duration;
        while self.net.now() < until {
            self.signal();
            let step = Scenario::SIGNALING_STEP.min(until - self.net.now());
            self.net.run_for(step);
        }
        self.signal();
    }

    /// Runs until `done` holds or `max` has passed; returns whether it holds.
    pub fn run_until(&mut self, max: Duration, done: impl Fn(&Scenario) -> bool) -> bool {
        let until = self.net.now() + max;
        while !done(self) {
            if self.net.now() >= until {
                return false;
            }
            self.run_for(Scenario::SIGNALING_STEP);
        }
        true
    }

    /// Whether both agents have a selected pair.
    pub fn connected(&self) -> bool {
        [Side::Offerer, Side::Answerer]
            .iter()
            .all(|side| self.node(*side).agent.state() == ConnectionState::Connected)
    }

    /// Runs until both sides are connected; returns the time it took, or `None` after `max`.
    pub fn connect(&mut self, max: Duration) -> Option<Duration> {
        let start = self.net.now();
        self.run_until(max, Scenario::connected)
            .then(|| self.net.now() - start)
    }

    /// The kinds of one side's selected pair, local then remote.
    pub fn selected(&self, side: Side) -> Option<(CandidateKind, CandidateKind)> {
        self.node(side)
            .agent
            .selected_pair()
            .map(|(local, remote)| (local.kind, remote.kind))
    }

    /// The path class of the selected pair: relay when either side's candidate is relayed.
    pub fn path(&self) -> Option<PathClass> {
        let (local, remote) = self.selected(Side::Offerer)?;
        Some(PathClass::of(local, remote))
    }

    /// The offerer sends `count` datagrams, one every `interval`, that the answerer echoes;
    /// counts what came back within a second of the last.
    pub fn transfer(&mut self, count: usize, interval: Duration) -> Transfer {
        let before = self.echoes();
        let mut sent = 0;
        for _ in 0..count {
            let now = self.net.now();
            self.sequence += 1;
            let mut datagram = vec![DATA];
            datagram.extend_from_slice(&self.sequence.to_be_bytes());
            if self
                .node_mut(Side::Offerer)
                .agent
                .send(now, &datagram)
                .is_ok()
            {
                sent += 1;
            }
            self.run_for(interval);
        }
        self.run_for(Duration::from_secs(1));
        Transfer {
            sent,
            echoed: self.echoes() - before,
        }
    }

    fn echoes(&self) -> usize {
        self.node(Side::Offerer)
            .received
            .iter()
            .filter(|(_, d)| d.first() == Some(&ECHO))
            .count()
    }

    /// An ICE restart started by the offerer: new credentials both ways, as an offer and an
    /// answer over signaling.
    pub fn restart(&mut self) {
        let now = self.net.now();
        let offer = self.node_mut(Side::Offerer).agent.restart(now);
        let answer = self.node_mut(Side::Answerer).agent.restart(now);
        self.node_mut(Side::Answerer)
            .agent
            .set_remote_credentials(now, offer);
        self.node_mut(Side::Offerer)
            .agent
            .set_remote_credentials(now, answer);
    }

    /// Ends both sessions, releasing their TURN allocations.
    pub fn close(&mut self) {
        let now = self.net.now();
        for side in [Side::Offerer, Side::Answerer] {
            let node = self.node_mut(side);
            node.agent.close(now);
            node.drain_events(now);
        }
        self.run_for(Duration::from_millis(200));
    }

    /// Whether `side` has lost consent.
    pub fn consent_lost(&self, side: Side) -> bool {
        self.node(side)
            .events
            .iter()
            .any(|(_, e)| *e == Event::ConsentLost)
    }

    /// Takes one side off the network: it vanishes without a word.
    pub fn vanish(&mut self, side: Side) {
        let host = self.host(side);
        self.net.set_host_online(host, false);
    }

    /// Drops every mapping of one side's NAT, as `conntrack -F` does.
    pub fn flush_nat(&mut self, side: Side) {
        let nat = self.nat(side);
        if let Some(nat) = self.net.nat_mut(nat) {
            nat.flush();
        }
    }
}

/// Whether a selected pair is direct or relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathClass {
    /// Host, server-reflexive or peer-reflexive on both ends.
    Direct,
    /// Through a TURN relay.
    Relay,
}

impl PathClass {
    /// The class of a pair of these kinds.
    pub fn of(local: CandidateKind, remote: CandidateKind) -> PathClass {
        if local.is_relayed() || remote.is_relayed() {
            PathClass::Relay
        } else {
            PathClass::Direct
        }
    }

    /// What RFC 4787 predicts between these NATs, without relay-only.
    pub fn expected(a: NatType, b: NatType) -> PathClass {
        if NatType::direct_possible(a, b) {
            PathClass::Direct
        } else {
            PathClass::Relay
        }
    }
}

impl fmt::Display for PathClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathClass::Direct => "direct",
            PathClass::Relay => "relay",
        })
    }
}

/// The ten unordered pairs of NAT types, each once.
pub fn nat_pairs() -> Vec<(NatType, NatType)> {
    let mut pairs = Vec::new();
    for (i, a) in NatType::ALL.iter().enumerate() {
        for b in &NatType::ALL[i..] {
            pairs.push((*a, *b));
        }
    }
    pairs
}

/// The NAT matrix as a table: a row per offerer NAT, a column per answerer NAT, each cell the
/// selected pair's kinds (`srflx/prflx`, `relay/srflx`, ...).
#[derive(Clone, Debug, Default)]
pub struct MatrixTable {
    cells: Vec<(NatType, NatType, String)>,
}

impl MatrixTable {
    /// Records a cell.
    pub fn record(&mut self, offerer: NatType, answerer: NatType, cell: impl Into<String>) {
        self.cells.push((offerer, answerer, cell.into()));
    }

    /// The text of a cell: the offerer's selected local and remote kinds.
    pub fn cell(local: CandidateKind, remote: CandidateKind) -> String {
        format!("{}/{}", local.token(), remote.token())
    }
}

impl fmt::Display for MatrixTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const WIDTH: usize = 18;
        write!(f, "{:<WIDTH$}", "offerer \\ answerer")?;
        for column in NatType::ALL {
            write!(f, " | {:<WIDTH$}", column.name())?;
        }
        writeln!(f)?;
        write!(f, "{}", "-".repeat(WIDTH))?;
        for _ in NatType::ALL {
            write!(f, "-|-{}", "-".repeat(WIDTH))?;
        }
        writeln!(f)?;
        for row in NatType::ALL {
            write!(f, "{:<WIDTH$}", row.name())?;
            for column in NatType::ALL {
                let cell = self
                    .cells
                    .iter()
                    .find(|(a, b, _)| *a == row && *b == column)
                    .map_or("", |(_, _, c)| c.as_str());
                write!(f, " | {cell:<WIDTH$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
