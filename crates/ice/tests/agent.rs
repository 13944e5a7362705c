//! The ICE agent between two peers on a virtual clock, with a network that delivers, delays
//! or drops what the test says. NAT traversal through STUN and TURN servers is tested in
//! `icebreaker-natlab`'s simulator, with the real server cores.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use icebreaker_ice::{
    Agent, AgentConfig, Candidate, CandidateKind, ConnectionState, Event, SendError, Timing,
};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Peer {
    agent: Agent,
    events: Vec<Event>,
    received: Vec<Vec<u8>>,
    /// Candidates this peer trickled, not yet given to the other side.
    outbox: VecDeque<Candidate>,
    gathered: bool,
}

/// Two agents, A (controlling unless told) and B, with a one-way delay and a filter that
/// decides which datagrams are lost.
struct Pair {
    now: Instant,
    a: Peer,
    b: Peer,
    in_flight: Vec<(Instant, usize, SocketAddr, SocketAddr, Vec<u8>)>,
    delay: Duration,
    drop_to_a: bool,
    drop_to_b: bool,
    trickle: bool,
}

fn peer(config: AgentConfig, sockets: &[&str], seed: u64, now: Instant) -> Peer {
    let mut agent = Agent::new(config, Box::new(ChaCha8Rng::seed_from_u64(seed)), now);
    for socket in sockets {
        agent.add_local_socket(addr(socket));
    }
    Peer {
        agent,
        events: Vec::new(),
        received: Vec::new(),
        outbox: VecDeque::new(),
        gathered: false,
    }
}

fn config(controlling: bool) -> AgentConfig {
    AgentConfig {
        controlling,
        ..AgentConfig::default()
    }
}

impl Pair {
    fn new(a: AgentConfig, b: AgentConfig) -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            now,
            a: peer(a, &["192.0.2.1:5000"], 1, now),
            b: peer(b, &["192.0.2.2:6000"], 2, now),
            in_flight: Vec::new(),
            delay: Duration::from_millis(5),
            drop_to_a: false,
            drop_to_b: false,
            trickle: true,
        };
        pair.a.agent.gather(now);
        pair.b.agent.gather(now);
        pair
    }

    fn peer(&mut self, index: usize) -> &mut Peer {
        if index == 0 { &mut self.a } else { &mut self.b }
    }

    /// Signaling: credentials both ways, then trickled candidates.
    fn exchange_credentials(&mut self) {
        let now = self.now;
        let a = self.a.agent.local_credentials().clone();
        let b = self.b.agent.local_credentials().clone();
        self.a.agent.set_remote_credentials(now, b);
        self.b.agent.set_remote_credentials(now, a);
    }

    fn drain(&mut self) {
        let now = self.now;
        for index in 0..2 {
            let delay = self.delay;
            while let Some(t) = self.peer(index).agent.poll_transmit() {
                let to = 1 - index;
                self.in_flight
                    .push((now + delay, to, t.local, t.remote, t.payload));
            }
            while let Some(event) = self.peer(index).agent.poll_event() {
                match &event {
                    Event::LocalCandidate(c) => self.peer(index).outbox.push_back(c.clone()),
                    Event::GatheringComplete => self.peer(index).gathered = true,
                    _ => {}
                }
                self.peer(index).events.push(event);
            }
        }
        if self.trickle {
            for index in 0..2 {
                while let Some(candidate) = self.peer(index).outbox.pop_front() {
                    // Candidate lines travel as text, as over a signaling channel.
                    let line = candidate.to_string();
                    let parsed: Candidate = line.parse().unwrap();
                    self.peer(1 - index).agent.add_remote_candidate(now, parsed);
                }
                if self.peer(index).gathered {
                    self.peer(1 - index).agent.end_of_remote_candidates();
                }
            }
        }
    }

    fn step(&mut self, until: Instant) -> bool {
        self.drain();
        let next_packet = self.in_flight.iter().map(|p| p.0).min();
        let next_timer = [self.a.agent.poll_timeout(), self.b.agent.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
            self.now = until;
            return false;
        };
        if next > until {
            self.now = until;
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        if next_packet == Some(next) {
            let position = self.in_flight.iter().position(|p| p.0 == next).unwrap();
            let (_, to, from, dst, payload) = self.in_flight.remove(position);
            let dropped = if to == 0 {
                self.drop_to_a
            } else {
                self.drop_to_b
            };
            if !dropped {
                let peer = self.peer(to);
                if let Some(data) = peer.agent.handle_input(now, dst, from, &payload) {
                    let data = data.to_vec();
                    peer.received.push(data);
                }
            }
        } else {
            for index in 0..2 {
                if self
                    .peer(index)
                    .agent
                    .poll_timeout()
                    .is_some_and(|at| at <= now)
                {
                    self.peer(index).agent.handle_timeout(now);
                }
            }
        }
        true
    }

    fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        let mut steps = 0;
        while self.step(until) {
            steps += 1;
            assert!(steps < 1_000_000, "the agents never go idle");
        }
        self.drain();
    }

    fn run_until(&mut self, max: Duration, done: impl Fn(&Pair) -> bool) -> bool {
        let until = self.now + max;
        while !done(self) {
            if !self.step(until) {
                self.drain();
                return done(self);
            }
        }
        self.drain();
        true
    }

    fn connected(&self) -> bool {
        self.a.agent.state() == ConnectionState::Connected
            && self.b.agent.state() == ConnectionState::Connected
    }
}

fn selected(peer: &Peer) -> (SocketAddr, SocketAddr) {
    let (local, remote) = peer.agent.selected_pair().expect("a selected pair");
    (local.address, remote.address)
}

#[test]
fn two_agents_connect_over_host_candidates_and_exchange_data() {
    let mut pair = Pair::new(config(true), config(false));
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
    assert_eq!(
        selected(&pair.a),
        (addr("192.0.2.1:5000"), addr("192.0.2.2:6000"))
    );
    assert_eq!(
        selected(&pair.b),
        (addr("192.0.2.2:6000"), addr("192.0.2.1:5000"))
    );
    let (local, remote) = pair.a.agent.selected_pair().unwrap();
    assert_eq!(
        (local.kind, remote.kind),
        (CandidateKind::Host, CandidateKind::Host)
    );
    assert!(
        pair.a
            .events
            .iter()
            .any(|e| matches!(e, Event::Selected { .. }))
    );
    assert!(pair.a.gathered && pair.b.gathered);

    let now = pair.now;
    pair.a.agent.send(now, b"\x80hello").unwrap();
    pair.b.agent.send(now, b"\x80world").unwrap();
    pair.run_for(Duration::from_millis(100));
    assert_eq!(pair.b.received, vec![b"\x80hello".to_vec()]);
    assert_eq!(pair.a.received, vec![b"\x80world".to_vec()]);
}

#[test]
fn data_on_a_pair_the_peer_nominated_arrives_before_this_side_selects_it() {
    // B's first checks are lost (over TURN: before the far side's permission exists), so
    // A's nomination reaches B while B's own check of the pair is still pending.
    let mut pair = Pair::new(config(true), config(false));
    pair.exchange_credentials();
    pair.drop_to_a = true;
    pair.run_for(Duration::from_millis(30));
    pair.drop_to_a = false;
    let mut sent = 0u8;
    while sent < 100 {
        if pair.a.agent.state() == ConnectionState::Connected {
            let now = pair.now;
            pair.a.agent.send(now, &[0x80, sent]).unwrap();
            sent += 1;
        }
        pair.run_for(Duration::from_millis(5));
    }
    pair.run_for(Duration::from_secs(1));
    assert_eq!(pair.b.received.len(), 100);
    assert!(pair.connected());
}

#[test]
fn closing_stops_everything() {
    let mut pair = Pair::new(config(true), config(false));
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
    let now = pair.now;
    pair.a.agent.close(now);
    assert_eq!(pair.a.agent.state(), ConnectionState::Closed);
    assert_eq!(pair.a.agent.poll_timeout(), None);
    assert_eq!(
        pair.a.agent.send(now, b"\x80after"),
        Err(SendError::NotConnected)
    );
    // The peer notices through consent.
    assert!(pair.run_until(Duration::from_secs(60), |p| {
        p.b.agent.state() == ConnectionState::Failed
    }));
}

#[test]
fn sending_before_a_pair_is_selected_is_an_error() {
    let mut pair = Pair::new(config(true), config(false));
    let now = pair.now;
    assert_eq!(
        pair.a.agent.send(now, b"\x80early"),
        Err(SendError::NotConnected)
    );
}

#[test]
fn a_role_conflict_is_resolved_by_the_tie_breakers() {
    // Both believe they are controlling (RFC 8445 §7.3.1.1): exactly one stays so.
    let mut pair = Pair::new(config(true), config(true));
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(10), Pair::connected));
    assert_ne!(pair.a.agent.is_controlling(), pair.b.agent.is_controlling());
    // And both controlled.
    let mut pair = Pair::new(config(false), config(false));
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(10), Pair::connected));
    assert_ne!(pair.a.agent.is_controlling(), pair.b.agent.is_controlling());
}

#[test]
fn checks_that_arrive_before_the_answer_are_answered_and_replayed() {
    let mut pair = Pair::new(config(true), config(false));
    // B learns A's credentials and candidates first; A hears of B only later, the way an
    // offerer waits for the answer while the answerer already checks.
    let now = pair.now;
    let a_credentials = pair.a.agent.local_credentials().clone();
    pair.b.agent.set_remote_credentials(now, a_credentials);
    pair.run_for(Duration::from_millis(300));
    assert_eq!(pair.a.agent.state(), ConnectionState::Checking);
    let b_credentials = pair.b.agent.local_credentials().clone();
    let now = pair.now;
    pair.a.agent.set_remote_credentials(now, b_credentials);
    assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
}

#[test]
fn a_peer_reflexive_candidate_is_learned_from_checks() {
    // B's candidates never reach A: A learns B's address from B's checks alone.
    let mut pair = Pair::new(config(true), config(false));
    pair.trickle = false;
    pair.exchange_credentials();
    let now = pair.now;
    let a_host = pair.a.agent.local_candidates().next().unwrap().clone();
    pair.b.agent.add_remote_candidate(now, a_host);
    assert!(pair.run_until(Duration::from_secs(10), Pair::connected));
    let (_, remote) = pair.a.agent.selected_pair().unwrap();
    assert_eq!(remote.kind, CandidateKind::PeerReflexive);
    assert_eq!(remote.address, addr("192.0.2.2:6000"));
}

#[test]
fn consent_is_lost_when_the_peer_vanishes() {
    let mut pair = Pair::new(config(true), config(false));
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
    let vanished_at = pair.now;
    pair.drop_to_b = true;
    pair.drop_to_a = true;
    assert!(pair.run_until(Duration::from_secs(60), |p| {
        p.a.agent.state() == ConnectionState::Failed
    }));
    let detected = pair.now - vanished_at;
    // RFC 7675: 30 s without an answer; the last answer came a few seconds before.
    assert!(
        detected <= Duration::from_secs(31) && detected >= Duration::from_secs(24),
        "{detected:?}"
    );
    assert!(pair.a.events.contains(&Event::ConsentLost));
    let now = pair.now;
    assert_eq!(
        pair.a.agent.send(now, b"\x80late"),
        Err(SendError::NotConnected)
    );
}

#[test]
fn consent_holds_while_the_peer_answers_and_an_idle_pair_sends_keepalives() {
    let mut pair = Pair::new(config(true), config(false));
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
    pair.run_for(Duration::from_secs(120));
    assert!(pair.connected());
    assert!(!pair.a.events.contains(&Event::ConsentLost));
}

#[test]
fn consent_checks_follow_the_configured_interval() {
    let timing = Timing {
        consent_interval: Duration::from_secs(1),
        consent_timeout: Duration::from_secs(3),
        ..Timing::default()
    };
    let mut a = config(true);
    a.timing = timing;
    let mut b = config(false);
    b.timing = timing;
    let mut pair = Pair::new(a, b);
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
    let vanished_at = pair.now;
    pair.drop_to_a = true;
    assert!(pair.run_until(Duration::from_secs(10), |p| {
        p.a.agent.state() == ConnectionState::Failed
    }));
    assert!(pair.now - vanished_at <= Duration::from_secs(3));
}

#[test]
fn checks_fail_when_nothing_answers() {
    let mut pair = Pair::new(config(true), config(false));
    pair.exchange_credentials();
    pair.drop_to_b = true;
    pair.drop_to_a = true;
    assert!(pair.run_until(Duration::from_secs(120), |p| {
        p.a.agent.state() == ConnectionState::Failed && p.b.agent.state() == ConnectionState::Failed
    }));
}

#[test]
fn an_ice_restart_moves_to_a_new_pair_and_data_keeps_flowing() {
    let mut pair = Pair::new(config(true), config(false));
    pair.exchange_credentials();
    assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
    let old_credentials = pair.a.agent.local_credentials().clone();
    let selections_before = pair
        .a
        .events
        .iter()
        .filter(|e| matches!(e, Event::Selected { .. }))
        .count();

    // A restarts; the offer with the new credentials reaches B, which restarts too.
    let now = pair.now;
    let a_new = pair.a.agent.restart(now);
    assert_ne!(a_new, old_credentials);
    let b_new = pair.b.agent.restart(now);
    pair.b.agent.set_remote_credentials(now, a_new);
    // Data sent while the new checks run still arrives over the old pair.
    let mut sent = 0;
    for _ in 0..20 {
        let now = pair.now;
        pair.a.agent.send(now, &[0x80, sent]).unwrap();
        sent += 1;
        pair.run_for(Duration::from_millis(10));
    }
    let now = pair.now;
    pair.a.agent.set_remote_credentials(now, b_new);
    for _ in 0..100 {
        let now = pair.now;
        pair.a.agent.send(now, &[0x80, sent]).unwrap();
        sent += 1;
        pair.run_for(Duration::from_millis(20));
    }
    let selections_after = pair
        .a
        .events
        .iter()
        .filter(|e| matches!(e, Event::Selected { .. }))
        .count();
    assert_eq!(selections_after, selections_before + 1);
    assert!(pair.connected());
    assert_eq!(pair.b.received.len(), usize::from(sent));
    // The consent of the new generation runs with the new credentials.
    pair.run_for(Duration::from_secs(60));
    assert!(pair.connected());
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_the_agent(packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..50)) {
        let mut pair = Pair::new(config(true), config(false));
        pair.exchange_credentials();
        for packet in packets {
            let now = pair.now;
            let _ = pair.a.agent.handle_input(now, addr("192.0.2.1:5000"), addr("192.0.2.2:6000"), &packet);
        }
        prop_assert!(pair.run_until(Duration::from_secs(5), Pair::connected));
    }

    #[test]
    fn candidate_lines_never_panic(line in "[ -~]{0,120}") {
        let _ = line.parse::<Candidate>();
    }

    #[test]
    fn candidate_lines_round_trip(
        ip in any::<[u8; 4]>(),
        port in 1u16..,
        priority in 1u32..,
        kind in 0usize..4,
        related in any::<Option<([u8; 4], u16)>>(),
    ) {
        let kinds = [CandidateKind::Host, CandidateKind::ServerReflexive, CandidateKind::PeerReflexive, CandidateKind::Relayed];
        let mut candidate = Candidate::new(
            kinds[kind],
            SocketAddr::from((ip, port)),
            "1".into(),
            0,
            related.map(SocketAddr::from),
        );
        candidate.priority = priority;
        let parsed: Candidate = candidate.to_string().parse().unwrap();
        prop_assert_eq!(parsed, candidate);
    }
}
