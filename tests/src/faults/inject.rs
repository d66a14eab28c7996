//! The faults. Each submits the witnessed batch (F3 races its submit against the kill), waits
//! for the seed's trigger, hits the cluster, heals where the scenario heals, and adds the
//! scenario's own checks to the run's violations.

use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::v1 as pb;

use super::Scenario;
use super::cluster::TTL;
use super::history::Change;
use super::run::{Ctx, Detect};

pub async fn inject(s: Scenario, ctx: &mut Ctx) -> anyhow::Result<()> {
    if s == Scenario::F3CoordinatorKilledDuringSubmit {
        return coordinator_killed_during_submit(ctx).await;
    }
    let req = ctx.batch_request("");
    let batch = ctx.client.submit_batch(req).await?;
    ctx.acked_batch(&batch)?;
    let victim = ctx.plan.victim;
    let node = ctx.cluster.node_id(victim);
    let on_victim = matches!(
        s,
        Scenario::F1AgentKilled
            | Scenario::F2NodeKilled
            | Scenario::F10AgentCutFromEtcd
            | Scenario::F11AgentCutFromNats
            | Scenario::F12AgentIsolated
            | Scenario::AgentStalled
    );
    ctx.wait_trigger(on_victim.then_some(node.as_str())).await?;
    ctx.fault_at = Some(ctx.now());
    if on_victim {
        let hit = ctx.records.running_on(&node);
        ctx.notes.push(format!("{hit} jobs RUNNING on the victim {node} when the fault hit"));
    }
    match s {
        Scenario::F1AgentKilled => {
            ctx.cluster.agents[victim].kill9();
            ctx.detect = Detect::NodeGone(node);
        }
        Scenario::F2NodeKilled => {
            kill_node(ctx, victim);
            ctx.detect = Detect::NodeGone(node);
        }
        Scenario::F4LeaderCutFromEtcd => {
            let old = ctx.cluster.wait_leader().await?;
            let port = ctx.cluster.etcd.port();
            ctx.cluster.netns()?.cut(port)?;
            ctx.detect = Detect::NewLeader(old);
        }
        Scenario::F6NatsRestarted => {
            tokio::task::block_in_place(|| ctx.cluster.nats.restart())?;
            heal_now(ctx);
        }
        Scenario::F7JetStreamWiped => {
            tokio::task::block_in_place(|| ctx.cluster.nats.wipe_restart())?;
            heal_now(ctx);
        }
        Scenario::F8EtcdRestarted => {
            tokio::task::block_in_place(|| ctx.cluster.etcd.restart())?;
            heal_now(ctx);
        }
        Scenario::F9EtcdDown => etcd_down(ctx).await?,
        Scenario::F10AgentCutFromEtcd => {
            let port = ctx.cluster.etcd.port();
            ctx.cluster.netns()?.cut(port)?;
            ctx.detect = Detect::NodeGone(node);
        }
        Scenario::F11AgentCutFromNats => {
            let port = ctx.cluster.nats.port();
            ctx.cluster.netns()?.cut(port)?;
            tokio::time::sleep(Duration::from_secs(5 + ctx.plan.outage_s)).await;
            ctx.cluster.netns()?.heal(port)?;
            heal_now(ctx);
            let gone = ctx.records.events().iter().any(|e| e.change == Change::NodeGone(node.clone()));
            ctx.notes.push(format!("node record kept through the NATS cut: {}", !gone));
        }
        Scenario::F12AgentIsolated => isolated(ctx, node).await?,
        Scenario::F13DiskFull => disk_full(ctx).await?,
        Scenario::AgentStalled => {
            let pid = ctx.cluster.agents[victim].pid().to_string();
            signal("-STOP", &pid)?;
            tokio::time::sleep(Duration::from_secs(3 * TTL)).await;
            signal("-CONT", &pid)?;
            ctx.detect = Detect::NodeGone(node);
        }
        Scenario::ClockSkew => {
            ctx.notes.push(format!("leader coordinator {}, agent {} the other way", ctx.plan.skew, victim + 1))
        }
        Scenario::F3CoordinatorKilledDuringSubmit => unreachable!("handled above"),
    }
    Ok(())
}

fn heal_now(ctx: &mut Ctx) {
    ctx.healed_at = Some(ctx.now());
    ctx.detect = Detect::CommitAfterHeal;
}

fn signal(sig: &str, pid: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").args([sig, pid]).stderr(std::process::Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "kill {sig} {pid}: {status}");
    Ok(())
}

/// Freezes every process of the node (so none reacts to another's death), then kills them all.
fn kill_node(ctx: &mut Ctx, victim: usize) {
    let mut all = Vec::new();
    // Repeat until the tree stops growing: a process may fork while we look.
    loop {
        let pids = ctx.cluster.node_processes(victim);
        let new: Vec<u32> = pids.into_iter().filter(|p| !all.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for p in &new {
            let _ = signal("-STOP", &p.to_string());
        }
        all.extend(new);
    }
    for p in &all {
        let _ = signal("-KILL", &p.to_string());
    }
    ctx.cluster.agents[victim].kill9();
    ctx.notes.push(format!("killed {} processes of the node at once", all.len()));
}

/// All etcd down: Submit must not answer OK without a durable record; after recovery
/// everything completes.
async fn etcd_down(ctx: &mut Ctx) -> anyhow::Result<()> {
    tokio::task::block_in_place(|| ctx.cluster.etcd.stop());
    let until = Instant::now() + Duration::from_secs(6 + ctx.plan.outage_s);
    let (mut refused, mut k) = (Vec::new(), 0);
    while Instant::now() < until {
        let label = format!("probe{k}");
        let job = pb::JobSpec {
            argv: vec!["bash".into(), "-c".into(), ctx.witness.line(&label, "true")],
            internet_access: true,
            ..Default::default()
        };
        let submit = ctx.client.submit_job(pb::SubmitJobRequest { job: Some(job), ..Default::default() });
        match tokio::time::timeout(Duration::from_secs(3), submit).await {
            Ok(Ok(id)) => {
                ctx.violations.push(format!("Submit returned OK ({id}) while every etcd was down"));
                ctx.acked.push(super::check::Acked { job_id: id, label, group: "probes".into() });
            }
            Ok(Err(e)) => refused.push(match &e {
                corral_client::ClientError::Status(s) => format!("{:?}", s.code()),
                other => other.to_string(),
            }),
            Err(_) => refused.push("no answer in 3 s".into()),
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    refused.sort();
    refused.dedup();
    ctx.notes.push(format!("{k} submits during the outage, refused with {refused:?}"));
    tokio::task::block_in_place(|| ctx.cluster.etcd.restart())?;
    heal_now(ctx);
    Ok(())
}

/// Isolated from etcd and NATS past its lease, then healed: fenced, then registered again.
async fn isolated(ctx: &mut Ctx, node: String) -> anyhow::Result<()> {
    let (etcd, nats) = (ctx.cluster.etcd.port(), ctx.cluster.nats.port());
    ctx.cluster.netns()?.cut(etcd)?;
    ctx.cluster.netns()?.cut(nats)?;
    tokio::time::sleep(Duration::from_secs(12 + ctx.plan.outage_s)).await;
    ctx.cluster.netns()?.heal(etcd)?;
    ctx.cluster.netns()?.heal(nats)?;
    let healed = ctx.now();
    ctx.healed_at = Some(healed);
    ctx.detect = Detect::NodeGone(node.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = ctx.records.events();
        if events.iter().any(|e| e.at >= healed && e.change == Change::NodeUp(node.clone())) {
            ctx.notes.push("re-registered after the heal".into());
            return Ok(());
        }
        if Instant::now() > deadline {
            ctx.violations.push(format!("{node} did not register again within 30 s of the heal"));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sandbox fills its disk quota and a job fills its /tmp: both get ENOSPC, the job fails as
/// a resource error, and no node record disappears (the agents keep heartbeating).
async fn disk_full(ctx: &mut Ctx) -> anyhow::Result<()> {
    let c = ctx.client.clone();
    let s = c.create(pb::CreateSandboxRequest { disk_mb: 16, ..Default::default() }).await?;
    let fill = c.run_shell(&s.id, "head -c 100000000 /dev/zero > /workspace/fill").await?;
    let err = String::from_utf8_lossy(&fill.stderr).into_owned();
    if fill.exit_code == 0 || !err.contains("No space left on device") {
        ctx.violations.push(format!("sandbox disk fill: exit {} stderr {err:?}", fill.exit_code));
    }
    let after = c.run_shell(&s.id, "rm /workspace/fill && echo alive").await?;
    if after.stdout != b"alive\n" {
        ctx.violations.push(format!("the sandbox is unusable after ENOSPC: {after:?}"));
    }
    c.destroy(&s.id).await?;
    let job = pb::JobSpec {
        shell: "head -c 1000000000 /dev/zero > /tmp/fill".into(),
        memory_mb: 64,
        timeout_seconds: 60.0,
        ..Default::default()
    };
    let id = c.submit_job(pb::SubmitJobRequest { job: Some(job), ..Default::default() }).await?;
    ctx.acked.push(super::check::Acked { job_id: id.clone(), label: String::new(), group: "fill".into() });
    let done = c.wait_job_done(&id, Some(Duration::from_secs(60))).await.context("the filling job")?;
    let stderr = String::from_utf8_lossy(&done.result.clone().unwrap_or_default().stderr).into_owned();
    if done.state != pb::JobState::Failed as i32 || !stderr.contains("No space left on device") {
        ctx.violations.push(format!("job /tmp fill: {:?} stderr {stderr:?}", done.state));
    }
    let gone: Vec<String> = ctx
        .records
        .events()
        .iter()
        .filter_map(|e| if let Change::NodeGone(n) = &e.change { Some(n.clone()) } else { None })
        .collect();
    if !gone.is_empty() {
        ctx.violations.push(format!("node records vanished during the disk fills: {gone:?}"));
    }
    ctx.notes.push("sandbox and job got ENOSPC; node records stayed".into());
    Ok(())
}

/// F3: the leader is killed while a batch submit (and keyed single submits) are in flight on
/// it; the client retries each key on the standby until it answers OK.
async fn coordinator_killed_during_submit(ctx: &mut Ctx) -> anyhow::Result<()> {
    let first = corral_client::Client::connect(&ctx.cluster.endpoints[0]).await?;
    let old = ctx.cluster.wait_leader().await?;
    let key = format!("f3-batch-{}", ctx.plan.delay_ms);
    let req = ctx.batch_request(&key);
    let singles: Vec<(String, pb::SubmitJobRequest)> = (0..4)
        .map(|k| {
            let label = format!("s{k}");
            let job = pb::JobSpec {
                argv: vec!["bash".into(), "-c".into(), ctx.witness.line(&label, "sleep 1")],
                internet_access: true,
                ..Default::default()
            };
            (
                label,
                pb::SubmitJobRequest {
                    job: Some(job),
                    idempotency_key: format!("f3-single-{k}"),
                    ..Default::default()
                },
            )
        })
        .collect();
    let delay = Duration::from_millis(ctx.plan.delay_ms % 40);
    let (batch_first, singles_first) = {
        let mut batches = first.batches.clone();
        let batch = batches.submit(req.clone());
        let jobs = futures::future::join_all(singles.iter().map(|(_, r)| {
            let mut jobs = first.jobs.clone();
            let r = r.clone();
            async move { jobs.submit(r).await }
        }));
        let victim = &mut ctx.cluster.coordinators[0];
        let kill = async {
            tokio::time::sleep(delay).await;
            tokio::task::block_in_place(|| victim.kill9());
        };
        let (b, j, ()) = tokio::join!(batch, jobs, kill);
        (b, j)
    };
    ctx.fault_at = Some(ctx.now());
    ctx.detect = Detect::NewLeader(old);
    ctx.notes.push(format!(
        "kill after {delay:?}: first batch submit {}, {} of 4 singles answered",
        if batch_first.is_ok() { "answered" } else { "failed" },
        singles_first.iter().filter(|r| r.is_ok()).count()
    ));
    // Retry every key on the standby until it answers, then once more: the same object.
    let retry_batch = || {
        let (mut b, r) = (ctx.client.batches.clone(), req.clone());
        async move { b.submit(r).await }
    };
    let batch_id = retry_until_ok(retry_batch).await?.batch_id;
    let again = ctx.client.batches.clone().submit(req.clone()).await?.into_inner();
    if again.batch_id != batch_id || again.created {
        ctx.violations
            .push(format!("batch key maps to {} then {} (created {})", batch_id, again.batch_id, again.created));
    }
    if let Ok(r) = &batch_first
        && r.get_ref().batch_id != batch_id
    {
        ctx.violations.push(format!("acked batch {} but the retry made {batch_id}", r.get_ref().batch_id));
    }
    ctx.acked_batch(&batch_id)?;
    for ((label, r), first) in singles.iter().zip(singles_first) {
        let retry_job = || {
            let (mut j, r) = (ctx.client.jobs.clone(), r.clone());
            async move { j.submit(r).await }
        };
        let id = retry_until_ok(retry_job).await?.job_id;
        if let Ok(f) = first
            && f.get_ref().job_id != id
        {
            ctx.violations.push(format!("key {} acked {} but maps to {id}", r.idempotency_key, f.get_ref().job_id));
        }
        ctx.acked.push(super::check::Acked { job_id: id, label: label.clone(), group: "singles".into() });
    }
    Ok(())
}

async fn retry_until_ok<T, F, Fut>(mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) if Instant::now() > deadline => return Err(e).context("retrying a keyed submit on the standby"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
