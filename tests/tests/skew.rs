//! Clock skew: one coordinator, or one agent, runs 90 s ahead of or behind the others (libfaketime,
//! Debian `faketime`). Sandbox timeouts must neither fire early nor stay unenforced, and the times
//! shown to users stay ordered (created <= started <= ended) whatever clock wrote them.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use corral_client::{Client, v1 as pb};
use corral_core::keys::LeaderKey;
use corral_core::store::{self, StateStore, etcd::EtcdStore};
use corral_e2e::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Environment that runs a process `skew` off (e.g. "+90s").
fn skewed(skew: &'static str) -> anyhow::Result<[(&'static str, &'static str); 2]> {
    let lib = if cfg!(target_arch = "aarch64") {
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"
    } else {
        LIBFAKETIME
    };
    ensure!(std::path::Path::new(lib).exists(), "{lib} is missing: apt-get install faketime (scripts/install-deps.sh)");
    Ok([("LD_PRELOAD", lib), ("FAKETIME", skew)])
}

/// The endpoint of the coordinator holding the leader key, once there is one.
async fn leader_endpoint(cluster: &Cluster) -> anyhow::Result<String> {
    let store = EtcdStore::connect(&[cluster.etcd.endpoint()]).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(kv) = store.get(&LeaderKey.to_string()).await? {
            return Ok(store::decode::<corral_coordinator::leader::LeaderRecord>(&kv)?.endpoint);
        }
        ensure!(Instant::now() < deadline, "no coordinator became the leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sandbox with a 6 s timeout is still running 3 s after its create answered and ends EXPIRED
/// (not much later than 6 s, but allowing for a loaded machine), with ordered times.
async fn expires_on_time(client: &Client) -> anyhow::Result<()> {
    let s = client.create(pb::CreateSandboxRequest { timeout_seconds: 6, ..Default::default() }).await?;
    let created = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alive = client.get(&s.id).await?;
    ensure!(
        state(&alive) == pb::SandboxState::Running,
        "expired early, {:?} after create: {alive:?}",
        created.elapsed()
    );
    let out = client.run_argv(&s.id, &["echo", "still here"]).await?;
    ensure!(out.stdout == b"still here\n", "{out:?}");
    let ended = wait_state(client, &s.id, pb::SandboxState::Expired, Duration::from_secs(30)).await?;
    eprintln!("expired {:?} after create (timeout 6 s)", created.elapsed());
    ensure!(
        ended.created_at_ms <= ended.started_at_ms && ended.started_at_ms <= ended.ended_at_ms,
        "times out of order: created {} started {} ended {}",
        ended.created_at_ms,
        ended.started_at_ms,
        ended.ended_at_ms
    );
    Ok(())
}

/// A job's times are ordered, whichever clocks wrote them.
async fn job_times_are_ordered(client: &Client) -> anyhow::Result<()> {
    let job = pb::JobSpec { shell: "echo ok".into(), ..Default::default() };
    let id = client.submit_job(pb::SubmitJobRequest { job: Some(job), ..Default::default() }).await?;
    let job = client.wait_job_done(&id, Some(Duration::from_secs(60))).await?;
    ensure!(job.state == pb::JobState::Completed as i32, "{job:?}");
    ensure!(
        job.created_at_ms <= job.started_at_ms && job.started_at_ms <= job.finished_at_ms,
        "job times out of order: created {} started {} finished {}",
        job.created_at_ms,
        job.started_at_ms,
        job.finished_at_ms
    );
    Ok(())
}

/// A batch with a 6 s deadline is still running 3 s after its submit and is cancelled by its
/// deadline after that.
async fn batch_deadline_on_time(client: &Client) -> anyhow::Result<()> {
    let items = (0..4).map(|_| pb::JobSpec { shell: "sleep 60".into(), ..Default::default() }).collect();
    let req = pb::SubmitBatchRequest { items, deadline_seconds: 6.0, max_concurrency: 2, ..Default::default() };
    let batch = client.submit_batch(req).await?;
    let submitted = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = client.get_batch(&batch).await?;
    ensure!(
        b.state == pb::BatchState::Running as i32,
        "batch ended early, {:?} after submit: {b:?}",
        submitted.elapsed()
    );
    loop {
        let b = client.get_batch(&batch).await?;
        if b.state == pb::BatchState::Cancelled as i32 {
            ensure!(b.reason.contains("deadline"), "{b:?}");
            ensure!(b.created_at_ms <= b.finished_at_ms, "batch times out of order: {b:?}");
            eprintln!("batch cancelled by its deadline {:?} after submit (deadline 6 s)", submitted.elapsed());
            return Ok(());
        }
        ensure!(submitted.elapsed() < Duration::from_secs(30), "batch deadline not enforced after 30 s: {b:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One coordinator is `skew` off; `skewed_leads` says whether it runs the reconciler (then the
/// other one takes the requests) or takes the requests (then the other one leads).
async fn skewed_coordinator(skew: &'static str, skewed_leads: bool) -> anyhow::Result<()> {
    let env = skewed(skew)?;
    let first_env: &[(&str, &str)] = if skewed_leads { &env } else { &[] };
    let cluster = Cluster::start_with_env(1, first_env)?;
    let leader = leader_endpoint(&cluster).await?;
    ensure!(cluster.endpoint.ends_with(&leader), "the first coordinator leads ({leader} vs {})", cluster.endpoint);
    let second_env: &[(&str, &str)] = if skewed_leads { &[] } else { &env };
    let (_second, second_endpoint) = cluster.add_coordinator(second_env)?;
    let client = ready_client(&second_endpoint).await?;
    let result = async {
        expires_on_time(&client).await.context("sandbox timeout")?;
        batch_deadline_on_time(&client).await.context("batch deadline")?;
        job_times_are_ordered(&client).await.context("job times")
    }
    .await;
    if result.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_coordinator_ahead() -> anyhow::Result<()> {
    skewed_coordinator("+90s", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_coordinator_behind() -> anyhow::Result<()> {
    skewed_coordinator("-90s", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_coordinator_ahead() -> anyhow::Result<()> {
    skewed_coordinator("+90s", true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_coordinator_behind() -> anyhow::Result<()> {
    skewed_coordinator("-90s", true).await
}

/// The agent's clock is `skew` off: timeouts and job times are unaffected.
async fn skewed_agent(skew: &'static str) -> anyhow::Result<()> {
    let env = skewed(skew)?;
    let cluster = Cluster::start_with_envs(1, &[], &env)?;
    let client = ready_client(&cluster.endpoint).await?;
    let result = async {
        expires_on_time(&client).await.context("sandbox timeout")?;
        job_times_are_ordered(&client).await.context("job times")?;
        // An exec timeout is measured inside the sandbox, on no skewed clock.
        let s = client.create(Default::default()).await?;
        let out = client.run(pb::ExecRequest { timeout_seconds: 1.0, ..shell(&s.id, "sleep 20") }).await?;
        ensure!(out.timed_out, "{out:?}");
        client.destroy(&s.id).await?;
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ahead() -> anyhow::Result<()> {
    skewed_agent("+90s").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_behind() -> anyhow::Result<()> {
    skewed_agent("-90s").await
}
