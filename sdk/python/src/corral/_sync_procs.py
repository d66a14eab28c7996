"""The blocking mirror of the process, session, timeout and pause calls (see
:class:`~corral._sandbox_procs._SandboxProcesses`), mixed into :class:`~corral.Sandbox`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, List, Optional, Union

from ._sync_loop import iterate, run
from .processes import AsyncProcess, ProcessEvent, ProcessInfo, SignalLike
from .sandbox import AsyncSandbox
from .session import AsyncSession
from .types import ExecResult, SandboxInfo

__all__ = ["Process", "Session"]


class Process:
    """A background process (blocking API); see :class:`~corral.processes.AsyncProcess`."""

    def __init__(self, inner: AsyncProcess) -> None:
        self._inner = inner

    @property
    def pid(self) -> int:
        return self._inner.pid

    process_id = pid

    @property
    def command(self) -> str:
        return self._inner.command

    @property
    def sandbox_id(self) -> str:
        return self._inner.sandbox_id

    def __getitem__(self, key: str) -> Any:
        return self._inner[key]

    def __repr__(self) -> str:
        return f"Process(sandbox_id={self.sandbox_id!r}, pid={self.pid}, command={self.command!r})"

    def follow_output(self) -> Iterator[ProcessEvent]:
        return iterate(self._inner.follow_output())

    output = follow_output

    def send_signal(self, sig: SignalLike) -> None:
        run(self._inner.send_signal(sig))

    def kill(self) -> None:
        run(self._inner.kill())

    def info(self) -> ProcessInfo:
        return run(self._inner.info())

    def wait(self) -> ProcessEvent:
        return run(self._inner.wait())


class Session:
    """A shell session (blocking API); ``with sb.session() as s:`` closes it on exit."""

    def __init__(self, inner: AsyncSession) -> None:
        self._inner = inner

    @property
    def session_id(self) -> str:
        return self._inner.session_id

    id = session_id

    def exec(self, command: str, *, timeout: Optional[float] = None) -> ExecResult:
        return run(self._inner.exec(command, timeout=timeout))

    run = exec

    def close(self) -> None:
        run(self._inner.close())

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncProcesses:
    """Mixed into Sandbox; needs its ``_inner``."""

    _inner: AsyncSandbox

    def start_process(
        self,
        command: Union[str, Sequence[str]],
        args: Optional[Sequence[str]] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> Process:
        return Process(run(self._inner.start_process(command, args, env=env, cwd=cwd)))

    def follow_output(self, pid: Union[int, Process]) -> Iterator[ProcessEvent]:
        return iterate(self._inner.follow_output(_pid_of(pid)))

    def send_signal(self, pid: Union[int, Process], sig: SignalLike) -> None:
        run(self._inner.send_signal(_pid_of(pid), sig))

    def list_processes(self) -> List[ProcessInfo]:
        return run(self._inner.list_processes())

    def kill_process(self, pid: Union[int, Process]) -> None:
        run(self._inner.kill_process(_pid_of(pid)))

    def session(self, *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> Session:
        async def make() -> AsyncSession:
            return await self._inner.session(cwd=cwd, env=env)

        return Session(run(make()))

    def set_timeout(self, seconds: int) -> SandboxInfo:
        return run(self._inner.set_timeout(seconds))

    def pause(self) -> SandboxInfo:
        return run(self._inner.pause())

    def resume(self) -> SandboxInfo:
        return run(self._inner.resume())


def _pid_of(pid: Union[int, Process]) -> int:
    return pid.pid if isinstance(pid, Process) else pid
