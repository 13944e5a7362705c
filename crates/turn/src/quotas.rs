//! Allocation quotas shared by every worker of a server: in total (508 when reached) and per
//! user (486) (RFC 8656 §7.2).

use std::collections::HashMap;
use std::sync::Mutex;

/// Allocation counts shared by the workers. Taken on Allocate and released when an allocation
/// ends: the control path only, never per relayed packet.
#[derive(Debug)]
pub struct Quotas {
    max_total: u32,
    max_per_user: u32,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
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
            max_total,
            max_per_user,
            counts: Mutex::new(Counts::default()),
        }
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

    pub(crate) fn acquire(&self, user: &str) -> Result<(), QuotaExceeded> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(QuotaExceeded::Total);
        }
        let held = counts.per_user.get(user).copied().unwrap_or(0);
        if held >= self.max_per_user {
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
    }
}
