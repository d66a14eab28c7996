//! Leader election through the state store. One coordinator at a time holds the `leader` key on
//! its lease and runs the reconciler's sweeps (LOST, EXPIRED, stuck creates); every replica serves
//! the API and applies the agent replies addressed to it.
//!
//! Leadership shares the work; it is not a lock (etcd's own locks cannot guarantee mutual
//! exclusion): every write a leader makes is a CAS on the record's revision, so a deposed leader
//! that sweeps once more cannot corrupt anything. A leader that could not renew its lease for half
//! the TTL stops leading on its own, before the lease can expire and another be elected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::keys::LeaderKey;
use corral_core::store::{self, LeaseId, StateStore, StoreError, Txn};
use corral_core::time::now_ms;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What the `leader` key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// This coordinator's random identity.
    pub coordinator: String,
    /// Its API address.
    pub endpoint: String,
    pub since_ms: i64,
}

#[derive(Default)]
struct State {
    /// The lease and the time of its last successful renewal, while leading.
    leading: Option<(LeaseId, Instant)>,
    /// The leader key's revision while leading: writes that only the leader may make compare it.
    revision: i64,
}

/// Whether this coordinator leads now; cheap to ask.
#[derive(Clone)]
pub struct Leadership {
    ttl: Duration,
    state: Arc<Mutex<State>>,
}

impl Leadership {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, state: Arc::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while this coordinator holds the key and renewed its lease within half the TTL.
    pub fn is_leader(&self) -> bool {
        self.state().leading.is_some_and(|(_, renewed)| renewed.elapsed() < self.ttl / 2)
    }

    /// The leader key's revision while this coordinator leads; a transaction that requires the
    /// key at this revision fails once another coordinator has taken over.
    pub fn fence(&self) -> Option<i64> {
        self.is_leader().then(|| self.state().revision)
    }

    /// The lease held while leading (to give it up at shutdown).
    pub fn lease(&self) -> Option<LeaseId> {
        self.state().leading.map(|(lease, _)| lease)
    }

    /// Campaigns until the task is dropped: waits while someone else leads, takes the key when it
    /// is free, and keeps it by renewing the lease every third of the TTL.
    pub async fn campaign(self, store: Arc<dyn StateStore>, me: LeaderRecord) -> Result<(), StoreError> {
        let poll = (self.ttl / 10).max(Duration::from_millis(100));
        loop {
            match store.get(&LeaderKey.to_string()).await {
                Ok(Some(_)) => {
                    tokio::time::sleep(poll).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read the leader key; retrying");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            }
            match self.try_take(store.as_ref(), &me).await {
                Ok(Some(lease)) => self.lead(store.as_ref(), lease).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: campaign failed; retrying"),
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Takes the key if nobody holds it; `Some(lease)` when this coordinator now leads.
    async fn try_take(&self, store: &dyn StateStore, me: &LeaderRecord) -> Result<Option<LeaseId>, StoreError> {
        let lease = store.grant_lease(self.ttl).await?;
        let record = LeaderRecord { since_ms: now_ms(), ..me.clone() };
        let txn = Txn::new().when(&LeaderKey, 0).put_with_lease(&LeaderKey, store::encode(&record), lease);
        match store.txn(txn).await {
            Ok(out) if out.succeeded => {
                self.state().revision = out.revision;
                Ok(Some(lease))
            }
            other => {
                let _ = store.revoke_lease(lease).await;
                other.map(|_| None)
            }
        }
    }

    /// Leads until the lease is lost or cannot be renewed for half the TTL.
    async fn lead(&self, store: &dyn StateStore, lease: LeaseId) {
        self.state().leading = Some((lease, Instant::now()));
        tracing::info!(lease = format!("{lease:x}"), "became the leader: running the reconciler");
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            match store.keep_alive(lease).await {
                Ok(()) => {
                    renewed = Instant::now();
                    self.state().leading = Some((lease, renewed));
                }
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::error!("leader lease expired; no longer the leader");
                    break;
                }
                Err(e) if renewed.elapsed() + self.ttl / 3 >= self.ttl / 2 => {
                    tracing::error!(error = %e, "cannot renew the leader lease; stepping down");
                    let _ = store.revoke_lease(lease).await;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "leader lease renewal failed; retrying"),
            }
        }
        self.state().leading = None;
    }
}

#[cfg(test)]
mod tests {
    use corral_core::store::mem::MemStore;

    use super::*;

    fn me(name: &str) -> LeaderRecord {
        LeaderRecord { coordinator: name.into(), endpoint: format!("{name}:1"), since_ms: 0 }
    }

    async fn leader_of(store: &dyn StateStore) -> Option<String> {
        let kv = store.get(&LeaderKey.to_string()).await.unwrap()?;
        Some(store::decode::<LeaderRecord>(&kv).unwrap().coordinator)
    }

    #[tokio::test]
    async fn one_leader_at_a_time_and_a_standby_takes_over() {
        let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
        let ttl = Duration::from_secs(1);
        let (a, b) = (Leadership::new(ttl), Leadership::new(ttl));
        let task_a = corral_core::task::OwnedTask::spawn("test.a", a.clone().campaign(store.clone(), me("a")));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !a.is_leader() {
            assert!(Instant::now() < deadline, "a never led");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _task_b = corral_core::task::OwnedTask::spawn("test.b", b.clone().campaign(store.clone(), me("b")));
        // b waits while a renews its lease.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(a.is_leader() && !b.is_leader(), "exactly one leader");
            assert_eq!(leader_of(store.as_ref()).await.as_deref(), Some("a"));
        }
        // a dies without giving up its lease: b leads once the lease has expired.
        drop(task_a);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.is_leader() {
            assert!(Instant::now() < deadline, "b never took over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(leader_of(store.as_ref()).await.as_deref(), Some("b"));
    }
}
