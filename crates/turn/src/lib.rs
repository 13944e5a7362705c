//! Sans-IO TURN relay core (RFC 8656, with TCP allocations of RFC 6062).
//!
//! [`TurnServer`] holds allocations, permissions and channels, authenticates requests with
//! long-term credentials, applies the peer address policy and quotas, and relays data. It opens
//! no socket, reads no clock and draws no randomness of its own: the driver passes the time
//! with every call, a random generator at construction, and a [`RelaySockets`] that binds and
//! closes relay ports.
//!
//! Call order, for each datagram or stream frame:
//!
//! 1. From a client: [`TurnServer::handle_client`]. It answers requests into the caller's
//!    buffer ([`ClientAction::Reply`]) or says which bytes of the packet to send from which
//!    relay socket to which peer ([`ClientAction::Relay`]).
//! 2. On a relay socket, from a peer: [`TurnServer::handle_peer`], which says what to send to
//!    which client: ChannelData written in place in front of the data, or a Data indication
//!    written into the caller's buffer.
//! 3. Whenever [`TurnServer::poll_timeout`] passes: [`TurnServer::handle_timeout`], which
//!    expires allocations, permissions and channels and closes their sockets.
//! 4. After any of these, drain [`TurnServer::poll_event`] for logs and metrics.
//!
//! TCP allocations (RFC 6062, on unless [`TurnConfig::tcp_relay`] is off) add sockets the
//! driver owns and results it reports later; the core says what to do and remembers nothing
//! of the sockets but their connection ids:
//!
//! 5. An Allocate with REQUESTED-TRANSPORT TCP on a TCP or TLS connection binds a listening
//!    socket through [`RelaySockets::bind_tcp`] (released with [`RelaySockets::release_tcp`]).
//! 6. A connection accepted on such a listener: [`TurnServer::accept_peer_connection`]. `None`
//!    means close it; `Some(id)` means keep it (reading nothing yet) under that id.
//! 7. After any call, including those below, drain [`TurnServer::poll_command`]:
//!    [`Command::Connect`] (open a connection from a relayed address to a peer) and
//!    [`Command::Close`] (close a peer connection and its data connection), and
//!    [`TurnServer::poll_transmit`]: Connect answers and ConnectionAttempt indications
//!    written into the caller's buffer for a client's control connection, in order.
//! 8. The outcome of a [`Command::Connect`]: [`TurnServer::peer_connected`] or
//!    [`TurnServer::peer_connect_failed`]; the core answers 447 on its own after
//!    [`CONNECT_TIMEOUT`] and then commands the attempt closed.
//! 9. [`ClientAction::PipeToPeer`] from `handle_client` (a ConnectionBind on a new client
//!    connection): send the response, then splice that connection with the peer connection,
//!    raw bytes both ways, starting with anything the peer already sent.
//! 10. A peer connection or its client data connection ended: close the other, then
//!     [`TurnServer::peer_connection_closed`]. A peer connection not bound within
//!     [`CONNECTION_BIND_TIMEOUT`], or whose allocation ends, is closed by a [`Command::Close`],
//!     which needs no report.
//!
//! A ConnectionBind comes on a new client connection, which `SO_REUSEPORT` may hand to
//! another worker than the one whose core issued the connection id. Each core stamps its ids
//! with a tag ([`TurnServer::set_connection_id_tag`]); a driver reads the id of a new
//! connection's first message with [`connection_bind_id`] and moves the connection to the
//! worker of [`connection_id_tag`] before calling `handle_client`.
//!
//! STUN Binding requests are not TURN's: the driver hands them to its Binding service.
//!
//! One core serves one worker. Workers share nothing but [`Quotas`] (allocation counts and
//! port reservations) and the configuration; the kernel's `SO_REUSEPORT` hashing keeps each client 5-tuple on one worker
//! and each relay socket belongs to the worker that bound it, so the relay path takes no lock.

mod allocate;
mod allocation;
pub mod auth;
pub mod policy;
mod ports;
mod quotas;
mod requests;
mod server;
mod tcp;

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::ops::RangeInclusive;
use std::time::Duration;

pub use icebreaker_wire::ChannelRange;
pub use icebreaker_wire::attr::ConnectionId;

pub use allocation::{CHANNEL_LIFETIME, PERMISSION_LIFETIME};
pub use auth::{AuthFailure, UserCredential};
pub use policy::{DenyReason, PeerPolicy};
pub use ports::RelaySockets;
pub use quotas::Quotas;
pub use server::{ClientAction, DeleteReason, Event, PEER_HEADROOM, PeerAction, TurnServer};
pub use tcp::{
    CONNECT_TIMEOUT, CONNECTION_BIND_TIMEOUT, Command, PeerCloseReason, Transmit,
    connection_bind_id, connection_id_tag,
};

/// The transport between a client and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientTransport {
    /// UDP.
    Udp,
    /// TCP (RFC 8656 §3.1).
    Tcp,
    /// TLS over TCP.
    Tls,
    /// DTLS over UDP.
    Dtls,
}

impl ClientTransport {
    /// Whether messages follow each other in a byte stream, so ChannelData must be padded.
    pub const fn is_stream(self) -> bool {
        matches!(self, ClientTransport::Tcp | ClientTransport::Tls)
    }

    /// A short lowercase name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientTransport::Udp => "udp",
            ClientTransport::Tcp => "tcp",
            ClientTransport::Tls => "tls",
            ClientTransport::Dtls => "dtls",
        }
    }
}

/// The 5-tuple that names an allocation: client address, server address, transport
/// (RFC 8656 §2.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// The client's address as the server sees it (its server-reflexive address).
    pub client: SocketAddr,
    /// The server address the client sent to.
    pub server: SocketAddr,
    /// The transport.
    pub transport: ClientTransport,
}

impl fmt::Debug for FiveTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{}/{}",
            self.client,
            self.server,
            self.transport.as_str()
        )
    }
}

/// A relay address: where relay sockets are bound, and the address given to clients when the
/// server sits behind a 1:1 NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayAddress {
    /// The local IP relay sockets bind to.
    pub bind: IpAddr,
    /// The IP put in XOR-RELAYED-ADDRESS; usually the same.
    pub advertised: IpAddr,
}

/// What one TURN core needs to know. Workers share one, cloned.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// The realm of the long-term credentials.
    pub realm: String,
    /// Static users.
    pub users: Vec<(String, UserCredential)>,
    /// TURN REST API secrets; several during a rotation.
    pub rest_secrets: Vec<Vec<u8>>,
    /// Secret that MACs nonces; every worker of a server must share it.
    pub nonce_secret: [u8; 32],
    /// How long a nonce is valid.
    pub nonce_lifetime: Duration,
    /// Relay addresses, at most one per family. For a family without one, relay sockets bind
    /// to the server address the client reached, or else to [`family_fallback`].
    ///
    /// [`family_fallback`]: TurnConfig::family_fallback
    pub relay: Vec<RelayAddress>,
    /// Local addresses to relay on for a family the client did not reach, when `relay` has
    /// none of it; the daemon fills it from its listen addresses. At most one per family. They
    /// let a client that reached an IPv4 listener get an IPv6 relay (REQUESTED-ADDRESS-FAMILY,
    /// or the second half of a dual allocation), and the other way round.
    pub family_fallback: Vec<IpAddr>,
    /// Relay ports are drawn from this range.
    pub relay_ports: RangeInclusive<u16>,
    /// Lifetime granted when the client asks for less or nothing (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (RFC 8656 suggests 3600 s).
    pub max_lifetime: Duration,
    /// Permissions per allocation.
    pub max_permissions: usize,
    /// Channels per allocation.
    pub max_channels: usize,
    /// Bytes per second relayed per allocation, both directions counted together; 0 for no
    /// limit.
    pub max_bandwidth: u64,
    /// Which peers may be relayed to.
    pub peer_policy: PeerPolicy,
    /// The SOFTWARE attribute of responses; none by default, to keep answers small.
    pub software: Option<String>,
    /// Channel numbers accepted in ChannelBind and ChannelData: RFC 8656's by default, RFC
    /// 5766's wider range for older clients.
    pub channel_range: ChannelRange,
    /// Unauthenticated requests answered per second and source (hashed into buckets).
    pub challenge_rate: f64,
    /// Failed authentications tolerated per second and source before requests are dropped.
    pub auth_failure_rate: f64,
    /// Other servers of the fleet. When one is set, an authenticated Allocate this server
    /// cannot take for want of capacity (draining, the total allocation quota reached, no
    /// relay port free) is answered 300 Try Alternate with one of them in ALTERNATE-SERVER
    /// (RFC 8489 §10) instead of 508, so that the client moves on at once. The choice rotates
    /// among those of the family of the address the client reached, and falls back to any
    /// when none is of that family (which an RFC 5389 client may refuse). A user's own quota
    /// (486) is never redirected: another server would count the same user. Empty by default.
    pub alternate_servers: Vec<SocketAddr>,
    /// Grant TCP allocations (RFC 6062): REQUESTED-TRANSPORT TCP over a TCP or TLS control
    /// connection. On by default, as in coturn (whose `no-tcp-relay` turns it off); when off,
    /// such an Allocate is answered 442. A driver that cannot relay TCP must turn it off.
    pub tcp_relay: bool,
    /// Peer connections per TCP allocation, connecting, waiting for their ConnectionBind or
    /// bound: each holds two descriptors. A Connect beyond it is answered 508, a peer's
    /// connection beyond it closed. 64 by default.
    pub max_tcp_connections: usize,
}

impl TurnConfig {
    /// A configuration with RFC defaults and the safe policy, for `realm`, relaying on
    /// `relay_ports`, with no users yet.
    pub fn new(realm: &str, relay_ports: RangeInclusive<u16>) -> TurnConfig {
        TurnConfig {
            realm: realm.into(),
            users: Vec::new(),
            rest_secrets: Vec::new(),
            nonce_secret: [0; 32],
            nonce_lifetime: Duration::from_secs(600),
            relay: Vec::new(),
            family_fallback: Vec::new(),
            relay_ports: relay_ports.clone(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            max_permissions: 64,
            max_channels: 64,
            max_bandwidth: 0,
            peer_policy: PeerPolicy {
                allow: Vec::new(),
                deny: Vec::new(),
                server_addresses: Vec::new(),
                relay_ports,
                relay_addresses: Vec::new(),
            },
            software: None,
            channel_range: ChannelRange::Rfc8656,
            challenge_rate: 20.0,
            auth_failure_rate: 5.0,
            alternate_servers: Vec::new(),
            tcp_relay: true,
            max_tcp_connections: 64,
        }
    }
}
