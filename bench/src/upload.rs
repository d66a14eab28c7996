//! `corral-bench upload`: a batch of N items (default 100,000) submitted in parts through the
//! Rust SDK to a cluster coordinator (etcd + NATS, one agent with the `noop` runtime): the time
//! until the batch is accepted, and the coordinator's RSS before, after, and at its peak
//! (VmHWM). The batch runs at `max_concurrency` 1 and is cancelled once measured, so the figure
//! is the upload's and the pending items' index, not their execution.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use corral_client::v1 as pb;
use corral_testkit::corral::Cluster;
use serde_json::{Value, json};

const AGENT_ENV: &[(&str, &str)] = &[("CORRAL_AGENT__NOOP_RUNTIME", "true")];
const COORDINATOR_ENV: &[(&str, &str)] = &[("CORRAL_COORDINATOR__MAX_QUEUED_JOBS_PER_TENANT", "1000000")];

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Waits until the coordinator's RSS stops moving (allocator settling, watch catching up).
async fn settled_rss(cluster: &Cluster) -> anyhow::Result<u64> {
    let mut last = cluster.coordinator.memory_kib().context("reading coordinator memory")?.0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = cluster.coordinator.memory_kib().context("reading coordinator memory")?.0;
        if now.abs_diff(last) < 256 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Runs the upload; returns the markdown section and its JSON.
pub async fn run(items: usize) -> anyhow::Result<(String, Value)> {
    eprintln!("[bench] upload: starting a cluster (1 noop agent)");
    let cluster = Cluster::start_with_envs(1, COORDINATOR_ENV, AGENT_ENV)?;
    let client = crate::latency::ready_client(&cluster.endpoint).await?;
    let empty = settled_rss(&cluster).await?;
    let spec = |i: usize| pb::JobSpec {
        runtime: pb::Runtime::Noop as i32,
        argv: vec!["noop".into(), format!("item-{i}")],
        ..Default::default()
    };
    let source = (0..items).map(|i| Ok::<_, std::io::Error>(spec(i)));
    let options = pb::SubmitBatchRequest { max_concurrency: 1, ..Default::default() };
    let total = u32::try_from(items).context("too many items")?;
    eprintln!("[bench] upload: {items} items in parts of {}", corral_client::PART_ITEMS);
    let started = Instant::now();
    let mut parts = 0usize;
    let up = client.submit_batch_parts(options, total, source, |_, _| parts += 1).await?;
    let elapsed = started.elapsed();
    let batch = client.get_batch(&up.batch_id).await?;
    ensure!(batch.total == total && batch.received == total, "the batch is not whole: {batch:?}");
    let after = settled_rss(&cluster).await?;
    let peak = cluster.coordinator.memory_kib().context("reading coordinator memory")?.1;
    client.cancel_batch(&up.batch_id).await?;
    let per_item = (after.saturating_sub(empty) * 1024) as f64 / items as f64;
    let md = format!(
        "### Upload: {items} items in {parts} parts (cluster)\n\n\
         | figure | value |\n|---|---|\n\
         | submit until accepted | {:.2} s ({:.0} items/s) |\n\
         | coordinator RSS, empty | {:.1} MiB |\n\
         | coordinator RSS, batch accepted (items pending) | {:.1} MiB |\n\
         | coordinator peak RSS (VmHWM) | {:.1} MiB |\n\
         | RSS growth per pending item | {:.0} bytes |\n",
        elapsed.as_secs_f64(),
        items as f64 / elapsed.as_secs_f64(),
        mib(empty),
        mib(after),
        mib(peak),
        per_item,
    );
    let value = json!({
        "items": items, "parts": parts, "seconds": elapsed.as_secs_f64(),
        "rss_empty_mib": mib(empty), "rss_after_mib": mib(after), "rss_peak_mib": mib(peak),
        "bytes_per_pending_item": per_item,
    });
    Ok((md, value))
}
