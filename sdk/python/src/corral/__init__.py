"""Corral's Python SDK: sandboxes on a Corral coordinator, over gRPC (``corral.v1``).

Quick start::

    import asyncio
    from corral import AsyncSandbox

    async def main():
        async with AsyncSandbox.create(labels={"team": "eval"}) as sb:
            r = await sb.run_code("print(6 * 7)")
            print(r.stdout)          # "42\\n"

    asyncio.run(main())

``Sandbox`` is the same API without ``await``; ``AsyncSandboxClient`` is the low-level client
(one method per RPC). ``get_languages()`` lists what ``run_code`` can run on the cluster and
``detect_language(filename)`` maps a file name to a language. Jobs and batches (the server runs
each command in a fresh sandbox and queues them): ``execute_code``, ``execute_async``,
``get_job``, ``wait_for_job``, ``cancel_job``, ``list_jobs``, ``run_batch`` (blocking mirrors:
``execute_code_sync``, ...). Codebases (a project uploaded once, shown to many sandboxes through
path rules, each writing to its own layer): ``AsyncSandbox.from_local(path, preset="agent-safe")``,
``AsyncSandbox.from_codebase``, ``sb.diff()``, and the client's ``upload_codebase`` & co.
The coordinator is found through ``endpoint=``, ``CORRAL_ENDPOINT``,
``~/.config/corral/config.toml``, or ``127.0.0.1:50051``.
"""

from ._config import DEFAULT_ENDPOINT, ResolvedConfig, resolve as resolve_config
from .client import AsyncSandboxClient, SandboxPage
from .codebases import (
    Change,
    ChangeKind,
    Codebase,
    CodebaseFile,
    CodebaseFilePage,
    CodebasePage,
    Diff,
    FileKind,
    Preset,
    UploadResult,
)
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CorralError,
    DataLossError,
    DownloadError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    JobTimeoutError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    QuotaExceededError,
    RequestCancelledError,
    ResourceExhaustedError,
    SandboxNotFoundError,
    SandboxTimeoutError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    UploadError,
)
from .job_types import (
    BatchCounts,
    BatchEvent,
    BatchInfo,
    BatchPage,
    BatchStatus,
    BatchSubmission,
    JobInfo,
    JobLogs,
    JobPage,
    JobStatus,
    JobSubmission,
)
from .batches import BatchRun, run_batch
from .jobs import cancel_job, execute_async, execute_code, get_job, list_jobs, wait_for_job
from .languages import LanguageInfo, detect_language, get_languages
from .permissions import PRESETS, PatternType, Permission, PermissionRule
from .processes import AsyncProcess, ProcessEvent, ProcessInfo
from .sandbox import LANGUAGES, AsyncSandbox, SandboxCreation
from .session import AsyncSession, SessionOpening
from .sync import (
    Process,
    Sandbox,
    Session,
    cancel_job_sync,
    execute_async_sync,
    execute_code_sync,
    get_job_sync,
    get_languages_sync,
    list_jobs_sync,
    run_batch_sync,
    wait_for_job_sync,
)
from .types import (
    CommandResult,
    DiskUsage,
    ExecResult,
    FileInfo,
    ResourceLimits,
    RuntimeType,
    SandboxInfo,
    SandboxStatus,
    WriteResult,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncSandbox",
    "Sandbox",
    "AsyncSandboxClient",
    "SandboxCreation",
    "SandboxPage",
    "AsyncProcess",
    "Process",
    "ProcessInfo",
    "ProcessEvent",
    "AsyncSession",
    "Session",
    "SessionOpening",
    "RuntimeType",
    "SandboxStatus",
    "ResourceLimits",
    "SandboxInfo",
    "DiskUsage",
    "ExecResult",
    "CommandResult",
    "FileInfo",
    "WriteResult",
    "LANGUAGES",
    "LanguageInfo",
    "get_languages",
    "get_languages_sync",
    "detect_language",
    "execute_code",
    "execute_async",
    "get_job",
    "wait_for_job",
    "cancel_job",
    "list_jobs",
    "run_batch",
    "BatchRun",
    "execute_code_sync",
    "execute_async_sync",
    "get_job_sync",
    "wait_for_job_sync",
    "cancel_job_sync",
    "list_jobs_sync",
    "run_batch_sync",
    "JobInfo",
    "JobStatus",
    "JobPage",
    "JobLogs",
    "JobSubmission",
    "BatchInfo",
    "BatchStatus",
    "BatchCounts",
    "BatchPage",
    "BatchEvent",
    "BatchSubmission",
    "Permission",
    "PatternType",
    "PermissionRule",
    "PRESETS",
    "Preset",
    "Codebase",
    "CodebasePage",
    "CodebaseFile",
    "CodebaseFilePage",
    "FileKind",
    "UploadResult",
    "Change",
    "ChangeKind",
    "Diff",
    "DEFAULT_ENDPOINT",
    "ResolvedConfig",
    "resolve_config",
    "CorralError",
    "RequestCancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "SandboxTimeoutError",
    "JobTimeoutError",
    "SandboxNotFoundError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "UploadError",
    "DownloadError",
]
