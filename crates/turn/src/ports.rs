//! Relay ports: drawn at random from the configured range (so that relayed addresses cannot be
//! predicted), bound through the driver, and reserved for EVEN-PORT pairs (RFC 8656 §7.2).

use core::net::{IpAddr, SocketAddr};
use core::ops::RangeInclusive;
use std::time::Duration;

use rand_core::RngCore;

/// What binding a relay port needs from the driver: the one side effect the core must see the
/// outcome of before it can answer an Allocate.
///
/// UDP relays use [`bind`](RelaySockets::bind) and [`release`](RelaySockets::release); the
/// listening sockets of TCP allocations (RFC 6062) use [`bind_tcp`](RelaySockets::bind_tcp)
/// and [`release_tcp`](RelaySockets::release_tcp). The two are separate port spaces for the
/// kernel, so a driver keys its sockets by address and protocol. A driver that relays no TCP
/// keeps the default methods, which refuse every port, and sets
/// [`TurnConfig::tcp_relay`](crate::TurnConfig::tcp_relay) to false so that TCP Allocates are
/// answered 442 rather than 508.
pub trait RelaySockets {
    /// Opens a UDP relay socket on `addr`; false when the port is taken (by another program or
    /// another worker) or cannot be bound.
    fn bind(&mut self, addr: SocketAddr) -> bool;
    /// Closes the UDP relay socket on `addr`.
    fn release(&mut self, addr: SocketAddr);
    /// Opens a TCP listening socket on `addr`, the relayed address of a TCP allocation
    /// (RFC 6062 §5.1); false when the port is taken or cannot be bound. It must be bound so
    /// that connections to peers can later be opened from the same address
    /// ([`Command::Connect`](crate::Command::Connect)): `SO_REUSEADDR` on every socket of it.
    /// Connections it accepts are reported with
    /// [`TurnServer::accept_peer_connection`](crate::TurnServer::accept_peer_connection).
    fn bind_tcp(&mut self, _addr: SocketAddr) -> bool {
        false
    }
    /// Closes the TCP listening socket on `addr`. The core has already queued a
    /// [`Command::Close`](crate::Command::Close) for each connection of the allocation, which
    /// the driver drains after the call that released it.
    fn release_tcp(&mut self, _addr: SocketAddr) {}
}

/// Which kind of relay socket to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RelayProtocol {
    /// A UDP socket (RFC 8656).
    Udp,
    /// A TCP listening socket (RFC 6062).
    Tcp,
}

/// Reservations are kept for 30 s (RFC 8656 §7.2 suggests about 30 seconds).
pub(crate) const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// How many random draws before a sequential sweep of the range.
const RANDOM_TRIES: usize = 32;

/// Picks and binds a relay port of `protocol` on `ip` within `range`: random draws first, then
/// a sweep from a random start so that a nearly full range still finds its last free port. With
/// `even`, only even ports; with `pair` too, only those whose odd neighbour is free, which is
/// checked by binding and closing it: the reservation is booked, not held, so that whichever
/// worker receives its token can bind it (UDP only: RFC 6062 §5.1 refuses EVEN-PORT for TCP).
/// Returns the bound port, and the neighbour when paired.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bind_port(
    ip: IpAddr,
    range: &RangeInclusive<u16>,
    protocol: RelayProtocol,
    even: bool,
    pair: bool,
    in_use: &dyn Fn(SocketAddr) -> bool,
    rng: &mut dyn RngCore,
    sockets: &mut dyn RelaySockets,
) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let (start, end) = (u32::from(*range.start()), u32::from(*range.end()));
    if start > end {
        return None;
    }
    let span = end - start + 1;
    let try_port = |port: u32, sockets: &mut dyn RelaySockets| {
        let port = u16::try_from(port).ok()?;
        if even && port % 2 != 0 {
            return None;
        }
        let addr = SocketAddr::new(ip, port);
        if in_use(addr) {
            return None;
        }
        let neighbour = if pair {
            let next = port.checked_add(1).filter(|p| range.contains(p))?;
            let next = SocketAddr::new(ip, next);
            if in_use(next) {
                return None;
            }
            Some(next)
        } else {
            None
        };
        let bound = match protocol {
            RelayProtocol::Udp => sockets.bind(addr),
            RelayProtocol::Tcp => sockets.bind_tcp(addr),
        };
        if !bound {
            return None;
        }
        if let Some(next) = neighbour {
            if !sockets.bind(next) {
                sockets.release(addr);
                return None;
            }
            sockets.release(next);
        }
        Some((addr, neighbour))
    };
    for _ in 0..RANDOM_TRIES {
        let port = start + rng.next_u32() % span;
        if let Some(found) = try_port(port, sockets) {
            return Some(found);
        }
    }
    let offset = rng.next_u32() % span;
    (0..span).find_map(|i| try_port(start + (offset + i) % span, sockets))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[derive(Default)]
    struct Fake {
        bound: HashSet<SocketAddr>,
        refuse: HashSet<u16>,
    }

    impl RelaySockets for Fake {
        fn bind(&mut self, addr: SocketAddr) -> bool {
            !self.refuse.contains(&addr.port()) && self.bound.insert(addr)
        }
        fn release(&mut self, addr: SocketAddr) {
            self.bound.remove(&addr);
        }
    }

    const IP: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(203, 0, 113, 1));

    #[test]
    fn fills_a_small_range_then_fails() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut fake = Fake::default();
        fake.refuse.insert(50_003);
        let mut got = HashSet::new();
        for _ in 0..9 {
            let in_use = |a: SocketAddr| got.contains(&a);
            let (addr, _) = bind_port(
                IP,
                &(50_000..=50_009),
                RelayProtocol::Udp,
                false,
                false,
                &in_use,
                &mut rng,
                &mut fake,
            )
            .expect("a free port");
            got.insert(addr);
        }
        assert!(
            !got.contains(&SocketAddr::new(IP, 50_003)),
            "refused by the driver"
        );
        let in_use = |a: SocketAddr| got.contains(&a);
        assert_eq!(
            bind_port(
                IP,
                &(50_000..=50_009),
                RelayProtocol::Udp,
                false,
                false,
                &in_use,
                &mut rng,
                &mut fake
            ),
            None
        );
    }

    #[test]
    fn even_ports_and_pairs() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut fake = Fake::default();
        for _ in 0..20 {
            let bound = fake.bound.clone();
            let in_use = |a: SocketAddr| bound.contains(&a);
            let (addr, next) = bind_port(
                IP,
                &(50_000..=50_099),
                RelayProtocol::Udp,
                true,
                true,
                &in_use,
                &mut rng,
                &mut fake,
            )
            .expect("a free pair");
            assert_eq!(addr.port() % 2, 0);
            assert_eq!(next.map(|n| n.port()), Some(addr.port() + 1));
        }
        assert_eq!(fake.bound.len(), 20, "neighbours are checked, not held");
    }
}
