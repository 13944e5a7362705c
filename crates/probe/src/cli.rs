//! The command line, and the checked [`Options`] a run is made of.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use icebreaker_ice::uri::{ServerUri, Transport, UriError};
use icebreaker_wire::credentials::RestPassword;

use crate::tls::{self, TlsOptions};
use crate::{Credentials, LoadSettings, Settings};

/// The username part of REST credentials when `--secret` comes without `--user`.
pub const DEFAULT_REST_USER: &str = "ice-probe";
/// The longest wait `--lifetime` accepts: NAT mapping timeouts beyond ten minutes are rare, and
/// a probe that runs for an hour helps nobody.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// When to colour the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Colour {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// ice-probe: checks a STUN or TURN deployment from where you stand, and says in plain words
/// what is wrong.
///
/// For every URI: reachability and Binding RTT, the mapped address (and whether a NAT is on
/// the way), NAT behaviour by RFC 5780 when the server offers it (over UDP); for turn: URIs
/// with credentials, an allocation, permissions, data relayed back to the probe (Send and
/// ChannelData), Refresh and deallocation. Over TCP (turn:HOST?transport=tcp) and TLS
/// (turns:, stuns:) the connection comes first: its time, and for TLS the handshake and the
/// certificate; over DTLS (turns:HOST?transport=udp, stuns:HOST?transport=udp) the handshake
/// and the certificate. `--audit` adds a security audit, `--load` a bounded load.
///
/// Exit status: 0 every check passed, 1 a check failed or the audit found a weakness,
/// 2 usage or configuration error.
#[derive(Debug, Parser)]
#[command(name = "ice-probe", version)]
pub struct Cli {
    /// The servers to probe, as RFC 7064 and RFC 7065 URIs (the help text lists the forms).
    #[arg(
        value_name = "URI",
        required = true,
        value_parser = parse_uri,
        help = "STUN or TURN server URIs (RFC 7064, RFC 7065, RFC 7350): stun:HOST[:PORT] \
                (UDP), stuns:HOST[:PORT] (TLS, port 5349 by default), turn:HOST[:PORT] or \
                turn:HOST[:PORT]?transport=udp (UDP), turn:HOST[:PORT]?transport=tcp (TCP), \
                turns:HOST[:PORT] (TLS, port 5349 by default), turns:HOST[:PORT]?transport=udp \
                and stuns:HOST[:PORT]?transport=udp (DTLS, port 5349 by default)."
    )]
    pub uris: Vec<ServerUri>,
    /// TURN username (with --password), or the user part of REST credentials (with --secret).
    #[arg(long, value_name = "U")]
    pub user: Option<String>,
    /// TURN password.
    #[arg(long, value_name = "P", requires = "user", conflicts_with = "secret")]
    pub password: Option<String>,
    /// TURN REST API shared secret (coturn's static-auth-secret, icebreaker's auth-secret):
    /// the probe makes its own time-limited username and password.
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// Validity of the REST username made from --secret.
    #[arg(long, value_name = "SECS", default_value_t = 3600, requires = "secret",
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl: u64,
    /// Binding requests for the RTT statistics.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// How long one request may go unanswered, retransmissions included; over TCP, TLS and
    /// DTLS also how long connecting and the handshake may take.
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Estimate the NAT's mapping lifetime (RFC 5780 §4.6), waiting up to SECS (default
    /// 120, at most 600). Slow by nature.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "120",
          value_parser = parse_lifetime)]
    pub lifetime: Option<Duration>,
    /// Datagrams relayed back to the probe through each TURN server.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub packets: u32,
    /// Audit the servers' security: open relaying, relaying into private and loopback
    /// networks in every address encoding, amplification, version disclosure.
    #[arg(long)]
    pub audit: bool,
    /// Run a load of N allocations per TURN server, each sending to the next in a ring.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub load: Option<u32>,
    /// How long the load lasts.
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "load",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub duration: u64,
    /// Datagrams per second each load allocation sends.
    #[arg(long, value_name = "PPS", default_value_t = 20, requires = "load",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate: u32,
    /// Bytes per load datagram.
    #[arg(long, value_name = "BYTES", default_value_t = 100, requires = "load",
          value_parser = clap::value_parser!(u16).range(16..=1200))]
    pub size: u16,
    /// Also trust the certificates of this PEM file for stuns: and turns:, over TLS and DTLS
    /// (a private CA, or a self-signed server certificate); repeatable. The system's roots
    /// are always trusted.
    #[arg(long, value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Do not verify TLS and DTLS certificates: the handshake goes on whatever the
    /// certificate, and the tls-certificate check reports it unverified (skipped) with what
    /// verification would have said.
    #[arg(long)]
    pub insecure: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as Prometheus metrics to FILE (for node_exporter's textfile
    /// collector; written atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Colour the table.
    #[arg(long, value_enum, default_value_t = Colour::Auto)]
    pub color: Colour,
}

/// A checked run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The servers, in the order given.
    pub uris: Vec<ServerUri>,
    /// What the checks need.
    pub settings: Settings,
    /// JSON instead of the table.
    pub json: bool,
    /// Where to write Prometheus metrics.
    pub prometheus: Option<PathBuf>,
    /// When to colour.
    pub colour: Colour,
}

impl Cli {
    /// Checks what clap cannot check alone and makes the run's options; `now` is the Unix
    /// time REST usernames expire from.
    pub fn options(&self, now: Duration) -> Result<Options, String> {
        let has_turn = self
            .uris
            .iter()
            .any(|uri| uri.scheme == icebreaker_ice::uri::Scheme::Turn);
        let credentials = match (&self.user, &self.password, &self.secret) {
            (Some(user), Some(password), None) => Some(Credentials {
                username: user.clone(),
                password: password.clone(),
                rest: false,
            }),
            (user, None, Some(secret)) => {
                let user = user.as_deref().unwrap_or(DEFAULT_REST_USER);
                let expiry = now.as_secs().saturating_add(self.ttl);
                let username = format!("{expiry}:{user}");
                let password = RestPassword::new(secret.as_bytes(), &username);
                Some(Credentials {
                    password: password.as_str().to_owned(),
                    username,
                    rest: true,
                })
            }
            (Some(_), None, None) => {
                return Err("--user needs --password, or --secret for REST credentials".into());
            }
            _ => None,
        };
        if credentials.is_some() && !has_turn {
            return Err(
                "credentials are for TURN: give a turn: URI, or drop --user/--secret".into(),
            );
        }
        if self.load.is_some() && !(has_turn && credentials.is_some()) {
            return Err(
                "--load needs a turn: URI and credentials (--user and --password, \
                        or --secret)"
                    .into(),
            );
        }
        let has_tls = self
            .uris
            .iter()
            .any(|uri| matches!(uri.transport, Transport::Tls | Transport::Dtls));
        if (self.insecure || !self.ca.is_empty()) && !has_tls {
            return Err(
                "--ca and --insecure are for TLS and DTLS: give a turns: or stuns: URI".into(),
            );
        }
        let mut ca = Vec::new();
        for path in &self.ca {
            ca.extend(tls::load_ca(path)?);
        }
        let load = self.load.map(|allocations| LoadSettings {
            allocations,
            duration: Duration::from_secs(self.duration),
            rate: self.rate,
            size: usize::from(self.size),
        });
        Ok(Options {
            uris: self.uris.clone(),
            settings: Settings {
                credentials,
                count: self.count,
                timeout: self.timeout,
                lifetime: self.lifetime,
                packets: self.packets,
                audit: self.audit,
                load,
                tls: TlsOptions {
                    ca,
                    insecure: self.insecure,
                },
            },
            json: self.json,
            prometheus: self.prometheus.clone(),
            colour: self.color,
        })
    }
}

/// The Unix time now, for REST usernames.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A URI of any RFC 7064/7065/7350 form: the probe speaks UDP, TCP, TLS and DTLS.
fn parse_uri(text: &str) -> Result<ServerUri, UriError> {
    text.parse()
}

fn parse_secs(text: &str, min: f64, max: f64) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(min..=max).contains(&secs) {
        return Err(format!("{text} s is outside {min} to {max} s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_secs(text, 0.1, 60.0)
}

fn parse_lifetime(text: &str) -> Result<Duration, String> {
    parse_secs(text, 2.0, MAX_LIFETIME.as_secs_f64())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let cli = Cli::try_parse_from(std::iter::once("ice-probe").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.options(Duration::from_secs(1_795_219_200))
    }

    #[test]
    fn plain_and_rest_credentials() {
        let options = parse(&["turn:127.0.0.1", "--user", "alice", "--password", "pw"]).unwrap();
        let credentials = options.settings.credentials.unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.rest),
            ("alice", false)
        );

        let options = parse(&["turn:127.0.0.1", "--secret", "s3cret", "--ttl", "60"]).unwrap();
        let credentials = options.settings.credentials.unwrap();
        assert_eq!(credentials.username, "1795219260:ice-probe");
        assert_eq!(
            credentials.password,
            RestPassword::new(b"s3cret", "1795219260:ice-probe").as_str()
        );
        assert!(credentials.rest);
        let options = parse(&["turn:h", "--secret", "s", "--user", "bob"]).unwrap();
        assert!(
            options
                .settings
                .credentials
                .unwrap()
                .username
                .ends_with(":bob")
        );
    }

    #[test]
    fn usage_errors_say_what_to_write() {
        assert!(parse(&[]).is_err());
        assert!(
            parse(&["turn:h", "--user", "a"])
                .unwrap_err()
                .contains("--password")
        );
        assert!(parse(&["turn:h", "--password", "p"]).is_err());
        assert!(parse(&["turn:h", "--user", "a", "--password", "p", "--secret", "s"]).is_err());
        assert!(
            parse(&["stun:h", "--user", "a", "--password", "p"])
                .unwrap_err()
                .contains("for TURN")
        );
        assert!(
            parse(&["turn:h", "--load", "4"])
                .unwrap_err()
                .contains("credentials")
        );
        assert!(parse(&["turn:h", "--duration", "5"]).is_err());
        assert!(
            parse(&["turn:h", "--insecure"])
                .unwrap_err()
                .contains("turns:")
        );
        assert!(
            parse(&["stun:h", "--ca", "/nonexistent.pem"])
                .unwrap_err()
                .contains("for TLS")
        );
        assert!(
            parse(&["turns:h", "--ca", "/nonexistent.pem"])
                .unwrap_err()
                .contains("/nonexistent.pem")
        );
        assert!(parse(&["stun:h?transport=tcp"]).is_err(), "RFC 7064");
        assert!(parse(&["stun:h", "--timeout", "0"]).is_err());
        assert!(parse(&["stun:h", "--lifetime", "9999"]).is_err());
        assert!(parse(&["stun:h", "--count", "0"]).is_err());
        assert!(parse(&["http://h"]).is_err());
    }

    #[test]
    fn streams_and_tls_are_accepted() {
        use icebreaker_ice::uri::{DEFAULT_TLS_PORT, Scheme};
        let options = parse(&["turn:h?transport=tcp", "turns:h", "stuns:h:443"]).unwrap();
        let uris: Vec<(Scheme, Transport, u16)> = options
            .uris
            .iter()
            .map(|u| (u.scheme, u.transport, u.port))
            .collect();
        assert_eq!(
            uris,
            [
                (Scheme::Turn, Transport::Tcp, 3478),
                (Scheme::Turn, Transport::Tls, DEFAULT_TLS_PORT),
                (Scheme::Stun, Transport::Tls, 443),
            ]
        );
        assert!(!options.settings.tls.insecure && options.settings.tls.ca.is_empty());
        assert!(
            parse(&["turns:h", "--insecure"])
                .unwrap()
                .settings
                .tls
                .insecure
        );
        let options = parse(&[
            "turns:h?transport=udp",
            "stuns:h:443?transport=udp",
            "--insecure",
        ])
        .unwrap();
        let uris: Vec<(Scheme, Transport, u16)> = options
            .uris
            .iter()
            .map(|u| (u.scheme, u.transport, u.port))
            .collect();
        assert_eq!(
            uris,
            [
                (Scheme::Turn, Transport::Dtls, DEFAULT_TLS_PORT),
                (Scheme::Stun, Transport::Dtls, 443),
            ]
        );
        assert!(options.settings.tls.insecure, "--insecure is for DTLS too");

        let dir = std::env::temp_dir().join(format!("ice-probe-cli-{}", std::process::id()));
        let made = icebreaker_tests::test_certificate(&dir, &["localhost"]);
        let cert = made.cert_path.to_str().unwrap();
        let options = parse(&["turns:localhost", "--ca", cert, "--ca", cert]).unwrap();
        assert_eq!(options.settings.tls.ca.len(), 2);
        let key = made.key_path.to_str().unwrap();
        assert!(
            parse(&["turns:localhost", "--ca", key])
                .unwrap_err()
                .contains("no certificate")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_are_polite() {
        let options = parse(&["stun:h"]).unwrap();
        assert_eq!(options.settings.count, 10);
        assert_eq!(options.settings.timeout, Duration::from_secs(3));
        assert_eq!(options.settings.lifetime, None);
        assert!(!options.settings.audit && options.settings.load.is_none());
        assert_eq!(
            parse(&["stun:h", "--lifetime"]).unwrap().settings.lifetime,
            Some(Duration::from_secs(120))
        );
        let options = parse(&["turn:h", "--user", "a", "--password", "p", "--load", "8"]).unwrap();
        assert_eq!(
            options.settings.load,
            Some(LoadSettings {
                allocations: 8,
                duration: Duration::from_secs(10),
                rate: 20,
                size: 100,
            })
        );
    }
}
