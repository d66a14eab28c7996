//! Test harness for Corral: starts real services (etcd, nats-server) as child processes on free
//! loopback ports, waits until they answer, and kills them (by PID) when dropped.
//!
//! A missing service binary is an error that says how to install it, never a skipped test.
//!
//! - [`corral`] — `corral dev` and whole clusters as separate processes
//! - [`etcd`] — [`etcd::EtcdServer`]
//! - [`nats`] — [`nats::NatsServer`]
//! - [`netns`] — [`netns::Netns`], a network namespace joined to the host by a veth pair, whose
//!   traffic to one host port can be cut and healed
//! - [`s3`] — [`s3::S3Server`], an S3-protocol server (s3s-fs) with one bucket
//! - [`storage`] — reaping the sandbox storage a stopped agent left mounted

pub mod corral;
pub mod etcd;
pub mod nats;
pub mod netns;
pub mod s3;
pub mod storage;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    l.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    wait_for_addr(([127, 0, 0, 1], port).into(), timeout)
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_addr(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("nothing listened on {addr} within {timeout:?}")
}

/// Stops a child: SIGTERM, then SIGKILL if it has not exited within `grace`; always reaps it.
pub fn terminate(mut child: std::process::Child, grace: Duration) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// True once `needle` appears in the file at `path` (a service's log).
pub fn file_contains(path: &std::path::Path, needle: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
}

/// Runs `start` up to three times: a port picked by [`free_port`] can be taken by another test
/// process before the service binds it, which the service reports as a start-up failure.
pub fn with_port_retries<T>(mut start: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut last = None;
    for _ in 0..3 {
        match start() {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no start attempt was made")))
}

/// Finds an executable: `$PATH` first, then the given fallback directories.
pub fn find_binary(name: &str, fallbacks: &[&str], install_hint: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(fallbacks.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(anyhow::anyhow!("{name} not found on PATH; {install_hint}")).context(format!("starting {name} for a test"))
}
