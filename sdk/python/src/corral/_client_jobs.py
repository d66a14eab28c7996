"""The low-level calls of ``corral.v1.Jobs`` and ``corral.v1.Batches``, mixed into
:class:`~corral.AsyncSandboxClient`, and the conversion of job descriptions to ``JobSpec``."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import grpc.aio

from . import _batch_upload
from .errors import InvalidArgumentError
from .job_types import (
    BatchEvent,
    BatchInfo,
    BatchPage,
    BatchSubmission,
    JobInfo,
    JobLogs,
    JobPage,
    JobStatus,
    JobSubmission,
)
from .types import RuntimeType
from .v1 import jobs_pb2, jobs_pb2_grpc

JobStatusFilter = Union[JobStatus, str, Iterable[Union[JobStatus, str]], None]
#: A batch item: a shell command line, an argv list, a dict (see :func:`item_spec`) or a JobSpec.
BatchItem = Union[str, Sequence[str], Mapping[str, Any], jobs_pb2.JobSpec]

#: The keys a dict item may have, besides the command (code+language, command, argv or shell).
_ITEM_OPTIONS = ("timeout", "env", "stdin", "cpus", "memory_mb", "internet_access", "labels", "runtime", "image")


def job_spec(
    *,
    argv: Optional[Sequence[str]] = None,
    shell: Optional[str] = None,
    language: Optional[str] = None,
    code: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
    cpus: Optional[float] = None,
    memory_mb: Optional[int] = None,
    internet_access: bool = False,
    stdin: Union[bytes, str, None] = None,
    labels: Optional[Mapping[str, str]] = None,
    runtime: Union[RuntimeType, str, None] = None,
    image: Optional[str] = None,
) -> jobs_pb2.JobSpec:
    """A ``JobSpec``: exactly one of ``argv``, ``shell`` and ``code`` (which needs ``language``).
    ``timeout`` is the command's timeout in seconds (the job ends TIMEOUT); unset values use the
    server's defaults."""
    from .client import _set, _str_map, _to_bytes

    given = [name for name, v in (("argv", argv), ("shell", shell), ("code", code)) if v is not None]
    if len(given) != 1:
        raise InvalidArgumentError(f"argv, shell, code: exactly one must be given (got {', '.join(given) or 'none'})")
    spec = jobs_pb2.JobSpec()
    if argv is not None:
        if isinstance(argv, str) or not argv:
            raise InvalidArgumentError("argv: expected a non-empty sequence of str (use shell= for a command line)")
        spec.argv.extend(a if isinstance(a, str) else str(a) for a in argv)
    elif shell is not None:
        _set(spec, "shell", shell)
    else:
        if not language:
            raise InvalidArgumentError("language: code needs a language (see get_languages())")
        _set(spec, "code", code)
    if language:
        if code is None:
            raise InvalidArgumentError("language: only a code job has a language")
        _set(spec, "language", language)
    spec.env.update(_str_map("env", env))
    spec.labels.update(_str_map("labels", labels))
    if timeout is not None:
        _set(spec, "timeout_seconds", _seconds("timeout", timeout))
    if cpus is not None:
        _set(spec, "cpus", float(cpus))
    if memory_mb is not None:
        _set(spec, "memory_mb", memory_mb)
    _set(spec, "internet_access", bool(internet_access))
    if stdin is not None:
        spec.stdin = _to_bytes("stdin", stdin)
    rt = RuntimeType.parse(runtime)
    if rt is not None:
        spec.runtime = rt.to_pb()  # type: ignore[assignment]
    if image:
        _set(spec, "image", image)
    return spec


def item_spec(index: int, item: BatchItem) -> jobs_pb2.JobSpec:
    """The ``JobSpec`` of one batch item: a ``str`` is a shell command line, a list/tuple an argv,
    a dict has ``code`` + ``language``, ``command`` (str or list), ``argv`` or ``shell``, and
    optionally ``timeout``, ``env``, ``stdin``, ``cpus``, ``memory_mb``, ``internet_access``,
    ``labels``, ``runtime``, ``image``. Errors name the item (``items[3]: ...``)."""
    try:
        if isinstance(item, jobs_pb2.JobSpec):
            return item
        if isinstance(item, str):
            return job_spec(shell=item)
        if isinstance(item, Mapping):
            d = dict(item)
            if "command" in d:
                command = d.pop("command")
                key = "shell" if isinstance(command, str) else "argv"
                if key in d:
                    raise InvalidArgumentError(f"give command or {key}, not both")
                d[key] = command
            unknown = sorted(set(d) - {"argv", "shell", "code", "language", *_ITEM_OPTIONS})
            if unknown:
                raise InvalidArgumentError(f"unknown key {unknown[0]!r}")
            return job_spec(**d)
        if isinstance(item, Sequence) and not isinstance(item, (bytes, bytearray)):
            return job_spec(argv=item)
        raise InvalidArgumentError(f"expected a str, a list or a dict, got {type(item).__name__}")
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"items[{index}]: {e.message}") from None


def batch_request(
    items: Iterable[BatchItem],
    *,
    max_concurrency: Optional[int] = None,
    retries_per_item: int = 0,
    deadline: Union[float, _dt.timedelta, None] = None,
    labels: Optional[Mapping[str, str]] = None,
    idempotency_key: Optional[str] = None,
) -> jobs_pb2.SubmitBatchRequest:
    """The ``SubmitBatchRequest`` for ``items`` (see :func:`item_spec`) and the batch's options."""
    from .client import _str_map

    req = jobs_pb2.SubmitBatchRequest(idempotency_key=idempotency_key or "")
    req.items.extend(item_spec(i, item) for i, item in enumerate(items))
    if max_concurrency is not None:
        if max_concurrency < 1:
            raise InvalidArgumentError(f"max_concurrency: {max_concurrency} is less than 1")
        req.max_concurrency = _count("max_concurrency", max_concurrency)
    req.retries_per_item = _count("retries_per_item", retries_per_item)
    if deadline is not None:
        req.deadline_seconds = _seconds("deadline", deadline)
    req.labels.update(_str_map("labels", labels))
    return req


def _seconds(field: str, value: Union[float, _dt.timedelta]) -> float:
    seconds = value.total_seconds() if isinstance(value, _dt.timedelta) else float(value)
    if seconds < 0:
        raise InvalidArgumentError(f"{field}: {value!r} is negative")
    return seconds


def job_states(status: JobStatusFilter) -> list[int]:
    if status is None:
        return []
    if isinstance(status, (str, JobStatus)):
        status = [status]
    return [JobStatus.parse(s).to_pb() for s in status]


class _JobCalls:
    """Needs ``_unary``, ``_metadata`` and ``_ensure_channel`` from the client."""

    _metadata: tuple[tuple[str, str], ...]
    _jobs: Optional[jobs_pb2_grpc.JobsStub] = None
    _batches: Optional[jobs_pb2_grpc.BatchesStub] = None

    async def _unary(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    def _ensure_channel(self) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    @property
    def jobs(self) -> jobs_pb2_grpc.JobsStub:
        """The generated ``corral.v1.Jobs`` stub."""
        channel = self._ensure_channel()
        if self._jobs is None:
            self._jobs = jobs_pb2_grpc.JobsStub(channel)
        return self._jobs

    @property
    def batches(self) -> jobs_pb2_grpc.BatchesStub:
        """The generated ``corral.v1.Batches`` stub."""
        channel = self._ensure_channel()
        if self._batches is None:
            self._batches = jobs_pb2_grpc.BatchesStub(channel)
        return self._batches

    # ------------------------------------------------------------------ corral.v1.Jobs

    async def submit_job(
        self,
        spec: Optional[jobs_pb2.JobSpec] = None,
        *,
        retries: int = 0,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        **fields: Any,
    ) -> JobSubmission:
        """``Jobs.Submit``: a job described by ``spec`` or by :func:`job_spec`'s keyword arguments
        (``shell=``, ``argv=``, ``code=`` + ``language=``, ``env=``, ``timeout_seconds=``, ...).
        ``retries`` re-runs a failed command (0..=10). A submit with an ``idempotency_key`` used
        before returns that job (``created=False``); with a different body it raises
        ``FailedPreconditionError``. ``timeout`` is the gRPC deadline of the call."""
        if "timeout_seconds" in fields:
            fields["timeout"] = fields.pop("timeout_seconds")
        if spec is None:
            spec = job_spec(**fields)
        elif fields:
            raise InvalidArgumentError(f"{next(iter(fields))}: give a spec or keyword fields, not both")
        req = jobs_pb2.SubmitJobRequest(job=spec, idempotency_key=idempotency_key or "")
        req.retries = _count("retries", retries)
        resp = await self._unary(self.jobs.Submit, req, timeout)
        return JobSubmission(job_id=resp.job_id, created=resp.created)

    async def get_job(self, job_id: str, *, timeout: Optional[float] = None) -> JobInfo:
        """``Jobs.Get``."""
        resp = await self._unary(self.jobs.Get, jobs_pb2.GetJobRequest(job_id=job_id), timeout)
        return JobInfo.from_pb(resp.job)

    async def wait_job(self, job_id: str, timeout_seconds: float = 0, *, timeout: Optional[float] = None) -> JobInfo:
        """``Jobs.Wait``: waits server-side up to ``timeout_seconds`` (0 = the server's 60 s, at
        most 3600) for the job to end; returns it as it is then (check ``.done``)."""
        req = jobs_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=_seconds("timeout_seconds", timeout_seconds))
        resp = await self._unary(self.jobs.Wait, req, timeout)
        return JobInfo.from_pb(resp.job)

    async def cancel_job(self, job_id: str, *, timeout: Optional[float] = None) -> JobInfo:
        """``Jobs.Cancel``: a PENDING or RUNNING job ends CANCELLED; an ended one is unchanged."""
        resp = await self._unary(self.jobs.Cancel, jobs_pb2.CancelJobRequest(job_id=job_id), timeout)
        return JobInfo.from_pb(resp.job)

    async def list_jobs(
        self,
        *,
        status: JobStatusFilter = None,
        batch_id: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: Optional[float] = None,
    ) -> JobPage:
        """``Jobs.List``: one page (``page_size`` 1..1000, 0 = 100); outputs are left out."""
        from .client import _set, _str_map

        req = jobs_pb2.ListJobsRequest(batch_id=batch_id or "", page_token=page_token)
        _set(req, "page_size", page_size)
        req.states.extend(job_states(status))  # type: ignore[arg-type]
        req.labels.update(_str_map("labels", labels))
        resp = await self._unary(self.jobs.List, req, timeout)
        return JobPage(jobs=[JobInfo.from_pb(j) for j in resp.jobs], next_page_token=resp.next_page_token)

    async def iter_jobs(
        self,
        *,
        status: JobStatusFilter = None,
        batch_id: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        limit: Optional[int] = None,
    ) -> AsyncIterator[JobInfo]:
        """Every matching job (at most ``limit``), one page fetched at a time."""
        token, seen = "", 0
        while limit is None or seen < limit:
            size = page_size if limit is None else min(page_size or 100, limit - seen)
            page = await self.list_jobs(
                status=status, batch_id=batch_id, labels=labels, page_size=size, page_token=token
            )
            for job in page.jobs[: None if limit is None else limit - seen]:
                seen += 1
                yield job
            token = page.next_page_token
            if not token:
                return

    async def job_logs(self, job_id: str, *, timeout: Optional[float] = None) -> JobLogs:
        """``Jobs.Logs``: the whole output of the job's last attempt (up to the server's cap)."""
        resp = await self._unary(self.jobs.Logs, jobs_pb2.JobLogsRequest(job_id=job_id), timeout)
        return JobLogs.from_pb(resp)

    # ------------------------------------------------------------------ corral.v1.Batches

    async def submit_batch(
        self,
        items: Iterable[BatchItem],
        *,
        max_concurrency: Optional[int] = None,
        retries_per_item: int = 0,
        deadline: Union[float, _dt.timedelta, None] = None,
        labels: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> BatchSubmission:
        """``Batches.Submit``: one job per item (see :func:`item_spec`), at most ``max_concurrency``
        running at once (None = the server's 20); ``deadline`` (seconds) cancels what is unfinished
        by then. A batch larger than one request is sent in parts of at most 1,000 items and
        4 MiB (``Batches.Append``); it runs once the last part is stored. ``timeout`` applies to
        each request."""
        options = batch_request(
            [],
            max_concurrency=max_concurrency,
            retries_per_item=retries_per_item,
            deadline=deadline,
            labels=labels,
            idempotency_key=idempotency_key,
        )
        specs = [item_spec(i, item) for i, item in enumerate(items)]
        resp = await _batch_upload.upload(self._unary, self.batches, options, specs, timeout)
        return BatchSubmission(batch_id=resp.batch_id, created=resp.created)

    async def get_batch(self, batch_id: str, *, timeout: Optional[float] = None) -> BatchInfo:
        """``Batches.Get``."""
        resp = await self._unary(self.batches.Get, jobs_pb2.GetBatchRequest(batch_id=batch_id), timeout)
        return BatchInfo.from_pb(resp.batch)

    async def watch_batch(
        self, batch_id: str, *, from_seq: int = 0, timeout: Optional[float] = None
    ) -> AsyncGenerator[BatchEvent, None]:
        """``Batches.Watch``: each finished item, in the order they finished, from ``from_seq``;
        ends when every item has finished. Leaving early cancels the call (not the batch)."""
        from .client import _convert

        req = jobs_pb2.WatchBatchRequest(batch_id=batch_id, from_seq=_count("from_seq", from_seq))
        start = time.monotonic()
        call: Any = self.batches.Watch(req, metadata=self._metadata, timeout=timeout)
        try:
            async for ev in call:
                yield BatchEvent.from_pb(ev)
        except grpc.aio.AioRpcError as e:
            raise _convert(e, timeout, start) from None
        finally:
            call.cancel()

    async def cancel_batch(self, batch_id: str, *, timeout: Optional[float] = None) -> BatchInfo:
        """``Batches.Cancel``: every unfinished item ends CANCELLED."""
        resp = await self._unary(self.batches.Cancel, jobs_pb2.CancelBatchRequest(batch_id=batch_id), timeout)
        return BatchInfo.from_pb(resp.batch)

    async def list_batches(
        self,
        *,
        labels: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: Optional[float] = None,
    ) -> BatchPage:
        """``Batches.List``: one page (``page_size`` 1..1000, 0 = 100)."""
        from .client import _set, _str_map

        req = jobs_pb2.ListBatchesRequest(page_token=page_token)
        _set(req, "page_size", page_size)
        req.labels.update(_str_map("labels", labels))
        resp = await self._unary(self.batches.List, req, timeout)
        return BatchPage(batches=[BatchInfo.from_pb(b) for b in resp.batches], next_page_token=resp.next_page_token)


def _count(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{field}: expected an int, got {type(value).__name__}")
    if value < 0:
        raise InvalidArgumentError(f"{field}: {value} is negative")
    return value
