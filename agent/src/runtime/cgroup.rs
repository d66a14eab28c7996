//! Whole-sandbox resource limits (memory, pids, cpu), freezing (pause/resume) and OOM-kill
//! counting through cgroups, v1 or v2.
//!
//! Layout: every hierarchy used gets `{own cgroup}/corral/{instance}/{sandbox id}`, where
//! `{own cgroup}` is the agent's cgroup in that hierarchy (from `/proc/self/cgroup`) and `instance`
//! is derived from the agent's state directory, so agents (and tests) with different state
//! directories never touch each other's sandboxes. The sandbox's bwrap process joins the cgroups
//! between fork and exec (through [`SandboxCgroup::join_files`]), before any sandbox code runs.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which cgroup version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// v2 when its hierarchy offers resource controllers, else v1, else off.
    #[default]
    Auto,
    V1,
    V2,
    /// No limits.
    Off,
}

/// Limits of one sandbox; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u32>,
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
    /// v1 only (v2 has `cgroup.freeze` in every cgroup): pause/resume, no limit.
    Freezer,
}

const CONTROLLERS: [(Controller, &str); 4] = [
    (Controller::Memory, "memory"),
    (Controller::Pids, "pids"),
    (Controller::Cpu, "cpu"),
    (Controller::Freezer, "freezer"),
];

/// One cgroup hierarchy and the directory under which this agent creates sandbox cgroups.
#[derive(Debug, Clone)]
struct Hierarchy {
    base: PathBuf,
    controllers: Vec<Controller>,
    v2: bool,
}

/// This agent's cgroup hierarchies; empty when limits are unavailable.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
    pool: Arc<Mutex<Pool>>,
}

/// How many emptied one-shot cgroups are kept for reuse.
const POOL_MAX: usize = 32;

/// Emptied one-shot cgroups, each with the limits written into it. Creating and removing a set
/// of cgroups (a directory per hierarchy, its limits, and the kernel's teardown of a memory
/// cgroup) is a noticeable share of a short job's cost, so one-shots reuse them.
#[derive(Debug, Default)]
struct Pool {
    idle: Vec<(Limits, SandboxCgroup, Opened)>,
    created: u64,
}

impl Cgroups {
    /// Finds and prepares the hierarchies for `mode`. Never fails: when cgroups are unusable it logs
    /// one warning and returns a manager that applies no limits.
    pub fn setup(mode: CgroupMode, instance: &str) -> Self {
        let found = match mode {
            CgroupMode::Off => return Self::default(),
            CgroupMode::V1 => v1_hierarchies(instance),
            CgroupMode::V2 => v2_hierarchy(instance),
            CgroupMode::Auto => v2_hierarchy(instance).filter(|h| !h[0].controllers.is_empty()).or_else(|| {
                let v1 = v1_hierarchies(instance);
                v1.filter(|h| !h.is_empty())
            }),
        };
        let prepared = found.ok_or_else(|| io::Error::other("no usable cgroup hierarchy")).and_then(|hs| {
            hs.iter().try_for_each(|h| std::fs::create_dir_all(&h.base).map_err(|e| ctx(&h.base, e)))?;
            Ok(hs)
        });
        match prepared {
            Ok(hierarchies) => Self { hierarchies, pool: Arc::default() },
            Err(e) => {
                tracing::warn!(error = %e, ?mode, "cgroups unavailable: sandboxes run without memory, cpu or pids limits");
                Self::default()
            }
        }
    }

    /// Whether sandboxes get cgroups at all (for limits, usage and reliable killing).
    pub fn is_enabled(&self) -> bool {
        !self.hierarchies.is_empty()
    }

    /// Whether any of memory, pids and cpu limits can be enforced.
    pub fn enforces_limits(&self) -> bool {
        self.hierarchies.iter().any(|h| h.controllers.iter().any(|c| *c != Controller::Freezer))
    }

    /// This agent's directory in each hierarchy: every sandbox cgroup (pooled ones too) is a
    /// child of each.
    pub fn bases(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.base.clone()).collect()
    }

    /// The cgroup directories a sandbox has (or would have), e.g. to check they are gone.
    pub fn paths_for(&self, name: &str) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.base.join(name)).collect()
    }

    /// Kills and removes every sandbox cgroup left by a previous run of this agent. Blocking.
    pub fn reap_leftovers(&self) {
        for h in &self.hierarchies {
            let Ok(dir) = std::fs::read_dir(&h.base) else { continue };
            for entry in dir.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                let freezer = (h.v2 || h.controllers.contains(&Controller::Freezer)).then(|| (entry.path(), h.v2));
                SandboxCgroup { dirs: vec![(entry.path(), h.v2)], controllers: Vec::new(), memory: None, freezer }
                    .remove();
            }
        }
    }

    /// Kills and removes the cgroups named `name` (a sandbox no one owns any more). Blocking.
    pub fn remove_named(&self, name: &str) {
        for h in &self.hierarchies {
            let dir = h.base.join(name);
            if !dir.is_dir() {
                continue;
            }
            let freezer = (h.v2 || h.controllers.contains(&Controller::Freezer)).then(|| (dir.clone(), h.v2));
            SandboxCgroup { dirs: vec![(dir, h.v2)], controllers: Vec::new(), memory: None, freezer }.remove();
        }
    }

    /// Removes the pooled one-shot cgroups and this agent's (then empty) subtree directories.
    pub fn remove_bases(&self) {
        let idle = std::mem::take(&mut self.pool.lock().unwrap_or_else(|e| e.into_inner()).idle);
        for (_, cg, files) in idle {
            drop(files);
            cg.remove();
        }
        for h in &self.hierarchies {
            let _ = std::fs::remove_dir(&h.base);
        }
    }

    /// Creates the sandbox's cgroups and writes its limits (removing them again on failure).
    /// `name` is a sandbox id or a warm-pool slot name.
    pub fn create(&self, name: &str, limits: &Limits) -> io::Result<SandboxCgroup> {
        let mut cg = SandboxCgroup { dirs: Vec::new(), controllers: Vec::new(), memory: None, freezer: None };
        match self.hierarchies.iter().try_for_each(|h| cg.add(h, name, limits)) {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }
}

impl Cgroups {
    /// Cgroups with `limits` for one one-shot run: an emptied set from an earlier run with the same
    /// limits, or a new one. `None` when cgroups are off. Blocking (file system writes).
    pub fn lease(&self, limits: &Limits) -> io::Result<Option<Leased>> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let (reused, n) = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let at = pool.idle.iter().position(|(l, _, _)| l == limits);
            pool.created += u64::from(at.is_none());
            (at.map(|i| pool.idle.swap_remove(i)), pool.created)
        };
        let (cg, files) = match reused {
            Some((_, cg, files)) => (cg, files),
            None => {
                let cg = self.create(&format!("oneshot-{n}"), limits)?;
                match Opened::open(&cg) {
                    Ok(files) => (cg, files),
                    Err(e) => {
                        cg.remove();
                        return Err(e);
                    }
                }
            }
        };
        let oom_before = files.oom_kills().unwrap_or(0);
        Ok(Some(Leased { cg: Some((cg, files)), limits: *limits, oom_before, pool: self.pool.clone() }))
    }
}

/// The files of a one-shot cgroup that every run uses, kept open while it is pooled: opening a
/// cgroup file walks the cgroup file system, and a dozen opens per job were half of the agent's
/// own CPU per job. Reads are positioned at 0 (the kernel regenerates the file's contents).
#[derive(Debug)]
struct Opened {
    /// Written "0" by a child to join (see [`SandboxCgroup::join_files`]).
    join: Vec<std::fs::File>,
    /// `cgroup.procs` of every hierarchy.
    procs: Vec<std::fs::File>,
    /// The memory cgroup's OOM counter file.
    oom: Option<std::fs::File>,
}

impl Opened {
    fn open(cg: &SandboxCgroup) -> io::Result<Self> {
        let read = |path: PathBuf| {
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&path).map_err(|e| ctx(&path, e))
        };
        let join = cg.join_files()?.into_iter().map(std::fs::File::from).collect();
        let procs = cg.dirs.iter().map(|(dir, _)| read(dir.join("cgroup.procs"))).collect::<io::Result<_>>()?;
        let oom = match &cg.memory {
            Some((dir, v2)) => Some(read(dir.join(oom_file(*v2)))?),
            None => None,
        };
        Ok(Self { join, procs, oom })
    }

    fn join_files(&self) -> io::Result<Vec<OwnedFd>> {
        self.join.iter().map(|f| f.try_clone().map(OwnedFd::from)).collect()
    }

    /// Whether no process is left in any of the cgroups (false if one cannot be read).
    fn is_empty(&self) -> bool {
        let mut byte = [0u8; 1];
        self.procs.iter().all(|f| std::os::unix::fs::FileExt::read_at(f, &mut byte, 0).is_ok_and(|n| n == 0))
    }

    fn oom_kills(&self) -> Option<u64> {
        let file = self.oom.as_ref()?;
        let mut buf = [0u8; 512];
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, 0).ok()?;
        parse_oom_kills(&String::from_utf8_lossy(&buf[..n]))
    }
}

/// One-shot cgroups in use. Dropping kills whatever is left in them and hands them back for
/// reuse once empty (else removes them). Blocking.
#[derive(Debug)]
pub struct Leased {
    cg: Option<(SandboxCgroup, Opened)>,
    limits: Limits,
    /// The cgroup's OOM-kill counter when leased (it counts over the cgroup's whole life).
    oom_before: u64,
    pool: Arc<Mutex<Pool>>,
}

impl Leased {
    pub fn cgroup(&self) -> &SandboxCgroup {
        &self.cg.as_ref().expect("a leased cgroup is present until dropped").0
    }

    fn files(&self) -> &Opened {
        &self.cg.as_ref().expect("a leased cgroup is present until dropped").1
    }

    /// Descriptors through which a child joins the cgroups (see [`SandboxCgroup::join_files`]).
    pub fn join_files(&self) -> io::Result<Vec<OwnedFd>> {
        self.files().join_files()
    }

    /// Whether the kernel's OOM killer acted in this run.
    pub fn oom_killed(&self) -> bool {
        self.files().oom_kills().is_some_and(|n| n > self.oom_before)
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        let Some((cg, files)) = self.cg.take() else { return };
        // A run whose command ended by itself took its whole pid namespace with it: the
        // cgroups are empty already, and checking that costs a read per hierarchy.
        let empty = files.is_empty() || {
            cg.kill_all();
            files.is_empty()
        };
        if empty {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.idle.len() < POOL_MAX {
                pool.idle.push((self.limits, cg, files));
                return;
            }
        }
        drop(files);
        cg.remove();
    }
}

fn apply_limit(dir: &Path, c: Controller, v2: bool, limits: &Limits) -> io::Result<()> {
    match c {
        Controller::Memory => {
            let Some(bytes) = limits.memory_bytes else { return Ok(()) };
            write_file(dir, if v2 { "memory.max" } else { "memory.limit_in_bytes" }, &bytes.to_string())?;
            // No swap beyond the limit; absent when swap accounting is off, so best effort.
            let _ = if v2 {
                write_file(dir, "memory.swap.max", "0")
            } else {
                write_file(dir, "memory.memsw.limit_in_bytes", &bytes.to_string())
            };
            Ok(())
        }
        Controller::Pids => limits.pids.map_or(Ok(()), |n| write_file(dir, "pids.max", &n.to_string())),
        Controller::Freezer => Ok(()),
        Controller::Cpu => {
            let Some(cpus) = limits.cpus.filter(|c| *c > 0.0) else { return Ok(()) };
            let period = 100_000u64;
            let quota = ((cpus * period as f64) as u64).max(1000);
            if v2 {
                write_file(dir, "cpu.max", &format!("{quota} {period}"))
            } else {
                write_file(dir, "cpu.cfs_period_us", &period.to_string())?;
                write_file(dir, "cpu.cfs_quota_us", &quota.to_string())
            }
        }
    }
}

/// The cgroups of one sandbox.
#[derive(Debug)]
pub struct SandboxCgroup {
    dirs: Vec<(PathBuf, bool)>,
    /// The controllers enabled in each of `dirs` (same order), for limits written later.
    controllers: Vec<Vec<Controller>>,
    /// The memory cgroup directory, and whether it is v2.
    memory: Option<(PathBuf, bool)>,
    /// The cgroup that freezes the sandbox, and whether it is v2.
    freezer: Option<(PathBuf, bool)>,
}

impl SandboxCgroup {
    fn add(&mut self, h: &Hierarchy, name: &str, limits: &Limits) -> io::Result<()> {
        let dir = h.base.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| ctx(&dir, e))?;
        self.dirs.push((dir.clone(), h.v2));
        self.controllers.push(h.controllers.clone());
        for c in &h.controllers {
            apply_limit(&dir, *c, h.v2, limits)?;
        }
        if h.controllers.contains(&Controller::Memory) {
            self.memory = Some((dir.clone(), h.v2));
        }
        if h.v2 || h.controllers.contains(&Controller::Freezer) {
            self.freezer.get_or_insert((dir, h.v2));
        }
        Ok(())
    }

    /// Writes limits into the running sandbox's cgroups (e.g. a pooled sandbox started
    /// unlimited); `None` leaves a limit as it is.
    pub fn set_limits(&self, limits: &Limits) -> io::Result<()> {
        for ((dir, v2), controllers) in self.dirs.iter().zip(&self.controllers) {
            for c in controllers {
                apply_limit(dir, *c, *v2, limits)?;
            }
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer acted in the sandbox's memory cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        let (dir, v2) = self.memory.as_ref()?;
        read_oom_kills(dir, *v2)
    }

    /// Freezes (or thaws) every process of the sandbox and waits until the kernel reports it done.
    pub async fn freeze(&self, frozen: bool) -> io::Result<()> {
        let (dir, v2) = self.freezer.as_ref().ok_or_else(|| io::Error::other("no freezer cgroup"))?;
        let (file, value, state_file, done) = match (*v2, frozen) {
            (false, true) => ("freezer.state", "FROZEN", "freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED", "freezer.state", "THAWED"),
            (true, true) => ("cgroup.freeze", "1", "cgroup.events", "frozen 1"),
            (true, false) => ("cgroup.freeze", "0", "cgroup.events", "frozen 0"),
        };
        write_file(dir, file, value)?;
        for i in 1..=2500 {
            let state = std::fs::read_to_string(dir.join(state_file)).map_err(|e| ctx(dir, e))?;
            if state.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            // The v1 freezer gives up on a task it could not stop at that moment and stays
            // FREEZING until FROZEN is written again (cgroup-v1 freezer documentation).
            if !*v2 && frozen && i % 25 == 0 {
                write_file(dir, file, value)?;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("{}: not {done} after 5 s", dir.display())))
    }

    /// Thaws the sandbox without waiting (frozen processes do not die until thawed).
    fn thaw_now(&self) {
        if let Some((dir, v2)) = &self.freezer {
            let _ =
                if *v2 { write_file(dir, "cgroup.freeze", "0") } else { write_file(dir, "freezer.state", "THAWED") };
        }
    }

    /// Opens the files through which a forked child joins the cgroups by writing "0": v1 `tasks`
    /// (moving the calling thread skips the global threadgroup lock, whose RCU grace period costs
    /// ~7 ms per `cgroup.procs` write here; the forked child is single-threaded), v2 `cgroup.procs`.
    pub fn join_files(&self) -> io::Result<Vec<OwnedFd>> {
        let open = |(dir, v2): &(PathBuf, bool)| {
            let path = dir.join(if *v2 { "cgroup.procs" } else { "tasks" });
            let f = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open(&path);
            f.map(OwnedFd::from).map_err(|e| ctx(&path, e))
        };
        self.dirs.iter().map(open).collect()
    }

    /// Current memory charged to the sandbox (processes, page cache and kernel memory).
    pub fn memory_usage_bytes(&self) -> Option<u64> {
        let (dir, v2) = self.memory.as_ref()?;
        let file = dir.join(if *v2 { "memory.current" } else { "memory.usage_in_bytes" });
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// Kills every process in the sandbox's cgroups (v2 `cgroup.kill`, else SIGKILL per pid).
    pub fn kill_all(&self) {
        self.thaw_now();
        for (dir, v2) in &self.dirs {
            if *v2 && write_file(dir, "cgroup.kill", "1").is_ok() {
                continue;
            }
            for _ in 0..16 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }

    /// Kills what is left and removes the cgroups, retrying briefly while dying processes leave.
    /// Blocking.
    pub fn remove(&self) {
        for (dir, _) in &self.dirs {
            for attempt in 0..100 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 99 => tracing::warn!(path = %dir.display(), error = %e, "cgroup not removed"),
                    Err(_) => {
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(()) => break,
                }
            }
        }
    }
}

/// The `oom_kill` counter of a memory cgroup (v1 `memory.oom_control`, v2 `memory.events`).
pub fn read_oom_kills(memory_dir: &Path, v2: bool) -> Option<u64> {
    parse_oom_kills(&std::fs::read_to_string(memory_dir.join(oom_file(v2))).ok()?)
}

/// The file of a memory cgroup that counts its OOM kills.
fn oom_file(v2: bool) -> &'static str {
    if v2 { "memory.events" } else { "memory.oom_control" }
}

fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

/// The memory cgroup directory of process `pid` (e.g. a container's init) and whether it is v2.
pub fn memory_dir_of_pid(pid: u32) -> Option<(PathBuf, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = cgroup_mounts();
    let lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once(':')?.1.split_once(':')).collect();
    let v1 = lines.iter().find(|(ctrls, _)| ctrls.split(',').any(|c| c == "memory")).and_then(|(_, path)| {
        let (mount, root, _, _) = mounts.iter().find(|m| !m.3 && m.2.split(',').any(|o| o == "memory"))?;
        Some((own_dir(mount, root, path), false))
    });
    v1.or_else(|| {
        let (_, path) = lines.iter().find(|(ctrls, _)| ctrls.is_empty())?;
        let (mount, root, _, _) = mounts.iter().find(|m| m.3)?;
        Some((own_dir(mount, root, path), true))
    })
    .filter(|(dir, _)| dir.is_dir())
}

fn write_file(dir: &Path, name: &str, value: &str) -> io::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, value).map_err(|e| ctx(&path, e))
}

fn ctx(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// `(mount point, mount root, super options)` of cgroup mounts, and whether each is cgroup2.
fn cgroup_mounts() -> Vec<(PathBuf, String, String, bool)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let v2 = match *right.first()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some((PathBuf::from(left.get(4)?), left.get(3)?.to_string(), right.get(2)?.to_string(), v2))
        })
        .collect()
}

/// This process's cgroup path in the hierarchy whose `/proc/self/cgroup` controller list matches.
fn own_cgroup(matches: impl Fn(&str) -> bool) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(ctrls).then(|| path.to_owned())
    })
}

/// The directory of this process's cgroup `own` in a hierarchy mounted at `mount` (whose root is
/// `mount_root`, not `/` inside a cgroup namespace).
fn own_dir(mount: &Path, mount_root: &str, own: &str) -> PathBuf {
    let rel = own.strip_prefix(mount_root.trim_end_matches('/')).unwrap_or(own);
    mount.join(rel.trim_start_matches('/'))
}

fn v1_hierarchies(instance: &str) -> Option<Vec<Hierarchy>> {
    let mounts = cgroup_mounts();
    let mut out = Vec::new();
    for (c, name) in CONTROLLERS {
        let has = |opts: &str| opts.split(',').any(|o| o == name);
        let Some((mount, root, _, _)) = mounts.iter().find(|m| !m.3 && has(&m.2)) else { continue };
        let own = own_cgroup(has)?;
        let base = own_dir(mount, root, &own).join("corral").join(instance);
        out.push(Hierarchy { base, controllers: vec![c], v2: false });
    }
    Some(out)
}

fn v2_hierarchy(instance: &str) -> Option<Vec<Hierarchy>> {
    let (mount, root, _, _) = cgroup_mounts().into_iter().find(|m| m.3)?;
    let own = own_cgroup(|c| c.is_empty())?;
    let dir = own_dir(&mount, &root, &own);
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let controllers: Vec<Controller> =
        CONTROLLERS.iter().filter(|(_, n)| available.split_whitespace().any(|a| a == *n)).map(|(c, _)| *c).collect();
    let base = dir.join("corral").join(instance);
    if let Err(e) = enable_controllers(&dir, &base, &controllers) {
        tracing::warn!(error = %e, "cannot delegate cgroup v2 controllers; only cgroup.kill is used");
        return Some(vec![Hierarchy { base, controllers: Vec::new(), v2: true }]);
    }
    Some(vec![Hierarchy { base, controllers, v2: true }])
}

/// Enables `controllers` for children along `own_dir → corral → instance`. A non-root cgroup with
/// processes cannot delegate controllers ("no internal processes"), so on `EBUSY` the agent first
/// moves itself into the leaf `{own_dir}/corral-agent`.
fn enable_controllers(own_dir: &Path, base: &Path, controllers: &[Controller]) -> io::Result<()> {
    if controllers.is_empty() {
        return Ok(());
    }
    let line: Vec<String> =
        CONTROLLERS.iter().filter(|(c, _)| controllers.contains(c)).map(|(_, n)| format!("+{n}")).collect();
    let line = line.join(" ");
    if let Err(e) = write_file(own_dir, "cgroup.subtree_control", &line) {
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
        let leaf = own_dir.join("corral-agent");
        std::fs::create_dir_all(&leaf)?;
        write_file(&leaf, "cgroup.procs", "0")?;
        write_file(own_dir, "cgroup.subtree_control", &line)?;
    }
    let corral = own_dir.join("corral");
    std::fs::create_dir_all(base)?;
    write_file(&corral, "cgroup.subtree_control", &line)?;
    write_file(base, "cgroup.subtree_control", &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_dirs_respect_the_mount_root() {
        let m = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(own_dir(m, "/", "/process_api/x"), Path::new("/sys/fs/cgroup/memory/process_api/x"));
        assert_eq!(own_dir(m, "/", "/"), m);
        // Inside a cgroup namespace the mount root is the namespace's root.
        assert_eq!(own_dir(m, "/kubepods/pod1", "/kubepods/pod1/c"), Path::new("/sys/fs/cgroup/memory/c"));
    }
}
