//! Job throughput, side by side in one run:
//!
//! - 1,000 × `true` and 1,000 × `python3 -c 'print(1)'` as one batch at concurrency 2 × cores, in
//!   dev and cluster mode, next to the raw floor: the same spawns run as bare `bwrap` with the
//!   same parallelism;
//! - scheduling throughput with the benchmark-only `noop` runtime (nothing is spawned, every
//!   state change is still durable in the store): submitted-to-completed jobs/s;
//! - how long SubmitBatch takes to durably accept 1,000 items;
//! - orchestration CPU per job (the Corral processes, and with etcd and nats-server).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use corral_client::{Client, v1 as pb};
use corral_testkit::corral::{Cluster, DevServer};
use serde_json::{Value, json};

use crate::raw::{PYTHON, RawBwrap};

/// Settings that let the noop benchmark run thousands of jobs at once.
const DEV_ENV: &[(&str, &str)] = &[
    ("CORRAL_AGENT__NOOP_RUNTIME", "true"),
    ("CORRAL_AGENT__MAX_SANDBOXES", "100000"),
    ("CORRAL_COORDINATOR__MAX_RUNNING_JOBS_PER_TENANT", "100000"),
    ("CORRAL_COORDINATOR__MAX_QUEUED_JOBS_PER_TENANT", "1000000"),
];

pub struct Opts {
    pub jobs: usize,
    pub noop_jobs: usize,
}

struct Mode {
    name: &'static str,
    client: Client,
    /// Corral's processes, then the services (etcd, nats-server).
    pids: Vec<u32>,
    service_pids: Vec<u32>,
}

/// Runs every job benchmark; returns the markdown section and its JSON.
pub async fn run(opts: &Opts) -> anyhow::Result<(String, Value)> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallel = 2 * cores;
    let raw = RawBwrap::new()?;
    let python = std::path::Path::new(PYTHON).canonicalize().context("resolving python3")?;
    let python = python.to_string_lossy().into_owned();
    let workloads: [(&str, Vec<String>, &[u8]); 2] = [
        ("true", vec!["/usr/bin/true".into()], b""),
        ("python3 -c 'print(1)'", vec![python, "-c".into(), "print(1)".into()], b"1\n"),
    ];

    eprintln!("[bench] jobs: starting corral dev and a cluster (1 agent)");
    let dev = DevServer::start_with_env(DEV_ENV)?;
    let cluster = Cluster::start_with_envs(1, &DEV_ENV[2..], &DEV_ENV[..2])?;
    let modes = [
        Mode {
            name: "dev",
            client: crate::latency::ready_client(&dev.endpoint).await?,
            pids: vec![dev.proc.pid()],
            service_pids: vec![],
        },
        Mode {
            name: "cluster",
            client: crate::latency::ready_client(&cluster.endpoint).await?,
            pids: vec![cluster.coordinator.pid(), cluster.agents[0].pid()],
            service_pids: vec![cluster.etcd.pid(), cluster.nats.pid()],
        },
    ];

    let mut md = format!(
        "### Jobs ({} per row in {ROUNDS} interleaved rounds, concurrency {parallel} = 2 × {cores} cores)\n\n\
         | workload | raw bwrap | dev | dev / raw | cluster | cluster / raw |\n|---|---|---|---|---|---|\n",
        opts.jobs
    );
    let mut rows = Vec::new();
    for (label, argv, expect) in &workloads {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        // Interleaved rounds (raw, dev, cluster, raw, ...) so load from elsewhere on a shared
        // machine falls on every column alike.
        let per_round = opts.jobs.div_ceil(ROUNDS);
        let (mut raw_time, mut times) = (Duration::ZERO, [Duration::ZERO; 2]);
        for round in 1..=ROUNDS {
            eprintln!("[bench] jobs: round {round}/{ROUNDS}, {per_round} × {label}: raw bwrap, dev, cluster");
            raw_time += tokio::task::block_in_place(|| raw_floor(&raw, &args, expect, per_round, parallel))?;
            for (m, t) in modes.iter().zip(&mut times) {
                let spec = pb::JobSpec { argv: argv.clone(), ..Default::default() };
                *t += batch(&m.client, spec, per_round, parallel as u32).await?.0;
            }
        }
        let total = (per_round * ROUNDS) as f64;
        let raw_rate = total / raw_time.as_secs_f64();
        let rates: Vec<f64> = times.iter().map(|t| total / t.as_secs_f64()).collect();
        md += &format!(
            "| {label} | {raw_rate:.0}/s | {:.0}/s | {:.0} % | {:.0}/s | {:.0} % |\n",
            rates[0],
            100.0 * rates[0] / raw_rate,
            rates[1],
            100.0 * rates[1] / raw_rate
        );
        rows.push(json!({"workload": label, "raw_per_s": raw_rate, "dev_per_s": rates[0], "cluster_per_s": rates[1]}));
    }

    md += &format!(
        "\n### Scheduling throughput (`noop` runtime, {} jobs per mode, every state durable)\n\n\
         | mode | jobs/s | accept 1,000 items (p50 of 5) | CPU per job, Corral | CPU per job, with etcd + nats |\n\
         |---|---|---|---|---|\n",
        opts.noop_jobs
    );
    let mut noop = Vec::new();
    for m in &modes {
        eprintln!("[bench] jobs: {} mode, {} noop jobs", m.name, opts.noop_jobs);
        let accept = accept_latency(&m.client).await?;
        let cpu0 = (cpu_ms(&m.pids)?, cpu_ms(&m.service_pids)?);
        let per_batch = 10_000.min(opts.noop_jobs);
        let batches = opts.noop_jobs.div_ceil(per_batch);
        let runs = (0..batches).map(|_| {
            let spec =
                pb::JobSpec { runtime: pb::Runtime::Noop as i32, argv: vec!["noop".into()], ..Default::default() };
            batch(&m.client, spec, per_batch, 10_000)
        });
        // The batches start together; the run ends when the last one finished.
        let mut wall = Duration::ZERO;
        for r in futures::future::join_all(runs).await {
            wall = wall.max(r?.0);
        }
        let total = (batches * per_batch) as f64;
        let corral = (cpu_ms(&m.pids)? - cpu0.0) / total;
        let services = (cpu_ms(&m.service_pids)? - cpu0.1) / total;
        let rate = total / wall.as_secs_f64();
        md += &format!(
            "| {} | {rate:.0} | {:.1} ms | {corral:.3} ms | {:.3} ms |\n",
            m.name,
            accept.as_secs_f64() * 1e3,
            corral + services
        );
        noop.push(json!({"mode": m.name, "jobs_per_s": rate, "accept_1000_ms": accept.as_secs_f64() * 1e3,
            "cpu_ms_per_job": corral, "cpu_ms_per_job_with_services": corral + services}));
    }

    // A big batch at a small cap: a scheduling round follows every report, and it must not walk
    // the batch's waiting items each time.
    let big = opts.noop_jobs.min(10_000);
    md +=
        &format!("\n### One {big}-item `noop` batch at `max_concurrency` {parallel}\n\n| mode | jobs/s |\n|---|---|\n");
    let mut capped = Vec::new();
    for m in &modes {
        eprintln!("[bench] jobs: {} mode, {big} noop jobs at max_concurrency {parallel}", m.name);
        let spec = pb::JobSpec { runtime: pb::Runtime::Noop as i32, argv: vec!["noop".into()], ..Default::default() };
        let (wall, _) = batch(&m.client, spec, big, parallel as u32).await?;
        let rate = big as f64 / wall.as_secs_f64().max(1e-3);
        md += &format!("| {} | {rate:.0} |\n", m.name);
        capped.push(json!({"mode": m.name, "jobs": big, "max_concurrency": parallel, "jobs_per_s": rate}));
    }
    drop(modes);
    drop(cluster);
    drop(dev);
    Ok((md, json!({"parallel": parallel, "jobs": rows, "noop": noop, "noop_capped": capped})))
}

/// Rounds each job workload is measured in.
const ROUNDS: usize = 4;

/// `n` bare bwrap spawns of `argv`, `parallel` at a time; the wall time.
fn raw_floor(raw: &RawBwrap, argv: &[&str], expect: &[u8], n: usize, parallel: usize) -> anyhow::Result<Duration> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..parallel)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let out = raw.command(argv).output()?;
                        ensure!(out.status.success() && out.stdout == expect, "bare bwrap failed: {out:?}");
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?)
    })?;
    Ok(started.elapsed())
}

/// Submits `n` copies of `spec` as one batch and waits until it completed; the time from the
/// submit until the batch's last item finished (the batch's `finished_at_ms`, stamped by the
/// coordinator as it commits that item), and how long the submit itself took. The batch is
/// polled only every [`POLL`]: the end time comes from the record, so the observer adds next to
/// no load to what is measured (the raw floor has no observer at all).
async fn batch(c: &Client, spec: pb::JobSpec, n: usize, concurrency: u32) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let started_ms = corral_core::time::now_ms();
    let req = pb::SubmitBatchRequest { items: vec![spec; n], max_concurrency: concurrency, ..Default::default() };
    let id = c.submit_batch(req).await?;
    let accepted = started.elapsed();
    loop {
        let b = c.get_batch(&id).await?;
        if b.state == pb::BatchState::Completed as i32 {
            let counts = b.counts.unwrap_or_default();
            ensure!(counts.completed as usize == n, "batch ended with {counts:?}");
            ensure!(b.finished_at_ms >= started_ms, "batch {id} finished at {} before its submit", b.finished_at_ms);
            let ms = u64::try_from(b.finished_at_ms - started_ms).unwrap_or(0);
            return Ok((Duration::from_millis(ms), accepted));
        }
        ensure!(started.elapsed() < Duration::from_secs(900), "batch {id} did not finish: {b:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// How often a running batch is polled.
const POLL: Duration = Duration::from_millis(100);

/// Median time for SubmitBatch to return for 1,000 noop items (then waits for them to finish).
async fn accept_latency(c: &Client) -> anyhow::Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let spec = pb::JobSpec { runtime: pb::Runtime::Noop as i32, argv: vec!["noop".into()], ..Default::default() };
        samples.push(batch(c, spec, 1000, 10_000).await?.1);
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// User + system CPU time of processes, in milliseconds.
fn cpu_ms(pids: &[u32]) -> anyhow::Result<f64> {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or(&stat);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let (utime, stime): (f64, f64) = (fields[11].parse()?, fields[12].parse()?);
        total += (utime + stime) / tick * 1000.0;
    }
    Ok(total)
}
