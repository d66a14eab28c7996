//! Interactive requests from the coordinator (`corral.rpc.{node}`): exec with output streamed to
//! `corral.out.{sandbox}.{exec}`, and file operations (uploads staged in memory, applied
//! atomically on the last chunk).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::bus::{Bus, Request};
use corral_core::ids::{ExecId, NodeId, SandboxId};
use corral_core::model::ExecSpec;
use corral_core::protocol::{self, AgentError, AgentErrorKind, CHUNK_BYTES, OutputFrame, RpcReply, RpcRequest};
use corral_core::subjects::{OutputSubject, RpcSubject};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::time::Instant;

use crate::Agent;
use crate::runtime::ExecEvent;

/// Largest file accepted through chunked uploads, and most bytes staged at once.
pub const MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;
pub const MAX_STAGED_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// An upload with no chunk for this long is dropped.
const UPLOAD_IDLE: Duration = Duration::from_secs(300);

pub fn subject(node: &NodeId) -> String {
    RpcSubject(node).to_string()
}

struct Upload {
    path: String,
    data: Vec<u8>,
    touched: Instant,
}

#[derive(Default)]
struct Uploads(Mutex<HashMap<(SandboxId, u64), Upload>>);

pub async fn serve(agent: Arc<Agent>, mut requests: BoxStream<'static, Request>) -> Result<(), String> {
    let uploads = Arc::new(Uploads::default());
    let mut running = tokio::task::JoinSet::new();
    while let Some(req) = requests.next().await {
        while running.try_join_next().is_some() {}
        let (agent, uploads) = (agent.clone(), uploads.clone());
        running.spawn(tracing::Instrument::instrument(
            async move {
                let reply = match protocol::decode::<RpcRequest>(&req.payload) {
                    Ok(r) => handle(&agent, &uploads, r).await,
                    Err(e) => RpcReply::Error(AgentError::new(AgentErrorKind::InvalidArgument, e.to_string())),
                };
                if let Err(e) = req.reply(protocol::encode(&reply)).await {
                    tracing::warn!(error = %e, "could not send a reply");
                }
            },
            tracing::info_span!("agent.rpc"),
        ));
    }
    Err("rpc subscription ended".into())
}

async fn handle(agent: &Arc<Agent>, uploads: &Uploads, req: RpcRequest) -> RpcReply {
    let result: Result<RpcReply, AgentError> = async {
        Ok(match req {
            RpcRequest::Exec { sandbox, exec, spec } => start_exec(agent, sandbox, exec, spec).await?,
            RpcRequest::KillExec { sandbox, exec } => {
                agent.runtime_of(&sandbox)?.kill_exec(&sandbox, exec).await?;
                RpcReply::Ok
            }
            RpcRequest::ReadFile { sandbox, path, offset, len } => {
                let len = len.min(CHUNK_BYTES as u32);
                let c = agent.runtime_of(&sandbox)?.read_file(&sandbox, &path, offset, len).await?;
                RpcReply::FileChunk { data: c.data, size: c.size, mode: c.mode }
            }
            RpcRequest::WriteFile { sandbox, path, upload, offset, data, mode, last } => {
                match uploads.add(&sandbox, upload, &path, offset, data, last)? {
                    None => RpcReply::Ok,
                    Some(bytes) => {
                        let size = agent.runtime_of(&sandbox)?.write_file(&sandbox, &path, &bytes, mode).await?;
                        RpcReply::Written { size }
                    }
                }
            }
            RpcRequest::ListFiles { sandbox, path } => {
                RpcReply::Entries(agent.runtime_of(&sandbox)?.list_files(&sandbox, &path).await?)
            }
            RpcRequest::RemoveFile { sandbox, path, recursive } => {
                agent.runtime_of(&sandbox)?.remove_file(&sandbox, &path, recursive).await?;
                RpcReply::Ok
            }
            RpcRequest::Pause { sandbox } => {
                agent.runtime_of(&sandbox)?.pause(&sandbox).await?;
                RpcReply::Ok
            }
            RpcRequest::Resume { sandbox } => {
                agent.runtime_of(&sandbox)?.resume(&sandbox).await?;
                RpcReply::Ok
            }
            RpcRequest::Ping => RpcReply::Pong { node: agent.node.clone() },
        })
    }
    .await;
    result.unwrap_or_else(RpcReply::Error)
}

async fn start_exec(
    agent: &Arc<Agent>,
    sandbox: SandboxId,
    exec: ExecId,
    mut spec: ExecSpec,
) -> Result<RpcReply, AgentError> {
    if spec.cwd.is_empty() {
        spec.cwd = agent.spec(&sandbox).map(|s| s.workdir).unwrap_or_else(|| "/workspace".to_owned());
    }
    let mut handle = agent.runtime_of(&sandbox)?.exec(&sandbox, exec, spec).await?;
    let mut pump =
        OutputPump { bus: agent.bus.clone(), subject: OutputSubject { sandbox: &sandbox, exec }.to_string(), seq: 0 };
    corral_core::task::spawn_detached("agent.exec_output", async move {
        while let Some(event) = handle.events.recv().await {
            match event {
                ExecEvent::Stdout(d) => {
                    for c in d.chunks(CHUNK_BYTES) {
                        pump.send(|seq| OutputFrame::Stdout { seq, data: c.to_vec() }).await;
                    }
                }
                ExecEvent::Stderr(d) => {
                    for c in d.chunks(CHUNK_BYTES) {
                        pump.send(|seq| OutputFrame::Stderr { seq, data: c.to_vec() }).await;
                    }
                }
                ExecEvent::Exit(status) => {
                    pump.send(|seq| OutputFrame::Exit { seq, status }).await;
                    return;
                }
            }
        }
        let error = AgentError::new(AgentErrorKind::Internal, "the sandbox ended before the command exited");
        pump.send(|seq| OutputFrame::Failed { seq, error }).await;
    });
    Ok(RpcReply::ExecStarted)
}

impl Uploads {
    /// Adds a chunk; returns the whole file when `last`.
    fn add(
        &self,
        sandbox: &SandboxId,
        upload: u64,
        path: &str,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    ) -> Result<Option<Vec<u8>>, AgentError> {
        let invalid = |why: String| AgentError::new(AgentErrorKind::InvalidArgument, why);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, u| u.touched.elapsed() < UPLOAD_IDLE);
        let key = (sandbox.clone(), upload);
        if offset == 0 && !map.contains_key(&key) {
            if last {
                return Ok(Some(data));
            }
            let staged: u64 = map.values().map(|u| u.data.len() as u64).sum();
            if staged + data.len() as u64 > MAX_STAGED_BYTES {
                return Err(AgentError::new(
                    AgentErrorKind::ResourceExhausted,
                    "too many uploads in progress on this node",
                ));
            }
            map.insert(key.clone(), Upload { path: path.to_owned(), data: Vec::new(), touched: Instant::now() });
        }
        let Some(u) = map.get_mut(&key) else {
            return Err(invalid(format!("upload {upload:x} to {path:?} is unknown or expired")));
        };
        if u.path != path || u.data.len() as u64 != offset {
            map.remove(&key);
            return Err(invalid(format!("upload {upload:x}: chunk at offset {offset} out of order; start again")));
        }
        if offset + data.len() as u64 > MAX_UPLOAD_BYTES {
            map.remove(&key);
            return Err(invalid(format!("upload to {path:?} exceeds {MAX_UPLOAD_BYTES} bytes")));
        }
        u.data.extend_from_slice(&data);
        u.touched = Instant::now();
        if last {
            return Ok(map.remove(&key).map(|u| u.data));
        }
        Ok(None)
    }
}

/// Publishes one exec's frames with consecutive sequence numbers.
struct OutputPump {
    bus: Arc<dyn Bus>,
    subject: String,
    seq: u64,
}

impl OutputPump {
    async fn send(&mut self, frame: impl FnOnce(u64) -> OutputFrame) {
        let frame = frame(self.seq);
        self.seq += 1;
        if let Err(e) = self.bus.publish(&self.subject, protocol::encode(&frame)).await {
            tracing::warn!(error = %e, "could not publish exec output");
        }
    }
}
