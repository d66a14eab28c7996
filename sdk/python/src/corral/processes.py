"""Background processes: :class:`ProcessInfo` (``list_processes``), :class:`ProcessEvent`
(``follow_output``) and :class:`AsyncProcess`, the handle ``start_process`` returns."""

from __future__ import annotations

import codecs
import datetime as _dt
import signal as _signal
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Union

from .errors import InvalidArgumentError
from .types import _Record
from .v1 import exec_pb2

if TYPE_CHECKING:  # pragma: no cover
    from .client import AsyncSandboxClient

__all__ = ["ProcessInfo", "ProcessEvent", "AsyncProcess", "parse_signal"]

SignalLike = Union[int, str, _signal.Signals]


def parse_signal(sig: SignalLike) -> int:
    """A signal number from ``signal.SIGTERM``, ``15``, ``"SIGTERM"`` or ``"TERM"``."""
    if isinstance(sig, bool):
        raise InvalidArgumentError(f"signal: {sig!r} is not a signal")
    if isinstance(sig, int):
        return int(sig)
    if isinstance(sig, str):
        name = sig.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        try:
            return int(_signal.Signals[name])
        except KeyError:
            raise InvalidArgumentError(f"signal: unknown signal name {sig!r}") from None
    raise InvalidArgumentError(f"signal: expected an int, a signal.Signals or a name, got {type(sig).__name__}")


def _ms(ms: int) -> Optional[_dt.datetime]:
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc) if ms > 0 else None


@dataclass(frozen=True)
class ProcessInfo(_Record):
    """One background process (``Exec.ListProcesses``). ``status`` is ``"running"`` or
    ``"exited"``; ``exit_code`` is None while it runs and -1 when a signal ended it (``signal``)."""

    pid: int
    command: str
    status: str
    exit_code: Optional[int]
    signal: int
    started_at: Optional[_dt.datetime]
    ended_at: Optional[_dt.datetime]

    _aliases: ClassVar[dict[str, str]] = {"process_id": "pid", "running": "running"}

    @property
    def process_id(self) -> int:
        return self.pid

    @property
    def running(self) -> bool:
        return self.status == "running"

    @classmethod
    def from_pb(cls, p: exec_pb2.ProcessInfo) -> "ProcessInfo":
        exited = p.status == exec_pb2.PROCESS_STATUS_EXITED
        return cls(
            pid=p.pid,
            command=p.command,
            status="exited" if exited else "running",
            exit_code=p.exit.exit_code if exited else None,
            signal=p.exit.signal if exited else 0,
            started_at=_ms(p.started_at_ms),
            ended_at=_ms(p.ended_at_ms),
        )


@dataclass(frozen=True)
class ProcessEvent(_Record):
    """One event of ``follow_output``: ``type`` is ``"stdout"`` / ``"stderr"`` (``data``, decoded
    text; ``raw``, the bytes), ``"dropped"`` (``dropped_bytes`` of earlier output were lost: the
    server keeps the last 1 MiB) or, last, ``"exit"`` (``exit_code``, ``signal``, ``duration_ms``,
    ``oom_killed``)."""

    type: str
    data: str = ""
    exit_code: Optional[int] = None
    signal: int = 0
    duration_ms: int = 0
    oom_killed: bool = False
    dropped_bytes: int = 0
    raw: bytes = field(default=b"", repr=False)


async def decode_events(raw_events: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[ProcessEvent]:
    """Turns the low-level client's follow events into :class:`ProcessEvent` records, decoding
    UTF-8 incrementally per stream (a character split across chunks is not mangled)."""
    decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in ("stdout", "stderr")}
    try:
        async for ev in raw_events:
            kind = ev["type"]
            if kind in decoders:
                yield ProcessEvent(type=kind, data=decoders[kind].decode(ev["data"]), raw=ev["data"])
            elif kind == "dropped":
                yield ProcessEvent(type="dropped", dropped_bytes=ev["bytes"])
            else:
                for name, dec in decoders.items():
                    rest = dec.decode(b"", final=True)
                    if rest:
                        yield ProcessEvent(type=name, data=rest)
                yield ProcessEvent(
                    type="exit",
                    exit_code=ev["exit_code"],
                    signal=ev["signal"],
                    duration_ms=ev["duration_ms"],
                    oom_killed=ev["oom_killed"],
                )
    finally:
        await raw_events.aclose()


class AsyncProcess(Mapping[str, Any]):
    """A background process of a sandbox: ``pid`` (also ``p["pid"]``) and shortcuts to the
    sandbox's process calls."""

    def __init__(self, client: "AsyncSandboxClient", sandbox_id: str, pid: int, command: str) -> None:
        self._client = client
        self.sandbox_id = sandbox_id
        self.pid = pid
        self.command = command

    @property
    def process_id(self) -> int:
        return self.pid

    def _as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "command": self.command, "sandbox_id": self.sandbox_id}

    def __getitem__(self, key: str) -> Any:
        return self.pid if key == "process_id" else self._as_dict()[key]

    def __iter__(self) -> Any:
        return iter(self._as_dict())

    def __len__(self) -> int:
        return 3

    def __repr__(self) -> str:
        return f"AsyncProcess(sandbox_id={self.sandbox_id!r}, pid={self.pid}, command={self.command!r})"

    def follow_output(self) -> AsyncIterator[ProcessEvent]:
        """The output so far, then live output, then one ``exit`` event."""
        return decode_events(self._client.follow_output(self.sandbox_id, self.pid))

    output = follow_output

    async def send_signal(self, sig: SignalLike) -> None:
        await self._client.send_signal(self.sandbox_id, self.pid, parse_signal(sig))

    async def kill(self) -> None:
        await self._client.kill_process(self.sandbox_id, self.pid)

    async def info(self) -> ProcessInfo:
        for p in await self._client.list_processes(self.sandbox_id):
            if p.pid == self.pid:
                return p
        from .errors import NotFoundError

        raise NotFoundError(f"process {self.pid} is no longer listed in sandbox {self.sandbox_id}")

    async def wait(self) -> ProcessEvent:
        """Waits for the process to exit; returns the ``exit`` event."""
        async for ev in self.follow_output():
            if ev.type == "exit":
                return ev
        raise InvalidArgumentError("the output stream ended without an exit event")  # pragma: no cover
