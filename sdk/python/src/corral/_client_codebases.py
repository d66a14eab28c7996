"""The low-level calls of ``corral.v1.CodebaseService`` and ``Sandboxes.Diff``, mixed into
:class:`~corral.AsyncSandboxClient`."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Optional, Union

import grpc
import grpc.aio

from . import _codebase_download, _codebase_upload
from ._codebase_upload import Progress
from .codebases import Codebase, CodebaseFilePage, CodebasePage, CodebaseFile, Diff, Preset, UploadResult
from .errors import DownloadError
from .v1 import codebase_pb2, codebase_pb2_grpc, sandbox_pb2

StrPath = Union[str, "os.PathLike[str]"]


class _CodebaseCalls:
    """Needs ``_unary``, ``_metadata``, ``_ensure_channel`` and ``sandboxes`` from the client."""

    _metadata: tuple[tuple[str, str], ...]
    _codebases: Optional[codebase_pb2_grpc.CodebaseServiceStub] = None

    async def _unary(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    def _ensure_channel(self) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    @property
    def sandboxes(self) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    @property
    def codebases(self) -> codebase_pb2_grpc.CodebaseServiceStub:
        """The generated ``corral.v1.CodebaseService`` stub."""
        channel = self._ensure_channel()
        if self._codebases is None:
            self._codebases = codebase_pb2_grpc.CodebaseServiceStub(channel)
        return self._codebases

    # ------------------------------------------------------------------ records

    async def create_codebase(
        self,
        name: str,
        owner: str = "",
        labels: Optional[Mapping[str, str]] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Codebase:
        """``CodebaseService.Create``: an empty codebase (fill it with :meth:`upload_codebase`).
        ``name`` is 1..=128 characters."""
        from .client import _set, _str_map

        req = codebase_pb2.CreateCodebaseRequest()
        _set(req, "name", name)
        _set(req, "owner", owner)
        req.labels.update(_str_map("labels", labels))
        resp = await self._unary(self.codebases.Create, req, timeout)
        return Codebase.from_pb(resp.codebase)

    async def get_codebase(self, codebase_id: str, *, timeout: Optional[float] = None) -> Codebase:
        """``CodebaseService.Get`` (with ``sandboxes``, the live sandboxes using it)."""
        resp = await self._unary(self.codebases.Get, codebase_pb2.GetCodebaseRequest(id=codebase_id), timeout)
        return Codebase.from_pb(resp.codebase)

    async def list_codebases(
        self,
        labels: Optional[Mapping[str, str]] = None,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: Optional[float] = None,
    ) -> CodebasePage:
        """``CodebaseService.List``: one page of the codebases carrying all of ``labels``
        (``page_size`` 1..1000, 0 = 100)."""
        from .client import _set, _str_map

        req = codebase_pb2.ListCodebasesRequest(page_token=page_token)
        _set(req, "page_size", page_size)
        req.labels.update(_str_map("labels", labels))
        resp = await self._unary(self.codebases.List, req, timeout)
        return CodebasePage(
            codebases=[Codebase.from_pb(c) for c in resp.codebases], next_page_token=resp.next_page_token
        )

    async def iter_codebases(
        self,
        labels: Optional[Mapping[str, str]] = None,
        *,
        page_size: int = 0,
        limit: Optional[int] = None,
    ) -> AsyncIterator[Codebase]:
        """Every codebase carrying all of ``labels`` (at most ``limit``), one page at a time."""
        token, seen = "", 0
        while limit is None or seen < limit:
            size = page_size if limit is None else min(page_size or 100, limit - seen)
            page = await self.list_codebases(labels, page_size=size, page_token=token)
            for cb in page.codebases[: None if limit is None else limit - seen]:
                seen += 1
                yield cb
            token = page.next_page_token
            if not token:
                return

    async def delete_codebase(
        self, codebase_id: str, force: bool = False, *, timeout: Optional[float] = None
    ) -> Codebase:
        """``CodebaseService.Delete``: refused (FailedPreconditionError, naming them) while live
        sandboxes use it, unless ``force`` (they keep their node's copy until they end)."""
        req = codebase_pb2.DeleteCodebaseRequest(id=codebase_id, force=bool(force))
        resp = await self._unary(self.codebases.Delete, req, timeout)
        return Codebase.from_pb(resp.codebase)

    async def list_presets(self, *, timeout: Optional[float] = None) -> list[Preset]:
        """``CodebaseService.ListPresets``: the permission presets and the rules each expands to."""
        resp = await self._unary(self.codebases.ListPresets, codebase_pb2.ListPresetsRequest(), timeout)
        return [Preset.from_pb(p) for p in resp.presets]

    # ------------------------------------------------------------------ upload

    async def missing_content(
        self, codebase_id: str, digests: Iterable[str], *, timeout: Optional[float] = None
    ) -> set[str]:
        """``CodebaseService.MissingContent``: which of ``digests`` (BLAKE3, hex) the store lacks,
        asked in batches of at most 5,000."""
        wanted = sorted(set(digests))
        missing: set[str] = set()
        for i in range(0, len(wanted), _codebase_upload.ASK_BATCH):
            req = codebase_pb2.MissingContentRequest(
                codebase_id=codebase_id, digests=wanted[i : i + _codebase_upload.ASK_BATCH]
            )
            resp = await self._unary(self.codebases.MissingContent, req, timeout)
            missing.update(resp.digests)
        return missing

    async def upload_codebase(
        self,
        codebase_id: str,
        path: StrPath,
        replace: bool = True,
        include_ignored: bool = False,
        include_secrets: bool = False,
        progress: Optional[Progress] = None,
        *,
        ignore_patterns: Optional[Iterable[str]] = None,
        timeout: Optional[float] = None,
    ) -> UploadResult:
        """Uploads the local directory ``path`` into the codebase; with ``replace`` (the default)
        it becomes the whole tree, otherwise files are added and replaced.

        Skipped: what ``.gitignore`` files exclude and ``.git/``, ``node_modules/``,
        ``__pycache__/``, ``.venv/`` (kept with ``include_ignored=True``); secrets files
        (``.env*``, ``*.key``, ``*.pem``, ``credentials*``, ``secrets/`` directories; kept with
        ``include_secrets=True``, and then hidden by the ``agent-safe`` preset); and
        ``ignore_patterns`` (gitignore syntax). Hard links, devices, fifos, sockets, symlinks that
        are absolute or leave the tree and set-id bits raise :class:`~corral.UploadError` naming
        the path, before anything is sent.

        Only content the server lacks is sent (``MissingContent``), so uploading the same tree
        again sends 0 bytes. ``progress(files_done, files_total, bytes_done, bytes_total)`` is
        called after each entry. Files are read in a thread. ``timeout`` is the deadline of each
        call. Nothing changes in the codebase unless the whole upload succeeds."""
        entries = await asyncio.to_thread(
            _codebase_upload.scan,
            path,
            include_ignored=include_ignored,
            include_secrets=include_secrets,
            ignore_patterns=ignore_patterns,
        )
        return await self.upload_entries(codebase_id, entries, replace, progress, timeout=timeout)

    async def upload_entries(
        self,
        codebase_id: str,
        entries: list[_codebase_upload.LocalEntry],
        replace: bool = True,
        progress: Optional[Progress] = None,
        *,
        timeout: Optional[float] = None,
    ) -> UploadResult:
        """``CodebaseService.Upload`` of already scanned ``entries`` (see :meth:`upload_codebase`)."""
        from .client import _convert

        wanted = [d for batch in _codebase_upload.ask_batches(entries) for d in batch]
        missing = await self.missing_content(codebase_id, wanted, timeout=timeout) if wanted else set()
        stream = _codebase_upload.messages(codebase_id, bool(replace), entries, missing, progress)
        start = time.monotonic()
        call: Any = self.codebases.Upload(metadata=self._metadata, timeout=timeout)
        try:
            async for msg in stream:
                if call.done():
                    break  # the server ended the call early: its status says why
                try:
                    await call.write(msg)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    break
            else:
                await call.done_writing()
            resp = await call
        except grpc.aio.AioRpcError as e:
            raise _convert(e, timeout, start) from None
        except BaseException:
            call.cancel()
            raise
        finally:
            await stream.aclose()
        return UploadResult.from_pb(resp)

    # ------------------------------------------------------------------ files

    async def list_codebase_files(
        self,
        codebase_id: str,
        prefix: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: Optional[float] = None,
    ) -> CodebaseFilePage:
        """``CodebaseService.ListFiles``: one page of the entries under the directory ``prefix``
        (all when empty), in path order (``page_size`` 1..10000, 0 = 1000)."""
        from .client import _set

        req = codebase_pb2.ListCodebaseFilesRequest(codebase_id=codebase_id, page_token=page_token)
        _set(req, "prefix", prefix)
        _set(req, "page_size", page_size)
        resp = await self._unary(self.codebases.ListFiles, req, timeout)
        return CodebaseFilePage(
            files=[CodebaseFile.from_pb(f) for f in resp.files], next_page_token=resp.next_page_token
        )

    async def iter_codebase_files(
        self, codebase_id: str, prefix: str = "", *, page_size: int = 0
    ) -> AsyncIterator[CodebaseFile]:
        """Every entry under ``prefix``, one page fetched at a time."""
        token = ""
        while True:
            page = await self.list_codebase_files(codebase_id, prefix, page_size=page_size, page_token=token)
            for f in page.files:
                yield f
            token = page.next_page_token
            if not token:
                return

    async def _download(
        self, codebase_id: str, path: str, timeout: Optional[float]
    ) -> AsyncGenerator[Union[codebase_pb2.DownloadHeader, bytes], None]:
        """``CodebaseService.Download``: the header, then the data pieces."""
        from .client import _convert

        req = codebase_pb2.DownloadCodebaseRequest(codebase_id=codebase_id, path=path)
        start = time.monotonic()
        call: Any = self.codebases.Download(req, metadata=self._metadata, timeout=timeout)
        try:
            async for chunk in call:
                kind = chunk.WhichOneof("item")
                if kind == "header":
                    yield chunk.header
                elif kind == "data":
                    yield chunk.data
        except grpc.aio.AioRpcError as e:
            raise _convert(e, timeout, start) from None
        finally:
            call.cancel()

    async def download_codebase(self, codebase_id: str, path: str = "", *, timeout: Optional[float] = None) -> bytes:
        """A file's bytes, or a directory's (the whole codebase's when ``path`` is empty) tar
        archive. :meth:`download_codebase_to` writes either to disk without holding it whole."""
        parts: list[bytes] = []
        async for piece in self._download(codebase_id, path, timeout):
            if isinstance(piece, bytes):
                parts.append(piece)
        return b"".join(parts)

    async def download_codebase_to(
        self, codebase_id: str, path: str, dest: StrPath, *, timeout: Optional[float] = None
    ) -> list[Path]:
        """Downloads ``path`` (a file, a directory, or "" for everything) to the local ``dest``:
        a file is written to ``dest`` (or into it, under its own name, when ``dest`` is a
        directory); a directory is extracted into ``dest`` (created if missing). Tar members that
        would land outside ``dest`` — absolute, ``..``, symlinks leaving it — raise
        :class:`~corral.DownloadError` naming them. Returns the local paths written."""
        target = Path(dest)
        spool: Optional[IO[bytes]] = None
        out: Optional[IO[bytes]] = None
        written: Optional[Path] = None
        fmt = ""
        try:
            async for piece in self._download(codebase_id, path, timeout):
                if isinstance(piece, codebase_pb2.DownloadHeader):
                    fmt = piece.format
                    if fmt == "file":
                        written = _codebase_download.file_target(target, path)
                        out = await asyncio.to_thread(open, written, "wb")
                    elif fmt == "tar":
                        spool = await asyncio.to_thread(tempfile.TemporaryFile)
                    else:
                        raise DownloadError(path or ".", f"the server sent an unknown format {fmt!r}")
                    continue
                sink = out if out is not None else spool
                if sink is None:
                    raise DownloadError(path or ".", "the server sent data before the header")
                await asyncio.to_thread(sink.write, piece)
            if out is not None and written is not None:
                await asyncio.to_thread(out.close)
                return [written]
            if spool is None:
                raise DownloadError(path or ".", "the server sent no header")
            await asyncio.to_thread(spool.seek, 0)
            return await asyncio.to_thread(_codebase_download.extract_tar, spool, target)
        finally:
            for f in (out, spool):
                if f is not None:
                    await asyncio.to_thread(f.close)

    # ------------------------------------------------------------------ sandboxes on a codebase

    async def diff_sandbox(self, sandbox_id: str, *, timeout: Optional[float] = None) -> Diff:
        """``Sandboxes.Diff``: what a sandbox created on a codebase added, modified and deleted in
        it (FailedPreconditionError for a sandbox without one)."""
        resp = await self._unary(self.sandboxes.Diff, sandbox_pb2.DiffSandboxRequest(id=sandbox_id), timeout)
        return Diff.from_pb(resp)
