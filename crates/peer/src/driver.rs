//! The run: a tokio loop on one thread around the sans-IO [`Agent`].
//!
//! One UDP socket per host address, each read by a task that forwards datagrams into one
//! channel; one TCP, TLS or DTLS connection per relay not over plain UDP
//! ([`crate::connections`]), whose news comes on another; the loop selects over those
//! channels, the signaling WebSocket, the agent's timer and the run's own timer (probes, the
//! restart, pings, deadlines). After every call into the agent its transmits are sent and its
//! events handled.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use icebreaker_ice::uri::Transport;
use icebreaker_ice::{
    Agent, AgentConfig, Candidate, CandidateKind, ConnectionState, Credentials, Event,
    TurnConnection, TurnServerConfig,
};
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use crate::cli::{Options, Role};
use crate::connections::{ConnectionNews, Connections, SecureClients, SendProblem};
use crate::interfaces::interface_addresses;
use crate::probe::{self, Transfer, round3};
use crate::report::{Endpoint, GatherFailure, RelayLost, Report, Selection};
use crate::signaling::SignalMessage;

/// How long the offerer waits for echoes after its last probe; a probe not echoed by then is
/// lost.
pub const ECHO_WAIT: Duration = Duration::from_secs(2);

/// WebSocket pings keep the relay's idle timeout and NAT mappings of the TCP connection from
/// closing a quiet signaling channel.
const PING_INTERVAL: Duration = Duration::from_secs(20);

/// Echoes the answerer keeps for want of a selected pair: the probes of two seconds at the
/// highest rate of one a millisecond.
const MAX_UNSENT_ECHOES: usize = 2_000;

/// How long the goodbye may take: the `bye` message and the WebSocket close.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A datagram from one of the sockets: the socket's address, the sender, the bytes.
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// What a TCP, TLS or DTLS connection to a TURN server tells the loop.
type News = (TurnConnection, ConnectionNews);

/// Runs one peer to the end and reports. The run succeeded when the report has no error.
pub async fn run(options: Options) -> Report {
    let start = Instant::now();
    let role = options.role;
    let log = Log { start, role };
    let setup = match setup(&options, &log).await {
        Ok(setup) => setup,
        Err(error) => return Report::failed(role.as_str(), error),
    };
    let Setup {
        sockets,
        ws,
        stun,
        turn,
        connections,
        news,
    } = setup;
    let rng = match ChaCha20Rng::try_from_os_rng() {
        Ok(rng) => rng,
        Err(error) => {
            return Report::failed(role.as_str(), format!("no OS randomness: {error}"));
        }
    };
    let (udp_turn, connection_turn): (Vec<_>, Vec<_>) = turn
        .into_iter()
        .partition(|(_, transport)| *transport == Transport::Udp);
    let config = AgentConfig {
        controlling: role == Role::Offer,
        stun_servers: stun,
        turn_servers: udp_turn.into_iter().map(|(server, _)| server).collect(),
        relay_only: options.relay_only,
        timing: options.timing,
    };
    let mut agent = Agent::new(config, Box::new(rng), now());
    for (server, transport) in connection_turn {
        agent.add_turn_server(server, transport);
    }
    let (tx, rx) = mpsc::channel::<Datagram>(1024);
    for (local, socket) in &sockets {
        agent.add_local_socket(*local);
        tokio::spawn(receive(*local, Arc::clone(socket), tx.clone()));
    }
    drop(tx);
    let mut peer = Peer::new(options, log, agent, sockets, connections);
    peer.begin();
    peer.event_loop(ws, rx, news).await
}

/// What the run needs before the agent starts.
struct Setup {
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    ws: Ws,
    stun: Vec<SocketAddr>,
    turn: Vec<(TurnServerConfig, Transport)>,
    connections: Connections,
    news: mpsc::Receiver<News>,
}

async fn setup(options: &Options, log: &Log) -> Result<Setup, String> {
    let mut stun = Vec::new();
    for uri in &options.stun {
        let addrs = crate::uri::resolve(uri)
            .await
            .map_err(|e| format!("cannot resolve {uri}: {e}"))?;
        stun.extend(addrs);
    }
    let secure = if options
        .turn
        .iter()
        .any(|uri| matches!(uri.transport, Transport::Tls | Transport::Dtls))
    {
        Some(SecureClients::new(options.ca.as_deref())?)
    } else {
        None
    };
    let (mut connections, news) = Connections::new(secure, options.timeout);
    let mut turn = Vec::new();
    for uri in &options.turn {
        let (username, password) = options.turn_credentials.clone().unwrap_or_default();
        for server in crate::uri::resolve(uri)
            .await
            .map_err(|e| format!("cannot resolve {uri}: {e}"))?
        {
            if matches!(uri.transport, Transport::Tls | Transport::Dtls) {
                connections.name_server(server, &uri.host)?;
            }
            let config = TurnServerConfig {
                server,
                username: username.clone(),
                password: password.clone(),
            };
            turn.push((config, uri.transport));
        }
    }
    let sockets = bind(options, log)?;
    let deadline = log.start + options.timeout;
    // Signaling messages are small and each one matters at once: no Nagle delay.
    let connect = connect_async_with_config(options.signal.as_str(), None, true);
    let ws = match timeout_at(deadline, connect).await {
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(error)) => {
            return Err(format!(
                "cannot reach the signaling relay at {}: {error}",
                options.signal
            ));
        }
        Err(_) => {
            return Err(format!(
                "the signaling relay at {} did not answer within {:?}",
                options.signal, options.timeout
            ));
        }
    };
    log.line(format_args!("joined {}", options.signal));
    Ok(Setup {
        sockets,
        ws,
        stun,
        turn,
        connections,
        news,
    })
}

/// One UDP socket on port 0 per address: the `--bind` ones, or every usable interface
/// address.
fn bind(options: &Options, log: &Log) -> Result<Vec<(SocketAddr, Arc<UdpSocket>)>, String> {
    let explicit = !options.bind.is_empty();
    let addresses: Vec<IpAddr> = if explicit {
        options.bind.clone()
    } else {
        interface_addresses(options.loopback)
            .map_err(|e| format!("cannot list the interface addresses: {e}"))?
    };
    let mut sockets = Vec::new();
    for ip in addresses {
        let bound = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(UdpSocket::from_std)
            .and_then(|s| s.local_addr().map(|a| (a, s)));
        match bound {
            Ok((local, socket)) => {
                log.line(format_args!("bound {local}"));
                sockets.push((local, Arc::new(socket)));
            }
            // An interface address may be unusable (an IPv6 one still in duplicate address
            // detection, say): the others still make candidates. One asked for by name may
            // not be skipped.
            Err(error) if !explicit => log.line(format_args!("skipped {ip}: {error}")),
            Err(error) => return Err(format!("cannot bind {ip}: {error}")),
        }
    }
    if sockets.is_empty() {
        return Err(if options.loopback {
            "no interface address to bind: give one with --bind".to_owned()
        } else {
            "no interface address to bind but loopback: add --loopback or --bind".to_owned()
        });
    }
    Ok(sockets)
}

/// Forwards the datagrams of one socket to the loop until the loop is gone.
async fn receive(local: SocketAddr, socket: Arc<UdpSocket>, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                if tx.send((local, from, buf[..len].to_vec())).await.is_err() {
                    return;
                }
            }
            // An ICMP error reported on the socket says nothing about the next datagram; a
            // short pause keeps a persistent one from spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Progress lines on standard error, stamped with the seconds since the start.
#[derive(Clone, Copy)]
struct Log {
    start: Instant,
    role: Role,
}

impl Log {
    fn line(&self, message: fmt::Arguments<'_>) {
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!("[{secs:8.3}] {}: {message}", self.role.as_str());
    }
}

struct Peer {
    options: Options,
    log: Log,
    agent: Agent,
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// The connections to TURN servers over TCP, TLS and DTLS.
    connections: Connections,
    /// Relays lost after they were allocated (their connection broke).
    relays_lost: Vec<RelayLost>,
    /// The run is ending: connections the agent closes now are not losses.
    closing: bool,
    /// Signaling messages to send on the next turn of the loop.
    outgoing: Vec<SignalMessage>,
    /// The answerer's candidates, held until its answer is sent.
    held: Vec<SignalMessage>,
    /// The answerer has answered the first offer.
    answered: bool,
    /// The offerer sent an offer or a restart and awaits the answer.
    awaiting_answer: bool,
    /// The peer's current ufrag: candidates tagged with another one are stale.
    remote_ufrag: Option<String>,
    signaling_open: bool,
    /// Gathering of the current generation is over.
    gathered: bool,
    /// When both sides' credentials were first known here.
    credentials_at: Option<Instant>,
    connected_at: Option<Instant>,
    /// A restart was started and its pair is not selected yet.
    restart_pending: bool,
    restart_at: Option<Instant>,
    restarts: u32,
    transfer: Transfer,
    /// Probes scheduled so far, sent or not.
    scheduled: u32,
    next_probe_at: Option<Instant>,
    echo_deadline: Option<Instant>,
    /// The answerer: echoes of probes that came before its pair was selected, sent once it
    /// is (the agent may accept data from a pair that works before it selects one).
    unsent_echoes: Vec<Vec<u8>>,
    /// The answerer: the last datagram or message from the offerer.
    last_heard: Instant,
    echoed: u32,
    next_ping_at: Instant,
    ping_due: bool,
    pairs: Vec<Selection>,
    consent_lost: bool,
    gather_failed: Vec<GatherFailure>,
    bye_received: bool,
    /// Set when the run is over: Ok, or why it failed.
    outcome: Option<Result<(), String>>,
    /// Send failures already logged, one line per path.
    send_errors: HashSet<(SocketAddr, SocketAddr)>,
}

impl Peer {
    fn new(
        options: Options,
        log: Log,
        agent: Agent,
        sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
        connections: Connections,
    ) -> Peer {
        let now = Instant::now();
        Peer {
            options,
            log,
            agent,
            sockets,
            connections,
            relays_lost: Vec::new(),
            closing: false,
            outgoing: Vec::new(),
            held: Vec::new(),
            answered: false,
            awaiting_answer: false,
            remote_ufrag: None,
            signaling_open: true,
            gathered: false,
            credentials_at: None,
            connected_at: None,
            restart_pending: false,
            restart_at: None,
            restarts: 0,
            transfer: Transfer::new(),
            scheduled: 0,
            next_probe_at: None,
            echo_deadline: None,
            unsent_echoes: Vec::new(),
            last_heard: now,
            echoed: 0,
            next_ping_at: now + PING_INTERVAL,
            ping_due: false,
            pairs: Vec::new(),
            consent_lost: false,
            gather_failed: Vec::new(),
            bye_received: false,
            outcome: None,
            send_errors: HashSet::new(),
        }
    }

    fn role(&self) -> Role {
        self.options.role
    }

    fn log(&self, message: fmt::Arguments<'_>) {
        self.log.line(message);
    }

    /// The offer goes out before any candidate; then gathering starts.
    fn begin(&mut self) {
        if self.role() == Role::Offer {
            let credentials = self.agent.local_credentials().clone();
            self.outgoing.push(SignalMessage::Offer {
                ufrag: credentials.ufrag,
                pwd: credentials.pwd,
            });
            self.awaiting_answer = true;
        }
        self.agent.gather(now());
    }

    async fn event_loop(
        mut self,
        ws: Ws,
        mut rx: mpsc::Receiver<Datagram>,
        mut news: mpsc::Receiver<News>,
    ) -> Report {
        let mut ws = Some(ws);
        loop {
            self.drain();
            self.check_progress(Instant::now());
            if self.outcome.is_some() {
                break;
            }
            self.flush(&mut ws).await;
            let agent_at = self.agent.poll_timeout().map(Instant::from_std);
            let wake_at = self.next_wake();
            tokio::select! {
                datagram = rx.recv() => match datagram {
                    Some((local, remote, data)) => self.on_datagram(local, remote, &data),
                    None => self.fail("every socket closed".to_owned()),
                },
                // The connections keep a sender: this channel never ends before the loop.
                Some((connection, news)) = news.recv() => self.on_connection_news(connection, news),
                message = next_message(&mut ws) => match message {
                    Some(Ok(Message::Text(text))) => self.on_signal(text.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map_or_else(String::new, |f| {
                            format!(": {} {}", u16::from(f.code), f.reason.as_str())
                        });
                        ws = None;
                        self.on_signaling_closed(&reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        ws = None;
                        self.on_signaling_closed(&format!(": {error}"));
                    }
                    None => {
                        ws = None;
                        self.on_signaling_closed("");
                    }
                },
                () = sleep_opt(agent_at) => self.agent.handle_timeout(now()),
                () = sleep_until(wake_at) => self.on_wake(),
            }
        }
        // Releases the TURN allocations now rather than at their expiry.
        self.closing = true;
        self.agent.close(now());
        self.drain();
        // The connections write their last bytes (the releases) while the goodbye goes out.
        self.goodbye(ws).await;
        self.connections.finish(GOODBYE_WAIT).await;
        self.report()
    }

    /// Sends what the agent queued and handles its events, until neither has more.
    fn drain(&mut self) {
        loop {
            let mut idle = true;
            while let Some(transmit) = self.agent.poll_transmit() {
                idle = false;
                match transmit.connection {
                    Some(connection) => self.send_connection(connection, transmit.payload),
                    None => self.send_datagram(transmit.local, transmit.remote, &transmit.payload),
                }
            }
            while let Some(event) = self.agent.poll_event() {
                idle = false;
                self.on_event(event);
            }
            if idle {
                return;
            }
        }
    }

    fn send_datagram(&mut self, local: SocketAddr, remote: SocketAddr, payload: &[u8]) {
        let Some((_, socket)) = self.sockets.iter().find(|(addr, _)| *addr == local) else {
            self.log(format_args!("no socket bound to {local}"));
            return;
        };
        // A full send buffer drops the datagram, as a congested link would: UDP and ICE
        // recover from that, and the loop must not stall on it.
        if let Err(error) = socket.try_send_to(payload, remote)
            && self.send_errors.insert((local, remote))
        {
            self.log(format_args!(
                "cannot send from {local} to {remote}: {error}"
            ));
        }
    }

    /// Queues bytes for a TURN server's connection; the loop must not wait on it, so a
    /// connection that cannot keep up loses whole transmits, as a congested link would.
    fn send_connection(&mut self, connection: TurnConnection, payload: Vec<u8>) {
        match self.connections.send(connection, payload) {
            Ok(()) | Err(SendProblem::Closed) => {}
            Err(SendProblem::QueueFull) => {
                if self
                    .send_errors
                    .insert((connection.local, connection.server))
                {
                    self.log(format_args!(
                        "the {} connection to {} falls behind: transmits dropped",
                        connection.transport.as_str(),
                        connection.server
                    ));
                }
            }
        }
    }

    fn on_connection_news(&mut self, connection: TurnConnection, news: ConnectionNews) {
        let now_std = now();
        match news {
            ConnectionNews::Data(bytes) => {
                for app in self
                    .agent
                    .handle_connection_input(now_std, connection, &bytes)
                {
                    self.on_app_data(now_std, &app);
                }
            }
            ConnectionNews::Closed(reason) => {
                self.connections.close(connection);
                self.agent.handle_connection_closed(connection, &reason);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::LocalCandidate(candidate) => {
                let over = match self.agent.relay_transport(candidate.address) {
                    Some(transport) => format!(" over {}", transport.as_str()),
                    None => String::new(),
                };
                self.log(format_args!(
                    "local candidate {} {}{over}",
                    candidate.kind, candidate.address
                ));
                let ufrag = Some(self.agent.local_credentials().ufrag.clone());
                self.signal(SignalMessage::Candidate {
                    candidate: candidate.to_string(),
                    ufrag,
                });
            }
            Event::GatheringComplete => {
                self.log(format_args!("gathering complete"));
                self.gathered = true;
                let ufrag = Some(self.agent.local_credentials().ufrag.clone());
                self.signal(SignalMessage::EndOfCandidates { ufrag });
                if self.agent.local_candidates().next().is_none() {
                    let why = self
                        .gather_failed
                        .iter()
                        .map(|f| format!("{}: {}", f.server, f.reason))
                        .collect::<Vec<_>>()
                        .join("; ");
                    self.fail(if why.is_empty() {
                        "no local candidates".to_owned()
                    } else {
                        format!("no local candidates: {why}")
                    });
                }
            }
            Event::GatherFailed { server, reason } => {
                self.log(format_args!("no candidate from {server}: {reason}"));
                let failure = GatherFailure {
                    server: server.to_string(),
                    reason,
                };
                if !self.gather_failed.contains(&failure) {
                    self.gather_failed.push(failure);
                }
            }
            Event::StateChanged(state) => {
                self.log(format_args!("state {state:?}"));
                if state == ConnectionState::Failed {
                    // Consent loss says so first; otherwise the relay of the selected pair
                    // was lost, and said why just before.
                    let error = match (self.connected_at, self.relays_lost.last()) {
                        (None, _) => "every candidate pair failed".to_owned(),
                        (Some(_), Some(lost)) => {
                            format!("the relay of the selected pair was lost: {}", lost.reason)
                        }
                        (Some(_), None) => "the selected pair failed".to_owned(),
                    };
                    self.fail(error);
                }
            }
            Event::Selected { local, remote } => self.on_selected(&local, &remote),
            Event::ConsentLost => {
                self.consent_lost = true;
                self.fail(format!(
                    "consent lost: the peer answered no consent check for {:?}",
                    self.options.timing.consent_timeout
                ));
            }
            Event::ConnectionClosed {
                connection,
                relayed,
                reason,
            } => {
                self.connections.close(connection);
                let transport = connection.transport.as_str();
                self.log(format_args!(
                    "closed the {transport} connection to {}: {reason}",
                    connection.server
                ));
                // A relay never allocated is already a gathering failure.
                if let Some(relayed) = relayed
                    && !self.closing
                {
                    self.log(format_args!("relayed candidate {relayed} lost"));
                    self.relays_lost.push(RelayLost {
                        server: connection.server.to_string(),
                        transport,
                        relayed: relayed.to_string(),
                        reason,
                    });
                }
            }
        }
    }

    fn on_selected(&mut self, local: &Candidate, remote: &Candidate) {
        let now = Instant::now();
        let mut local_end = Endpoint::of(local);
        if local.kind == CandidateKind::Relayed {
            local_end.relay_protocol = self
                .agent
                .relay_transport(local.address)
                .map(Transport::as_str);
        }
        let selection = Selection {
            local: local_end,
            remote: Endpoint::of(remote),
            at_ms: round3(ms(now - self.log.start)),
        };
        let over = match selection.local.relay_protocol {
            Some(protocol) => format!(" over {protocol}"),
            None => String::new(),
        };
        self.log(format_args!(
            "selected local {} {}{over} -> remote {} {}",
            selection.local.kind,
            selection.local.address,
            selection.remote.kind,
            selection.remote.address
        ));
        self.pairs.push(selection);
        self.restart_pending = false;
        for echo in std::mem::take(&mut self.unsent_echoes) {
            if self.agent.send(now.into_std(), &echo).is_ok() {
                self.echoed += 1;
            }
        }
        if self.connected_at.is_some() {
            return;
        }
        self.connected_at = Some(now);
        self.last_heard = now;
        if self.role() == Role::Offer {
            if self.options.send > 0 {
                self.next_probe_at = Some(now + self.options.send_after);
            }
            self.restart_at = self.options.restart_after.map(|after| now + after);
        }
    }

    /// A candidate message goes out at once, except the answerer's before its answer.
    fn signal(&mut self, message: SignalMessage) {
        if self.role() == Role::Answer && !self.answered {
            self.held.push(message);
        } else {
            self.outgoing.push(message);
        }
    }

    fn on_datagram(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        let now_std = now();
        if let Some(app) = self.agent.handle_input(now_std, local, remote, data) {
            self.on_app_data(now_std, app);
        }
    }

    /// Application data from the selected pair (or one about to be): a probe to echo, or an
    /// echo to count.
    fn on_app_data(&mut self, now_std: std::time::Instant, app: &[u8]) {
        match self.role() {
            Role::Answer => {
                self.last_heard = Instant::now();
                if let Some(echo) = probe::echo(app) {
                    if self.agent.send(now_std, &echo).is_ok() {
                        self.echoed += 1;
                    } else if self.unsent_echoes.len() < MAX_UNSENT_ECHOES {
                        self.unsent_echoes.push(echo);
                    }
                }
            }
            Role::Offer => {
                let in_time = self.echo_deadline.is_none_or(|at| Instant::now() < at);
                if let Some((seq, sent_us)) = probe::parse_echo(app)
                    && in_time
                {
                    let now_us = self.micros();
                    self.transfer.on_echo(seq, sent_us, now_us);
                }
            }
        }
    }

    fn on_signal(&mut self, text: &str) {
        let now_std = now();
        self.last_heard = Instant::now();
        let message = match SignalMessage::from_json(text) {
            Ok(message) => message,
            Err(error) => {
                self.log(format_args!(
                    "ignored a signaling message ({error}): {text}"
                ));
                return;
            }
        };
        match message {
            SignalMessage::Offer { ufrag, pwd } | SignalMessage::Restart { ufrag, pwd }
                if self.role() == Role::Answer =>
            {
                self.on_offer(Credentials { ufrag, pwd });
            }
            SignalMessage::Answer { ufrag, pwd } if self.role() == Role::Offer => {
                if !self.awaiting_answer {
                    self.log(format_args!("ignored an answer nothing asked for"));
                    return;
                }
                self.log(format_args!("received the answer (ufrag {ufrag})"));
                self.awaiting_answer = false;
                self.remote_ufrag = Some(ufrag.clone());
                self.credentials_at.get_or_insert_with(Instant::now);
                self.agent
                    .set_remote_credentials(now_std, Credentials { ufrag, pwd });
            }
            SignalMessage::Offer { .. } => self.fail(
                "the other peer is an offerer too: run one `offer` and one `answer`".to_owned(),
            ),
            SignalMessage::Answer { .. } => self.fail(
                "the other peer is an answerer too: run one `offer` and one `answer`".to_owned(),
            ),
            SignalMessage::Restart { .. } => {
                self.log(format_args!("ignored a restart: only the offerer restarts"));
            }
            SignalMessage::Candidate { candidate, ufrag } => {
                if !self.is_current(ufrag.as_deref()) {
                    self.log(format_args!("ignored a stale candidate: {candidate}"));
                    return;
                }
                match candidate.parse::<Candidate>() {
                    Ok(parsed) => {
                        self.log(format_args!(
                            "remote candidate {} {}",
                            parsed.kind, parsed.address
                        ));
                        self.agent.add_remote_candidate(now_std, parsed);
                    }
                    Err(error) => {
                        self.log(format_args!("ignored a candidate ({error}): {candidate}"));
                    }
                }
            }
            SignalMessage::EndOfCandidates { ufrag } => {
                if self.is_current(ufrag.as_deref()) {
                    self.log(format_args!("remote end of candidates"));
                    self.agent.end_of_remote_candidates();
                }
            }
            SignalMessage::Bye { reason } => {
                self.bye_received = true;
                match reason {
                    Some(reason) => self.fail(format!("the other peer gave up: {reason}")),
                    None if self.role() == Role::Answer && self.connected_at.is_some() => {
                        self.log(format_args!("bye: the offerer is done"));
                        self.outcome = Some(Ok(()));
                    }
                    None => self.fail("the other peer left before the run was over".to_owned()),
                }
            }
        }
    }

    /// Whether a candidate tagged with `ufrag` belongs to the peer's current generation. An
    /// untagged one does once the peer's credentials are known.
    fn is_current(&self, ufrag: Option<&str>) -> bool {
        match (ufrag, self.remote_ufrag.as_deref()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(theirs), Some(current)) => theirs == current,
        }
    }

    /// The answerer: the first offer is answered; new credentials later are an ICE restart.
    fn on_offer(&mut self, credentials: Credentials) {
        let now_std = now();
        if !self.answered {
            self.log(format_args!(
                "received the offer (ufrag {})",
                credentials.ufrag
            ));
            self.remote_ufrag = Some(credentials.ufrag.clone());
            self.credentials_at = Some(Instant::now());
            self.agent.set_remote_credentials(now_std, credentials);
            let mine = self.agent.local_credentials().clone();
            self.outgoing.push(SignalMessage::Answer {
                ufrag: mine.ufrag,
                pwd: mine.pwd,
            });
            self.answered = true;
            self.outgoing.append(&mut self.held);
            return;
        }
        if self.remote_ufrag.as_deref() == Some(credentials.ufrag.as_str()) {
            self.log(format_args!("ignored a repeated offer"));
            return;
        }
        self.log(format_args!(
            "ICE restart from the offerer (ufrag {})",
            credentials.ufrag
        ));
        // The answer must go before the candidates the restart gathers: it is queued now,
        // they when the agent's events are drained.
        let mine = self.agent.restart(now_std);
        self.gathered = false;
        self.remote_ufrag = Some(credentials.ufrag.clone());
        self.agent.set_remote_credentials(now_std, credentials);
        self.outgoing.push(SignalMessage::Answer {
            ufrag: mine.ufrag,
            pwd: mine.pwd,
        });
        self.restarts += 1;
        self.restart_pending = true;
    }

    fn on_signaling_closed(&mut self, reason: &str) {
        self.signaling_open = false;
        if self.outcome.is_some() {
            return;
        }
        if self.connected_at.is_none() {
            self.fail(format!("the signaling relay closed the connection{reason}"));
        } else {
            self.log(format_args!(
                "the signaling relay closed the connection{reason}; carrying on"
            ));
        }
    }

    /// The run's own timers.
    fn on_wake(&mut self) {
        let now = Instant::now();
        if now >= self.next_ping_at {
            self.ping_due = true;
            self.next_ping_at = now + PING_INTERVAL;
        }
        if let Some(at) = self.next_probe_at
            && at <= now
        {
            self.send_probe(at);
        }
        if let Some(at) = self.restart_at
            && at <= now
        {
            self.restart();
        }
    }

    fn send_probe(&mut self, due: Instant) {
        let seq = self.transfer.sent();
        let data = probe::probe(seq, self.micros(), self.options.size);
        match self.agent.send(now(), &data) {
            Ok(()) => {
                self.transfer.next_sent();
            }
            Err(error) => self.log(format_args!("probe {seq} not sent: {error}")),
        }
        self.scheduled += 1;
        if self.scheduled >= self.options.send {
            self.next_probe_at = None;
            self.echo_deadline = Some(Instant::now() + ECHO_WAIT);
            self.log(format_args!(
                "sent {} probes; waiting for their echoes",
                self.transfer.sent()
            ));
        } else {
            // A fixed schedule: a late wake-up is caught up rather than stretching the run.
            self.next_probe_at = Some(due + self.options.interval);
        }
    }

    fn restart(&mut self) {
        self.restart_at = None;
        if !self.signaling_open {
            self.fail("cannot restart ICE: the signaling connection is closed".to_owned());
            return;
        }
        let credentials = self.agent.restart(now());
        self.gathered = false;
        self.log(format_args!(
            "ICE restart (new ufrag {})",
            credentials.ufrag
        ));
        self.remote_ufrag = None;
        self.awaiting_answer = true;
        self.restart_pending = true;
        self.restarts += 1;
        self.outgoing.push(SignalMessage::Restart {
            ufrag: credentials.ufrag,
            pwd: credentials.pwd,
        });
    }

    /// The connect deadline before a pair is selected; after it, the offerer's run deadline
    /// or the answerer's silence deadline.
    fn deadline(&self) -> Instant {
        let timeout = self.options.timeout;
        match (self.connected_at, self.role()) {
            (None, _) => self.log.start + timeout,
            (Some(at), Role::Offer) => {
                let planned = self.options.interval * self.options.send
                    + self.options.send_after
                    + self.options.restart_after.unwrap_or_default()
                    + ECHO_WAIT;
                at + planned + timeout
            }
            (Some(_), Role::Answer) => self.last_heard + timeout,
        }
    }

    fn next_wake(&self) -> Instant {
        [
            Some(self.next_ping_at),
            self.next_probe_at,
            self.restart_at,
            self.echo_deadline,
            Some(self.deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_ping_at)
    }

    /// Ends the run when it is done or past its deadline.
    fn check_progress(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        let timeout = self.options.timeout;
        if self.connected_at.is_none() {
            if now >= self.deadline() {
                let waiting_for = match self.role() {
                    Role::Offer => "answer",
                    Role::Answer => "offer",
                };
                let mut error = if self.credentials_at.is_none() {
                    format!(
                        "no {waiting_for} within {timeout:?}: is the other peer in the same room?"
                    )
                } else {
                    format!("no candidate pair was selected within {timeout:?}")
                };
                if !self.gathered {
                    error.push_str("; gathering from the STUN and TURN servers was not over");
                }
                self.fail(error);
            }
            return;
        }
        if self.role() == Role::Answer {
            if now >= self.deadline() {
                self.fail(format!(
                    "nothing from the offerer for {timeout:?}: no probe and no bye"
                ));
            }
            return;
        }
        let sent_all = self.scheduled >= self.options.send;
        let echoes_in = self.transfer.echoed() == self.transfer.sent()
            || self.echo_deadline.is_none_or(|at| now >= at);
        let restart_done =
            self.options.restart_after.is_none() || (self.restarts > 0 && !self.restart_pending);
        if sent_all && echoes_in && restart_done {
            let (sent, echoed) = (self.transfer.sent(), self.transfer.echoed());
            if sent < self.options.send {
                self.fail(format!(
                    "only {sent} of {} probes could be sent",
                    self.options.send
                ));
            } else if sent > 0 && echoed == 0 {
                self.fail(format!("none of the {sent} probes was echoed"));
            } else {
                self.outcome = Some(Ok(()));
            }
        } else if now >= self.deadline() {
            self.fail(if restart_done {
                format!("the transfer did not end within {timeout:?} of its planned length")
            } else {
                format!("the ICE restart selected no new pair within {timeout:?}")
            });
        }
    }

    fn fail(&mut self, error: String) {
        if self.outcome.is_none() {
            self.log(format_args!("error: {error}"));
            self.outcome = Some(Err(error));
        }
    }

    /// Sends the queued signaling messages, and a ping when one is due.
    async fn flush(&mut self, ws: &mut Option<Ws>) {
        let Some(socket) = ws.as_mut() else {
            self.outgoing.clear();
            return;
        };
        let mut messages: Vec<Message> = Vec::new();
        for message in self.outgoing.drain(..) {
            match message.to_json() {
                Ok(json) => messages.push(Message::text(json)),
                Err(error) => self.log.line(format_args!(
                    "cannot encode a {} message: {error}",
                    message.kind()
                )),
            }
        }
        if std::mem::take(&mut self.ping_due) {
            messages.push(Message::Ping(Vec::new().into()));
        }
        for message in messages {
            if let Err(error) = socket.feed(message).await {
                *ws = None;
                self.on_signaling_closed(&format!(": {error}"));
                return;
            }
        }
        if let Err(error) = socket.flush().await {
            *ws = None;
            self.on_signaling_closed(&format!(": {error}"));
        }
    }

    /// Tells the other peer the run is over (unless it said so first) and leaves the room.
    async fn goodbye(&mut self, mut ws: Option<Ws>) {
        let reason = match &self.outcome {
            Some(Err(error)) => Some(error.clone()),
            _ => None,
        };
        let tell = match self.role() {
            Role::Offer => !self.bye_received,
            Role::Answer => !self.bye_received && reason.is_some(),
        };
        if tell {
            self.outgoing.push(SignalMessage::Bye { reason });
        }
        let bounded = async {
            self.flush(&mut ws).await;
            if let Some(socket) = ws.as_mut() {
                let _ = socket.close(None).await;
                // The relay answers the close; reading until then lets it see the messages
                // before the connection ends.
                while let Some(Ok(_)) = socket.next().await {}
            }
        };
        let _ = timeout(GOODBYE_WAIT, bounded).await;
    }

    fn report(&self) -> Report {
        let offer = self.role() == Role::Offer;
        let connect_ms = match (self.connected_at, self.credentials_at) {
            (Some(connected), Some(known)) => {
                Some(round3(ms(connected.saturating_duration_since(known))))
            }
            _ => None,
        };
        Report {
            role: self.role().as_str(),
            connected: self.connected_at.is_some(),
            connect_ms,
            selected: self.pairs.last().cloned(),
            pairs: self.pairs.clone(),
            sent: if offer { self.transfer.sent() } else { 0 },
            echoed: if offer {
                self.transfer.echoed()
            } else {
                self.echoed
            },
            loss: (offer && self.transfer.sent() > 0).then(|| round3(self.transfer.loss())),
            rtt_ms: if offer { self.transfer.rtt() } else { None },
            restarts: self.restarts,
            consent_lost: self.consent_lost,
            gather_failed: self.gather_failed.clone(),
            relays_lost: self.relays_lost.clone(),
            error: match &self.outcome {
                Some(Err(error)) => Some(error.clone()),
                _ => None,
            },
        }
    }

    /// Microseconds since the start: the probes' send times.
    fn micros(&self) -> u64 {
        u64::try_from(self.log.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The agent's clock: tokio's, so that both read the same time.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_message(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}
