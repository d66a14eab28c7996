//! Jobs on the agent: each claimed attempt runs in a fresh one-shot sandbox (or, on the
//! benchmark-only `noop` runtime, completes at once); its outcome is reported to
//! `corral.jobs.results` until a coordinator acknowledges it.
//!
//! Deliveries are at least once, so attempts are remembered: a second delivery of a running
//! attempt is ignored and one of a finished attempt re-sends its report (the coordinator may have
//! missed it). An attempt killed because the job was cancelled or because the node fenced itself
//! is reported as not the job's fault; the coordinator's attempt check decides what stands.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use corral_core::ids::SandboxId;
use corral_core::jobs::{JobAcks, JobCommand, JobId, JobOutcome, JobReport, JobReports, JobWork};
use corral_core::languages;
use corral_core::model::{Command, ExecSpec, ExitStatus, RuntimeKind, SandboxSpec};
use corral_core::protocol::{self, AgentErrorKind};
use corral_core::subjects::JOB_RESULTS_SUBJECT;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::Agent;

/// Output kept per stream of a job (a report must fit one bus message).
pub const JOB_OUTPUT_CAP: usize = 256 * 1024;
/// How long a finished attempt is remembered for duplicate deliveries.
const REMEMBER: Duration = Duration::from_secs(120);
/// Reports sent in one request at most (and at most about this many bytes).
const REPORTS_PER_REQUEST: usize = 256;
const REPORT_BYTES: usize = 768 * 1024;
/// Report requests in flight at once.
const REPORTS_IN_FLIGHT: usize = 4;
/// Where a code job's source is written inside its sandbox.
const CODE_DIR: &str = "/tmp/corral-job";

/// Why a running attempt was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abort {
    Cancelled,
    Fenced,
}

enum Phase {
    /// `kill` ends the attempt's sandbox early.
    Running {
        sandbox: Option<SandboxId>,
        abort: Option<Abort>,
        kill: Arc<Notify>,
    },
    Done {
        report: Box<JobReport>,
        at: Instant,
    },
}

struct Attempt {
    attempt: u32,
    phase: Phase,
}

/// The job attempts of this node and the queue of reports to send.
pub struct Jobs {
    attempts: Mutex<HashMap<JobId, Attempt>>,
    reports: mpsc::UnboundedSender<JobReport>,
    /// Attempts registered; finished ones are forgotten every [`PRUNE_EVERY`].
    begun: std::sync::atomic::AtomicUsize,
}

const PRUNE_EVERY: usize = 1024;

impl Jobs {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<JobReport>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { attempts: Mutex::default(), reports: tx, begun: Default::default() }, rx)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Attempt>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an attempt; false when it is already known (its report, if any, is re-sent).
    fn begin(&self, work: &JobWork) -> bool {
        let mut map = self.lock();
        if self.begun.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            map.retain(|_, a| !matches!(&a.phase, Phase::Done { at, .. } if at.elapsed() > REMEMBER));
        }
        match map.get(&work.job) {
            Some(a) if a.attempt > work.attempt => false,
            Some(a) if a.attempt == work.attempt => {
                if let Phase::Done { report, .. } = &a.phase {
                    let _ = self.reports.send((**report).clone());
                }
                false
            }
            _ => {
                map.insert(
                    work.job.clone(),
                    Attempt {
                        attempt: work.attempt,
                        phase: Phase::Running { sandbox: None, abort: None, kill: Arc::default() },
                    },
                );
                true
            }
        }
    }

    /// Records the attempt's sandbox and returns what kills it; `None` when the attempt was
    /// aborted meanwhile.
    fn attach(&self, job: &JobId, attempt: u32, id: &SandboxId) -> Option<Arc<Notify>> {
        match self.lock().get_mut(job) {
            Some(Attempt { attempt: a, phase: Phase::Running { sandbox, abort: None, kill } }) if *a == attempt => {
                *sandbox = Some(id.clone());
                Some(kill.clone())
            }
            _ => None,
        }
    }

    fn abort_of(&self, job: &JobId, attempt: u32) -> Option<Abort> {
        match self.lock().get(job) {
            Some(Attempt { attempt: a, phase: Phase::Running { abort, .. } }) if *a == attempt => *abort,
            _ => None,
        }
    }

    fn finish(&self, report: JobReport) {
        if let Some(a) = self.lock().get_mut(&report.job)
            && a.attempt == report.attempt
        {
            a.phase = Phase::Done { report: Box::new(report.clone()), at: Instant::now() };
        }
        let _ = self.reports.send(report);
    }

    /// Marks the attempt cancelled and kills its sandbox.
    fn cancel(&self, job: &JobId, attempt: u32) {
        if let Some(Attempt { attempt: a, phase: Phase::Running { abort, kill, .. } }) = self.lock().get_mut(job)
            && *a == attempt
        {
            abort.get_or_insert(Abort::Cancelled);
            kill.notify_one();
        }
    }

    /// Stops every running attempt: the node fenced itself.
    pub fn fence_all(&self) {
        for a in self.lock().values_mut() {
            if let Phase::Running { abort, kill, .. } = &mut a.phase {
                abort.get_or_insert(Abort::Fenced);
                kill.notify_one();
            }
        }
    }

    /// True when `sandbox` is the sandbox of an attempt running here (it has no record in the
    /// store; the attempt destroys it when done).
    pub fn owns(&self, sandbox: &SandboxId) -> bool {
        self.lock().values().any(|a| matches!(&a.phase, Phase::Running { sandbox: Some(s), .. } if s == sandbox))
    }
}

/// Starts every new attempt of a `RunJobs` work item in its own task.
pub fn start(agent: &Arc<Agent>, jobs: Vec<JobWork>) {
    for work in jobs {
        if !agent.lease_is_fresh() {
            // Cut off from the store: the lease may expire (or have expired) and the leader
            // re-queue the job, so starting it could run it twice. Not started, not begun: the
            // leader sends the attempt again if the lease holds, or re-queues it if it lapses.
            tracing::warn!(job = %work.job, attempt = work.attempt, "not starting a job: the node lease is not being renewed");
            continue;
        }
        if !agent.jobs.begin(&work) {
            tracing::debug!(job = %work.job, attempt = work.attempt, "duplicate delivery of a job attempt");
            continue;
        }
        let agent = agent.clone();
        corral_core::task::spawn_detached("agent.job", async move {
            let outcome = run(&agent, &work).await;
            let outcome = match agent.jobs.abort_of(&work.job, work.attempt) {
                Some(Abort::Cancelled) => JobOutcome::Infra("the job was cancelled while it ran".into()),
                Some(Abort::Fenced) => JobOutcome::Infra(format!("node {} fenced itself", agent.node)),
                None => match outcome {
                    // Killed by the node watchdog while the agent was stopped: not the job's fault.
                    JobOutcome::Ran { status, .. }
                        if status.signal == libc::SIGKILL
                            && agent.watchdog.as_ref().is_some_and(|w| w.may_have_fired()) =>
                    {
                        JobOutcome::Infra(format!("node {} stalled past its watchdog deadline", agent.node))
                    }
                    outcome => outcome,
                },
            };
            let report = JobReport {
                job: work.job,
                tenant: work.tenant,
                attempt: work.attempt,
                node: agent.node.clone(),
                outcome,
            };
            agent.jobs.finish(report);
        });
    }
}

/// Kills a cancelled attempt's command (its sandbox ends with it).
pub async fn cancel(agent: &Agent, job: &JobId, attempt: u32) {
    agent.jobs.cancel(job, attempt);
}

async fn run(agent: &Arc<Agent>, work: &JobWork) -> JobOutcome {
    // The attempt's permits are on the registration it was claimed under: run it only under that
    // one (a node that fenced and registered again must not run what was claimed before).
    if work.lease != 0 && agent.lease() != Some(work.lease) {
        return JobOutcome::Infra(format!(
            "the attempt was claimed under an earlier registration of node {} (lease {:x})",
            agent.node, work.lease
        ));
    }
    let spec = &work.spec;
    if spec.runtime == RuntimeKind::Noop {
        return if agent.config.noop_runtime {
            let status = ExitStatus {
                exit_code: 0,
                signal: 0,
                timed_out: false,
                truncated: false,
                duration_ms: 0,
                oom_killed: false,
            };
            JobOutcome::Ran { status, stdout: Vec::new(), stderr: Vec::new() }
        } else {
            JobOutcome::Refused(format!("node {} does not offer the noop runtime", agent.node))
        };
    }
    let Some(runtime) = agent.runtime(spec.runtime).cloned() else {
        return JobOutcome::Refused(format!("node {} has no {} runtime", agent.node, spec.runtime));
    };
    let mut files = Vec::new();
    let command = match &spec.command {
        JobCommand::Argv(argv) => Command::Argv(argv.clone()),
        JobCommand::Shell(line) => Command::Shell(line.clone()),
        JobCommand::Code { language, code } => match program(agent, spec.runtime, &spec.image, language) {
            Some((lang, program)) => {
                files.push((format!("{CODE_DIR}/{}", lang.file_name), code.clone().into_bytes()));
                lang.command(&program, CODE_DIR)
            }
            None => {
                let why = format!("{language} is not available to {} sandboxes on node {}", spec.runtime, agent.node);
                return JobOutcome::Refused(why);
            }
        },
    };
    let id = SandboxId::random();
    let sandbox = SandboxSpec {
        id: id.clone(),
        tenant: work.tenant.clone(),
        runtime: spec.runtime,
        name: None,
        cpus: spec.cpus,
        memory_mb: spec.memory_mb,
        pids_limit: agent.config.job_pids_limit,
        timeout_seconds: spec.timeout_ms.div_ceil(1000) + 60,
        internet_access: spec.internet_access,
        env: spec.env.clone(),
        labels: [("corral.job".to_owned(), work.job.to_string())].into(),
        workdir: "/workspace".into(),
        image: spec.image.clone(),
        disk_mb: 0,
        codebase: None,
    };
    let exec = ExecSpec {
        command,
        env: Default::default(),
        cwd: "/workspace".into(),
        timeout_ms: spec.timeout_ms,
        stdin: spec.stdin.clone(),
        max_output_bytes: JOB_OUTPUT_CAP as u64,
        side_channel: false,
    };
    let Some(kill) = agent.jobs.attach(&work.job, work.attempt, &id) else {
        return JobOutcome::Infra("the attempt was stopped before it started".into());
    };
    // A slot of the node (placements that raced wait here, in line, rather than overload it).
    let holder = format!("{}.{}", work.job, work.attempt);
    let _slot = tokio::select! {
        slot = agent.slots.wait(&holder) => match slot {
            Ok(slot) => slot,
            Err(e) => return JobOutcome::Infra(format!("no slot on node {}: {e}", agent.node)),
        },
        () = kill.notified() => return JobOutcome::Infra("the attempt was stopped before it started".into()),
    };
    match runtime.run_once(&sandbox, &files, exec, kill).await {
        Ok(done) => JobOutcome::Ran { status: done.status, stdout: done.stdout, stderr: done.stderr },
        Err(e) => {
            let e = corral_core::protocol::AgentError::from(e);
            match e.kind {
                AgentErrorKind::InvalidArgument | AgentErrorKind::NotFound => JobOutcome::Refused(e.message),
                _ => JobOutcome::Infra(format!("the job's sandbox failed: {}", e.message)),
            }
        }
    }
}

/// The registry entry and this node's program for `language` in `runtime` (and `image`).
fn program(
    agent: &Agent,
    runtime: RuntimeKind,
    image: &str,
    language: &str,
) -> Option<(&'static languages::Language, String)> {
    let lang = languages::resolve(language)?;
    let offers = agent.languages.lock().unwrap_or_else(|p| p.into_inner());
    let offer = offers.iter().find(|o| o.language == lang.name && o.serves(runtime, image))?;
    Some((lang, offer.program.clone()))
}

/// Sends reports to `corral.jobs.results` in batches until acknowledged, retrying with backoff
/// while no coordinator answers (e.g. during a leader change). Up to [`REPORTS_IN_FLIGHT`]
/// requests go at once: a job that ends while another's report is being committed is reported
/// (and its slot refilled by the reply) without waiting for that round trip.
pub async fn report(agent: Arc<Agent>, mut queue: mpsc::UnboundedReceiver<JobReport>) -> Result<(), String> {
    let mut unsent: Vec<JobReport> = Vec::new();
    // (job, attempt) of every report unsent or in flight.
    let mut queued: HashSet<(JobId, u32)> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut backoff = Duration::from_millis(50);
    let mut retry_at: Option<Instant> = None;
    let mut open = true;
    loop {
        while !unsent.is_empty() && in_flight.len() < REPORTS_IN_FLIGHT && retry_at.is_none_or(|t| Instant::now() >= t)
        {
            retry_at = None;
            let batch: Vec<JobReport> = unsent.drain(..batch_len(&unsent)).collect();
            let bus = agent.bus.clone();
            in_flight.push(async move {
                let reports = JobReports(batch);
                let reply = bus.request(JOB_RESULTS_SUBJECT, protocol::encode(&reports), Duration::from_secs(10)).await;
                (reply, reports.0)
            });
        }
        if !open && unsent.is_empty() && in_flight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            r = queue.recv(), if open => {
                let Some(r) = r else {
                    open = false;
                    continue;
                };
                // A report re-sent for a redelivered attempt may still be waiting or in flight.
                for r in std::iter::once(r).chain(std::iter::from_fn(|| queue.try_recv().ok())) {
                    if queued.insert((r.job.clone(), r.attempt)) {
                        unsent.push(r);
                    }
                }
            }
            Some((reply, batch)) = in_flight.next(), if !in_flight.is_empty() => {
                match reply {
                    Ok(reply) => {
                        match protocol::decode::<JobAcks>(&reply) {
                            Ok(acks) => {
                                tracing::debug!(acked = acks.verdicts.len(), next = acks.work.len(), "job reports acknowledged");
                                start(&agent, acks.work);
                            }
                            Err(e) => tracing::warn!(error = %e, "malformed acknowledgement of job reports"),
                        }
                        for r in batch {
                            queued.remove(&(r.job, r.attempt));
                        }
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, pending = unsent.len() + batch.len(), "job reports not delivered; retrying");
                        unsent.splice(0..0, batch);
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
        }
    }
}

/// How many of the first reports make one request: at most [`REPORTS_PER_REQUEST`] and about
/// [`REPORT_BYTES`] (at least one).
fn batch_len(unsent: &[JobReport]) -> usize {
    let (mut count, mut bytes) = (0, 0);
    for r in unsent {
        let size = match &r.outcome {
            JobOutcome::Ran { stdout, stderr, .. } => stdout.len() + stderr.len(),
            _ => 0,
        } + 256;
        if count > 0 && (count == REPORTS_PER_REQUEST || bytes + size > REPORT_BYTES) {
            break;
        }
        count += 1;
        bytes += size;
    }
    count
}
