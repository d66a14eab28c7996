//! The sandbox operations behind the API, in domain terms: create, get, list, destroy, and
//! applying agents' reports. Only this module (through `records`) writes sandbox state.

use std::sync::Arc;

use corral_core::ids::{NodeId, SandboxId, SandboxName, TenantId};
use corral_core::keys::TenantSandboxesPrefix;
use corral_core::model::{SandboxRecord, SandboxSpec};
use corral_core::protocol::{RpcRequest, Work, WorkReply};
use corral_core::state::SandboxState;
use corral_core::store::{self, StateStore};
use corral_core::time::now_ms;

use crate::cluster::ClusterView;
use crate::config::CoordinatorConfig;
use crate::confirm::InFlight;
use crate::deadlines::DeadlineLeases;
use crate::dispatch::Dispatcher;
use crate::error::{ApiError, ApiResult};
use crate::leader::Leadership;
use crate::records::{self, Versioned};
use crate::scheduler::{Demand, PlacementError};

/// Shared state of one coordinator.
pub struct Core {
    pub config: CoordinatorConfig,
    pub store: Arc<dyn StateStore>,
    pub view: ClusterView,
    pub dispatch: Arc<Dispatcher>,
    /// RUNNING confirmations being written in the background (see [`crate::confirm`]).
    pub in_flight: InFlight,
    /// Whether this coordinator runs the reconciler now (see [`crate::leader`]).
    pub leadership: Leadership,
    /// The leases sandbox and batch deadlines sit on (see [`crate::deadlines`]).
    pub deadlines: Arc<DeadlineLeases>,
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

impl Core {
    /// Creates a sandbox. If the caller goes away before this returns (the client cancelled the
    /// call or its deadline passed), whatever was started is stopped in the background.
    #[tracing::instrument(skip_all, fields(sandbox_id = %spec.id))]
    pub async fn create(self: &Arc<Self>, spec: SandboxSpec) -> ApiResult<SandboxRecord> {
        let guard = crate::confirm::AbandonGuard::new(self.clone(), spec.tenant.clone(), spec.id.clone());
        let result = self.create_placed(spec).await;
        guard.disarm();
        result
    }

    async fn create_placed(self: &Arc<Self>, spec: SandboxSpec) -> ApiResult<SandboxRecord> {
        let now = now_ms();
        let expires_at_ms = now + (spec.timeout_seconds as i64).saturating_mul(1000);
        let demand = Demand::of_sandbox(&spec);
        let node = self.view.place_and_reserve(&spec.id, &spec.tenant, demand).map_err(|e| match e {
            PlacementError::Full { .. } => ApiError::NoCapacity(e.to_string()),
            _ => ApiError::FailedPrecondition(e.to_string()),
        })?;
        tracing::debug!(node = %node, "placed");
        let record = SandboxRecord {
            v: SandboxRecord::VERSION,
            spec: spec.clone(),
            state: SandboxState::Scheduled,
            node: Some(node.clone()),
            created_at_ms: now,
            started_at_ms: 0,
            ended_at_ms: 0,
            expires_at_ms,
            termination_reason: String::new(),
            deadline_lease: 0,
        };
        let id = spec.id.clone();
        let work = |reply_to| Work::Create { spec, reply_to };
        let msg_id = format!("{id}.create");
        let queue = self.dispatch.send_work_and_wait(&node, &id, work, &msg_id);
        // The record and the work item are written at the same time: the agent only reports back
        // to this call, which applies the report after both writes, and if the record write fails
        // the sandbox is destroyed (the agent's GC also reaps sandboxes without a record). A name
        // can be taken, so named sandboxes write their record first.
        let (written, queued) = if record.spec.name.is_some() {
            match records::create(self.store.as_ref(), &record).await {
                Ok(rev) => (Ok(rev), queue.await),
                Err(e) => (Err(e), Err(ApiError::Internal("not queued".into()))),
            }
        } else {
            tokio::join!(records::create(self.store.as_ref(), &record), queue)
        };
        let revision = match written {
            Ok(rev) => rev,
            Err(e) => {
                self.view.forget(&id);
                if queued.is_ok() {
                    self.dispatch.cancel_wait(&id);
                    self.send_destroy(&node, &id).await;
                }
                return Err(e);
            }
        };
        self.view.apply_record(&record, revision);
        let reply = match queued {
            Ok(rx) => tokio::time::timeout(self.config.create_timeout(), rx).await,
            Err(e) => {
                self.fail(&record.spec.tenant, &id, &format!("could not queue the sandbox for node {node}: {e}")).await;
                return Err(e);
            }
        };
        match reply {
            Ok(Ok(reply @ WorkReply::Created { .. })) => {
                Ok(self.confirm_running(reply, Versioned { record, revision }))
            }
            Ok(Ok(reply)) => {
                let known = Versioned { record, revision };
                match self.apply_reply(reply, Some(known), 0).await? {
                    Some(v) if v.record.state == SandboxState::Running => Ok(v.record),
                    Some(v) => Err(ApiError::FailedPrecondition(format!(
                        "sandbox {id} failed to start on node {node}: {}",
                        v.record.termination_reason
                    ))),
                    None => Err(ApiError::FailedPrecondition(format!("sandbox {id} ended while starting"))),
                }
            }
            Ok(Err(_)) | Err(_) => {
                self.dispatch.cancel_wait(&id);
                let why = format!(
                    "agent on node {node} did not report the sandbox ready within {:?}",
                    self.config.create_timeout()
                );
                self.fail(&record.spec.tenant, &id, &why).await;
                Err(ApiError::Timeout(why))
            }
        }
    }

    /// Marks a sandbox FAILED and asks its agent to clean up; errors are logged (the agent's
    /// garbage collection reaps what is left).
    async fn fail(&self, tenant: &TenantId, id: &SandboxId, why: &str) {
        if let Err(e) = self.end(tenant, id, SandboxState::Failed, why).await {
            tracing::warn!(sandbox_id = %id, error = %e, "could not mark the sandbox failed");
        }
    }

    /// Applies an agent's report about a work item. Returns the updated record, if any changed.
    /// `started_at_ms` is the start time to record (0: now).
    pub async fn apply_reply(
        &self,
        reply: WorkReply,
        known: Option<Versioned>,
        started_at_ms: i64,
    ) -> ApiResult<Option<Versioned>> {
        let (id, node, outcome) = match reply {
            WorkReply::Created { sandbox, node } => (sandbox, node, Ok(())),
            WorkReply::CreateFailed { sandbox, node, error } => (sandbox, node, Err(error)),
            WorkReply::Destroyed { sandbox, node } => {
                tracing::debug!(sandbox_id = %sandbox, node = %node, "agent destroyed sandbox");
                return Ok(None);
            }
        };
        let tenant = match (&known, self.view.sandbox(&id)) {
            (Some(v), _) => v.record.spec.tenant.clone(),
            (None, Some(p)) => p.tenant,
            (None, None) => {
                tracing::info!(sandbox_id = %id, node = %node, "agent reported a sandbox that is no longer live; destroying it");
                self.send_destroy(&node, &id).await;
                return Ok(None);
            }
        };
        let updated = match outcome {
            Ok(()) => {
                // Its timeout starts now, on a deadline key the new record carries.
                let known = match known.or_else(|| self.known(&tenant, &id)) {
                    Some(v) => v,
                    None => records::get(self.store.as_ref(), &tenant, &id).await?,
                };
                let lease = self.deadline_lease(known.record.spec.timeout_seconds).await?;
                let running = records::transition(&self.store, &tenant, &id, Some(known), SandboxState::Running, |r| {
                    if started_at_ms > 0 {
                        r.started_at_ms = started_at_ms.max(r.created_at_ms);
                    }
                    if r.deadline_lease == 0 && lease != 0 {
                        r.deadline_lease = lease;
                        r.expires_at_ms = r.started_at_ms + (r.spec.timeout_seconds as i64).saturating_mul(1000);
                    }
                });
                self.forget_lost_lease(running.await)?
            }
            Err(error) => {
                let reason = format!("failed to start on node {node}: {error}");
                records::transition(&self.store, &tenant, &id, known, SandboxState::Failed, |r| {
                    r.termination_reason = reason.clone()
                })
                .await?
            }
        };
        match &updated {
            Some(v) => self.view.apply_record(&v.record, v.revision),
            None => self.send_destroy(&node, &id).await,
        }
        Ok(updated)
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

    /// Ends a live sandbox in `to` (STOPPED, EXPIRED, FAILED, LOST) and tells its agent to tear
    /// it down. The record is durable before the agent works; an already-ended sandbox is returned
    /// unchanged.
    pub async fn end(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        to: SandboxState,
        reason: &str,
    ) -> ApiResult<SandboxRecord> {
        self.end_if(tenant, id, to, reason, |_| true).await
    }

    /// [`Self::end`] only while `still` holds for the current record (checked again on every CAS
    /// attempt, so e.g. a concurrent SetTimeout wins over an expiry decided on older data).
    pub async fn end_if(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        to: SandboxState,
        reason: &str,
        still: impl Fn(&SandboxRecord) -> bool,
    ) -> ApiResult<SandboxRecord> {
        // A RUNNING write not yet started is replaced by this one (SCHEDULED → the end).
        let started_at_ms = self.in_flight.take_deferred(id);
        if started_at_ms.is_none() {
            self.in_flight.settled(id).await;
        }
        let edit = |r: &mut SandboxRecord| {
            r.termination_reason = reason.to_owned();
            if let Some(t) = started_at_ms
                && r.started_at_ms == 0
            {
                r.started_at_ms = t;
            }
        };
        let updated = records::update(&self.store, tenant, id, self.known(tenant, id), |r| {
            if !still(r) {
                return Ok(false);
            }
            records::apply_transition(r, to, &edit)
        })
        .await?;
        let Some(v) = updated else {
            let current = records::get(self.store.as_ref(), tenant, id).await?;
            if let Some(t) = started_at_ms
                && current.record.state == SandboxState::Scheduled
                && let Some(node) = current.record.node.clone()
            {
                // Declined after taking the deferred RUNNING write over: write it now.
                let reply = WorkReply::Created { sandbox: id.clone(), node };
                if let Some(v) = self.apply_reply(reply, Some(current.clone()), t).await? {
                    return Ok(v.record);
                }
            }
            self.view.apply_record(&current.record, current.revision);
            return Ok(current.record);
        };
        self.view.apply_record(&v.record, v.revision);
        if to != SandboxState::Lost
            && let Some(node) = &v.record.node
        {
            // The ended record is durable, so the caller need not wait for the queue.
            let work = |reply_to| Work::Destroy { sandbox: id.clone(), reply_to };
            self.dispatch.send_work_detached(node, work, &format!("{id}.destroy"));
        }
        Ok(v.record)
    }

    /// Resets a live sandbox's lifetime: it now expires `timeout_seconds` from now.
    pub async fn set_timeout(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        timeout_seconds: u64,
    ) -> ApiResult<SandboxRecord> {
        self.in_flight.settled(id).await;
        let lease = self.deadline_lease(timeout_seconds).await?;
        let updated = records::update(&self.store, tenant, id, self.known(tenant, id), |r| {
            if r.state.is_terminal() {
                let why = format!("sandbox {id} is {}; only a live sandbox has a timeout to set", r.state);
                return Err(ApiError::FailedPrecondition(why));
            }
            r.spec.timeout_seconds = timeout_seconds;
            r.expires_at_ms = now_ms() + (timeout_seconds as i64).saturating_mul(1000);
            r.deadline_lease = lease;
            Ok(true)
        });
        let updated = self.forget_lost_lease(updated.await)?;
        let v = updated.ok_or_else(|| ApiError::Internal(format!("sandbox {id}: timeout update declined")))?;
        self.view.apply_record(&v.record, v.revision);
        Ok(v.record)
    }

    async fn send_destroy(&self, node: &NodeId, id: &SandboxId) {
        let work = |reply_to| Work::Destroy { sandbox: id.clone(), reply_to };
        if let Err(e) = self.dispatch.send_work(node, work, &format!("{id}.destroy")).await {
            tracing::warn!(sandbox_id = %id, node = %node, error = %e, "could not queue destroy; the agent's GC will reap it");
        }
    }

    /// Pauses a RUNNING sandbox (`pause`) or resumes a PAUSED one: the agent freezes or thaws it,
    /// then the record follows. Pausing a paused sandbox (or resuming a running one) is a no-op.
    pub async fn set_paused(&self, tenant: &TenantId, id: &SandboxId, pause: bool) -> ApiResult<SandboxRecord> {
        let (from, to) = if pause {
            (SandboxState::Running, SandboxState::Paused)
        } else {
            (SandboxState::Paused, SandboxState::Running)
        };
        self.in_flight.settled(id).await;
        let current = match self.known(tenant, id) {
            Some(v) => v,
            None => records::get(self.store.as_ref(), tenant, id).await?,
        };
        let state = current.record.state;
        if state == to {
            return Ok(current.record);
        }
        let (true, Some(node)) = (state == from, current.record.node.clone()) else {
            let verb = if pause { "paused" } else { "resumed" };
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox {id} is {state}; only a {from} sandbox can be {verb}"
            )));
        };
        let req =
            if pause { RpcRequest::Pause { sandbox: id.clone() } } else { RpcRequest::Resume { sandbox: id.clone() } };
        self.dispatch.rpc(&node, &req).await?;
        let v = records::transition(&self.store, tenant, id, Some(current), to, |_| {})
            .await?
            .ok_or_else(|| ApiError::FailedPrecondition(format!("sandbox {id} ended meanwhile")))?;
        self.view.apply_record(&v.record, v.revision);
        Ok(v.record)
    }

    /// The latest version of a live sandbox's record this coordinator knows, if any (a stale one
    /// only costs a failed CAS and a re-read).
    fn known(&self, tenant: &TenantId, id: &SandboxId) -> Option<Versioned> {
        let p = self.view.sandbox(id).filter(|p| &p.tenant == tenant)?;
        Some(Versioned { record: SandboxRecord::clone(p.record.as_ref()?), revision: p.revision })
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
}

fn last_id(cursor: &Option<String>) -> Option<SandboxId> {
    cursor.as_deref().and_then(|k| k.rsplit('/').next()).and_then(|s| SandboxId::parse(s).ok())
}
