//! Corral's own processes for end-to-end tests and benchmarks: `corral dev`, and a cluster of
//! nats-server + etcd + one coordinator + N agents, each a separate OS process on free ports.
//! Everything is killed by PID when the handle drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::etcd::EtcdServer;
use crate::nats::NatsServer;
use crate::wait_for_addr;

/// A short random suffix for ids that must not collide between concurrent tests.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("{:x}", nanos ^ std::process::id().rotate_left(16))
}

/// The `corral` binary of this build (target/<profile>/corral), which must have been built
/// (`cargo build --workspace --bins`).
pub fn corral_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("corral");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("the corral binary was not found next to {}; run `cargo build --workspace --bins` first", exe.display())
}

/// A child process killed (SIGTERM, then SIGKILL after `grace`) when dropped; its log is kept.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child: Some(child), log })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(child) = self.child.take() {
            crate::terminate(child, grace);
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `bytes` of the process's log.
    pub fn log_tail(&self, bytes: usize) -> String {
        let s = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&s[s.len().saturating_sub(bytes)..]).into_owned()
    }

    /// Resident memory (VmRSS) and its peak (VmHWM) in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field =
            |name: &str| status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse::<u64>().ok();
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Waits for the server's "serving on http://ADDR" line (it listens on port 0, so no other
/// process can hold its port) and returns the endpoint.
pub fn wait_serving(p: &mut Proc) -> anyhow::Result<String> {
    const MARK: &str = "serving on http://";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if !p.is_running() {
            bail!("{} exited during start-up; log:\n{}", p.name, p.log_tail(4000));
        }
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        // Only a complete line: the log may be read while the line is half written.
        if let Some((line, _)) = log.split(MARK).nth(1).and_then(|rest| rest.split_once('\n')) {
            let addr: String = line.chars().take_while(|c| !c.is_whitespace()).collect();
            let sock: std::net::SocketAddr = addr.parse().context("address in the serving line")?;
            wait_for_addr(sock, Duration::from_secs(5))?;
            return Ok(format!("http://{addr}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{} did not report its address; log:\n{}", p.name, p.log_tail(4000))
}

/// `corral dev` on a free port with its own state dir.
pub struct DevServer {
    pub proc: Proc,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    /// Its agent's node id (its Docker containers carry it as a label).
    pub node_id: String,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
        remove_containers_of(&self.node_id);
        crate::storage::reap(self.dir.path());
    }
}

/// Removes the Docker containers an agent with `node_id` left behind. Agents keep their
/// containers across a restart on purpose (to re-adopt them), so a test harness that stops an
/// agent for good removes them itself. Nothing to do without Docker.
pub fn remove_containers_of(node_id: &str) {
    // A container the stopped agent asked for just before it died (e.g. its image probe) can
    // appear a moment after the first pass: look twice.
    if remove_containers_once(node_id) {
        std::thread::sleep(Duration::from_millis(300));
        remove_containers_once(node_id);
    }
}

/// One removal pass; false when there is no Docker engine to ask.
fn remove_containers_once(node_id: &str) -> bool {
    let filter = format!("label=corral.node_id={node_id}");
    let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).stderr(Stdio::null()).output() else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    true
}

impl DevServer {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_env(&[])
    }

    /// Starts it with extra environment variables (e.g. `CORRAL_*` settings).
    pub fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(corral_binary()?);
        cmd.args(["dev", "--listen", "127.0.0.1:0", "--state-dir"]).arg(dir.path().join("state"));
        cmd.env("CORRAL_TELEMETRY__LOG", "info");
        // Unique per server: parallel servers share the Docker engine, and an agent reaps the
        // containers labelled with its node id that its records do not know.
        let node_id = format!("dev-{}", unique_suffix());
        cmd.env("CORRAL_AGENT__NODE_ID", &node_id);
        cmd.envs(env.iter().copied());
        let mut proc = Proc::spawn("corral dev", cmd, dir.path().join("dev.log"))?;
        let endpoint = wait_serving(&mut proc)?;
        Ok(Self { proc, endpoint, dir, node_id })
    }
}

/// nats-server + etcd + one coordinator + agents `a1..aN`, all separate processes.
pub struct Cluster {
    /// Distinguishes this cluster's node ids from other clusters' on the same Docker engine.
    pub suffix: String,
    pub agents: Vec<Proc>,
    pub coordinator: Proc,
    pub endpoint: String,
    pub nats: NatsServer,
    pub etcd: EtcdServer,
    pub dir: tempfile::TempDir,
    /// Extra environment for every agent (e.g. `CORRAL_AGENT__*` settings).
    pub agent_env: Vec<(String, String)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            agent.stop(Duration::from_secs(5));
        }
        for i in 1..=self.agents.len() {
            remove_containers_of(&self.node_id(i));
        }
        crate::storage::reap(self.dir.path());
    }
}

impl Cluster {
    pub fn start(agents: usize) -> anyhow::Result<Self> {
        Self::start_with_env(agents, &[])
    }

    /// Like [`Cluster::start`], with extra environment (`CORRAL_*` settings) for the coordinator.
    pub fn start_with_env(agents: usize, coordinator_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with_envs(agents, coordinator_env, &[])
    }

    /// Like [`Cluster::start_with_env`], with extra environment for every agent as well.
    pub fn start_with_envs(
        agents: usize,
        coordinator_env: &[(&str, &str)],
        agent_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let etcd = EtcdServer::start()?;
        let nats = NatsServer::start()?;
        let bin = corral_binary()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["coordinator", "--listen", "127.0.0.1:0", "--etcd", &etcd.endpoint()]);
        cmd.args(["--nats", &nats.url()]);
        // One object store for every process (codebases), unless the test names another.
        cmd.env("CORRAL_BLOB__DIR", dir.path().join("blobs"));
        cmd.envs(coordinator_env.iter().copied());
        let mut coordinator = Proc::spawn("coordinator", cmd, dir.path().join("coordinator.log"))?;
        let endpoint = wait_serving(&mut coordinator)?;
        let agent_env = agent_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut cluster =
            Self { suffix: unique_suffix(), agents: Vec::new(), coordinator, endpoint, nats, etcd, dir, agent_env };
        for i in 1..=agents {
            cluster.agents.push(cluster.spawn_agent(i)?);
        }
        Ok(cluster)
    }

    /// Starts another coordinator on the same etcd and NATS; returns it with its endpoint.
    pub fn add_coordinator(&self, env: &[(&str, &str)]) -> anyhow::Result<(Proc, String)> {
        let mut cmd = Command::new(corral_binary()?);
        cmd.args(["coordinator", "--listen", "127.0.0.1:0", "--etcd", &self.etcd.endpoint()]);
        cmd.args(["--nats", &self.nats.url()]);
        cmd.env("CORRAL_BLOB__DIR", self.dir.path().join("blobs"));
        cmd.envs(env.iter().copied());
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let mut proc = Proc::spawn("coordinator", cmd, self.dir.path().join(format!("coordinator-{n}.log")))?;
        let endpoint = wait_serving(&mut proc)?;
        Ok((proc, endpoint))
    }

    /// Node id of agent `i` (1-based).
    ///
    /// (Dropping the cluster stops the agents, then removes their Docker containers.)
    pub fn node_id(&self, i: usize) -> String {
        format!("a{i}-{}", self.suffix)
    }

    /// Starts agent `i` (1-based) again with the same node id and state dir, e.g. after `kill9`.
    pub fn restart_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let proc = self.spawn_agent(i)?;
        self.agents[i - 1] = proc;
        Ok(())
    }

    fn spawn_agent(&self, i: usize) -> anyhow::Result<Proc> {
        let node = self.node_id(i);
        let mut cmd = Command::new(corral_binary()?);
        cmd.args(["agent", "--node-id", &node, "--etcd", &self.etcd.endpoint(), "--nats", &self.nats.url()]);
        cmd.arg("--state-dir").arg(self.dir.path().join(&node));
        cmd.env("CORRAL_BLOB__DIR", self.dir.path().join("blobs"));
        cmd.envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        Proc::spawn(&format!("agent {node}"), cmd, self.dir.path().join(format!("{node}.log")))
    }
}
