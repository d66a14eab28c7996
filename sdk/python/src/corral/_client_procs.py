"""The low-level calls for background processes (``corral.v1.Exec``) and shell sessions
(``corral.v1.Sessions``), mixed into :class:`~corral.AsyncSandboxClient`."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Optional

import grpc.aio

from .errors import InvalidArgumentError
from .processes import ProcessInfo
from .types import ExecResult
from .v1 import exec_pb2, exec_pb2_grpc, session_pb2, session_pb2_grpc


class _ProcessAndSessionCalls:
    """Needs ``_unary``, ``_metadata``, ``exec`` and ``sessions`` from the client."""

    _metadata: tuple[tuple[str, str], ...]

    async def _unary(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    @property
    def exec(self) -> exec_pb2_grpc.ExecStub:
        raise NotImplementedError  # provided by AsyncSandboxClient

    @property
    def sessions(self) -> session_pb2_grpc.SessionsStub:
        raise NotImplementedError  # provided by AsyncSandboxClient

    # ------------------------------------------------------------------ corral.v1.Exec (processes)

    async def start_process(
        self,
        sandbox_id: str,
        *,
        argv: Optional[Sequence[str]] = None,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> int:
        """``Exec.StartProcess``: starts a background process (no timeout); returns its pid."""
        from .client import AsyncSandboxClient

        base = AsyncSandboxClient._exec_request(sandbox_id, argv, shell, env, cwd, None, None)
        req = exec_pb2.StartProcessRequest(
            sandbox_id=sandbox_id, argv=base.argv, shell=base.shell, env=base.env, cwd=base.cwd
        )
        resp = await self._unary(self.exec.StartProcess, req, timeout)
        return int(resp.pid)

    async def list_processes(self, sandbox_id: str, *, timeout: Optional[float] = None) -> list[ProcessInfo]:
        """``Exec.ListProcesses``: running and exited background processes, by pid."""
        resp = await self._unary(self.exec.ListProcesses, exec_pb2.ListProcessesRequest(sandbox_id=sandbox_id), timeout)
        return [ProcessInfo.from_pb(p) for p in resp.processes]

    async def send_signal(self, sandbox_id: str, pid: int, signal: int, *, timeout: Optional[float] = None) -> None:
        """``Exec.SendSignal``: ``signal`` (a number) to the process's process group."""
        req = exec_pb2.SendSignalRequest(sandbox_id=sandbox_id, pid=_pid(pid), signal=int(signal))
        await self._unary(self.exec.SendSignal, req, timeout)

    async def kill_process(self, sandbox_id: str, pid: int, *, timeout: Optional[float] = None) -> None:
        """``Exec.KillProcess``: SIGKILLs the process's tree (a no-op once it exited)."""
        req = exec_pb2.KillProcessRequest(sandbox_id=sandbox_id, pid=_pid(pid))
        await self._unary(self.exec.KillProcess, req, timeout)

    async def follow_output(
        self, sandbox_id: str, pid: int, *, timeout: Optional[float] = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``Exec.FollowOutput``: yields ``{"type": "dropped", "bytes": n}`` (when the buffer lost
        some), ``{"type": "stdout"|"stderr", "data": bytes}`` in order, then one ``{"type": "exit",
        "exit_code", "signal", "duration_ms", "oom_killed"}``. Leaving early stops following (the
        process keeps running)."""
        from .client import _convert

        req = exec_pb2.FollowOutputRequest(sandbox_id=sandbox_id, pid=_pid(pid))
        start = time.monotonic()
        call: Any = self.exec.FollowOutput(req, metadata=self._metadata, timeout=timeout)
        done = False
        try:
            async for ev in call:
                kind = ev.WhichOneof("event")
                if kind in ("stdout", "stderr"):
                    yield {"type": kind, "data": getattr(ev, kind)}
                elif kind == "dropped_bytes":
                    yield {"type": "dropped", "bytes": ev.dropped_bytes}
                elif kind == "exit":
                    done = True
                    x = ev.exit
                    yield {
                        "type": "exit",
                        "exit_code": x.exit_code,
                        "signal": x.signal,
                        "duration_ms": x.duration_ms,
                        "oom_killed": x.oom_killed,
                    }
        except grpc.aio.AioRpcError as e:
            raise _convert(e, timeout, start) from None
        finally:
            if not done:
                call.cancel()

    # ------------------------------------------------------------------ corral.v1.Sessions

    async def open_session(
        self,
        sandbox_id: str,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """``Sessions.Open``: a shell session whose ``cd`` and ``export`` persist; its id."""
        from .client import _str_map

        req = session_pb2.OpenSessionRequest(sandbox_id=sandbox_id, cwd=cwd or "")
        req.env.update(_str_map("env", env))
        resp = await self._unary(self.sessions.Open, req, timeout)
        return str(resp.session_id)

    async def session_exec(
        self,
        session_id: str,
        command: str,
        *,
        timeout_seconds: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> ExecResult:
        """``Sessions.Exec``: runs a shell command line in the session."""
        if not isinstance(command, str):
            raise InvalidArgumentError(f"command: expected a str, got {type(command).__name__}")
        req = session_pb2.SessionExecRequest(session_id=session_id, command=command)
        if timeout_seconds is not None:
            req.timeout_seconds = float(timeout_seconds)
        resp = await self._unary(self.sessions.Exec, req, timeout)
        return ExecResult.from_pb(resp)

    async def close_session(self, session_id: str, *, timeout: Optional[float] = None) -> None:
        """``Sessions.Close``."""
        await self._unary(self.sessions.Close, session_pb2.CloseSessionRequest(session_id=session_id), timeout)


def _pid(pid: Any) -> int:
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise InvalidArgumentError(f"pid: expected an int, got {type(pid).__name__}")
    if pid < 0:
        raise InvalidArgumentError(f"pid: {pid} is negative")
    return pid
