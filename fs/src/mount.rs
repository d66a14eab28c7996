//! [`ViewMount`]: one sandbox's view, mounted by the agent and served by a `corral-fs` process.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use corral_core::permissions::Rules;

use crate::{eio, sys};

/// How long [`ViewMount::start`] waits for the mount to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long stopping waits for a killed server to be reaped before leaving it.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// A mounted view of a source directory through permission rules.
///
/// The agent opens `/dev/fuse`, mounts it (`fuse.corral`, `allow_other`, `nosuid`, `nodev`),
/// and hands the connection to a `corral-fs` server process, keeping a descriptor of its own. A
/// named watcher thread waits for the server to exit. If it dies while mounted (crash, kill -9),
/// the mount stays in place — the directory beneath it is never exposed — and the watcher answers
/// every further request with EIO ([`ViewMount::failed`] turns true). The server serves on its
/// own clone of the connection, so requests it had read but not answered when it died fail with
/// ECONNABORTED as soon as the process is gone (a server thread stuck in uninterruptible host I/O
/// delays that until the I/O ends); if the kernel refused the clone, they stay blocked until the
/// unmount.
///
/// Dropping it, or [`ViewMount::stop`], detaches the mount (lazily: processes still inside get
/// errors, not the source), kills and reaps the server and closes the connection; it never blocks
/// on the filesystem. `start` blocks up to [`START_TIMEOUT`]; call it off an async runtime's
/// worker threads.
pub struct ViewMount {
    mountpoint: PathBuf,
    pid: u32,
    state: Arc<State>,
    /// Dropping it wakes the watcher to stop.
    stop: Option<OwnedFd>,
    watcher: Option<JoinHandle<()>>,
    device: Option<Arc<OwnedFd>>,
    mounted: bool,
}

struct State {
    failed: AtomicBool,
    stopping: AtomicBool,
}

impl ViewMount {
    /// Mounts `source` at `mountpoint` (an existing directory) as seen through `rules`, served by
    /// `server_exe` (the `corral-fs` binary), and waits until the mount answers.
    pub fn start(server_exe: &Path, source: &Path, mountpoint: &Path, rules: &Rules) -> io::Result<ViewMount> {
        let device = sys::open_fuse_device()?;
        sys::mount_fuse(device.as_fd(), mountpoint)?;
        let device = Arc::new(device);
        let spawned = sys::pipe().and_then(|pipe| Ok((pipe, spawn_server(server_exe, source, &device)?)));
        let ((stop_rx, stop_tx), mut child) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                let _ = sys::umount_lazy(mountpoint);
                return Err(e);
            }
        };
        let state = Arc::new(State { failed: AtomicBool::new(false), stopping: AtomicBool::new(false) });
        let stdin = child.stdin.take();
        let pid = child.id();
        let watcher = {
            let (device, state) = (device.clone(), state.clone());
            std::thread::Builder::new()
                .name(format!("corral-fs-watch-{pid}"))
                .spawn(move || watch(child, &device, &stop_rx, &state))
        };
        let mut mount = ViewMount {
            mountpoint: mountpoint.to_owned(),
            pid,
            state,
            stop: Some(stop_tx),
            watcher: None,
            device: Some(device),
            mounted: true,
        };
        // On any error from here on, dropping `mount` cleans up (and kills the server).
        mount.watcher = Some(watcher?);
        let json = serde_json::to_vec(rules.rules()).map_err(io::Error::other)?;
        let mut stdin = stdin.ok_or_else(|| io::Error::other("the server's stdin is not piped"))?;
        stdin.write_all(&json)?;
        drop(stdin);
        mount.wait_until_answering(START_TIMEOUT)?;
        Ok(mount)
    }

    /// Whether the server died while mounted (every operation now answers EIO).
    pub fn failed(&self) -> bool {
        self.state.failed.load(Ordering::SeqCst)
    }

    /// The server process's pid (it may have exited).
    pub fn server_pid(&self) -> u32 {
        self.pid
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts, kills the server and closes the connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// `stat`s the mountpoint on a helper thread until it answers through the server.
    fn wait_until_answering(&self, timeout: Duration) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        let path = self.mountpoint.clone();
        // If the stat hangs, the thread ends with the connection (when this mount is dropped).
        std::thread::Builder::new().name("corral-fs-ready".into()).spawn(move || {
            let _ = tx.send(std::fs::metadata(&path));
        })?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(meta)) if meta.is_dir() && !self.failed() => Ok(()),
            Ok(Ok(_)) => Err(io::Error::other("the corral-fs server exited before answering")),
            Ok(Err(e)) => {
                Err(io::Error::new(e.kind(), format!("the view at {} does not answer: {e}", self.mountpoint.display())))
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the view at {} did not answer within {timeout:?}", self.mountpoint.display()),
            )),
        }
    }

    fn shutdown(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        if self.mounted {
            if let Err(e) = sys::umount_lazy(&self.mountpoint) {
                tracing::warn!(error = %e, mountpoint = %self.mountpoint.display(), "unmounting the view failed");
            }
            self.mounted = false;
        }
        drop(self.stop.take());
        if let Some(watcher) = self.watcher.take()
            && watcher.join().is_err()
        {
            tracing::error!("the view's watcher thread panicked");
        }
        drop(self.device.take());
    }
}

impl Drop for ViewMount {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts `corral-fs --fd 1 --source DIR` with an empty environment, a piped stdin (for the
/// rules) and the connection as its stdout. Passing it as a standard stream needs no code
/// between fork and exec, so std can start the server with `posix_spawn` (no copy of the
/// agent's page tables), and no other process the agent starts meanwhile can inherit it.
fn spawn_server(server_exe: &Path, source: &Path, device: &OwnedFd) -> io::Result<Child> {
    Command::new(server_exe)
        .arg("--fd")
        .arg("1")
        .arg("--source")
        .arg(source)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::from(device.try_clone()?))
        .stderr(Stdio::inherit())
        .spawn()
}

/// The watcher: waits for the server to exit or for the stop signal. On stop it kills and reaps
/// the server; on an unexpected exit it marks the mount failed and answers EIO until stopped.
fn watch(mut child: Child, device: &OwnedFd, stop: &OwnedFd, state: &State) {
    let pidfd = match sys::pidfd_open(child.id()) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the corral-fs server; killing it");
            let _ = child.kill();
            let _ = child.wait();
            state.failed.store(true, Ordering::SeqCst);
            return;
        }
    };
    let revents = sys::poll(&[pidfd.as_fd(), stop.as_fd()], -1).unwrap_or_else(|_| vec![0, 1]);
    if revents[1] != 0 || state.stopping.load(Ordering::SeqCst) {
        kill_and_reap(&mut child, &pidfd);
        return;
    }
    let status = child.wait();
    if state.stopping.load(Ordering::SeqCst) {
        return;
    }
    state.failed.store(true, Ordering::SeqCst);
    tracing::error!(pid = child.id(), status = ?status, "the corral-fs server died; its view now answers EIO");
    eio::answer_eio(device, stop);
}

fn kill_and_reap(child: &mut Child, pidfd: &OwnedFd) {
    let _ = sys::pidfd_kill(pidfd.as_fd());
    let timeout = REAP_TIMEOUT.as_millis() as i32;
    match sys::poll(&[pidfd.as_fd()], timeout) {
        Ok(revents) if revents[0] != 0 => {
            let _ = child.wait();
        }
        _ => tracing::warn!(pid = child.id(), "the killed corral-fs server did not exit; leaving it"),
    }
}
