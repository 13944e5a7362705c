//! ice-probe: the diagnostic command for any STUN/TURN deployment.
//!
//! Given STUN and TURN URIs, it checks what a WebRTC client needs from them and says in
//! plain words what is wrong: reachability and Binding RTT, the mapped address, NAT
//! behaviour by RFC 5780, a TURN allocation with data relayed back to the probe, Refresh and
//! deallocation; with `--audit` a security audit of the relay policy and of the answers to
//! strangers; with `--load` a bounded load. Over UDP, TCP (`turn:…?transport=tcp`), TLS
//! (`stuns:`, `turns:`) and DTLS (`turns:…?transport=udp`, `stuns:…?transport=udp`), with the
//! handshake and the certificate checked. Output is a table, JSON, or Prometheus textfile
//! metrics.

pub mod audit;
pub mod cli;
pub mod dtls;
pub mod load;
pub mod net;
pub mod output;
pub mod report;
pub mod run;
pub mod stats;
pub mod stream;
pub mod stun_checks;
pub mod tls;
pub mod turn_checks;

use std::net::SocketAddr;
use std::time::Duration;

use icebreaker_ice::uri::ServerUri;

use crate::tls::TlsOptions;

/// TURN credentials, as given or derived from a REST secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
    /// Whether they were derived from `--secret` (TURN REST API): a 401 or 438 then points at
    /// the secret or the clocks rather than a typo.
    pub rest: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("rest", &self.rest)
            .finish()
    }
}

/// What the checks need to know about the run, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// TURN credentials; TURN checks are skipped without them.
    pub credentials: Option<Credentials>,
    /// Binding requests for the RTT statistics.
    pub count: u32,
    /// How long one request may go unanswered, retransmissions included.
    pub timeout: Duration,
    /// Estimate the NAT mapping lifetime (RFC 5780 §4.6), waiting up to this long.
    pub lifetime: Option<Duration>,
    /// Datagrams sent through the relay back to the probe.
    pub packets: u32,
    /// Run the security audit.
    pub audit: bool,
    /// Run a load.
    pub load: Option<LoadSettings>,
    /// Which certificates `stuns:` and `turns:` servers may present, over TLS and DTLS.
    pub tls: TlsOptions,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            credentials: None,
            count: 10,
            timeout: Duration::from_secs(3),
            lifetime: None,
            packets: 20,
            audit: false,
            load: None,
            tls: TlsOptions::default(),
        }
    }
}

/// `--load N --duration SECS`: a bounded load from the client side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSettings {
    /// Allocations, each exchanging datagrams with the next one.
    pub allocations: u32,
    /// How long the exchange lasts.
    pub duration: Duration,
    /// Datagrams per second each allocation sends.
    pub rate: u32,
    /// Bytes per datagram.
    pub size: usize,
}

/// A server to check: its URI and the address it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URI as given.
    pub uri: ServerUri,
    /// The address the checks talk to.
    pub server: SocketAddr,
}

impl Target {
    /// The URI as printed in reports.
    pub fn label(&self) -> String {
        self.uri.to_string()
    }
}
