//! The addresses to bind host candidates on: every address of every interface that is up,
//! less the ones that cannot reach another host.

use std::io;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

/// Whether an interface address makes a useful host candidate: not unspecified, multicast or
/// IPv6 link-local (which needs a scope a candidate line cannot carry), and not loopback
/// unless `loopback`.
pub fn usable(ip: IpAddr, loopback: bool) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if ip.is_loopback() {
        return loopback;
    }
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// Every usable address of the interfaces that are up, each once, in the system's order.
pub fn interface_addresses(loopback: bool) -> io::Result<Vec<IpAddr>> {
    let mut found = Vec::new();
    for interface in getifaddrs().map_err(io::Error::from)? {
        if !interface.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if usable(ip, loopback) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_link_local_and_unspecified_addresses_are_skipped() {
        assert!(usable(ip("192.0.2.1"), false));
        assert!(usable(ip("2001:db8::1"), false));
        assert!(!usable(ip("127.0.0.1"), false));
        assert!(usable(ip("127.0.0.1"), true));
        assert!(!usable(ip("::1"), false));
        assert!(usable(ip("::1"), true));
        assert!(!usable(ip("fe80::1"), true));
        assert!(!usable(ip("febf::1"), true));
        assert!(usable(ip("fec0::1"), true));
        assert!(!usable(ip("0.0.0.0"), true));
        assert!(!usable(ip("::"), true));
        assert!(!usable(ip("224.0.0.1"), true));
    }

    #[test]
    fn loopback_is_listed_only_when_asked_for() {
        let with = interface_addresses(true).unwrap();
        let without = interface_addresses(false).unwrap();
        assert!(with.iter().any(IpAddr::is_loopback), "{with:?}");
        assert!(!without.iter().any(IpAddr::is_loopback), "{without:?}");
    }
}
