//! [`EtcdServer`]: a real single-member etcd on two free loopback ports (client and peer), with
//! its data in a temporary directory and revision auto-compaction (keep the last 1,000
//! revisions). [`EtcdServer::restart`] keeps the ports and the data, so tests can check that
//! state and clients survive an etcd restart.
//!
//! The server is Debian's `etcd-server` (`/usr/bin/etcd`). It is ready once `GET /health` on the
//! client port answers `"health":"true"`, which needs an elected leader, so a real request succeeds
//! right after [`EtcdServer::start`] returns.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::{file_contains, find_binary, free_port, with_port_retries};

const INSTALL_HINT: &str = "install it with `apt-get install etcd-server`";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the server log quoted in start errors.
const LOG_TAIL: u64 = 4096;

/// A running etcd, killed (by PID) and waited for on drop.
pub struct EtcdServer {
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// An address the server also listens on (a veth's host side), besides 127.0.0.1.
    extra: Option<std::net::Ipv4Addr>,
    dir: TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd and waits (blocking) until it serves requests.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(None)
    }

    /// Starts etcd listening on 127.0.0.1 and, when given, on `extra` too (the host side of a
    /// test's veth pair, so processes in a network namespace can reach it).
    pub fn start_on(extra: Option<std::net::Ipv4Addr>) -> anyhow::Result<Self> {
        let binary = find_binary("etcd", &["/usr/bin", "/usr/local/bin"], INSTALL_HINT)?;
        with_port_retries(|| {
            let dir = tempfile::Builder::new().prefix("corral-etcd-").tempdir().context("creating etcd data dir")?;
            let client_port = free_port();
            let peer_port = loop {
                let port = free_port();
                if port != client_port {
                    break port;
                }
            };
            let mut server = Self { binary: binary.clone(), client_port, peer_port, extra, dir, child: None };
            server.spawn()?;
            Ok(server)
        })
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client URL on `addr` (127.0.0.1 or the address given to [`EtcdServer::start_on`]).
    pub fn endpoint_on(&self, addr: std::net::Ipv4Addr) -> String {
        format!("http://{addr}:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// PID of the running server (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops etcd (SIGTERM, then SIGKILL after 5 s) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::terminate(child, STOP_TIMEOUT);
        }
    }

    /// Stops etcd and starts it again on the same ports with the same data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).context("opening etcd log")?;
        let log_err = log.try_clone().context("opening etcd log")?;
        let client_url = self.endpoint();
        let listen = match self.extra {
            Some(addr) => format!("{client_url},{}", self.endpoint_on(addr)),
            None => client_url.clone(),
        };
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name=default")
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={listen}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .args(["--auto-compaction-mode=revision", "--auto-compaction-retention=1000"])
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
            return Err(e.context(format!("etcd log tail:\n{}", self.log_tail())));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("waiting for etcd")?
            {
                bail!("etcd exited during start-up with {status}");
            }
            // Our own log must say it serves the port: another test's etcd may own it.
            let serving = format!("serving insecure client requests on 127.0.0.1:{}", self.client_port);
            if healthy(self.client_port) && file_contains(&self.log_path(), &serving) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("etcd on port {} did not report healthy within {READY_TIMEOUT:?}", self.client_port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(self.log_path())?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail)?;
            Ok(String::from_utf8_lossy(&tail).into_owned())
        };
        read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when `GET /health` on the client port says the member is healthy (it has a leader).
fn healthy(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ask = || -> std::io::Result<String> {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        conn.set_read_timeout(Some(Duration::from_secs(1)))?;
        conn.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    };
    ask().is_ok_and(|reply| reply.contains(r#""health":"true""#))
}
