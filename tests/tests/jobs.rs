//! Jobs and batches end to end: against `corral dev`, and against a cluster (nats-server + etcd +
//! coordinators + 2 agents as separate processes) under faults. See tests/src/jobs.rs for the
//! witness that checks concurrency and duplicate runs from outside the sandboxes.

use corral_e2e::jobs::*;
use corral_e2e::*;

const CAP_ENV: (&str, &str) = ("CORRAL_COORDINATOR__MAX_RUNNING_JOBS_PER_TENANT", "10");

async fn dev_with(env: &[(&str, &str)]) -> anyhow::Result<(DevServer, corral_client::Client)> {
    let server = DevServer::start_with_env(env)?;
    let client = ready_client(&server.endpoint).await?;
    Ok((server, client))
}

/// Runs `body`; prints the server's log when it fails.
async fn on_dev<F, Fut>(env: &[(&str, &str)], body: F) -> anyhow::Result<()>
where
    F: FnOnce(corral_client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (server, client) = dev_with(env).await?;
    let result = body(client).await;
    if result.is_err() {
        eprintln!("--- corral dev log:\n{}", server.proc.log_tail(8000));
    }
    result
}

async fn on_cluster<F, Fut>(env: &[(&str, &str)], body: F) -> anyhow::Result<()>
where
    F: FnOnce(corral_client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    on(Cluster::start_with_env(2, env)?, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_job_basics() -> anyhow::Result<()> {
    on_dev(&[], |c| async move { job_basics(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_job_control() -> anyhow::Result<()> {
    on_dev(&[], |c| async move { job_control(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_batch_cap_and_watch() -> anyhow::Result<()> {
    on_dev(&[], |c| async move { batch_run(&c, 40, 4, "0.05").await.map(drop) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_job_isolation() -> anyhow::Result<()> {
    on_dev(&[], |c| async move { job_isolation(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_docker_job() -> anyhow::Result<()> {
    on_dev(&[], |c| async move { docker_job(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_interrupted_batch_submit_is_finished_by_a_retry() -> anyhow::Result<()> {
    on_dev(&[("CORRAL_AGENT__NOOP_RUNTIME", "true"), ("CORRAL_AGENT__MAX_SANDBOXES", "10000")], |c| async move {
        interrupted_batch_submit(&c).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_batch_cancel() -> anyhow::Result<()> {
    on_dev(&[], |c| async move { batch_cancel(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_quota_race() -> anyhow::Result<()> {
    on_dev(&[CAP_ENV], |c| async move { quota_race(&c, 10).await }).await
}

/// A job's sandbox has no sandbox record; the agent's GC must leave it to the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_long_job_outlives_gc_sweeps() -> anyhow::Result<()> {
    on_dev(&[("CORRAL_AGENT__GC_INTERVAL_SECONDS", "1")], |c| async move {
        let id = c
            .submit_job(corral_client::v1::SubmitJobRequest {
                job: Some(shell_job("sleep 4; echo done")),
                ..Default::default()
            })
            .await?;
        let job = wait_done(&c, &id, std::time::Duration::from_secs(60)).await?;
        anyhow::ensure!(state_of(&job) == corral_client::v1::JobState::Completed, "{job:?}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_thousand_item_batch() -> anyhow::Result<()> {
    on_dev(&[], |c| async move {
        let witness = batch_run(&c, 1000, 20, "0").await?;
        anyhow::ensure!(witness.overlapping().is_empty(), "items ran twice at once: {:?}", witness.overlapping());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_job_basics() -> anyhow::Result<()> {
    on_cluster(&[], |c| async move {
        job_basics(&c).await?;
        job_control(&c).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_big_jobs() -> anyhow::Result<()> {
    on_cluster(&[], |c| async move { big_jobs(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_quota_race() -> anyhow::Result<()> {
    on_cluster(&[CAP_ENV], |c| async move { quota_race(&c, 10).await }).await
}

/// The headline: 1,000 items over 2 agents, at most 20 at once, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_thousand_item_batch() -> anyhow::Result<()> {
    on_cluster(&[], |c| async move {
        let witness = batch_run(&c, 1000, 20, "0").await?;
        anyhow::ensure!(witness.overlapping().is_empty(), "items ran twice at once: {:?}", witness.overlapping());
        Ok(())
    })
    .await
}
