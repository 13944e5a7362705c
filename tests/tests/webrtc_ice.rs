//! Interop: the icebreaker ICE agent against webrtc-rs's `webrtc-ice` agent, over loopback,
//! with `icebreaker serve` as their STUN and TURN server. Each agent is controlling once, and
//! each pairing runs with every candidate type and relay-only.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use icebreaker_ice::{
    Agent, AgentConfig, Candidate, CandidateKind, ConnectionState, Credentials, Event,
    TurnServerConfig,
};
use icebreaker_tests::Server;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc_ice::agent::Agent as WebrtcAgent;
use webrtc_ice::agent::agent_config::AgentConfig as WebrtcConfig;
use webrtc_ice::candidate::CandidateType;
use webrtc_ice::candidate::candidate_base::unmarshal_candidate;
use webrtc_ice::mdns::MulticastDnsMode;
use webrtc_ice::network_type::NetworkType;
use webrtc_ice::url::Url;
use webrtc_util::Conn;

const ROUNDS: usize = 20;

struct Outcome {
    ours: (CandidateKind, CandidateKind),
    theirs: CandidateType,
}

async fn webrtc_agent(server: SocketAddr, controlling: bool, relay_only: bool) -> Arc<WebrtcAgent> {
    let stun = Url::parse_url(&format!("stun:{server}")).unwrap();
    let mut turn = Url::parse_url(&format!("turn:{server}?transport=udp")).unwrap();
    turn.username = "alice".into();
    turn.password = "secret".into();
    let config = WebrtcConfig {
        urls: vec![stun, turn],
        network_types: vec![NetworkType::Udp4],
        candidate_types: if relay_only {
            vec![CandidateType::Relay]
        } else {
            vec![
                CandidateType::Host,
                CandidateType::ServerReflexive,
                CandidateType::Relay,
            ]
        },
        multicast_dns_mode: MulticastDnsMode::Disabled,
        include_loopback: true,
        // Only loopback: the test never talks to another interface of the machine.
        ip_filter: Arc::new(Some(Box::new(|ip: std::net::IpAddr| ip.is_loopback()))),
        is_controlling: controlling,
        ..WebrtcConfig::default()
    };
    Arc::new(WebrtcAgent::new(config).await.unwrap())
}

async fn run(ours_controlling: bool, relay_only: bool) -> Outcome {
    let server = Server::start(&["--user", "alice:secret", "--allow-peer", "127.0.0.0/8"]);
    let theirs = webrtc_agent(server.addr, !ours_controlling, relay_only).await;

    let (their_candidates_tx, mut their_candidates) = mpsc::unbounded_channel::<Option<String>>();
    theirs.on_candidate(Box::new(move |candidate| {
        let tx = their_candidates_tx.clone();
        Box::pin(async move {
            let _ = tx.send(candidate.map(|c| c.marshal()));
        })
    }));
    theirs.gather_candidates().unwrap();
    let (their_ufrag, their_pwd) = theirs.get_local_user_credentials().await;

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let config = AgentConfig {
        controlling: ours_controlling,
        stun_servers: vec![server.addr],
        turn_servers: vec![TurnServerConfig {
            server: server.addr,
            username: "alice".into(),
            password: "secret".into(),
        }],
        relay_only,
        ..AgentConfig::default()
    };
    let start = Instant::now();
    let mut ours = Agent::new(config, Box::new(ChaCha20Rng::seed_from_u64(7)), start);
    ours.add_local_socket(local);
    ours.gather(start);
    ours.set_remote_credentials(
        start,
        Credentials {
            ufrag: their_ufrag,
            pwd: their_pwd,
        },
    );
    let our_credentials = ours.local_credentials().clone();

    // webrtc-ice's dial and accept block until a pair is selected: in a task of their own.
    let their_side = Arc::clone(&theirs);
    let (_cancel_tx, cancel_rx) = mpsc::channel(1);
    let connecting = tokio::spawn(async move {
        let conn: Arc<dyn Conn + Send + Sync> = if ours_controlling {
            their_side
                .accept(cancel_rx, our_credentials.ufrag, our_credentials.pwd)
                .await
                .unwrap()
        } else {
            their_side
                .dial(cancel_rx, our_credentials.ufrag, our_credentials.pwd)
                .await
                .unwrap()
        };
        conn
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 2048];
    let mut their_conn: Option<Arc<dyn Conn + Send + Sync>> = None;
    let mut connecting = Some(connecting);
    let mut echoed = 0;
    let mut sent = 0;
    let mut their_buf = vec![0u8; 2048];
    loop {
        while let Some(t) = ours.poll_transmit() {
            assert_eq!(t.local, local);
            socket.send_to(&t.payload, t.remote).await.unwrap();
        }
        while let Some(event) = ours.poll_event() {
            match event {
                Event::LocalCandidate(c) => {
                    let line = c.to_string();
                    let value = line.strip_prefix("candidate:").unwrap();
                    let parsed = unmarshal_candidate(value).unwrap();
                    let parsed: Arc<dyn webrtc_ice::candidate::Candidate + Send + Sync> =
                        Arc::new(parsed);
                    theirs.add_remote_candidate(&parsed).unwrap();
                }
                Event::GatherFailed { server, reason } => {
                    panic!("gathering from {server} failed: {reason}")
                }
                Event::ConsentLost => panic!("consent lost"),
                _ => {}
            }
        }
        if ours.state() == ConnectionState::Connected && their_conn.is_some() {
            if sent == echoed && sent < ROUNDS {
                let now = Instant::now();
                ours.send(now, &[0x80, sent as u8, 1, 2, 3]).unwrap();
                sent += 1;
                continue;
            }
            if echoed == ROUNDS {
                break;
            }
        }
        assert_ne!(ours.state(), ConnectionState::Failed, "our agent failed");
        let wake = ours
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(deadline)
            .min(deadline);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received.unwrap();
                let now = Instant::now();
                if let Some(data) = ours.handle_input(now, local, from, &buf[..len]) {
                    assert_eq!(data, [0x80, echoed as u8, 1, 2, 3]);
                    echoed += 1;
                }
            }
            candidate = their_candidates.recv() => {
                if let Some(Some(line)) = candidate {
                    let parsed: Candidate = format!("candidate:{line}").parse().unwrap();
                    ours.add_remote_candidate(Instant::now(), parsed);
                } else if let Some(None) = candidate {
                    ours.end_of_remote_candidates();
                }
            }
            conn = async { connecting.as_mut().unwrap().await }, if connecting.is_some() => {
                connecting = None;
                let conn = conn.unwrap();
                // Their side echoes whatever arrives.
                let echo = Arc::clone(&conn);
                tokio::spawn(async move {
                    while let Ok(len) = echo.recv(&mut their_buf).await {
                        if echo.send(&their_buf[..len]).await.is_err() {
                            break;
                        }
                    }
                });
                their_conn = Some(conn);
                their_buf = vec![0u8; 2048];
            }
            _ = tokio::time::sleep_until(wake) => {
                assert!(tokio::time::Instant::now() < deadline, "no connection within 30 s");
                ours.handle_timeout(Instant::now());
            }
        }
    }
    let (local, remote) = ours.selected_pair().unwrap();
    let their_pair = theirs.get_selected_candidate_pair().unwrap();
    let outcome = Outcome {
        ours: (local.kind, remote.kind),
        theirs: their_pair.local.candidate_type(),
    };
    theirs.close().await.unwrap();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icebreaker_controlling_connects_to_webrtc_ice() {
    let outcome = run(true, false).await;
    assert_ne!(outcome.ours.0, CandidateKind::Relayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_ice_controlling_connects_to_icebreaker() {
    let outcome = run(false, false).await;
    assert_ne!(outcome.ours.0, CandidateKind::Relayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icebreaker_controlling_relays_to_webrtc_ice_through_icebreaker_turn() {
    let outcome = run(true, true).await;
    assert_eq!(
        outcome.ours,
        (CandidateKind::Relayed, CandidateKind::Relayed)
    );
    assert_eq!(outcome.theirs, CandidateType::Relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_ice_controlling_relays_to_icebreaker_through_icebreaker_turn() {
    let outcome = run(false, true).await;
    assert_eq!(
        outcome.ours,
        (CandidateKind::Relayed, CandidateKind::Relayed)
    );
    assert_eq!(outcome.theirs, CandidateType::Relay);
}
