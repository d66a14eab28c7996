//! One running sandbox: its bwrap process, its init connection, its cgroups and its files.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::SandboxId;
use corral_core::model::SandboxSpec;
use corral_core::task::OwnedTask;
use corral_init::protocol::Event;
use tokio::io::BufReader;
use tokio::process::Child;

use super::BwrapConfig;
use super::args;
use super::spawn;
use crate::runtime::RuntimeError;
use crate::runtime::RuntimeResult;
use crate::runtime::cgroup::{Cgroups, Limits, SandboxCgroup};
use crate::runtime::client::{InitClient, REPLY_TIMEOUT as START_TIMEOUT};
use crate::runtime::conn::{self, Conn, OomCounter};
use crate::runtime::files::SandboxFs;

/// How long the init may take to stop after its control pipe closed.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub struct Sandbox {
    pub id: SandboxId,
    pub dir: PathBuf,
    pub fs: SandboxFs,
    pub client: InitClient,
    conn: Arc<Conn>,
    child: tokio::sync::Mutex<Option<Child>>,
    reader: std::sync::Mutex<Option<OwnedTask>>,
    pub cgroup: Option<Arc<SandboxCgroup>>,
}

impl Sandbox {
    /// Starts bwrap with the init inside and waits for its ready frame. On failure everything
    /// created is removed again.
    pub async fn start(
        config: &BwrapConfig,
        owner: Option<(u32, u32)>,
        cgroups: &Cgroups,
        spec: &SandboxSpec,
    ) -> RuntimeResult<Self> {
        let dir = config.state_dir.join("sandboxes").join(spec.id.as_str());
        let failed = |why: String| RuntimeError::StartFailed { sandbox: spec.id.clone(), why };
        let cgroup = match prepare(&dir, owner, cgroups, spec) {
            Ok(cg) => cg.map(Arc::new),
            Err(e) => {
                cleanup(&dir, None);
                return Err(failed(e.to_string()));
            }
        };
        let oom: Option<OomCounter> = cgroup.clone().map(|cg| Box::new(move || cg.oom_kills()) as OomCounter);
        match launch(config, owner, spec, &dir, cgroup.as_deref(), oom).await {
            Ok((child, conn, reader)) => Ok(Self {
                id: spec.id.clone(),
                fs: SandboxFs::new(dir.join("workspace"), dir.join("tmp"), owner),
                dir,
                client: InitClient::new(spec, conn.clone()),
                conn,
                child: tokio::sync::Mutex::new(Some(child)),
                reader: std::sync::Mutex::new(Some(reader)),
                cgroup,
            }),
            Err(e) => {
                let log = read_log(&dir);
                cleanup(&dir, cgroup.as_deref());
                Err(failed(format!("{e}; bwrap said: {log}")))
            }
        }
    }

    /// Stops the sandbox and removes its cgroups and directory. Closing the control pipe makes
    /// the init kill everything and exit; as pid 1 its exit ends the namespace, and bwrap, its
    /// parent, reaps it and exits (killing bwrap first would orphan the init to the host's pid 1).
    /// If that takes too long, everything in the cgroups and bwrap are killed.
    pub async fn shutdown(self: Arc<Self>) -> RuntimeResult<()> {
        if let Some(cg) = &self.cgroup {
            // A frozen init cannot stop, and frozen processes do not die until thawed.
            let _ = cg.freeze(false).await;
        }
        let graceful = tokio::time::timeout(STOP_GRACE, self.conn.close_writer()).await.is_ok();
        if let Some(mut child) = self.child.lock().await.take()
            && (!graceful || tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err())
        {
            tracing::warn!(sandbox_id = %self.id, "the sandbox init did not stop; killing it");
            if let Some(cg) = &self.cgroup {
                cg.kill_all();
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.conn.close();
        drop(self.reader.lock().unwrap_or_else(|p| p.into_inner()).take());
        let this = self.clone();
        tokio::task::spawn_blocking(move || cleanup(&this.dir, this.cgroup.as_deref()))
            .await
            .map_err(|e| RuntimeError::io("removing the sandbox", io::Error::other(e)))
    }
}

impl Sandbox {
    /// Best-effort synchronous teardown for when the runtime is dropped without destroying.
    pub fn teardown_blocking(&self) {
        self.conn.try_close_writer();
        if let Ok(mut child) = self.child.try_lock()
            && let Some(child) = child.as_mut()
        {
            // Give the init a moment to stop everything (bwrap then reaps it and exits) before
            // bwrap is killed, which would orphan the init.
            for _ in 0..100 {
                if child.id().is_none_or(has_exited) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.start_kill();
        }
        self.conn.close();
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
        cleanup(&self.dir, self.cgroup.as_deref());
    }
}

/// Whether a child process is gone or a zombie.
fn has_exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Creates the sandbox directories and cgroups.
fn prepare(
    dir: &Path,
    owner: Option<(u32, u32)>,
    cgroups: &Cgroups,
    spec: &SandboxSpec,
) -> io::Result<Option<SandboxCgroup>> {
    for area in ["workspace", "tmp"] {
        std::fs::create_dir_all(dir.join(area))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.join(area), Some(uid), Some(gid))?;
        }
    }
    if !cgroups.is_enabled() {
        return Ok(None);
    }
    let limits = Limits {
        memory_bytes: (spec.memory_mb > 0).then(|| spec.memory_mb * 1024 * 1024),
        pids: (spec.pids_limit > 0).then_some(spec.pids_limit),
        cpus: (spec.cpus > 0.0).then_some(spec.cpus),
    };
    cgroups.create(&spec.id, &limits).map(Some)
}

/// Spawns bwrap (inside the cgroups from its first instruction) and waits for the init's ready
/// frame; returns the child, the connection and its reader task.
async fn launch(
    config: &BwrapConfig,
    owner: Option<(u32, u32)>,
    spec: &SandboxSpec,
    dir: &Path,
    cgroup: Option<&SandboxCgroup>,
    oom: Option<OomCounter>,
) -> io::Result<(Child, Arc<Conn>, OwnedTask)> {
    let log = std::fs::File::create(dir.join("init.log"))?;
    let mut cmd = tokio::process::Command::new(&config.bwrap_path);
    cmd.args(args::bwrap_args(config, spec, dir)).env_clear().current_dir("/");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log).kill_on_drop(true);
    let join = cgroup.map(SandboxCgroup::join_files).transpose()?.unwrap_or_default();
    let hook = spawn::child_setup(join, owner);
    // SAFETY: the hook only makes raw system calls on values prepared before the fork
    // (async-signal-safe); it allocates nothing and takes no locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(hook)
    };
    let mut child = cmd.spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("bwrap pipes missing"));
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    match tokio::time::timeout(START_TIMEOUT, conn::read_event(&mut reader)).await {
        Ok(Ok(Some(Event::Ready))) => {}
        Ok(Ok(Some(other))) => return Err(io::Error::other(format!("unexpected first event {other:?}"))),
        Ok(Ok(None)) => return Err(io::Error::other("the sandbox exited before it was ready")),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(io::Error::other("the sandbox was not ready within 10 s")),
    }
    let conn = Arc::new(Conn::new(Box::new(stdin), oom));
    let task_conn = conn.clone();
    let task = OwnedTask::spawn("bwrap.init_reader", async move { task_conn.read_loop(reader).await });
    Ok((child, conn, task))
}

/// The first few KiB of the bwrap/init log, for error messages.
fn read_log(dir: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(dir.join("init.log")) {
        let _ = f.take(4096).read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf).trim().to_owned();
    if text.is_empty() { "(nothing)".to_owned() } else { text }
}

/// Removes the cgroups (killing anything left in them) and the sandbox directory. Blocking.
pub fn cleanup(dir: &Path, cgroup: Option<&SandboxCgroup>) {
    if let Some(cg) = cgroup {
        cg.remove();
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), error = %e, "sandbox directory not removed");
    }
}
