"""AsyncSandboxClient: the low-level calls, one per RPC."""

from __future__ import annotations

import asyncio

import pytest

from corral import AsyncSandbox, AsyncSandboxClient, CorralError, SandboxInfo, SandboxStatus, SandboxTimeoutError
from corral.v1 import exec_pb2, sandbox_pb2


async def test_every_rpc(endpoint: str, labels: dict[str, str]) -> None:
    async with AsyncSandboxClient(endpoint) as c:
        assert c.endpoint == endpoint
        assert await c.health() == "SERVING"
        assert await c.health("corral.v1.Sandboxes") == "SERVING"

        info = await c.create_sandbox(memory_mb=64, labels=labels, name=f"lo-{labels['test-run']}", env={"A": "1"})
        assert isinstance(info, SandboxInfo) and info.status is SandboxStatus.RUNNING
        sid = info.sandbox_id
        assert (await c.get_sandbox(sid)).sandbox_id == sid
        assert (await c.get_sandbox_by_name(f"lo-{labels['test-run']}")).sandbox_id == sid
        page = await c.list_sandboxes(labels=labels, status="running")
        assert [s.sandbox_id for s in page.sandboxes] == [sid] and page.next_page_token == ""
        assert page["sandboxes"] == page.sandboxes

        r = await c.exec_run(sid, argv=["sh", "-c", "echo $A; cat"], stdin=b"in", env={"B": "2"})
        assert (r.stdout, r.exit_code) == ("1\nin", 0)
        r = await c.exec_run(sid, shell="echo $B", env={"B": "2"}, cwd="/tmp", timeout_seconds=5)
        assert r.stdout == "2\n"
        events = [e async for e in c.exec_stream(sid, shell="echo a; echo b >&2; exit 2")]
        assert {"type": "stdout", "data": b"a\n"} in events and {"type": "stderr", "data": b"b\n"} in events
        assert events[-1]["type"] == "done" and events[-1]["exit_code"] == 2

        w = await c.write_file(sid, "/workspace/f.txt", b"data", mode=0o600)
        assert w.size == 4
        assert await c.read_file(sid, "/workspace/f.txt") == b"data"
        entries = await c.list_files(sid, "/workspace")
        assert [(e.name, e.mode & 0o777) for e in entries] == [("f.txt", 0o600)]
        await c.remove_file(sid, "/workspace/f.txt")
        assert await c.list_files(sid, "/workspace") == []

        final = await c.destroy_sandbox(sid)
        assert final.status is SandboxStatus.STOPPED


async def test_raw_stubs(endpoint: str, labels: dict[str, str]) -> None:
    async with AsyncSandboxClient(endpoint) as c:
        resp = await c.sandboxes.Create(sandbox_pb2.CreateSandboxRequest(memory_mb=64, labels=labels))
        sid = resp.sandbox.id
        assert resp.sandbox.state == sandbox_pb2.SANDBOX_STATE_RUNNING
        out = await c.exec.Run(exec_pb2.ExecRequest(sandbox_id=sid, argv=["echo", "raw"]))
        assert out.stdout == b"raw\n"
        await c.sandboxes.Destroy(sandbox_pb2.DestroySandboxRequest(id=sid))


async def test_pagination_tokens(endpoint: str, labels: dict[str, str]) -> None:
    async with AsyncSandboxClient(endpoint) as c:
        ids = [(await c.create_sandbox(memory_mb=64, labels=labels)).sandbox_id for _ in range(3)]
        try:
            first = await c.list_sandboxes(labels=labels, page_size=2)
            assert len(first.sandboxes) == 2 and first.next_page_token
            second = await c.list_sandboxes(labels=labels, page_size=2, page_token=first.next_page_token)
            assert len(second.sandboxes) == 1 and second.next_page_token == ""
            assert sorted(s.sandbox_id for s in first.sandboxes + second.sandboxes) == sorted(ids)
        finally:
            await asyncio.gather(*(c.destroy_sandbox(i) for i in ids))


async def test_stream_deadline(endpoint: str, labels: dict[str, str]) -> None:
    async with AsyncSandboxClient(endpoint) as c:
        sid = (await c.create_sandbox(memory_mb=64, labels=labels)).sandbox_id
        try:
            with pytest.raises(SandboxTimeoutError):
                async for _ in c.exec_stream(sid, shell="sleep 5", timeout=0.3):
                    pass
        finally:
            await c.destroy_sandbox(sid)


async def test_shared_client_and_closed_client(endpoint: str, labels: dict[str, str]) -> None:
    client = AsyncSandboxClient(endpoint)
    a = await AsyncSandbox.create(client=client, labels=labels, memory_mb=64)
    b = await AsyncSandbox.create(client=client, labels=labels, memory_mb=64)
    assert a.client is client and b.client is client
    await a.destroy()
    # A caller's client is not closed by the SDK when a sandbox using it goes away.
    assert (await b.run("echo still")).stdout == "still\n"
    await b.destroy()
    await client.close()
    assert client.closed
    with pytest.raises(CorralError, match="closed"):
        await client.get_sandbox(a.sandbox_id)


async def test_wait_ready(endpoint: str) -> None:
    async with AsyncSandboxClient(endpoint) as c:
        await c.wait_ready(5)
