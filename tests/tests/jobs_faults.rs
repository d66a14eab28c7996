//! Jobs under faults (RELIABILITY.md F1, F3/F4, F6): `kill -9` of an agent, `kill -9` of the
//! leader coordinator, and a nats-server restart, each in the middle of a witnessed batch. After
//! each: every item reaches a terminal state and completes (0 lost), each job has one committed
//! result (its record), and the witness never saw one item run twice at the same time.

use std::time::{Duration, Instant};

use corral_client::{Client, v1 as pb};
use corral_e2e::jobs::*;
use corral_e2e::*;
use futures::StreamExt;

const ITEMS: usize = 150;
/// A short leader lease so the standby takes over quickly.
const LEASE_ENV: (&str, &str) = ("CORRAL_COORDINATOR__LEADER_LEASE_SECONDS", "4");

/// Submits a witnessed batch on `client` and returns its id once `started` items have finished.
async fn start_batch(client: &Client, witness: &Witness, started: usize) -> anyhow::Result<String> {
    let items: Vec<pb::JobSpec> =
        (0..ITEMS).map(|i| witness.job(&format!("i{i}"), &format!("sleep 0.2; echo {i}"))).collect();
    let req = pb::SubmitBatchRequest { items, max_concurrency: 16, ..Default::default() };
    let batch = client.submit_batch(req).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (client.get_batch(&batch).await?.counts.unwrap_or_default().completed as usize) < started {
        anyhow::ensure!(Instant::now() < deadline, "the batch never got going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(batch)
}

/// Watches the batch to its end (resuming after a broken stream) and checks the invariants.
async fn finish_and_check(client: &Client, batch: &str, witness: &Witness) -> anyhow::Result<()> {
    let mut events: Vec<pb::BatchEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events.len() < ITEMS {
        anyhow::ensure!(Instant::now() < deadline, "only {} of {ITEMS} items finished", events.len());
        let mut stream = match client.watch_batch(batch, events.len() as u64).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // Until the stream ends or breaks (a coordinator died): then resume from what we have.
        while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            anyhow::ensure!(ev.seq as usize == events.len(), "seq {} after {} events", ev.seq, events.len());
            events.push(ev);
        }
    }
    check_events(&events, ITEMS)?;
    anyhow::ensure!(witness.overlapping().is_empty(), "items ran twice at once: {:?}", witness.overlapping());
    anyhow::ensure!(witness.max_concurrent() <= 16, "{} ran at once", witness.max_concurrent());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_batch() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2)?;
    let client = ready_client(&cluster.endpoint).await?;
    let witness = Witness::start().await?;
    let result = async {
        let batch = start_batch(&client, &witness, 20).await?;
        cluster.agents[0].kill9();
        finish_and_check(&client, &batch, &witness).await?;
        // The lost node's attempts were retried without counting against the (zero) retries.
        let jobs =
            client.list_jobs(pb::ListJobsRequest { batch_id: batch, page_size: 1000, ..Default::default() }).await?;
        anyhow::ensure!(jobs.jobs.iter().all(|j| j.failures == 0), "an infrastructure failure was counted");
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_batch() -> anyhow::Result<()> {
    let mut cluster = Cluster::start_with_env(2, &[LEASE_ENV])?;
    // The first coordinator leads; the client talks to the standby, which takes over.
    let first = ready_client(&cluster.endpoint).await?;
    first.list_languages().await?;
    let (mut standby, endpoint) = cluster.add_coordinator(&[LEASE_ENV])?;
    let client = ready_client(&endpoint).await?;
    let witness = Witness::start().await?;
    let result = async {
        let batch = start_batch(&client, &witness, 20).await?;
        cluster.coordinator.kill9();
        finish_and_check(&client, &batch, &witness).await
    }
    .await;
    if result.is_err() {
        eprintln!("{}\n--- standby:\n{}", cluster_logs(&cluster), standby.log_tail(6000));
    }
    standby.stop(Duration::from_secs(5));
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_batch() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2)?;
    let client = ready_client(&cluster.endpoint).await?;
    let witness = Witness::start().await?;
    let result = async {
        let batch = start_batch(&client, &witness, 20).await?;
        cluster.nats.restart()?;
        finish_and_check(&client, &batch, &witness).await
    }
    .await;
    if result.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    result
}
