//! Changing a live sandbox: ending it, pausing or resuming it, and resetting its timeout.

use std::time::Duration;

use corral_core::ids::{SandboxId, TenantId};
use corral_core::model::SandboxRecord;
use corral_core::protocol::{RpcRequest, Work, WorkReply};
use corral_core::state::SandboxState;
use corral_core::time::now_ms;

use super::Sandboxes;
use crate::error::{ApiError, ApiResult};
use crate::records;

impl Sandboxes {
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
        let lease = self.deadlines.lease_after(Duration::from_secs(timeout_seconds)).await?;
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
        let updated = self.deadlines.forget_lost(updated.await)?;
        let v = updated.ok_or_else(|| ApiError::Internal(format!("sandbox {id}: timeout update declined")))?;
        self.view.apply_record(&v.record, v.revision);
        Ok(v.record)
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
}
