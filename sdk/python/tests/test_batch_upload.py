"""Batches sent in parts: the cutting into parts (pure), the Submit + Append sequence against an
in-process fake coordinator (a part retried after UNAVAILABLE, a refused part cancelling the
half-uploaded batch), and the server's exact errors for bad bytes and over-limit requests
against the real ``corral dev``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

import corral
from corral import InvalidArgumentError, QuotaExceededError
from corral._batch_upload import PART_BYTES, PART_ITEMS, parts
from corral.v1 import jobs_pb2, jobs_pb2_grpc


def test_parts_are_bounded_by_count_and_bytes() -> None:
    small = [jobs_pb2.JobSpec(shell=f"echo {i}") for i in range(2500)]
    assert [len(p) for p in parts(small)] == [PART_ITEMS, PART_ITEMS, 500]
    big = [jobs_pb2.JobSpec(shell="x" * (1024 * 1024)) for _ in range(10)]
    cut = list(parts(big))
    assert sum(len(p) for p in cut) == 10 and len(cut) == 4
    assert all(sum(s.ByteSize() + 8 for s in p) < PART_BYTES for p in cut)
    with pytest.raises(InvalidArgumentError, match=r"^items\[1\]: is \d+ bytes; an item can be at most"):
        list(parts([small[0], jobs_pb2.JobSpec(shell="x" * PART_BYTES)]))


class Uploads(jobs_pb2_grpc.BatchesServicer):
    def __init__(self, refuse_at: int = -1) -> None:
        self.submits: list[tuple[int, int, str]] = []
        self.appends: list[tuple[int, int]] = []
        self.cancelled: list[str] = []
        self.refuse_at = refuse_at
        self.received = 0

    async def Submit(self, request: Any, context: Any) -> jobs_pb2.SubmitBatchResponse:
        self.submits.append((request.total_items, len(request.items), request.idempotency_key))
        self.received = len(request.items)
        return jobs_pb2.SubmitBatchResponse(batch_id="b-up", created=True, received=self.received)

    async def Append(self, request: Any, context: Any) -> jobs_pb2.AppendBatchResponse:
        self.appends.append((request.first_index, len(request.items)))
        if request.first_index == self.refuse_at:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "items[2].argv[0]: contains a NUL byte at byte 1")
        if len(self.appends) == 1:  # the first Append is lost on the way back
            await context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator going away")
        self.received = max(self.received, request.first_index + len(request.items))
        return jobs_pb2.AppendBatchResponse(received=self.received, accepted=self.received == 2500)

    async def Cancel(self, request: Any, context: Any) -> jobs_pb2.CancelBatchResponse:
        self.cancelled.append(request.batch_id)
        return jobs_pb2.CancelBatchResponse(batch=jobs_pb2.Batch(id=request.batch_id))


async def _serve(fake: Uploads) -> AsyncIterator[str]:
    server = grpc.aio.server()
    jobs_pb2_grpc.add_BatchesServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_a_big_batch_goes_in_parts_and_a_lost_part_is_sent_again() -> None:
    fake = Uploads()
    async for endpoint in _serve(fake):
        async with corral.AsyncSandboxClient(endpoint=endpoint) as client:
            sub = await client.submit_batch([f"echo {i}" for i in range(2500)])
    assert sub.batch_id == "b-up"
    [(total, first, key)] = fake.submits
    assert (total, first) == (2500, 1000) and key.startswith("upload-")
    assert fake.appends == [(1000, 1000), (1000, 1000), (2000, 500)]
    assert fake.cancelled == []


async def test_a_refused_part_cancels_the_half_uploaded_batch() -> None:
    fake = Uploads(refuse_at=2000)
    async for endpoint in _serve(fake):
        async with corral.AsyncSandboxClient(endpoint=endpoint) as client:
            with pytest.raises(InvalidArgumentError, match=r"contains a NUL byte at byte 1"):
                await client.submit_batch(["true"] * 2500)
    assert fake.cancelled == ["b-up"]


async def test_a_small_batch_is_one_request() -> None:
    fake = Uploads()
    async for endpoint in _serve(fake):
        async with corral.AsyncSandboxClient(endpoint=endpoint) as client:
            await client.submit_batch(["true"] * 3, idempotency_key="mine")
    assert fake.submits == [(0, 3, "mine")] and fake.appends == []


async def test_the_server_names_bad_bytes_and_limits(endpoint: str) -> None:
    async with corral.AsyncSandboxClient(endpoint=endpoint) as client:
        items: list[Any] = ["true"] * 5
        items[3] = ["echo", "hello\0world"]
        with pytest.raises(InvalidArgumentError) as bad:
            await client.submit_batch(items)
        assert bad.value.message == "items[3].argv[1]: contains a NUL byte at byte 5"
        req = jobs_pb2.SubmitBatchRequest(total_items=1_200_000)
        req.items.extend([jobs_pb2.JobSpec(argv=["true"])])
        with pytest.raises(QuotaExceededError) as over:
            await client._unary(client.batches.Submit, req, 10)
        assert over.value.message == (
            "1,200,000 items exceed max_batch_items 1,000,000; split the work into several batches"
        )
