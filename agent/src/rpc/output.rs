//! Publishing output frames: an exec's (or session command's) events, and a followed background
//! process's buffered and live output, each on its own `corral.out.{sandbox}.{exec}` subject
//! with consecutive sequence numbers.

use std::sync::Arc;
use std::time::Duration;

use corral_core::bus::Bus;
use corral_core::ids::{ExecId, SandboxId};
use corral_core::protocol::{self, AgentError, AgentErrorKind, CHUNK_BYTES, OutputFrame};
use corral_core::subjects::OutputSubject;
use tokio::sync::mpsc;

use crate::runtime::ExecEvent;
use crate::supervisor::{Follow, ProcOutput};

/// How long a followed process may be quiet before an `Alive` frame tells the reader that the
/// agent is still there.
pub const ALIVE_EVERY: Duration = Duration::from_secs(10);

/// Publishes one stream's frames with consecutive sequence numbers.
pub struct OutputPump {
    bus: Arc<dyn Bus>,
    subject: String,
    seq: u64,
}

impl OutputPump {
    pub fn new(bus: Arc<dyn Bus>, sandbox: &SandboxId, exec: ExecId) -> Self {
        Self { bus, subject: OutputSubject { sandbox, exec }.to_string(), seq: 0 }
    }

    pub async fn send(&mut self, frame: impl FnOnce(u64) -> OutputFrame) {
        let frame = frame(self.seq);
        self.seq += 1;
        if let Err(e) = self.bus.publish(&self.subject, protocol::encode(&frame)).await {
            tracing::warn!(error = %e, "could not publish exec output");
        }
    }

    async fn stdout(&mut self, data: &[u8]) {
        for c in data.chunks(CHUNK_BYTES) {
            self.send(|seq| OutputFrame::Stdout { seq, data: c.to_vec() }).await;
        }
    }

    async fn stderr(&mut self, data: &[u8]) {
        for c in data.chunks(CHUNK_BYTES) {
            self.send(|seq| OutputFrame::Stderr { seq, data: c.to_vec() }).await;
        }
    }
}

/// Publishes an exec's events until its exit, in a task of its own.
pub fn stream_exec(bus: Arc<dyn Bus>, sandbox: &SandboxId, exec: ExecId, mut events: mpsc::Receiver<ExecEvent>) {
    let mut pump = OutputPump::new(bus, sandbox, exec);
    corral_core::task::spawn_detached("agent.exec_output", async move {
        while let Some(event) = events.recv().await {
            match event {
                ExecEvent::Stdout(d) => pump.stdout(&d).await,
                ExecEvent::Stderr(d) => pump.stderr(&d).await,
                ExecEvent::Side(_) => {}
                ExecEvent::Exit(status) => {
                    pump.send(|seq| OutputFrame::Exit { seq, status }).await;
                    return;
                }
            }
        }
        let error = AgentError::new(AgentErrorKind::Internal, "the sandbox ended before the command exited");
        pump.send(|seq| OutputFrame::Failed { seq, error }).await;
    });
}

/// Publishes a follower's stream until the process exits or the follower is dropped, with an
/// `Alive` frame whenever the process is quiet for [`ALIVE_EVERY`].
pub fn stream_follow(bus: Arc<dyn Bus>, sandbox: &SandboxId, follow_id: ExecId, mut follow: Follow) {
    let mut pump = OutputPump::new(bus, sandbox, follow_id);
    corral_core::task::spawn_detached("agent.process_follow", async move {
        loop {
            let next = match tokio::time::timeout(ALIVE_EVERY, follow.next()).await {
                Ok(next) => next,
                Err(_) => {
                    pump.send(|seq| OutputFrame::Alive { seq }).await;
                    continue;
                }
            };
            match next {
                Some(ProcOutput::Stdout(d)) => pump.stdout(&d).await,
                Some(ProcOutput::Stderr(d)) => pump.stderr(&d).await,
                Some(ProcOutput::Dropped(bytes)) => pump.send(|seq| OutputFrame::Dropped { seq, bytes }).await,
                Some(ProcOutput::Exit(status)) => return pump.send(|seq| OutputFrame::Exit { seq, status }).await,
                None => {
                    let error = AgentError::new(AgentErrorKind::Internal, "the process is no longer followed");
                    return pump.send(|seq| OutputFrame::Failed { seq, error }).await;
                }
            }
        }
    });
}
