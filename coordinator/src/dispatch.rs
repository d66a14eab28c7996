//! Talking to agents over the bus: lifecycle work with replies, interactive requests, and exec
//! output streams with sequence checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use corral_core::bus::Bus;
use corral_core::ids::{ExecId, NodeId, SandboxId};
use corral_core::model::{ExecSpec, ExitStatus};
use corral_core::protocol::{self, OutputFrame, RpcReply, RpcRequest, Work, WorkReply};
use corral_core::subjects::{OutputSubject, ReplySubject, RpcSubject};
use corral_core::task::OwnedTask;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, ApiResult};

/// How long an interactive request may wait for the agent's answer.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

type Waiters = Arc<Mutex<HashMap<SandboxId, oneshot::Sender<WorkReply>>>>;

/// Sends work to agents and routes their replies back to whoever waits for them; replies nobody
/// waits for (e.g. for work re-published by the reconciler) go to the `unclaimed` channel.
pub struct Dispatcher {
    bus: Arc<dyn Bus>,
    reply_subject: String,
    waiters: Waiters,
    _inbox: OwnedTask,
}

impl Dispatcher {
    pub async fn start(bus: Arc<dyn Bus>) -> ApiResult<(Self, mpsc::UnboundedReceiver<WorkReply>)> {
        let token = format!("{:016x}", rand::random::<u64>());
        let reply_subject = ReplySubject(&token).to_string();
        let mut replies = bus.subscribe(&reply_subject).await?;
        let waiters: Waiters = Arc::default();
        let (unclaimed_tx, unclaimed_rx) = mpsc::unbounded_channel();
        let routes = waiters.clone();
        let inbox = OwnedTask::spawn("coordinator.reply_inbox", async move {
            while let Some(msg) = replies.next().await {
                let reply: WorkReply = match protocol::decode(&msg) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping malformed work reply");
                        continue;
                    }
                };
                let id = match &reply {
                    WorkReply::Created { sandbox, .. }
                    | WorkReply::CreateFailed { sandbox, .. }
                    | WorkReply::Destroyed { sandbox, .. } => sandbox.clone(),
                };
                let waiter = routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                let unclaimed = match waiter {
                    Some(tx) => tx.send(reply).err(),
                    None => Some(reply),
                };
                if let Some(reply) = unclaimed {
                    let _ = unclaimed_tx.send(reply);
                }
            }
            Err::<(), _>("reply subscription ended")
        });
        Ok((Self { bus, reply_subject, waiters, _inbox: inbox }, unclaimed_rx))
    }

    /// Durably queues `work` for `node` without waiting for the agent's reply.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    pub async fn send_work(&self, node: &NodeId, make: impl FnOnce(String) -> Work, msg_id: &str) -> ApiResult<()> {
        let work = make(self.reply_subject.clone());
        self.bus.enqueue(node, msg_id, protocol::encode(&work)).await?;
        Ok(())
    }

    /// Queues `work` for `node` in the background, for callers that must not wait for the queue's
    /// acknowledgement (a destroy whose ended record is already durable: if the item is lost, the
    /// agent's garbage collection reaps the sandbox within one period). Failures are logged.
    pub fn send_work_detached(&self, node: &NodeId, make: impl FnOnce(String) -> Work, msg_id: &str) {
        let (bus, node, msg_id) = (self.bus.clone(), node.clone(), msg_id.to_owned());
        let payload = protocol::encode(&make(self.reply_subject.clone()));
        // Bounded: `enqueue` gives up after a few retries.
        corral_core::task::spawn_detached("coordinator.enqueue", async move {
            if let Err(e) = bus.enqueue(&node, &msg_id, payload).await {
                tracing::warn!(node = %node, msg_id, error = %e, "could not queue work; the agent's GC will reap what it leaves");
            }
        });
    }

    /// Durably queues `work` for `node` and returns a receiver for the agent's reply about `sandbox`.
    pub async fn send_work_and_wait(
        &self,
        node: &NodeId,
        sandbox: &SandboxId,
        make: impl FnOnce(String) -> Work,
        msg_id: &str,
    ) -> ApiResult<oneshot::Receiver<WorkReply>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(sandbox.clone(), tx);
        if let Err(e) = self.send_work(node, make, msg_id).await {
            self.cancel_wait(sandbox);
            return Err(e);
        }
        Ok(rx)
    }

    /// Forgets a waiter that gave up.
    pub fn cancel_wait(&self, sandbox: &SandboxId) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(sandbox);
    }

    /// One interactive request to a node's agent.
    pub async fn rpc(&self, node: &NodeId, req: &RpcRequest) -> ApiResult<RpcReply> {
        let subject = RpcSubject(node).to_string();
        let raw = self.bus.request(&subject, protocol::encode(req), RPC_TIMEOUT).await?;
        match protocol::decode::<RpcReply>(&raw)? {
            RpcReply::Error(e) => Err(ApiError::Agent(e)),
            ok => Ok(ok),
        }
    }

    /// Starts a command and returns its output stream; the agent must finish it within its
    /// timeout plus `grace`.
    pub async fn exec(
        &self,
        node: &NodeId,
        sandbox: &SandboxId,
        spec: ExecSpec,
        grace: Duration,
    ) -> ApiResult<ExecStream> {
        let patience = Patience::Total(Duration::from_millis(spec.timeout_ms) + grace);
        let sb = sandbox.clone();
        self.open_stream(node, sandbox, move |exec| RpcRequest::Exec { sandbox: sb, exec, spec }, patience).await
    }

    /// Sends the request `make(exec)` that starts an output stream on `corral.out.{sandbox}.{exec}`.
    /// Subscribes (without a round trip) before asking the agent, so no frame can be missed.
    pub async fn open_stream(
        &self,
        node: &NodeId,
        sandbox: &SandboxId,
        make: impl FnOnce(ExecId) -> RpcRequest,
        patience: Patience,
    ) -> ApiResult<ExecStream> {
        let exec = ExecId::random();
        let frames = self.bus.subscribe_before_request(&OutputSubject { sandbox, exec }.to_string()).await?;
        match self.rpc(node, &make(exec)).await? {
            RpcReply::ExecStarted => {}
            other => return Err(ApiError::Internal(format!("unexpected agent reply to a stream request: {other:?}"))),
        }
        let (deadline, idle) = match patience {
            Patience::Total(d) => (tokio::time::Instant::now() + d, None),
            Patience::Idle(d) => (tokio::time::Instant::now() + d, Some(d)),
        };
        Ok(ExecStream { exec, frames, next_seq: 0, done: false, deadline, idle })
    }
}

/// How long an output stream waits for the agent.
#[derive(Debug, Clone, Copy)]
pub enum Patience {
    /// The whole stream must end within this (a command with a timeout).
    Total(Duration),
    /// Each frame must come within this of the previous one (a followed process, whose agent
    /// sends `Alive` frames while it is quiet).
    Idle(Duration),
}

/// One piece of an exec's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Followed processes only: this many bytes of output were dropped here.
    Dropped(u64),
    Exit(ExitStatus),
}

/// The ordered output of one exec; ends after the exit.
pub struct ExecStream {
    pub exec: ExecId,
    frames: BoxStream<'static, Bytes>,
    next_seq: u64,
    done: bool,
    deadline: tokio::time::Instant,
    idle: Option<Duration>,
}

impl ExecStream {
    /// The next output, `None` after the exit. A gap in sequence numbers or a silent agent is an
    /// error, never a silently shortened output.
    pub async fn next(&mut self) -> Option<ApiResult<ExecOutput>> {
        loop {
            if self.done {
                return None;
            }
            let raw = match tokio::time::timeout_at(self.deadline, self.frames.next()).await {
                Ok(Some(raw)) => raw,
                Ok(None) => return self.fail(ApiError::Internal("output stream closed before the exit".into())),
                Err(_) => {
                    return self.fail(ApiError::Timeout("the agent stopped sending output for this command".into()));
                }
            };
            let frame: OutputFrame = match protocol::decode(&raw) {
                Ok(f) => f,
                Err(e) => return self.fail(e.into()),
            };
            if frame.seq() != self.next_seq {
                let msg = format!("output frames lost: expected #{}, got #{}", self.next_seq, frame.seq());
                return self.fail(ApiError::Internal(msg));
            }
            self.next_seq += 1;
            if let Some(idle) = self.idle {
                self.deadline = tokio::time::Instant::now() + idle;
            }
            return Some(Ok(match frame {
                OutputFrame::Stdout { data, .. } => ExecOutput::Stdout(data),
                OutputFrame::Stderr { data, .. } => ExecOutput::Stderr(data),
                OutputFrame::Dropped { bytes, .. } => ExecOutput::Dropped(bytes),
                OutputFrame::Alive { .. } => continue,
                OutputFrame::Exit { status, .. } => {
                    self.done = true;
                    ExecOutput::Exit(status)
                }
                OutputFrame::Failed { error, .. } => return self.fail(ApiError::Agent(error)),
            }));
        }
    }

    /// True once the exit (or an error) was returned.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn fail(&mut self, e: ApiError) -> Option<ApiResult<ExecOutput>> {
        self.done = true;
        Some(Err(e))
    }
}
