//! Starting a sandbox's container attached to its init, and re-attaching after an agent restart.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder};
use corral_core::model::SandboxSpec;
use corral_core::task::OwnedTask;
use corral_init::protocol::{Event, RESYNC_MAGIC, resync_marker};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::StreamReader;

use super::{DockerConfig, DockerRuntime, engine_error, is_not_found, spec};
use crate::runtime::client::{InitClient, REPLY_TIMEOUT};
use crate::runtime::conn::{self, Conn, OomCounter, Writer};
use crate::runtime::{RuntimeError, RuntimeResult, cgroup};

/// The init's stdout, as bytes.
type Reader = BufReader<StreamReader<Pin<Box<dyn Stream<Item = io::Result<bytes::Bytes>> + Send>>, bytes::Bytes>>;

/// A running sandbox container and the agent's connection to its init.
pub struct Container {
    pub client: InitClient,
    _reader: OwnedTask,
}

/// Creates, attaches and starts the container (on the prepared `storage`, with disk quotas), and
/// waits for the init's ready frame. On failure the container is removed again.
pub async fn create(
    docker: &Docker,
    config: &DockerConfig,
    s: &SandboxSpec,
    storage: Option<&std::path::Path>,
    binds: &[(std::path::PathBuf, String)],
) -> RuntimeResult<Container> {
    let failed = |why: String| RuntimeError::StartFailed { sandbox: s.id.clone(), why };
    let image = spec::image(config, s);
    match docker.inspect_image(&image).await {
        Err(e) if is_not_found(&e) => {
            return Err(failed(format!("image {image:?} is not on this node (images are never pulled)")));
        }
        Err(e) => return Err(engine_error(format!("inspecting image {image}"), e)),
        Ok(_) => {}
    }
    let name = DockerRuntime::container_name(&s.id);
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    docker
        .create_container(Some(opts), spec::container(config, s, storage, binds))
        .await
        .map_err(|e| failed(e.to_string()))?;
    match start(docker, &name, s).await {
        Ok(c) => Ok(c),
        Err(e) => {
            let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            if let Err(rm_err) = docker.remove_container(&name, Some(rm)).await {
                tracing::warn!(sandbox_id = %s.id, error = %rm_err, "container of a failed start not removed");
            }
            Err(failed(e.to_string()))
        }
    }
}

async fn start(docker: &Docker, name: &str, s: &SandboxSpec) -> RuntimeResult<Container> {
    let (writer, mut reader) = attach(docker, name).await?;
    docker.start_container(name, None).await.map_err(|e| engine_error("starting the container", e))?;
    let ready = match tokio::time::timeout(REPLY_TIMEOUT, conn::read_event(&mut reader)).await {
        Ok(Ok(Some(Event::Ready))) => Ok(()),
        Ok(Ok(Some(other))) => Err(format!("unexpected first event {other:?}")),
        Ok(Ok(None)) => Err(format!("the container exited before it was ready: {}", exit_reason(docker, name).await)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the container was not ready within 10 s".to_owned()),
    };
    ready.map_err(|why| RuntimeError::StartFailed { sandbox: s.id.clone(), why })?;
    Ok(connect(s, writer, reader, oom_counter(docker, name).await))
}

/// Re-attaches to a running container of this node and resynchronises the stream.
pub async fn adopt(docker: &Docker, config: &DockerConfig, s: &SandboxSpec) -> RuntimeResult<Container> {
    let name = DockerRuntime::container_name(&s.id);
    let info = docker.inspect_container(&name, None).await.map_err(|e| match is_not_found(&e) {
        true => RuntimeError::SandboxNotFound(s.id.clone()),
        false => engine_error("inspecting the container", e),
    })?;
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    let state = info.state.unwrap_or_default();
    let ours = labels.get(spec::LABEL_NODE).is_some_and(|n| *n == config.node_id.to_string());
    if !ours || !state.running.unwrap_or(false) {
        return Err(RuntimeError::SandboxNotFound(s.id.clone()));
    }
    let paused = state.paused.unwrap_or(false);
    if paused {
        docker.unpause_container(&name).await.map_err(|e| engine_error("resuming to re-attach", e))?;
    }
    let (mut writer, mut reader) = attach(docker, &name).await?;
    let synced = resync(&mut writer, &mut reader).await;
    if paused {
        docker.pause_container(&name).await.map_err(|e| engine_error("pausing again after re-attaching", e))?;
    }
    synced.map_err(|e| RuntimeError::io("resynchronising with the sandbox init", e))?;
    let container = connect(s, writer, reader, oom_counter(docker, &name).await);
    container.client.set_paused(paused);
    Ok(container)
}

/// Sends a resync request and skips the stream up to the init's marker (see the protocol docs).
async fn resync(writer: &mut Writer, reader: &mut Reader) -> io::Result<()> {
    let nonce = rand::random::<u64>();
    let mut request = RESYNC_MAGIC.to_vec();
    request.extend(nonce.to_le_bytes());
    writer.write_all(&request).await?;
    writer.flush().await?;
    let marker = resync_marker(nonce);
    let scan = async {
        let mut window = Vec::with_capacity(marker.len());
        loop {
            if window.len() == marker.len() {
                window.remove(0);
            }
            window.push(reader.read_u8().await?);
            if window == marker {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, scan).await.map_err(|_| io::Error::other("no resync marker within 10 s"))?
}

fn connect(s: &SandboxSpec, writer: Writer, reader: Reader, oom: Option<OomCounter>) -> Container {
    let conn = Arc::new(Conn::new(writer, oom));
    let task_conn = conn.clone();
    let reader = OwnedTask::spawn("docker.init_reader", async move { task_conn.read_loop(reader).await });
    Container { client: InitClient::new(s, conn), _reader: reader }
}

/// Attaches to the container's stdin and stdout (stderr is not captured).
async fn attach(docker: &Docker, name: &str) -> RuntimeResult<(Writer, Reader)> {
    let opts =
        AttachContainerOptionsBuilder::new().stdin(true).stdout(true).stderr(false).stream(true).logs(false).build();
    let attached = docker.attach_container(name, Some(opts)).await.map_err(|e| engine_error("attaching", e))?;
    let bytes = attached.output.filter_map(|item| async move {
        match item {
            Ok(LogOutput::StdOut { message }) => Some(Ok(message)),
            Ok(_) => None,
            Err(e) => Some(Err(io::Error::other(e))),
        }
    });
    let bytes: Pin<Box<dyn Stream<Item = io::Result<bytes::Bytes>> + Send>> = Box::pin(bytes);
    let reader = BufReader::with_capacity(64 * 1024, StreamReader::new(bytes));
    Ok((Box::new(attached.input), reader))
}

/// Reads the container's OOM-kill counter from its memory cgroup on the host.
async fn oom_counter(docker: &Docker, name: &str) -> Option<OomCounter> {
    let pid = docker.inspect_container(name, None).await.ok()?.state?.pid?;
    let Some((dir, v2)) = cgroup::memory_dir_of_pid(u32::try_from(pid).ok()?) else {
        tracing::warn!(container = name, "memory cgroup of the container not found; OOM kills are not reported");
        return None;
    };
    Some(Box::new(move || cgroup::read_oom_kills(&dir, v2)))
}

/// Why a container stopped, for error messages.
async fn exit_reason(docker: &Docker, name: &str) -> String {
    tokio::time::sleep(Duration::from_millis(50)).await;
    match docker.inspect_container(name, None).await.ok().and_then(|i| i.state) {
        Some(st) => format!("exit code {:?}, error {:?}", st.exit_code, st.error.unwrap_or_default()),
        None => "state unknown".to_owned(),
    }
}
