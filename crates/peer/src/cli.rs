//! The command line, and the checked [`Options`] a run is made of.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use icebreaker_ice::Timing;

use crate::probe::HEADER_LEN;
use crate::uri::{self, ServerUri};

/// The largest `--size`: with IPv6, UDP and a TURN Send indication's 36 bytes it still fits a
/// 1500-byte MTU.
pub const MAX_SIZE: usize = 1400;

/// Which side of the exchange this peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Sends the offer, is the controlling agent, sends the probes and measures.
    Offer,
    /// Answers, is the controlled agent, echoes the probes.
    Answer,
}

impl Role {
    /// `offer` or `answer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Offer => "offer",
            Role::Answer => "answer",
        }
    }
}

/// ice-peer: connects to another ice-peer through a WebSocket signaling relay and STUN/TURN
/// servers, sends datagrams the other side echoes, and reports the selected candidate pair,
/// the time to connect, the RTT and the loss.
///
/// Exit status: 0 success, 1 no connection, consent lost or transfer incomplete, 2 usage
/// error.
#[derive(Debug, Parser)]
#[command(name = "ice-peer", version)]
pub struct Cli {
    /// offer (controlling; sends the probes) or answer (controlled; echoes them).
    #[arg(value_enum)]
    pub role: Role,
    /// The signaling relay's room: ws://HOST:PORT/ROOM, the same URL for both peers.
    #[arg(long, value_name = "URL", value_parser = parse_signal_url)]
    pub signal: String,
    /// A STUN server for server-reflexive candidates: stun:HOST or stun:HOST:PORT (repeatable).
    #[arg(long = "stun", value_name = "URI", value_parser = uri::parse_stun)]
    pub stun: Vec<ServerUri>,
    /// A TURN server for relayed candidates (repeatable; all share --user and --password):
    /// turn:HOST or turn:HOST:PORT over UDP, turn:HOST:PORT?transport=tcp over TCP,
    /// turns:HOST:PORT over TLS, turns:HOST:PORT?transport=udp over DTLS (port 5349 when none
    /// is given). The relayed candidate is UDP whichever transport reaches the server.
    #[arg(long = "turn", value_name = "URI", value_parser = uri::parse_turn,
          requires_all = ["user", "password"])]
    pub turn: Vec<ServerUri>,
    /// A PEM file of CA certificates that turns: servers (TLS and DTLS) may be signed by,
    /// trusted besides the system's roots (a private CA, a test certificate).
    #[arg(long, value_name = "FILE", requires = "turn")]
    pub ca: Option<PathBuf>,
    /// The TURN username.
    #[arg(long, value_name = "U", requires = "turn")]
    pub user: Option<String>,
    /// The TURN password.
    #[arg(long, value_name = "P", requires = "turn")]
    pub password: Option<String>,
    /// Offer and use relayed candidates only.
    #[arg(long, requires = "turn")]
    pub relay_only: bool,
    /// Probes the offerer sends once connected.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub send: u32,
    /// Bytes per probe.
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = parse_size)]
    pub size: usize,
    /// Milliseconds between two probes.
    #[arg(long, value_name = "MS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub interval: u64,
    /// The offerer restarts ICE this long after connecting, during the transfer.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub restart_after: Option<Duration>,
    /// The offerer waits this long after connecting before it sends: the pair stays idle
    /// but for keepalives, as a call on hold does.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub send_after: Option<Duration>,
    /// Keepalive and consent-check interval on the selected pair (default 15 s and 5 s).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub keepalive: Option<Duration>,
    /// Consent is lost after this long without an answered check (default 30 s).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub consent_timeout: Option<Duration>,
    /// Bounds the connect phase, and each wait after it: the offerer's transfer beyond its
    /// planned length, the answerer's silence between two datagrams or until the bye.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Bind host candidates on this address only (repeatable; loopback allowed).
    #[arg(long = "bind", value_name = "IP")]
    pub bind: Vec<IpAddr>,
    /// Include loopback addresses among the interface addresses.
    #[arg(long)]
    pub loopback: bool,
    /// Print one JSON object at the end instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

/// A checked run: what the driver needs, nothing left to validate but the network.
#[derive(Clone, Debug)]
pub struct Options {
    /// Offer or answer.
    pub role: Role,
    /// The room's WebSocket URL.
    pub signal: String,
    /// STUN servers.
    pub stun: Vec<ServerUri>,
    /// TURN servers.
    pub turn: Vec<ServerUri>,
    /// TURN username and password.
    pub turn_credentials: Option<(String, String)>,
    /// CA certificates trusted for TLS besides the system's.
    pub ca: Option<PathBuf>,
    /// Relayed candidates only.
    pub relay_only: bool,
    /// Probes to send (offerer).
    pub send: u32,
    /// Bytes per probe.
    pub size: usize,
    /// Between two probes.
    pub interval: Duration,
    /// When the offerer restarts ICE, after connecting.
    pub restart_after: Option<Duration>,
    /// How long the offerer waits after connecting before the first probe.
    pub send_after: Duration,
    /// The agent's timers.
    pub timing: Timing,
    /// See [`Cli::timeout`].
    pub timeout: Duration,
    /// Explicit addresses, or empty for every interface's.
    pub bind: Vec<IpAddr>,
    /// Loopback interface addresses too.
    pub loopback: bool,
}

impl Cli {
    /// Checks what clap cannot check alone and makes the run's options.
    pub fn options(&self) -> Result<Options, String> {
        if self.role == Role::Answer && self.restart_after.is_some() {
            return Err(
                "--restart-after is for the offerer: the offerer restarts and the \
                        answerer follows"
                    .into(),
            );
        }
        if let Some(ip) = self
            .bind
            .iter()
            .find(|ip| ip.is_unspecified() || ip.is_multicast())
        {
            return Err(format!(
                "--bind {ip}: a candidate needs a unicast interface address"
            ));
        }
        let mut timing = Timing::default();
        if let Some(keepalive) = self.keepalive {
            timing.keepalive_interval = keepalive;
            timing.consent_interval = keepalive;
        }
        if let Some(consent_timeout) = self.consent_timeout {
            timing.consent_timeout = consent_timeout;
        }
        // A consent check goes out up to 1.2 intervals after the last (RFC 7675 §5.1): a
        // shorter timeout would lose consent on a path that works.
        if timing.consent_timeout <= timing.consent_interval.mul_f64(1.2) {
            return Err(format!(
                "--consent-timeout ({:?}) must be longer than 1.2 times the consent interval \
                 ({:?}, set by --keepalive)",
                timing.consent_timeout, timing.consent_interval
            ));
        }
        let turn_credentials = match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            _ => None,
        };
        Ok(Options {
            role: self.role,
            signal: self.signal.clone(),
            stun: self.stun.clone(),
            turn: self.turn.clone(),
            turn_credentials,
            ca: self.ca.clone(),
            relay_only: self.relay_only,
            send: self.send,
            size: self.size,
            interval: Duration::from_millis(self.interval),
            restart_after: self.restart_after,
            send_after: self.send_after.unwrap_or_default(),
            timing,
            timeout: self.timeout,
            bind: self.bind.clone(),
            loopback: self.loopback || !self.bind.is_empty(),
        })
    }
}

/// Seconds, fractions allowed: more than 0, at most a day.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{text:?}: expected more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_size(text: &str) -> Result<usize, String> {
    let size: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if !(HEADER_LEN..=MAX_SIZE).contains(&size) {
        return Err(format!(
            "{size} bytes: a probe has {HEADER_LEN} to {MAX_SIZE} bytes"
        ));
    }
    Ok(size)
}

/// Accepts `ws://` URLs; `wss://` is refused until TLS is supported.
pub fn parse_signal_url(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("wss://") {
        return Err(format!(
            "{text}: wss:// (TLS) is not supported yet; use ws:// or a TLS tunnel"
        ));
    }
    let Some(rest) = lower.strip_prefix("ws://") else {
        return Err(format!("{text}: expected ws://HOST:PORT/ROOM"));
    };
    match rest.split_once('/') {
        Some((host, room)) if !host.is_empty() && !room.is_empty() => Ok(text.to_owned()),
        _ => Err(format!(
            "{text}: expected ws://HOST:PORT/ROOM (the room is a token both peers share)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::uri::Transport;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ice-peer").chain(args.iter().copied()))
    }

    const SIGNAL: &str = "ws://127.0.0.1:8080/room-0123";

    #[test]
    fn defaults() {
        let cli = parse(&["offer", "--signal", SIGNAL]).unwrap();
        let options = cli.options().unwrap();
        assert_eq!(options.role, Role::Offer);
        assert_eq!((options.send, options.size), (100, 100));
        assert_eq!(options.interval, Duration::from_millis(20));
        assert_eq!(options.timeout, Duration::from_secs(30));
        assert_eq!(options.timing, Timing::default());
        assert!(!options.loopback && options.bind.is_empty());
        assert!(options.turn_credentials.is_none());
    }

    #[test]
    fn every_flag() {
        let cli = parse(&[
            "answer",
            "--signal",
            SIGNAL,
            "--stun",
            "stun:127.0.0.1",
            "--turn",
            "turn:127.0.0.1:3479?transport=udp",
            "--turn",
            "turn:127.0.0.1:3479?transport=tcp",
            "--turn",
            "turns:localhost",
            "--ca",
            "/etc/ca.pem",
            "--user",
            "alice",
            "--password",
            "secret",
            "--relay-only",
            "--send",
            "5",
            "--size",
            "200",
            "--interval",
            "10",
            "--keepalive",
            "0.5",
            "--consent-timeout",
            "2",
            "--timeout",
            "10",
            "--bind",
            "127.0.0.2",
            "--json",
        ])
        .unwrap();
        let options = cli.options().unwrap();
        assert_eq!(options.role, Role::Answer);
        assert_eq!(options.turn[0].port, 3479);
        let transports: Vec<Transport> = options.turn.iter().map(|t| t.transport).collect();
        assert_eq!(transports, [Transport::Udp, Transport::Tcp, Transport::Tls]);
        assert_eq!(options.turn[2].port, 5349);
        assert_eq!(options.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            options.turn_credentials,
            Some(("alice".into(), "secret".into()))
        );
        assert!(options.relay_only && cli.json);
        assert_eq!(
            options.timing.keepalive_interval,
            Duration::from_millis(500)
        );
        assert_eq!(options.timing.consent_interval, Duration::from_millis(500));
        assert_eq!(options.timing.consent_timeout, Duration::from_secs(2));
        assert!(options.loopback, "an explicit --bind may be loopback");
    }

    #[test]
    fn a_dtls_turn_server_is_taken_on_the_command_line() {
        let options = parse(&[
            "offer",
            "--signal",
            SIGNAL,
            "--turn",
            "turns:127.0.0.1?transport=udp",
            "--user",
            "u",
            "--password",
            "p",
        ])
        .unwrap();
        assert_eq!(options.turn[0].transport, Transport::Dtls);
        assert_eq!(options.turn[0].port, 5349);
    }

    #[test]
    fn usage_errors() {
        let clap_errors: &[&[&str]] = &[
            &[],
            &["offer"],
            &["caller", "--signal", SIGNAL],
            &["offer", "--signal", "http://x/room"],
            &["offer", "--signal", "wss://x/room"],
            &["offer", "--signal", "ws://x"],
            &["offer", "--signal", SIGNAL, "--stun", "turn:x"],
            &["offer", "--signal", SIGNAL, "--turn", "turn:x"],
            &["offer", "--signal", SIGNAL, "--stun", "stuns:x"],
            &[
                "offer",
                "--signal",
                SIGNAL,
                "--stun",
                "stuns:x?transport=udp",
            ],
            &["offer", "--signal", SIGNAL, "--ca", "ca.pem"],
            &["offer", "--signal", SIGNAL, "--user", "u"],
            &["offer", "--signal", SIGNAL, "--relay-only"],
            &["offer", "--signal", SIGNAL, "--size", "12"],
            &["offer", "--signal", SIGNAL, "--size", "1401"],
            &["offer", "--signal", SIGNAL, "--interval", "0"],
            &["offer", "--signal", SIGNAL, "--timeout", "0"],
            &["offer", "--signal", SIGNAL, "--timeout", "nan"],
            &["offer", "--signal", SIGNAL, "--bind", "localhost"],
        ];
        for args in clap_errors {
            let error = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
        let option_errors: &[&[&str]] = &[
            &["answer", "--signal", SIGNAL, "--restart-after", "1"],
            &["offer", "--signal", SIGNAL, "--bind", "0.0.0.0"],
            &["offer", "--signal", SIGNAL, "--keepalive", "30"],
            &[
                "offer",
                "--signal",
                SIGNAL,
                "--keepalive",
                "1",
                "--consent-timeout",
                "1.1",
            ],
        ];
        for args in option_errors {
            assert!(parse(args).unwrap().options().is_err(), "{args:?}");
        }
    }
}
