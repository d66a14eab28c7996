"""Result objects and enums.

Every result is a frozen dataclass that is also a read-only mapping: ``r.stdout`` and
``r["stdout"]`` both work, as do ``dict(r)``, ``r.keys()``, ``r.get("x")`` and ``r.to_dict()``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Union, cast

from .errors import InvalidArgumentError
from .v1 import exec_pb2, files_pb2, sandbox_pb2

if TYPE_CHECKING:  # pragma: no cover
    from .permissions import PermissionRule

__all__ = [
    "RuntimeType",
    "SandboxStatus",
    "ResourceLimits",
    "SandboxInfo",
    "ExecResult",
    "CommandResult",
    "FileInfo",
    "WriteResult",
]


class _Record(Mapping[str, Any]):
    """Attribute and mapping access to a dataclass's fields (plus a few read-only aliases)."""

    #: Extra keys accepted by ``r[key]`` (not listed by iteration): alias -> field/property name.
    _aliases: ClassVar[dict[str, str]] = {}

    def _field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key in self._field_names():
            return getattr(self, key)
        if key in self._aliases:
            return getattr(self, self._aliases[key])
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self._field_names() or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (enums become their string values, nested records dicts)."""

        def plain(v: Any) -> Any:
            if isinstance(v, enum.Enum):
                return v.value
            if isinstance(v, _Record):
                return v.to_dict()
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        return {k: plain(getattr(self, k)) for k in self._field_names()}


class RuntimeType(str, enum.Enum):
    """Which isolation technology runs a sandbox."""

    BWRAP = "bwrap"
    DOCKER = "docker"

    @classmethod
    def parse(cls, value: Union["RuntimeType", str, None]) -> Optional["RuntimeType"]:
        if value is None or isinstance(value, RuntimeType):
            return value
        try:
            return cls(str(value).lower().removeprefix("runtime_"))
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise InvalidArgumentError(f"runtime: unknown runtime {value!r} (one of {names})") from None

    def to_pb(self) -> int:
        """The wire value. Fails on the client if this SDK's protocol has no such runtime."""
        name = f"RUNTIME_{self.name}"
        try:
            return int(sandbox_pb2.Runtime.Value(name))
        except ValueError:
            supported = [
                n.removeprefix("RUNTIME_").lower() for n in sandbox_pb2.Runtime.keys() if n != "RUNTIME_UNSPECIFIED"
            ]
            raise InvalidArgumentError(
                f"runtime: {self.value!r} is not part of the corral.v1 protocol this SDK was built with "
                f"(supported: {', '.join(supported)})"
            ) from None

    @classmethod
    def from_pb(cls, value: int) -> Optional["RuntimeType"]:
        name = sandbox_pb2.Runtime.Name(cast(Any, value)) if value in sandbox_pb2.Runtime.values() else ""
        short = name.removeprefix("RUNTIME_").lower()
        try:
            return cls(short)
        except ValueError:
            return None


class SandboxStatus(str, enum.Enum):
    """Lifecycle state of a sandbox; compares equal to its lowercase name (``== "running"``)."""

    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    SCHEDULED = "scheduled"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    SNAPSHOTTING = "snapshotting"
    STOPPED = "stopped"
    FAILED = "failed"
    LOST = "lost"
    EXPIRED = "expired"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @classmethod
    def parse(cls, value: Union["SandboxStatus", str]) -> "SandboxStatus":
        if isinstance(value, SandboxStatus):
            return value
        raw = str(value).lower().removeprefix("sandbox_state_")
        try:
            return cls(raw)
        except ValueError:
            names = ", ".join(m.value for m in cls if m is not cls.UNSPECIFIED)
            raise InvalidArgumentError(f"status: unknown sandbox status {value!r} (one of {names})") from None

    def to_pb(self) -> int:
        return int(sandbox_pb2.SandboxState.Value(f"SANDBOX_STATE_{self.name}"))

    @classmethod
    def from_pb(cls, value: int) -> "SandboxStatus":
        try:
            name = sandbox_pb2.SandboxState.Name(cast(Any, value))
        except ValueError:
            return cls.UNSPECIFIED
        return cls(name.removeprefix("SANDBOX_STATE_").lower())


_TERMINAL = frozenset({SandboxStatus.STOPPED, SandboxStatus.FAILED, SandboxStatus.LOST, SandboxStatus.EXPIRED})


@dataclass(frozen=True)
class ResourceLimits:
    """Resources for a sandbox (any left as None use the server's default).

    ``memory_bytes`` is accepted as an alternative to ``memory_mb`` (rounded up to whole MiB).
    """

    cpus: Optional[float] = None
    memory_mb: Optional[int] = None
    memory_bytes: Optional[int] = None
    timeout_seconds: Optional[int] = None

    def resolved_memory_mb(self) -> Optional[int]:
        if self.memory_mb is not None and self.memory_bytes is not None:
            raise InvalidArgumentError("resources: set memory_mb or memory_bytes, not both")
        if self.memory_bytes is not None:
            return int(math.ceil(self.memory_bytes / (1024 * 1024)))
        return self.memory_mb


def _ms_to_dt(ms: int) -> Optional[_dt.datetime]:
    if not ms:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class DiskUsage(_Record):
    """Space and inodes a sandbox uses on its disk (``/workspace`` and ``/tmp``)."""

    used_bytes: int
    total_bytes: int
    used_inodes: int
    total_inodes: int


@dataclass(frozen=True)
class SandboxInfo(_Record):
    """What the server knows about a sandbox (``Sandboxes.Get``)."""

    sandbox_id: str
    name: str
    status: SandboxStatus
    runtime: Optional[RuntimeType]
    node_id: str
    cpus: float
    memory_mb: int
    timeout_seconds: int
    internet_access: bool
    labels: dict[str, str]
    workdir: str
    tenant: str
    created_at: Optional[_dt.datetime]
    started_at: Optional[_dt.datetime]
    ended_at: Optional[_dt.datetime]
    expires_at: Optional[_dt.datetime]
    termination_reason: str
    #: The image of a Docker sandbox (empty for bubblewrap).
    image: str = ""
    #: Disk quota in MiB of ``/workspace`` and ``/tmp`` together.
    disk_mb: int = 0
    #: What the sandbox uses of it, when ``info()`` asked a node that enforces quotas.
    disk_usage: Optional[DiskUsage] = None
    #: The codebase the sandbox was created on ("" for none), the preset it sees it through
    #: ("read-only" when neither preset nor rules were given), its own extra rules, and where
    #: the codebase appears.
    codebase_id: str = ""
    preset: str = ""
    permissions: list["PermissionRule"] = field(default_factory=list)
    codebase_path: str = ""
    #: Set by ``info()`` when the sandbox's codebase view failed (its permission file system
    #: died): its codebase files then answer EIO.
    codebase_error: str = ""

    _aliases: ClassVar[dict[str, str]] = {"id": "sandbox_id", "state": "status", "template": "image"}

    @property
    def id(self) -> str:
        return self.sandbox_id

    @property
    def state(self) -> SandboxStatus:
        return self.status

    @property
    def is_running(self) -> bool:
        return self.status is SandboxStatus.RUNNING

    @classmethod
    def from_pb(cls, sb: sandbox_pb2.Sandbox) -> "SandboxInfo":
        from .permissions import PermissionRule

        return cls(
            sandbox_id=sb.id,
            name=sb.name,
            status=SandboxStatus.from_pb(sb.state),
            runtime=RuntimeType.from_pb(sb.runtime),
            node_id=sb.node_id,
            cpus=sb.cpus,
            memory_mb=sb.memory_mb,
            timeout_seconds=sb.timeout_seconds,
            internet_access=sb.internet_access,
            labels=dict(sb.labels),
            workdir=sb.workdir,
            tenant=sb.tenant,
            created_at=_ms_to_dt(sb.created_at_ms),
            started_at=_ms_to_dt(sb.started_at_ms),
            ended_at=_ms_to_dt(sb.ended_at_ms),
            expires_at=_ms_to_dt(sb.expires_at_ms),
            termination_reason=sb.termination_reason,
            image=sb.image,
            disk_mb=sb.disk_mb,
            disk_usage=(
                DiskUsage(
                    used_bytes=sb.disk_usage.used_bytes,
                    total_bytes=sb.disk_usage.total_bytes,
                    used_inodes=sb.disk_usage.used_inodes,
                    total_inodes=sb.disk_usage.total_inodes,
                )
                if sb.HasField("disk_usage")
                else None
            ),
            codebase_id=sb.codebase_id,
            preset=sb.preset,
            permissions=[PermissionRule.from_pb(r) for r in sb.permissions],
            codebase_path=sb.codebase_path,
            codebase_error=sb.codebase_error,
        )


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ExecResult(_Record):
    """The outcome of one command (``Exec.Run``).

    ``stdout``/``stderr`` are decoded as UTF-8 (undecodable bytes replaced); the raw bytes are in
    ``stdout_bytes``/``stderr_bytes``. ``exit_code`` is -1 when a signal ended the command (see
    ``signal``); ``timed_out`` says the command's timeout killed it; ``truncated`` says output past
    the server's cap was dropped; ``oom_killed`` that the sandbox's memory limit was hit while it
    ran (reported by servers whose protocol has the field, else always False).
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    truncated: bool = False
    duration_ms: int = 0
    signal: int = 0
    oom_killed: bool = False
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)

    _aliases: ClassVar[dict[str, str]] = {"exitCode": "exit_code", "success": "success"}

    @property
    def success(self) -> bool:
        """True when the command exited 0 and was not killed by its timeout."""
        return self.exit_code == 0 and not self.timed_out

    ok = success

    @property
    def output(self) -> str:
        """stdout followed by stderr."""
        return self.stdout + self.stderr

    @classmethod
    def from_pb(cls, r: exec_pb2.ExecResponse) -> "ExecResult":
        return cls(
            stdout=_decode(r.stdout),
            stderr=_decode(r.stderr),
            exit_code=r.exit_code,
            timed_out=r.timed_out,
            truncated=r.truncated,
            duration_ms=r.duration_ms,
            signal=r.signal,
            oom_killed=bool(getattr(r, "oom_killed", False)),
            stdout_bytes=r.stdout,
            stderr_bytes=r.stderr,
        )


CommandResult = ExecResult


@dataclass(frozen=True)
class FileInfo(_Record):
    """One directory entry (``Files.List``)."""

    name: str
    path: str
    is_dir: bool
    is_symlink: bool
    size: int
    mode: int
    modified_at: Optional[_dt.datetime]

    @property
    def type(self) -> str:
        """``"dir"``, ``"symlink"`` or ``"file"``."""
        return "dir" if self.is_dir else "symlink" if self.is_symlink else "file"

    @property
    def is_file(self) -> bool:
        return not self.is_dir and not self.is_symlink

    _aliases: ClassVar[dict[str, str]] = {"type": "type", "is_file": "is_file"}

    @classmethod
    def from_pb(cls, e: files_pb2.FileEntry, parent: str) -> "FileInfo":
        path = parent.rstrip("/") + "/" + e.name if parent not in ("", ".") else e.name
        return cls(
            name=e.name,
            path=path,
            is_dir=e.is_dir,
            is_symlink=e.is_symlink,
            size=e.size,
            mode=e.mode,
            modified_at=_ms_to_dt(e.mtime_ms),
        )


@dataclass(frozen=True)
class WriteResult(_Record):
    """What ``write_file`` wrote."""

    path: str
    size: int
