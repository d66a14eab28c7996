//! The agent's side of the node watchdog (`corral-init --watchdog`, see
//! [`corral_init::watchdog`]): a process beside the agent that kills every sandbox process when
//! the agent stops renewing it, so an agent stopped past its lease (SIGSTOP, a stuck host) cannot
//! leave attempts running beside their replacements.
//!
//! The agent renews it after every successful lease keep-alive with [`AgentConfig::watchdog`]
//! (the lease TTL less a second, so the kill lands before the lease can expire and before the
//! coordinator re-queues anything). The watchdog lives on its socket in the state directory: a
//! restarted agent connects to the one already running, so Docker containers it re-adopts are not
//! killed while it starts.
//!
//! [`AgentConfig::watchdog`]: crate::config::AgentConfig::watchdog

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A connection to the node watchdog.
pub struct Watchdog {
    socket: PathBuf,
    init: PathBuf,
    log: PathBuf,
    dirs: Vec<PathBuf>,
    /// How long after a renewal the watchdog fires.
    after: Duration,
    conn: Mutex<Option<UnixStream>>,
    renewed: Mutex<Option<Instant>>,
}

impl Watchdog {
    /// Connects to the watchdog of `state_dir` (starting one with the `init` binary if none runs)
    /// and tells it which cgroup directories hold the sandboxes' processes.
    pub fn start(state_dir: &Path, init: &Path, dirs: Vec<PathBuf>, after: Duration) -> std::io::Result<Self> {
        let dog = Self {
            socket: state_dir.join("watchdog.sock"),
            init: init.to_owned(),
            log: state_dir.join("watchdog.log"),
            dirs,
            after,
            conn: Mutex::new(None),
            renewed: Mutex::new(None),
        };
        dog.send("")?;
        Ok(dog)
    }

    /// Arms (or re-arms) the deadline: the sandboxes die unless renewed again in time.
    pub fn renew(&self) {
        let at = Instant::now();
        match self.send(&format!("renew {}\n", self.after.as_millis())) {
            Ok(()) => *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Some(at),
            Err(e) => tracing::error!(error = %e, "could not renew the node watchdog"),
        }
    }

    /// True when the last renewal is older than the deadline: the watchdog may have killed the
    /// sandboxes (the agent was stopped), so what died by SIGKILL meanwhile died of that.
    pub fn may_have_fired(&self) -> bool {
        self.renewed.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() >= self.after)
    }

    /// Disarms it (a clean shutdown: the agent ends its sandboxes itself).
    pub fn stop(&self) {
        if let Err(e) = self.send("stop\n") {
            tracing::warn!(error = %e, "could not disarm the node watchdog");
        }
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<UnixStream>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `line`, (re)connecting first if needed; a fresh connection starts with the dirs.
    fn send(&self, line: &str) -> std::io::Result<()> {
        let mut conn = self.lock();
        if let Some(stream) = conn.as_mut() {
            if stream.write_all(line.as_bytes()).is_ok() {
                return Ok(());
            }
            *conn = None;
        }
        let mut stream = self.connect()?;
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        stream.write_all(format!("dirs {}\n{line}", dirs.join("\t")).as_bytes())?;
        *conn = Some(stream);
        Ok(())
    }

    fn connect(&self) -> std::io::Result<UnixStream> {
        if let Ok(stream) = UnixStream::connect(&self.socket) {
            return Ok(stream);
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        // Its own session and process group: signals for the agent's group never reach it.
        let child = Command::new(&self.init)
            .arg("--watchdog")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()?;
        tracing::info!(pid = child.id(), socket = %self.socket.display(), "started the node watchdog");
        // Not waited for: it outlives this agent if need be (a restarted agent reconnects).
        drop(child);
        let mut last = None;
        for _ in 0..200 {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("watchdog socket never appeared")))
    }
}
