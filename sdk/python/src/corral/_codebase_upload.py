"""Uploading a local directory as a codebase.

:func:`scan` walks the directory (honouring ``.gitignore`` files, skipping :data:`DEFAULT_IGNORED_DIRS`
and secrets files unless asked) and refuses what a codebase cannot hold — hard links, devices,
fifos, sockets, symlinks that are absolute or leave the tree, set-id or sticky bits, names that are
not UTF-8 — with an :class:`~corral.UploadError` naming the path, before anything is sent. It also
takes each file's BLAKE3 digest. :func:`messages` then makes the ``Upload`` stream: a ``start``,
then per entry an ``UploadFile`` header and, for a file whose content the server lacks (asked
with ``MissingContent``), ``data`` messages of at most 1 MiB totalling exactly its size; content
the server holds, or that this upload already sent, goes ``by_reference``. So a second upload of
the same tree, or one resumed after a failure, sends almost nothing.

The scan reads files and is blocking: callers run it in a thread (``asyncio.to_thread``), and the
upload reads each piece in a thread too, so the event loop is never blocked by the disk.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Union

import blake3

from . import _ignore
from .codebases import FileKind
from .errors import InvalidArgumentError, UploadError
from .v1 import codebase_pb2

__all__ = [
    "DEFAULT_IGNORED_DIRS",
    "LocalEntry",
    "Progress",
    "scan",
    "is_secret",
    "link_problem",
    "messages",
    "ask_batches",
]

#: Directories skipped unless ``include_ignored=True`` (at any depth).
DEFAULT_IGNORED_DIRS = (".git", "node_modules", "__pycache__", ".venv")
#: Bytes per ``data`` message.
PIECE = 1 << 20
#: Digests asked about per ``MissingContent`` call.
ASK_BATCH = 5000
#: Longest path inside a codebase, in bytes (the server's limit).
MAX_PATH_BYTES = 4096

#: ``progress(files_done, files_total, bytes_done, bytes_total)``, called after each entry; it may
#: return an awaitable, which is awaited.
Progress = Callable[[int, int, int, int], Union[None, Awaitable[None]]]


@dataclass(frozen=True)
class LocalEntry:
    """One entry to upload."""

    #: Relative to the scanned directory, '/'-separated.
    path: str
    kind: FileKind
    #: Permission bits only (0o777 at most).
    mode: int
    size: int
    #: BLAKE3 (hex) of a file's content; empty otherwise.
    digest: str
    #: A symlink's target (relative, inside the tree); empty otherwise.
    link_target: str
    local: Path


def is_secret(name: str, is_dir: bool) -> bool:
    """Whether a name is a secrets file (``.env*``, ``*.key``, ``*.pem``, ``credentials*``) or a
    ``secrets`` directory: not uploaded unless ``include_secrets=True``."""
    if is_dir:
        return name == "secrets"
    return name.startswith(".env") or name.endswith((".key", ".pem")) or name.startswith("credentials")


def link_problem(rel: str, target: str) -> Optional[str]:
    """Why the symlink at ``rel`` (relative) pointing at ``target`` cannot be uploaded, or None:
    the target must be relative and, resolved from the link's directory, stay inside the tree."""
    if not target:
        return "is a symlink with an empty target"
    if target.startswith("/"):
        return f"is a symlink to the absolute path {target}; it would leave the tree"
    at = rel.split("/")[:-1]
    for seg in target.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not at:
                return f"is a symlink to {target}, which leaves the tree"
            at.pop()
        else:
            at.append(seg)
    return None


def _utf8(rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise UploadError(rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), "its name is not UTF-8")
    if len(rel.encode("utf-8")) > MAX_PATH_BYTES:
        raise UploadError(rel[:120] + "…", f"the path is longer than {MAX_PATH_BYTES} bytes")


def _digest(local: Path, rel: str) -> str:
    h = blake3.blake3()
    try:
        with open(local, "rb") as f:
            while True:
                block = f.read(PIECE)
                if not block:
                    break
                h.update(block)
    except OSError as e:
        raise UploadError(rel, f"cannot be read ({e.strerror or e})") from None
    return h.hexdigest()


def scan(
    root: Union[str, "os.PathLike[str]"],
    *,
    include_ignored: bool = False,
    include_secrets: bool = False,
    ignore_patterns: Optional[Iterable[str]] = None,
) -> list[LocalEntry]:
    """The entries of ``root`` to upload, parents before children, in name order, with digests.

    Skipped: what ``.gitignore`` files exclude and :data:`DEFAULT_IGNORED_DIRS` (both kept with
    ``include_ignored=True``), secrets files (see :func:`is_secret`; kept with
    ``include_secrets=True``), and ``ignore_patterns`` (gitignore syntax, always applied).
    Raises :class:`~corral.UploadError` for the first entry a codebase cannot hold."""
    base = Path(root)
    if not base.is_dir():
        raise InvalidArgumentError(f"path: {str(root)!r} is not a local directory")
    base = base.resolve()
    spec = _ignore.IgnoreSpec()
    if ignore_patterns is not None:
        if isinstance(ignore_patterns, str):
            ignore_patterns = [ignore_patterns]
        spec.user_rules.extend(_ignore.parse_rules(ignore_patterns))
    out: list[LocalEntry] = []

    def read_gitignore(directory: Path, rel_dir: str) -> None:
        if include_ignored:
            return
        gi = directory / ".gitignore"
        if gi.is_file() and not gi.is_symlink():
            lines = gi.read_text(encoding="utf-8", errors="replace").splitlines()
            spec.git_rules.extend(_ignore.parse_rules(lines, rel_dir))

    def walk(directory: Path, rel_dir: str) -> None:
        read_gitignore(directory, rel_dir)
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise UploadError(rel_dir or ".", f"cannot be listed ({e.strerror or e})") from None
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            local = Path(child.path)
            try:
                st = os.lstat(local)
            except OSError as e:
                raise UploadError(rel, f"cannot be examined ({e.strerror or e})") from None
            is_dir = stat.S_ISDIR(st.st_mode)
            if not include_ignored and is_dir and child.name in DEFAULT_IGNORED_DIRS:
                continue
            if not include_secrets and is_secret(child.name, is_dir):
                continue
            if spec.is_ignored(rel, is_dir):
                continue
            _utf8(rel)
            mode = st.st_mode & 0o777
            if is_dir:
                out.append(LocalEntry(rel, FileKind.DIRECTORY, mode, 0, "", "", local))
                walk(local, rel)
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(local)
                except OSError as e:
                    raise UploadError(rel, f"cannot be read ({e.strerror or e})") from None
                try:
                    target.encode("utf-8")
                except UnicodeEncodeError:
                    raise UploadError(rel, "is a symlink whose target is not UTF-8") from None
                problem = link_problem(rel, target)
                if problem is not None:
                    raise UploadError(rel, problem)
                out.append(LocalEntry(rel, FileKind.SYMLINK, mode, 0, "", target, local))
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    raise UploadError(rel, "is a hard link (a codebase holds one path per file); copy it instead")
                if st.st_mode & 0o7000:
                    raise UploadError(rel, "has set-id or sticky bits")
                out.append(LocalEntry(rel, FileKind.FILE, mode, st.st_size, _digest(local, rel), "", local))
            else:
                raise UploadError(rel, "is a device, fifo or socket; only files, directories and symlinks are uploaded")

    walk(base, "")
    return out


async def _call(progress: Progress, *args: int) -> None:
    result = progress(*args)
    if inspect.isawaitable(result):
        await result


async def _read(f: BinaryIO, n: int) -> bytes:
    return await asyncio.to_thread(f.read, n)


async def messages(
    codebase_id: str,
    replace: bool,
    entries: Sequence[LocalEntry],
    missing: set[str],
    progress: Optional[Progress] = None,
) -> AsyncGenerator[codebase_pb2.UploadRequest, None]:
    """The ``Upload`` stream for ``entries``: content in ``missing`` (digests the server lacks) is
    sent once, everything else by reference. Raises :class:`~corral.UploadError` when a file
    changed or vanished since the scan."""
    yield codebase_pb2.UploadRequest(start=codebase_pb2.UploadStart(codebase_id=codebase_id, replace=replace))
    files_total = len(entries)
    bytes_total = sum(e.size for e in entries)
    files_done = bytes_done = 0
    sent: set[str] = set()
    for e in entries:
        regular = e.kind is FileKind.FILE
        by_reference = regular and e.size > 0 and (e.digest not in missing or e.digest in sent)
        yield codebase_pb2.UploadRequest(
            file=codebase_pb2.UploadFile(
                path=e.path,
                kind=e.kind.to_pb(),  # type: ignore[arg-type]
                mode=e.mode,
                size=e.size,
                digest=e.digest,
                by_reference=by_reference,
                link_target=e.link_target,
            )
        )
        if regular and not by_reference and e.size > 0:
            async for piece in _pieces(e):
                yield codebase_pb2.UploadRequest(data=piece)
            sent.add(e.digest)
        files_done += 1
        bytes_done += e.size
        if progress is not None:
            await _call(progress, files_done, files_total, bytes_done, bytes_total)


async def _pieces(e: LocalEntry) -> AsyncIterator[bytes]:
    try:
        f: BinaryIO = await asyncio.to_thread(open, e.local, "rb")
    except OSError as err:
        raise UploadError(e.path, f"cannot be read ({err.strerror or err})") from None
    try:
        left = e.size
        while left > 0:
            try:
                piece = await _read(f, min(PIECE, left))
            except OSError as err:
                raise UploadError(e.path, f"cannot be read ({err.strerror or err})") from None
            if not piece:
                raise UploadError(e.path, f"changed while uploading (now shorter than the {e.size} bytes scanned)")
            left -= len(piece)
            yield piece
    finally:
        await asyncio.to_thread(f.close)


def ask_batches(entries: Iterable[LocalEntry]) -> list[list[str]]:
    """The files' distinct digests, sorted, in batches for ``MissingContent``."""
    digests = sorted({e.digest for e in entries if e.kind is FileKind.FILE and e.size > 0})
    return [digests[i : i + ASK_BATCH] for i in range(0, len(digests), ASK_BATCH)]
