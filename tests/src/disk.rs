//! Disk quotas end to end: `disk_mb` set through the gRPC API is the limit a command meets
//! inside the sandbox, Get reports the use, the sandbox and its node live on after a full disk,
//! and a request past the bounds is refused naming the field.

use anyhow::ensure;
use corral_client::Client;
use corral_client::v1 as pb;
use tonic::Code;

use crate::{expect_err, state};

/// The disk asked for (MiB): small, so filling it is quick.
const DISK_MB: i64 = 24;

pub async fn disk_quota(c: &Client, runtime: pb::Runtime) -> anyhow::Result<()> {
    let image = if runtime == pb::Runtime::Docker { "corral/base".to_owned() } else { String::new() };
    let req = pb::CreateSandboxRequest { runtime: runtime as i32, image, disk_mb: DISK_MB, ..Default::default() };
    let s = c.create(req).await?;
    ensure!(s.disk_mb == DISK_MB, "the sandbox carries its disk_mb: {s:?}");
    let usage = c.get(&s.id).await?.disk_usage.ok_or_else(|| anyhow::anyhow!("Get reports no disk use"))?;
    let limit = DISK_MB << 20;
    ensure!(usage.total_bytes <= limit && usage.total_bytes >= limit * 3 / 4, "a {DISK_MB} MiB disk: {usage:?}");
    // What the command inside sees is the quota asked for through the API.
    let df = c.run_shell(&s.id, "df -k /workspace | tail -1 | awk '{print $2}'").await?;
    let kib: i64 = String::from_utf8_lossy(&df.stdout).trim().parse()?;
    ensure!(kib * 1024 == usage.total_bytes, "df inside ({kib} KiB) agrees with Get ({usage:?})");
    let fill = c.run_shell(&s.id, "head -c 100000000 /dev/zero > /workspace/fill").await?;
    let stderr = String::from_utf8_lossy(&fill.stderr);
    ensure!(fill.exit_code != 0 && stderr.contains("No space left on device"), "ENOSPC past the quota: {stderr}");
    let full = c.get(&s.id).await?;
    ensure!(state(&full) == pb::SandboxState::Running, "the sandbox keeps running: {:?}", state(&full));
    let used = full.disk_usage.map_or(0, |u| u.used_bytes);
    ensure!(used > limit / 2, "Get shows the disk filled: {used} bytes");
    let after = c.run_shell(&s.id, "rm /workspace/fill && echo alive").await?;
    ensure!(after.stdout == b"alive\n", "a later command works: {:?}", String::from_utf8_lossy(&after.stderr));
    // Another sandbox on the node is unaffected.
    let other = c.create(pb::CreateSandboxRequest { runtime: runtime as i32, ..Default::default() }).await;
    let other = match other {
        Ok(o) => o,
        Err(_) if runtime == pb::Runtime::Docker => {
            c.create(pb::CreateSandboxRequest {
                runtime: runtime as i32,
                image: "corral/base".into(),
                ..Default::default()
            })
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    let wrote = c.run_shell(&other.id, "head -c 30000000 /dev/zero > /workspace/f && wc -c < /workspace/f").await?;
    ensure!(
        String::from_utf8_lossy(&wrote.stdout).trim() == "30000000",
        "{:?}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    c.destroy(&other.id).await?;
    c.destroy(&s.id).await?;
    let too_big = pb::CreateSandboxRequest { runtime: runtime as i32, disk_mb: 1 << 40, ..Default::default() };
    expect_err(c.create(too_big).await, Code::InvalidArgument, "disk_mb")?;
    Ok(())
}
