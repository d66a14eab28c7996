//! Claiming jobs: the CAS that makes a job RUNNING on a node (bumping its attempt, fenced by the
//! leader key), in groups, and the delivery of the claimed work to the nodes. A reply to a
//! node's report commits the results and claims the next jobs in one transaction
//! ([`commit_and_claim`]).

use std::collections::HashMap;
use std::sync::Arc;

use corral_core::ids::NodeId;
use corral_core::jobs::{JobId, JobLogs, JobRecord, JobState, JobWork};
use corral_core::keys::{JobKey, JobLogsKey, LeaderKey};
use corral_core::protocol::Work;
use corral_core::store::{self, StoreError, Txn};
use corral_core::time::now_ms;
use futures::future::join_all;

use super::schedule::GROUP;
use crate::service::Core;

/// Claims `plan` in groups; the work claimed for `node`.
pub(super) async fn claim_groups(
    core: &Arc<Core>,
    fence: i64,
    plan: Vec<(JobId, NodeId)>,
    node: &NodeId,
) -> Vec<JobWork> {
    let groups: Vec<Vec<(JobId, NodeId)>> = plan.chunks(GROUP).map(<[_]>::to_vec).collect();
    join_all(groups.into_iter().map(|g| claim(core, fence, g, Some(node))))
        .await
        .into_iter()
        .flat_map(|(_, w)| w)
        .collect()
}

/// Most operations of either kind (conditions, writes) in a commit with its claims folded in:
/// below etcd's default limit of 128 per transaction.
const FUSED_OPS: usize = 120;

/// Commits `writes` (job records leaving RUNNING, each with a CAS on the revision the index
/// saw, and their full logs) and claims the next jobs for the slots they free, in one
/// transaction that also requires this leader's fence: the reply to a report then costs one
/// round trip to the store instead of two. `None` when that transaction failed (nothing was
/// written: a record moved, or the leadership did); otherwise the work claimed for `node`, the
/// other nodes' work being sent to them. Jobs beyond what fits in the transaction are claimed
/// in their own transactions, as a scheduling round would.
pub async fn commit_and_claim(
    core: &Arc<Core>,
    fence: i64,
    node: &NodeId,
    writes: &[(i64, JobRecord, Option<JobLogs>)],
) -> Result<Option<Vec<JobWork>>, StoreError> {
    let _one_planner = core.view.jobs.planning.lock().await;
    let finishing: Vec<JobId> = writes.iter().map(|(_, r, _)| r.id.clone()).collect();
    let mut plan = super::schedule::plan(core, &finishing);
    let mut txn = Txn::new().when(&LeaderKey, fence);
    let (mut conditions, mut puts, mut bytes) = (1 + writes.len(), 0, 0);
    for (revision, r, logs) in writes {
        let key = JobKey { tenant: &r.tenant, id: &r.id };
        let record = store::encode(r);
        bytes += record.len();
        txn = txn.when(&key, *revision).put(&key, record);
        puts += 1;
        if let Some(logs) = logs {
            let logs = store::encode(logs);
            bytes += logs.len();
            txn = txn.put(JobLogsKey { tenant: &r.tenant, id: &r.id }, logs);
            puts += 1;
        }
    }
    let room = FUSED_OPS.saturating_sub(conditions.max(puts));
    let later = plan.split_off(plan.len().min(room));
    let mut claims = prepare_claims(core, plan, now_ms());
    // Claims that would take the transaction over its byte budget wait for a round of their own.
    let fit = claims
        .iter()
        .scan(bytes, |total, (_, _, b)| {
            *total += b.len();
            Some(*total)
        })
        .take_while(|total| *total <= super::TXN_BYTES)
        .count();
    let over: Vec<(JobId, NodeId)> =
        claims.split_off(fit).into_iter().map(|(_, r, _)| (r.id, r.node.expect("a claim names its node"))).collect();
    for (revision, r, record) in &claims {
        let key = JobKey { tenant: &r.tenant, id: &r.id };
        txn = txn.when(&key, *revision).put(&key, record.clone());
        conditions += 1;
    }
    debug_assert!(conditions <= FUSED_OPS + 1);
    let out = core.store.txn(txn).await?;
    if !out.succeeded {
        return Ok(None);
    }
    for (_, r, _) in writes {
        core.view.jobs.apply_job(r.clone(), out.revision, 0);
    }
    let won = claims.into_iter().map(|(_, r, _)| (out.revision, r)).collect();
    let mut kept = deliver(core, won, Some(node)).await;
    let rest: Vec<_> = over.into_iter().chain(later).collect();
    if !rest.is_empty() {
        kept.extend(claim_groups(core, fence, rest, node).await);
    }
    Ok(Some(kept))
}

/// Claims one group in one transaction (one by one if it fails), then sends each node its jobs,
/// except `keep`'s, which are returned (marked dispatched) for the caller to deliver.
pub(super) async fn claim(
    core: &Arc<Core>,
    fence: i64,
    group: Vec<(JobId, NodeId)>,
    keep: Option<&NodeId>,
) -> (usize, Vec<JobWork>) {
    let claims = prepare_claims(core, group, now_ms());
    if claims.is_empty() {
        return (0, Vec::new());
    }
    let mut won: Vec<(i64, JobRecord)> = Vec::new();
    for run in super::split(claims, GROUP, super::TXN_BYTES, |(_, _, bytes)| bytes.len()) {
        let mut txn = Txn::new().when(&LeaderKey, fence);
        for (revision, r, bytes) in &run {
            let key = JobKey { tenant: &r.tenant, id: &r.id };
            txn = txn.when(&key, *revision).put(&key, bytes.clone());
        }
        match core.store.txn(txn).await {
            Ok(out) if out.succeeded => won.extend(run.into_iter().map(|(_, r, _)| (out.revision, r))),
            Ok(_) => won.extend(claim_one_by_one(core, fence, run).await),
            Err(e) => tracing::warn!(error = %e, "claiming jobs failed; they stay pending"),
        }
    }
    let n = won.len();
    (n, deliver(core, won, keep).await)
}

/// A claim to write: the revision claimed from, the new record and its encoding (each record
/// is encoded once).
type Claim = (i64, JobRecord, Vec<u8>);

/// The claims of `group`'s jobs that the index still has PENDING.
fn prepare_claims(core: &Core, group: Vec<(JobId, NodeId)>, now: i64) -> Vec<Claim> {
    let mut claims = Vec::with_capacity(group.len());
    let inner = core.view.jobs.lock();
    for (id, node) in group {
        let Some(entry) = inner.jobs.get(&id) else { continue };
        let Some(record) = entry.record.as_ref().filter(|r| r.state == JobState::Pending) else { continue };
        let mut next = (**record).clone();
        next.state = JobState::Running;
        next.attempt += 1;
        next.node = Some(node);
        // The submitting coordinator's clock may be ahead of this one.
        next.started_at_ms = now.max(record.created_at_ms);
        next.reason.clear();
        let bytes = store::encode(&next);
        claims.push((entry.revision, next, bytes));
    }
    claims
}

/// Applies won claims to the index and sends each node its jobs, except `keep`'s, which are
/// returned (marked dispatched) for the caller to deliver.
async fn deliver(core: &Core, won: Vec<(i64, JobRecord)>, keep: Option<&NodeId>) -> Vec<JobWork> {
    let table = &core.view.jobs;
    let mut by_node: HashMap<NodeId, (i64, Vec<JobWork>)> = HashMap::new();
    for (revision, r) in won {
        let node = r.node.clone().expect("a claim names its node");
        let work = JobWork { job: r.id.clone(), tenant: r.tenant.clone(), attempt: r.attempt, spec: r.spec.clone() };
        table.apply_job(r, revision, 0);
        let slot = by_node.entry(node).or_insert((revision, Vec::new()));
        slot.1.push(work);
    }
    let mut kept = Vec::new();
    for (node, (revision, jobs)) in by_node {
        // What rides on a reply must fit in one message with room to spare.
        if keep == Some(&node) && encoded_size(&jobs) <= WORK_BYTES {
            jobs.iter().for_each(|w| table.mark_dispatched(&w.job));
            kept = jobs;
            continue;
        }
        send_jobs(core, &node, jobs, &format!("claim.{revision}")).await;
    }
    kept
}

/// Most bytes of jobs in one work item (the bus carries at most 1 MiB per message).
const WORK_BYTES: usize = 512 * 1024;

fn encoded_size(jobs: &[JobWork]) -> usize {
    jobs.iter().map(|w| corral_core::protocol::encode(w).len()).sum()
}

/// Sends `jobs` to `node` in work items of at most [`WORK_BYTES`] (a single job may be larger:
/// its code and stdin are bounded below the bus limit), each with a message id derived from
/// `tag` and its first job; marks the sent ones dispatched.
pub(super) async fn send_jobs(core: &Core, node: &NodeId, jobs: Vec<JobWork>, tag: &str) {
    let chunks = super::split(jobs, usize::MAX, WORK_BYTES, |w| corral_core::protocol::encode(w).len());
    for jobs in chunks {
        let ids: Vec<JobId> = jobs.iter().map(|w| w.job.clone()).collect();
        let msg_id = format!("{tag}.{node}.{}", ids[0]);
        match core.dispatch.send_work(node, |_| Work::RunJobs { jobs }, &msg_id).await {
            Ok(()) => ids.iter().for_each(|id| core.view.jobs.mark_dispatched(id)),
            Err(e) => tracing::warn!(%node, error = %e, "could not send jobs; the sweep sends them again"),
        }
    }
}

/// Claims each job in its own transaction after a group claim failed (some record changed, or
/// this coordinator is no longer the leader).
async fn claim_one_by_one(core: &Core, fence: i64, claims: Vec<Claim>) -> Vec<(i64, JobRecord)> {
    let tries = claims.into_iter().map(|(revision, r, bytes)| async move {
        let key = JobKey { tenant: &r.tenant, id: &r.id };
        let txn = Txn::new().when(&LeaderKey, fence).when(&key, revision).put(&key, bytes);
        match core.store.txn(txn).await {
            Ok(out) if out.succeeded => Some((out.revision, r)),
            _ => None,
        }
    });
    join_all(tries).await.into_iter().flatten().collect()
}
