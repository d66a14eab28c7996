//! Corral's latency through the Rust SDK: `create → run_argv → destroy`, phase by phase.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use corral_client::Client;
use corral_client::v1 as pb;
use serde_json::{Value, json};

use crate::raw::PYTHON;
use crate::stats::Samples;

/// One mode's latency figures.
#[derive(Debug, Default)]
pub struct CorralLatency {
    /// `create` until it returned a RUNNING sandbox (create-to-ready).
    pub create: Samples,
    /// The first `run_argv(["true"])` in a fresh sandbox.
    pub first_exec: Samples,
    pub destroy: Samples,
    /// create → exec `true` → destroy.
    pub cycle_true: Samples,
    /// create → exec `python3 -c 'print(1)'` → destroy.
    pub cycle_python: Samples,
    /// The python exec alone.
    pub exec_python: Samples,
}

impl CorralLatency {
    /// Adds another round's samples.
    pub fn merge(&mut self, o: CorralLatency) {
        self.create.extend(o.create);
        self.first_exec.extend(o.first_exec);
        self.destroy.extend(o.destroy);
        self.cycle_true.extend(o.cycle_true);
        self.cycle_python.extend(o.cycle_python);
        self.exec_python.extend(o.exec_python);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "create_to_ready": self.create.to_json(),
            "first_exec_true": self.first_exec.to_json(),
            "destroy": self.destroy.to_json(),
            "cycle_true": self.cycle_true.to_json(),
            "cycle_python": self.cycle_python.to_json(),
            "exec_python": self.exec_python.to_json(),
        })
    }
}

/// Connects and waits until the server can place a sandbox (agents registered), as the e2e
/// tests' `ready_client` does.
pub async fn ready_client(endpoint: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let c = Client::connect(endpoint).await?;
            let s = c.create(Default::default()).await?;
            c.destroy(&s.id).await?;
            anyhow::Ok(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("{endpoint} never became ready"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Phase durations of one cycle.
struct Cycle {
    create: Duration,
    exec: Duration,
    destroy: Duration,
    total: Duration,
}

async fn cycle(c: &Client, argv: &[&str], expect: &[u8]) -> anyhow::Result<Cycle> {
    let t0 = Instant::now();
    let s = c.create(Default::default()).await.context("create")?;
    let t1 = Instant::now();
    let out = c.run_argv(&s.id, argv).await.context("exec")?;
    let t2 = Instant::now();
    c.destroy(&s.id).await.context("destroy")?;
    let t3 = Instant::now();
    ensure!(s.state == pb::SandboxState::Running as i32, "create returned state {} instead of RUNNING", s.state);
    ensure!(
        out.exit_code == 0 && out.stdout == expect,
        "{argv:?} in sandbox {} exited {} with stdout {:?} stderr {:?}",
        s.id,
        out.exit_code,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Cycle { create: t1 - t0, exec: t2 - t1, destroy: t3 - t2, total: t3 - t0 })
}

/// `warmup` untimed cycles, then `n` timed cycles with `true` and `n` with python.
pub async fn measure(c: &Client, label: &str, warmup: usize, n: usize) -> anyhow::Result<CorralLatency> {
    let python = [PYTHON, "-c", "print(1)"];
    for _ in 0..warmup {
        cycle(c, &["true"], b"").await?;
        cycle(c, &python, b"1\n").await?;
    }
    let mut r = CorralLatency::default();
    for _ in 0..n {
        let x = cycle(c, &["true"], b"").await.with_context(|| format!("{label}: cycle with true"))?;
        r.create.push(x.create);
        r.first_exec.push(x.exec);
        r.destroy.push(x.destroy);
        r.cycle_true.push(x.total);
    }
    for _ in 0..n {
        let x = cycle(c, &python, b"1\n").await.with_context(|| format!("{label}: cycle with python"))?;
        r.exec_python.push(x.exec);
        r.cycle_python.push(x.total);
    }
    Ok(r)
}
