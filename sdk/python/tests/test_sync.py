"""The synchronous mirror (plain def tests, no event loop of their own)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from corral import InvalidArgumentError, ResourceLimits, Sandbox, SandboxNotFoundError, SandboxStatus


def test_sync_lifecycle_and_commands(labels: dict[str, str]) -> None:
    name = f"sync-{uuid.uuid4().hex[:10]}"
    with Sandbox.create(labels=labels, name=name, memory_mb=64, env_vars={"X": "y"}) as sb:
        assert sb.sandbox_id.startswith("sb-") and sb.id == sb.sandbox_id and sb.name == name
        assert sb.status() == SandboxStatus.RUNNING
        assert sb.info().labels == labels and sb.get_info().memory_mb == 64
        r = sb.run("echo $X")
        assert (r.stdout, r["exit_code"]) == ("y\n", 0)
        assert sb.run("echo", ["a", "b"]).stdout == "a b\n"
        assert sb.run("sleep 10", timeout=0.3).timed_out
        assert sb.run_code("print(2 ** 10)").stdout == "1024\n"
        events = list(sb.run_code_stream("print('s1'); print('s2')"))
        assert "".join(e["data"] for e in events if e["type"] == "stdout") == "s1\ns2\n"
        assert events[-1]["type"] == "done" and events[-1]["exit_code"] == 0
        with pytest.raises(InvalidArgumentError):
            sb.run_code("x", language="brainfuck")

        other = Sandbox.connect(name)
        assert other.sandbox_id == sb.sandbox_id
        other.close()
        listed = Sandbox.list(status="running", labels=labels)
        assert [s.sandbox_id for s in listed] == [sb.sandbox_id]
        assert [s.sandbox_id for s in Sandbox.iter(labels=labels, page_size=1)] == [sb.sandbox_id]
    assert sb.status() == "stopped"
    with pytest.raises(SandboxNotFoundError):
        Sandbox.connect(name)


def test_sync_files(labels: dict[str, str], tmp_path: Path) -> None:
    sb = Sandbox.create(labels=labels, memory_mb=64)
    try:
        assert sb.write_file("/workspace/t.txt", "text").size == 4
        assert sb.read_file("t.txt") == "text"
        assert sb.read_file("t.txt", binary=True) == b"text"
        assert sb.read_bytes("t.txt") == b"text"
        assert [e.name for e in sb.list_directory()] == ["t.txt"]
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "one.txt").write_text("1")
        (tmp_path / "d" / "skip.tmp").write_text("x")
        assert sb.upload(tmp_path / "d", "/workspace/d", ignore_patterns=["*.tmp"]) == ["/workspace/d/one.txt"]
        assert [e.path for e in sb.list_files("/workspace", recursive=True)] == [
            "/workspace/d",
            "/workspace/d/one.txt",
            "/workspace/t.txt",
        ]
        got = sb.download("/workspace/d", tmp_path / "back")
        assert [p.read_text() for p in got] == ["1"]
        sb.remove_file("/workspace/d", recursive=True)
        assert [e.name for e in sb.list_directory()] == ["t.txt"]
    finally:
        final = sb.destroy()
    assert final.status is SandboxStatus.STOPPED
    assert sb.terminate().status is SandboxStatus.STOPPED  # idempotent alias
    sb.close()


def test_sync_from_local(labels: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('from local')\n")
    (tmp_path / ".gitignore").write_text("*.secret\n")
    (tmp_path / "key.secret").write_text("s")
    with Sandbox.from_local(tmp_path, labels=labels, resources=ResourceLimits(memory_mb=64)) as sb:
        assert sb.run("python3 app.py").stdout == "from local\n"
        assert sorted(e.name for e in sb.list_directory()) == [".gitignore", "app.py"]
    assert [s.status for s in Sandbox.list(labels=labels)] == [SandboxStatus.STOPPED]


def test_sync_kill_alias(labels: dict[str, str]) -> None:
    sb = Sandbox.create(labels=labels, memory_mb=64)
    assert sb.kill().status is SandboxStatus.STOPPED
    assert Sandbox.list(status="running", labels=labels) == []


def test_sync_processes_sessions_timeout_pause(labels: dict[str, str]) -> None:
    import signal

    from corral import Process, Session

    with Sandbox.create(labels=labels, memory_mb=64) as sb:
        p = sb.start_process("trap 'exit 3' TERM; echo up; while :; do sleep 0.05; done")
        assert isinstance(p, Process) and p.pid >= 1 and p["pid"] == p.pid
        for ev in sb.follow_output(p.pid):
            if ev.type == "stdout":
                assert ev["data"] == "up\n"
                break
        assert [(i.pid, i.status) for i in sb.list_processes()] == [(p.pid, "running")]
        sb.send_signal(p, signal.SIGTERM)
        assert p.wait().exit_code == 3
        assert [e.type for e in p.follow_output()][-1] == "exit"
        q = sb.start_process("sleep", ["600"])
        sb.kill_process(q.pid)
        assert q.wait().signal == 9 and q.info().status == "exited"
        with sb.session(cwd="/tmp") as s:
            assert isinstance(s, Session)
            s.exec("cd /workspace && export K=v")
            assert s.exec("pwd; echo $K").stdout == "/workspace\nv\n"
        assert sb.set_timeout(300).timeout_seconds == 300
        assert sb.pause().status == SandboxStatus.PAUSED
        assert sb.resume().status == SandboxStatus.RUNNING
