//! Byte quotas: how many plaintext bytes a grant has moved, counted as they
//! move.
//!
//! The store counts transfers when one opens and adds a transfer's bytes when
//! it closes; while transfers stream, this process holds one counter per
//! grant, seeded from the store, that every concurrent transfer under the
//! grant takes from atomically. The transfer that reaches the limit gets
//! exactly the bytes up to it, and no transfer gets more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::id::GrantId;

#[derive(Default)]
pub struct ByteQuotas {
    used: Mutex<HashMap<GrantId, Arc<AtomicU64>>>,
}

impl ByteQuotas {
    /// The grant's counter; created with `used_in_store` if this process has
    /// none yet (one it has is ahead of the store, so it is kept).
    pub fn counter(&self, grant: GrantId, used_in_store: u64) -> Arc<AtomicU64> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        used.entry(grant)
            .or_insert_with(|| Arc::new(AtomicU64::new(used_in_store)))
            .clone()
    }

    /// Drops the counter of a grant that has ended.
    pub fn forget(&self, grant: GrantId) {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        used.remove(&grant);
    }
}

/// Takes up to `n` bytes from `used` under `max` (`None`: no limit); returns
/// how many were granted.
pub fn take(used: &AtomicU64, max: Option<u64>, n: u64) -> u64 {
    let Some(max) = max else {
        used.fetch_add(n, Ordering::Relaxed);
        return n;
    };
    match used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
        (u < max).then(|| u.saturating_add(n).min(max))
    }) {
        Ok(before) => before.saturating_add(n).min(max) - before,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transfer_that_reaches_the_limit_gets_exactly_up_to_it() {
        let used = AtomicU64::new(90);
        assert_eq!(take(&used, Some(100), 4), 4);
        assert_eq!(take(&used, Some(100), 64), 6);
        assert_eq!(take(&used, Some(100), 64), 0);
        assert_eq!(used.load(Ordering::Relaxed), 100);
        assert_eq!(take(&AtomicU64::new(0), None, 7), 7);
    }

    #[test]
    fn concurrent_transfers_never_exceed_the_limit() {
        let used = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let used = used.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| take(&used, Some(100_000), 37))
                        .sum::<u64>()
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100_000);
    }

    #[test]
    fn a_counter_ahead_of_the_store_is_kept() {
        let quotas = ByteQuotas::default();
        let grant = GrantId::new();
        quotas.counter(grant, 10).fetch_add(5, Ordering::Relaxed);
        assert_eq!(quotas.counter(grant, 10).load(Ordering::Relaxed), 15);
        quotas.forget(grant);
        assert_eq!(quotas.counter(grant, 10).load(Ordering::Relaxed), 10);
    }
}
