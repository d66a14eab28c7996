//! Creating a sandbox: placement, the SCHEDULED record and the work item, the agent's report,
//! the deferred RUNNING write (see [`crate::confirm`]) and stopping creates the client abandoned.

use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::{NodeId, SandboxId, TenantId};
use corral_core::model::{SandboxRecord, SandboxSpec};
use corral_core::protocol::{Work, WorkReply};
use corral_core::state::SandboxState;
use corral_core::time::{now_ms, now_ms_after};

use super::Sandboxes;
use crate::confirm::DEFER;
use crate::error::{ApiError, ApiResult};
use crate::records::{self, Versioned};
use crate::scheduler::{Demand, PlacementError};

impl Sandboxes {
    /// Creates a sandbox. If the caller goes away before this returns (the client cancelled the
    /// call or its deadline passed), whatever was started is stopped in the background.
    #[tracing::instrument(skip_all, fields(sandbox_id = %spec.id))]
    pub async fn create(self: &Arc<Self>, spec: SandboxSpec) -> ApiResult<SandboxRecord> {
        let guard = AbandonGuard::new(self.clone(), spec.tenant.clone(), spec.id.clone());
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
            Ok(rx) => tokio::time::timeout(self.create_timeout, rx).await,
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
                let why =
                    format!("agent on node {node} did not report the sandbox ready within {:?}", self.create_timeout);
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
                let timeout = Duration::from_secs(known.record.spec.timeout_seconds);
                let lease = self.deadlines.lease_after(timeout).await?;
                let running = records::transition(&self.store, &tenant, &id, Some(known), SandboxState::Running, |r| {
                    if started_at_ms > 0 {
                        r.started_at_ms = started_at_ms.max(r.created_at_ms);
                    }
                    if r.deadline_lease == 0 && lease != 0 {
                        r.deadline_lease = lease;
                        r.expires_at_ms = r.started_at_ms + (r.spec.timeout_seconds as i64).saturating_mul(1000);
                    }
                });
                self.deadlines.forget_lost(running.await)?
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

    /// The agent reported the sandbox running: returns the RUNNING record at once and makes it
    /// durable in the background (see [`crate::confirm`] for why readers cannot tell).
    fn confirm_running(self: &Arc<Self>, reply: WorkReply, known: Versioned) -> SandboxRecord {
        let mut running = known.record.clone();
        running.state = SandboxState::Running;
        running.started_at_ms = now_ms_after(running.created_at_ms);
        let started_at_ms = running.started_at_ms;
        let id = running.spec.id.clone();
        let (writing, flush) = self.in_flight.begin(&id, started_at_ms);
        self.view.mark_running(&id);
        let sandboxes = self.clone();
        // Bounded by DEFER plus the create timeout; readers wait for `writing` to drop.
        corral_core::task::spawn_detached("coordinator.confirm_running", async move {
            tokio::select! {
                _ = tokio::time::sleep(DEFER) => {}
                _ = flush.notified() => {}
            }
            if !sandboxes.in_flight.start_writing(&id) {
                // The sandbox ended first; its end recorded the start time.
                return;
            }
            let write = sandboxes.apply_reply(reply, Some(known), started_at_ms);
            match tokio::time::timeout(sandboxes.create_timeout, write).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not record a started sandbox; the reconciler re-publishes its create")
                }
                Err(_) => {
                    tracing::warn!("recording a started sandbox timed out; the reconciler re-publishes its create")
                }
            }
            drop(writing);
        });
        running
    }

    async fn send_destroy(&self, node: &NodeId, id: &SandboxId) {
        let work = |reply_to| Work::Destroy { sandbox: id.clone(), reply_to };
        if let Err(e) = self.dispatch.send_work(node, work, &format!("{id}.destroy")).await {
            tracing::warn!(sandbox_id = %id, node = %node, error = %e, "could not queue destroy; the agent's GC will reap it");
        }
    }
}

/// Stops a sandbox whose Create call was dropped before it answered (see [`Sandboxes::create`]).
struct AbandonGuard {
    armed: Option<(Arc<Sandboxes>, TenantId, SandboxId)>,
}

impl AbandonGuard {
    fn new(sandboxes: Arc<Sandboxes>, tenant: TenantId, id: SandboxId) -> Self {
        Self { armed: Some((sandboxes, tenant, id)) }
    }

    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let Some((sandboxes, tenant, id)) = self.armed.take() else { return };
        // Bounded by the store's request timeouts. A record that never got written leaves an
        // unrecorded sandbox at most, which the agent's GC reaps; an agent reply that arrives
        // later finds the record ended and is answered with a destroy.
        corral_core::task::spawn_detached("coordinator.abandoned_create", async move {
            let reason = "its Create call was abandoned by the client";
            // A record write cut off mid-flight may still land: look once more after a pause.
            for pause in [Duration::ZERO, Duration::from_secs(1)] {
                tokio::time::sleep(pause).await;
                match sandboxes.end(&tenant, &id, SandboxState::Stopped, reason).await {
                    Ok(r) => {
                        tracing::info!(sandbox_id = %id, state = %r.state, "ended a sandbox whose create was abandoned");
                        break;
                    }
                    Err(e) => tracing::debug!(sandbox_id = %id, error = %e, "abandoned create: no record to end yet"),
                }
            }
            sandboxes.view.forget(&id);
        });
    }
}
