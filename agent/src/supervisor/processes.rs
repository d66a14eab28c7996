//! Background processes: started like an exec but without a timeout or output cap, numbered per
//! sandbox, their output kept in a [`Ring`] for followers that arrive later and fanned out live
//! to current followers without ever blocking the process (a follower that falls behind gets a
//! `Dropped` count instead of the bytes it missed).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use corral_core::ids::{ExecId, SandboxId};
use corral_core::model::{Command, ExecSpec, ExitStatus, ProcessInfo};
use corral_core::time::now_ms;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::ring::{Ring, Stream};
use crate::runtime::{ExecEvent, ExecHandle, Runtime, RuntimeError, RuntimeResult};

/// Background processes a sandbox may have, running or exited (the oldest exited ones are
/// forgotten to make room; when all are running, starting another is refused).
pub const MAX_PROCESSES: usize = 32;
/// Followers one process may have at once.
pub const MAX_FOLLOWERS: usize = 16;
/// Live chunks queued per follower before it starts missing output.
const FOLLOWER_QUEUE: usize = 64;

/// What a follower receives, in order; `Exit` is the last item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// This many bytes were dropped here (from the buffer, or because the follower fell behind).
    Dropped(u64),
    Exit(ExitStatus),
}

/// How a process whose sandbox vanished under it is reported.
const GONE: ExitStatus =
    ExitStatus { exit_code: -1, signal: 9, timed_out: false, truncated: false, duration_ms: 0, oom_killed: false };

struct Follower {
    id: ExecId,
    tx: mpsc::Sender<ProcOutput>,
    /// Bytes this follower missed and has not been told about yet.
    missed: u64,
}

impl Follower {
    /// Queues `out` without waiting; false once the follower is gone.
    fn offer(&mut self, out: ProcOutput) -> bool {
        if self.missed > 0 {
            match self.tx.try_send(ProcOutput::Dropped(self.missed)) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += out_len(&out);
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(TrySendError::Full(out)) => {
                self.missed += out_len(&out);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

fn out_len(out: &ProcOutput) -> u64 {
    match out {
        ProcOutput::Stdout(d) | ProcOutput::Stderr(d) => d.len() as u64,
        ProcOutput::Dropped(_) | ProcOutput::Exit(_) => 0,
    }
}

#[derive(Default)]
struct ProcState {
    ring: Ring,
    exit: Option<ExitStatus>,
    ended_at_ms: i64,
    followers: Vec<Follower>,
}

struct Proc {
    pid: u32,
    exec: ExecId,
    command: String,
    started_at_ms: i64,
    state: Mutex<ProcState>,
}

impl Proc {
    fn state(&self) -> MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn output(&self, stream: Stream, data: Vec<u8>) {
        let mut st = self.state();
        let out = match stream {
            Stream::Stdout => ProcOutput::Stdout(data.clone()),
            Stream::Stderr => ProcOutput::Stderr(data.clone()),
        };
        st.ring.push(stream, data);
        st.followers.retain_mut(|f| f.offer(out.clone()));
    }

    /// Records the exit and lets the followers go: each reports the exit once it has read what
    /// was queued for it (see [`Follow::next`]).
    fn finish(&self, status: ExitStatus) {
        let mut st = self.state();
        st.exit = Some(status);
        st.ended_at_ms = now_ms();
        for f in std::mem::take(&mut st.followers) {
            if f.missed > 0 {
                let _ = f.tx.try_send(ProcOutput::Dropped(f.missed));
            }
        }
    }

    fn info(&self) -> ProcessInfo {
        let st = self.state();
        ProcessInfo {
            pid: self.pid,
            command: self.command.clone(),
            exit: st.exit,
            started_at_ms: self.started_at_ms,
            ended_at_ms: st.ended_at_ms,
        }
    }
}

/// One follower's stream: the buffered output, then live output, then the exit.
pub struct Follow {
    backlog: VecDeque<ProcOutput>,
    live: mpsc::Receiver<ProcOutput>,
    proc: Arc<Proc>,
    exit_sent: bool,
}

impl Follow {
    /// The next item; `None` after the exit, or when the follower was dropped (unfollowed, or the
    /// sandbox forgotten) before the process ended.
    pub async fn next(&mut self) -> Option<ProcOutput> {
        if let Some(out) = self.backlog.pop_front() {
            return Some(out);
        }
        if let Some(out) = self.live.recv().await {
            return Some(out);
        }
        let exit = self.proc.state().exit.filter(|_| !self.exit_sent)?;
        self.exit_sent = true;
        Some(ProcOutput::Exit(exit))
    }
}

#[derive(Default)]
struct Table {
    next_pid: u32,
    procs: BTreeMap<u32, Arc<Proc>>,
}

/// The background processes of every sandbox on this node.
#[derive(Default)]
pub struct Processes {
    sandboxes: Mutex<HashMap<SandboxId, Table>>,
}

fn display(command: &Command) -> String {
    match command {
        Command::Argv(argv) => argv.join(" "),
        Command::Shell(s) => s.clone(),
    }
}

impl Processes {
    fn lock(&self) -> MutexGuard<'_, HashMap<SandboxId, Table>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, sandbox: &SandboxId, pid: u32) -> RuntimeResult<Arc<Proc>> {
        let found = self.lock().get(sandbox).and_then(|t| t.procs.get(&pid).cloned());
        found.ok_or_else(|| RuntimeError::ProcessNotFound { sandbox: sandbox.clone(), pid })
    }

    /// Starts `spec` as a background process and returns its pid (the spec's timeout and output
    /// cap do not apply).
    pub async fn start(&self, rt: &Arc<dyn Runtime>, sandbox: &SandboxId, mut spec: ExecSpec) -> RuntimeResult<u32> {
        spec.timeout_ms = 0;
        spec.max_output_bytes = u64::MAX;
        spec.side_channel = false;
        let proc = self.reserve(sandbox, display(&spec.command))?;
        let handle = match rt.exec(sandbox, proc.exec, spec).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(t) = self.lock().get_mut(sandbox) {
                    t.procs.remove(&proc.pid);
                }
                return Err(e);
            }
        };
        let pid = proc.pid;
        corral_core::task::spawn_detached("agent.process_output", pump(proc, handle));
        Ok(pid)
    }

    /// Adds a process entry, forgetting the oldest exited one when the table is full.
    fn reserve(&self, sandbox: &SandboxId, command: String) -> RuntimeResult<Arc<Proc>> {
        let mut map = self.lock();
        let table = map.entry(sandbox.clone()).or_default();
        if table.procs.len() >= MAX_PROCESSES {
            let oldest_exited = table.procs.values().find(|p| p.state().exit.is_some()).map(|p| p.pid);
            let Some(pid) = oldest_exited else {
                return Err(RuntimeError::ResourceExhausted(format!(
                    "sandbox {sandbox} already runs {MAX_PROCESSES} background processes (the limit per sandbox); \
                     kill one first"
                )));
            };
            table.procs.remove(&pid);
        }
        table.next_pid += 1;
        let proc = Arc::new(Proc {
            pid: table.next_pid,
            exec: ExecId::random(),
            command,
            started_at_ms: now_ms(),
            state: Mutex::default(),
        });
        table.procs.insert(proc.pid, proc.clone());
        Ok(proc)
    }

    /// The sandbox's processes, by pid.
    pub fn list(&self, sandbox: &SandboxId) -> Vec<ProcessInfo> {
        let procs: Vec<Arc<Proc>> =
            self.lock().get(sandbox).map(|t| t.procs.values().cloned().collect()).unwrap_or_default();
        procs.iter().map(|p| p.info()).collect()
    }

    /// Sends `signal` to a running process's process group.
    pub async fn signal(&self, rt: &Arc<dyn Runtime>, sandbox: &SandboxId, pid: u32, signal: i32) -> RuntimeResult<()> {
        let proc = self.get(sandbox, pid)?;
        let exited = |status: ExitStatus| {
            RuntimeError::Conflict(format!("process {pid} has already exited (exit code {})", status.exit_code))
        };
        if let Some(status) = proc.state().exit {
            return Err(exited(status));
        }
        match rt.signal_exec(sandbox, proc.exec, signal).await {
            Err(RuntimeError::ExecNotFound { .. }) => Err(exited(proc.state().exit.unwrap_or(GONE))),
            other => other,
        }
    }

    /// Kills a process's whole tree; a no-op once it exited.
    pub async fn kill(&self, rt: &Arc<dyn Runtime>, sandbox: &SandboxId, pid: u32) -> RuntimeResult<()> {
        let proc = self.get(sandbox, pid)?;
        if proc.state().exit.is_some() {
            return Ok(());
        }
        match rt.kill_exec(sandbox, proc.exec).await {
            Err(RuntimeError::ExecNotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Starts following a process: `follow` names the follower (for [`Self::unfollow`]).
    pub fn follow(&self, sandbox: &SandboxId, pid: u32, follow: ExecId) -> RuntimeResult<Follow> {
        let proc = self.get(sandbox, pid)?;
        let (tx, live) = mpsc::channel(FOLLOWER_QUEUE);
        let mut st = proc.state();
        let mut backlog = VecDeque::new();
        if st.ring.dropped() > 0 {
            backlog.push_back(ProcOutput::Dropped(st.ring.dropped()));
        }
        backlog.extend(st.ring.chunks().map(|(stream, d)| match stream {
            Stream::Stdout => ProcOutput::Stdout(d.clone()),
            Stream::Stderr => ProcOutput::Stderr(d.clone()),
        }));
        if st.exit.is_none() {
            st.followers.retain(|f| !f.tx.is_closed());
            if st.followers.len() >= MAX_FOLLOWERS {
                return Err(RuntimeError::ResourceExhausted(format!(
                    "process {pid} already has {MAX_FOLLOWERS} followers (the limit per process)"
                )));
            }
            st.followers.push(Follower { id: follow, tx, missed: 0 });
        }
        drop(st);
        Ok(Follow { backlog, live, proc, exit_sent: false })
    }

    /// Stops a follower whose reader went away (unknown ids are ignored).
    pub fn unfollow(&self, sandbox: &SandboxId, follow: ExecId) {
        let procs: Vec<Arc<Proc>> =
            self.lock().get(sandbox).map(|t| t.procs.values().cloned().collect()).unwrap_or_default();
        for p in procs {
            p.state().followers.retain(|f| f.id != follow);
        }
    }

    /// Forgets a destroyed sandbox's processes (their trees died with it).
    pub fn forget(&self, sandbox: &SandboxId) {
        self.lock().remove(sandbox);
    }
}

/// Moves one process's output into its buffer and followers until it exits.
async fn pump(proc: Arc<Proc>, mut handle: ExecHandle) {
    while let Some(event) = handle.events.recv().await {
        match event {
            ExecEvent::Stdout(d) => proc.output(Stream::Stdout, d),
            ExecEvent::Stderr(d) => proc.output(Stream::Stderr, d),
            ExecEvent::Side(_) => {}
            ExecEvent::Exit(status) => return proc.finish(status),
        }
    }
    proc.finish(GONE);
}
