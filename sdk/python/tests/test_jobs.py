"""Jobs and batches against the real ``corral dev``: every module helper, the low-level client
calls, the blocking mirrors, and the error classes they raise."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import corral
from corral import (
    AsyncSandboxClient,
    BatchStatus,
    FailedPreconditionError,
    InvalidArgumentError,
    JobInfo,
    JobStatus,
    JobTimeoutError,
    NotFoundError,
)


async def _until_running(job_id: str) -> JobInfo:
    for _ in range(200):
        job = await corral.get_job(job_id)
        if job.status is not JobStatus.PENDING:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"{job_id} is still pending")


async def test_execute_code_returns_the_result(labels: dict[str, str]) -> None:
    r = await corral.execute_code("python", "print(6 * 7)", labels=labels)
    assert (r["status"], r["stdout"], r["exit_code"], r["language"]) == ("completed", "42\n", 0, "python")
    assert r.job_id == r["job_id"] and r.success and r.finished_at is not None
    r = await corral.execute_code("bash", 'echo "$X" >&2; exit 3', env={"X": "to stderr"}, labels=labels)
    assert (r.status, r.exit_code, r.stderr) == (JobStatus.FAILED, 3, "to stderr\n")
    r = await corral.execute_code("sh", "sleep 10", timeout=0.5, labels=labels)
    assert r.status is JobStatus.TIMEOUT and r.timed_out
    with pytest.raises(InvalidArgumentError, match="language"):
        await corral.execute_code("cobol", "DISPLAY 'HI'")


async def test_execute_async_get_wait_and_list(labels: dict[str, str]) -> None:
    job_id = await corral.execute_async("python", "print('later'); print('x' * 20000)", labels=labels)
    assert isinstance(job_id, str) and job_id.startswith("job-")
    done = await corral.wait_for_job(job_id, timeout=60)
    assert (done.status, done.stdout) == ("completed", "later\n" + "x" * 20000 + "\n")
    assert not done.output_clipped  # the whole output, from Jobs.Logs
    got = await corral.get_job(job_id)
    assert got.job_id == job_id and got.output_clipped and done.stdout.startswith(got.stdout)
    listed = await corral.list_jobs(labels=labels)
    assert [j.job_id for j in listed] == [job_id]
    assert [j.job_id for j in await corral.list_jobs(status="completed", labels=labels, limit=1)] == [job_id]
    assert await corral.list_jobs(status=["running", "pending"], labels=labels) == []
    with pytest.raises(NotFoundError):
        await corral.get_job("job-" + uuid.uuid4().hex)


async def test_cancel_a_running_job(labels: dict[str, str]) -> None:
    job_id = await corral.execute_async("sh", "sleep 30", labels=labels)
    assert (await _until_running(job_id)).status is JobStatus.RUNNING
    cancelled = await corral.cancel_job(job_id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.done
    assert (await corral.wait_for_job(job_id, timeout=10)).status == "cancelled"
    assert (await corral.cancel_job(job_id)).status == "cancelled"  # an ended job is unchanged


async def test_wait_for_job_timeout(labels: dict[str, str]) -> None:
    job_id = await corral.execute_async("sh", "sleep 30", labels=labels)
    try:
        with pytest.raises(JobTimeoutError) as ei:
            await corral.wait_for_job(job_id, timeout=0.5)
        assert ei.value.job_id == job_id and not ei.value.job.done
        assert isinstance(ei.value, TimeoutError)
    finally:
        await corral.cancel_job(job_id)


async def test_idempotent_submit(labels: dict[str, str]) -> None:
    key = f"py-test-{uuid.uuid4().hex}"
    first = await corral.execute_async("python", "print(1)", idempotency_key=key, labels=labels)
    assert await corral.execute_async("python", "print(1)", idempotency_key=key, labels=labels) == first
    with pytest.raises(FailedPreconditionError):
        await corral.execute_async("python", "print(2)", idempotency_key=key, labels=labels)
    async with AsyncSandboxClient() as client:
        sub = await client.submit_job(language="python", code="print(1)", labels=labels, idempotency_key=key)
        assert (sub.job_id, sub.created) == (first, False)


async def test_run_batch_yields_every_item_once(labels: dict[str, str]) -> None:
    items: list = []
    for i in range(50):
        items.append([f"echo {i}", {"argv": ["echo", str(i)]}, {"code": f"print({i})", "language": "python"}][i % 3])
    items[7] = {"command": "echo oops >&2; exit 3", "timeout": 30}
    seen = []
    async with corral.run_batch(items, max_concurrency=5, labels=labels) as results:
        async for r in results:
            seen.append(r)
    assert sorted(r.index for r in seen) == list(range(50))
    assert {r.batch_id for r in seen} == {results.batch_id}
    for r in seen:
        if r.index == 7:
            assert (r.status, r.exit_code, r.stderr) == ("failed", 3, "oops\n")
        else:
            assert (r.status, r.stdout) == ("completed", f"{r.index}\n"), r
    # Never more than 5 ran at once.
    edges = sorted([(r.finished_at, -1) for r in seen] + [(r.started_at, 1) for r in seen])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= 5
    async with AsyncSandboxClient() as client:
        batch = await client.get_batch(results.batch_id)
        assert (batch.status, batch.total, batch.counts.completed, batch.counts.failed) == ("completed", 50, 49, 1)
        assert [b.batch_id for b in (await client.list_batches(labels=labels)).batches] == [results.batch_id]
    assert len(await corral.list_jobs(batch_id=results.batch_id)) == 50


async def test_closing_run_batch_early_cancels_it(labels: dict[str, str]) -> None:
    async with corral.run_batch(["sleep 30"] * 6, max_concurrency=2, labels=labels) as results:
        batch_id = results.batch_id
    assert batch_id
    async with AsyncSandboxClient() as client:
        batch = await client.get_batch(batch_id)
        assert batch.status is BatchStatus.CANCELLED and batch.counts.cancelled == 6


def test_sync_mirrors(labels: dict[str, str]) -> None:
    r = corral.execute_code_sync("python", "print('sync')", labels=labels)
    assert (r.status, r.stdout) == ("completed", "sync\n")
    job_id = corral.execute_async_sync("sh", "sleep 30", labels=labels)
    with pytest.raises(JobTimeoutError):
        corral.wait_for_job_sync(job_id, timeout=0.3)
    assert corral.cancel_job_sync(job_id).status == "cancelled"
    assert corral.get_job_sync(job_id).status == "cancelled"
    assert {j.job_id for j in corral.list_jobs_sync(labels=labels)} == {r.job_id, job_id}
    out = sorted(r.stdout for r in corral.run_batch_sync(["echo a", ["echo", "b"]], labels=labels))
    assert out == ["a\n", "b\n"]
