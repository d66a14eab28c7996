//! The coordinator's in-memory view of the cluster: registered nodes and the live sandboxes
//! placed on them. Filled from the state store (a full read, then a watch), and updated
//! immediately by this coordinator's own writes so back-to-back placements see each other.
//!
//! The same watch feeds one more index, a [`Follower`] (the jobs table, which implements it):
//! the view hands it the keys it claims and asks it what its running work reserves per node,
//! without depending on the jobs code.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use corral_core::ids::{NodeId, SandboxId, TenantId};
use corral_core::keys::{DeadlinesPrefix, NodesPrefix, SandboxesPrefix};
use corral_core::model::{NodeInfo, SandboxRecord};
use corral_core::state::SandboxState;
use corral_core::store::{self, EventKind, KeyValue, StateStore, StoreError};
use futures::StreamExt;
use tokio::time::Instant;

use crate::capacity::Resources;
use crate::scheduler::{self, Candidate, Demand};

/// What the view keeps of a live sandbox.
#[derive(Debug, Clone)]
pub struct Placed {
    pub tenant: TenantId,
    pub node: NodeId,
    pub state: SandboxState,
    pub demand: Demand,
    /// When this coordinator first saw it (its own monotonic clock: no other clock's skew
    /// matters for how long it has been waiting).
    pub seen: Instant,
    /// mod_revision of the record this entry reflects (older events are ignored); 0 while only
    /// reserved.
    pub revision: i64,
    /// The record at `revision` (None while only reserved), so updates can CAS without a read.
    pub record: Option<Arc<SandboxRecord>>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<NodeId, NodeInfo>,
    sandboxes: HashMap<SandboxId, Placed>,
    /// What the live sandboxes of each node reserve.
    allocated: HashMap<NodeId, Resources>,
    /// Sandboxes this coordinator ended before its watch caught up, with the ending revision, so a
    /// lagging watch event cannot bring them back. Pruned once the watch passes that revision.
    ended: HashMap<SandboxId, i64>,
    /// Live sandboxes whose deadline key was deleted (see `deadlines.rs`).
    deadlines_gone: HashSet<SandboxId>,
    /// Highest revision the watch delivered.
    revision: i64,
}

/// An index of other records fed by the view's watch.
pub trait Follower: Send + Sync + 'static {
    /// Prefixes (full keys) of the records it indexes, read on every (re)load.
    fn prefixes(&self) -> Vec<String>;
    /// Whether `rest` (a key without the root) is one of its records.
    fn owns(&self, rest: &str) -> bool;
    /// A put or delete of one of its records.
    fn apply(&self, kind: EventKind, rest: &str, kv: &KeyValue);
    /// The deadline key of `id` was deleted (its deadline passed).
    fn deadline_deleted(&self, id: &str);
    /// After a (re)load: the ids whose deadline key is present.
    fn deadlines_present(&self, present: &HashSet<&str>);
    /// What its running work reserves on each node (placement counts it with the sandboxes).
    fn used_by_node(&self) -> HashMap<NodeId, Resources>;
}

/// No other index: the view of nodes and sandboxes alone.
pub struct NoFollower;

impl Follower for NoFollower {
    fn prefixes(&self) -> Vec<String> {
        Vec::new()
    }
    fn owns(&self, _: &str) -> bool {
        false
    }
    fn apply(&self, _: EventKind, _: &str, _: &KeyValue) {}
    fn deadline_deleted(&self, _: &str) {}
    fn deadlines_present(&self, _: &HashSet<&str>) {}
    fn used_by_node(&self) -> HashMap<NodeId, Resources> {
        HashMap::new()
    }
}

#[derive(Clone)]
pub struct ClusterView {
    inner: Arc<Mutex<Inner>>,
    follower: Arc<dyn Follower>,
}

impl Default for ClusterView {
    fn default() -> Self {
        Self::new(Arc::new(NoFollower))
    }
}

impl ClusterView {
    /// A view that also feeds `follower`.
    pub fn new(follower: Arc<dyn Follower>) -> Self {
        Self { inner: Arc::default(), follower }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chooses a node for `demand` and reserves the resources for `id` in the same step; the
    /// node's running jobs count against it as much as its sandboxes.
    pub fn place_and_reserve(
        &self,
        id: &SandboxId,
        tenant: &TenantId,
        demand: Demand,
    ) -> Result<NodeId, scheduler::PlacementError> {
        let jobs = self.follower.used_by_node();
        let mut inner = self.lock();
        let candidates: Vec<Candidate<'_>> = inner
            .nodes
            .values()
            .map(|n| {
                let sandboxes = inner.allocated.get(&n.node_id).copied().unwrap_or_default();
                Candidate {
                    id: &n.node_id,
                    capacity: Resources::of_node(&n.capacity),
                    max_disk_mb: n.capacity.max_sandbox_disk_mb,
                    runtimes: &n.runtimes,
                    images: &n.images,
                    used: sandboxes.plus(&jobs.get(&n.node_id).copied().unwrap_or_default()),
                }
            })
            .collect();
        let node = scheduler::place(&candidates, &demand)?.clone();
        let placed = Placed {
            tenant: tenant.clone(),
            node: node.clone(),
            state: SandboxState::Scheduled,
            demand,
            seen: Instant::now(),
            revision: 0,
            record: None,
        };
        inner.insert(id.clone(), placed);
        Ok(node)
    }

    /// Records this coordinator's own write of `record` at `revision`.
    pub fn apply_record(&self, record: &SandboxRecord, revision: i64) {
        self.lock().apply_record(record, revision);
    }

    /// Marks a sandbox RUNNING in the view while its RUNNING record is still being written; the
    /// record and revision stay those of the last write, so CAS updates keep the right base.
    pub fn mark_running(&self, id: &SandboxId) {
        if let Some(p) = self.lock().sandboxes.get_mut(id) {
            p.state = SandboxState::Running;
        }
    }

    /// Drops a reservation that never became a record (one that did is left to the record).
    pub fn forget(&self, id: &SandboxId) {
        let mut inner = self.lock();
        if inner.sandboxes.get(id).is_some_and(|p| p.revision == 0) {
            inner.remove(id);
        }
    }

    pub fn sandbox(&self, id: &SandboxId) -> Option<Placed> {
        self.lock().sandboxes.get(id).cloned()
    }

    /// What the live sandboxes of each node reserve.
    pub fn sandbox_usage(&self) -> HashMap<NodeId, Resources> {
        self.lock().allocated.clone()
    }

    /// Applies one watched change to the index it belongs to.
    fn apply(&self, kind: EventKind, key: &str, value: &[u8], revision: i64, create_revision: i64) {
        let rest = key.strip_prefix(corral_core::keys::ROOT).unwrap_or(key);
        if let Some(deadline) = rest.strip_prefix("deadlines/")
            && kind == EventKind::Delete
            && let Some(id) = deadline.rsplit('/').next()
        {
            self.follower.deadline_deleted(id);
            // A sandbox's deadline is the view's own (the put and delete go on below).
            self.lock().apply_event(kind, key, value, revision);
        } else if self.follower.owns(rest) {
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                mod_revision: revision,
                create_revision,
                lease: 0,
            };
            self.follower.apply(kind, rest, &kv);
        } else {
            self.lock().apply_event(kind, key, value, revision);
        }
    }

    /// The lease a registered node's record is on (0 for a record written before it was kept).
    pub fn node_lease(&self, id: &NodeId) -> Option<corral_core::store::LeaseId> {
        self.lock().nodes.get(id).map(|n| n.lease)
    }

    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.lock().nodes.values().cloned().collect()
    }

    /// Live sandboxes whose node is not registered (its lease expired).
    pub fn orphans(&self) -> Vec<(TenantId, SandboxId, NodeId)> {
        let inner = self.lock();
        inner
            .sandboxes
            .iter()
            .filter(|(_, p)| !inner.nodes.contains_key(&p.node))
            .map(|(id, p)| (p.tenant.clone(), id.clone(), p.node.clone()))
            .collect()
    }

    /// Live sandboxes whose deadline key etcd deleted, with the lease it was on.
    pub fn past_deadline(&self) -> Vec<(TenantId, SandboxId, i64)> {
        let inner = self.lock();
        inner
            .deadlines_gone
            .iter()
            .filter_map(|id| {
                let p = inner.sandboxes.get(id)?;
                let lease = p.record.as_ref()?.deadline_lease;
                (lease != 0).then(|| (p.tenant.clone(), id.clone(), lease))
            })
            .collect()
    }

    /// Live sandboxes created on codebase `id`.
    pub fn using_codebase(&self, id: &corral_core::ids::CodebaseId) -> Vec<SandboxId> {
        let inner = self.lock();
        inner
            .sandboxes
            .values()
            .filter_map(|p| p.record.clone())
            .filter(|r| !r.state.is_terminal() && r.spec.codebase.as_ref().is_some_and(|c| &c.id == id))
            .map(|r| r.spec.id.clone())
            .collect()
    }

    /// Running (or paused) sandboxes with a timeout but no deadline key: records written before
    /// deadline keys existed.
    pub fn without_deadline(&self) -> Vec<Arc<SandboxRecord>> {
        let inner = self.lock();
        inner
            .sandboxes
            .values()
            .filter_map(|p| p.record.clone())
            .filter(|r| matches!(r.state, SandboxState::Running | SandboxState::Paused))
            .filter(|r| r.spec.timeout_seconds > 0 && r.deadline_lease == 0)
            .collect()
    }

    /// Sandboxes whose record still says `SCHEDULED` and that this coordinator has known for
    /// longer than `older_than`, with how long.
    pub fn stuck_scheduled(&self, older_than: Duration) -> Vec<(Arc<SandboxRecord>, Duration)> {
        let inner = self.lock();
        inner
            .sandboxes
            .values()
            .filter(|p| p.seen.elapsed() > older_than)
            .filter_map(|p| Some((p.record.clone()?, p.seen.elapsed())))
            .filter(|(r, _)| r.state == SandboxState::Scheduled)
            .collect()
    }

    /// Loads nodes and live sandboxes, then follows changes until the watch fails.
    pub async fn follow(self, store: Arc<dyn StateStore>) -> Result<(), StoreError> {
        loop {
            let revision = self.load(store.as_ref()).await?;
            let mut events = match store.watch(corral_core::keys::ROOT, revision + 1).await {
                Ok(events) => events,
                Err(StoreError::Compacted(rev)) => {
                    tracing::warn!(rev, "cluster watch start was compacted; reloading");
                    continue;
                }
                Err(e) => return Err(e),
            };
            loop {
                match events.next().await {
                    Some(Ok(ev)) => self.apply(ev.kind, &ev.key, &ev.value, ev.mod_revision, 0),
                    Some(Err(StoreError::Compacted(rev))) => {
                        tracing::warn!(rev, "cluster watch fell behind compaction; reloading");
                        break;
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(StoreError::Unavailable("cluster watch ended".into())),
                }
            }
        }
    }

    async fn load(&self, store: &dyn StateStore) -> Result<i64, StoreError> {
        let nodes = read_all(store, &NodesPrefix.to_string()).await?;
        let sandboxes = read_all(store, &SandboxesPrefix.to_string()).await?;
        let deadlines = read_all(store, &DeadlinesPrefix.to_string()).await?;
        let mut followed_from = i64::MAX;
        for prefix in self.follower.prefixes() {
            let (kvs, revision) = read_all(store, &prefix).await?;
            followed_from = followed_from.min(revision);
            for kv in &kvs {
                self.apply(EventKind::Put, &kv.key, &kv.value, kv.mod_revision, kv.create_revision);
            }
        }
        let mut inner = self.lock();
        inner.nodes.clear();
        for kv in nodes.0 {
            inner.apply_event(EventKind::Put, &kv.key, &kv.value, kv.mod_revision);
        }
        for kv in sandboxes.0 {
            inner.apply_event(EventKind::Put, &kv.key, &kv.value, kv.mod_revision);
        }
        // A live sandbox with a deadline lease and no deadline key has expired.
        let present: HashSet<&str> = deadlines.0.iter().filter_map(|kv| kv.key.rsplit('/').next()).collect();
        let gone: HashSet<SandboxId> = inner
            .sandboxes
            .iter()
            .filter(|(id, p)| {
                p.record.as_ref().is_some_and(|r| r.deadline_lease != 0) && !present.contains(id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        inner.deadlines_gone = gone;
        self.follower.deadlines_present(&present);
        // Both reads happened at or after the first page's revision; watching from the smaller
        // one replays anything in between (applying an event twice is harmless).
        let revision = nodes.1.min(sandboxes.1).min(deadlines.1).min(followed_from);
        inner.revision = revision;
        Ok(revision)
    }
}

/// Reads every key under `prefix` page by page; returns them with the revision of the first page.
async fn read_all(store: &dyn StateStore, prefix: &str) -> Result<(Vec<KeyValue>, i64), StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let mut revision = 0;
    loop {
        let page = store.range(prefix, after.as_deref(), 1000).await?;
        if revision == 0 {
            revision = page.revision;
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
        out.extend(page.kvs);
        if !page.more {
            return Ok((out, revision));
        }
    }
}

impl Inner {
    fn insert(&mut self, id: SandboxId, placed: Placed) {
        self.allocated.entry(placed.node.clone()).or_default().add(&placed.demand.need);
        if let Some(old) = self.sandboxes.insert(id, placed)
            && let Some(a) = self.allocated.get_mut(&old.node)
        {
            a.sub(&old.demand.need);
        }
    }

    fn remove(&mut self, id: &SandboxId) {
        self.deadlines_gone.remove(id);
        if let Some(old) = self.sandboxes.remove(id)
            && let Some(a) = self.allocated.get_mut(&old.node)
        {
            a.sub(&old.demand.need);
        }
    }

    fn apply_record(&mut self, record: &SandboxRecord, revision: i64) {
        let id = &record.spec.id;
        let newer_known = self.sandboxes.get(id).map(|p| p.revision).or_else(|| self.ended.get(id).copied());
        // The same revision again (a watch event of this coordinator's own write) changes nothing
        // and must not undo `mark_running`.
        if newer_known.is_some_and(|rev| rev >= revision) {
            return;
        }
        let (false, Some(node)) = (record.state.is_terminal(), record.node.clone()) else {
            self.remove(id);
            if revision > self.revision {
                self.ended.insert(id.clone(), revision);
            }
            return;
        };
        let spec = &record.spec;
        let demand = Demand::of_sandbox(spec);
        let placed = Placed {
            tenant: spec.tenant.clone(),
            node,
            state: record.state,
            demand,
            seen: self.sandboxes.get(id).map_or_else(Instant::now, |p| p.seen),
            revision,
            record: Some(Arc::new(record.clone())),
        };
        self.insert(id.clone(), placed);
    }

    fn apply_event(&mut self, kind: EventKind, key: &str, value: &[u8], revision: i64) {
        self.revision = self.revision.max(revision);
        if !self.ended.is_empty() {
            let seen = self.revision;
            self.ended.retain(|_, rev| *rev > seen);
        }
        let rest = key.strip_prefix(corral_core::keys::ROOT).unwrap_or(key);
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            mod_revision: revision,
            create_revision: 0,
            lease: 0,
        };
        if let Some(node) = rest.strip_prefix("nodes/") {
            match (kind, store::decode::<NodeInfo>(&kv)) {
                (EventKind::Put, Ok(info)) => {
                    self.nodes.insert(info.node_id.clone(), info);
                }
                (EventKind::Put, Err(e)) => tracing::warn!(error = %e, "ignoring unreadable node record"),
                (EventKind::Delete, _) => {
                    if let Ok(id) = NodeId::parse(node) {
                        tracing::info!(node = %id, "node left the cluster");
                        self.nodes.remove(&id);
                    }
                }
            }
        } else if let Some(deadline) = rest.strip_prefix("deadlines/") {
            // Sandbox deadlines are kept here (batch ones in the job index); `{tenant}/{id}`.
            if let Some(id) = deadline.rsplit('/').next().and_then(|s| SandboxId::parse(s).ok()) {
                match kind {
                    EventKind::Put => self.deadlines_gone.remove(&id),
                    EventKind::Delete => self.sandboxes.contains_key(&id) && self.deadlines_gone.insert(id),
                };
            }
        } else if rest.starts_with("sandboxes/") {
            match (kind, store::decode::<SandboxRecord>(&kv)) {
                (EventKind::Put, Ok(record)) => self.apply_record(&record, revision),
                (EventKind::Put, Err(e)) => tracing::warn!(error = %e, "ignoring unreadable sandbox record"),
                (EventKind::Delete, _) => {
                    if let Some(id) = rest.rsplit('/').next().and_then(|s| SandboxId::parse(s).ok()) {
                        self.remove(&id);
                    }
                }
            }
        }
    }
}
