//! Counting semaphores in the state store, for concurrency caps per tenant and per node.
//!
//! A permit is the key `sem/{scope}/{holder}` on its holder's lease, so a crashed holder's permits
//! vanish with its lease. Every acquire and release also rewrites the guard key `sem/{scope}`;
//! an acquire reads the guard, then counts the permits, then writes its permit in a transaction
//! that requires the guard unchanged (the guard's value is only the last holder to change it). Two acquires racing for the last permit therefore cannot
//! both succeed (the second one's guard compare fails and it counts again), and a permit that
//! expired meanwhile only makes the count it acted on too high, never too low: the cap holds.

use corral_core::keys::{SemGuardKey, SemPermitKey, SemPermitsPrefix, SemScope};
use corral_core::store::{LeaseId, StateStore, StoreError, StoreResult, Txn};

/// How often an acquire re-counts after losing a race before reporting a conflict.
const ATTEMPTS: usize = 32;

/// The outcome of [`try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The holder has a permit (now, or already had one).
    Granted,
    /// All `held` permits are taken; nothing was written.
    Full { held: usize },
}

/// Takes a permit of `scope` for `holder` (on `lease`) if fewer than `limit` are held.
/// Idempotent: a holder that already has a permit is granted again without a second one.
pub async fn try_acquire(
    store: &dyn StateStore,
    scope: &SemScope,
    holder: &str,
    limit: usize,
    lease: LeaseId,
) -> StoreResult<Acquired> {
    let guard = SemGuardKey(scope);
    let permit = SemPermitKey { scope, holder };
    for _ in 0..ATTEMPTS {
        let guard_revision = store.get(&guard.to_string()).await?.map_or(0, |kv| kv.mod_revision);
        let page = store.range(&SemPermitsPrefix(scope).to_string(), None, limit + 1).await?;
        let permit_key = permit.to_string();
        // The page holds every permit unless the cap was lowered; only then look the holder up.
        let mine =
            page.kvs.iter().any(|kv| kv.key == permit_key) || (page.more && store.get(&permit_key).await?.is_some());
        if mine {
            return Ok(Acquired::Granted);
        }
        let held = page.kvs.len();
        if held >= limit {
            return Ok(Acquired::Full { held });
        }
        let txn = Txn::new()
            .when(&guard, guard_revision)
            .when(&permit, 0)
            .put(&guard, holder.as_bytes().to_vec())
            .put_with_lease(&permit, holder.as_bytes().to_vec(), lease);
        if store.txn(txn).await?.succeeded {
            return Ok(Acquired::Granted);
        }
    }
    Err(StoreError::Unavailable(format!("semaphore {scope}: too much contention to take a permit")))
}

/// Gives `holder`'s permit of `scope` back (nothing happens if it holds none).
pub async fn release(store: &dyn StateStore, scope: &SemScope, holder: &str) -> StoreResult<()> {
    // Rewriting the guard makes acquires that counted this permit count again.
    let txn = Txn::new().delete(SemPermitKey { scope, holder }).put(SemGuardKey(scope), holder.as_bytes().to_vec());
    store.txn(txn).await.map(|_| ())
}

/// How many permits of `scope` are held now.
pub async fn held(store: &dyn StateStore, scope: &SemScope) -> StoreResult<usize> {
    Ok(store.range(&SemPermitsPrefix(scope).to_string(), None, 0).await?.kvs.len())
}
