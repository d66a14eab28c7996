"""Writing a codebase download to disk: one file's bytes, or a directory's tar stream extracted
safely into a destination directory.

Every member's name is checked before anything is written: absolute names, ``..`` segments,
symlinks that are absolute or leave the tree, hard links and special files are refused with a
:class:`~corral.DownloadError` naming the member. While extracting, each entry's parent must
also resolve (following the symlinks made so far) inside the destination, and a symlink that
resolves outside it is removed and refused, so a symlink cannot be used to write elsewhere.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Optional

from ._codebase_upload import link_problem
from .errors import DownloadError

__all__ = ["member_path", "extract_tar", "file_target"]


def member_path(m: tarfile.TarInfo) -> Optional[str]:
    """The normalized relative path of a tar member (None for the root itself); raises
    DownloadError for a member that could land outside the destination or is not a file,
    directory or symlink."""
    name = m.name
    if "\0" in name:
        raise DownloadError(repr(name), "contains a NUL byte")
    if name.startswith("/"):
        raise DownloadError(name, "is an absolute path; it would land outside the destination")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(name, "has a '..' segment; it would land outside the destination")
    if m.islnk():
        raise DownloadError(name, "is a hard link; codebases hold none")
    if not (m.isreg() or m.isdir() or m.issym()):
        raise DownloadError(name, "is a device, fifo or other special file")
    if not parts:
        if m.isdir():
            return None
        raise DownloadError(name, "has an empty path")
    rel = "/".join(parts)
    if m.issym():
        problem = link_problem(rel, m.linkname)
        if problem is not None:
            raise DownloadError(rel, problem)
    return rel


def _inside(p: Path, root: Path) -> bool:
    real = Path(os.path.realpath(p))
    return real == root or root in real.parents


def _clear(target: Path) -> None:
    """Removes a file or symlink at ``target`` (so writing never follows an old symlink)."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()


def extract_tar(fileobj: IO[bytes], dest: Path) -> list[Path]:
    """Extracts a tar archive (a seekable file object) into ``dest`` (created if missing); returns
    the paths made, in the archive's order. Blocking: run it in a thread."""
    if dest.exists() and not dest.is_dir():
        raise DownloadError(str(dest), "is not a directory (a directory download extracts into one)")
    dest.mkdir(parents=True, exist_ok=True)
    root = Path(os.path.realpath(dest))
    with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
        plan: list[tuple[tarfile.TarInfo, str]] = []
        for m in tar.getmembers():
            rel = member_path(m)
            if rel is not None:
                plan.append((m, rel))
        written: list[Path] = []
        dirs: list[tuple[Path, int]] = []
        for m, rel in plan:
            target = root.joinpath(*rel.split("/"))
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if not _inside(target.parent, root):
                    raise DownloadError(rel, "its parent resolves outside the destination (through a symlink)")
                if m.isdir():
                    if target.is_symlink():
                        target.unlink()
                    target.mkdir(exist_ok=True)
                    dirs.append((target, m.mode & 0o777))
                elif m.issym():
                    _clear(target)
                    os.symlink(m.linkname, target)
                    if not _inside(target, root):
                        target.unlink()
                        raise DownloadError(
                            rel, f"is a symlink to {m.linkname}, which resolves outside the destination"
                        )
                else:
                    _clear(target)
                    src = tar.extractfile(m)
                    if src is None:  # pragma: no cover - a regular member always has a file object
                        raise DownloadError(rel, "has no content")
                    with src, open(target, "wb") as out:
                        while True:
                            block = src.read(1 << 20)
                            if not block:
                                break
                            out.write(block)
                    os.chmod(target, m.mode & 0o777)
            except OSError as e:
                raise DownloadError(rel, f"cannot be written to {target} ({e.strerror or e})") from None
            written.append(target)
        # Directory modes last, deepest first, so a read-only directory did not block its contents.
        for d, mode in reversed(dirs):
            os.chmod(d, mode)
    return written


def file_target(dest: Path, path: str) -> Path:
    """Where a single-file download goes: into ``dest`` when it is a directory (under the file's
    name), else ``dest`` itself (parents created)."""
    if dest.is_dir():
        return dest / PurePosixPath(path).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest
