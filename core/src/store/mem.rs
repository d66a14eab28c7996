//! [`MemStore`]: the embedded, etcd-like [`StateStore`] used by `corral dev`.
//!
//! One mutex guards a `BTreeMap` of keys, a global revision (starting at 1 like etcd; each
//! transaction that changes something bumps it once), leases with deadlines on
//! `tokio::time::Instant` (so tests can pause time), and a bounded history of the last
//! [`HISTORY_MAX_EVENTS`] events for watches that start in the past. Watchers get an unbounded
//! channel each, so a slow watcher never blocks a writer; watchers whose stream was dropped are
//! forgotten on the next write. A named background task ends leases when their deadline passes.

mod state;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use self::state::State;
pub use self::state::{HISTORY_MAX_BYTES, HISTORY_MAX_EVENTS};
use super::{KeyValue, LeaseId, RangePage, StateStore, StoreResult, Txn, TxnOutcome, WatchEvent};
use crate::task::OwnedTask;

/// The TTL used when a lease is asked for with a zero TTL.
const MIN_LEASE_TTL: Duration = Duration::from_millis(1);

struct Shared {
    state: Mutex<State>,
    /// Woken when a lease is granted, so the expiry task can move its next deadline earlier.
    lease_granted: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock cannot leave `State` half-updated in a way later calls trip on
        // (every method restores its invariants before it can panic), so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An in-process etcd-like key-value store. Cloning is cheap and every clone shares the same
/// data; the lease-expiry task stops when the last clone is dropped.
#[derive(Clone)]
pub struct MemStore {
    shared: Arc<Shared>,
    _expiry: Arc<OwnedTask>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore").field("revision", &self.shared.lock().revision()).finish()
    }
}

impl MemStore {
    /// Creates an empty store at revision 1. Must be called inside a tokio runtime (it spawns the
    /// lease-expiry task).
    pub fn new() -> Self {
        let shared = Arc::new(Shared { state: Mutex::new(State::new()), lease_granted: Notify::new() });
        let expiry = OwnedTask::spawn("mem-store-lease-expiry", expire_leases(Arc::clone(&shared)));
        Self { shared, _expiry: Arc::new(expiry) }
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Ends leases as their deadlines pass. Never fails; aborted when the store is dropped.
async fn expire_leases(shared: Arc<Shared>) -> Result<(), Infallible> {
    loop {
        let next = shared.lock().expire_due(Instant::now());
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = shared.lease_granted.notified() => {}
                }
            }
            None => shared.lease_granted.notified().await,
        }
    }
}

#[async_trait]
impl StateStore for MemStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        Ok(self.shared.lock().get(key))
    }

    async fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> StoreResult<RangePage> {
        Ok(self.shared.lock().range(prefix, start_after, limit))
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        self.shared.lock().txn(txn, Instant::now())
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        let id = self.shared.lock().grant_lease(ttl.max(MIN_LEASE_TTL), Instant::now());
        self.shared.lease_granted.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.shared.lock().keep_alive(lease, Instant::now())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.shared.lock().revoke_lease(lease, Instant::now())
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> StoreResult<BoxStream<'static, StoreResult<WatchEvent>>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Replay and registration happen under one lock: no gap and no duplicate with live events.
        self.shared.lock().watch(prefix, from_revision, tx)?;
        Ok(UnboundedReceiverStream::new(rx).boxed())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::store::{EventKind, StoreError};

    #[tokio::test(start_paused = true)]
    async fn lease_expires_on_paused_clock_and_watch_sees_delete() {
        let store = MemStore::new();
        let lease = store.grant_lease(Duration::from_secs(10)).await.unwrap();
        store.txn(Txn::new().put_with_lease("n/1", b"x".to_vec(), lease)).await.unwrap();
        let mut watch = store.watch("n/", 0).await.unwrap();

        tokio::time::advance(Duration::from_secs(9)).await;
        store.keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(store.get("n/1").await.unwrap().is_some(), "kept alive at 9 s, so alive at 18 s");

        let event = watch.next().await.unwrap().unwrap();
        assert_eq!((event.kind, event.key.as_str()), (EventKind::Delete, "n/1"));
        assert!(store.get("n/1").await.unwrap().is_none());
        assert!(matches!(store.keep_alive(lease).await, Err(StoreError::LeaseNotFound(id)) if id == lease));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_with_an_expired_lease_fail() {
        let store = MemStore::new();
        let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let out = store.txn(Txn::new().put_with_lease("k", b"v".to_vec(), lease)).await;
        assert!(matches!(out, Err(StoreError::LeaseNotFound(_))));
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn history_bound_reports_compaction() {
        let store = MemStore::new();
        for i in 0..(HISTORY_MAX_EVENTS + 10) {
            store.txn(Txn::new().put("k", i.to_string().into_bytes())).await.unwrap();
        }
        assert!(matches!(store.watch("k", 2).await, Err(StoreError::Compacted(2))));
        let newest = store.get("k").await.unwrap().unwrap().mod_revision;
        let mut watch = store.watch("k", newest).await.unwrap();
        assert_eq!(watch.next().await.unwrap().unwrap().mod_revision, newest);
    }

    #[tokio::test]
    async fn dropped_watchers_are_forgotten() {
        let store = MemStore::new();
        drop(store.watch("", 0).await.unwrap());
        store.txn(Txn::new().put("a", Vec::new())).await.unwrap();
        assert_eq!(store.shared.lock().watcher_count(), 0);
    }

    #[tokio::test]
    async fn delete_of_absent_key_does_not_bump_revision() {
        let store = MemStore::new();
        let out = store.txn(Txn::new().delete("nope")).await.unwrap();
        assert_eq!(out, TxnOutcome { succeeded: true, revision: 1 });
    }
}
