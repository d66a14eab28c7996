"""Background processes, sessions, set_timeout and pause/resume against corral dev."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from typing import Optional

import pytest
from conftest import SMALL

from corral import (
    AsyncProcess,
    AsyncSandbox,
    AsyncSandboxClient,
    AsyncSession,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ProcessEvent,
    ProcessInfo,
    SandboxStatus,
)

TRAP = "trap 'echo bye; exit 3' TERM; echo hello; echo warn >&2; echo ready; while :; do sleep 0.05; done"


def _text(events: list[ProcessEvent], kind: str) -> str:
    return "".join(e.data for e in events if e.type == kind)


async def _collect(
    events: AsyncIterator[ProcessEvent], until: Optional[Callable[[list[ProcessEvent]], bool]] = None
) -> list[ProcessEvent]:
    out: list[ProcessEvent] = []
    async for ev in events:
        out.append(ev)
        if until is not None and until(out):
            break
    return out


async def test_background_process_follow_signal_list(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        proc = await sb.start_process(TRAP)
        assert isinstance(proc, AsyncProcess) and proc.pid >= 1 and proc["pid"] == proc.pid
        # stdout and stderr are separate pipes: their relative order is not defined
        ready = lambda evs: "ready" in _text(evs, "stdout") and "warn" in _text(evs, "stderr")
        seen = await asyncio.wait_for(_collect(sb.follow_output(proc.pid), until=ready), 20)
        assert _text(seen, "stdout") == "hello\nready\n"
        assert any(e["type"] == "stderr" and e["data"] == "warn\n" for e in seen)
        [info] = await sb.list_processes()
        assert isinstance(info, ProcessInfo)
        assert (info.pid, info.status, info["command"], info.exit_code) == (proc.pid, "running", TRAP, None)
        assert info.running and info.started_at is not None and info.ended_at is None

        await sb.send_signal(proc.pid, signal.SIGTERM)
        events = await asyncio.wait_for(_collect(sb.follow_output(proc)), 20)
        assert events[-1].type == "exit" and events[-1]["exit_code"] == 3
        assert _text(events, "stdout") == "hello\nready\nbye\n"
        [info] = await sb.list_processes()
        assert (info.status, info.exit_code, info.running) == ("exited", 3, False)
        assert info.ended_at is not None
        with pytest.raises(FailedPreconditionError, match="exited"):
            await sb.send_signal(proc.pid, "TERM")
        await sb.kill_process(proc.pid)  # a no-op once exited


async def test_process_handle_argv_kill_and_wait(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        proc = await sb.start_process("sleep", ["600"], cwd="/tmp", env={"X": "1"})
        assert proc.command == "sleep 600"
        other = await sb.start_process("echo $X; exit 4", env={"X": "from-env"})
        assert other.pid > proc.pid
        done = await asyncio.wait_for(other.wait(), 20)
        assert (done.type, done.exit_code) == ("exit", 4)
        out = [e async for e in other.follow_output()]
        assert out[0].data == "from-env\n" and out[-1].exit_code == 4
        assert (await proc.info()).running
        await proc.kill()
        killed = await asyncio.wait_for(proc.wait(), 20)
        assert killed.signal == 9 and killed.exit_code == -1
        assert {p.pid: p.status for p in await sb.list_processes()} == {proc.pid: "exited", other.pid: "exited"}


async def test_process_output_survives_the_exec_timeout_and_flags_drops(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        big = await sb.start_process("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end")
        assert (await asyncio.wait_for(big.wait(), 30)).exit_code == 0
        events = [e async for e in sb.follow_output(big.pid)]
        assert events[0].type == "dropped" and events[0].dropped_bytes > 0
        kept = sum(len(e.raw) for e in events if e.type == "stdout")
        assert kept <= 1024 * 1024 and events[0].dropped_bytes + kept == 3_000_000 + 5
        assert "".join(e.data for e in events[-3:] if e.type == "stdout").endswith("end\n")


async def test_process_errors(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        with pytest.raises(NotFoundError, match="process 999"):
            await sb.send_signal(999, signal.SIGTERM)
        with pytest.raises(NotFoundError):
            [e async for e in sb.follow_output(999)]
        proc = await sb.start_process("sleep 600")
        with pytest.raises(InvalidArgumentError, match="signal"):
            await sb.send_signal(proc.pid, 99)
        with pytest.raises(InvalidArgumentError, match="signal"):
            await sb.send_signal(proc.pid, "SIGNOPE")
        with pytest.raises(InvalidArgumentError, match="pid"):
            await sb.kill_process(0)
        with pytest.raises(InvalidArgumentError, match="cwd"):
            await sb.start_process("true", cwd="/etc")


async def test_sessions_keep_state_and_do_not_interfere(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        async with await sb.session() as s:
            assert isinstance(s, AsyncSession) and s.session_id.startswith("ss-")
            await s.exec("mkdir -p /workspace/sub && cd /workspace/sub")
            assert (await s.exec("pwd")).stdout == "/workspace/sub\n"
            async with sb.session(cwd="/tmp", env={"ONLY": "b"}) as other:
                await s.exec("export FOO=bar")
                r_a, r_b = await asyncio.gather(
                    s.exec("sleep 0.5; echo $FOO"), other.exec("sleep 0.5; pwd; echo ${FOO:-none} $ONLY")
                )
                assert r_a.stdout == "bar\n" and r_b.stdout == "/tmp\nnone b\n"
            assert other.closed
            r = await s.run("exit 5", timeout=10)
            assert r.exit_code == 5 and r["exit_code"] == 5
            assert (await s.exec("sleep 5", timeout=0.3)).timed_out
            assert (await s.exec("pwd; echo $FOO")).stdout == "/workspace/sub\nbar\n"
            assert (await sb.run("pwd")).stdout == "/workspace\n", "sessions do not change plain runs"
        with pytest.raises(NotFoundError, match="session"):
            await s.exec("true")
        await s.close()  # idempotent


async def test_set_timeout_extends_then_expires(labels: dict[str, str]) -> None:
    sb = await AsyncSandbox.create(labels=labels, timeout_seconds=2, **SMALL)
    try:
        info = await sb.set_timeout(600)
        assert info.timeout_seconds == 600 and sb.cached_info.expires_at == info.expires_at
        await asyncio.sleep(3)
        assert await sb.status() == SandboxStatus.RUNNING
        with pytest.raises(InvalidArgumentError, match="timeout_seconds"):
            await sb.set_timeout(0)
        await sb.set_timeout(1)
        for _ in range(100):
            if await sb.status() == SandboxStatus.EXPIRED:
                break
            await asyncio.sleep(0.1)
        assert await sb.status() == SandboxStatus.EXPIRED
        with pytest.raises(FailedPreconditionError, match="EXPIRED"):
            await sb.set_timeout(60)
    finally:
        await sb.destroy()


async def test_pause_and_resume(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        assert (await sb.pause()).status is SandboxStatus.PAUSED
        with pytest.raises(FailedPreconditionError, match="PAUSED"):
            await sb.run("true")
        assert (await sb.resume()).status is SandboxStatus.RUNNING
        assert (await sb.run("echo ok")).stdout == "ok\n"


async def test_image_and_template_aliases() -> None:
    with pytest.raises(InvalidArgumentError, match="image"):
        AsyncSandbox.create(image="corral/base", template="corral/python")
    with pytest.raises(InvalidArgumentError, match="image"):
        await AsyncSandbox.create(template="corral/base")  # bubblewrap has no image


async def test_low_level_calls(endpoint: str, labels: dict[str, str]) -> None:
    async with AsyncSandboxClient(endpoint) as c:
        sid = (await c.create_sandbox(labels=labels, memory_mb=64)).sandbox_id
        pid = await c.start_process(sid, argv=["sh", "-c", "echo hi; sleep 600"])
        events = []
        async for ev in c.follow_output(sid, pid):
            events.append(ev)
            if ev["type"] == "stdout":
                break
        assert events == [{"type": "stdout", "data": b"hi\n"}]
        assert [p.pid for p in await c.list_processes(sid)] == [pid]
        await c.send_signal(sid, pid, 15)
        exit_ev = [e async for e in c.follow_output(sid, pid)][-1]
        assert exit_ev["type"] == "exit" and exit_ev["signal"] == 15
        await c.kill_process(sid, pid)
        session = await c.open_session(sid, cwd="/tmp", env={"A": "1"})
        assert (await c.session_exec(session, "cd /workspace; echo $A")).stdout == "1\n"
        assert (await c.session_exec(session, "pwd", timeout_seconds=5)).stdout == "/workspace\n"
        await c.close_session(session)
        assert (await c.set_sandbox_timeout(sid, 120)).timeout_seconds == 120
        assert (await c.pause_sandbox(sid)).status is SandboxStatus.PAUSED
        assert (await c.resume_sandbox(sid)).status is SandboxStatus.RUNNING
        await c.destroy_sandbox(sid)
