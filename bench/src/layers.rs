//! The runtime layer alone: the agent's `BwrapRuntime` driven in this process (no coordinator, no
//! store, no bus, no gRPC), so the report can split Corral's added latency into what the sandbox
//! runtime costs and what orchestration around it costs.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use corral_agent::runtime::bwrap::{BwrapConfig, BwrapRuntime};
use corral_agent::runtime::{ExecEvent, Runtime};
use corral_core::ids::{ExecId, SandboxId, TenantId};
use corral_core::model::{Command, ExecSpec, RuntimeKind, SandboxSpec};
use serde_json::{Value, json};

use crate::stats::Samples;

#[derive(Debug, Default)]
pub struct RuntimeLatency {
    pub create: Samples,
    pub exec: Samples,
    pub destroy: Samples,
    pub cycle: Samples,
}

impl RuntimeLatency {
    /// Adds another round's samples.
    pub fn merge(&mut self, o: RuntimeLatency) {
        self.create.extend(o.create);
        self.exec.extend(o.exec);
        self.destroy.extend(o.destroy);
        self.cycle.extend(o.cycle);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "create": self.create.to_json(),
            "exec_true": self.exec.to_json(),
            "destroy": self.destroy.to_json(),
            "cycle_true": self.cycle.to_json(),
        })
    }
}

/// The spec the coordinator's defaults produce (1 cpu, 512 MiB, 1024 pids).
fn spec() -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::random(),
        tenant: TenantId::default_tenant(),
        runtime: RuntimeKind::Bwrap,
        name: None,
        cpus: 1.0,
        memory_mb: 512,
        pids_limit: 1024,
        timeout_seconds: 300,
        internet_access: false,
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        workdir: "/workspace".to_owned(),
        image: String::new(),
        disk_mb: 0,
        codebase: None,
    }
}

async fn run_true(rt: &BwrapRuntime, id: &SandboxId) -> anyhow::Result<()> {
    let exec = ExecSpec {
        command: Command::Argv(vec!["true".to_owned()]),
        env: BTreeMap::new(),
        cwd: String::new(),
        timeout_ms: 300_000,
        stdin: Vec::new(),
        max_output_bytes: 0,
        side_channel: false,
    };
    let mut handle = rt.exec(id, ExecId::random(), exec).await?;
    while let Some(ev) = handle.events.recv().await {
        if let ExecEvent::Exit(status) = ev {
            ensure!(status.exit_code == 0, "true exited with {status:?}");
            return Ok(());
        }
    }
    bail!("the exec ended without an exit event")
}

/// The agent's bubblewrap runtime, in this process, with its own state directory.
pub struct InProcess {
    rt: BwrapRuntime,
    _dir: tempfile::TempDir,
}

impl InProcess {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("corral-bench-runtime-").tempdir()?;
        let config = BwrapConfig::with_state_dir(dir.path()).context("configuring the bubblewrap runtime")?;
        let rt = BwrapRuntime::new(config).context("starting the bubblewrap runtime")?;
        Ok(Self { rt, _dir: dir })
    }
}

/// `warmup` + `n` cycles of create → exec `true` → destroy.
pub async fn measure(p: &InProcess, warmup: usize, n: usize) -> anyhow::Result<RuntimeLatency> {
    let rt = &p.rt;
    let mut r = RuntimeLatency::default();
    for i in 0..warmup + n {
        let spec = spec();
        let t0 = Instant::now();
        rt.create(&spec).await.context("runtime create")?;
        let t1 = Instant::now();
        run_true(rt, &spec.id).await.context("runtime exec")?;
        let t2 = Instant::now();
        rt.destroy(&spec.id).await.context("runtime destroy")?;
        let t3 = Instant::now();
        if i >= warmup {
            r.create.push(t1 - t0);
            r.exec.push(t2 - t1);
            r.destroy.push(t3 - t2);
            r.cycle.push(t3 - t0);
        }
    }
    Ok(r)
}
