//! The Corral coordinator: serves the `corral.v1` gRPC API, keeps all state in a `StateStore`
//! and sends work to agents over a `Bus`.
//!
//! - [`api`]: the tonic services (validation and wire conversion at the edge);
//! - [`sandboxes`]: the sandbox component (every sandbox operation in domain terms);
//!   [`records`]: CAS reads/writes of sandbox records;
//! - [`cluster`]: the in-memory cluster view; [`scheduler`]: pure placement; [`capacity`]: the
//!   one node capacity model both placements reserve from;
//! - [`deadlines`]: sandbox timeouts and batch deadlines on etcd lease timers (skew-proof);
//! - [`dispatch`]: work, requests and output streams over the bus;
//! - [`confirm`]: the books of RUNNING writes made off the create path, which readers wait for;
//! - [`leader`]: leader election (the leader runs the reconciler's sweeps);
//! - [`jobs`]: jobs and fan-out batches (index, placement, fenced claims, result commits);
//! - [`reconciler`]: LOST / EXPIRED / stuck-start loops; [`config`], [`error`].
//!
//! Layering, bottom up: `error`, `config`, `records`, `capacity`, `scheduler`, `cluster`,
//! `dispatch`, `leader`, `deadlines`, `confirm`; then `sandboxes` and `jobs`; then `reconciler`
//! and `api`. No module uses one above it: the cluster view feeds the jobs table through its
//! `Follower` trait, not by name.

pub mod api;
pub mod capacity;
pub mod cluster;
pub mod codebases;
pub mod config;
pub mod confirm;
pub mod deadlines;
pub mod dispatch;
pub mod error;
pub mod jobs;
pub mod leader;
pub mod reconciler;
pub mod records;
pub mod sandboxes;
pub mod scheduler;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use corral_core::bus::Bus;
use corral_core::store::StateStore;
use corral_core::task::{self, OwnedTask};
use corral_proto::v1::batches_server::BatchesServer;
use corral_proto::v1::codebase_service_server::CodebaseServiceServer;
use corral_proto::v1::exec_server::ExecServer;
use corral_proto::v1::files_server::FilesServer;
use corral_proto::v1::jobs_server::JobsServer;
use corral_proto::v1::languages_server::LanguagesServer;
use corral_proto::v1::sandboxes_server::SandboxesServer;
use corral_proto::v1::sessions_server::SessionsServer;
use tokio::net::TcpListener;

pub use config::CoordinatorConfig;

use crate::cluster::ClusterView;
use crate::dispatch::Dispatcher;
use crate::leader::{LeaderRecord, Leadership};
use crate::sandboxes::Sandboxes;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not start: {0}")]
    Start(#[from] error::ApiError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("coordinator task {0} ended and cannot be restarted")]
    TaskEnded(&'static str),
}

/// Serves the API on `listener` until `shutdown` completes. Codebase contents and file lists
/// go to `blobs`.
pub async fn run(
    config: CoordinatorConfig,
    store: Arc<dyn StateStore>,
    bus: Arc<dyn Bus>,
    blobs: Arc<dyn corral_blob::BlobStore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordinatorError> {
    config.validate().map_err(CoordinatorError::Config)?;
    // Room for a Write of up to twice the file limit, so oversize files get a clear INVALID_ARGUMENT;
    // likewise jobs and batches up to twice max_request_bytes get RESOURCE_EXHAUSTED naming it.
    let max_message = 2 * config.max_file_bytes as usize + 1024 * 1024;
    let max_request = 2 * config.max_request_bytes;
    let table = jobs::JobTable::default();
    let view = ClusterView::new(Arc::new(table.clone()));
    // Supervised: a watch broken by an etcd restart would otherwise leave a frozen view; each
    // restart reloads the view from the store before watching again.
    let _view_task = {
        let (view, store) = (view.clone(), store.clone());
        task::supervise("coordinator.cluster_view", move || view.clone().follow(store.clone()))
    };
    let (dispatch, unclaimed) = Dispatcher::start(bus).await?;
    let dispatch = Arc::new(dispatch);
    let leadership = Leadership::new(config.leader_lease());
    let me = LeaderRecord {
        coordinator: format!("{:016x}", rand::random::<u64>()),
        endpoint: listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        since_ms: 0,
    };
    // Every long-lived task is supervised: restarted with backoff when it fails or ends, or — the
    // reconciler, which owns the reply inbox and cannot be rebuilt — fatal: the coordinator turns
    // its health NOT_SERVING and exits, so its process supervisor starts a fresh one.
    let election = {
        let (leadership, store) = (leadership.clone(), store.clone());
        task::supervise("coordinator.election", move || leadership.clone().campaign(store.clone(), me.clone()))
    };
    let deadlines = Arc::new(deadlines::DeadlineLeases::new(store.clone()));
    let limits = Arc::new(config.clone());
    let sandboxes = Arc::new(Sandboxes::new(
        store.clone(),
        view.clone(),
        dispatch.clone(),
        deadlines.clone(),
        config.create_timeout(),
    ));
    let codebases = Arc::new(codebases::Codebases::new(
        store.clone(),
        corral_blob::Chunks::new(blobs, "content"),
        view.clone(),
        config.codebase_limits(),
    ));
    let calls = api::calls::SandboxCalls {
        sandboxes: sandboxes.clone(),
        dispatch: dispatch.clone(),
        view: view.clone(),
        config: limits.clone(),
    };
    let jobs = Arc::new(jobs::Jobs::new(
        store.clone(),
        table,
        view.clone(),
        dispatch,
        leadership.clone(),
        deadlines,
        jobs::JobLimits::of(&config),
    ));
    let reconciler =
        OwnedTask::spawn("coordinator.reconciler", reconciler::run(sandboxes.clone(), leadership.clone(), unclaimed));
    let _scheduler = {
        let jobs = jobs.clone();
        task::supervise("coordinator.job_scheduler", move || jobs::schedule::run(jobs.clone()))
    };
    let _results = {
        let jobs = jobs.clone();
        task::supervise("coordinator.job_results", move || jobs::commit::serve(jobs.clone()))
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    set_all(&health, tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(corral_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    tracing::info!(addr = ?listener.local_addr().ok(), "coordinator serving");
    let serve = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(SandboxesServer::new(api::sandboxes::SandboxesApi {
            sandboxes,
            codebases: codebases.clone(),
            config: limits.clone(),
        }))
        .add_service(CodebaseServiceServer::new(api::codebases::CodebasesApi(codebases)))
        .add_service(ExecServer::new(api::exec::ExecApi(calls.clone())))
        .add_service(SessionsServer::new(api::sessions::SessionsApi(calls.clone())))
        .add_service(LanguagesServer::new(api::code::LanguagesApi(view)))
        .add_service(
            JobsServer::new(api::jobs::JobsApi { jobs: jobs.clone(), config: limits.clone() })
                .max_decoding_message_size(max_request),
        )
        .add_service(
            BatchesServer::new(api::batches::BatchesApi { jobs: jobs.clone(), config: limits })
                .max_decoding_message_size(max_request),
        )
        .add_service(FilesServer::new(api::files::FilesApi(calls)).max_decoding_message_size(max_message))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown);
    tokio::pin!(serve);
    let fatal = loop {
        tokio::select! {
            served = &mut serve => {
                served?;
                break None;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if reconciler.is_finished() {
                    break Some(reconciler.name());
                }
            }
        }
    };
    if let Some(task) = fatal {
        tracing::error!(task, "a coordinator task that cannot be restarted ended; NOT_SERVING, exiting");
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        set_all(&health, tonic_health::ServingStatus::NotServing).await;
        return Err(CoordinatorError::TaskEnded(task));
    }
    // Hand leadership over at once rather than after the lease runs out.
    drop(election);
    if let Some(lease) = leadership.lease()
        && let Err(e) = store.revoke_lease(lease).await
    {
        tracing::warn!(error = %e, "could not give up the leader lease; it expires on its own");
    }
    Ok(())
}

/// Sets the health of every service this coordinator serves.
async fn set_all(health: &tonic_health::server::HealthReporter, status: tonic_health::ServingStatus) {
    use tonic::server::NamedService;
    for name in [
        <SandboxesServer<api::sandboxes::SandboxesApi> as NamedService>::NAME,
        <ExecServer<api::exec::ExecApi> as NamedService>::NAME,
        <FilesServer<api::files::FilesApi> as NamedService>::NAME,
        <SessionsServer<api::sessions::SessionsApi> as NamedService>::NAME,
        <LanguagesServer<api::code::LanguagesApi> as NamedService>::NAME,
        <JobsServer<api::jobs::JobsApi> as NamedService>::NAME,
        <BatchesServer<api::batches::BatchesApi> as NamedService>::NAME,
        <CodebaseServiceServer<api::codebases::CodebasesApi> as NamedService>::NAME,
    ] {
        health.set_service_status(name, status).await;
    }
}
