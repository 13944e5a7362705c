//! The effective configuration: defaults, then an optional TOML file, then command-line flags.
//!
//! The file is one flat table of kebab-case keys; each key has a flag of the same name
//! (`--key`, or the singular for lists: `users` is `--user`). A flag that is given replaces
//! the file's value, and for lists the file's whole list. Unknown keys are errors, so a typo
//! never silently leaves a default in place.
//!
//! Each value is checked where it is parsed, by the same code for the file and for the flag;
//! rules that involve a limit or two keys are checked once everything is merged. Errors carry
//! `FILE:LINE:COLUMN` when the value came from the file and the flag's name when it came from
//! the command line.

use std::fmt::{Display, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

mod flags;
mod values;

pub use flags::Flags;
pub use values::{
    InvalidValue, ListenOrNone, LogLevel, MIN_SECRET_LEN, PortRange, SECRET_PLACEHOLDER, Secret,
    User, UserCredential,
};

/// The longest allocation lifetime RFC 8656 §7.2 lets a server grant, in seconds.
pub const LIFETIME_CAP: u32 = 3600;

/// How many channel numbers exist (0x4000..=0x4FFF, RFC 8656 §12).
pub const CHANNEL_NUMBERS: u32 = 0x1000;

/// The smallest `max-frame`: an Allocate with every attribute a client sends fits.
pub const MIN_FRAME: u32 = 1024;

/// The largest `max-frame`: a STUN header and the longest body its 16-bit length can say.
pub const MAX_FRAME: u32 = 20 + 65_535;

/// The TLS port of RFC 8656 §18 (`turns:`), used for `tls-listen` when only a certificate is
/// configured.
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// The effective configuration. Build it with [`Config::load`]: deserializing it directly
/// skips the rules that involve a limit or two keys.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Addresses to listen on for STUN and TURN, over UDP and TCP on the same port (as
    /// coturn does). Default `["0.0.0.0:3478"]`. Flag `--listen ADDR`, repeatable.
    pub listen: Vec<SocketAddr>,

    /// Addresses to listen on for STUN and TURN over TLS. Default none; with `tls-cert` and
    /// `tls-key` set, each `listen` IP on port 5349 (RFC 8656 §18). Port 443 gets through
    /// firewalls that allow only HTTPS. Flag `--tls-listen ADDR`, repeatable.
    pub tls_listen: Vec<SocketAddr>,

    /// Addresses to listen on for STUN and TURN over DTLS (UDP). Default: with `tls-cert` and
    /// `tls-key` set, the TLS addresses in effect, over UDP (as coturn does), if the
    /// certificate is ECDSA P-256 or P-384, which DTLS needs (with another key, a warning and
    /// no DTLS); otherwise none. An empty list turns DTLS off; a list given with a certificate
    /// DTLS cannot use is an error at start. Flag `--dtls-listen ADDR`, repeatable;
    /// `--dtls-listen none` turns DTLS off.
    pub dtls_listen: Option<Vec<SocketAddr>>,

    /// The TLS certificate chain, PEM, leaf first. Read again on SIGHUP and when the file
    /// changes; open connections keep their session. Default none. Flag `--tls-cert FILE`.
    pub tls_cert: Option<PathBuf>,

    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1). Default none. Flag `--tls-key FILE`.
    pub tls_key: Option<PathBuf>,

    /// Expect a PROXY protocol v2 header at the start of every TCP and TLS connection, from a
    /// load balancer in front of the server, and take the client's address from it.
    /// Connections without one are closed. Default false. Flag `--proxy-protocol [BOOL]`.
    pub proxy_protocol: bool,

    /// Other servers to send clients to, with 300 (Try Alternate) and ALTERNATE-SERVER, when
    /// an Allocate finds this one at capacity or draining. Default none: 508 instead. Flag
    /// `--alternate-server ADDR`, repeatable.
    pub alternate_servers: Vec<SocketAddr>,

    /// The REALM of long-term credentials (RFC 8489 §9.2). Default `"icebreaker"`. Flag
    /// `--realm`.
    pub realm: String,

    /// Static long-term users, each `"name:password"`, or `"name:0x<32 hex digits>"` giving
    /// the MD5 long-term key, MD5(`name:realm:password`), so that the password is not stored
    /// (as coturn's `-u user:0xkey`). A user given by key can only authenticate with MD5
    /// integrity: SHA-256 needs the password. Default none. Flag `--user NAME:PASSWORD`,
    /// repeatable.
    pub users: Vec<User>,

    /// TURN REST API shared secrets: a username `expiry:user` is accepted with the password
    /// base64(HMAC-SHA1(secret, username)) for any of them, so a new secret can be added
    /// before the old one is removed. At least 16 bytes each. Default none. Flag
    /// `--auth-secret SECRET`, repeatable.
    pub auth_secrets: Vec<Secret>,

    /// The IP relay sockets are bound on. Default none: the local address the client reached.
    /// Flag `--relay-ip`.
    pub relay_ip: Option<IpAddr>,

    /// The public IP advertised in XOR-RELAYED-ADDRESS when the server sits behind a 1:1 NAT
    /// (a cloud instance with a private address). Default none: the relay socket's own
    /// address. Flag `--external-ip`.
    pub external_ip: Option<IpAddr>,

    /// UDP ports for relay sockets, `"MIN-MAX"` with `1024 <= MIN <= MAX`. Default
    /// `"49152-65535"`. Flag `--relay-ports`.
    pub relay_ports: PortRange,

    /// Peer ranges allowed although the built-in deny list (loopback, private, link-local,
    /// metadata and the server's own addresses) or `deny-peers` covers them; for example
    /// `10.0.0.0/8` to relay into a private network, `127.0.0.0/8` in tests. Default none.
    /// Flag `--allow-peer CIDR`, repeatable.
    pub allow_peers: Vec<IpNet>,

    /// Peer ranges denied on top of the built-in deny list. Default none. Flag
    /// `--deny-peer CIDR`, repeatable.
    pub deny_peers: Vec<IpNet>,

    /// The RFC 5780 alternate address: another IP and port of this host, announced in
    /// OTHER-ADDRESS so clients can discover their NAT's behaviour. Default none (no
    /// OTHER-ADDRESS, CHANGE-REQUEST refused). Flag `--other-address`.
    pub other_address: Option<SocketAddr>,

    /// Address of the Prometheus endpoint. Default none: no endpoint. Flag `--metrics`.
    pub metrics: Option<SocketAddr>,

    /// Worker threads. Default none: the number of CPUs at run time (see
    /// [`Config::worker_threads`]). Flag `--threads`.
    pub threads: Option<NonZeroUsize>,

    /// Log level: error, warn, info, debug or trace. Default `"info"`. Flag `--log-level`.
    pub log_level: LogLevel,

    /// The SOFTWARE attribute put in answers. Default none: answers to strangers stay small
    /// and do not name the server. Flag `--software`.
    pub software: Option<String>,

    /// Grant TCP allocations (RFC 6062: TCP peers, Connect and ConnectionBind) to clients on
    /// TCP or TLS; when off, such an Allocate is answered 442, as coturn's `no-tcp-relay`
    /// does. Default true. Flag `--no-tcp-relay` turns it off.
    pub tcp_relay: bool,

    /// Allocations one user may hold at once; one more is refused with 486. Default 10. Flag
    /// `--user-quota`.
    pub user_quota: u32,

    /// Allocations the server holds at once; one more is refused with 508. Default 10000.
    /// Flag `--total-quota`.
    pub total_quota: u32,

    /// Permissions (peer IPs) per allocation. Default 64. Flag `--max-permissions`.
    pub max_permissions: u32,

    /// Channels per allocation, at most 4096 (the channel number space). Default 64. Flag
    /// `--max-channels`.
    pub max_channels: u32,

    /// Relayed bytes per second per allocation, both directions counted together; datagrams
    /// over the budget are dropped, since UDP has no way to slow the sender. Default 0:
    /// unlimited, because the right figure depends on the media (one HD video stream is about
    /// 300 000 bytes per second) and a guess would cut calls; the quotas bound the total
    /// meanwhile. Flag `--max-bandwidth`.
    pub max_bandwidth: u64,

    /// The longest allocation lifetime granted, in seconds; longer requests are shortened.
    /// At most 3600 (RFC 8656 §7.2). Default 3600. Flag `--max-lifetime`.
    pub max_lifetime: u32,

    /// The allocation lifetime granted when the client asks for none, in seconds; at most
    /// `max-lifetime`. Default 600 (RFC 8656 §2.2). Flag `--default-lifetime`.
    pub default_lifetime: u32,

    /// How long a NONCE stays valid, in seconds; after that the client gets 438 and retries
    /// with a fresh one. Default 600. Flag `--nonce-lifetime`.
    pub nonce_lifetime: u32,

    /// TCP and TLS connections and DTLS sessions open at once; more are closed as soon as
    /// they are accepted (a DTLS session once its client has returned the cookie). Default
    /// 10000. Flag `--max-connections`.
    pub max_connections: u32,

    /// Seconds a TCP, TLS or DTLS connection without an allocation may stay silent before it
    /// is closed; a connection with an allocation lives as long as its allocation. Default 60.
    /// Flag `--idle-timeout`.
    pub idle_timeout: u32,

    /// Seconds a TCP or TLS connection may hold half a frame, and a TLS or DTLS handshake may
    /// take, before it is closed (slowloris). Default 10. Flag `--frame-timeout`.
    pub frame_timeout: u32,

    /// The longest STUN message or ChannelData frame accepted on TCP and TLS, in bytes; a
    /// longer length field closes the connection. Default 16384: any datagram a network path
    /// carries, jumbo frames included. Flag `--max-frame`.
    pub max_frame: u32,

    /// Seconds the server keeps relaying for existing allocations after SIGTERM, while it
    /// refuses new ones; then it exits. Default 30. Flag `--drain-timeout`.
    pub drain_timeout: u32,

    /// Accept channel numbers 0x5000 to 0x7FFF, which RFC 5766 allowed and RFC 8656 reserves,
    /// for older clients that still draw from them (coturn's own test client does). Default
    /// false. Flag `--rfc5766-channels [BOOL]`.
    pub rfc5766_channels: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
            tls_listen: Vec::new(),
            dtls_listen: None,
            tls_cert: None,
            tls_key: None,
            proxy_protocol: false,
            alternate_servers: Vec::new(),
            realm: "icebreaker".to_owned(),
            users: Vec::new(),
            auth_secrets: Vec::new(),
            relay_ip: None,
            external_ip: None,
            relay_ports: PortRange::default(),
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            other_address: None,
            metrics: None,
            threads: None,
            log_level: LogLevel::Info,
            software: None,
            tcp_relay: true,
            user_quota: 10,
            total_quota: 10_000,
            max_permissions: 64,
            max_channels: 64,
            max_bandwidth: 0,
            max_lifetime: LIFETIME_CAP,
            default_lifetime: 600,
            nonce_lifetime: 600,
            max_connections: 10_000,
            idle_timeout: 60,
            frame_timeout: 10,
            max_frame: 16_384,
            drain_timeout: 30,
            rfc5766_channels: false,
        }
    }
}

/// Why a configuration is refused. Displayed, it is one line fit for `error: …`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or one of its values is refused.
    #[error("{}:{line}:{column}: {}{reason}", path.display(), key_prefix(key.as_deref()))]
    File {
        /// The file.
        path: PathBuf,
        /// The line of the offending text, from 1.
        line: usize,
        /// The column of the offending text, in characters from 1.
        column: usize,
        /// The key whose value is refused, when the error is about a value.
        key: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A command-line flag's value is refused.
    #[error("--{flag}: {reason}")]
    Flag {
        /// The flag, without its dashes.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A default is refused in combination with another key's value.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// The defaults, overridden by `file` if given, overridden by `flags`; then checked.
    pub fn load(file: Option<&Path>, flags: &Flags) -> Result<Config, ConfigError> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Config::load_text(Some((path, &text)), flags)
            }
            None => Config::load_text(None, flags),
        }
    }

    /// The number of worker threads to run: `threads`, or the number of CPUs.
    pub fn worker_threads(&self) -> NonZeroUsize {
        self.threads
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN)
    }

    /// The TLS listen addresses in effect: `tls-listen`, or, with a certificate and no
    /// `tls-listen`, each `listen` IP on port 5349.
    pub fn effective_tls_listen(&self) -> Vec<SocketAddr> {
        if !self.tls_listen.is_empty() || self.tls_cert.is_none() {
            return self.tls_listen.clone();
        }
        let mut addresses: Vec<SocketAddr> = self
            .listen
            .iter()
            .map(|a| SocketAddr::new(a.ip(), DEFAULT_TLS_PORT))
            .collect();
        addresses.dedup();
        addresses
    }

    /// The DTLS listen addresses asked for: `dtls-listen`, or, with a certificate and no
    /// `dtls-listen`, the TLS listen addresses in effect. Whether the certificate can serve
    /// DTLS is only known once it is loaded.
    pub fn effective_dtls_listen(&self) -> Vec<SocketAddr> {
        match &self.dtls_listen {
            Some(addresses) => addresses.clone(),
            None if self.tls_cert.is_some() => self.effective_tls_listen(),
            None => Vec::new(),
        }
    }

    /// Legal but probably unintended settings, one sentence each, for the operator to see.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.users.is_empty() && self.auth_secrets.is_empty() {
            warnings.push(
                "no users and no auth-secrets: every TURN request will be refused \
                 (STUN Binding still works)"
                    .to_owned(),
            );
        }
        if let Some(net) = self.allow_peers.iter().find(|net| net.prefix_len() == 0) {
            warnings.push(format!(
                "allow-peers holds {net}: the built-in deny list is off and clients can relay \
                 into this host's own networks"
            ));
        }
        warnings
    }

    /// The configuration as TOML, passwords, keys and secrets replaced by `<redacted>`; with
    /// them put back it loads to the same configuration. Keys without a value appear as
    /// comments.
    pub fn to_toml(&self) -> String {
        let mut out = Printer(String::new());
        out.list("listen", self.listen.iter().map(quote));
        out.list("tls-listen", self.tls_listen.iter().map(quote));
        match &self.dtls_listen {
            Some(addresses) => out.list("dtls-listen", addresses.iter().map(quote)),
            None => out.optional(
                "dtls-listen",
                None,
                "the TLS addresses, over UDP, when the certificate is ECDSA",
            ),
        }
        out.optional(
            "tls-cert",
            self.tls_cert.as_ref().map(|p| quote(p.display())),
            "no TLS",
        );
        out.optional(
            "tls-key",
            self.tls_key.as_ref().map(|p| quote(p.display())),
            "no TLS",
        );
        out.raw("proxy-protocol", self.proxy_protocol);
        out.list(
            "alternate-servers",
            self.alternate_servers.iter().map(quote),
        );
        out.raw("realm", quote(&self.realm));
        out.list("users", self.users.iter().map(|u| quote(u.redacted())));
        out.list(
            "auth-secrets",
            self.auth_secrets.iter().map(|_| quote("<redacted>")),
        );
        out.optional(
            "relay-ip",
            self.relay_ip.map(quote),
            "the address the client reached",
        );
        out.optional(
            "external-ip",
            self.external_ip.map(quote),
            "the relay address",
        );
        out.raw("relay-ports", quote(self.relay_ports));
        out.list("allow-peers", self.allow_peers.iter().map(quote));
        out.list("deny-peers", self.deny_peers.iter().map(quote));
        out.optional(
            "other-address",
            self.other_address.map(quote),
            "no RFC 5780",
        );
        out.optional("metrics", self.metrics.map(quote), "no endpoint");
        let cpus = format!("the number of CPUs, {} here", self.worker_threads());
        out.optional("threads", self.threads.map(|n| n.to_string()), &cpus);
        out.raw("log-level", quote(self.log_level.as_str()));
        out.optional(
            "software",
            self.software.as_deref().map(quote),
            "no SOFTWARE",
        );
        out.raw("tcp-relay", self.tcp_relay);
        out.0.push_str("\n# Limits\n");
        out.raw("user-quota", self.user_quota);
        out.raw("total-quota", self.total_quota);
        out.raw("max-permissions", self.max_permissions);
        out.raw("max-channels", self.max_channels);
        out.raw("max-bandwidth", self.max_bandwidth);
        out.raw("max-lifetime", self.max_lifetime);
        out.raw("default-lifetime", self.default_lifetime);
        out.raw("nonce-lifetime", self.nonce_lifetime);
        out.raw("max-connections", self.max_connections);
        out.raw("idle-timeout", self.idle_timeout);
        out.raw("frame-timeout", self.frame_timeout);
        out.raw("max-frame", self.max_frame);
        out.raw("drain-timeout", self.drain_timeout);
        out.0.push_str("\n# Compatibility\n");
        out.raw("rfc5766-channels", self.rfc5766_channels);
        out.0
    }

    fn load_text(file: Option<(&Path, &str)>, flags: &Flags) -> Result<Config, ConfigError> {
        let (mut config, spans) = match file {
            Some((path, text)) => parse_document(text).map_err(|problem| {
                let (line, column) = line_column(text, problem.offset);
                ConfigError::File {
                    path: path.to_owned(),
                    line,
                    column,
                    key: problem.key,
                    reason: problem.reason,
                }
            })?,
            None => (Config::default(), Vec::new()),
        };
        let from_flags = config.apply(flags);
        config.validate().map_err(|(key, reason)| {
            if from_flags.contains(&key) {
                return ConfigError::Flag {
                    flag: flag_name(key),
                    reason,
                };
            }
            match (file, spans.iter().find(|span| span.key == key)) {
                (Some((path, text)), Some(span)) => {
                    let (line, column) = line_column(text, span.value.start);
                    ConfigError::File {
                        path: path.to_owned(),
                        line,
                        column,
                        key: Some(key.to_owned()),
                        reason,
                    }
                }
                _ => ConfigError::Invalid { key, reason },
            }
        })?;
        Ok(config)
    }

    /// Puts every given flag over the current value; returns the keys that flags set.
    fn apply(&mut self, flags: &Flags) -> Vec<&'static str> {
        let mut set = Vec::new();
        macro_rules! list {
            ($($field:ident => $key:literal),* $(,)?) => {$(
                if !flags.$field.is_empty() {
                    self.$field.clone_from(&flags.$field);
                    set.push($key);
                }
            )*};
        }
        macro_rules! value {
            ($($field:ident => $key:literal),* $(,)?) => {$(
                if let Some(value) = &flags.$field {
                    self.$field = value.clone();
                    set.push($key);
                }
            )*};
        }
        macro_rules! optional {
            ($($field:ident => $key:literal),* $(,)?) => {$(
                if flags.$field.is_some() {
                    self.$field.clone_from(&flags.$field);
                    set.push($key);
                }
            )*};
        }
        list!(listen => "listen", tls_listen => "tls-listen", users => "users",
              auth_secrets => "auth-secrets", allow_peers => "allow-peers",
              deny_peers => "deny-peers", alternate_servers => "alternate-servers");
        if !flags.dtls_listen.is_empty() {
            self.dtls_listen = Some(flags.dtls_listen.iter().filter_map(|a| a.0).collect());
            set.push("dtls-listen");
        }
        optional!(relay_ip => "relay-ip", external_ip => "external-ip",
                  other_address => "other-address", metrics => "metrics", threads => "threads",
                  software => "software", tls_cert => "tls-cert", tls_key => "tls-key");
        value!(realm => "realm", relay_ports => "relay-ports", log_level => "log-level",
               user_quota => "user-quota", total_quota => "total-quota",
               max_permissions => "max-permissions", max_channels => "max-channels",
               max_bandwidth => "max-bandwidth", max_lifetime => "max-lifetime",
               default_lifetime => "default-lifetime", nonce_lifetime => "nonce-lifetime",
               drain_timeout => "drain-timeout", rfc5766_channels => "rfc5766-channels",
               proxy_protocol => "proxy-protocol", max_connections => "max-connections",
               idle_timeout => "idle-timeout", frame_timeout => "frame-timeout",
               max_frame => "max-frame");
        if flags.no_tcp_relay {
            self.tcp_relay = false;
            set.push("tcp-relay");
        }
        set
    }

    /// The rules no single value can check alone; the first broken one, by key.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let fail = |key, reason: &str| Err((key, reason.to_owned()));
        if self.listen.is_empty() {
            return fail("listen", "at least one address is needed");
        }
        // RFC 8489 §14.9: REALM is a non-empty string of fewer than 128 characters.
        if self.realm.is_empty() || self.realm.chars().count() >= 128 {
            return fail("realm", "must have 1 to 127 characters");
        }
        for (i, user) in self.users.iter().enumerate() {
            if self.users[..i].iter().any(|other| other.name == user.name) {
                return Err(("users", format!("user `{}` appears twice", user.name)));
            }
        }
        for (key, ip) in [
            ("relay-ip", self.relay_ip),
            ("external-ip", self.external_ip),
        ] {
            if ip.is_some_and(|ip| ip.is_unspecified()) {
                return fail(key, "must be one address, not the unspecified address");
            }
        }
        if self
            .other_address
            .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return fail("other-address", "must be one address with a port");
        }
        // RFC 8489 §14.14: SOFTWARE has fewer than 128 characters.
        if self
            .software
            .as_ref()
            .is_some_and(|s| s.chars().count() >= 128)
        {
            return fail("software", "must have fewer than 128 characters");
        }
        // A quota of 0 would refuse every allocation: say so rather than run a dead relay.
        for (key, value) in [
            ("user-quota", self.user_quota),
            ("total-quota", self.total_quota),
            ("max-permissions", self.max_permissions),
            ("nonce-lifetime", self.nonce_lifetime),
            ("max-connections", self.max_connections),
            ("idle-timeout", self.idle_timeout),
            ("frame-timeout", self.frame_timeout),
        ] {
            if value == 0 {
                return fail(key, "must be at least 1");
            }
        }
        if !(MIN_FRAME..=MAX_FRAME).contains(&self.max_frame) {
            return Err((
                "max-frame",
                format!(
                    "must be {MIN_FRAME} to {MAX_FRAME} bytes: room for any TURN request, and no \
                     more than a length field can say"
                ),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return fail("tls-key", "tls-cert needs tls-key"),
            (None, Some(_)) => return fail("tls-cert", "tls-key needs tls-cert"),
            (None, None) if !self.tls_listen.is_empty() => {
                return fail("tls-listen", "needs tls-cert and tls-key");
            }
            (None, None) if self.dtls_listen.as_ref().is_some_and(|l| !l.is_empty()) => {
                return fail("dtls-listen", "needs tls-cert and tls-key");
            }
            _ => {}
        }
        if let Some(addr) = self
            .alternate_servers
            .iter()
            .find(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return Err((
                "alternate-servers",
                format!("{addr} must be one address with a port"),
            ));
        }
        if self.max_channels > CHANNEL_NUMBERS {
            return fail(
                "max-channels",
                "at most 4096: there are no more channel numbers",
            );
        }
        if !(1..=LIFETIME_CAP).contains(&self.max_lifetime) {
            return fail("max-lifetime", "must be 1 to 3600 seconds (RFC 8656 §7.2)");
        }
        if !(1..=self.max_lifetime).contains(&self.default_lifetime) {
            return Err((
                "default-lifetime",
                format!("must be 1 to max-lifetime ({}) seconds", self.max_lifetime),
            ));
        }
        Ok(())
    }
}

/// The flag of a key: the key itself, or its singular for lists.
fn flag_name(key: &str) -> &str {
    match key {
        "users" => "user",
        "auth-secrets" => "auth-secret",
        "allow-peers" => "allow-peer",
        "deny-peers" => "deny-peer",
        "alternate-servers" => "alternate-server",
        "tcp-relay" => "no-tcp-relay",
        key => key,
    }
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|key| format!("{key}: ")).unwrap_or_default()
}

/// Where a top-level key and its value sit in the file.
struct KeySpan {
    key: String,
    name: Range<usize>,
    value: Range<usize>,
}

/// A problem in the file: a byte offset, the key it concerns if any, and the reason.
struct Problem {
    offset: usize,
    key: Option<String>,
    reason: String,
}

fn parse_document(text: &str) -> Result<(Config, Vec<KeySpan>), Problem> {
    let problem = |error: toml::de::Error, spans: &[KeySpan]| {
        let span = error.span().unwrap_or(0..0);
        // Name the key when the value is at fault; an unknown key's message names it already.
        let key = spans
            .iter()
            .find(|s| s.value.contains(&span.start) && !s.name.contains(&span.start))
            .map(|s| s.key.clone());
        let mut reason = error.message().trim_end().to_owned();
        // serde's type errors quote the value, and these values are passwords.
        if matches!(key.as_deref(), Some("users" | "auth-secrets"))
            && reason.starts_with("invalid type")
        {
            reason = "expected an array of strings".to_owned();
        }
        Problem {
            offset: span.start,
            key,
            reason,
        }
    };
    let table = toml::de::DeTable::parse(text).map_err(|error| problem(error, &[]))?;
    let spans: Vec<KeySpan> = table
        .get_ref()
        .iter()
        .map(|(key, value)| KeySpan {
            key: key.get_ref().to_string(),
            name: key.span(),
            value: value.span(),
        })
        .collect();
    let config = Config::deserialize(toml::de::Deserializer::from(table))
        .map_err(|error| problem(error, &spans))?;
    Ok((config, spans))
}

/// The 1-based line and character column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, text[line_start..offset].chars().count() + 1)
}

fn quote(value: impl Display) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// Lines of `key = value`.
struct Printer(String);

impl Printer {
    fn raw(&mut self, key: &str, value: impl Display) {
        let _ = writeln!(self.0, "{key} = {value}");
    }

    fn list(&mut self, key: &str, items: impl Iterator<Item = String>) {
        let items: Vec<String> = items.collect();
        self.raw(key, format_args!("[{}]", items.join(", ")));
    }

    fn optional(&mut self, key: &str, value: Option<String>, otherwise: &str) {
        match value {
            Some(value) => self.raw(key, value),
            None => {
                let _ = writeln!(self.0, "# {key} is not set: {otherwise}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
