//! A NAT traversal test lab.
//!
//! - [`nat`]: an in-process model of a NAT (RFC 4787 mapping and filtering behaviour, port
//!   preservation, hairpinning, mapping lifetime) on a virtual clock.
//! - [`sim`]: a deterministic simulated network, seeded, on a virtual clock, that carries
//!   datagrams between sans-IO hosts (ICE agents, the STUN and TURN cores) through NAT models.
//! - [`scenario`]: two ICE agents behind NATs with the STUN/TURN core between them, the
//!   scenario of the NAT matrix, and the matrix's table.
//! - [`lab`]: real NATs in Linux network namespaces, built with `ip` and `nft`, for running the
//!   real binaries behind them.
//!
//! The same four NAT types ([`NatType`]) are used by the model and by the namespace lab, so
//! that one scenario runs in both.

pub mod lab;
pub mod nat;
pub mod scenario;
pub mod sim;

use core::fmt;

/// How a NAT chooses the external address and port for an internal endpoint
/// (RFC 4787 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One external port per internal address and port, whatever the destination.
    EndpointIndependent,
    /// A new external port for each destination IP address.
    AddressDependent,
    /// A new external port for each destination IP address and port.
    AddressAndPortDependent,
}

/// Which inbound packets a NAT lets through to a mapping (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// From any address and port.
    EndpointIndependent,
    /// Only from IP addresses the internal endpoint has sent to.
    AddressDependent,
    /// Only from the exact addresses and ports the internal endpoint has sent to.
    AddressAndPortDependent,
}

/// The four NAT types of the lab, by their common names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatType {
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (plain Linux
    /// masquerading).
    PortRestricted,
    /// Address-and-port-dependent mapping and filtering, random external ports.
    Symmetric,
}

impl NatType {
    /// Every type, from the most open to the most closed.
    pub const ALL: [NatType; 4] = [
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestricted,
        NatType::Symmetric,
    ];

    /// The mapping behaviour of this type.
    pub fn mapping(self) -> Mapping {
        match self {
            NatType::Symmetric => Mapping::AddressAndPortDependent,
            _ => Mapping::EndpointIndependent,
        }
    }

    /// The filtering behaviour of this type.
    pub fn filtering(self) -> Filtering {
        match self {
            NatType::FullCone => Filtering::EndpointIndependent,
            NatType::RestrictedCone => Filtering::AddressDependent,
            NatType::PortRestricted | NatType::Symmetric => Filtering::AddressAndPortDependent,
        }
    }

    /// The type's name in tables and test output.
    pub fn name(self) -> &'static str {
        match self {
            NatType::FullCone => "full-cone",
            NatType::RestrictedCone => "restricted-cone",
            NatType::PortRestricted => "port-restricted",
            NatType::Symmetric => "symmetric",
        }
    }

    /// Whether two peers behind these NATs can reach each other directly by hole punching
    /// (RFC 4787 §4 and §5): only when one side's mapping is address-and-port dependent and
    /// the other's filtering is address-and-port dependent too does every punch miss, since
    /// the symmetric side's new port for the peer is one the other side never learned.
    pub fn direct_possible(a: NatType, b: NatType) -> bool {
        let blocked = |x: NatType, y: NatType| {
            x.mapping() == Mapping::AddressAndPortDependent
                && y.filtering() == Filtering::AddressAndPortDependent
        };
        !blocked(a, b) && !blocked(b, a)
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
