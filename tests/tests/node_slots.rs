//! A node never runs more work than the slots it offers (`agent.max_sandboxes`), even when
//! placements race past it: an agent runs in this process on the embedded store and bus, and this
//! test plays the coordinators, sending it more than it offers. A sandbox create past the slots
//! is refused by name; job attempts past them wait in line and run, one slot at a time, as
//! sandboxes are destroyed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use corral_core::bus::Bus;
use corral_core::bus::mem::MemBus;
use corral_core::ids::{NodeId, SandboxId, TenantId};
use corral_core::jobs::{JobAcks, JobCommand, JobId, JobOutcome, JobReports, JobSpec, JobWork};
use corral_core::model::{RuntimeKind, SandboxSpec};
use corral_core::protocol::{self, AgentErrorKind, Work, WorkReply};
use corral_core::store::StateStore;
use corral_core::store::mem::MemStore;
use corral_core::subjects::JOB_RESULTS_SUBJECT;
use futures::StreamExt;
use tokio::sync::mpsc;

const REPLIES: &str = "test.replies";

fn sandbox() -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::random(),
        tenant: TenantId::default_tenant(),
        runtime: RuntimeKind::Bwrap,
        name: None,
        cpus: 1.0,
        memory_mb: 256,
        pids_limit: 64,
        timeout_seconds: 600,
        internet_access: false,
        env: Default::default(),
        labels: Default::default(),
        workdir: "/workspace".into(),
        image: String::new(),
        disk_mb: 0,
        codebase: None,
    }
}

/// A job printing the host's clock (ns) when it starts and when it ends, 300 ms later.
fn timed_job() -> JobWork {
    JobWork {
        job: JobId::random(),
        tenant: TenantId::default_tenant(),
        attempt: 1,
        spec: JobSpec {
            runtime: RuntimeKind::Bwrap,
            image: String::new(),
            command: JobCommand::Shell("date +%s%N; sleep 0.3; date +%s%N".into()),
            env: Default::default(),
            timeout_ms: 30_000,
            cpus: 1.0,
            memory_mb: 256,
            internet_access: false,
            stdin: Vec::new(),
            labels: Default::default(),
        },
        lease: 0,
    }
}

async fn send(bus: &dyn Bus, node: &NodeId, msg_id: &str, work: &Work) -> anyhow::Result<()> {
    Ok(bus.enqueue(node, msg_id, protocol::encode(work)).await?)
}

/// The next work reply (bounded wait).
async fn reply(replies: &mut (impl futures::Stream<Item = bytes::Bytes> + Unpin)) -> anyhow::Result<WorkReply> {
    let payload = tokio::time::timeout(Duration::from_secs(30), replies.next()).await?.context("replies ended")?;
    Ok(protocol::decode(&payload)?)
}

/// (start, end) of a finished timed job.
fn interval(outcome: &JobOutcome) -> anyhow::Result<(u128, u128)> {
    let JobOutcome::Ran { status, stdout, stderr } = outcome else { bail!("the job did not run: {outcome:?}") };
    ensure!(status.exit_code == 0, "job failed: {}", String::from_utf8_lossy(stderr));
    let text = String::from_utf8_lossy(stdout);
    let mut times = text.lines().map(|l| l.trim().parse::<u128>());
    match (times.next(), times.next()) {
        (Some(Ok(start)), Some(Ok(end))) => Ok((start, end)),
        _ => bail!("unexpected job output {text:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_no_more_than_its_slots() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = corral_agent::AgentConfig {
        state_dir: dir.path().join("state"),
        max_sandboxes: 2,
        warm_pool: 0,
        gc_interval_seconds: 3600,
        ..Default::default()
    };
    let node = NodeId::parse("slots-1")?;
    let bwrap = corral_agent::runtime::bwrap::BwrapConfig::with_state_dir(&config.state_dir)?;
    let runtimes: Vec<Arc<dyn corral_agent::runtime::Runtime>> =
        vec![Arc::new(corral_agent::runtime::bwrap::BwrapRuntime::new(bwrap)?)];
    let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let bus: Arc<dyn Bus> = Arc::new(MemBus::new());
    let mut replies = bus.subscribe(REPLIES).await?;
    // The job reports, acknowledged with no further work.
    let mut reports_in = bus.serve(JOB_RESULTS_SUBJECT).await?;
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    corral_core::task::spawn_detached("test.job_results", async move {
        while let Some(request) = reports_in.next().await {
            let Ok(JobReports(batch)) = protocol::decode(&request.payload) else { continue };
            let _ = request.reply(protocol::encode(&JobAcks { verdicts: Vec::new(), work: Vec::new() })).await;
            for r in batch {
                let _ = reports_tx.send(r);
            }
        }
    });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let agent = corral_agent::run(config, node.clone(), runtimes, store, bus.clone(), async move {
        let _ = stop_rx.wait_for(|v| *v).await;
    });
    let body = async {
        // Two sandboxes take both slots; a third is refused, naming the setting.
        let (a, b, c) = (sandbox(), sandbox(), sandbox());
        for s in [&a, &b, &c] {
            let work = Work::Create { spec: s.clone(), reply_to: REPLIES.into() };
            send(&*bus, &node, &format!("{}.create", s.id), &work).await?;
            let got = reply(&mut replies).await?;
            if s.id == c.id {
                let WorkReply::CreateFailed { error, .. } = &got else { bail!("a third sandbox started: {got:?}") };
                ensure!(error.kind == AgentErrorKind::ResourceExhausted, "{error:?}");
                ensure!(
                    error.message.contains("agent.max_sandboxes"),
                    "the error names the setting: {}",
                    error.message
                );
            } else {
                ensure!(matches!(got, WorkReply::Created { .. }), "{got:?}");
            }
        }
        // Two job attempts find the node full: they wait (nothing reports while it is).
        let jobs = vec![timed_job(), timed_job()];
        send(&*bus, &node, "jobs.1", &Work::RunJobs { jobs }).await?;
        let early = tokio::time::timeout(Duration::from_secs(2), reports.recv()).await;
        ensure!(early.is_err(), "a job ran on a full node: {early:?}");
        // One slot frees: the two attempts run one after the other in it.
        send(&*bus, &node, "a.destroy", &Work::Destroy { sandbox: a.id.clone(), reply_to: REPLIES.into() }).await?;
        ensure!(matches!(reply(&mut replies).await?, WorkReply::Destroyed { .. }));
        let mut runs = Vec::new();
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_secs(60), reports.recv()).await?.context("reports ended")?;
            runs.push(interval(&r.outcome)?);
        }
        runs.sort();
        ensure!(runs[0].1 <= runs[1].0, "the two attempts overlapped in one slot: {runs:?}");
        // And the freed slot is a sandbox's again.
        let again = Work::Create { spec: c.clone(), reply_to: REPLIES.into() };
        send(&*bus, &node, "c.create.again", &again).await?;
        let got = reply(&mut replies).await?;
        ensure!(matches!(got, WorkReply::Created { .. }), "a freed slot takes a sandbox: {got:?}");
        Ok(())
    };
    let body = async {
        let result: anyhow::Result<()> = body.await;
        let _ = stop_tx.send(true);
        result
    };
    let (result, agent) = tokio::join!(body, agent);
    agent.context("agent")?;
    result
}
