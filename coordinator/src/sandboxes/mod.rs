//! The sandbox component: every sandbox operation in domain terms — create, get, list, end,
//! pause, timeouts, applying agents' reports and the reconciler's sweeps. Only this component
//! (through `records`) writes sandbox records.
//!
//! Layering: [`Sandboxes`] owns what it uses — the store, the cluster view, the dispatcher, the
//! deadline leases and the RUNNING writes in flight ([`crate::confirm`]) — and sits above those
//! modules, none of which refers back to it; `api` and `reconciler` sit above it.
//!
//! - [`create`]: placement, the record and the work item, the agent's report, the deferred
//!   RUNNING write, and abandoned creates;
//! - [`end`]: ending, pausing and re-timing live sandboxes;
//! - [`sweep`]: what the leader's reconciler sweeps do to sandboxes.

mod create;
mod end;
mod sweep;

use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::{NodeId, SandboxId, SandboxName, TenantId};
use corral_core::keys::TenantSandboxesPrefix;
use corral_core::model::{DiskUsage, SandboxRecord};
use corral_core::protocol::{RpcReply, RpcRequest};
use corral_core::state::SandboxState;
use corral_core::store::{self, StateStore};

use crate::cluster::ClusterView;
use crate::confirm::InFlight;
use crate::deadlines::DeadlineLeases;
use crate::dispatch::Dispatcher;
use crate::error::{ApiError, ApiResult};
use crate::records::{self, Versioned};

/// The sandboxes of the cluster, as this coordinator serves them.
pub struct Sandboxes {
    store: Arc<dyn StateStore>,
    view: ClusterView,
    dispatch: Arc<Dispatcher>,
    /// The leases sandbox deadlines sit on (shared with batch deadlines; see [`crate::deadlines`]).
    deadlines: Arc<DeadlineLeases>,
    /// RUNNING confirmations being written in the background (see [`crate::confirm`]).
    in_flight: InFlight,
    /// How long an agent has to report a sandbox started.
    create_timeout: Duration,
}

/// Which sandboxes `list` returns.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub states: Vec<SandboxState>,
    pub labels: Vec<(String, String)>,
}

impl ListFilter {
    fn matches(&self, r: &SandboxRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&r.state))
            && self.labels.iter().all(|(k, v)| r.spec.labels.get(k) == Some(v))
    }
}

/// Most records one `list` call reads before returning a short page.
const LIST_SCAN_LIMIT: usize = 10_000;
/// How long Get waits for a node's disk figures before answering without them.
const USAGE_TIMEOUT: Duration = Duration::from_secs(2);

impl Sandboxes {
    pub fn new(
        store: Arc<dyn StateStore>,
        view: ClusterView,
        dispatch: Arc<Dispatcher>,
        deadlines: Arc<DeadlineLeases>,
        create_timeout: Duration,
    ) -> Self {
        Self { store, view, dispatch, deadlines, in_flight: InFlight::default(), create_timeout }
    }

    pub async fn get(&self, tenant: &TenantId, id: &SandboxId) -> ApiResult<SandboxRecord> {
        self.in_flight.settled(id).await;
        let v = records::get(self.store.as_ref(), tenant, id).await?;
        Ok(v.record)
    }

    pub async fn get_by_name(&self, tenant: &TenantId, name: &SandboxName) -> ApiResult<SandboxRecord> {
        let id = records::id_by_name(self.store.as_ref(), tenant, name).await?;
        self.get(tenant, &id).await
    }

    /// One page of the tenant's sandboxes in id order, and the token of the next page.
    pub async fn list(
        &self,
        tenant: &TenantId,
        filter: &ListFilter,
        page_size: usize,
        after: Option<SandboxId>,
    ) -> ApiResult<(Vec<SandboxRecord>, Option<SandboxId>)> {
        self.in_flight.all_settled().await;
        let prefix = TenantSandboxesPrefix(tenant).to_string();
        let mut cursor = after.map(|id| format!("{prefix}{id}"));
        let mut out = Vec::with_capacity(page_size);
        let mut scanned = 0;
        loop {
            let page = self.store.range(&prefix, cursor.as_deref(), page_size.max(100)).await?;
            for kv in &page.kvs {
                scanned += 1;
                cursor = Some(kv.key.clone());
                let record: SandboxRecord = store::decode(kv)?;
                if filter.matches(&record) {
                    out.push(record);
                    if out.len() == page_size {
                        let more = page.more || !std::ptr::eq(kv, page.kvs.last().unwrap_or(kv));
                        return Ok((out, more.then(|| last_id(&cursor)).flatten()));
                    }
                }
            }
            if !page.more {
                return Ok((out, None));
            }
            if scanned >= LIST_SCAN_LIMIT {
                return Ok((out, last_id(&cursor)));
            }
        }
    }

    /// What the node says of a live sandbox: its disk use (`None` when the node enforces no
    /// quotas) and whether its codebase view failed; `None` when it has ended or the node does
    /// not answer in time (Get still answers).
    pub async fn node_status(&self, record: &SandboxRecord) -> Option<(Option<DiskUsage>, bool)> {
        if !matches!(record.state, SandboxState::Running | SandboxState::Paused) {
            return None;
        }
        let node = record.node.as_ref()?;
        let req = RpcRequest::Status { sandbox: record.spec.id.clone() };
        match tokio::time::timeout(USAGE_TIMEOUT, self.dispatch.rpc(node, &req)).await {
            Ok(Ok(RpcReply::Status { disk, codebase_failed })) => Some((disk, codebase_failed)),
            Ok(Ok(other)) => {
                tracing::warn!(sandbox_id = %record.spec.id, reply = ?other, "unexpected reply to a status request");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(sandbox_id = %record.spec.id, error = %e, "no status from the node");
                None
            }
            Err(_) => None,
        }
    }

    /// What a RUNNING sandbox on a codebase changed in it, asked from its node.
    pub async fn diff(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
    ) -> ApiResult<(Vec<corral_core::codebase::Change>, bool)> {
        let node = self.locate(tenant, id).await?;
        match self.dispatch.rpc(&node, &RpcRequest::Diff { sandbox: id.clone() }).await? {
            RpcReply::Changes { changes, truncated } => Ok((changes, truncated)),
            RpcReply::Error(e) => Err(e.into()),
            other => Err(ApiError::Internal(format!("unexpected reply to a diff request: {other:?}"))),
        }
    }

    /// The node of a RUNNING sandbox of `tenant`; other tenants' sandboxes are NOT_FOUND.
    pub async fn locate(&self, tenant: &TenantId, id: &SandboxId) -> ApiResult<NodeId> {
        if let Some(p) = self.view.sandbox(id)
            && &p.tenant == tenant
            && p.state == SandboxState::Running
        {
            return Ok(p.node);
        }
        let record = self.get(tenant, id).await?;
        if record.state == SandboxState::Scheduled {
            // Started by another coordinator, which may still be writing RUNNING.
            return self.await_running(tenant, id).await;
        }
        match (record.state, record.node) {
            (SandboxState::Running, Some(node)) => Ok(node),
            (state, _) => Err(ApiError::FailedPrecondition(format!("sandbox {id} is {state}, not RUNNING"))),
        }
    }

    /// Waits (up to the create timeout) for a SCHEDULED sandbox to become RUNNING in the view.
    async fn await_running(&self, tenant: &TenantId, id: &SandboxId) -> ApiResult<NodeId> {
        let deadline = tokio::time::Instant::now() + self.create_timeout;
        loop {
            match self.view.sandbox(id) {
                Some(p) if p.state == SandboxState::Running => return Ok(p.node),
                Some(p) if p.state == SandboxState::Scheduled && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                _ => {
                    let state = self.get(tenant, id).await?.state;
                    return Err(ApiError::FailedPrecondition(format!("sandbox {id} is {state}, not RUNNING")));
                }
            }
        }
    }

    /// The latest version of a live sandbox's record this coordinator knows, if any (a stale one
    /// only costs a failed CAS and a re-read).
    fn known(&self, tenant: &TenantId, id: &SandboxId) -> Option<Versioned> {
        let p = self.view.sandbox(id).filter(|p| &p.tenant == tenant)?;
        Some(Versioned { record: SandboxRecord::clone(p.record.as_ref()?), revision: p.revision })
    }
}

fn last_id(cursor: &Option<String>) -> Option<SandboxId> {
    cursor.as_deref().and_then(|k| k.rsplit('/').next()).and_then(|s| SandboxId::parse(s).ok())
}
