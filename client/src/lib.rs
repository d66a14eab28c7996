//! Rust SDK for Corral's gRPC API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral_client::ClientError> {
//! let client = corral_client::Client::connect("http://127.0.0.1:50051").await?;
//! let sandbox = client.create(Default::default()).await?;
//! let out = client.run_shell(&sandbox.id, "echo hello").await?;
//! assert_eq!(out.stdout, b"hello\n");
//! client.destroy(&sandbox.id).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use corral_proto::v1 as pb;
use corral_proto::v1::batches_client::BatchesClient;
use corral_proto::v1::codebase_service_client::CodebaseServiceClient;
use corral_proto::v1::exec_client::ExecClient;
use corral_proto::v1::files_client::FilesClient;
use corral_proto::v1::jobs_client::JobsClient;
use corral_proto::v1::languages_client::LanguagesClient;
use corral_proto::v1::sandboxes_client::SandboxesClient;
use corral_proto::v1::sessions_client::SessionsClient;
use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

pub mod codebase;
mod upload;

pub use codebase::{LocalFile, Progress, ScanError, ScanOptions, scan};
pub use corral_proto::v1;
pub use upload::{PART_BYTES, PART_ITEMS, Uploaded};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot reach corral at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the server sent no {0}")]
    Missing(&'static str),
    /// The items of a batch could not be read.
    #[error("reading the batch's items: {0}")]
    Items(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("item {index} is {bytes} bytes; an item can be at most {limit} bytes")]
    ItemTooLarge { index: u64, bytes: usize, limit: usize },
    #[error("the batch was declared with {declared} items but {given} were given")]
    Count { declared: u32, given: u64 },
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// The canonical name of a gRPC status code (`RESOURCE_EXHAUSTED`), as errors show it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Longest single server-side wait [`Client::wait_job_done`] asks for.
const WAIT_SLICE: Duration = Duration::from_secs(60);

/// Whether a job has reached a terminal state (COMPLETED, FAILED, TIMEOUT, CANCELLED, LOST).
pub fn job_done(job: &pb::Job) -> bool {
    use pb::JobState as S;
    matches!(S::try_from(job.state), Ok(S::Completed | S::Failed | S::Timeout | S::Cancelled | S::Lost))
}

/// Largest message the client accepts (files up to the server's default 64 MiB limit).
const MAX_MESSAGE: usize = 80 * 1024 * 1024;

/// A connection to a coordinator. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub sandboxes: SandboxesClient<Channel>,
    pub exec: ExecClient<Channel>,
    pub files: FilesClient<Channel>,
    pub sessions: SessionsClient<Channel>,
    pub languages: LanguagesClient<Channel>,
    pub jobs: JobsClient<Channel>,
    pub batches: BatchesClient<Channel>,
    pub codebases: CodebaseServiceClient<Channel>,
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`; a bare `host:port` gets `http://`).
    pub async fn connect(endpoint: &str) -> Result<Self> {
        let uri = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
        let ep = Endpoint::from_shared(uri.clone())
            .map_err(|source| ClientError::Endpoint { endpoint: endpoint.to_owned(), source })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = ep.connect().await.map_err(|source| ClientError::Connect { endpoint: uri, source })?;
        Ok(Self::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Self {
        Self {
            sandboxes: SandboxesClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            exec: ExecClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            sessions: SessionsClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            languages: LanguagesClient::new(channel.clone()),
            jobs: JobsClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            batches: BatchesClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            codebases: CodebaseServiceClient::new(channel.clone()),
            files: FilesClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }

    pub async fn create(&self, req: pb::CreateSandboxRequest) -> Result<pb::Sandbox> {
        let resp = self.sandboxes.clone().create(req).await?.into_inner();
        resp.sandbox.ok_or(ClientError::Missing("sandbox"))
    }

    pub async fn get(&self, id: &str) -> Result<pb::Sandbox> {
        let resp = self.sandboxes.clone().get(pb::GetSandboxRequest { id: id.to_owned() }).await?.into_inner();
        resp.sandbox.ok_or(ClientError::Missing("sandbox"))
    }

    pub async fn get_by_name(&self, name: &str) -> Result<pb::Sandbox> {
        let req = pb::GetSandboxByNameRequest { name: name.to_owned() };
        let resp = self.sandboxes.clone().get_by_name(req).await?.into_inner();
        resp.sandbox.ok_or(ClientError::Missing("sandbox"))
    }

    pub async fn list(&self, req: pb::ListSandboxesRequest) -> Result<pb::ListSandboxesResponse> {
        Ok(self.sandboxes.clone().list(req).await?.into_inner())
    }

    pub async fn destroy(&self, id: &str) -> Result<pb::Sandbox> {
        let resp = self.sandboxes.clone().destroy(pb::DestroySandboxRequest { id: id.to_owned() }).await?.into_inner();
        resp.sandbox.ok_or(ClientError::Missing("sandbox"))
    }

    pub async fn pause(&self, id: &str) -> Result<pb::Sandbox> {
        let resp = self.sandboxes.clone().pause(pb::PauseSandboxRequest { id: id.to_owned() }).await?.into_inner();
        resp.sandbox.ok_or(ClientError::Missing("sandbox"))
    }

    pub async fn resume(&self, id: &str) -> Result<pb::Sandbox> {
        let resp = self.sandboxes.clone().resume(pb::ResumeSandboxRequest { id: id.to_owned() }).await?.into_inner();
        resp.sandbox.ok_or(ClientError::Missing("sandbox"))
    }

    /// Resets a live sandbox's lifetime to `timeout_seconds` from now.
    pub async fn set_timeout(&self, id: &str, timeout_seconds: i64) -> Result<pb::Sandbox> {
        let req = pb::SetSandboxTimeoutRequest { id: id.to_owned(), timeout_seconds };
        let resp = self.sandboxes.clone().set_timeout(req).await?.into_inner();
        resp.sandbox.ok_or(ClientError::Missing("sandbox"))
    }

    pub async fn run(&self, req: pb::ExecRequest) -> Result<pb::ExecResponse> {
        Ok(self.exec.clone().run(req).await?.into_inner())
    }

    /// Runs `argv` with default settings.
    pub async fn run_argv(&self, sandbox_id: &str, argv: &[&str]) -> Result<pb::ExecResponse> {
        let argv = argv.iter().map(|s| s.to_string()).collect();
        self.run(pb::ExecRequest { sandbox_id: sandbox_id.to_owned(), argv, ..Default::default() }).await
    }

    /// Runs a shell command line with default settings.
    pub async fn run_shell(&self, sandbox_id: &str, shell: &str) -> Result<pb::ExecResponse> {
        self.run(pb::ExecRequest { sandbox_id: sandbox_id.to_owned(), shell: shell.to_owned(), ..Default::default() })
            .await
    }

    /// Runs a snippet of `req.language` (written to a file in the sandbox, compiled if need be).
    pub async fn run_code(&self, req: pb::RunCodeRequest) -> Result<pb::ExecResponse> {
        Ok(self.exec.clone().run_code(req).await?.into_inner())
    }

    /// Runs a snippet with default settings.
    pub async fn run_code_in(&self, sandbox_id: &str, language: &str, code: &str) -> Result<pb::ExecResponse> {
        let req = pb::RunCodeRequest {
            sandbox_id: sandbox_id.to_owned(),
            language: language.to_owned(),
            code: code.to_owned(),
            ..Default::default()
        };
        self.run_code(req).await
    }

    /// The languages some node of the cluster can run, with the runtimes offering each.
    pub async fn list_languages(&self) -> Result<Vec<pb::Language>> {
        Ok(self.languages.clone().list(pb::ListLanguagesRequest {}).await?.into_inner().languages)
    }

    /// Runs a command and streams its output events; the last event is the exit.
    pub async fn run_stream(
        &self,
        req: pb::ExecRequest,
    ) -> Result<impl Stream<Item = Result<pb::exec_event::Event>> + use<>> {
        let stream = self.exec.clone().run_stream(req).await?.into_inner();
        Ok(stream.map(|item| item.map_err(ClientError::from)?.event.ok_or(ClientError::Missing("event"))))
    }

    /// Starts a background process; returns its pid (unique within the sandbox).
    pub async fn start_process(&self, req: pb::StartProcessRequest) -> Result<u32> {
        Ok(self.exec.clone().start_process(req).await?.into_inner().pid)
    }

    /// Starts a shell command line as a background process.
    pub async fn start_process_shell(&self, sandbox_id: &str, shell: &str) -> Result<u32> {
        let req = pb::StartProcessRequest {
            sandbox_id: sandbox_id.to_owned(),
            shell: shell.to_owned(),
            ..Default::default()
        };
        self.start_process(req).await
    }

    pub async fn list_processes(&self, sandbox_id: &str) -> Result<Vec<pb::ProcessInfo>> {
        let req = pb::ListProcessesRequest { sandbox_id: sandbox_id.to_owned() };
        Ok(self.exec.clone().list_processes(req).await?.into_inner().processes)
    }

    pub async fn send_signal(&self, sandbox_id: &str, pid: u32, signal: i32) -> Result<()> {
        let req = pb::SendSignalRequest { sandbox_id: sandbox_id.to_owned(), pid, signal };
        self.exec.clone().send_signal(req).await?;
        Ok(())
    }

    pub async fn kill_process(&self, sandbox_id: &str, pid: u32) -> Result<()> {
        let req = pb::KillProcessRequest { sandbox_id: sandbox_id.to_owned(), pid };
        self.exec.clone().kill_process(req).await?;
        Ok(())
    }

    /// A background process's buffered output, then its live output, then its exit event.
    pub async fn follow_output(
        &self,
        sandbox_id: &str,
        pid: u32,
    ) -> Result<impl Stream<Item = Result<pb::exec_event::Event>> + use<>> {
        let req = pb::FollowOutputRequest { sandbox_id: sandbox_id.to_owned(), pid };
        let stream = self.exec.clone().follow_output(req).await?.into_inner();
        Ok(stream.map(|item| item.map_err(ClientError::from)?.event.ok_or(ClientError::Missing("event"))))
    }

    /// Opens a shell session whose `cd` and `export` persist; returns its id.
    pub async fn open_session(&self, req: pb::OpenSessionRequest) -> Result<String> {
        Ok(self.sessions.clone().open(req).await?.into_inner().session_id)
    }

    /// Runs a command line in a session with the default timeout.
    pub async fn session_exec(&self, session_id: &str, command: &str) -> Result<pb::ExecResponse> {
        let req = pb::SessionExecRequest {
            session_id: session_id.to_owned(),
            command: command.to_owned(),
            timeout_seconds: 0.0,
        };
        Ok(self.sessions.clone().exec(req).await?.into_inner())
    }

    pub async fn close_session(&self, session_id: &str) -> Result<()> {
        self.sessions.clone().close(pb::CloseSessionRequest { session_id: session_id.to_owned() }).await?;
        Ok(())
    }

    pub async fn read_file(&self, sandbox_id: &str, path: &str) -> Result<Vec<u8>> {
        let req = pb::ReadFileRequest { sandbox_id: sandbox_id.to_owned(), path: path.to_owned() };
        Ok(self.files.clone().read(req).await?.into_inner().data)
    }

    pub async fn write_file(&self, sandbox_id: &str, path: &str, data: Vec<u8>, mode: u32) -> Result<i64> {
        let req = pb::WriteFileRequest { sandbox_id: sandbox_id.to_owned(), path: path.to_owned(), data, mode };
        Ok(self.files.clone().write(req).await?.into_inner().size)
    }

    pub async fn list_files(&self, sandbox_id: &str, path: &str) -> Result<Vec<pb::FileEntry>> {
        let req = pb::ListFilesRequest { sandbox_id: sandbox_id.to_owned(), path: path.to_owned() };
        Ok(self.files.clone().list(req).await?.into_inner().entries)
    }

    pub async fn remove_file(&self, sandbox_id: &str, path: &str, recursive: bool) -> Result<()> {
        let req = pb::RemoveFileRequest { sandbox_id: sandbox_id.to_owned(), path: path.to_owned(), recursive };
        self.files.clone().remove(req).await?;
        Ok(())
    }

    /// Submits a one-shot job; returns its id.
    pub async fn submit_job(&self, req: pb::SubmitJobRequest) -> Result<String> {
        Ok(self.jobs.clone().submit(req).await?.into_inner().job_id)
    }

    pub async fn get_job(&self, job_id: &str) -> Result<pb::Job> {
        let resp = self.jobs.clone().get(pb::GetJobRequest { job_id: job_id.to_owned() }).await?.into_inner();
        resp.job.ok_or(ClientError::Missing("job"))
    }

    /// Waits server-side up to `timeout_seconds` for the job to end; returns it as it is then.
    pub async fn wait_job(&self, job_id: &str, timeout_seconds: f64) -> Result<pb::Job> {
        let req = pb::WaitJobRequest { job_id: job_id.to_owned(), timeout_seconds };
        let resp = self.jobs.clone().wait(req).await?.into_inner();
        resp.job.ok_or(ClientError::Missing("job"))
    }

    /// Waits until the job ends (server-side waits of at most a minute each, so no connection
    /// stays idle for long), or until `within` passes (`None`: no limit). Returns the job as it is
    /// then; [`job_done`] tells whether it ended.
    pub async fn wait_job_done(&self, job_id: &str, within: Option<Duration>) -> Result<pb::Job> {
        let deadline = within.map(|w| tokio::time::Instant::now() + w);
        loop {
            let slice = match deadline {
                None => WAIT_SLICE,
                Some(d) => d.saturating_duration_since(tokio::time::Instant::now()).min(WAIT_SLICE),
            };
            if slice.is_zero() {
                return self.get_job(job_id).await;
            }
            let job = self.wait_job(job_id, slice.as_secs_f64()).await?;
            if job_done(&job) || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(job);
            }
        }
    }

    pub async fn cancel_job(&self, job_id: &str) -> Result<pb::Job> {
        let resp = self.jobs.clone().cancel(pb::CancelJobRequest { job_id: job_id.to_owned() }).await?.into_inner();
        resp.job.ok_or(ClientError::Missing("job"))
    }

    pub async fn list_jobs(&self, req: pb::ListJobsRequest) -> Result<pb::ListJobsResponse> {
        Ok(self.jobs.clone().list(req).await?.into_inner())
    }

    pub async fn job_logs(&self, job_id: &str) -> Result<pb::JobLogsResponse> {
        Ok(self.jobs.clone().logs(pb::JobLogsRequest { job_id: job_id.to_owned() }).await?.into_inner())
    }

    /// Submits a fan-out batch; returns its id. A batch larger than one request is sent in
    /// parts ([`Client::submit_batch_parts`]).
    pub async fn submit_batch(&self, mut req: pb::SubmitBatchRequest) -> Result<String> {
        let items = std::mem::take(&mut req.items);
        let total = u32::try_from(items.len())
            .map_err(|_| ClientError::Count { declared: u32::MAX, given: items.len() as u64 })?;
        let items = items.into_iter().map(Ok::<_, std::convert::Infallible>);
        Ok(self.submit_batch_parts(req, total, items, |_, _| {}).await?.batch_id)
    }

    pub async fn get_batch(&self, batch_id: &str) -> Result<pb::Batch> {
        let req = pb::GetBatchRequest { batch_id: batch_id.to_owned() };
        let resp = self.batches.clone().get(req).await?.into_inner();
        resp.batch.ok_or(ClientError::Missing("batch"))
    }

    /// Streams the batch's results as items finish, starting after the first `from_seq`.
    pub async fn watch_batch(
        &self,
        batch_id: &str,
        from_seq: u64,
    ) -> Result<impl Stream<Item = Result<pb::BatchEvent>> + use<>> {
        let req = pb::WatchBatchRequest { batch_id: batch_id.to_owned(), from_seq };
        let stream = self.batches.clone().watch(req).await?.into_inner();
        Ok(stream.map(|item| item.map_err(ClientError::from)))
    }

    pub async fn cancel_batch(&self, batch_id: &str) -> Result<pb::Batch> {
        let req = pb::CancelBatchRequest { batch_id: batch_id.to_owned() };
        let resp = self.batches.clone().cancel(req).await?.into_inner();
        resp.batch.ok_or(ClientError::Missing("batch"))
    }

    pub async fn list_batches(&self, req: pb::ListBatchesRequest) -> Result<pb::ListBatchesResponse> {
        Ok(self.batches.clone().list(req).await?.into_inner())
    }
}
