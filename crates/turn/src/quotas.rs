//! What the workers of a server share: allocation quotas, in total (508 when reached) and per
//! user (486), and relay port reservations (RFC 8656 §7.2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Allocation counts and port reservations shared by the workers. Touched on Allocate and when
/// an allocation ends: the control path only, never per relayed packet.
///
/// Reservations are shared because the Allocate that redeems a RESERVATION-TOKEN comes from
/// another client port, which the kernel may hand to another worker than the one that issued
/// the token.
#[derive(Debug)]
pub struct Quotas {
    counts: Mutex<Counts>,
    reservations: Mutex<Vec<Reservation>>,
}

/// The odd port of an EVEN-PORT pair, kept for the Allocate that brings its token.
#[derive(Clone, Copy, Debug)]
struct Reservation {
    token: [u8; 8],
    addr: SocketAddr,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Counts {
    max_total: u32,
    max_per_user: u32,
    total: u32,
    per_user: HashMap<Box<str>, u32>,
}

/// Which quota refused an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QuotaExceeded {
    /// The user has as many allocations as allowed (486).
    User,
    /// The server has as many allocations as allowed (508).
    Total,
}

impl Quotas {
    /// Quotas of `max_total` allocations and `max_per_user` per user.
    pub fn new(max_total: u32, max_per_user: u32) -> Quotas {
        Quotas {
            counts: Mutex::new(Counts {
                max_total,
                max_per_user,
                ..Counts::default()
            }),
            reservations: Mutex::new(Vec::new()),
        }
    }

    /// Changes the limits (SIGHUP). Allocations already held beyond a lowered limit are kept;
    /// new ones are refused until the count falls below it.
    pub fn set_limits(&self, max_total: u32, max_per_user: u32) {
        let mut counts = self.lock();
        counts.max_total = max_total;
        counts.max_per_user = max_per_user;
    }

    /// Allocations held now, in total.
    pub fn total(&self) -> u32 {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A worker that panicked while holding the lock left counts that are still whole
        // numbers; keep serving with them.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reservations(&self) -> std::sync::MutexGuard<'_, Vec<Reservation>> {
        self.reservations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Books `addr` for the Allocate that brings `token`, until `expires`.
    pub(crate) fn reserve(&self, token: [u8; 8], addr: SocketAddr, expires: Instant) {
        self.reservations().push(Reservation {
            token,
            addr,
            expires,
        });
    }

    /// Redeems a token: the reserved address, if the token is known and not expired.
    pub(crate) fn redeem(&self, token: [u8; 8], now: Instant) -> Option<SocketAddr> {
        let mut reservations = self.reservations();
        reservations.retain(|r| r.expires > now);
        let at = reservations.iter().position(|r| r.token == token)?;
        Some(reservations.swap_remove(at).addr)
    }

    /// The addresses reserved now, which no new allocation may take.
    pub(crate) fn reserved(&self, now: Instant) -> Vec<SocketAddr> {
        let mut reservations = self.reservations();
        reservations.retain(|r| r.expires > now);
        reservations.iter().map(|r| r.addr).collect()
    }

    pub(crate) fn acquire(&self, user: &str) -> Result<(), QuotaExceeded> {
        let mut counts = self.lock();
        if counts.total >= counts.max_total {
            return Err(QuotaExceeded::Total);
        }
        let held = counts.per_user.get(user).copied().unwrap_or(0);
        if held >= counts.max_per_user {
            return Err(QuotaExceeded::User);
        }
        counts.total += 1;
        counts.per_user.insert(user.into(), held + 1);
        Ok(())
    }

    pub(crate) fn release(&self, user: &str) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.per_user.get_mut(user) {
            *held -= 1;
            if *held == 0 {
                counts.per_user.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_then_total() {
        let q = Quotas::new(3, 2);
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Err(QuotaExceeded::User));
        assert_eq!(q.acquire("b"), Ok(()));
        assert_eq!(q.acquire("c"), Err(QuotaExceeded::Total));
        q.release("a");
        assert_eq!(q.acquire("c"), Ok(()));
        assert_eq!(q.total(), 3);
        q.set_limits(4, 1);
        assert_eq!(
            q.acquire("a"),
            Err(QuotaExceeded::User),
            "alice already holds 1"
        );
        assert_eq!(q.acquire("d"), Ok(()));
        assert_eq!(q.acquire("e"), Err(QuotaExceeded::Total));
    }
}
