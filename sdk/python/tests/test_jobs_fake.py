"""The job and batch helpers' own logic against an in-process fake coordinator: Watch resumed
with from_seq after UNAVAILABLE, early close cancels the batch, clipped output fetched with Logs,
Wait in chunks until the client's timeout, submits retried with the same idempotency key."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

import corral
from corral import JobStatus, JobTimeoutError
from corral.v1 import jobs_pb2, jobs_pb2_grpc

TOTAL = 7


def _job(index: int) -> jobs_pb2.Job:
    job = jobs_pb2.Job(id=f"job-{index}", state=jobs_pb2.JOB_STATE_COMPLETED, batch_id="b-1", index=index)
    job.result.stdout = f"out {index}\n".encode()
    job.result.output_clipped = index == 2  # Logs has the rest
    return job


class FakeJobs(jobs_pb2_grpc.JobsServicer):
    def __init__(self) -> None:
        self.submit_keys: list[str] = []
        self.waits: list[float] = []

    async def Submit(self, request: Any, context: Any) -> jobs_pb2.SubmitJobResponse:
        self.submit_keys.append(request.idempotency_key)
        if len(self.submit_keys) == 1:  # the first attempt is lost on the way back
            await context.abort(grpc.StatusCode.UNAVAILABLE, "leader changing")
        return jobs_pb2.SubmitJobResponse(job_id="job-slow", created=len(self.submit_keys) == 2)

    async def Wait(self, request: Any, context: Any) -> jobs_pb2.WaitJobResponse:
        self.waits.append(request.timeout_seconds)
        await asyncio.sleep(request.timeout_seconds)
        return jobs_pb2.WaitJobResponse(job=jobs_pb2.Job(id=request.job_id, state=jobs_pb2.JOB_STATE_RUNNING))

    async def Get(self, request: Any, context: Any) -> jobs_pb2.GetJobResponse:
        return jobs_pb2.GetJobResponse(job=jobs_pb2.Job(id=request.job_id, state=jobs_pb2.JOB_STATE_RUNNING))

    async def Logs(self, request: Any, context: Any) -> jobs_pb2.JobLogsResponse:
        return jobs_pb2.JobLogsResponse(stdout=b"the whole output of " + request.job_id.encode())


class FakeBatches(jobs_pb2_grpc.BatchesServicer):
    def __init__(self) -> None:
        self.from_seqs: list[int] = []
        self.cancelled: list[str] = []
        self.items = 0

    async def Submit(self, request: Any, context: Any) -> jobs_pb2.SubmitBatchResponse:
        self.items = len(request.items)
        return jobs_pb2.SubmitBatchResponse(batch_id="b-1", created=True)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[jobs_pb2.BatchEvent]:
        self.from_seqs.append(request.from_seq)
        order = [3, 0, 6, 1, 2, 5, 4]  # items finish out of order
        for seq in range(request.from_seq, self.items):
            if seq == 3 and len(self.from_seqs) == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator going away")
            yield jobs_pb2.BatchEvent(seq=seq, index=order[seq], job=_job(order[seq]))
            await asyncio.sleep(0.01)

    async def Cancel(self, request: Any, context: Any) -> jobs_pb2.CancelBatchResponse:
        self.cancelled.append(request.batch_id)
        return jobs_pb2.CancelBatchResponse(batch=jobs_pb2.Batch(id=request.batch_id))


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeJobs, FakeBatches]]:
    """The fake serves from a loop of its own, in a thread, so blocking tests can call it too."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    jobs, batches = FakeJobs(), FakeBatches()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        jobs_pb2_grpc.add_JobsServicer_to_server(jobs, server)
        jobs_pb2_grpc.add_BatchesServicer_to_server(batches, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"127.0.0.1:{port}", jobs, batches
    asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def test_watch_resumes_from_the_next_seq(fake: tuple[str, FakeJobs, FakeBatches]) -> None:
    endpoint, _, batches = fake
    results = [r async for r in corral.run_batch([f"echo {i}" for i in range(TOTAL)], endpoint=endpoint)]
    assert batches.from_seqs == [0, 3]
    assert [r.index for r in results] == [3, 0, 6, 1, 2, 5, 4]
    assert results[0].stdout == "out 3\n" and results[0].status is JobStatus.COMPLETED
    clipped = next(r for r in results if r.index == 2)
    assert clipped.stdout == "the whole output of job-2" and not clipped.output_clipped
    assert batches.cancelled == []  # it ran to the end: nothing to cancel


async def test_leaving_early_cancels_the_batch(fake: tuple[str, FakeJobs, FakeBatches]) -> None:
    endpoint, _, batches = fake
    async with corral.run_batch(["true"] * TOTAL, endpoint=endpoint) as results:
        assert results.batch_id == "b-1" and results.total == TOTAL
        first = await results.__anext__()
        assert first.index == 3
    assert batches.cancelled == ["b-1"]


def test_sync_loop_left_early_cancels_the_batch(fake: tuple[str, FakeJobs, FakeBatches]) -> None:
    endpoint, _, batches = fake
    results = corral.run_batch_sync(["true"] * TOTAL, endpoint=endpoint)
    assert next(results).index == 3
    results.close()  # what leaving a for loop does once the iterator is dropped
    assert batches.cancelled == ["b-1"]


async def test_wait_for_job_times_out_with_the_job(fake: tuple[str, FakeJobs, FakeBatches]) -> None:
    endpoint, jobs, _ = fake
    with pytest.raises(JobTimeoutError) as ei:
        await corral.wait_for_job("job-slow", timeout=0.4, endpoint=endpoint)
    assert ei.value.job_id == "job-slow" and ei.value.job.status is JobStatus.RUNNING
    assert jobs.waits and all(0 < w <= 0.4 for w in jobs.waits)


async def test_submit_is_retried_with_the_same_key(fake: tuple[str, FakeJobs, FakeBatches]) -> None:
    endpoint, jobs, _ = fake
    assert await corral.execute_async("python", "print(1)", endpoint=endpoint) == "job-slow"
    assert len(jobs.submit_keys) == 2 and jobs.submit_keys[0] == jobs.submit_keys[1] != ""
