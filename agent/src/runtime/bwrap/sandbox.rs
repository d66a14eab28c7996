//! One running sandbox: its bwrap process, its init connection, its cgroups and its files.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_core::codebase::CodebaseMount;
use corral_core::ids::SandboxId;
use corral_core::model::SandboxSpec;
use corral_core::task::OwnedTask;
use corral_init::protocol::Event;
use tokio::io::BufReader;

use super::BwrapConfig;
use super::args;
use super::spawn::{self, Process as Child};
use crate::codebases::LayerMount;
use crate::runtime::RuntimeError;
use crate::runtime::RuntimeResult;
use crate::runtime::cgroup::{Cgroups, Limits, SandboxCgroup};
use crate::runtime::client::{InitClient, REPLY_TIMEOUT as START_TIMEOUT};
use crate::runtime::conn::{self, Conn, OomCounter};
use crate::runtime::disk::{self, Quota};
use crate::runtime::files::SandboxFs;
use crate::runtime::seccomp;

/// How long the init may take to stop after its control pipe closed.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub struct Sandbox {
    pub id: SandboxId,
    pub dir: PathBuf,
    pub fs: SandboxFs,
    /// Its codebase's layered view, if it has one (taken at shutdown, before the cleanup).
    pub layer: std::sync::Mutex<Option<LayerMount>>,
    pub client: InitClient,
    conn: Arc<Conn>,
    child: tokio::sync::Mutex<Option<Child>>,
    reader: std::sync::Mutex<Option<OwnedTask>>,
    pub cgroup: Option<Arc<SandboxCgroup>>,
}

/// What of a spec must be known before its sandbox starts (everything else is applied after,
/// which lets the warm pool start sandboxes of the default shape early).
#[derive(Clone, Copy, Default)]
pub struct Shape<'a> {
    pub internet_access: bool,
    /// A codebase's view is mounted before bwrap starts.
    pub codebase: Option<&'a CodebaseMount>,
}

/// A started sandbox not bound to a spec yet (a warm-pool slot, or a sandbox being created).
/// Dropping it tears it down (blocking briefly).
pub struct Warm {
    parts: Option<Parts>,
}

struct Parts {
    dir: PathBuf,
    conn: Arc<Conn>,
    child: Child,
    reader: OwnedTask,
    cgroup: Option<Arc<SandboxCgroup>>,
    layer: Option<LayerMount>,
}

/// Removes a sandbox's directory and cgroups when dropped armed: covers failures and a start
/// cancelled half-way (e.g. the warm-pool refill aborted with its runtime).
struct CleanupGuard {
    dir: PathBuf,
    cgroup: Option<Arc<SandboxCgroup>>,
    armed: bool,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if self.armed {
            cleanup(&self.dir, self.cgroup.as_deref());
        }
    }
}

/// The cgroup limits a spec asks for.
pub fn limits_of(spec: &SandboxSpec) -> Limits {
    Limits {
        memory_bytes: (spec.memory_mb > 0).then(|| spec.memory_mb * 1024 * 1024),
        pids: (spec.pids_limit > 0).then_some(spec.pids_limit),
        cpus: (spec.cpus > 0.0).then_some(spec.cpus),
    }
}

impl Warm {
    /// Starts bwrap with the init inside in `{state_dir}/sandboxes/{name}` (cgroups named `name`,
    /// storage limited to `quota`) and waits for its ready frame. On failure (or cancellation)
    /// everything created is removed.
    pub async fn start(
        config: &BwrapConfig,
        owner: Option<(u32, u32)>,
        cgroups: &Cgroups,
        name: &str,
        limits: &Limits,
        quota: &Quota,
        shape: Shape<'_>,
    ) -> Result<Self, String> {
        let Shape { internet_access, codebase } = shape;
        let dir = config.state_dir.join("sandboxes").join(name);
        let mut guard = CleanupGuard { dir: dir.clone(), cgroup: None, armed: true };
        guard.cgroup = prepare(&dir, cgroups, name, limits).map_err(|e| e.to_string())?.map(Arc::new);
        let (disks, disk_dir, quota) = (config.disk.clone(), dir.clone(), *quota);
        tokio::task::spawn_blocking(move || disks.prepare(&disk_dir, &quota, owner))
            .await
            .map_err(|e| format!("preparing the sandbox's disk: {e}"))?
            .map_err(|e| e.to_string())?;
        // Dropped (stopping its file system) before the guard cleans the directory up.
        let layer = match codebase {
            None => None,
            Some(cb) => {
                let layers = config.layers.as_ref().ok_or("this node offers no codebases (agent.codebases is off)")?;
                let layer_dir = dir.join("disk").join("layer");
                Some(layers.mount(cb, &dir, &layer_dir).await.map_err(|e| format!("codebase {}: {e}", cb.id))?)
            }
        };
        let binds: Vec<(PathBuf, String)> =
            layer.iter().zip(codebase).map(|(l, cb)| (l.view.clone(), cb.path.clone())).collect();
        let cgroup = guard.cgroup.clone();
        let oom: Option<OomCounter> = cgroup.clone().map(|cg| Box::new(move || cg.oom_kills()) as OomCounter);
        match launch(config, owner, internet_access, &dir, &binds, cgroup.as_deref(), oom).await {
            Ok((child, conn, reader)) => {
                guard.armed = false;
                Ok(Self { parts: Some(Parts { dir, conn, child, reader, cgroup, layer }) })
            }
            Err(e) => Err(format!("{e}; bwrap said: {}", read_log(&dir))),
        }
    }

    /// The sandbox's directory (its storage is under it, see [`disk`]).
    pub fn dir(&self) -> Option<&Path> {
        self.parts.as_ref().map(|p| p.dir.as_path())
    }

    /// Whether bwrap still runs (a pooled sandbox may have died while it waited).
    pub fn is_alive(&mut self) -> bool {
        self.parts.as_mut().is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// The cgroups, e.g. to write a spec's limits into a pooled sandbox.
    pub fn cgroup(&self) -> Option<&SandboxCgroup> {
        self.parts.as_ref().and_then(|p| p.cgroup.as_deref())
    }

    /// Makes it the sandbox of `spec` (exec defaults from the spec; limits are the caller's).
    pub fn bind(mut self, spec: &SandboxSpec, owner: Option<(u32, u32)>) -> Sandbox {
        let Parts { dir, conn, child, reader, cgroup, layer } =
            self.parts.take().expect("a warm sandbox has its parts");
        // The files API reaches a codebase at /workspace through its view, under the same rules.
        let workspace = match (&layer, &spec.codebase) {
            (Some(l), Some(cb)) if cb.path == "/workspace" => l.view.clone(),
            _ => disk::workspace(&dir),
        };
        Sandbox {
            id: spec.id.clone(),
            fs: SandboxFs::new(workspace, disk::tmp(&dir), owner),
            layer: std::sync::Mutex::new(layer),
            dir,
            client: InitClient::new(spec, conn.clone()),
            conn,
            child: tokio::sync::Mutex::new(Some(child)),
            reader: std::sync::Mutex::new(Some(reader)),
            cgroup,
        }
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(mut p) = self.parts.take() {
            let layer = p.layer.take();
            teardown(&p.conn, Some(&mut p.child), p.cgroup.as_deref(), &p.dir, layer);
            drop(p.reader);
        }
    }
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
        let quota = config.disk.quota(spec.disk_mb, spec.memory_mb).map_err(|e| disk_refusal(spec, e))?;
        let limits = limits_of(spec);
        let shape = Shape { internet_access: spec.internet_access, codebase: spec.codebase.as_deref() };
        let warm = Warm::start(config, owner, cgroups, spec.id.as_str(), &limits, &quota, shape)
            .await
            .map_err(|why| RuntimeError::StartFailed { sandbox: spec.id.clone(), why })?;
        Ok(warm.bind(spec, owner))
    }

    /// The name of its directory and cgroups: its id, or the pool slot it was taken from.
    pub fn slot_name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
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
        tokio::task::spawn_blocking(move || {
            drop(this.take_layer());
            cleanup(&this.dir, this.cgroup.as_deref())
        })
        .await
        .map_err(|e| RuntimeError::io("removing the sandbox", io::Error::other(e)))
    }
}

impl Sandbox {
    /// Best-effort synchronous teardown for when the runtime is dropped without destroying.
    pub fn teardown_blocking(&self) {
        let layer = self.take_layer();
        match self.child.try_lock() {
            Ok(mut child) => teardown(&self.conn, child.as_mut(), self.cgroup.as_deref(), &self.dir, layer),
            Err(_) => teardown(&self.conn, None, self.cgroup.as_deref(), &self.dir, layer),
        }
    }

    fn take_layer(&self) -> Option<LayerMount> {
        self.layer.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Closes the control pipe, gives the init a moment to stop everything (bwrap then reaps it and
/// exits) before bwrap is killed (which would orphan the init), kills what is left and removes
/// the cgroups and directory. Blocking.
fn teardown(
    conn: &Conn,
    child: Option<&mut Child>,
    cgroup: Option<&SandboxCgroup>,
    dir: &Path,
    layer: Option<LayerMount>,
) {
    conn.try_close_writer();
    if let Some(child) = child {
        for _ in 0..100 {
            if child.id().is_none_or(has_exited) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.start_kill();
    }
    conn.close();
    if let Some(cg) = cgroup {
        cg.kill_all();
    }
    drop(layer);
    cleanup(dir, cgroup);
}

/// Whether a child process is gone or a zombie.
fn has_exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Creates the sandbox directory and its cgroups (named `name`); its storage comes after.
pub(super) fn prepare(dir: &Path, cgroups: &Cgroups, name: &str, limits: &Limits) -> io::Result<Option<SandboxCgroup>> {
    std::fs::create_dir_all(dir)?;
    if !cgroups.is_enabled() {
        return Ok(None);
    }
    cgroups.create(name, limits).map(Some)
}

/// A spec whose disk this node cannot give.
pub fn disk_refusal(spec: &SandboxSpec, e: disk::DiskError) -> RuntimeError {
    match e {
        disk::DiskError::TooLarge { .. } | disk::DiskError::TooSmall { .. } => {
            RuntimeError::Invalid { what: "disk_mb", why: e.to_string() }
        }
        other => RuntimeError::StartFailed { sandbox: spec.id.clone(), why: other.to_string() },
    }
}

/// Spawns bwrap (inside the cgroups from its first instruction) and waits for the init's ready
/// frame; returns the child, the connection and its reader task.
async fn launch(
    config: &BwrapConfig,
    owner: Option<(u32, u32)>,
    internet_access: bool,
    dir: &Path,
    binds: &[(PathBuf, String)],
    cgroup: Option<&SandboxCgroup>,
    oom: Option<OomCounter>,
) -> io::Result<(Child, Arc<Conn>, OwnedTask)> {
    let log = std::fs::File::create(dir.join("init.log"))?;
    let join = cgroup.map(SandboxCgroup::join_files).transpose()?.unwrap_or_default();
    let mut child = spawn::spawn(spawn::Spawn {
        program: &config.bwrap_path,
        args: args::bwrap_args(config, internet_access, dir, binds),
        stdin: spawn::Stdio::Piped,
        stdout: spawn::Stdio::Piped,
        stderr: spawn::Stdio::Fd(log.into()),
        join,
        owner,
        fds: seccomp::program_fds()?,
    })?;
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

/// Removes the cgroups (killing anything left in them), the sandbox's storage mounts and its
/// directory. Blocking.
pub fn cleanup(dir: &Path, cgroup: Option<&SandboxCgroup>) {
    if let Some(cg) = cgroup {
        cg.remove();
    }
    if let Err(e) = disk::release(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "sandbox storage not released");
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), error = %e, "sandbox directory not removed");
    }
}
