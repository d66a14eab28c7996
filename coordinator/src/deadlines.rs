//! Deadlines that no coordinator's or agent's clock can move.
//!
//! A sandbox's timeout and a batch's deadline are stored as durations, and each is enforced by
//! one clock: etcd's lease timer. While a sandbox (or batch) has time left, its
//! `deadlines/{tenant}/{id}` key exists on a lease whose TTL is the time left; etcd deletes the
//! key when the lease runs out, every coordinator's watch sees the deletion, and the leader ends
//! the sandbox `EXPIRED` (or cancels the batch). No wall-clock time is compared anywhere, so a
//! coordinator 90 s ahead or behind neither fires a deadline early nor keeps it from firing.
//!
//! Leases are shared: every deadline that falls due within the same second (on this
//! coordinator's monotonic clock, which only measures the time left) attaches to one lease, so a
//! burst of sandboxes with the default timeout costs one lease grant per second, not one per
//! sandbox. A deadline therefore fires up to about a second late (plus etcd's lease check and the
//! leader's sweep tick), never early. etcd renews leases to their full TTL when its own leader
//! changes (its documented behaviour), which can postpone a deadline, never advance it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::store::{LeaseId, StateStore, StoreError, StoreResult};
use tokio::time::Instant;

use crate::error::{ApiError, ApiResult};

/// Grants and shares the leases deadline keys sit on.
pub struct DeadlineLeases {
    store: Arc<dyn StateStore>,
    /// Leases by the whole second (since `base`) in which they expire.
    by_second: Mutex<BTreeMap<u64, LeaseId>>,
    base: Instant,
}

impl DeadlineLeases {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store, by_second: Mutex::new(BTreeMap::new()), base: Instant::now() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, LeaseId>> {
        self.by_second.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease that expires at the earliest `after` from now and at most about a second later.
    pub async fn lease_for(&self, after: Duration) -> StoreResult<LeaseId> {
        let now = Instant::now();
        let second = (now + after).duration_since(self.base).as_millis().div_ceil(1000) as u64;
        let current = now.duration_since(self.base).as_secs();
        {
            let mut leases = self.lock();
            // Leases of past seconds have expired (or are about to): never hand them out again.
            leases.retain(|s, _| *s > current + 1);
            if let Some(lease) = leases.get(&second) {
                return Ok(*lease);
            }
        }
        let ttl = (self.base + Duration::from_secs(second)).saturating_duration_since(now);
        let lease = self.store.grant_lease(ttl.max(Duration::from_secs(1))).await?;
        // A concurrent grant for the same second may have won; either lease is right.
        Ok(*self.lock().entry(second).or_insert(lease))
    }

    /// Stops handing out `lease` (the store no longer knows it).
    pub fn forget(&self, lease: LeaseId) {
        self.lock().retain(|_, l| *l != lease);
    }
}

impl DeadlineLeases {
    /// A lease for a deadline `after` from now; 0 for none (`after` zero).
    pub async fn lease_after(&self, after: Duration) -> ApiResult<LeaseId> {
        if after.is_zero() {
            return Ok(0);
        }
        Ok(self.lease_for(after).await?)
    }

    /// Passes `result` on; a lease the store no longer knows is not handed out again (the
    /// caller's retry, or the reconciler's, gets a fresh one).
    pub fn forget_lost<T>(&self, result: ApiResult<T>) -> ApiResult<T> {
        if let Err(ApiError::Store(StoreError::LeaseNotFound(lease))) = &result {
            self.forget(*lease);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use corral_core::store::mem::MemStore;

    use super::*;

    #[tokio::test]
    async fn deadlines_due_in_the_same_second_share_a_lease() {
        let leases = DeadlineLeases::new(Arc::new(MemStore::new()));
        let a = leases.lease_for(Duration::from_secs(30)).await.unwrap();
        let b = leases.lease_for(Duration::from_millis(30_000)).await.unwrap();
        let c = leases.lease_for(Duration::from_secs(90)).await.unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        leases.forget(a);
        assert_ne!(leases.lease_for(Duration::from_secs(30)).await.unwrap(), a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_key_disappears_when_its_time_is_up_and_not_before() {
        let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
        let leases = DeadlineLeases::new(store.clone());
        let lease = leases.lease_for(Duration::from_millis(1200)).await.unwrap();
        let txn = corral_core::store::Txn::new().put_with_lease("k", b"x".to_vec(), lease);
        store.txn(txn).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1150)).await;
        assert!(store.get("k").await.unwrap().is_some(), "expired early");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(store.get("k").await.unwrap().is_none(), "never expired");
    }
}
