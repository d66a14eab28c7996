//! The agent's end of one init's control stream (bubblewrap: the init's stdin/stdout pipes;
//! Docker: the container's attached stdin/stdout): a writer shared by all callers and a reader
//! task that demultiplexes events into per-exec channels and per-request file replies.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use corral_core::model::ExitStatus;
use corral_init::protocol::{self, Event, Exited, FileFailure, FileReply, HEADER, Request, SpawnErrorKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::{ExecEvent, RuntimeError, RuntimeResult};

/// Events buffered per exec before the reader waits for the consumer (the init stops reading a
/// child's output meanwhile, so memory stays bounded whatever the command prints).
pub const EXEC_CHANNEL: usize = 64;

/// The answer to a spawn: started (events follow on the channel) or refused.
pub type StartReply = oneshot::Receiver<RuntimeResult<()>>;

/// The answer to a file request.
pub type FileResult = Result<FileReply, FileFailure>;

/// The control stream's writing half.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Reads the sandbox's cgroup OOM-kill counter (`None` when unknown).
pub type OomCounter = Box<dyn Fn() -> Option<u64> + Send + Sync>;

struct Slot {
    started: Option<oneshot::Sender<RuntimeResult<()>>>,
    events: mpsc::Sender<ExecEvent>,
    /// The OOM-kill counter when the exec started.
    oom_before: Option<u64>,
}

#[derive(Default)]
struct Table {
    /// The init is gone: no new execs.
    closed: bool,
    slots: HashMap<u64, Slot>,
    files: HashMap<u64, oneshot::Sender<FileResult>>,
}

pub struct Conn {
    /// `None` once closed: the bubblewrap init then kills everything and exits.
    writer: tokio::sync::Mutex<Option<Writer>>,
    table: Mutex<Table>,
    oom: Option<OomCounter>,
}

/// Reads one event; `Ok(None)` at a clean end of stream.
pub async fn read_event(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Event>> {
    let mut header = [0u8; HEADER];
    match r.read_exact(&mut header).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    };
    let len = protocol::payload_len(header).map_err(io::Error::other)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    protocol::decode(&payload).map(Some).map_err(io::Error::other)
}

fn exit_status(x: &Exited, oom_killed: bool) -> ExitStatus {
    ExitStatus {
        exit_code: x.exit_code,
        signal: x.signal,
        timed_out: x.timed_out,
        truncated: x.truncated,
        duration_ms: x.duration_ms,
        oom_killed,
    }
}

fn gone(what: &str) -> RuntimeError {
    let e = io::Error::new(io::ErrorKind::BrokenPipe, "its init exited; destroy and recreate it");
    RuntimeError::io(format!("the sandbox is no longer running ({what})"), e)
}

/// The status reported for execs whose sandbox ended under them.
const SANDBOX_GONE: ExitStatus = ExitStatus {
    exit_code: -1,
    signal: libc::SIGKILL,
    timed_out: false,
    truncated: false,
    duration_ms: 0,
    oom_killed: false,
};

impl Conn {
    /// `oom` reads the sandbox's OOM-kill counter, compared before and after each exec.
    pub fn new(writer: Writer, oom: Option<OomCounter>) -> Self {
        Self { writer: tokio::sync::Mutex::new(Some(writer)), table: Mutex::new(Table::default()), oom }
    }

    fn oom_kills(&self) -> Option<u64> {
        self.oom.as_ref().and_then(|read| read())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `id` for a new exec.
    pub fn register(&self, id: u64) -> RuntimeResult<(StartReply, mpsc::Receiver<ExecEvent>)> {
        let oom_before = self.oom_kills();
        let mut t = self.table();
        if t.closed {
            return Err(gone("exec"));
        }
        if t.slots.contains_key(&id) {
            return Err(RuntimeError::Invalid { what: "exec id", why: format!("exec {id:x} is already running") });
        }
        let (started, start_rx) = oneshot::channel();
        let (events, rx) = mpsc::channel(EXEC_CHANNEL);
        t.slots.insert(id, Slot { started: Some(started), events, oom_before });
        Ok((start_rx, rx))
    }

    /// Reserves `id` for a file request; the receiver gets its answer.
    pub fn register_file(&self, id: u64) -> RuntimeResult<oneshot::Receiver<FileResult>> {
        let mut t = self.table();
        if t.closed {
            return Err(gone("file operation"));
        }
        let (tx, rx) = oneshot::channel();
        t.files.insert(id, tx);
        Ok(rx)
    }

    pub fn unregister_file(&self, id: u64) {
        self.table().files.remove(&id);
    }

    pub fn unregister(&self, id: u64) {
        self.table().slots.remove(&id);
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.table().slots.contains_key(&id)
    }

    pub async fn send(&self, req: &Request) -> RuntimeResult<()> {
        let frame = protocol::encode(req).map_err(|e| RuntimeError::Invalid {
            what: "exec",
            why: format!("request too large for the sandbox init (stdin is limited to under 1 MiB): {e}"),
        })?;
        let mut w = self.writer.lock().await;
        let w =
            w.as_mut().ok_or_else(|| RuntimeError::io("the sandbox is stopping", io::ErrorKind::BrokenPipe.into()))?;
        self.write_raw_locked(w, &frame).await
    }

    /// Writes bytes that are not a frame (a resync request).
    pub async fn send_raw(&self, bytes: &[u8]) -> RuntimeResult<()> {
        let mut w = self.writer.lock().await;
        let w =
            w.as_mut().ok_or_else(|| RuntimeError::io("the sandbox is stopping", io::ErrorKind::BrokenPipe.into()))?;
        self.write_raw_locked(w, bytes).await
    }

    async fn write_raw_locked(&self, w: &mut Writer, bytes: &[u8]) -> RuntimeResult<()> {
        let written = async {
            w.write_all(bytes).await?;
            w.flush().await
        };
        written.await.map_err(|e| RuntimeError::io("writing to the sandbox init", e))
    }

    /// Closes the control pipe; the init answers by killing every sandbox process and exiting.
    pub async fn close_writer(&self) {
        self.writer.lock().await.take();
    }

    /// [`Self::close_writer`] without waiting (when a writer holds the lock, nothing happens).
    pub fn try_close_writer(&self) {
        if let Ok(mut w) = self.writer.try_lock() {
            w.take();
        }
    }

    /// The reader task: dispatches events until the init's stdout closes, then ends every pending
    /// exec with [`SANDBOX_GONE`].
    pub async fn read_loop(&self, mut reader: impl AsyncRead + Unpin) -> io::Result<()> {
        let result = loop {
            match read_event(&mut reader).await {
                Ok(Some(event)) => self.dispatch(event).await,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let slots: Vec<Slot> = {
            let mut t = self.table();
            t.closed = true;
            t.files.clear();
            t.slots.drain().map(|(_, s)| s).collect()
        };
        for mut slot in slots {
            match slot.started.take() {
                Some(tx) => {
                    drop(tx.send(Err(RuntimeError::io("sandbox init exited", io::ErrorKind::BrokenPipe.into()))))
                }
                None => drop(slot.events.send(ExecEvent::Exit(SANDBOX_GONE)).await),
            }
        }
        result
    }

    /// Ends every pending exec without waiting for consumers (used when destroying the sandbox).
    pub fn close(&self) {
        let mut t = self.table();
        t.closed = true;
        t.files.clear();
        for (_, mut slot) in t.slots.drain() {
            if let Some(tx) = slot.started.take() {
                let _ = tx.send(Err(RuntimeError::io("sandbox destroyed", io::ErrorKind::BrokenPipe.into())));
            }
            let _ = slot.events.try_send(ExecEvent::Exit(SANDBOX_GONE));
        }
    }

    async fn dispatch(&self, event: Event) {
        let (id, ev) = match event {
            Event::Ready => return,
            Event::Started { id, .. } => {
                let tx = self.table().slots.get_mut(&id).and_then(|s| s.started.take());
                return drop(tx.map(|tx| tx.send(Ok(()))));
            }
            Event::SpawnFailed { id, kind, error } => return self.spawn_failed(id, kind, error),
            Event::Stdout { id, data } => (id, ExecEvent::Stdout(data)),
            Event::Stderr { id, data } => (id, ExecEvent::Stderr(data)),
            Event::Side { id, data } => (id, ExecEvent::Side(data)),
            Event::Exited(x) => {
                let slot = self.table().slots.remove(&x.id);
                if let Some(slot) = slot {
                    // The counter rises when the kernel kills for the limit, before the process
                    // is reaped, so it is current by the time the init reports the exit.
                    let oom = slot.oom_before.zip(self.oom_kills()).is_some_and(|(before, after)| after > before);
                    let _ = slot.events.send(ExecEvent::Exit(exit_status(&x, oom))).await;
                }
                return;
            }
            Event::File { id, result } => {
                let tx = self.table().files.remove(&id);
                return drop(tx.map(|tx| tx.send(result)));
            }
        };
        let tx = self.table().slots.get(&id).map(|s| s.events.clone());
        if let Some(tx) = tx {
            // A dropped receiver only means nobody listens; the process keeps running.
            let _ = tx.send(ev).await;
        }
    }

    /// A missing or unrunnable program is a result (exit code 127 or 126 with a message on stderr,
    /// as a shell reports it); a bad request, working directory or exhausted pids are errors.
    fn spawn_failed(&self, id: u64, kind: SpawnErrorKind, error: String) {
        let Some(mut slot) = self.table().slots.remove(&id) else { return };
        let Some(started) = slot.started.take() else { return };
        let exit_code = match kind {
            SpawnErrorKind::NotFound => 127,
            SpawnErrorKind::NotExecutable => 126,
            SpawnErrorKind::BadCwd => {
                return drop(started.send(Err(RuntimeError::Invalid { what: "cwd", why: error })));
            }
            SpawnErrorKind::BadRequest => {
                return drop(started.send(Err(RuntimeError::Invalid { what: "command", why: error })));
            }
            SpawnErrorKind::Resources => {
                return drop(started.send(Err(RuntimeError::ResourceExhausted(format!("cannot start: {error}")))));
            }
        };
        let status =
            ExitStatus { exit_code, signal: 0, timed_out: false, truncated: false, duration_ms: 0, oom_killed: false };
        let _ = slot.events.try_send(ExecEvent::Stderr(format!("corral: {error}\n").into_bytes()));
        let _ = slot.events.try_send(ExecEvent::Exit(status));
        let _ = started.send(Ok(()));
    }
}
