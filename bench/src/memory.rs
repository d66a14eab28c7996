//! Memory of idle sandboxes: PSS of their processes, their cgroups' charge, and the growth of
//! the dev server's own RSS; the same PSS for idle bare-bwrap sandboxes as the baseline.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use corral_client::Client;
use corral_testkit::corral::DevServer;
use serde_json::{Value, json};

use crate::raw::RawBwrap;

const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct IdleMemory {
    pub sandboxes: usize,
    /// Processes counted as belonging to the sandboxes.
    pub processes: usize,
    pub pss_kib: u64,
    /// Sum of the sandbox cgroups' memory charge, when cgroups were found.
    pub cgroup_bytes: Option<u64>,
    pub cgroups_found: usize,
    pub server_rss_before_kib: u64,
    pub server_rss_after_kib: u64,
}

impl IdleMemory {
    pub fn pss_per_sandbox_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0 / self.sandboxes as f64
    }

    pub fn cgroup_per_sandbox_mib(&self) -> Option<f64> {
        let n = self.cgroups_found.max(1) as f64;
        self.cgroup_bytes.map(|b| b as f64 / 1024.0 / 1024.0 / n)
    }

    pub fn server_growth_per_sandbox_mib(&self) -> f64 {
        let growth = self.server_rss_after_kib as f64 - self.server_rss_before_kib as f64;
        growth / 1024.0 / self.sandboxes as f64
    }

    /// Host memory per idle sandbox, conservatively: the larger of its processes' PSS and its
    /// cgroup's charge (which adds kernel memory), plus the server's growth.
    pub fn host_per_sandbox_mib(&self) -> f64 {
        let own = self.pss_per_sandbox_mib().max(self.cgroup_per_sandbox_mib().unwrap_or(0.0));
        own + self.server_growth_per_sandbox_mib().max(0.0)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "sandboxes": self.sandboxes,
            "processes": self.processes,
            "pss_kib_total": self.pss_kib,
            "pss_mib_per_sandbox": self.pss_per_sandbox_mib(),
            "cgroup_bytes_total": self.cgroup_bytes,
            "cgroups_found": self.cgroups_found,
            "cgroup_mib_per_sandbox": self.cgroup_per_sandbox_mib(),
            "server_rss_before_kib": self.server_rss_before_kib,
            "server_rss_after_kib": self.server_rss_after_kib,
            "server_rss_growth_mib_per_sandbox": self.server_growth_per_sandbox_mib(),
            "host_mib_per_sandbox": self.host_per_sandbox_mib(),
        })
    }
}

#[derive(Debug)]
pub struct RawIdle {
    pub sandboxes: usize,
    pub processes: usize,
    pub pss_kib: u64,
}

impl RawIdle {
    pub fn pss_per_sandbox_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0 / self.sandboxes as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "sandboxes": self.sandboxes,
            "processes": self.processes,
            "pss_kib_total": self.pss_kib,
            "pss_mib_per_sandbox": self.pss_per_sandbox_mib(),
        })
    }
}

struct ProcEntry {
    ppid: u32,
    cmdline: String,
    cgroup: String,
}

/// Every process on the host: pid → parent, command line and cgroup membership.
fn scan() -> HashMap<u32, ProcEntry> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name may contain spaces and parentheses: fields resume after the last ')'.
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        out.insert(pid, ProcEntry { ppid, cmdline, cgroup });
    }
    out
}

/// `roots` and all their descendants, in one snapshot of the process table.
fn with_descendants(procs: &HashMap<u32, ProcEntry>, roots: BTreeSet<u32>) -> BTreeSet<u32> {
    let mut set = roots;
    loop {
        let before = set.len();
        let children: Vec<u32> =
            procs.iter().filter(|(pid, p)| set.contains(&p.ppid) && !set.contains(pid)).map(|(pid, _)| *pid).collect();
        set.extend(children);
        if set.len() == before {
            return set;
        }
    }
}

fn status_kib(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Proportional set size of a process in KiB (0 if it vanished).
fn pss_kib(pid: u32) -> u64 {
    status_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0)
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:").with_context(|| format!("reading VmRSS of pid {pid}"))
}

/// Directories named after one of `ids` anywhere under `/sys/fs/cgroup`.
fn sandbox_cgroups(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    fn walk(dir: &Path, ids: &BTreeSet<String>, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if e.file_name().to_str().is_some_and(|n| ids.contains(n)) {
                out.push(path);
            } else if depth < 12 {
                walk(&path, ids, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), ids, 0, &mut out);
    out
}

/// Memory charged to the sandbox cgroups (v1 `memory.usage_in_bytes` or v2 `memory.current`).
fn cgroup_usage(ids: &BTreeSet<String>) -> (Option<u64>, usize) {
    let mut total = None;
    let mut found = 0;
    for dir in sandbox_cgroups(ids) {
        for file in ["memory.usage_in_bytes", "memory.current"] {
            if let Some(v) = std::fs::read_to_string(dir.join(file)).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                *total.get_or_insert(0) += v;
                found += 1;
            }
        }
    }
    (total, found)
}

/// Creates `n` idle sandboxes on the dev server and measures what they hold.
pub async fn corral_idle(dev: &DevServer, c: &Client, n: usize) -> anyhow::Result<IdleMemory> {
    let server = dev.proc.pid();
    tokio::time::sleep(SETTLE).await;
    let server_rss_before_kib = rss_kib(server)?;
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        // A small memory limit so 50 sandboxes fit the node's capacity; it does not change usage.
        let req = corral_client::v1::CreateSandboxRequest { memory_mb: 64, ..Default::default() };
        let s = c.create(req).await.context("creating an idle sandbox")?;
        ids.insert(s.id);
    }
    tokio::time::sleep(SETTLE).await;
    let server_rss_after_kib = rss_kib(server)?;
    let procs = scan();
    let roots: BTreeSet<u32> = procs
        .iter()
        .filter(|(_, p)| {
            p.ppid == server || ids.iter().any(|id| p.cmdline.contains(id.as_str()) || p.cgroup.contains(id.as_str()))
        })
        .map(|(pid, _)| *pid)
        .collect();
    let mut members = with_descendants(&procs, roots);
    members.remove(&server);
    let pss: u64 = members.iter().map(|pid| pss_kib(*pid)).sum();
    let (cgroup_bytes, cgroups_found) = cgroup_usage(&ids);
    let inits =
        members.iter().filter(|pid| procs.get(pid).is_some_and(|p| p.cmdline.starts_with("/.corral/init"))).count();
    for id in &ids {
        c.destroy(id).await.context("destroying an idle sandbox")?;
    }
    ensure!(inits == n, "found {inits} sandbox init processes for {n} sandboxes (processes: {members:?})");
    Ok(IdleMemory {
        sandboxes: n,
        processes: members.len(),
        pss_kib: pss,
        cgroup_bytes,
        cgroups_found,
        server_rss_before_kib,
        server_rss_after_kib,
    })
}

/// Starts `n` bare bwrap sandboxes running `sleep` and sums their PSS.
pub fn raw_idle(raw: &RawBwrap, n: usize) -> anyhow::Result<RawIdle> {
    struct Kill(Vec<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut children = Kill(Vec::new());
    for _ in 0..n {
        let child = raw.command(&["/usr/bin/sleep", "3600"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        children.0.push(child);
    }
    let roots: BTreeSet<u32> = children.0.iter().map(Child::id).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let members = loop {
        let procs = scan();
        let members = with_descendants(&procs, roots.clone());
        let sleeping =
            members.iter().filter(|p| procs.get(p).is_some_and(|e| e.cmdline.starts_with("/usr/bin/sleep"))).count();
        if sleeping == n {
            break members;
        }
        if Instant::now() > deadline {
            bail!("only {sleeping} of {n} bare bwrap sandboxes started sleep");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(SETTLE);
    let pss = members.iter().map(|pid| pss_kib(*pid)).sum();
    Ok(RawIdle { sandboxes: n, processes: members.len(), pss_kib: pss })
}
