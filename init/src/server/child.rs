//! One exec: the spawned process, its pipes, its output budget and its deadline.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::sys;
use crate::protocol::{Event, Exited, MAX_SIDE_BYTES, SpawnErrorKind, SpawnRequest};

/// How long to wait for the pipes to reach EOF after the main process exited (a background
/// grandchild may hold them open forever).
pub const DRAIN_GRACE: Duration = Duration::from_millis(50);

/// Index of a child's output streams.
pub const STDOUT: usize = 0;
pub const STDERR: usize = 1;
/// The side channel (the child's fd 3), when requested.
pub const SIDE: usize = 2;

/// Input still to be written to the child's stdin.
struct StdinFeed {
    fd: OwnedFd,
    data: Vec<u8>,
    written: usize,
}

pub struct Child {
    pub id: u64,
    pub pid: i32,
    started: Instant,
    deadline: Option<Instant>,
    stdin: Option<StdinFeed>,
    outs: [Option<OwnedFd>; 3],
    budget: [u64; 3],
    truncated: bool,
    /// `(exit_code, signal, when)` once reaped.
    exit: Option<(i32, i32, Instant)>,
    timed_out: bool,
}

/// Starts the command of `req` in a new session with exactly the requested environment.
pub fn spawn(req: SpawnRequest) -> Result<Child, (SpawnErrorKind, String)> {
    let Some((program, args)) = req.argv.split_first() else {
        return Err((SpawnErrorKind::BadRequest, "empty argv".to_owned()));
    };
    if !std::fs::metadata(&req.cwd).is_ok_and(|m| m.is_dir()) {
        return Err((SpawnErrorKind::BadCwd, format!("working directory {:?} is not a directory", req.cwd)));
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env_clear().envs(req.env.iter().map(|(k, v)| (k, v))).current_dir(&req.cwd);
    cmd.stdin(if req.stdin.is_empty() { Stdio::null() } else { Stdio::piped() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let side = if req.side_channel {
        Some(sys::side_pipe().map_err(|e| (SpawnErrorKind::Resources, format!("side channel: {e}")))?)
    } else {
        None
    };
    let side_fd = side.as_ref().map(|(_, w)| w.as_raw_fd());
    // SAFETY: the hook runs between fork and exec and only calls setsid(2) and dup2(2), which
    // are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            sys::new_session()?;
            side_fd.map_or(Ok(()), sys::install_side_fd)
        })
    };
    let mut child = cmd.spawn().map_err(|e| classify(program, &e))?;
    let started = Instant::now();
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdout), Some(stderr)) = (pipes.1, pipes.2) else {
        return Err((SpawnErrorKind::Resources, "missing output pipes".to_owned()));
    };
    // The write end closes here: only the child holds it now.
    let side_read = side.map(|(read, _write)| read);
    let outs: [Option<OwnedFd>; 3] = [Some(stdout.into()), Some(stderr.into()), side_read];
    let mut stdin = None;
    if let Some(fd) = pipes.0 {
        let fd = OwnedFd::from(fd);
        let _ = sys::set_nonblocking(fd.as_raw_fd());
        stdin = Some(StdinFeed { fd, data: req.stdin, written: 0 });
    }
    for fd in outs.iter().flatten() {
        let _ = sys::set_nonblocking(fd.as_raw_fd());
    }
    Ok(Child {
        id: req.id,
        pid: child.id() as i32,
        started,
        deadline: (req.timeout_ms > 0).then(|| started + Duration::from_millis(req.timeout_ms)),
        stdin,
        outs,
        budget: [req.max_output_bytes, req.max_output_bytes, MAX_SIDE_BYTES],
        truncated: false,
        exit: None,
        timed_out: false,
    })
}

fn classify(program: &str, e: &io::Error) -> (SpawnErrorKind, String) {
    let kind = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => SpawnErrorKind::NotFound,
        (io::ErrorKind::InvalidInput, _) => SpawnErrorKind::BadRequest,
        (_, Some(libc::EAGAIN | libc::ENOMEM)) => SpawnErrorKind::Resources,
        _ => SpawnErrorKind::NotExecutable,
    };
    (kind, format!("{program}: {e}"))
}

impl Child {
    pub fn stdin_fd(&self) -> Option<&OwnedFd> {
        self.stdin.as_ref().map(|s| &s.fd)
    }

    pub fn out_fd(&self, stream: usize) -> Option<&OwnedFd> {
        self.outs[stream].as_ref()
    }

    /// Writes more of the pending stdin; closes it when done or when the child stopped reading.
    pub fn feed_stdin(&mut self) {
        let Some(feed) = self.stdin.as_mut() else { return };
        match sys::write(feed.fd.as_fd(), &feed.data[feed.written..]) {
            Ok(n) => feed.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => feed.written = feed.data.len(),
        }
        if feed.written >= feed.data.len() {
            self.stdin = None;
        }
    }

    /// Reads once from `stream`, appending the kept part as an event; past the budget, output is
    /// discarded and the exec marked truncated.
    pub fn read_output(&mut self, stream: usize, buf: &mut [u8], events: &mut Vec<Event>) {
        let Some(fd) = self.outs[stream].as_ref() else { return };
        let n = match sys::read(fd.as_fd(), buf) {
            Ok(0) => return self.outs[stream] = None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return self.outs[stream] = None,
        };
        let keep = (n as u64).min(self.budget[stream]) as usize;
        self.budget[stream] -= keep as u64;
        if keep < n && stream != SIDE {
            self.truncated = true;
        }
        if keep > 0 {
            let (id, data) = (self.id, buf[..keep].to_vec());
            events.push(match stream {
                STDOUT => Event::Stdout { id, data },
                STDERR => Event::Stderr { id, data },
                _ => Event::Side { id, data },
            });
        }
    }

    /// True until the main process has been reaped.
    pub fn is_running(&self) -> bool {
        self.exit.is_none()
    }

    /// Records the reaped status of the main process.
    pub fn on_exit(&mut self, exit_code: i32, signal: i32) {
        self.exit = Some((exit_code, signal, Instant::now()));
        self.stdin = None;
    }

    /// Kills the tree when the deadline has passed.
    pub fn check_timeout(&mut self, now: Instant) {
        if self.exit.is_none() && !self.timed_out && self.deadline.is_some_and(|d| d <= now) {
            self.timed_out = true;
            kill_tree(self.pid);
        }
    }

    /// When this child next needs attention without any fd becoming ready.
    pub fn next_wake(&self) -> Option<Instant> {
        match self.exit {
            Some((_, _, at)) if self.outs.iter().any(Option::is_some) => Some(at + DRAIN_GRACE),
            Some(_) => None,
            None if self.timed_out => None,
            None => self.deadline,
        }
    }

    /// The final event, once the process exited and its output is drained (or the grace passed).
    pub fn finished(&self, now: Instant) -> Option<Event> {
        let (exit_code, signal, at) = self.exit?;
        if self.outs.iter().any(Option::is_some) && now < at + DRAIN_GRACE {
            return None;
        }
        Some(Event::Exited(Exited {
            id: self.id,
            exit_code,
            signal,
            timed_out: self.timed_out,
            truncated: self.truncated,
            duration_ms: at.duration_since(self.started).as_millis() as u64,
        }))
    }
}

/// SIGKILLs the process group `sid` and every live process of session `sid` (background jobs
/// that moved to another process group), rescanning until a pass finds none.
pub fn kill_tree(sid: i32) {
    sys::sigkill(-sid);
    let mut killed = Vec::new();
    for _ in 0..8 {
        if kill_session_members(sid, &mut killed) == 0 {
            break;
        }
    }
}

/// One scan of `/proc`; returns how many processes not killed before were found.
fn kill_session_members(sid: i32, killed: &mut Vec<i32>) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let before = killed.len();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name: state ppid pgrp session ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        if state != Some("Z") && fields.nth(2).and_then(|s| s.parse::<i32>().ok()) == Some(sid) {
            sys::sigkill(pid);
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
    }
    killed.len() - before
}
