"""Sending a batch in parts: ``Batches.Submit`` with ``total_items`` and the first part, then
``Batches.Append`` for the rest. Parts stay under the sizes every server accepts (1,000 items,
4 MiB), checked here before anything is sent, so a large batch never becomes one oversized
message. A part that fails with UNAVAILABLE or ABORTED is sent again (Append is idempotent by
index); any other failure cancels the half-uploaded batch (it never ran) and is raised."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Optional, TypeVar

from .errors import AbortedError, CorralError, InvalidArgumentError, UnavailableError
from .v1 import jobs_pb2

#: Most items in one part (servers accept at least this many per request).
PART_ITEMS = 1000
#: Most bytes in one part's request (servers accept at least this much).
PART_BYTES = 4 * 1024 * 1024
_OVERHEAD = 64 * 1024
_ATTEMPTS = 5

T = TypeVar("T")


def parts(specs: Sequence[jobs_pb2.JobSpec]) -> Iterator[list[jobs_pb2.JobSpec]]:
    """``specs`` cut into parts of at most :data:`PART_ITEMS` items and :data:`PART_BYTES` bytes."""
    part: list[jobs_pb2.JobSpec] = []
    size = _OVERHEAD
    for i, spec in enumerate(specs):
        cost = spec.ByteSize() + 8
        if cost + _OVERHEAD > PART_BYTES:
            raise InvalidArgumentError(
                f"items[{i}]: is {cost - 8} bytes; an item can be at most {PART_BYTES - _OVERHEAD} bytes"
            )
        if part and (len(part) == PART_ITEMS or size + cost > PART_BYTES):
            yield part
            part, size = [], _OVERHEAD
        part.append(spec)
        size += cost
    if part:
        yield part


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    pause = 0.1
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await call()
        except (UnavailableError, AbortedError):
            if attempt == _ATTEMPTS:
                raise
            await asyncio.sleep(pause)
            pause *= 4
    raise AssertionError("unreachable")


async def upload(
    unary: Callable[..., Awaitable[Any]],
    batches: Any,
    options: jobs_pb2.SubmitBatchRequest,
    specs: Sequence[jobs_pb2.JobSpec],
    timeout: Optional[float],
) -> jobs_pb2.SubmitBatchResponse:
    """Submits ``specs`` with ``options`` (the request without items) in parts; returns the
    Submit's answer. A batch of several parts gets an idempotency key if it has none, so a
    retried first part cannot create a second batch; a Submit that finds an interrupted upload
    (same key) goes on from where the server says it stopped."""
    cut = parts(specs)
    first = next(cut, [])
    req = jobs_pb2.SubmitBatchRequest()
    req.CopyFrom(options)
    req.items.extend(first)
    whole = len(first) == len(specs)
    if not whole:
        req.total_items = len(specs)
        if not req.idempotency_key:
            req.idempotency_key = f"upload-{secrets.token_hex(16)}"
    resp = await _retrying(lambda: unary(batches.Submit, req, timeout))
    position = len(first)
    for part in cut:
        end = position + len(part)
        if end <= resp.received:  # already stored by an earlier, interrupted upload
            position = end
            continue
        append = jobs_pb2.AppendBatchRequest(batch_id=resp.batch_id, first_index=position, items=part)
        try:
            await _retrying(lambda: unary(batches.Append, append, timeout))
        except CorralError:
            try:
                await unary(batches.Cancel, jobs_pb2.CancelBatchRequest(batch_id=resp.batch_id), 10)
            except CorralError:
                pass
            raise
        position = end
    return resp
