//! The cluster a fault scenario runs on: real etcd, nats-server, coordinators and agents as
//! separate processes. At most one process (the one a scenario cuts off) runs in a network
//! namespace ([`corral_testkit::netns::Netns`]); etcd and NATS then listen on the host side of
//! its veth pair as well, and every process reaches NATS there. Processes can also run under
//! libfaketime (clock skew).
//!
//! Fields drop in declaration order: processes first, then the services, then the namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use corral_testkit::corral::{Proc, corral_binary, remove_containers_of, wait_serving};
use corral_testkit::etcd::EtcdServer;
use corral_testkit::nats::NatsServer;
use corral_testkit::netns::Netns;

/// Agents' lease TTL in these runs (s), short so a run is short; heartbeat 1 s.
pub const TTL: u64 = 4;
/// Coordinators' leader lease (s).
pub const LEADER_TTL: u64 = 4;

/// Where and how one process runs.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// In the cluster's network namespace.
    pub netns: bool,
    /// libfaketime offset, e.g. "+90s".
    pub skew: Option<String>,
}

pub struct FaultCluster {
    pub agents: Vec<Proc>,
    pub coordinators: Vec<Proc>,
    /// API endpoint of each coordinator.
    pub endpoints: Vec<String>,
    pub nats: NatsServer,
    pub etcd: EtcdServer,
    pub netns: Option<Netns>,
    /// Where etcd and NATS are reachable from every process (and the witness listens).
    pub host: Ipv4Addr,
    pub suffix: String,
    agent_placement: Vec<Placement>,
    pub dir: tempfile::TempDir,
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        for p in self.agents.iter_mut().chain(self.coordinators.iter_mut()) {
            // Resume a process a scenario stopped, or SIGTERM cannot end it (pid 0: already gone,
            // and `kill 0` would signal our own process group).
            if p.pid() != 0 {
                let _ = Command::new("kill").args(["-CONT", &p.pid().to_string()]).stderr(Stdio::null()).status();
            }
            p.stop(Duration::from_secs(5));
        }
        for i in 0..self.agents.len() {
            remove_containers_of(&self.node_id(i));
        }
        corral_testkit::storage::reap(self.dir.path());
    }
}

const LIBFAKETIME: &str = if cfg!(target_arch = "aarch64") {
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"
} else {
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
};

/// Fails loudly (never skips) when a tool the scenarios need is missing.
pub fn require_tools() -> anyhow::Result<()> {
    for tool in ["ip", "iptables", "nsenter", "kill"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.status.success();
        ensure!(found, "{tool} is missing: run scripts/install-deps.sh --test");
    }
    ensure!(std::path::Path::new(LIBFAKETIME).exists(), "{LIBFAKETIME} is missing: run scripts/install-deps.sh --test");
    Ok(())
}

impl FaultCluster {
    /// Starts etcd, NATS, the coordinators (the first becomes the leader before the next
    /// starts) and the agents.
    pub async fn start(coordinators: &[Placement], agents: &[Placement]) -> anyhow::Result<Self> {
        require_tools()?;
        let netns = if coordinators.iter().chain(agents).any(|p| p.netns) { Some(Netns::create()?) } else { None };
        let host = netns.as_ref().map_or(Ipv4Addr::LOCALHOST, |n| n.host_addr);
        let etcd = EtcdServer::start_on(netns.as_ref().map(|n| n.host_addr))?;
        let nats = NatsServer::start_on(host)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let mut c = Self {
            agents: Vec::new(),
            coordinators: Vec::new(),
            endpoints: Vec::new(),
            nats,
            etcd,
            netns,
            host,
            suffix: format!("{:x}", nanos ^ std::process::id()),
            agent_placement: agents.to_vec(),
            dir: tempfile::tempdir()?,
        };
        for (i, p) in coordinators.iter().enumerate() {
            let (proc, endpoint) = c.spawn_coordinator(i, p)?;
            c.coordinators.push(proc);
            c.endpoints.push(endpoint);
            if i == 0 {
                c.wait_leader().await?;
            }
        }
        for i in 0..agents.len() {
            let proc = c.spawn_agent(i)?;
            c.agents.push(proc);
        }
        Ok(c)
    }

    fn command(&self, p: &Placement) -> anyhow::Result<Command> {
        let bin = corral_binary()?;
        let mut cmd = match (&self.netns, p.netns) {
            (Some(ns), true) => ns.command(&bin),
            _ => Command::new(bin),
        };
        if let Some(skew) = &p.skew {
            cmd.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", skew);
        }
        Ok(cmd)
    }

    /// etcd's URL as seen from a process placed at `p`.
    fn etcd_url(&self, p: &Placement) -> String {
        if p.netns { self.etcd.endpoint_on(self.host) } else { self.etcd.endpoint() }
    }

    fn spawn_coordinator(&self, i: usize, p: &Placement) -> anyhow::Result<(Proc, String)> {
        let mut cmd = self.command(p)?;
        let listen = match (&self.netns, p.netns) {
            (Some(ns), true) => format!("{}:0", ns.ns_addr),
            _ => "127.0.0.1:0".to_owned(),
        };
        cmd.args(["coordinator", "--listen", &listen, "--etcd", &self.etcd_url(p), "--nats", &self.nats.url()]);
        cmd.env("CORRAL_COORDINATOR__LEADER_LEASE_SECONDS", LEADER_TTL.to_string());
        cmd.env("CORRAL_TELEMETRY__LOG", "info");
        let mut proc = Proc::spawn(&format!("coordinator c{}", i + 1), cmd, self.log(&format!("c{}", i + 1)))?;
        let endpoint = wait_serving(&mut proc)?;
        Ok((proc, endpoint))
    }

    /// Node id of agent `i` (0-based).
    pub fn node_id(&self, i: usize) -> String {
        format!("a{}-{}", i + 1, self.suffix)
    }

    /// The agent's state directory (its watchdog's command line names it).
    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(self.node_id(i))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn spawn_agent(&self, i: usize) -> anyhow::Result<Proc> {
        let p = &self.agent_placement[i];
        let node = self.node_id(i);
        let mut cmd = self.command(p)?;
        cmd.args(["agent", "--node-id", &node, "--etcd", &self.etcd_url(p), "--nats", &self.nats.url()]);
        cmd.arg("--state-dir").arg(self.state_dir(i));
        cmd.envs([
            ("CORRAL_AGENT__LEASE_TTL_SECONDS", TTL.to_string()),
            ("CORRAL_AGENT__HEARTBEAT_SECONDS", "1".to_owned()),
            ("CORRAL_AGENT__DOCKER", "off".to_owned()),
            ("CORRAL_AGENT__WARM_POOL", "0".to_owned()),
            ("CORRAL_TELEMETRY__LOG", "info".to_owned()),
        ]);
        Proc::spawn(&format!("agent {node}"), cmd, self.log(&node))
    }

    /// Starts agent `i` again with the same node id and state directory.
    pub fn restart_agent(&mut self, i: usize) -> anyhow::Result<()> {
        self.agents[i] = self.spawn_agent(i)?;
        Ok(())
    }

    /// Waits until some coordinator holds the leader key.
    pub async fn wait_leader(&self) -> anyhow::Result<String> {
        let store = corral_core::store::etcd::EtcdStore::connect(&[self.etcd.endpoint()]).await?;
        let key = corral_core::keys::LeaderKey.to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            use corral_core::store::StateStore;
            if let Some(kv) = store.get(&key).await? {
                let rec: corral_coordinator::leader::LeaderRecord = corral_core::store::decode(&kv)?;
                return Ok(rec.coordinator);
            }
            ensure!(std::time::Instant::now() < deadline, "no coordinator became the leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every process of agent `i`'s node: the agent, its descendants (sandboxes, the bwrap
    /// processes it reaps as a subreaper) and its watchdog (found by its state directory).
    pub fn node_processes(&self, i: usize) -> Vec<u32> {
        let root = self.agents[i].pid();
        let state = self.state_dir(i).to_string_lossy().into_owned();
        let mut table: Vec<(u32, u32, String)> = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
            let cmdline = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
            table.push((pid, ppid.unwrap_or(0), cmdline));
        }
        let mut node: Vec<u32> = vec![root];
        node.extend(table.iter().filter(|(_, _, c)| c.contains(&state) && c.contains("--watchdog")).map(|t| t.0));
        loop {
            let more: Vec<u32> =
                table.iter().filter(|(p, pp, _)| node.contains(pp) && !node.contains(p)).map(|t| t.0).collect();
            if more.is_empty() {
                return node;
            }
            node.extend(more);
        }
    }

    /// The tails of every process's log, for a failed run.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in self.coordinators.iter().chain(&self.agents) {
            s += &format!("--- {}:\n{}\n", p.name, p.log_tail(5000));
        }
        s
    }

    /// Counts a phrase in coordinators' logs (e.g. rejected stale reports).
    pub fn count_in_coordinator_logs(&self, needle: &str) -> usize {
        self.coordinators
            .iter()
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default().matches(needle).count())
            .sum()
    }

    pub fn netns(&mut self) -> anyhow::Result<&mut Netns> {
        self.netns.as_mut().context("this scenario's cluster has no network namespace")
    }
}
