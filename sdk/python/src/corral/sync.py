"""The synchronous mirror of :class:`~corral.AsyncSandbox`, for scripts: same names, no ``await``;
the job and batch helpers are mirrored as ``execute_code_sync``, ``run_batch_sync``, ... (see
:mod:`corral._sync_jobs`).

Calls run on one private event loop in a daemon thread, so ``Sandbox`` also works when called
from code that has its own event loop (it then blocks that loop while it waits).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, List, Optional, TypeVar, Union

from ._sync_jobs import (
    cancel_job_sync,
    execute_async_sync,
    execute_code_sync,
    get_job_sync,
    list_jobs_sync,
    run_batch_sync,
    wait_for_job_sync,
)
from ._sync_loop import iterate, run
from ._codebase_upload import Progress
from ._sync_procs import Process, Session, _SyncProcesses
from .client import StatusFilter
from .codebases import Diff, UploadResult
from .languages import LanguageInfo, get_languages
from .sandbox import AsyncSandbox, Rules, SandboxCreation, StrPath
from .types import ExecResult, FileInfo, ResourceLimits, RuntimeType, SandboxInfo, SandboxStatus, WriteResult

__all__ = [
    "Sandbox",
    "Process",
    "Session",
    "get_languages_sync",
    "execute_code_sync",
    "execute_async_sync",
    "get_job_sync",
    "wait_for_job_sync",
    "cancel_job_sync",
    "list_jobs_sync",
    "run_batch_sync",
]

T = TypeVar("T")

_run = run
_iterate = iterate


def get_languages_sync(endpoint: Optional[str] = None, api_key: Optional[str] = None) -> List[LanguageInfo]:
    """:func:`corral.get_languages` without ``await``."""
    return _run(get_languages(endpoint, api_key))


class Sandbox(_SyncProcesses):
    """A running sandbox (blocking API). See :class:`~corral.AsyncSandbox` for the semantics; the
    process, session, timeout and pause calls come from :class:`~corral._sync_procs._SyncProcesses`."""

    def __init__(self, inner: AsyncSandbox) -> None:
        self._inner = inner

    @property
    def async_sandbox(self) -> AsyncSandbox:
        """The underlying AsyncSandbox (bound to the SDK's private loop thread)."""
        return self._inner

    @property
    def sandbox_id(self) -> str:
        return self._inner.sandbox_id

    @property
    def id(self) -> str:
        return self._inner.sandbox_id

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def cached_info(self) -> SandboxInfo:
        return self._inner.cached_info

    @property
    def codebase_id(self) -> str:
        return self._inner.codebase_id

    @property
    def preset(self) -> str:
        return self._inner.preset

    @property
    def upload_result(self) -> Optional[UploadResult]:
        return self._inner.upload_result

    def __repr__(self) -> str:
        return f"Sandbox(sandbox_id={self.sandbox_id!r}, status={self.cached_info.status.value!r})"

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        *,
        runtime: Union[RuntimeType, str, None] = None,
        cpus: Optional[float] = None,
        memory_mb: Optional[int] = None,
        timeout_seconds: Optional[int] = None,
        timeout: Optional[int] = None,
        internet_access: bool = False,
        env_vars: Optional[Mapping[str, str]] = None,
        env: Optional[Mapping[str, str]] = None,
        labels: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        workdir: Optional[str] = None,
        resources: Optional[ResourceLimits] = None,
        image: Optional[str] = None,
        template: Optional[str] = None,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        disk_mb: Optional[int] = None,
        codebase_id: Optional[str] = None,
        preset: Optional[str] = None,
        permissions: Rules = None,
        codebase_path: Optional[str] = None,
    ) -> "Sandbox":
        """Creates a sandbox; ``with Sandbox.create(...) as sb:`` destroys it on exit."""
        creation = AsyncSandbox.create(
            runtime=runtime,
            cpus=cpus,
            memory_mb=memory_mb,
            timeout_seconds=timeout_seconds,
            timeout=timeout,
            internet_access=internet_access,
            env_vars=env_vars,
            env=env,
            labels=labels,
            name=name,
            workdir=workdir,
            resources=resources,
            image=image,
            disk_mb=disk_mb,
            template=template,
            endpoint=endpoint,
            api_key=api_key,
            codebase_id=codebase_id,
            preset=preset,
            permissions=permissions,
            codebase_path=codebase_path,
        )
        return cls._made(creation)

    @classmethod
    def _made(cls, creation: SandboxCreation) -> "Sandbox":
        async def make() -> AsyncSandbox:
            return await creation

        return cls(_run(make()))

    @staticmethod
    def get_languages(endpoint: Optional[str] = None, api_key: Optional[str] = None) -> List[LanguageInfo]:
        """The languages the cluster can run (``Languages.List``); see :func:`corral.get_languages`."""
        return get_languages_sync(endpoint, api_key)

    @classmethod
    def from_local(
        cls,
        path: StrPath,
        *,
        runtime: Union[RuntimeType, str, None] = RuntimeType.BWRAP,
        resources: Optional[ResourceLimits] = None,
        labels: Optional[Mapping[str, str]] = None,
        ignore_patterns: Optional[Iterable[str]] = None,
        use_gitignore: bool = True,
        remote_path: str = "/workspace",
        env_vars: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        internet_access: bool = False,
        timeout_seconds: Optional[int] = None,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        preset: Optional[str] = None,
        permissions: Rules = None,
        codebase: Optional[bool] = None,
        codebase_name: Optional[str] = None,
        include_secrets: bool = False,
        progress: Optional[Progress] = None,
        **create_kwargs: Any,
    ) -> "Sandbox":
        """Creates a sandbox with the local directory ``path`` at ``/workspace``: as a codebase
        when ``preset`` or ``permissions`` is given (or ``codebase=True``), else copied in (see
        :meth:`AsyncSandbox.from_local`). ``progress`` is called on the SDK's loop thread."""
        creation = AsyncSandbox.from_local(
            path,
            runtime=runtime,
            resources=resources,
            labels=labels,
            ignore_patterns=ignore_patterns,
            use_gitignore=use_gitignore,
            remote_path=remote_path,
            env_vars=env_vars,
            name=name,
            internet_access=internet_access,
            timeout_seconds=timeout_seconds,
            endpoint=endpoint,
            api_key=api_key,
            preset=preset,
            permissions=permissions,
            codebase=codebase,
            codebase_name=codebase_name,
            include_secrets=include_secrets,
            progress=progress,
            **create_kwargs,
        )
        return cls._made(creation)

    @classmethod
    def from_codebase(
        cls,
        codebase_id: str,
        preset: Optional[str] = None,
        permissions: Rules = None,
        *,
        codebase_path: Optional[str] = None,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        **create_kwargs: Any,
    ) -> "Sandbox":
        """A sandbox on an existing codebase (see :meth:`AsyncSandbox.from_codebase`)."""
        creation = AsyncSandbox.from_codebase(
            codebase_id,
            preset,
            permissions,
            codebase_path=codebase_path,
            endpoint=endpoint,
            api_key=api_key,
            **create_kwargs,
        )
        return cls._made(creation)

    @classmethod
    def connect(cls, id_or_name: str, *, endpoint: Optional[str] = None, api_key: Optional[str] = None) -> "Sandbox":
        return cls(_run(AsyncSandbox.connect(id_or_name, endpoint=endpoint, api_key=api_key)))

    @classmethod
    def list(
        cls,
        status: StatusFilter = None,
        labels: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        *,
        page_size: int = 0,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
    ) -> List[SandboxInfo]:
        return _run(AsyncSandbox.list(status, labels, limit, page_size=page_size, endpoint=endpoint, api_key=api_key))

    @classmethod
    def iter(
        cls,
        status: StatusFilter = None,
        labels: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        *,
        page_size: int = 0,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
    ) -> Iterator[SandboxInfo]:
        """Lazily paginated listing (a page is fetched when the iteration reaches it)."""
        return _iterate(
            AsyncSandbox.iter(status, labels, limit, page_size=page_size, endpoint=endpoint, api_key=api_key)
        )

    def info(self) -> SandboxInfo:
        return _run(self._inner.info())

    def diff(self) -> Diff:
        """What this sandbox changed in its codebase (see :meth:`AsyncSandbox.diff`)."""
        return _run(self._inner.diff())

    get_info = info

    def status(self) -> SandboxStatus:
        return _run(self._inner.status())

    def destroy(self) -> SandboxInfo:
        return _run(self._inner.destroy())

    terminate = destroy
    kill = destroy

    def close(self) -> None:
        _run(self._inner.close())

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _run(self._inner.__aexit__(exc_type, exc, tb))

    # ------------------------------------------------------------------ commands

    def run(
        self,
        command: Union[str, Sequence[str]],
        args: Optional[Sequence[str]] = None,
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[bytes, str, None] = None,
    ) -> ExecResult:
        return _run(self._inner.run(command, args, timeout=timeout, env=env, cwd=cwd, stdin=stdin))

    exec = run

    def run_stream(
        self,
        command: Union[str, Sequence[str]],
        args: Optional[Sequence[str]] = None,
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[bytes, str, None] = None,
    ) -> Iterator[dict[str, Any]]:
        return _iterate(self._inner.run_stream(command, args, timeout=timeout, env=env, cwd=cwd, stdin=stdin))

    def run_code(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> ExecResult:
        return _run(self._inner.run_code(code, language, timeout=timeout, env=env, cwd=cwd))

    def run_code_stream(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> Iterator[dict[str, Any]]:
        return _iterate(self._inner.run_code_stream(code, language, timeout=timeout, env=env, cwd=cwd))

    # ------------------------------------------------------------------ files

    def write_file(
        self, path: str, content: Union[bytes, bytearray, memoryview, str], *, mode: Optional[int] = None
    ) -> WriteResult:
        return _run(self._inner.write_file(path, content, mode=mode))

    def read_file(self, path: str, *, binary: bool = False, encoding: str = "utf-8") -> Any:
        return _run(self._inner.read_file(path, binary=binary, encoding=encoding))

    def read_bytes(self, path: str) -> bytes:
        return _run(self._inner.read_bytes(path))

    def list_directory(self, path: str = "/workspace") -> List[FileInfo]:
        return _run(self._inner.list_directory(path))

    def list_files(self, path: str = "/workspace", recursive: bool = False) -> List[FileInfo]:
        return _run(self._inner.list_files(path, recursive))

    def remove_file(self, path: str, *, recursive: bool = False) -> None:
        _run(self._inner.remove_file(path, recursive=recursive))

    remove = remove_file

    def upload(
        self,
        local_path: StrPath,
        remote_path: str,
        *,
        ignore_patterns: Optional[Iterable[str]] = None,
        use_gitignore: bool = False,
    ) -> List[str]:
        return _run(
            self._inner.upload(local_path, remote_path, ignore_patterns=ignore_patterns, use_gitignore=use_gitignore)
        )

    def download(self, remote_path: str, local_path: StrPath) -> List[Any]:
        return _run(self._inner.download(remote_path, local_path))
