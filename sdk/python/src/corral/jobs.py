"""Jobs and batches, module-level (the Unsandbox style): one-shot commands that the server runs
in a fresh sandbox each, queues when the cluster is busy, and keeps the results of.

::

    r = await execute_code("python", "print(6 * 7)")          # submit, then wait: a JobInfo
    print(r.stdout, r["status"], r.exit_code)                  # "42\\n" completed 0
    job_id = await execute_async("bash", "sleep 5; echo done")  # just submit
    r = await wait_for_job(job_id, timeout=60)
    async with run_batch(["echo a", "echo b"], max_concurrency=5) as results:
        async for r in results:                                # in the order they finish
            print(r.index, r.stdout)

Every helper takes ``endpoint=``/``api_key=`` (resolved as for sandboxes) or an open
``client=``; without one they share the per-event-loop connection the sandboxes use.
``run_batch`` lives in :mod:`corral.batches`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any, Optional, Union

from ._client_jobs import JobStatusFilter, job_spec
from .client import AsyncSandboxClient
from .errors import CorralError, JobTimeoutError, UnavailableError
from .job_types import JobInfo
from .sandbox import _ClientRef, _shielded
from .types import RuntimeType

__all__ = ["execute_code", "execute_async", "get_job", "wait_for_job", "cancel_job", "list_jobs"]

#: Seconds one server-side ``Jobs.Wait`` lasts before the client asks again.
WAIT_CHUNK = 30.0
#: Extra seconds the gRPC deadline of a Wait allows beyond the wait itself.
RPC_SLACK = 15.0
#: How long waits and batch watches keep retrying a coordinator that answers UNAVAILABLE (e.g.
#: while another coordinator takes over) before giving up.
RECONNECT_TIMEOUT = 60.0
#: How many times a submit is retried on UNAVAILABLE (safe: every submit has an idempotency key).
SUBMIT_ATTEMPTS = 3


def _key(idempotency_key: Optional[str]) -> str:
    return idempotency_key or f"py-{uuid.uuid4().hex}"


async def _retrying_submit(call: Any) -> Any:
    delay = 0.2
    for attempt in range(SUBMIT_ATTEMPTS):
        try:
            return await call()
        except UnavailableError:
            if attempt == SUBMIT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def _full_output(client: AsyncSandboxClient, job: JobInfo) -> JobInfo:
    """The job with its whole output when the server sent only the first bytes of it."""
    if not job.output_clipped:
        return job
    logs = await client.job_logs(job.job_id)
    return job.with_output(logs.stdout_bytes, logs.stderr_bytes, logs.truncated)


class _Outage:
    """Tracks consecutive UNAVAILABLE answers: sleeps with exponential backoff, and re-raises
    once they have lasted RECONNECT_TIMEOUT."""

    def __init__(self) -> None:
        self.since: Optional[float] = None
        self.delay = 0.1

    def ok(self) -> None:
        self.since, self.delay = None, 0.1

    async def pause(self, err: UnavailableError, budget: Optional[float] = None) -> None:
        now = asyncio.get_running_loop().time()
        if self.since is None:
            self.since = now
        if now - self.since >= RECONNECT_TIMEOUT:
            raise err
        await asyncio.sleep(self.delay if budget is None else max(0.0, min(self.delay, budget)))
        self.delay = min(self.delay * 2, 2.0)


async def _wait(client: AsyncSandboxClient, job_id: str, timeout: Optional[float]) -> JobInfo:
    """Server-side Waits of at most WAIT_CHUNK each until the job ends or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + max(0.0, float(timeout))
    outage = _Outage()
    while True:
        remaining = None if deadline is None else deadline - loop.time()
        try:
            if remaining is not None and remaining < 0.05:
                # The time is up (a Wait of 0 s would mean the server's 60): one last look.
                job = await client.get_job(job_id)
                if job.done:
                    return await _full_output(client, job)
                raise JobTimeoutError(
                    f"job {job_id} did not finish within {timeout}s (status {job.status})", job_id, job
                )
            chunk = WAIT_CHUNK if remaining is None else min(WAIT_CHUNK, remaining)
            job = await client.wait_job(job_id, chunk, timeout=chunk + RPC_SLACK)
            outage.ok()
            if job.done:
                return await _full_output(client, job)
        except UnavailableError as e:
            await outage.pause(e, None if deadline is None else deadline - loop.time())


async def _cancel_quietly(client: AsyncSandboxClient, job_id: str) -> None:
    try:
        await client.cancel_job(job_id, timeout=10)
    except CorralError:
        pass


async def execute_async(
    language: str,
    code: str,
    *,
    timeout: Optional[float] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: Union[bytes, str, None] = None,
    runtime: Union[RuntimeType, str, None] = None,
    image: Optional[str] = None,
    cpus: Optional[float] = None,
    memory_mb: Optional[int] = None,
    internet_access: bool = False,
    labels: Optional[Mapping[str, str]] = None,
    retries: int = 0,
    idempotency_key: Optional[str] = None,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
    client: Optional[AsyncSandboxClient] = None,
) -> str:
    """Submits ``code`` in ``language`` (see :func:`corral.get_languages`) as a job; returns its id
    at once. ``timeout`` (seconds) kills the command (status ``timeout``); ``retries`` re-runs a
    failed command up to that many times. Submitting again with the same ``idempotency_key``
    returns the same job id (with different code: ``FailedPreconditionError``)."""
    spec = job_spec(
        language=language,
        code=code,
        env=env,
        timeout=timeout,
        stdin=stdin,
        runtime=runtime,
        image=image,
        cpus=cpus,
        memory_mb=memory_mb,
        internet_access=internet_access,
        labels=labels,
    )
    key = _key(idempotency_key)
    ref = _ClientRef(endpoint, api_key, client)
    try:
        sub = await _retrying_submit(lambda: ref.client.submit_job(spec, retries=retries, idempotency_key=key))
        return str(sub.job_id)
    finally:
        await _shielded(ref.release())


async def execute_code(
    language: str,
    code: str,
    *,
    timeout: Optional[float] = None,
    wait_timeout: Optional[float] = None,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
    client: Optional[AsyncSandboxClient] = None,
    **options: Any,
) -> JobInfo:
    """Runs ``code`` in ``language`` as a job and waits for it to end: a :class:`~corral.JobInfo`
    with ``stdout``, ``stderr``, ``exit_code`` and ``status`` (``"completed"``, ``"failed"``,
    ``"timeout"``, ...). A non-zero exit is a result, not an exception.

    ``timeout`` is the command's (as for :func:`execute_async`, whose other keyword arguments
    ``env``, ``stdin``, ``runtime``, ``memory_mb``, ``retries``, ... are accepted too);
    ``wait_timeout`` bounds the whole wait, queueing included, and raises
    :class:`~corral.JobTimeoutError`. The job is cancelled when the wait does not end with its
    result (that timeout, a cancellation, an error): nobody else knows its id."""
    ref = _ClientRef(endpoint, api_key, client)
    try:
        job_id = await execute_async(language, code, timeout=timeout, client=ref.client, **options)
        try:
            return await _wait(ref.client, job_id, wait_timeout)
        except BaseException:
            await _shielded(_cancel_quietly(ref.client, job_id))
            raise
    finally:
        await _shielded(ref.release())


async def get_job(
    job_id: str,
    *,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
    client: Optional[AsyncSandboxClient] = None,
) -> JobInfo:
    """The job as it is now (``Jobs.Get``): ``status``, and the result once it ran."""
    ref = _ClientRef(endpoint, api_key, client)
    try:
        return await ref.client.get_job(job_id)
    finally:
        await _shielded(ref.release())


async def wait_for_job(
    job_id: str,
    timeout: Optional[float] = None,
    *,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
    client: Optional[AsyncSandboxClient] = None,
) -> JobInfo:
    """Waits until the job ends (server-side ``Jobs.Wait`` calls, no polling) and returns it with
    its whole output. After ``timeout`` seconds raises :class:`~corral.JobTimeoutError` (a
    ``SandboxTimeoutError``/``TimeoutError``); the job keeps running. A coordinator that is
    briefly unavailable is retried with exponential backoff."""
    ref = _ClientRef(endpoint, api_key, client)
    try:
        return await _wait(ref.client, job_id, timeout)
    finally:
        await _shielded(ref.release())


async def cancel_job(
    job_id: str,
    *,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
    client: Optional[AsyncSandboxClient] = None,
) -> JobInfo:
    """Cancels a pending or running job (a running command is killed): status ``cancelled``.
    A job that already ended is returned unchanged."""
    ref = _ClientRef(endpoint, api_key, client)
    try:
        return await ref.client.cancel_job(job_id)
    finally:
        await _shielded(ref.release())


async def list_jobs(
    status: JobStatusFilter = None,
    batch_id: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    limit: Optional[int] = None,
    *,
    page_size: int = 0,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
    client: Optional[AsyncSandboxClient] = None,
) -> list[JobInfo]:
    """Jobs in ``status`` (one or several, e.g. ``"running"``; all by default), of one batch (in
    index order), carrying all of ``labels``; at most ``limit`` (all by default). Listings leave
    the output out: :func:`get_job` has it."""
    ref = _ClientRef(endpoint, api_key, client)
    try:
        it = ref.client.iter_jobs(status=status, batch_id=batch_id, labels=labels, page_size=page_size, limit=limit)
        return [job async for job in it]
    finally:
        await _shielded(ref.release())
