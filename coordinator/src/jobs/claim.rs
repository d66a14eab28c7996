//! Claiming jobs: the CAS that makes a job RUNNING on a node (bumping its attempt, fenced by the
//! leader key), in groups, and the delivery of the claimed work to the nodes. A reply to a
//! node's report commits the results and claims the next jobs in one transaction
//! ([`Jobs::commit_and_claim`]).

use std::collections::HashMap;

use corral_core::ids::NodeId;
use corral_core::jobs::{JobId, JobLogs, JobRecord, JobState, JobWork};
use corral_core::protocol::Work;
use corral_core::store::StoreError;
use corral_core::time::now_ms;
use futures::future::join_all;

use super::records::{self, CLAIM_OPS, CLAIMS_PER_TXN, JobWrite, MAX_TXN_OPS, TXN_BYTES, Writes};
use super::service::Jobs;

/// Most bytes of jobs in one work item (the bus carries at most 1 MiB per message).
const WORK_BYTES: usize = 512 * 1024;

impl Jobs {
    /// Like one scheduling round, right after `node` reported results: returns the work claimed
    /// for `node` (for the caller to hand over in its reply) and sends other nodes theirs.
    pub async fn schedule_for(&self, fence: i64, node: &NodeId) -> Vec<JobWork> {
        let _one_planner = self.table.planning.lock().await;
        let plan = self.plan(&[]);
        self.claim_groups(fence, plan, node).await
    }

    /// Claims `plan` in groups; the work claimed for `node`.
    async fn claim_groups(&self, fence: i64, plan: Vec<(JobId, NodeId)>, node: &NodeId) -> Vec<JobWork> {
        let groups: Vec<Vec<(JobId, NodeId)>> = plan.chunks(CLAIMS_PER_TXN).map(<[_]>::to_vec).collect();
        join_all(groups.into_iter().map(|g| self.claim(fence, g, Some(node))))
            .await
            .into_iter()
            .flat_map(|(_, w)| w)
            .collect()
    }

    /// Commits `writes` (job records leaving RUNNING, each with a CAS on the revision the index
    /// saw, and their full logs) and claims the next jobs for the slots they free, in one
    /// transaction that also requires this leader's fence: the reply to a report then costs one
    /// round trip to the store instead of two. `None` when that transaction failed (nothing was
    /// written: a record moved, or the leadership did); otherwise the work claimed for `node`,
    /// the other nodes' work being sent to them. Jobs beyond what fits in the transaction are
    /// claimed in their own transactions, as a scheduling round would.
    pub async fn commit_and_claim(
        &self,
        fence: i64,
        node: &NodeId,
        writes: &[(i64, JobRecord, Option<JobLogs>)],
    ) -> Result<Option<Vec<JobWork>>, StoreError> {
        let _one_planner = self.table.planning.lock().await;
        let finishing: Vec<JobId> = writes.iter().map(|(_, r, _)| r.id.clone()).collect();
        let mut plan = self.plan(&finishing);
        let mut txn = Writes::fenced(fence);
        for (revision, r, logs) in writes {
            txn = txn.put_job(*revision, r);
            if let Some(logs) = logs {
                txn = txn.logs(r, logs);
            }
        }
        let room = MAX_TXN_OPS.saturating_sub(txn.ops()) / CLAIM_OPS;
        let later = plan.split_off(plan.len().min(room));
        let mut claims = self.prepare_claims(plan, now_ms());
        // Claims that would take the transaction over its byte budget wait for a round of their own.
        let fit = claims
            .iter()
            .scan(txn.bytes(), |total, w| {
                *total += w.size();
                Some(*total)
            })
            .take_while(|total| *total <= TXN_BYTES)
            .count();
        let over: Vec<(JobId, NodeId)> = claims
            .split_off(fit)
            .into_iter()
            .map(|w| (w.record.id, w.record.node.expect("a claim names its node")))
            .collect();
        for w in &claims {
            txn = txn.job(w);
        }
        let out = txn.run(self.store.as_ref()).await?;
        if !out.succeeded {
            return Ok(None);
        }
        for (_, r, _) in writes {
            self.table.apply_job(r.clone(), out.revision, 0);
        }
        let won = claims.into_iter().map(|w| (out.revision, w.record)).collect();
        let mut kept = self.deliver(won, Some(node)).await;
        let rest: Vec<_> = over.into_iter().chain(later).collect();
        if !rest.is_empty() {
            kept.extend(self.claim_groups(fence, rest, node).await);
        }
        Ok(Some(kept))
    }

    /// Claims one group in one transaction (one by one if it fails), then sends each node its
    /// jobs, except `keep`'s, which are returned (marked dispatched) for the caller to deliver.
    pub(super) async fn claim(
        &self,
        fence: i64,
        group: Vec<(JobId, NodeId)>,
        keep: Option<&NodeId>,
    ) -> (usize, Vec<JobWork>) {
        let claims = self.prepare_claims(group, now_ms());
        if claims.is_empty() {
            return (0, Vec::new());
        }
        let mut won: Vec<(i64, JobRecord)> = Vec::new();
        for run in records::split(claims, CLAIMS_PER_TXN, TXN_BYTES, JobWrite::size) {
            let txn = run.iter().fold(Writes::fenced(fence), Writes::job);
            match txn.run(self.store.as_ref()).await {
                Ok(out) if out.succeeded => won.extend(run.into_iter().map(|w| (out.revision, w.record))),
                Ok(_) => won.extend(self.claim_one_by_one(fence, run).await),
                Err(e) => tracing::warn!(error = %e, "claiming jobs failed; they stay pending"),
            }
        }
        let n = won.len();
        (n, self.deliver(won, keep).await)
    }

    /// The claims of `group`'s jobs that the index still has PENDING.
    fn prepare_claims(&self, group: Vec<(JobId, NodeId)>, now: i64) -> Vec<JobWrite> {
        let mut claims = Vec::with_capacity(group.len());
        let inner = self.table.lock();
        for (id, node) in group {
            let Some(entry) = inner.jobs.get(&id) else { continue };
            let Some(record) = entry.record.as_ref().filter(|r| r.state == JobState::Pending) else { continue };
            // A node that left the view meanwhile gets nothing; its lease holds the permits.
            let Some(lease) = self.view.node_lease(&node) else { continue };
            match records::claim(entry.revision, record, node, lease, now) {
                Ok(claim) => claims.push(claim),
                Err(e) => tracing::warn!(job = %id, error = %e, "not claiming a job"),
            }
        }
        claims
    }

    /// Applies won claims to the index and sends each node its jobs, except `keep`'s, which are
    /// returned (marked dispatched) for the caller to deliver.
    async fn deliver(&self, won: Vec<(i64, JobRecord)>, keep: Option<&NodeId>) -> Vec<JobWork> {
        let mut by_node: HashMap<NodeId, (i64, Vec<JobWork>)> = HashMap::new();
        for (revision, r) in won {
            let node = r.node.clone().expect("a claim names its node");
            let work = JobWork::of(&r);
            self.table.apply_job(r, revision, 0);
            let slot = by_node.entry(node).or_insert((revision, Vec::new()));
            slot.1.push(work);
        }
        let mut kept = Vec::new();
        for (node, (revision, jobs)) in by_node {
            // What rides on a reply must fit in one message with room to spare.
            if keep == Some(&node) && encoded_size(&jobs) <= WORK_BYTES {
                jobs.iter().for_each(|w| self.table.mark_dispatched(&w.job));
                kept = jobs;
                continue;
            }
            self.send_jobs(&node, jobs, &format!("claim.{revision}")).await;
        }
        kept
    }

    /// Sends `jobs` to `node` in work items of at most [`WORK_BYTES`] (a single job may be
    /// larger: its code and stdin are bounded below the bus limit), each with a message id
    /// derived from `tag` and its first job; marks the sent ones dispatched.
    pub(super) async fn send_jobs(&self, node: &NodeId, jobs: Vec<JobWork>, tag: &str) {
        let chunks = records::split(jobs, usize::MAX, WORK_BYTES, |w| corral_core::protocol::encode(w).len());
        for jobs in chunks {
            let ids: Vec<JobId> = jobs.iter().map(|w| w.job.clone()).collect();
            let msg_id = format!("{tag}.{node}.{}", ids[0]);
            match self.dispatch.send_work(node, |_| Work::RunJobs { jobs }, &msg_id).await {
                Ok(()) => ids.iter().for_each(|id| self.table.mark_dispatched(id)),
                Err(e) => tracing::warn!(%node, error = %e, "could not send jobs; the sweep sends them again"),
            }
        }
    }

    /// Claims each job in its own transaction after a group claim failed (some record changed,
    /// or this coordinator is no longer the leader).
    async fn claim_one_by_one(&self, fence: i64, claims: Vec<JobWrite>) -> Vec<(i64, JobRecord)> {
        let tries = claims.into_iter().map(|w| async move {
            match Writes::fenced(fence).job(&w).run(self.store.as_ref()).await {
                Ok(out) if out.succeeded => Some((out.revision, w.record)),
                _ => None,
            }
        });
        join_all(tries).await.into_iter().flatten().collect()
    }
}

fn encoded_size(jobs: &[JobWork]) -> usize {
    jobs.iter().map(|w| corral_core::protocol::encode(w).len()).sum()
}
