//! One allocation: its relayed address, permissions, channels and bandwidth budget
//! (RFC 8656 §2.2, §9, §12).

use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_wire::{ChannelNumber, ErrorCode, TransactionId};

use crate::FiveTuple;
use crate::tcp::TcpRelay;

/// Permissions last 300 s from their last refresh (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel bindings last 600 s from their last refresh (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a channel binding expires its number and peer stay reserved for 300 s, so that late
/// packets are not delivered to a new binding (RFC 8656 §12).
pub(crate) const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
/// An Allocate retransmitted within 40 s gets the original success response (RFC 8656 §7.2).
pub(crate) const ALLOCATE_RETRANSMIT_WINDOW: Duration = Duration::from_secs(40);

#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub(crate) number: ChannelNumber,
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
}

/// What the success response to the creating Allocate said, to answer a retransmission
/// identically.
#[derive(Clone, Debug)]
pub(crate) struct Creation {
    pub(crate) transaction_id: TransactionId,
    pub(crate) at: Instant,
    pub(crate) lifetime: u32,
    pub(crate) reservation_token: Option<[u8; 8]>,
    /// Why the IPv6 half of a dual allocation was not granted (ADDRESS-ERROR-CODE).
    pub(crate) additional_family_error: Option<ErrorCode>,
}

/// One relay socket of an allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relayed {
    /// Where the socket is bound.
    pub(crate) local: SocketAddr,
    /// What XOR-RELAYED-ADDRESS says: the same port on the advertised IP.
    pub(crate) advertised: SocketAddr,
}

#[derive(Clone, Debug)]
pub(crate) struct Allocation {
    pub(crate) five_tuple: FiveTuple,
    /// The relay socket the allocation was made for: the IPv4 one of a dual allocation. Events
    /// name it.
    pub(crate) relay: Relayed,
    /// The IPv6 relay socket of a dual allocation (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY).
    pub(crate) second: Option<Relayed>,
    pub(crate) username: Box<str>,
    pub(crate) expires: Instant,
    pub(crate) creation: Creation,
    pub(crate) permissions: Vec<(IpAddr, Instant)>,
    pub(crate) channels: Vec<Channel>,
    pub(crate) dont_fragment: bool,
    pub(crate) bandwidth: TokenBucket,
    /// Set for a TCP allocation (RFC 6062), whose relay is a listening socket: its
    /// connections to peers. Such an allocation has no channels and relays no datagram.
    pub(crate) tcp: Option<TcpRelay>,
}

impl Allocation {
    /// The relay socket that sends to and receives from `peer`: the one of its family, if the
    /// allocation has one. A second relay is always of the other family than the first.
    #[inline]
    pub(crate) fn relay_for(&self, peer: SocketAddr) -> Option<SocketAddr> {
        if self.relay.local.is_ipv4() == peer.is_ipv4() {
            Some(self.relay.local)
        } else {
            self.second.map(|second| second.local)
        }
    }

    /// Every relay socket of the allocation, the first first.
    pub(crate) fn relays(&self) -> impl Iterator<Item = Relayed> + use<> {
        core::iter::once(self.relay).chain(self.second)
    }

    /// Whether `peer`'s IP has a live permission: permissions match the IP only, any port
    /// (RFC 8656 §9).
    pub(crate) fn permits(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|&(ip, expires)| ip == peer && expires > now)
    }

    /// Installs or refreshes a permission; false when the table is full.
    pub(crate) fn permit(&mut self, peer: IpAddr, now: Instant, max: usize) -> bool {
        let expires = now + PERMISSION_LIFETIME;
        if let Some(entry) = self.permissions.iter_mut().find(|(ip, _)| *ip == peer) {
            entry.1 = expires;
            return true;
        }
        if self.permissions.len() >= max {
            return false;
        }
        self.permissions.push((peer, expires));
        true
    }

    /// Whether a new permission for `peer` would fit.
    pub(crate) fn has_room_for_permission(&self, peer: IpAddr, max: usize) -> bool {
        self.permissions.len() < max || self.permissions.iter().any(|(ip, _)| *ip == peer)
    }

    /// The live channel bound to `number`.
    pub(crate) fn channel(&self, number: ChannelNumber, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
    }

    /// The live channel bound to `peer`.
    pub(crate) fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
    }

    /// Drops expired permissions and channels past their quarantine.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|&(_, expires)| expires > now);
        self.channels
            .retain(|c| c.expires + CHANNEL_QUARANTINE > now);
    }
}

/// A byte budget refilled continuously: `rate` bytes per second, bursts up to one second's
/// worth. A rate of 0 means unlimited.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: u64,
    tokens: u64,
    updated: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate,
            updated: now,
        }
    }

    /// Spends `bytes`; false (and nothing spent) when the budget does not cover them.
    pub(crate) fn spend(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.updated);
        let refill = (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.rate);
            self.updated = now;
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_its_rate_and_refills() {
        let start = Instant::now();
        let mut b = TokenBucket::new(1000, start);
        assert!(b.spend(600, start));
        assert!(!b.spend(600, start), "only 400 left");
        assert!(b.spend(400, start));
        assert!(!b.spend(1, start));
        assert!(b.spend(500, start + Duration::from_millis(500)));
        assert!(
            !b.spend(2000, start + Duration::from_secs(10)),
            "bursts cap at one second"
        );
        let mut unlimited = TokenBucket::new(0, start);
        assert!(unlimited.spend(usize::MAX, start));
    }
}
