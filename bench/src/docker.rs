//! The Docker rows: the raw `docker` CLI next to Corral's Docker runtime in dev and cluster mode.
//!
//! Raw containers carry a `corral-bench.raw` label and Corral's run on node ids chosen here, so
//! [`Cleanup`] can remove whatever a failed run leaves behind (Corral's containers outlive their
//! agent by design).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use corral_client::Client;
use corral_client::v1 as pb;
use serde_json::{Value, json};

use crate::stats::Samples;

/// The image every Docker row runs (`deploy/images/build.sh` builds it).
pub const IMAGE: &str = "corral/base";
/// Label on the raw containers (value: this process's id).
const RAW_LABEL: &str = "corral-bench.raw";
/// Corral's label naming the node whose agent created a container.
const NODE_LABEL: &str = "corral.node_id";
/// How long engine checks may take before the engine counts as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Raw `docker` CLI figures.
#[derive(Debug, Default)]
pub struct RawDocker {
    /// `docker run --rm corral/base true`, wall time.
    pub run_rm: Samples,
    /// `docker create corral/base true` + `docker start ID`.
    pub create_start: Samples,
    /// The same with `--network none` on create (a Corral sandbox's default network).
    pub create_start_no_net: Samples,
    /// `docker rm -f -v ID` of an exited container (not part of the create + start figure).
    pub rm: Samples,
}

impl RawDocker {
    pub fn merge(&mut self, o: RawDocker) {
        self.run_rm.extend(o.run_rm);
        self.create_start.extend(o.create_start);
        self.create_start_no_net.extend(o.create_start_no_net);
        self.rm.extend(o.rm);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "run_rm_true": self.run_rm.to_json(),
            "create_start_true": self.create_start.to_json(),
            "create_start_true_network_none": self.create_start_no_net.to_json(),
            "rm_f": self.rm.to_json(),
        })
    }
}

/// One mode's figures for `runtime=DOCKER image=corral/base`.
#[derive(Debug, Default)]
pub struct DockerLatency {
    /// `create` until it returned a RUNNING sandbox.
    pub create: Samples,
    /// The first `run_argv(["true"])` in a fresh sandbox.
    pub first_exec: Samples,
    pub destroy: Samples,
    /// create → exec `true` → destroy (`corral run --runtime docker -- true`).
    pub cycle: Samples,
}

impl DockerLatency {
    pub fn merge(&mut self, o: DockerLatency) {
        self.create.extend(o.create);
        self.first_exec.extend(o.first_exec);
        self.destroy.extend(o.destroy);
        self.cycle.extend(o.cycle);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "create_to_ready": self.create.to_json(),
            "first_exec_true": self.first_exec.to_json(),
            "destroy": self.destroy.to_json(),
            "cycle_true": self.cycle.to_json(),
        })
    }
}

/// Everything the `docker` sub-command measured.
#[derive(Debug, Default)]
pub struct DockerResults {
    /// The engine's version (`docker version`).
    pub engine: String,
    pub iterations: usize,
    pub raw: RawDocker,
    pub dev: DockerLatency,
    pub cluster: DockerLatency,
}

impl DockerResults {
    pub fn to_json(&self) -> Value {
        let added = |l: &DockerLatency| {
            json!({
                "create_to_ready_over_create_start_p50_ms":
                    crate::stats::round3(l.create.p50() - self.raw.create_start.p50()),
                "create_to_ready_over_create_start_network_none_p50_ms":
                    crate::stats::round3(l.create.p50() - self.raw.create_start_no_net.p50()),
                "cycle_over_run_rm_p50_ms": crate::stats::round3(l.cycle.p50() - self.raw.run_rm.p50()),
            })
        };
        json!({
            "engine": self.engine,
            "image": IMAGE,
            "iterations": self.iterations,
            "raw": self.raw.to_json(),
            "dev": self.dev.to_json(),
            "dev_added_over_raw": added(&self.dev),
            "cluster": self.cluster.to_json(),
            "cluster_added_over_raw": added(&self.cluster),
        })
    }
}

/// Runs a `docker` command to completion within `timeout`; the error names the command.
fn docker(args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the `docker` CLI (is it installed and on PATH?)")?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`docker {}` did not finish within {timeout:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child.wait_with_output()?)
}

/// Runs a `docker` command that must succeed; returns its trimmed stdout.
fn docker_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = docker(args, Duration::from_secs(120))?;
    ensure!(
        out.status.success(),
        "`docker {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Fails with a clear message unless the engine answers and has the image; returns its version.
pub fn check_engine() -> anyhow::Result<String> {
    let out = docker(&["version", "--format", "{{.Server.Version}}"], CHECK_TIMEOUT)
        .context("the Docker engine is unreachable")?;
    if !out.status.success() {
        bail!(
            "the Docker engine is unreachable (`docker version` exited {}): {} — is dockerd running, and may \
             this user use its socket (DOCKER_HOST, default /var/run/docker.sock)?",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let image = format!("{IMAGE}:latest");
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", &image], CHECK_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "the image {image} is not in the local Docker engine; build it with deploy/images/build.sh"
    );
    Ok(version)
}

/// Removes, when dropped, every container of this run: raw ones by label, Corral's by node id.
pub struct Cleanup {
    pub nodes: Vec<String>,
}

impl Cleanup {
    fn filters(&self) -> Vec<String> {
        let mut f = vec![format!("label={RAW_LABEL}={}", std::process::id())];
        f.extend(self.nodes.iter().map(|n| format!("label={NODE_LABEL}={n}")));
        f
    }

    /// Ids of this run's containers (any state).
    pub fn leftovers(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for filter in self.filters() {
            let out = docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &filter])?;
            ids.extend(out.lines().map(str::to_owned));
        }
        Ok(ids)
    }

    /// Waits up to `wait` for Corral's asynchronous teardown, then force-removes what is left;
    /// returns how many containers had to be removed.
    pub fn sweep(&self, wait: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + wait;
        loop {
            let ids = self.leftovers()?;
            if ids.is_empty() {
                return Ok(0);
            }
            if Instant::now() > deadline {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                docker_ok(&args)?;
                return Ok(ids.len());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self.sweep(Duration::ZERO) {
            Ok(0) => {}
            Ok(n) => eprintln!("[bench] docker: removed {n} container(s) left by this run"),
            Err(e) => eprintln!("[bench] docker: cleanup failed: {e:#}"),
        }
    }
}

fn raw_label() -> String {
    format!("{RAW_LABEL}={}", std::process::id())
}

/// `docker run --rm corral/base true`, wall time.
fn run_rm() -> anyhow::Result<Duration> {
    let label = raw_label();
    let start = Instant::now();
    docker_ok(&["run", "--rm", "--label", &label, IMAGE, "true"])?;
    Ok(start.elapsed())
}

/// `docker create [extra] corral/base true` + `docker start ID` (timed), then `docker rm -f -v ID`
/// (timed separately).
fn create_start(extra: &[&str]) -> anyhow::Result<(Duration, Duration)> {
    let label = raw_label();
    let mut args = vec!["create", "--label", &label];
    args.extend(extra);
    args.extend([IMAGE, "true"]);
    let start = Instant::now();
    let id = docker_ok(&args)?;
    let started = docker_ok(&["start", &id]);
    let elapsed = start.elapsed();
    let t = Instant::now();
    docker_ok(&["rm", "-f", "-v", &id])?;
    let rm = t.elapsed();
    started?;
    Ok((elapsed, rm))
}

/// `warmup` untimed, then `n` timed iterations of each raw row (each row in its own block).
pub fn raw(warmup: usize, n: usize) -> anyhow::Result<RawDocker> {
    for _ in 0..warmup {
        run_rm()?;
        create_start(&[])?;
        create_start(&["--network", "none"])?;
    }
    let mut r = RawDocker::default();
    for _ in 0..n {
        r.run_rm.push(run_rm()?);
    }
    for _ in 0..n {
        let (t, rm) = create_start(&[])?;
        r.create_start.push(t);
        r.rm.push(rm);
    }
    for _ in 0..n {
        r.create_start_no_net.push(create_start(&["--network", "none"])?.0);
    }
    Ok(r)
}

struct Cycle {
    create: Duration,
    exec: Duration,
    destroy: Duration,
    total: Duration,
}

/// create (`runtime=DOCKER image=corral/base`) → `run_argv(["true"])` → destroy.
async fn cycle(c: &Client) -> anyhow::Result<Cycle> {
    let req =
        pb::CreateSandboxRequest { runtime: pb::Runtime::Docker as i32, image: IMAGE.into(), ..Default::default() };
    let t0 = Instant::now();
    let s = c.create(req).await.context("create (runtime DOCKER)")?;
    let t1 = Instant::now();
    let out = c.run_argv(&s.id, &["true"]).await;
    let t2 = Instant::now();
    let destroyed = c.destroy(&s.id).await;
    let t3 = Instant::now();
    let out = out.with_context(|| format!("exec in Docker sandbox {}", s.id))?;
    destroyed.with_context(|| format!("destroy of Docker sandbox {}", s.id))?;
    ensure!(s.state == pb::SandboxState::Running as i32, "create returned state {} instead of RUNNING", s.state);
    ensure!(s.runtime == pb::Runtime::Docker as i32, "create returned runtime {} instead of DOCKER", s.runtime);
    ensure!(
        out.exit_code == 0 && out.stdout.is_empty(),
        "`true` in Docker sandbox {} exited {} with stdout {:?} stderr {:?}",
        s.id,
        out.exit_code,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Cycle { create: t1 - t0, exec: t2 - t1, destroy: t3 - t2, total: t3 - t0 })
}

/// `warmup` untimed cycles, then `n` timed ones.
pub async fn measure(c: &Client, label: &str, warmup: usize, n: usize) -> anyhow::Result<DockerLatency> {
    for _ in 0..warmup {
        cycle(c).await.with_context(|| format!("{label}: Docker warm-up cycle"))?;
    }
    let mut r = DockerLatency::default();
    for _ in 0..n {
        let x = cycle(c).await.with_context(|| format!("{label}: Docker cycle"))?;
        r.create.push(x.create);
        r.first_exec.push(x.exec);
        r.destroy.push(x.destroy);
        r.cycle.push(x.total);
    }
    Ok(r)
}
