//! Committing job results. Agents send their reports to `corral.jobs.results`, which the leader
//! serves; each request's reports are committed in one transaction (group commit), each report
//! guarded by the job record's revision. A report whose attempt is not the job's running attempt
//! any more is rejected (and logged); so a job has exactly one committed result, whatever the
//! agents, the bus or the coordinators did.

use std::sync::Arc;
use std::time::Duration;

use corral_core::bus::Request;
use corral_core::jobs::{
    JobAcks, JobCommand, JobId, JobLogs, JobOutcome, JobRecord, JobReport, JobReports, JobSpec, JobState, JobWork,
    Verdict,
};
use corral_core::protocol;
use corral_core::store::StoreError;
use corral_core::subjects::JOB_RESULTS_SUBJECT;
use corral_core::time::now_ms;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::records::{self, COMMITS_PER_TXN, TXN_BYTES, Writes};
use super::service::Jobs;
use super::table::Inner;

/// Serves the results subject while this coordinator leads; runs until dropped.
///
/// Requests are committed by one task, and the requests that arrived while it was busy are
/// taken together: each node's reports in one commit (usually one transaction) instead of one
/// commit per request waiting its turn (commits and claims take the planning lock one at a time
/// anyway, so merging costs no request any time).
pub async fn serve(jobs: Arc<Jobs>) -> Result<(), String> {
    loop {
        while !jobs.leadership.is_leader() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut requests = match jobs.dispatch.bus().serve(JOB_RESULTS_SUBJECT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve job results; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!("serving job results");
        // Ends once `queue` is dropped (with this term) and what it holds is committed.
        let (queue, waiting) = mpsc::unbounded_channel();
        corral_core::task::spawn_detached("coordinator.job_results", commit_requests(jobs.clone(), waiting));
        let mut check = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                req = requests.next() => {
                    let Some(req) = req else { break };
                    match protocol::decode::<JobReports>(&req.payload) {
                        Ok(reports) => {
                            let _ = queue.send((reports.0, req));
                        }
                        Err(e) => tracing::warn!(error = %e, "dropping malformed job reports"),
                    }
                }
                _ = check.tick() => {
                    if !jobs.leadership.is_leader() {
                        tracing::info!("no longer the leader: not serving job results");
                        break;
                    }
                }
            }
        }
    }
}

/// A request's reports and the request to answer.
type Waiting = (Vec<JobReport>, Request);

/// Commits waiting requests, everything that is waiting at once (up to what one commit takes),
/// until the queue closes.
async fn commit_requests(jobs: Arc<Jobs>, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let mut next: Option<Waiting> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match waiting.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut taken = vec![first];
        let mut count = taken[0].0.len();
        while let Ok(w) = waiting.try_recv() {
            if count + w.0.len() > MERGED_REPORTS {
                next = Some(w);
                break;
            }
            count += w.0.len();
            taken.push(w);
        }
        for group in by_node(taken) {
            jobs.answer_group(group).await;
        }
    }
}

/// Most reports committed together from several requests (one request may carry more).
const MERGED_REPORTS: usize = COMMITS_PER_TXN;

/// The requests grouped by the node of their first report, in arrival order.
fn by_node(taken: Vec<Waiting>) -> Vec<Vec<Waiting>> {
    let mut groups: Vec<Vec<Waiting>> = Vec::new();
    for w in taken {
        let node = w.0.first().map(|r| r.node.clone());
        match groups.iter_mut().find(|g| g[0].0.first().map(|r| &r.node) == node.as_ref()) {
            Some(g) => g.push(w),
            None => groups.push(vec![w]),
        }
    }
    groups
}

type Ack = (JobId, u32, Verdict);

/// A job record to write over the revision seen, and the full logs to keep with it.
type Write = (i64, JobRecord, Option<JobLogs>);

impl Jobs {
    /// Commits one node's requests together; each request is answered with the verdicts on its
    /// own reports, and the first one also carries the node's next work. No reply means "not
    /// committed": the agent sends the reports again.
    async fn answer_group(&self, group: Vec<Waiting>) {
        let reports: Vec<JobReport> = group.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
        let (verdicts, mut work) = match self.commit_and_schedule(reports).await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "could not commit job reports; the agent retries");
                return;
            }
        };
        tracing::debug!(requests = group.len(), reports = verdicts.len(), work = work.len(), "job reports committed");
        let replies = group.into_iter().map(|(reports, req)| {
            let mine: std::collections::HashSet<(&JobId, u32)> = reports.iter().map(|r| (&r.job, r.attempt)).collect();
            let verdicts: Vec<Ack> =
                verdicts.iter().filter(|(job, attempt, _)| mine.contains(&(job, *attempt))).cloned().collect();
            let acks = JobAcks { verdicts, work: std::mem::take(&mut work) };
            async move {
                if let Err(e) = req.reply(protocol::encode(&acks)).await {
                    tracing::debug!(error = %e, "could not acknowledge job reports");
                }
            }
        });
        futures::future::join_all(replies.collect::<Vec<_>>()).await;
    }

    /// Commits one node's reports and claims the next jobs for the slots they free; the
    /// verdicts and the work for that node (which rides on the reply). Usually one transaction:
    /// when every report is for the running attempt the index knows, the commit and the claims
    /// go together ([`Jobs::commit_and_claim`]); otherwise, or when that transaction fails, the
    /// reports are committed on their own and a scheduling round follows.
    pub async fn commit_and_schedule(&self, reports: Vec<JobReport>) -> Result<(Vec<Ack>, Vec<JobWork>), StoreError> {
        let reports = distinct(reports);
        let Some(node) = reports.first().map(|r| r.node.clone()) else { return Ok((Vec::new(), Vec::new())) };
        if let Some(fence) = self.leadership.fence()
            && reports.len() <= COMMITS_PER_TXN
            && reports.iter().all(|r| r.node == node)
            && reports.iter().map(|r| report_bytes(&self.table.lock(), r)).sum::<usize>() <= TXN_BYTES / 2
            && let Some(mut writes) = self.prepare(&reports, now_ms())
        {
            writes.sort_by(|a, b| a.1.id.cmp(&b.1.id));
            if let Some(work) = self.commit_and_claim(fence, &node, &writes).await? {
                let acks = writes.into_iter().map(|(_, r, _)| (r.id, r.attempt, Verdict::Committed)).collect();
                return Ok((acks, work));
            }
        }
        let acks = self.commit(reports).await?;
        // The freed slots go to the next jobs at once; this node's share rides on the reply.
        let work = match self.leadership.fence() {
            Some(fence) => self.schedule_for(fence, &node).await,
            None => Vec::new(),
        };
        Ok((acks, work))
    }

    /// The writes for `reports` when the index has every one's job RUNNING at the report's
    /// attempt: (revision seen, next record, full logs to keep).
    fn prepare(&self, reports: &[JobReport], now: i64) -> Option<Vec<Write>> {
        let inner = self.table.lock();
        reports.iter().map(|report| decide_indexed(&inner, report, now)).collect()
    }

    /// Commits a group of reports; the verdict of each.
    pub async fn commit(&self, reports: Vec<JobReport>) -> Result<Vec<Ack>, StoreError> {
        let reports = distinct(reports);
        let mut acks = Vec::with_capacity(reports.len());
        let chunks = {
            let inner = self.table.lock();
            records::split(reports, COMMITS_PER_TXN, TXN_BYTES, |r| report_bytes(&inner, r))
        };
        for chunk in chunks {
            acks.extend(self.commit_group(&chunk).await?);
        }
        Ok(acks)
    }

    async fn commit_group(&self, reports: &[JobReport]) -> Result<Vec<Ack>, StoreError> {
        let now = now_ms();
        let mut acks = Vec::new();
        let mut writes: Vec<Write> = Vec::new();
        let mut slow = Vec::new();
        {
            let inner = self.table.lock();
            for report in reports {
                match decide_indexed(&inner, report, now) {
                    Some(write) => writes.push(write),
                    // The index may lag behind the store: look before calling a report stale.
                    None => slow.push(report.clone()),
                }
            }
        }
        if !writes.is_empty() {
            // In id order, so batch items finishing in one commit are seen (and watched) in
            // index order on every coordinator.
            writes.sort_by(|a, b| a.1.id.cmp(&b.1.id));
            let mut txn = Writes::new();
            for (revision, r, logs) in &writes {
                txn = txn.put_job(*revision, r);
                if let Some(logs) = logs {
                    txn = txn.logs(r, logs);
                }
            }
            let out = txn.run(self.store.as_ref()).await?;
            if out.succeeded {
                for (_, r, _) in writes {
                    acks.push((r.id.clone(), r.attempt, Verdict::Committed));
                    self.table.apply_job(r, out.revision, 0);
                }
            } else {
                let by_id: std::collections::HashMap<_, _> = reports.iter().map(|r| (&r.job, r)).collect();
                slow.extend(writes.iter().filter_map(|(_, r, _)| by_id.get(&r.id).map(|rep| (*rep).clone())));
            }
        }
        for report in slow {
            acks.push((report.job.clone(), report.attempt, self.commit_one(&report).await?));
        }
        Ok(acks)
    }

    /// Commits one report with a fresh read, retrying lost races.
    async fn commit_one(&self, report: &JobReport) -> Result<Verdict, StoreError> {
        for _ in 0..16 {
            let Some((revision, record)) = records::get_job(self.store.as_ref(), &report.tenant, &report.job).await?
            else {
                return Ok(stale(report, "no such job"));
            };
            if record.state != JobState::Running || record.attempt != report.attempt {
                if record.attempt == report.attempt
                    && record.state.is_terminal()
                    && record.node.as_ref() == Some(&report.node)
                    && record.result.is_some()
                {
                    // Already committed from an earlier delivery of this report.
                    return Ok(Verdict::Committed);
                }
                return Ok(stale(report, record.state.as_str()));
            }
            let Ok((next, logs)) = records::report(&record, report, now_ms()) else {
                return Ok(stale(report, record.state.as_str()));
            };
            let mut txn = Writes::new().put_job(revision, &next);
            if let Some(logs) = &logs {
                txn = txn.logs(&next, logs);
            }
            let out = txn.run(self.store.as_ref()).await?;
            if out.succeeded {
                self.table.apply_job(next, out.revision, 0);
                return Ok(Verdict::Committed);
            }
        }
        Err(StoreError::Unavailable(format!("job {} changed too often to commit its result", report.job)))
    }
}

/// The reports without repeats (an agent may send one report twice: a redelivered attempt
/// re-sends its report).
fn distinct(mut reports: Vec<JobReport>) -> Vec<JobReport> {
    let mut seen = std::collections::HashSet::new();
    reports.retain(|r| seen.insert((r.job.clone(), r.attempt)));
    reports
}

/// About how many bytes a report adds to a transaction: its inline output twice over (record
/// and logs), plus the job's record as the index holds it (its spec can be up to
/// `MAX_RECORD_BYTES`: a job's code and stdin are in it), plus room for the result's fields.
fn report_bytes(inner: &Inner, r: &JobReport) -> usize {
    let record = match inner.jobs.get(&r.job).and_then(|e| e.record.as_ref()) {
        // A spec this small encodes under 16 KiB even if every byte were escaped (6x): no need
        // to encode it on the commit path.
        Some(rec) if spec_text_bytes(&rec.spec) > SMALL_SPEC => records::encoded_len(rec),
        _ => 16 * 1024,
    };
    let output = match &r.outcome {
        JobOutcome::Ran { stdout, stderr, .. } => 2 * (stdout.len() + stderr.len()),
        _ => 0,
    };
    record + output + 4 * 1024
}

/// Specs with at most this much text are counted as a flat 16 KiB record.
const SMALL_SPEC: usize = 2 * 1024;

/// The text a spec carries: command, stdin, environment, labels and image.
fn spec_text_bytes(s: &JobSpec) -> usize {
    let command = match &s.command {
        JobCommand::Argv(argv) => argv.iter().map(String::len).sum(),
        JobCommand::Shell(line) => line.len(),
        JobCommand::Code { language, code } => language.len() + code.len(),
    };
    let maps = s.env.iter().chain(&s.labels).map(|(k, v)| k.len() + v.len()).sum::<usize>();
    command + s.stdin.len() + maps + s.image.len()
}

/// The write for `report` when the index has its job RUNNING at the report's attempt.
fn decide_indexed(inner: &Inner, report: &JobReport, now: i64) -> Option<Write> {
    let e = inner.jobs.get(&report.job)?;
    let record = e.record.as_ref().filter(|r| r.state == JobState::Running && r.attempt == report.attempt)?;
    let (next, logs) = records::report(record, report, now).ok()?;
    Some((e.revision, next, logs))
}

fn stale(report: &JobReport, now: &str) -> Verdict {
    tracing::info!(job = %report.job, attempt = report.attempt, node = %report.node, job_now = now, "rejected a stale job report");
    Verdict::Stale
}
