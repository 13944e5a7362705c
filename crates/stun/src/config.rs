//! Start-up configuration, checked once so that the request path has nothing left to check.

use alloc::string::String;
use core::net::{IpAddr, SocketAddr};

use icebreaker_wire::attr::ChangeRequest;

/// Most characters SOFTWARE may hold: "fewer than 128 characters" (RFC 8489 §14.14).
pub const MAX_SOFTWARE_CHARS: usize = 127;

/// RFC 5780: the server's second IP and second port. With primary P = (ip1, port1) and
/// alternate A = (ip2, port2) the server answers on all four of ip1:port1, ip1:port2,
/// ip2:port1, ip2:port2.
///
/// RFC 5780 §6 asks for "two separate IP addresses on the public Internet" and the same pair
/// of ports on each; a server that cannot have both must not offer behaviour discovery at
/// all, which is what leaving [`BindingConfig::rfc5780`] empty does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlternateAddress {
    /// ip1:port1, usually the address clients are configured with.
    pub primary: SocketAddr,
    /// ip2:port2: another IP of the same family and another port.
    pub alternate: SocketAddr,
}

/// What a [`BindingService`](crate::BindingService) answers with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingConfig {
    /// SOFTWARE to add to every answer (RFC 8489 §14.14), fewer than 128 characters. Default
    /// none: an answer to a stranger says no more than it must (security.md).
    pub software: Option<String>,
    /// The second IP and port for NAT behaviour discovery (RFC 5780). Default none: the
    /// RFC 5780 request attributes are then unknown and get 420.
    pub rfc5780: Option<AlternateAddress>,
}

/// Why a [`BindingConfig`] cannot make a service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The two RFC 5780 addresses are of different families.
    #[error(
        "RFC 5780 needs two addresses of one family: primary {primary} and alternate \
         {alternate} are not both IPv4 or both IPv6"
    )]
    FamilyMismatch {
        /// The primary address.
        primary: SocketAddr,
        /// The alternate address.
        alternate: SocketAddr,
    },
    /// The two RFC 5780 addresses share their IP: "change IP" could not change it.
    #[error("RFC 5780 needs two different IP addresses: primary and alternate are both {0}")]
    SameIp(IpAddr),
    /// The two RFC 5780 addresses share their port: "change port" could not change it.
    #[error("RFC 5780 needs two different ports: primary and alternate both use port {0}")]
    SamePort(u16),
    /// An RFC 5780 address is a wildcard IP or port 0. Answers name these addresses in
    /// RESPONSE-ORIGIN and OTHER-ADDRESS, and the driver must bind each exactly.
    #[error("RFC 5780 addresses must name one IP and one port, {0} does not")]
    Unspecified(SocketAddr),
    /// SOFTWARE is 128 characters or longer (RFC 8489 §14.14).
    #[error("SOFTWARE must be fewer than 128 characters, {0} given")]
    SoftwareTooLong(usize),
}

/// The four addresses of RFC 5780 §6.1, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Topology {
    primary: SocketAddr,
    alternate: SocketAddr,
}

/// Where a request arrived among the four addresses, as RFC 5780 §6.1 names it: Da is the
/// alternate IP when `alternate_ip` holds, Dp the alternate port when `alternate_port` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    alternate_ip: bool,
    alternate_port: bool,
}

impl Topology {
    pub(crate) fn new(addresses: AlternateAddress) -> Result<Topology, ConfigError> {
        let AlternateAddress { primary, alternate } = addresses;
        if primary.is_ipv4() != alternate.is_ipv4() {
            return Err(ConfigError::FamilyMismatch { primary, alternate });
        }
        for address in [primary, alternate] {
            if address.ip().is_unspecified() || address.port() == 0 {
                return Err(ConfigError::Unspecified(address));
            }
        }
        if primary.ip() == alternate.ip() {
            return Err(ConfigError::SameIp(primary.ip()));
        }
        if primary.port() == alternate.port() {
            return Err(ConfigError::SamePort(primary.port()));
        }
        Ok(Topology { primary, alternate })
    }

    /// ip1:port1, ip1:port2, ip2:port1, ip2:port2.
    pub(crate) fn addresses(&self) -> [SocketAddr; 4] {
        [(false, false), (false, true), (true, false), (true, true)].map(
            |(alternate_ip, alternate_port)| {
                self.address(Position {
                    alternate_ip,
                    alternate_port,
                })
            },
        )
    }

    /// Which of the four addresses `local` is. IP and port only: a scope ID or flow label the
    /// driver reports does not make it another address.
    pub(crate) fn locate(&self, local: SocketAddr) -> Option<Position> {
        let alternate_ip = if local.ip() == self.primary.ip() {
            false
        } else if local.ip() == self.alternate.ip() {
            true
        } else {
            return None;
        };
        let alternate_port = if local.port() == self.primary.port() {
            false
        } else if local.port() == self.alternate.port() {
            true
        } else {
            return None;
        };
        Some(Position {
            alternate_ip,
            alternate_port,
        })
    }

    /// The source of the answer: Table 1 of RFC 5780 §6.1. "Change IP" moves Da to Ca,
    /// "change port" moves Dp to Cp.
    pub(crate) fn source(&self, at: Position, change: ChangeRequest) -> SocketAddr {
        self.address(Position {
            alternate_ip: at.alternate_ip ^ change.change_ip,
            alternate_port: at.alternate_port ^ change.change_port,
        })
    }

    /// OTHER-ADDRESS: Ca:Cp whatever the flags say (RFC 5780 §6.1, §7.4).
    pub(crate) fn other(&self, at: Position) -> SocketAddr {
        self.address(Position {
            alternate_ip: !at.alternate_ip,
            alternate_port: !at.alternate_port,
        })
    }

    fn address(&self, at: Position) -> SocketAddr {
        // Start from the configured address rather than its IP so that an IPv6 scope ID stays.
        let mut address = if at.alternate_ip {
            self.alternate
        } else {
            self.primary
        };
        address.set_port(if at.alternate_port {
            self.alternate.port()
        } else {
            self.primary.port()
        });
        address
    }
}

/// Checks SOFTWARE's length in characters, as RFC 8489 §14.14 counts it.
pub(crate) fn check_software(software: Option<&str>) -> Result<(), ConfigError> {
    match software.map(|s| s.chars().count()) {
        Some(chars) if chars > MAX_SOFTWARE_CHARS => Err(ConfigError::SoftwareTooLong(chars)),
        _ => Ok(()),
    }
}
