//! The data behind [`super::MemStore`]: keys, leases, the bounded event history and the watchers.
//! Everything here runs under the store's one mutex and never awaits.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::store::{
    Compare, EventKind, KeyValue, LeaseId, Op, RangePage, StoreError, StoreResult, Txn, TxnOutcome, WatchEvent,
};

/// Events kept for watches that start at a past revision.
pub const HISTORY_MAX_EVENTS: usize = 100_000;
/// Bytes of keys and values kept in the history, whichever bound is hit first.
pub const HISTORY_MAX_BYTES: usize = 64 * 1024 * 1024;

pub(super) type WatchSender = UnboundedSender<StoreResult<WatchEvent>>;

struct Entry {
    value: Vec<u8>,
    mod_revision: i64,
    create_revision: i64,
    lease: LeaseId,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

struct Watcher {
    prefix: String,
    /// Events below this revision are not sent (a watch may start at a future revision).
    from_revision: i64,
    tx: WatchSender,
}

pub(super) struct State {
    revision: i64,
    kvs: BTreeMap<String, Entry>,
    leases: HashMap<LeaseId, Lease>,
    deadlines: BTreeSet<(Instant, LeaseId)>,
    next_lease: LeaseId,
    history: VecDeque<WatchEvent>,
    history_bytes: usize,
    /// The oldest revision whose events are all still in `history`.
    history_floor: i64,
    watchers: Vec<Watcher>,
}

impl State {
    pub(super) fn new() -> Self {
        Self {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_lease: 0x636f_7272_0000_0001,
            history: VecDeque::new(),
            history_bytes: 0,
            history_floor: 1,
            watchers: Vec::new(),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get_key_value(key).map(|(k, e)| to_kv(k, e))
    }

    pub(super) fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> RangePage {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut iter = self.kvs.range::<str, _>((lower, Bound::Unbounded)).take_while(|(k, _)| k.starts_with(prefix));
        let mut kvs = Vec::new();
        let mut more = false;
        for (k, e) in iter.by_ref() {
            if limit != 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(to_kv(k, e));
        }
        RangePage { kvs, more, revision: self.revision }
    }

    pub(super) fn txn(&mut self, txn: Txn, now: Instant) -> StoreResult<TxnOutcome> {
        txn.check()?;
        self.expire_due(now);
        let holds = txn.compares.iter().all(|Compare::ModRevision { key, revision }| {
            self.kvs.get(key.as_str()).map_or(0, |e| e.mod_revision) == *revision
        });
        if !holds {
            return Ok(TxnOutcome { succeeded: false, revision: self.revision });
        }
        for op in &txn.ops {
            if let Op::Put { lease: Some(lease), .. } = op
                && *lease != 0
                && !self.leases.contains_key(lease)
            {
                return Err(StoreError::LeaseNotFound(*lease));
            }
        }
        let rev = self.revision + 1;
        let mut changed = false;
        for op in txn.ops {
            changed |= match op {
                Op::Put { key, value, lease } => {
                    self.put(key, value, lease.unwrap_or(0), rev);
                    true
                }
                Op::Delete { key } => self.delete(&key, rev),
            };
        }
        if changed {
            self.revision = rev;
        }
        Ok(TxnOutcome { succeeded: true, revision: self.revision })
    }

    fn put(&mut self, key: String, value: Vec<u8>, lease: LeaseId, rev: i64) {
        let stored = value.clone();
        match self.kvs.get_mut(key.as_str()) {
            Some(e) => {
                let old = std::mem::replace(&mut e.lease, lease);
                e.value = stored;
                e.mod_revision = rev;
                if old != lease {
                    self.detach(old, &key);
                    self.attach(lease, &key);
                }
            }
            None => {
                self.attach(lease, &key);
                self.kvs.insert(key.clone(), Entry { value: stored, mod_revision: rev, create_revision: rev, lease });
            }
        }
        self.emit(WatchEvent { kind: EventKind::Put, key, value, mod_revision: rev });
    }

    /// Deletes `key` at `rev`; false when it did not exist.
    fn delete(&mut self, key: &str, rev: i64) -> bool {
        let Some((key, entry)) = self.kvs.remove_entry(key) else {
            return false;
        };
        self.detach(entry.lease, &key);
        self.emit(WatchEvent { kind: EventKind::Delete, key, value: Vec::new(), mod_revision: rev });
        true
    }

    fn attach(&mut self, lease: LeaseId, key: &str) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_owned());
        }
    }

    fn detach(&mut self, lease: LeaseId, key: &str) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
    }

    pub(super) fn grant_lease(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        self.expire_due(now);
        let id = self.next_lease;
        self.next_lease += 1;
        let deadline = now + ttl;
        self.leases.insert(id, Lease { ttl, deadline, keys: HashSet::new() });
        self.deadlines.insert((deadline, id));
        id
    }

    pub(super) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> StoreResult<()> {
        self.expire_due(now);
        let lease = self.leases.get_mut(&id).ok_or(StoreError::LeaseNotFound(id))?;
        self.deadlines.remove(&(lease.deadline, id));
        lease.deadline = now + lease.ttl;
        self.deadlines.insert((lease.deadline, id));
        Ok(())
    }

    pub(super) fn revoke_lease(&mut self, id: LeaseId, now: Instant) -> StoreResult<()> {
        self.expire_due(now);
        if self.end_lease(id) { Ok(()) } else { Err(StoreError::LeaseNotFound(id)) }
    }

    /// Ends every lease whose deadline has passed; returns the next deadline, if any.
    pub(super) fn expire_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                return Some(deadline);
            }
            self.end_lease(id);
        }
        None
    }

    /// Removes a lease and deletes its keys at one new revision; false when it did not exist.
    fn end_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        self.deadlines.remove(&(lease.deadline, id));
        if lease.keys.is_empty() {
            return true;
        }
        let rev = self.revision + 1;
        let mut keys: Vec<String> = lease.keys.into_iter().collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(entry) = self.kvs.remove(key.as_str()) {
                debug_assert_eq!(entry.lease, id);
                self.emit(WatchEvent { kind: EventKind::Delete, key, value: Vec::new(), mod_revision: rev });
            }
        }
        self.revision = rev;
        true
    }

    /// Registers a watcher; with `from_revision > 0` it first receives the retained history.
    pub(super) fn watch(&mut self, prefix: &str, from_revision: i64, tx: WatchSender) -> StoreResult<()> {
        let from_revision = if from_revision <= 0 { self.revision + 1 } else { from_revision };
        if from_revision < self.history_floor {
            return Err(StoreError::Compacted(from_revision));
        }
        let start = self.history.partition_point(|e| e.mod_revision < from_revision);
        for event in self.history.range(start..).filter(|e| e.key.starts_with(prefix)) {
            if tx.send(Ok(event.clone())).is_err() {
                return Ok(());
            }
        }
        self.watchers.push(Watcher { prefix: prefix.to_owned(), from_revision, tx });
        Ok(())
    }

    pub(super) fn revision(&self) -> i64 {
        self.revision
    }

    #[cfg(test)]
    pub(super) fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Sends `event` to matching watchers (dropping those whose stream is gone) and records it.
    fn emit(&mut self, event: WatchEvent) {
        self.watchers.retain(|w| {
            if event.mod_revision < w.from_revision || !event.key.starts_with(w.prefix.as_str()) {
                return !w.tx.is_closed();
            }
            w.tx.send(Ok(event.clone())).is_ok()
        });
        self.history_bytes += event.key.len() + event.value.len();
        self.history.push_back(event);
        while self.history.len() > HISTORY_MAX_EVENTS || self.history_bytes > HISTORY_MAX_BYTES {
            let Some(old) = self.history.pop_front() else { break };
            self.history_bytes -= old.key.len() + old.value.len();
            self.history_floor = self.history_floor.max(old.mod_revision + 1);
        }
    }
}

fn to_kv(key: &str, e: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: e.value.clone(),
        mod_revision: e.mod_revision,
        create_revision: e.create_revision,
        lease: e.lease,
    }
}
