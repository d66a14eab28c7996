"""Result objects for jobs and batches (``corral.v1.Jobs`` / ``corral.v1.Batches``).

Like every SDK result they are frozen dataclasses that are also read-only mappings, so
``job.status`` and ``job["status"]`` both work. A :class:`JobInfo` offers the keys of the
Unsandbox job dictionaries: ``job_id``, ``status`` (lower-case, e.g. ``"completed"``),
``stdout``, ``stderr``, ``exit_code`` and ``language``.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Optional, Union, cast

from .errors import InvalidArgumentError
from .types import RuntimeType, _decode, _ms_to_dt, _Record
from .v1 import jobs_pb2

__all__ = [
    "JobStatus",
    "BatchStatus",
    "JobInfo",
    "JobPage",
    "JobLogs",
    "JobSubmission",
    "BatchCounts",
    "BatchInfo",
    "BatchPage",
    "BatchEvent",
    "BatchSubmission",
]


class JobStatus(str, enum.Enum):
    """Lifecycle state of a job; compares equal to its lower-case name (``== "completed"``)."""

    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self not in (JobStatus.UNSPECIFIED, JobStatus.PENDING, JobStatus.RUNNING)

    @classmethod
    def parse(cls, value: Union["JobStatus", str]) -> "JobStatus":
        if isinstance(value, JobStatus):
            return value
        raw = str(value).lower().removeprefix("job_state_")
        raw = {"canceled": "cancelled", "timed_out": "timeout", "done": "completed"}.get(raw, raw)
        try:
            return cls(raw)
        except ValueError:
            names = ", ".join(m.value for m in cls if m is not cls.UNSPECIFIED)
            raise InvalidArgumentError(f"status: unknown job status {value!r} (one of {names})") from None

    def to_pb(self) -> int:
        return int(jobs_pb2.JobState.Value(f"JOB_STATE_{self.name}"))

    @classmethod
    def from_pb(cls, value: int) -> "JobStatus":
        try:
            name = jobs_pb2.JobState.Name(cast(Any, value))
        except ValueError:
            return cls.UNSPECIFIED
        return cls(name.removeprefix("JOB_STATE_").lower())


class BatchStatus(str, enum.Enum):
    """State of a batch: ``"running"``, ``"completed"`` (every item ended) or ``"cancelled"``."""

    UNSPECIFIED = "unspecified"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_pb(cls, value: int) -> "BatchStatus":
        try:
            name = jobs_pb2.BatchState.Name(cast(Any, value))
        except ValueError:
            return cls.UNSPECIFIED
        return cls(name.removeprefix("BATCH_STATE_").lower())


@dataclass(frozen=True)
class JobInfo(_Record):
    """A job as the server knows it, with its result flattened in.

    ``exit_code`` is None until the command ran (-1 when a signal ended it, see ``signal``).
    ``stdout``/``stderr`` are decoded as UTF-8 (the bytes are in ``stdout_bytes``/``stderr_bytes``).
    ``output_clipped`` means they hold only the first bytes of the output: :func:`corral.execute_code`,
    :func:`corral.wait_for_job` and :func:`corral.run_batch` then fetch the whole output
    (``Jobs.Logs``), while :func:`corral.get_job` and listings return what the server sent.
    """

    job_id: str
    status: JobStatus
    stdout: str = ""
    stderr: str = ""
    exit_code: Optional[int] = None
    language: str = ""
    #: The argv of an argv job ([] otherwise) and the command line of a shell job ("" otherwise).
    argv: list[str] = field(default_factory=list)
    shell: str = ""
    batch_id: str = ""
    index: int = 0
    signal: int = 0
    duration_ms: int = 0
    truncated: bool = False
    output_clipped: bool = False
    oom_killed: bool = False
    attempts: int = 0
    failures: int = 0
    retries: int = 0
    node_id: str = ""
    reason: str = ""
    runtime: Optional[RuntimeType] = None
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tenant: str = ""
    queue_position: int = 0
    created_at: Optional[_dt.datetime] = None
    started_at: Optional[_dt.datetime] = None
    finished_at: Optional[_dt.datetime] = None
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)

    _aliases: ClassVar[dict[str, str]] = {
        "id": "job_id",
        "state": "status",
        "exitCode": "exit_code",
        "done": "done",
        "success": "success",
        "timed_out": "timed_out",
    }

    @property
    def id(self) -> str:
        return self.job_id

    @property
    def state(self) -> JobStatus:
        return self.status

    @property
    def done(self) -> bool:
        """True once the job reached a terminal state."""
        return self.status.is_terminal

    @property
    def success(self) -> bool:
        """True when the command ran and exited 0 (status ``completed``)."""
        return self.status is JobStatus.COMPLETED

    ok = success

    @property
    def timed_out(self) -> bool:
        return self.status is JobStatus.TIMEOUT

    @property
    def output(self) -> str:
        """stdout followed by stderr."""
        return self.stdout + self.stderr

    def with_output(self, stdout: bytes, stderr: bytes, truncated: bool) -> "JobInfo":
        """A copy holding the whole output (as ``Jobs.Logs`` returns it)."""
        return replace(
            self,
            stdout=_decode(stdout),
            stderr=_decode(stderr),
            stdout_bytes=stdout,
            stderr_bytes=stderr,
            truncated=truncated,
            output_clipped=False,
        )

    @classmethod
    def from_pb(cls, job: jobs_pb2.Job) -> "JobInfo":
        spec = job.spec
        ran = job.HasField("result")
        r = job.result
        return cls(
            job_id=job.id,
            status=JobStatus.from_pb(job.state),
            stdout=_decode(r.stdout),
            stderr=_decode(r.stderr),
            exit_code=r.exit_code if ran else None,
            language=spec.language,
            argv=list(spec.argv),
            shell=spec.shell,
            batch_id=job.batch_id,
            index=job.index,
            signal=r.signal,
            duration_ms=r.duration_ms,
            truncated=r.truncated,
            output_clipped=r.output_clipped,
            oom_killed=r.oom_killed,
            attempts=job.attempts,
            failures=job.failures,
            retries=job.retries,
            node_id=job.node_id,
            reason=job.reason,
            runtime=RuntimeType.from_pb(spec.runtime),
            image=spec.image,
            labels=dict(spec.labels),
            tenant=job.tenant,
            queue_position=job.queue_position,
            created_at=_ms_to_dt(job.created_at_ms),
            started_at=_ms_to_dt(job.started_at_ms),
            finished_at=_ms_to_dt(job.finished_at_ms),
            stdout_bytes=r.stdout,
            stderr_bytes=r.stderr,
        )


@dataclass(frozen=True)
class JobPage(_Record):
    """One page of ``Jobs.List`` (outputs are left out); ``next_page_token`` is empty on the last."""

    jobs: list[JobInfo]
    next_page_token: str


@dataclass(frozen=True)
class BatchCounts(_Record):
    """How many items of a batch are in each state."""

    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    timeout: int = 0
    cancelled: int = 0
    lost: int = 0

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.timeout + self.cancelled + self.lost

    @classmethod
    def from_pb(cls, c: jobs_pb2.BatchCounts) -> "BatchCounts":
        return cls(c.pending, c.running, c.completed, c.failed, c.timeout, c.cancelled, c.lost)


@dataclass(frozen=True)
class BatchInfo(_Record):
    """A batch as the server knows it (``Batches.Get``)."""

    batch_id: str
    status: BatchStatus
    total: int
    counts: BatchCounts
    max_concurrency: int
    retries_per_item: int
    deadline_at: Optional[_dt.datetime]
    labels: dict[str, str]
    created_at: Optional[_dt.datetime]
    finished_at: Optional[_dt.datetime]
    tenant: str
    reason: str

    _aliases: ClassVar[dict[str, str]] = {"id": "batch_id", "state": "status"}

    @property
    def id(self) -> str:
        return self.batch_id

    @classmethod
    def from_pb(cls, b: jobs_pb2.Batch) -> "BatchInfo":
        return cls(
            batch_id=b.id,
            status=BatchStatus.from_pb(b.state),
            total=b.total,
            counts=BatchCounts.from_pb(b.counts),
            max_concurrency=b.max_concurrency,
            retries_per_item=b.retries_per_item,
            deadline_at=_ms_to_dt(b.deadline_at_ms),
            labels=dict(b.labels),
            created_at=_ms_to_dt(b.created_at_ms),
            finished_at=_ms_to_dt(b.finished_at_ms),
            tenant=b.tenant,
            reason=b.reason,
        )


@dataclass(frozen=True)
class BatchPage(_Record):
    """One page of ``Batches.List``."""

    batches: list[BatchInfo]
    next_page_token: str


@dataclass(frozen=True)
class BatchEvent(_Record):
    """One finished item of ``Batches.Watch``: ``seq`` numbers results in the order they
    finished (resume a watch with ``from_seq=seq + 1``), ``index`` is the item's position."""

    seq: int
    index: int
    job: JobInfo

    @classmethod
    def from_pb(cls, ev: jobs_pb2.BatchEvent) -> "BatchEvent":
        return cls(seq=ev.seq, index=ev.index, job=JobInfo.from_pb(ev.job))


@dataclass(frozen=True)
class JobSubmission(_Record):
    """What ``Jobs.Submit`` answered: ``created`` is False when an earlier submit with the same
    idempotency key made the job."""

    job_id: str
    created: bool


@dataclass(frozen=True)
class BatchSubmission(_Record):
    """What ``Batches.Submit`` answered (``created`` as for :class:`JobSubmission`)."""

    batch_id: str
    created: bool


@dataclass(frozen=True)
class JobLogs(_Record):
    """The whole output of a job's last attempt, up to the server's cap (``Jobs.Logs``)."""

    stdout: str
    stderr: str
    truncated: bool
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)

    @classmethod
    def from_pb(cls, r: jobs_pb2.JobLogsResponse) -> "JobLogs":
        return cls(_decode(r.stdout), _decode(r.stderr), r.truncated, r.stdout, r.stderr)
