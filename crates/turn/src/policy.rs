//! Which peers a relay may send to: the peer address policy.
//!
//! A TURN server is an open proxy with a password, so by default it refuses every peer that is
//! not a public unicast address, and the server's own addresses outside its relay port range.
//! Addresses are canonicalised first: an IPv6 address that embeds an IPv4 one (mapped,
//! compatible, NAT64, 6to4, Teredo) is judged by the IPv4 address too, so that
//! `::ffff:127.0.0.1` or `64:ff9b::a9fe:a9fe` cannot reach what `127.0.0.1` or `169.254.169.254`
//! could not (coturn CVE-2020-26262, CVE-2026-27624).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::ops::RangeInclusive;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a peer was refused. Small and closed, so that it can label a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenyReason {
    /// 0.0.0.0/8 or `::`.
    Unspecified,
    /// 127.0.0.0/8 or `::1`.
    Loopback,
    /// RFC 1918 and unique-local IPv6 (10/8, 172.16/12, 192.168/16, fc00::/7).
    Private,
    /// Shared address space for carrier-grade NAT, 100.64.0.0/10.
    CarrierGradeNat,
    /// Link-local, 169.254.0.0/16 (where cloud metadata lives) and fe80::/10, fec0::/10.
    LinkLocal,
    /// Multicast and broadcast: 224.0.0.0/4, 255.255.255.255, ff00::/8.
    Multicast,
    /// Reserved or special-purpose: 192.0.0.0/24, 198.18.0.0/15 (benchmarking), 240.0.0.0/4.
    Reserved,
    /// One of the server's own addresses, on a port outside the relay range: a listener, the
    /// metrics endpoint or any other local service.
    ServerAddress,
    /// Matched an operator's deny entry.
    DenyList,
}

impl DenyReason {
    /// A short lowercase name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyReason::Unspecified => "unspecified",
            DenyReason::Loopback => "loopback",
            DenyReason::Private => "private",
            DenyReason::CarrierGradeNat => "cgnat",
            DenyReason::LinkLocal => "link_local",
            DenyReason::Multicast => "multicast",
            DenyReason::Reserved => "reserved",
            DenyReason::ServerAddress => "server_address",
            DenyReason::DenyList => "deny_list",
        }
    }

    /// Every reason, for metrics that list all label values up front.
    pub const ALL: [DenyReason; 9] = [
        DenyReason::Unspecified,
        DenyReason::Loopback,
        DenyReason::Private,
        DenyReason::CarrierGradeNat,
        DenyReason::LinkLocal,
        DenyReason::Multicast,
        DenyReason::Reserved,
        DenyReason::ServerAddress,
        DenyReason::DenyList,
    ];
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The peer address policy.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    /// Networks allowed even though the default ranges deny them (for example 127.0.0.0/8 in a
    /// lab). An allowed address is also exempt from the server-address rule.
    pub allow: Vec<IpNet>,
    /// Networks always denied, even when the allow list matches too.
    pub deny: Vec<IpNet>,
    /// The server's own addresses: listeners, relay addresses, every local interface address.
    pub server_addresses: Vec<IpAddr>,
    /// The relay port range: a server address inside it is another allocation's relayed
    /// address, which a peer may well be (two clients of the same server).
    pub relay_ports: RangeInclusive<u16>,
    /// The IPs relay sockets bind on and the ones advertised for them. A peer on one of
    /// these inside the relay port range is another allocation even when the IP lies in a
    /// range the defaults deny (a relay on a private or loopback address): data sent there
    /// stays inside the server and reaches only that allocation's client.
    pub relay_addresses: Vec<IpAddr>,
}

impl PeerPolicy {
    /// Decides whether `peer` may be relayed to.
    pub fn check(&self, peer: SocketAddr) -> Result<(), DenyReason> {
        let addresses = canonical(peer.ip());
        if addresses
            .iter()
            .any(|ip| self.deny.iter().any(|net| net.contains(ip)))
        {
            return Err(DenyReason::DenyList);
        }
        if addresses
            .iter()
            .all(|ip| self.allow.iter().any(|net| net.contains(ip)))
        {
            return Ok(());
        }
        // Every spelling must be a relay IP: a 6to4 or Teredo address also names a real IPv6
        // destination elsewhere.
        if self.relay_ports.contains(&peer.port())
            && addresses.iter().all(|ip| self.relay_addresses.contains(ip))
        {
            return Ok(());
        }
        for ip in addresses.iter() {
            if let Some(reason) = default_deny(*ip) {
                return Err(reason);
            }
        }
        let own = addresses
            .iter()
            .any(|ip| self.server_addresses.contains(ip));
        if own && !self.relay_ports.contains(&peer.port()) {
            return Err(DenyReason::ServerAddress);
        }
        Ok(())
    }

    /// Whether `ip`, in any spelling (mapped, compatible, NAT64, 6to4, Teredo), is one of the
    /// server's own addresses.
    pub(crate) fn is_server_address(&self, ip: IpAddr) -> bool {
        canonical(ip)
            .iter()
            .any(|ip| self.server_addresses.contains(ip))
    }
}

/// The addresses a peer address stands for. An IPv4-mapped, IPv4-compatible or NAT64 address
/// is only another spelling of an IPv4 address, so it stands for that address alone; a 6to4 or
/// Teredo address is a real IPv6 destination that also embeds IPv4 ones (a Teredo address both a
/// server and a client), so it stands for all of them. At most three.
#[derive(Clone, Copy, Debug)]
struct Canonical {
    addresses: [IpAddr; 3],
    len: usize,
}

impl Canonical {
    fn iter(&self) -> impl Iterator<Item = &IpAddr> {
        self.addresses[..self.len].iter()
    }

    fn push(&mut self, ip: IpAddr) {
        if self.len < self.addresses.len() {
            self.addresses[self.len] = ip;
            self.len += 1;
        }
    }
}

fn canonical(ip: IpAddr) -> Canonical {
    let mut out = Canonical {
        addresses: [ip; 3],
        len: 1,
    };
    let IpAddr::V6(v6) = ip else {
        return out;
    };
    let s = v6.segments();
    let low32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let spelled_v4 = if let Some(v4) = v6.to_ipv4_mapped() {
        // ::ffff:a.b.c.d
        Some(v4)
    } else if s[..6] == [0; 6] && !matches!(u32::from(low32), 0 | 1) {
        // IPv4-compatible ::a.b.c.d (deprecated, but some stacks still route it). `::` and `::1`
        // are themselves, not IPv4 addresses.
        Some(low32)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
        Some(low32)
    } else {
        None
    };
    if let Some(v4) = spelled_v4 {
        out.addresses[0] = IpAddr::V4(v4);
        return out;
    }
    if s[0] == 0x2002 {
        // 6to4 2002:AABB:CCDD::/48 (RFC 3056).
        out.push(IpAddr::V4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        )));
    } else if s[0] == 0x2001 && s[1] == 0 {
        // Teredo 2001:0::/32 (RFC 4380): the server in bits 32..64, the client obfuscated in
        // the last 32 bits.
        out.push(IpAddr::V4(Ipv4Addr::new(
            (s[2] >> 8) as u8,
            s[2] as u8,
            (s[3] >> 8) as u8,
            s[3] as u8,
        )));
        out.push(IpAddr::V4(Ipv4Addr::from(!u32::from(low32))));
    }
    out
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(a, b, c, d), prefix)
}

/// The IPv4 ranges denied by default, with their reason. The documentation ranges
/// (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) stay routable on purpose: the
/// network-namespace lab and the examples use them.
const DENIED_V4: [((Ipv4Addr, u8), DenyReason); 12] = [
    (v4(0, 0, 0, 0, 8), DenyReason::Unspecified),
    (v4(10, 0, 0, 0, 8), DenyReason::Private),
    (v4(100, 64, 0, 0, 10), DenyReason::CarrierGradeNat),
    (v4(127, 0, 0, 0, 8), DenyReason::Loopback),
    (v4(169, 254, 0, 0, 16), DenyReason::LinkLocal),
    (v4(172, 16, 0, 0, 12), DenyReason::Private),
    (v4(192, 0, 0, 0, 24), DenyReason::Reserved),
    (v4(192, 168, 0, 0, 16), DenyReason::Private),
    (v4(198, 18, 0, 0, 15), DenyReason::Reserved),
    (v4(224, 0, 0, 0, 4), DenyReason::Multicast),
    (v4(255, 255, 255, 255, 32), DenyReason::Multicast),
    (v4(240, 0, 0, 0, 4), DenyReason::Reserved),
];

const fn v6(segments: [u16; 8], prefix: u8) -> (Ipv6Addr, u8) {
    let [a, b, c, d, e, f, g, h] = segments;
    (Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// The IPv6 ranges denied by default, with their reason.
const DENIED_V6: [((Ipv6Addr, u8), DenyReason); 6] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), DenyReason::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), DenyReason::Loopback),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), DenyReason::Private),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), DenyReason::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), DenyReason::LinkLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), DenyReason::Multicast),
];

fn default_deny(ip: IpAddr) -> Option<DenyReason> {
    match ip {
        IpAddr::V4(ip) => DENIED_V4.iter().find_map(|&((net, prefix), reason)| {
            Ipv4Net::new(net, prefix)
                .is_ok_and(|n| n.contains(&ip))
                .then_some(reason)
        }),
        IpAddr::V6(ip) => DENIED_V6.iter().find_map(|&((net, prefix), reason)| {
            Ipv6Net::new(net, prefix)
                .is_ok_and(|n| n.contains(&ip))
                .then_some(reason)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PeerPolicy {
        PeerPolicy {
            allow: Vec::new(),
            deny: Vec::new(),
            server_addresses: vec!["203.0.113.1".parse().expect("literal")],
            relay_ports: 49152..=65535,
            relay_addresses: vec!["203.0.113.1".parse().expect("literal")],
        }
    }

    fn check(policy: &PeerPolicy, peer: &str) -> Result<(), DenyReason> {
        policy.check(peer.parse().expect("literal"))
    }

    #[test]
    fn every_encoding_of_a_denied_address_is_denied() {
        let p = policy();
        let cases = [
            ("0.0.0.0:80", DenyReason::Unspecified),
            ("[::]:80", DenyReason::Unspecified),
            ("127.0.0.1:80", DenyReason::Loopback),
            ("127.255.0.9:80", DenyReason::Loopback),
            ("[::1]:80", DenyReason::Loopback),
            ("[::ffff:127.0.0.1]:80", DenyReason::Loopback),
            ("[::127.0.0.1]:80", DenyReason::Loopback),
            ("[64:ff9b::7f00:1]:80", DenyReason::Loopback),
            ("[2002:7f00:1::]:80", DenyReason::Loopback),
            ("[2001:0:7f00:1::]:80", DenyReason::Loopback),
            ("169.254.169.254:80", DenyReason::LinkLocal),
            ("[::ffff:169.254.169.254]:80", DenyReason::LinkLocal),
            ("[64:ff9b::a9fe:a9fe]:80", DenyReason::LinkLocal),
            ("[fe80::1]:80", DenyReason::LinkLocal),
            ("[fec0::1]:80", DenyReason::LinkLocal),
            ("10.1.2.3:80", DenyReason::Private),
            ("172.16.0.1:80", DenyReason::Private),
            ("172.31.255.255:80", DenyReason::Private),
            ("192.168.1.1:80", DenyReason::Private),
            ("[fd00::1]:80", DenyReason::Private),
            ("100.64.0.1:80", DenyReason::CarrierGradeNat),
            ("192.0.0.8:80", DenyReason::Reserved),
            ("198.18.0.1:80", DenyReason::Reserved),
            ("240.0.0.1:80", DenyReason::Reserved),
            ("224.0.0.1:80", DenyReason::Multicast),
            ("255.255.255.255:80", DenyReason::Multicast),
            ("[ff02::1]:80", DenyReason::Multicast),
            ("203.0.113.1:3478", DenyReason::ServerAddress),
            ("203.0.113.1:9641", DenyReason::ServerAddress),
            ("[::ffff:203.0.113.1]:22", DenyReason::ServerAddress),
        ];
        for (peer, reason) in cases {
            assert_eq!(check(&p, peer), Err(reason), "{peer}");
        }
    }

    #[test]
    fn public_peers_and_other_allocations_are_allowed() {
        let p = policy();
        for peer in [
            "198.51.100.7:40000",
            "8.8.8.8:53",
            "172.32.0.1:1",
            "[2001:db8::1]:443",
            "[2606:4700::1111]:443",
            // Another allocation on this server: its relayed address, inside the relay range.
            "203.0.113.1:50000",
            "[::ffff:203.0.113.1]:49152",
        ] {
            assert_eq!(check(&p, peer), Ok(()), "{peer}");
        }
    }

    #[test]
    fn another_allocation_on_a_private_or_loopback_relay_is_allowed_but_nothing_else_there() {
        let mut p = policy();
        let relay: IpAddr = "127.0.0.1".parse().expect("literal");
        p.server_addresses.push(relay);
        p.relay_addresses = vec![relay, "10.0.0.5".parse().expect("literal")];
        for peer in [
            "127.0.0.1:49152",
            "127.0.0.1:65535",
            "[::ffff:127.0.0.1]:50000",
        ] {
            assert_eq!(check(&p, peer), Ok(()), "{peer}");
        }
        assert_eq!(check(&p, "10.0.0.5:50000"), Ok(()));
        for (peer, reason) in [
            ("127.0.0.1:3478", DenyReason::Loopback),
            ("127.0.0.1:49151", DenyReason::Loopback),
            ("127.0.0.2:50000", DenyReason::Loopback),
            ("10.0.0.6:50000", DenyReason::Private),
            ("10.0.0.5:22", DenyReason::Private),
            // 6to4 embeds the relay IP but is a real IPv6 destination elsewhere.
            ("[2002:7f00:1::]:50000", DenyReason::Loopback),
        ] {
            assert_eq!(check(&p, peer), Err(reason), "{peer}");
        }
        p.deny.push("127.0.0.0/8".parse().expect("literal"));
        assert_eq!(check(&p, "127.0.0.1:50000"), Err(DenyReason::DenyList));
    }

    #[test]
    fn allow_list_overrides_the_defaults_and_deny_list_overrides_both() {
        let mut p = policy();
        p.allow = vec!["127.0.0.0/8".parse().expect("literal")];
        assert_eq!(check(&p, "127.0.0.1:5000"), Ok(()));
        assert_eq!(check(&p, "[::ffff:127.0.0.1]:5000"), Ok(()));
        assert_eq!(check(&p, "10.0.0.1:5000"), Err(DenyReason::Private));
        p.deny = vec!["127.0.0.2/32".parse().expect("literal")];
        assert_eq!(check(&p, "127.0.0.2:5000"), Err(DenyReason::DenyList));
        assert_eq!(
            check(&p, "[64:ff9b::7f00:2]:5000"),
            Err(DenyReason::DenyList)
        );
        p.deny = vec!["198.51.100.0/24".parse().expect("literal")];
        assert_eq!(check(&p, "198.51.100.7:1"), Err(DenyReason::DenyList));
    }

    #[test]
    fn an_allowed_v6_address_must_not_smuggle_a_denied_v4_one() {
        let mut p = policy();
        p.allow = vec!["2002::/16".parse().expect("literal")];
        // Every address the peer embeds must be allowed, not just the outer one.
        assert_eq!(check(&p, "[2002:7f00:1::]:80"), Err(DenyReason::Loopback));
    }
}
