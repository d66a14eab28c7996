"""Result objects of codebases: a project uploaded once (``AsyncSandboxClient.upload_codebase``)
and shown to many sandboxes, each through its own path rules (:mod:`corral.permissions`) and
writing only to its own copy-on-write layer (``AsyncSandbox.diff()`` lists what it changed)."""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, List, Optional, cast

from .permissions import PermissionRule
from .types import _ms_to_dt, _Record
from .v1 import codebase_pb2, sandbox_pb2

__all__ = [
    "Codebase",
    "CodebasePage",
    "CodebaseFile",
    "CodebaseFilePage",
    "FileKind",
    "UploadResult",
    "ChangeKind",
    "Change",
    "Diff",
    "Preset",
]


class FileKind(str, enum.Enum):
    """What a codebase entry is."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"

    def __str__(self) -> str:
        return self.value

    def to_pb(self) -> int:
        return {
            FileKind.FILE: codebase_pb2.FILE_KIND_REGULAR,
            FileKind.DIRECTORY: codebase_pb2.FILE_KIND_DIRECTORY,
            FileKind.SYMLINK: codebase_pb2.FILE_KIND_SYMLINK,
        }[self]

    @classmethod
    def from_pb(cls, value: int) -> "FileKind":
        if value == codebase_pb2.FILE_KIND_DIRECTORY:
            return cls.DIRECTORY
        if value == codebase_pb2.FILE_KIND_SYMLINK:
            return cls.SYMLINK
        return cls.FILE


@dataclass(frozen=True)
class Codebase(_Record):
    """A codebase's record (``CodebaseService.Get``)."""

    codebase_id: str
    name: str
    tenant: str
    owner: str
    labels: dict[str, str]
    #: Regular files, and the sum of their sizes.
    file_count: int
    size_bytes: int
    created_at: Optional[_dt.datetime]
    updated_at: Optional[_dt.datetime]
    #: BLAKE3 (hex) of the file list; empty before the first upload.
    digest: str
    #: Live sandboxes created on it (filled by ``get_codebase`` and uploads only).
    sandboxes: int = 0

    _aliases: ClassVar[dict[str, str]] = {"id": "codebase_id"}

    @property
    def id(self) -> str:
        return self.codebase_id

    @classmethod
    def from_pb(cls, c: codebase_pb2.Codebase) -> "Codebase":
        return cls(
            codebase_id=c.id,
            name=c.name,
            tenant=c.tenant,
            owner=c.owner,
            labels=dict(c.labels),
            file_count=c.file_count,
            size_bytes=c.size_bytes,
            created_at=_ms_to_dt(c.created_at_ms),
            updated_at=_ms_to_dt(c.updated_at_ms),
            digest=c.digest,
            sandboxes=c.sandboxes,
        )


@dataclass(frozen=True)
class CodebasePage(_Record):
    """One page of ``CodebaseService.List``; ``next_page_token`` is empty on the last page."""

    codebases: list[Codebase]
    next_page_token: str


@dataclass(frozen=True)
class CodebaseFile(_Record):
    """One entry of a codebase (``CodebaseService.ListFiles``); ``path`` is relative to its root."""

    path: str
    kind: FileKind
    mode: int
    size: int
    #: BLAKE3 (hex) of a file's content.
    digest: str = ""
    #: A symlink's (relative) target.
    link_target: str = ""

    @property
    def is_dir(self) -> bool:
        return self.kind is FileKind.DIRECTORY

    @property
    def is_file(self) -> bool:
        return self.kind is FileKind.FILE

    @property
    def is_symlink(self) -> bool:
        return self.kind is FileKind.SYMLINK

    @classmethod
    def from_pb(cls, f: codebase_pb2.CodebaseFile) -> "CodebaseFile":
        return cls(
            path=f.path,
            kind=FileKind.from_pb(f.kind),
            mode=f.mode,
            size=f.size,
            digest=f.digest,
            link_target=f.link_target,
        )


@dataclass(frozen=True)
class CodebaseFilePage(_Record):
    """One page of ``CodebaseService.ListFiles``; ``next_page_token`` is empty on the last page."""

    files: list[CodebaseFile]
    next_page_token: str


@dataclass(frozen=True)
class UploadResult(_Record):
    """What an upload did: ``files_received`` entries, ``bytes_received`` sent as data and
    ``bytes_deduplicated`` the server already held (a second upload of the same tree sends 0
    bytes); ``codebase`` is the codebase after it."""

    files_received: int
    bytes_received: int
    bytes_deduplicated: int
    codebase: Codebase

    @classmethod
    def from_pb(cls, r: codebase_pb2.UploadResponse) -> "UploadResult":
        return cls(
            files_received=r.files_received,
            bytes_received=r.bytes_received,
            bytes_deduplicated=r.bytes_deduplicated,
            codebase=Codebase.from_pb(r.codebase),
        )


class ChangeKind(str, enum.Enum):
    """How a sandbox's layer changed a path of its codebase."""

    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value

    @property
    def letter(self) -> str:
        """``A``, ``M`` or ``D`` (as ``corral sandbox diff`` prints)."""
        return self.value[0].upper()

    @classmethod
    def from_pb(cls, value: int) -> "ChangeKind":
        try:
            name = sandbox_pb2.ChangeKind.Name(cast(Any, value))
        except ValueError:
            return cls.MODIFIED
        short = name.removeprefix("CHANGE_KIND_").lower()
        return cls(short) if short in {k.value for k in cls} else cls.MODIFIED


@dataclass(frozen=True)
class Change(_Record):
    """One changed path, relative to the codebase root; ``size`` is its size after the change
    (0 for deletions and directories)."""

    path: str
    kind: ChangeKind
    file_kind: FileKind
    size: int

    @classmethod
    def from_pb(cls, c: sandbox_pb2.Change) -> "Change":
        return cls(path=c.path, kind=ChangeKind.from_pb(c.kind), file_kind=FileKind.from_pb(c.file_kind), size=c.size)


class Diff(List[Change]):
    """What a sandbox changed in its codebase (``AsyncSandbox.diff()``): a list of
    :class:`Change` in path order, with ``truncated`` set when there were more than the 10,000
    the server lists. ``added`` / ``modified`` / ``deleted`` are the paths of each kind."""

    def __init__(self, changes: Iterable[Change] = (), truncated: bool = False) -> None:
        super().__init__(changes)
        self.truncated = truncated

    def _paths(self, kind: ChangeKind) -> list[str]:
        return [c.path for c in self if c.kind is kind]

    @property
    def added(self) -> list[str]:
        return self._paths(ChangeKind.ADDED)

    @property
    def modified(self) -> list[str]:
        return self._paths(ChangeKind.MODIFIED)

    @property
    def deleted(self) -> list[str]:
        return self._paths(ChangeKind.DELETED)

    def __repr__(self) -> str:
        return f"Diff({list.__repr__(self)}, truncated={self.truncated})"

    @classmethod
    def from_pb(cls, r: sandbox_pb2.DiffSandboxResponse) -> "Diff":
        return cls((Change.from_pb(c) for c in r.changes), r.truncated)


@dataclass(frozen=True)
class Preset(_Record):
    """A permission preset (``CodebaseService.ListPresets``) and the rules it expands to."""

    name: str
    description: str
    rules: list[PermissionRule] = field(default_factory=list)

    @classmethod
    def from_pb(cls, p: codebase_pb2.Preset) -> "Preset":
        return cls(name=p.name, description=p.description, rules=[PermissionRule.from_pb(r) for r in p.rules])
