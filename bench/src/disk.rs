//! Disk quotas: what a loop-mounted ext4 disk per sandbox adds to create-to-ready. The agent's
//! runtimes are driven in this process (no warm pool, so every create pays for its disk), with
//! quotas on and off in alternating rounds of one run, so both see the same machine load.

use std::time::Instant;

use anyhow::Context;
use corral_agent::runtime::Runtime;
use corral_agent::runtime::bwrap::{BwrapConfig, BwrapRuntime};
use corral_agent::runtime::disk::{DiskSettings, Disks};
use corral_agent::runtime::docker::{DockerConfig, DockerRuntime};
use corral_core::ids::{NodeId, SandboxId};
use corral_core::model::{RuntimeKind, SandboxSpec};
use serde_json::{Value, json};

use crate::stats::Samples;

/// Create-to-ready (and destroy) with quotas on and off, for one runtime.
#[derive(Debug, Default)]
pub struct Pair {
    pub on: Samples,
    pub off: Samples,
    pub destroy_on: Samples,
    pub destroy_off: Samples,
}

impl Pair {
    fn ratio(&self) -> f64 {
        self.on.p50() / self.off.p50()
    }

    fn to_json(&self) -> Value {
        json!({
            "create_to_ready_quota_on": self.on.to_json(),
            "create_to_ready_quota_off": self.off.to_json(),
            "destroy_quota_on": self.destroy_on.to_json(),
            "destroy_quota_off": self.destroy_off.to_json(),
            "create_to_ready_on_over_off_p50": self.ratio(),
        })
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2}× | {:.2} / {:.2} |\n",
            self.off.p50(),
            self.off.p99(),
            self.on.p50(),
            self.on.p99(),
            self.ratio(),
            self.destroy_off.p50(),
            self.destroy_on.p50()
        )
    }
}

fn spec(runtime: RuntimeKind) -> SandboxSpec {
    let image = if runtime == RuntimeKind::Docker { "corral/base:latest" } else { "" };
    SandboxSpec {
        id: SandboxId::random(),
        tenant: corral_core::ids::TenantId::default_tenant(),
        runtime,
        name: None,
        cpus: 1.0,
        memory_mb: 512,
        pids_limit: 1024,
        timeout_seconds: 300,
        internet_access: false,
        env: Default::default(),
        labels: Default::default(),
        workdir: "/workspace".to_owned(),
        image: image.to_owned(),
        disk_mb: 0,
        codebase: None,
    }
}

/// One create → destroy, timed.
async fn cycle(rt: &dyn Runtime, kind: RuntimeKind, create: &mut Samples, destroy: &mut Samples) -> anyhow::Result<()> {
    let s = spec(kind);
    let t0 = Instant::now();
    rt.create(&s).await.context("create")?;
    let t1 = Instant::now();
    rt.destroy(&s.id).await.context("destroy")?;
    create.push(t1 - t0);
    destroy.push(t1.elapsed());
    Ok(())
}

/// Alternates quota-on and quota-off creates, `n` each after `warmup` each.
async fn alternate(
    on: &dyn Runtime,
    off: &dyn Runtime,
    kind: RuntimeKind,
    warmup: usize,
    n: usize,
) -> anyhow::Result<Pair> {
    let mut p = Pair::default();
    let mut scratch = (Samples::default(), Samples::default());
    for i in 0..warmup + n {
        let keep = i >= warmup;
        if keep {
            cycle(on, kind, &mut p.on, &mut p.destroy_on).await?;
            cycle(off, kind, &mut p.off, &mut p.destroy_off).await?;
        } else {
            cycle(on, kind, &mut scratch.0, &mut scratch.1).await?;
            cycle(off, kind, &mut scratch.0, &mut scratch.1).await?;
        }
    }
    Ok(p)
}

fn bwrap(dir: &std::path::Path, quotas: bool) -> anyhow::Result<BwrapRuntime> {
    let mut config = BwrapConfig::with_state_dir(dir).context("configuring the bubblewrap runtime")?;
    if quotas {
        config.disk = Disks::on(DiskSettings::default(), dir).context("disk quotas (root, loop devices, mkfs.ext4)")?;
    }
    BwrapRuntime::new(config).context("starting the bubblewrap runtime")
}

async fn docker(dir: &std::path::Path, quotas: bool) -> anyhow::Result<DockerRuntime> {
    let node = NodeId::parse(&format!("bench-disk-{}", std::process::id()))?;
    let mut config = DockerConfig::new(node, dir).context("configuring the Docker runtime")?;
    if quotas {
        config.disk = Disks::on(DiskSettings::default(), dir).context("disk quotas (root, loop devices, mkfs.ext4)")?;
    }
    DockerRuntime::connect(config).await.context("connecting to Docker")
}

/// Runs both runtimes (Docker only when `docker_n > 0`); returns the markdown and the JSON.
pub async fn run(warmup: usize, n: usize, docker_n: usize) -> anyhow::Result<(String, Value)> {
    let (d_on, d_off) = (tempfile::tempdir()?, tempfile::tempdir()?);
    eprintln!("[bench] disk: bubblewrap create-to-ready, quota on vs off, {n} each (no warm pool)");
    let b = alternate(&bwrap(d_on.path(), true)?, &bwrap(d_off.path(), false)?, RuntimeKind::Bwrap, warmup, n).await?;
    let mut md = String::from(
        "### Disk quotas: create-to-ready, quota off vs on (ms, p50 / p99; no warm pool)\n\n\
         | runtime | quota off | quota on | on / off (p50) | destroy off / on p50 |\n|---|---|---|---|---|\n",
    );
    md += &b.row("bubblewrap");
    let mut value = json!({ "bwrap": b.to_json() });
    if docker_n > 0 {
        let (k_on, k_off) = (tempfile::tempdir()?, tempfile::tempdir()?);
        eprintln!("[bench] disk: Docker create-to-ready, quota on vs off, {docker_n} each");
        let (on, off) = (docker(k_on.path(), true).await?, docker(k_off.path(), false).await?);
        let d = alternate(&on, &off, RuntimeKind::Docker, 1, docker_n).await?;
        md += &d.row("Docker");
        value["docker"] = d.to_json();
    }
    Ok((md, value))
}
