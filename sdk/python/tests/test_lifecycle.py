"""Create / connect / info / status / list / iter / destroy against corral dev."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from conftest import SMALL

from corral import (
    AsyncSandbox,
    AsyncSandboxClient,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceLimits,
    RuntimeType,
    SandboxInfo,
    SandboxNotFoundError,
    SandboxStatus,
)
from corral.v1 import sandbox_pb2


async def test_await_create_then_destroy(labels: dict[str, str]) -> None:
    sb = await AsyncSandbox.create(labels=labels, **SMALL)
    try:
        assert sb.sandbox_id.startswith("sb-") and len(sb.sandbox_id) == 35
        assert sb.id == sb.sandbox_id
        assert await sb.status() == SandboxStatus.RUNNING
        assert await sb.status() == "running"
    finally:
        final = await sb.destroy()
    assert final.status is SandboxStatus.STOPPED
    assert final.termination_reason
    assert await sb.status() == "stopped"
    await sb.close()


async def test_async_with_create_destroys_on_exit(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        r = await sb.run("echo inside")
        assert r.stdout == "inside\n"
        sid = sb.sandbox_id
    info = await (await AsyncSandbox.connect(sid)).info()
    assert info.status is SandboxStatus.STOPPED


async def test_async_with_await_create_destroys_on_exit(labels: dict[str, str]) -> None:
    async with await AsyncSandbox.create(labels=labels, **SMALL) as sb:
        assert (await sb.run("true")).exit_code == 0
    assert (await sb.info()).status is SandboxStatus.STOPPED
    await sb.close()


async def test_async_with_destroys_when_body_raises(labels: dict[str, str]) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
            raise RuntimeError("boom")
    assert await sb.status() == SandboxStatus.STOPPED
    await sb.close()


async def test_create_parameters_are_applied(labels: dict[str, str]) -> None:
    name = f"py-{uuid.uuid4().hex[:12]}"
    async with AsyncSandbox.create(
        runtime=RuntimeType.BWRAP,
        cpus=0.5,
        memory_mb=96,
        timeout_seconds=120,
        env_vars={"GREETING": "hello", "N": "3"},
        labels={**labels, "team": "eval"},
        name=name,
        workdir="/tmp",
    ) as sb:
        info = await sb.info()
        assert info.sandbox_id == sb.sandbox_id and info["id"] == sb.sandbox_id
        assert info.name == name == sb.name
        assert info.runtime is RuntimeType.BWRAP
        assert info.cpus == 0.5
        assert info.memory_mb == 96
        assert info.timeout_seconds == 120
        assert info.labels == {**labels, "team": "eval"}
        assert info.workdir == "/tmp"
        assert info.internet_access is False
        assert info.node_id == "dev"
        assert info.tenant == "default"
        assert isinstance(info.created_at, dt.datetime) and isinstance(info.started_at, dt.datetime)
        assert info.expires_at is not None
        assert 110 <= (info.expires_at - info.created_at).total_seconds() <= 121
        assert info.ended_at is None
        r = await sb.run("echo $GREETING-$N; pwd")
        assert r.stdout == "hello-3\n/tmp\n"


async def test_get_info_alias_and_mapping_access(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        a = await sb.get_info()
        assert isinstance(a, SandboxInfo)
        assert a["status"] == "running" and a["state"] == "running" and a.state is a.status
        assert a["labels"] == labels
        d = a.to_dict()
        assert d["status"] == "running" and d["runtime"] == "bwrap" and d["sandbox_id"] == sb.sandbox_id
        assert set(dict(a)) == set(d)
        assert a.is_running


async def test_resources_and_timeout_alias(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(
        labels=labels, resources=ResourceLimits(cpus=0.25, memory_bytes=100 * 1024 * 1024 + 1), timeout=90
    ) as sb:
        info = await sb.info()
        assert (info.cpus, info.memory_mb, info.timeout_seconds) == (0.25, 101, 90)


async def test_internet_access_false_has_only_loopback(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        r = await sb.run("cat /proc/net/dev")
        assert r.exit_code == 0
        interfaces = [line.split(":")[0].strip() for line in r.stdout.splitlines() if ":" in line]
        assert interfaces == ["lo"]


async def test_sandbox_expires_after_its_timeout(labels: dict[str, str]) -> None:
    sb = await AsyncSandbox.create(labels=labels, timeout_seconds=1, **SMALL)
    try:
        for _ in range(100):
            if await sb.status() != "running":
                break
            await asyncio.sleep(0.1)
        info = await sb.info()
        assert info.status is SandboxStatus.EXPIRED
        assert info.status.is_terminal
        assert info.ended_at is not None
        with pytest.raises(FailedPreconditionError, match="EXPIRED"):
            await sb.run("true")
    finally:
        await sb.close()


async def test_destroy_aliases_terminate_and_kill(labels: dict[str, str]) -> None:
    a = await AsyncSandbox.create(labels=labels, **SMALL)
    b = await AsyncSandbox.create(labels=labels, **SMALL)
    assert (await a.terminate()).status is SandboxStatus.STOPPED
    assert (await b.kill()).status is SandboxStatus.STOPPED
    # Destroying again is harmless, and the objects still answer.
    assert (await a.destroy()).status is SandboxStatus.STOPPED
    assert await b.status() == "stopped"
    await b.close()


async def test_connect_by_id_and_by_name(labels: dict[str, str]) -> None:
    name = f"py-{uuid.uuid4().hex[:12]}"
    async with AsyncSandbox.create(labels=labels, name=name, **SMALL) as sb:
        await sb.write_file("marker.txt", "shared")
        by_id = await AsyncSandbox.connect(sb.sandbox_id)
        by_name = await AsyncSandbox.connect(name)
        try:
            assert by_id.sandbox_id == by_name.sandbox_id == sb.sandbox_id
            assert await by_name.read_file("marker.txt") == "shared"
            assert (await by_id.run("cat marker.txt")).stdout == "shared"
        finally:
            await by_id.close()
            await by_name.close()
    with pytest.raises(SandboxNotFoundError):
        await AsyncSandbox.connect(name)  # names are freed when the sandbox ends


async def test_list_filters_by_labels_and_status_and_limit(labels: dict[str, str]) -> None:
    sbs = await asyncio.gather(*(AsyncSandbox.create(labels=labels, **SMALL) for _ in range(3)))
    try:
        await sbs[0].destroy()
        all_ = await AsyncSandbox.list(labels=labels)
        assert sorted(s.sandbox_id for s in all_) == sorted(s.sandbox_id for s in sbs)
        running = await AsyncSandbox.list(status="running", labels=labels)
        assert sorted(s.sandbox_id for s in running) == sorted(s.sandbox_id for s in sbs[1:])
        assert all(s.status is SandboxStatus.RUNNING for s in running)
        stopped = await AsyncSandbox.list(status=SandboxStatus.STOPPED, labels=labels)
        assert [s.sandbox_id for s in stopped] == [sbs[0].sandbox_id]
        both = await AsyncSandbox.list(status=["running", "stopped"], labels=labels)
        assert len(both) == 3
        assert len(await AsyncSandbox.list(labels=labels, limit=2)) == 2
        assert await AsyncSandbox.list(labels={**labels, "other": "x"}) == []
    finally:
        await asyncio.gather(*(s.destroy() for s in sbs[1:]))


async def test_list_rejects_an_unknown_status() -> None:
    with pytest.raises(InvalidArgumentError, match="status"):
        await AsyncSandbox.list(status="sleepy")


async def test_iter_paginates_lazily(labels: dict[str, str], endpoint: str) -> None:
    sbs = await asyncio.gather(*(AsyncSandbox.create(labels=labels, **SMALL) for _ in range(5)))
    try:
        async with AsyncSandboxClient(endpoint) as client:
            pages: list[int] = []
            real = client.list_sandboxes

            async def counting(**kw):  # type: ignore[no-untyped-def]
                page = await real(**kw)
                pages.append(len(page.sandboxes))
                return page

            client.list_sandboxes = counting  # type: ignore[method-assign]
            seen = []
            async for info in AsyncSandbox.iter(labels=labels, page_size=2, client=client):
                seen.append(info.sandbox_id)
                if len(seen) == 3:
                    break
            # Three items with pages of two: exactly two pages were fetched, not all three.
            assert pages == [2, 2]
            pages.clear()
            every = [i.sandbox_id async for i in AsyncSandbox.iter(labels=labels, page_size=2, client=client)]
            assert sorted(every) == sorted(s.sandbox_id for s in sbs)
            assert pages == [2, 2, 1]
            pages.clear()
            limited = [i async for i in AsyncSandbox.iter(labels=labels, page_size=2, limit=3, client=client)]
            assert len(limited) == 3 and pages == [2, 1]
    finally:
        await asyncio.gather(*(s.destroy() for s in sbs))


async def test_runtime_docker(labels: dict[str, str]) -> None:
    if "RUNTIME_DOCKER" not in sandbox_pb2.Runtime.keys():
        # This protocol version has no Docker runtime: the SDK says so before calling the server.
        with pytest.raises(InvalidArgumentError, match="docker"):
            await AsyncSandbox.create(runtime=RuntimeType.DOCKER, labels=labels)
        with pytest.raises(InvalidArgumentError, match="docker"):
            await AsyncSandbox.create(runtime="docker", labels=labels)
        assert await AsyncSandbox.list(labels=labels) == []
    else:
        # The protocol has it: the server answers (it runs, or says why not).
        try:
            sb = await AsyncSandbox.create(runtime=RuntimeType.DOCKER, labels=labels, **SMALL)
        except (InvalidArgumentError, FailedPreconditionError) as e:
            assert "docker" in str(e).lower() or "runtime" in str(e).lower()
        else:
            async with sb:
                assert (await sb.info()).runtime is RuntimeType.DOCKER
    with pytest.raises(InvalidArgumentError, match="runtime"):
        AsyncSandbox.create(runtime="firecracker")
