//! Command-line flags: one per configuration key, applied over the file.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;

use ipnet::IpNet;

use super::values::{ListenOrNone, LogLevel, PortRange, Secret, User};

/// One flag per configuration key. A flag that is given replaces the file's value; for a
/// repeatable flag, the values given replace the file's whole list.
///
/// Every field is empty by default so that an absent flag leaves the file's value alone; the
/// defaults themselves live in [`Config`](super::Config).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Flags {
    /// Address to listen on (repeatable) [default: 0.0.0.0:3478]
    #[arg(long = "listen", value_name = "ADDR", help_heading = "Configuration")]
    pub listen: Vec<SocketAddr>,

    /// Address to listen on for TLS (repeatable) [default: each listen IP on 5349 when a certificate is set]
    #[arg(
        long = "tls-listen",
        value_name = "ADDR",
        help_heading = "Configuration"
    )]
    pub tls_listen: Vec<SocketAddr>,

    /// Address to listen on for DTLS, or `none` (repeatable) [default: the TLS addresses over UDP, if the certificate is ECDSA]
    #[arg(
        long = "dtls-listen",
        value_name = "ADDR",
        help_heading = "Configuration"
    )]
    pub dtls_listen: Vec<ListenOrNone>,

    /// TLS certificate chain, PEM; reloaded on SIGHUP and when it changes
    #[arg(long, value_name = "FILE", help_heading = "Configuration")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key, PEM
    #[arg(long, value_name = "FILE", help_heading = "Configuration")]
    pub tls_key: Option<PathBuf>,

    /// Expect a PROXY protocol v2 header on every TCP and TLS connection [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        help_heading = "Configuration"
    )]
    pub proxy_protocol: Option<bool>,

    /// Server to redirect Allocate to (300) when at capacity or draining (repeatable)
    #[arg(
        long = "alternate-server",
        value_name = "ADDR",
        help_heading = "Configuration"
    )]
    pub alternate_servers: Vec<SocketAddr>,

    /// Realm for long-term credentials [default: icebreaker]
    #[arg(long, value_name = "REALM", help_heading = "Configuration")]
    pub realm: Option<String>,

    /// Static user NAME:PASSWORD, or NAME:0xKEY with the MD5 key in hex (repeatable; visible in ps: prefer the file)
    #[arg(
        long = "user",
        value_name = "NAME:PASSWORD",
        help_heading = "Configuration"
    )]
    pub users: Vec<User>,

    /// TURN REST API shared secret (repeatable; visible in ps: prefer the file)
    #[arg(
        long = "auth-secret",
        value_name = "SECRET",
        help_heading = "Configuration"
    )]
    pub auth_secrets: Vec<Secret>,

    /// IP to bind relay sockets on [default: the local address the client reached]
    #[arg(long, value_name = "IP", help_heading = "Configuration")]
    pub relay_ip: Option<IpAddr>,

    /// Public IP advertised as the relayed address, behind a 1:1 NAT
    #[arg(long, value_name = "IP", help_heading = "Configuration")]
    pub external_ip: Option<IpAddr>,

    /// UDP port range for relay sockets [default: 49152-65535]
    #[arg(long, value_name = "MIN-MAX", help_heading = "Configuration")]
    pub relay_ports: Option<PortRange>,

    /// Peer range to allow despite the built-in deny list (repeatable)
    #[arg(
        long = "allow-peer",
        value_name = "CIDR",
        help_heading = "Configuration"
    )]
    pub allow_peers: Vec<IpNet>,

    /// Peer range to deny in addition to the built-in list (repeatable)
    #[arg(
        long = "deny-peer",
        value_name = "CIDR",
        help_heading = "Configuration"
    )]
    pub deny_peers: Vec<IpNet>,

    /// RFC 5780 alternate address (another IP and port of this host)
    #[arg(long, value_name = "ADDR", help_heading = "Configuration")]
    pub other_address: Option<SocketAddr>,

    /// Address of the Prometheus endpoint [default: none]
    #[arg(long, value_name = "ADDR", help_heading = "Configuration")]
    pub metrics: Option<SocketAddr>,

    /// Worker threads [default: the number of CPUs]
    #[arg(long, value_name = "N", help_heading = "Configuration")]
    pub threads: Option<NonZeroUsize>,

    /// Log level [default: info]
    #[arg(long, value_name = "LEVEL", help_heading = "Configuration")]
    pub log_level: Option<LogLevel>,

    /// SOFTWARE attribute to send [default: none]
    #[arg(long, value_name = "TEXT", help_heading = "Configuration")]
    pub software: Option<String>,

    /// Refuse TCP allocations (RFC 6062 TCP peers) with 442 [default: granted]
    #[arg(long, help_heading = "Configuration")]
    pub no_tcp_relay: bool,

    /// Allocations per user [default: 10]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub user_quota: Option<u32>,

    /// Allocations in total [default: 10000]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub total_quota: Option<u32>,

    /// Permissions per allocation [default: 64]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_permissions: Option<u32>,

    /// Channels per allocation [default: 64]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_channels: Option<u32>,

    /// Relayed bytes per second per allocation, 0 for unlimited [default: 0]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub max_bandwidth: Option<u64>,

    /// Longest allocation lifetime in seconds, at most 3600 [default: 3600]
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub max_lifetime: Option<u32>,

    /// Allocation lifetime when the client asks for none, in seconds [default: 600]
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub default_lifetime: Option<u32>,

    /// Seconds a NONCE stays valid [default: 600]
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub nonce_lifetime: Option<u32>,

    /// TCP and TLS connections and DTLS sessions open at once [default: 10000]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_connections: Option<u32>,

    /// Seconds a TCP/TLS/DTLS connection without allocation may stay silent [default: 60]
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub idle_timeout: Option<u32>,

    /// Seconds a TCP/TLS connection may hold half a frame, or a handshake take [default: 10]
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub frame_timeout: Option<u32>,

    /// Longest frame on TCP/TLS, in bytes [default: 16384]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub max_frame: Option<u32>,

    /// Seconds to let allocations finish after SIGTERM [default: 30]
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub drain_timeout: Option<u32>,

    /// Accept RFC 5766's channel numbers 0x5000-0x7FFF from older clients [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        help_heading = "Compatibility"
    )]
    pub rfc5766_channels: Option<bool>,
}
