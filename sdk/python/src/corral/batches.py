"""Batches: :func:`run_batch` submits many commands as one batch (``Batches.Submit``) and yields
each one's result as it finishes (``Batches.Watch``)."""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from typing import Any, Optional, Union

from ._client_jobs import BatchItem, batch_request, item_spec
from .client import AsyncSandboxClient
from .errors import CorralError, UnavailableError
from .job_types import BatchInfo, BatchStatus, JobInfo
from .jobs import _full_output, _key, _Outage, _retrying_submit
from .sandbox import _ClientRef, _shielded
from .v1 import jobs_pb2

__all__ = ["run_batch", "BatchRun"]


def run_batch(
    items: Iterable[BatchItem],
    *,
    max_concurrency: Optional[int] = None,
    retries_per_item: int = 0,
    deadline: Union[float, _dt.timedelta, None] = None,
    labels: Optional[Mapping[str, str]] = None,
    idempotency_key: Optional[str] = None,
    endpoint: Optional[str] = None,
    api_key: Optional[str] = None,
    client: Optional[AsyncSandboxClient] = None,
) -> "BatchRun":
    """Runs every item as a job of one batch and yields each one's :class:`~corral.JobInfo` as it
    finishes (``.index`` is the item's position). See :class:`BatchRun`.

    An item is a shell command line (``str``), an argv (``list``), or a dict with ``code`` +
    ``language``, ``command`` (str or list), ``argv`` or ``shell``, and optionally ``timeout``,
    ``env``, ``stdin``, ``cpus``, ``memory_mb``, ``internet_access``, ``labels``, ``runtime``,
    ``image``. Items are checked here, before anything is sent. At most ``max_concurrency`` items
    run at once (None = the server's 20); each failed one is re-run up to ``retries_per_item``
    times; ``deadline`` (seconds) cancels what is still unfinished by then."""
    specs = [item_spec(i, item) for i, item in enumerate(items)]
    options: dict[str, Any] = dict(
        max_concurrency=max_concurrency,
        retries_per_item=retries_per_item,
        deadline=deadline,
        labels=labels,
        idempotency_key=_key(idempotency_key),
    )
    batch_request([], **options)  # checks the options now, before anything is sent
    return BatchRun(specs, options, endpoint, api_key, client)


class BatchRun(AsyncIterator[JobInfo]):
    """The results of :func:`run_batch`, as an async iterator (in the order items finish; every
    item exactly once) and an async context manager.

    The batch is submitted on the first ``__anext__`` (or on entering ``async with``, or by
    :meth:`start`). The watch resumes where it was after a dropped connection (``Batches.Watch``
    with ``from_seq``).

    **Stopping early cancels the batch**: when the iteration is closed before every item finished
    (``aclose()``, leaving ``async with``, an exception or cancellation in the consumer), the
    unfinished items are cancelled (``Batches.Cancel``). A bare ``async for`` that ``break``\\s
    closes the iterator only when it is garbage-collected, so prefer ``async with run_batch(...) as
    results:`` (or ``contextlib.aclosing``).
    """

    def __init__(
        self,
        specs: list[jobs_pb2.JobSpec],
        options: dict[str, Any],
        endpoint: Optional[str],
        api_key: Optional[str],
        client: Optional[AsyncSandboxClient],
    ) -> None:
        self._specs = specs
        self._options = options
        self._endpoint, self._api_key, self._client = endpoint, api_key, client
        self._ref: Optional[_ClientRef] = None
        self._batch_id: Optional[str] = None
        self._finished = False
        self._closed = False
        self._gen = self._results()

    @property
    def batch_id(self) -> Optional[str]:
        """The batch's id once submitted (None before)."""
        return self._batch_id

    @property
    def total(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"BatchRun(batch_id={self._batch_id!r}, total={self.total})"

    async def start(self) -> str:
        """Submits the batch (once); returns its id."""
        if self._batch_id is None:
            if self._closed:
                raise CorralError("this batch run is closed")
            if self._ref is None:
                self._ref = _ClientRef(self._endpoint, self._api_key, self._client)
            client = self._ref.client
            sub = await _retrying_submit(lambda: client.submit_batch(self._specs, **self._options))
            self._batch_id = str(sub.batch_id)
        return self._batch_id

    def __aiter__(self) -> "BatchRun":
        return self

    async def __anext__(self) -> JobInfo:
        return await self._gen.__anext__()

    async def __aenter__(self) -> "BatchRun":
        try:
            await self.start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stops the iteration; cancels the batch unless every item already finished."""
        await self._gen.aclose()
        await self._close()

    async def cancel(self) -> Optional[BatchInfo]:
        """Cancels the batch's unfinished items (the iteration then yields them as cancelled)."""
        if self._batch_id is None or self._ref is None:
            return None
        return await self._ref.client.cancel_batch(self._batch_id)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ref is None:
            return
        try:
            if self._batch_id is not None and not self._finished:
                client, batch_id = self._ref.client, self._batch_id

                async def cancel() -> None:
                    try:
                        await client.cancel_batch(batch_id, timeout=10)
                    except CorralError:
                        pass

                await _shielded(cancel())
        finally:
            await _shielded(self._ref.release())

    async def _results(self) -> AsyncGenerator[JobInfo, None]:
        try:
            batch_id = await self.start()
            assert self._ref is not None
            client = self._ref.client
            next_seq, seen, outage = 0, set[int](), _Outage()
            while len(seen) < self.total:
                try:
                    async for ev in client.watch_batch(batch_id, from_seq=next_seq):
                        outage.ok()
                        if ev.seq < next_seq or ev.index in seen:
                            next_seq = max(next_seq, ev.seq + 1)
                            continue
                        job = await _full_output(client, ev.job)
                        next_seq = ev.seq + 1
                        seen.add(ev.index)
                        self._finished = len(seen) >= self.total
                        yield job
                    if len(seen) < self.total:
                        # The stream ended early: resume unless the server says the batch is over.
                        if (await client.get_batch(batch_id)).status is not BatchStatus.RUNNING:
                            break
                        await asyncio.sleep(0.1)
                except UnavailableError as e:
                    await outage.pause(e)
            self._finished = True
        finally:
            await self._close()
