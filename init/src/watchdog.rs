//! The node watchdog (`corral-init --watchdog SOCKET`): a process of its own, beside the agent,
//! that kills every sandbox process of the node when the agent stops renewing it.
//!
//! An agent stopped (SIGSTOP, a stuck host, a long GC pause) cannot fence itself, and its
//! sandboxes keep running after its lease expired and the coordinator moved their work
//! elsewhere. The watchdog does not stall with the agent: the agent renews it after every
//! successful lease keep-alive with a deadline shorter than the lease TTL, so when renewals
//! stop, every process in the agent's sandbox cgroups is killed before the lease can expire, and
//! so before the coordinator re-queues anything.
//!
//! Protocol: lines over a Unix stream socket. `dirs DIR\tDIR…` sets the cgroup directories whose
//! every process (in every descendant cgroup) is killed; `renew MS` arms the deadline MS
//! milliseconds from now; `stop` disarms it (a clean agent shutdown). A disconnect changes
//! nothing: a restarted agent connects to the same watchdog and renews it in time, or the
//! deadline passes. After it fires, or after `stop`, the watchdog exits once no agent is connected.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    dirs: Vec<PathBuf>,
    deadline: Option<Instant>,
    clients: usize,
    /// Whether an agent ever connected (the watchdog waits for its first one).
    seen: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// How long a new watchdog waits for its first agent before it gives up.
const FIRST_CLIENT: Duration = Duration::from_secs(30);

/// Serves `socket` until the watchdog has nothing left to guard.
pub fn run(socket: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    let shared: Shared = Arc::default();
    let accept = shared.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let client = accept.clone();
            client.0.lock().unwrap_or_else(|p| p.into_inner()).clients += 1;
            std::thread::spawn(move || serve(stream, &client));
        }
    });
    let started = Instant::now();
    let (lock, wake) = &*shared;
    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        match state.deadline {
            Some(d) if d <= now => {
                state.deadline = None;
                let dirs = state.dirs.clone();
                drop(state);
                let killed = kill_all(&dirs);
                eprintln!("corral-watchdog: no renewal before the deadline; killed {killed} sandbox processes");
                state = lock.lock().unwrap_or_else(|p| p.into_inner());
            }
            Some(d) => state = wake.wait_timeout(state, d - now).unwrap_or_else(|p| p.into_inner()).0,
            None if state.clients == 0 && (state.seen || started.elapsed() > FIRST_CLIENT) => break,
            None => state = wake.wait_timeout(state, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner()).0,
        }
    }
    let _ = std::fs::remove_file(socket);
    Ok(())
}

fn serve(stream: UnixStream, shared: &Shared) {
    let (lock, wake) = &**shared;
    lock.lock().unwrap_or_else(|p| p.into_inner()).seen = true;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("dirs", rest) => state.dirs = rest.split('\t').filter(|d| !d.is_empty()).map(PathBuf::from).collect(),
            ("renew", ms) => match ms.parse::<u64>() {
                Ok(ms) => state.deadline = Some(Instant::now() + Duration::from_millis(ms)),
                Err(_) => eprintln!("corral-watchdog: bad renew {ms:?}"),
            },
            ("stop", _) => state.deadline = None,
            _ => eprintln!("corral-watchdog: unknown request {line:?}"),
        }
        wake.notify_all();
    }
    lock.lock().unwrap_or_else(|p| p.into_inner()).clients -= 1;
    wake.notify_all();
}

/// Kills every process in every cgroup under `dirs` (v2 `cgroup.kill` where the kernel has it,
/// else SIGKILL to each listed pid, until the cgroups are empty); returns how many were signalled.
pub fn kill_all(dirs: &[PathBuf]) -> usize {
    let mut killed = 0;
    for _ in 0..100 {
        let mut found = 0;
        for dir in dirs {
            found += kill_under(dir);
        }
        killed += found;
        if found == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    killed
}

fn kill_under(dir: &Path) -> usize {
    let mut found = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found += kill_under(&entry.path());
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
    if pids.is_empty() {
        return found;
    }
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in &pids {
            // SAFETY: kill(2) with a pid read from the cgroup and a constant signal.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
    found + pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_all_without_cgroups_finds_nothing() {
        let dir = std::env::temp_dir().join(format!("corral-watchdog-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/cgroup.procs"), "").unwrap();
        assert_eq!(kill_all(std::slice::from_ref(&dir)), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
