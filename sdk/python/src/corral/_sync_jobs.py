"""Blocking mirrors of the job and batch helpers of :mod:`corral.jobs` and :mod:`corral.batches` (same arguments, no
``await``), run on the SDK's private event loop like :class:`~corral.Sandbox`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, List, Optional

from ._client_jobs import BatchItem, JobStatusFilter
from ._sync_loop import iterate, run
from .job_types import JobInfo
from .batches import run_batch
from .jobs import cancel_job, execute_async, execute_code, get_job, list_jobs, wait_for_job

__all__ = [
    "execute_code_sync",
    "execute_async_sync",
    "get_job_sync",
    "wait_for_job_sync",
    "cancel_job_sync",
    "list_jobs_sync",
    "run_batch_sync",
]


def execute_code_sync(language: str, code: str, **options: Any) -> JobInfo:
    """:func:`corral.execute_code` without ``await`` (same keyword arguments)."""
    return run(execute_code(language, code, **options))


def execute_async_sync(language: str, code: str, **options: Any) -> str:
    """:func:`corral.execute_async` without ``await``: submits and returns the job id."""
    return run(execute_async(language, code, **options))


def get_job_sync(job_id: str, *, endpoint: Optional[str] = None, api_key: Optional[str] = None) -> JobInfo:
    """:func:`corral.get_job` without ``await``."""
    return run(get_job(job_id, endpoint=endpoint, api_key=api_key))


def wait_for_job_sync(
    job_id: str, timeout: Optional[float] = None, *, endpoint: Optional[str] = None, api_key: Optional[str] = None
) -> JobInfo:
    """:func:`corral.wait_for_job` without ``await`` (raises ``JobTimeoutError`` after ``timeout``)."""
    return run(wait_for_job(job_id, timeout, endpoint=endpoint, api_key=api_key))


def cancel_job_sync(job_id: str, *, endpoint: Optional[str] = None, api_key: Optional[str] = None) -> JobInfo:
    """:func:`corral.cancel_job` without ``await``."""
    return run(cancel_job(job_id, endpoint=endpoint, api_key=api_key))


def list_jobs_sync(
    status: JobStatusFilter = None,
    batch_id: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    limit: Optional[int] = None,
    *,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
) -> List[JobInfo]:
    """:func:`corral.list_jobs` without ``await``."""
    return run(list_jobs(status, batch_id, labels, limit, endpoint=endpoint, api_key=api_key))


def run_batch_sync(items: Iterable[BatchItem], **options: Any) -> Iterator[JobInfo]:
    """:func:`corral.run_batch` as a blocking iterator (same keyword arguments). Leaving the loop
    before the end (``break``, an exception) cancels the batch's unfinished items; the iterator is
    a generator, so ``with contextlib.closing(run_batch_sync(...)) as results:`` makes that
    immediate on every Python implementation."""
    return iterate(run_batch(items, **options))
