"""The background process, session, timeout and pause calls of :class:`~corral.AsyncSandbox`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, List, Optional, Union

from .processes import AsyncProcess, ProcessEvent, ProcessInfo, SignalLike, decode_events, parse_signal
from .session import SessionOpening, open_session
from .types import SandboxInfo

if TYPE_CHECKING:  # pragma: no cover
    from .client import AsyncSandboxClient


class _SandboxProcesses:
    """Mixed into AsyncSandbox; needs its ``_client``, ``sandbox_id``, ``_info`` and ``_command``."""

    _info: SandboxInfo

    @property
    def _client(self) -> "AsyncSandboxClient":
        raise NotImplementedError  # provided by AsyncSandbox

    @property
    def sandbox_id(self) -> str:
        raise NotImplementedError  # provided by AsyncSandbox

    @staticmethod
    def _command(command: Union[str, Sequence[str]], args: Optional[Sequence[str]]) -> dict[str, Any]:
        raise NotImplementedError  # provided by AsyncSandbox

    # ------------------------------------------------------------------ background processes

    async def start_process(
        self,
        command: Union[str, Sequence[str]],
        args: Optional[Sequence[str]] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> AsyncProcess:
        """Starts a background process (a shell command line, or a program with ``args``): it runs
        until it exits or the sandbox is destroyed, with no timeout. Returns a handle with ``pid``."""
        spec = self._command(command, args)
        pid = await self._client.start_process(self.sandbox_id, **spec, env=env, cwd=cwd)
        shown = spec["shell"] if "shell" in spec else " ".join(spec["argv"])
        return AsyncProcess(self._client, self.sandbox_id, pid, shown)

    def follow_output(self, pid: Union[int, AsyncProcess]) -> AsyncIterator[ProcessEvent]:
        """A process's output so far (the last 1 MiB; a ``dropped`` event says how much is gone),
        then its live output, then one ``exit`` event. Events are :class:`ProcessEvent` records
        (``ev.type``, ``ev["data"]``). Leaving the loop early does not stop the process."""
        return decode_events(self._client.follow_output(self.sandbox_id, _pid_of(pid)))

    async def send_signal(self, pid: Union[int, AsyncProcess], sig: SignalLike) -> None:
        """Sends ``sig`` (``signal.SIGTERM``, ``15`` or ``"TERM"``) to the process's process group."""
        await self._client.send_signal(self.sandbox_id, _pid_of(pid), parse_signal(sig))

    async def list_processes(self) -> List[ProcessInfo]:
        """The sandbox's background processes, running and exited."""
        return await self._client.list_processes(self.sandbox_id)

    async def kill_process(self, pid: Union[int, AsyncProcess]) -> None:
        """SIGKILLs the process and everything it started (a no-op once it exited)."""
        await self._client.kill_process(self.sandbox_id, _pid_of(pid))

    # ------------------------------------------------------------------ sessions

    def session(self, *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> SessionOpening:
        """Opens a shell session: ``async with sb.session() as s`` or ``s = await sb.session()``."""
        return open_session(self._client, self.sandbox_id, cwd, env)

    # ------------------------------------------------------------------ lifetime

    async def set_timeout(self, seconds: int) -> SandboxInfo:
        """Resets the sandbox's lifetime: it is destroyed (EXPIRED) ``seconds`` from now."""
        self._info = await self._client.set_sandbox_timeout(self.sandbox_id, seconds)
        return self._info

    async def pause(self) -> SandboxInfo:
        """Freezes every process of the sandbox; commands and file calls are refused until resume."""
        self._info = await self._client.pause_sandbox(self.sandbox_id)
        return self._info

    async def resume(self) -> SandboxInfo:
        self._info = await self._client.resume_sandbox(self.sandbox_id)
        return self._info


def _pid_of(pid: Union[int, AsyncProcess]) -> int:
    return pid.pid if isinstance(pid, AsyncProcess) else pid
