//! The `StateStore` trait: an etcd-shaped key-value store with revisions, compare-and-swap
//! transactions, leases and watches. [`etcd::EtcdStore`] talks to a real etcd; [`mem::MemStore`] is
//! the embedded implementation used by `corral dev`. Both pass the same contract suite
//! (`core/tests/store_contract.rs`).

pub mod etcd;
pub mod mem;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Serialize, de::DeserializeOwned};

/// A lease id (etcd's i64 lease id).
pub type LeaseId = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or answered with an error; callers may retry.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// The watch start revision was compacted away; re-list and watch from the current revision.
    #[error("watch revision {0} was compacted")]
    Compacted(i64),
    /// The transaction itself is malformed (etcd refuses it too): a bug in the caller.
    #[error("invalid transaction: {0}")]
    InvalidTxn(String),
    #[error("record at {key} is corrupt: {why}")]
    Corrupt { key: String, why: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last change to this key (what CAS compares against).
    pub mod_revision: i64,
    pub create_revision: i64,
    /// Lease the key is attached to, 0 if none.
    pub lease: LeaseId,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod_revision equals this value; 0 means "the key does not exist".
    ModRevision { key: String, revision: i64 },
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8>, lease: Option<LeaseId> },
    Delete { key: String },
}

/// All compares must hold for the ops to apply atomically; otherwise nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Require `key` to be at `revision` (0 = absent).
    pub fn when(mut self, key: impl ToString, revision: i64) -> Self {
        self.compares.push(Compare::ModRevision { key: key.to_string(), revision });
        self
    }

    pub fn put(mut self, key: impl ToString, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put { key: key.to_string(), value, lease: None });
        self
    }

    pub fn put_with_lease(mut self, key: impl ToString, value: Vec<u8>, lease: LeaseId) -> Self {
        self.ops.push(Op::Put { key: key.to_string(), value, lease: Some(lease) });
        self
    }

    pub fn delete(mut self, key: impl ToString) -> Self {
        self.ops.push(Op::Delete { key: key.to_string() });
        self
    }

    /// Refuses what etcd refuses: a transaction that writes one key twice. Both implementations
    /// check this first, so they fail alike.
    pub fn check(&self) -> StoreResult<()> {
        let mut seen = std::collections::HashSet::new();
        for op in &self.ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            if !seen.insert(key.as_str()) {
                return Err(StoreError::InvalidTxn(format!("key {key} is written twice")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// False when a compare failed (nothing was written).
    pub succeeded: bool,
    /// The store revision after the transaction (the new mod_revision of every written key).
    pub revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: String,
    /// The new value (empty for deletes).
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePage {
    /// Keys in ascending order.
    pub kvs: Vec<KeyValue>,
    /// True when more keys match after the last one returned.
    pub more: bool,
    /// The store revision the page was read at.
    pub revision: i64,
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Reads keys starting with `prefix`, in key order, strictly after `start_after` when given,
    /// at most `limit` of them (`limit` 0 = no limit).
    async fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> StoreResult<RangePage>;

    /// Applies `txn` atomically if all its compares hold.
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome>;

    /// Creates a lease that expires `ttl` after its last keep-alive; keys attached to it are
    /// deleted on expiry (each deletion is seen by watches).
    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId>;

    /// Renews a lease; `LeaseNotFound` once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()>;

    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()>;

    /// Streams every change to keys starting with `prefix` at revisions >= `from_revision`
    /// (0 = from now on), in revision order.
    async fn watch(&self, prefix: &str, from_revision: i64)
    -> StoreResult<BoxStream<'static, StoreResult<WatchEvent>>>;
}

/// Serialises a record as versioned JSON (readable with `etcdctl get`).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialise")
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> StoreResult<T> {
    serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt { key: kv.key.clone(), why: e.to_string() })
}
