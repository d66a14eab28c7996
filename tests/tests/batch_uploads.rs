//! Batches sent in parts, against a cluster (nats-server + etcd + coordinator + an agent with the
//! `noop` runtime, separate processes) and against `corral dev`. See tests/src/uploads.rs.

use corral_e2e::uploads::*;
use corral_e2e::*;

/// Abandoned uploads are swept after 2 s here (the default is 600 s).
const UPLOAD_TIMEOUT: (&str, &str) = ("CORRAL_COORDINATOR__BATCH_UPLOAD_TIMEOUT_SECONDS", "2");

async fn on_cluster<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(corral_client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    on(Cluster::start_with_envs(1, &[UPLOAD_TIMEOUT], &NOOP_AGENT)?, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_batch_in_parts_completes() -> anyhow::Result<()> {
    on_cluster(|c| async move {
        batch_in_parts(&c).await?;
        repeated_parts(&c).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_interrupted_upload_is_resumed_or_abandoned() -> anyhow::Result<()> {
    on_cluster(|c| async move { interrupted_upload(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_limit_and_bad_bytes_errors() -> anyhow::Result<()> {
    on_cluster(|c| async move { limits_and_bad_bytes(&c).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_batch_in_parts_completes() -> anyhow::Result<()> {
    let env: Vec<(&str, &str)> = NOOP_AGENT.into_iter().chain([UPLOAD_TIMEOUT]).collect();
    let server = DevServer::start_with_env(&env)?;
    let c = ready_client(&server.endpoint).await?;
    let result = async {
        batch_in_parts(&c).await?;
        interrupted_upload(&c).await
    }
    .await;
    if result.is_err() {
        eprintln!("--- corral dev log:\n{}", server.proc.log_tail(8000));
    }
    result
}
