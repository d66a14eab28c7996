"""The high-level asyncio API: :class:`AsyncSandbox`."""

from __future__ import annotations

import asyncio
import codecs
import os
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path, PurePosixPath
from typing import Any, List, Optional, TypeVar, Union

from . import _codebase_upload, _ignore
from ._codebase_upload import Progress
from ._sandbox_procs import _SandboxProcesses
from .client import AsyncSandboxClient, StatusFilter
from .codebases import Diff, UploadResult
from .errors import CorralError, FailedPreconditionError, InvalidArgumentError, SandboxNotFoundError
from .permissions import RuleLike, parse_rules
from .types import ExecResult, FileInfo, ResourceLimits, RuntimeType, SandboxInfo, SandboxStatus, WriteResult

__all__ = ["AsyncSandbox", "SandboxCreation", "LANGUAGES"]

T = TypeVar("T")
StrPath = Union[str, "os.PathLike[str]"]
Rules = Union[Iterable[RuleLike], RuleLike, None]

#: How long cleanup after a cancellation may take before it is left to run in the background.
CLEANUP_TIMEOUT = 30.0
#: Files transferred at once by upload/download/from_local.
TRANSFER_CONCURRENCY = 16

#: run_code's languages: name -> argv prefix; the code is passed as the last argument.
LANGUAGES: dict[str, tuple[str, ...]] = {
    "python": ("python3", "-c"),
    "python3": ("python3", "-c"),
    "py": ("python3", "-c"),
    "bash": ("bash", "-c"),
    "sh": ("sh", "-c"),
    "shell": ("sh", "-c"),
    "node": ("node", "-e"),
    "nodejs": ("node", "-e"),
    "javascript": ("node", "-e"),
    "js": ("node", "-e"),
    "ruby": ("ruby", "-e"),
    "perl": ("perl", "-e"),
}

# Background cleanups (a destroy still running after its awaiter was cancelled twice) are kept
# referenced here so the event loop does not drop them half-way.
_BACKGROUND: "set[asyncio.Task[Any]]" = set()


def _spawn(coro: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


# ---------------------------------------------------------------------- shared channels


class _Shared:
    __slots__ = ("client", "refs")

    def __init__(self, client: AsyncSandboxClient) -> None:
        self.client = client
        self.refs = 0


# One client (one HTTP/2 connection) per event loop and endpoint/key, shared by every sandbox
# made without an explicit client= and closed when the last of them is destroyed or closed.
_POOL: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, bool, Optional[str]], _Shared]]" = (
    weakref.WeakKeyDictionary()
)


def _acquire(endpoint: Optional[str], api_key: Optional[str]) -> AsyncSandboxClient:
    loop = asyncio.get_running_loop()
    probe = AsyncSandboxClient(endpoint, api_key)
    key = (probe.config.target, probe.config.secure, probe.config.api_key)
    per_loop = _POOL.setdefault(loop, {})
    shared = per_loop.get(key)
    if shared is None or shared.client.closed:
        shared = per_loop[key] = _Shared(probe)
    shared.refs += 1
    return shared.client


async def _release(client: AsyncSandboxClient) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - no loop: nothing to close from here
        return
    per_loop = _POOL.get(loop, {})
    for key, shared in list(per_loop.items()):
        if shared.client is client:
            shared.refs -= 1
            if shared.refs <= 0:
                del per_loop[key]
                await client.close()
            return


class _ClientRef:
    """A client to use for one operation: the caller's, or a reference to the shared one."""

    def __init__(self, endpoint: Optional[str], api_key: Optional[str], client: Optional[AsyncSandboxClient]) -> None:
        self.endpoint, self.api_key = endpoint, api_key
        if client is not None:
            self.client, self.pooled = client, False
        else:
            self.client, self.pooled = _acquire(endpoint, api_key), True
        self.released = False

    def renewed(self) -> "_ClientRef":
        """A new reference to the shared client (after this one was released)."""
        return _ClientRef(self.endpoint, self.api_key, None if self.pooled else self.client)

    async def release(self) -> None:
        if self.pooled and not self.released:
            self.released = True
            await _release(self.client)


async def _finish(task: "asyncio.Future[T]") -> T:
    """Waits for ``task`` even through cancellations of the caller (for at most CLEANUP_TIMEOUT
    after the first one), then re-raises the cancellation. Used for the calls that must not be
    cut short: Create's cleanup and Destroy. Repeated cancellation matters: ``asyncio.run``
    cancels leftover tasks at shutdown and waits for them."""
    loop = asyncio.get_running_loop()
    deadline: Optional[float] = None
    cancelled: Optional[BaseException] = None
    while True:
        try:
            if deadline is None:
                result = await asyncio.shield(task)
            else:
                result = await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
        except asyncio.CancelledError as e:
            if task.done() and task.cancelled():
                raise
            cancelled = cancelled or e
            if deadline is None:
                deadline = loop.time() + CLEANUP_TIMEOUT
            if loop.time() >= deadline:
                raise cancelled from None
            continue
        except BaseException:
            if cancelled is not None:
                raise cancelled from None
            raise
        if cancelled is not None:
            raise cancelled
        return result


async def _shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Runs ``coro`` to completion even if the caller is cancelled (see _finish)."""
    return await _finish(_spawn(coro))


# ---------------------------------------------------------------------- the awaitable/context manager


class SandboxCreation(Awaitable["AsyncSandbox"]):
    """What ``AsyncSandbox.create(...)`` / ``from_local(...)`` return: await it for the sandbox,
    or use it directly as ``async with AsyncSandbox.create(...) as sb:`` (destroyed on exit)."""

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, "AsyncSandbox"]]) -> None:
        self._factory = factory
        self._sandbox: Optional[AsyncSandbox] = None

    def __await__(self) -> Generator[Any, None, "AsyncSandbox"]:
        return self._factory().__await__()

    async def __aenter__(self) -> "AsyncSandbox":
        self._sandbox = await self._factory()
        return await self._sandbox.__aenter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._sandbox is not None:
            await self._sandbox.__aexit__(exc_type, exc, tb)


def _remote_join(base: str, rel: str) -> str:
    return str(PurePosixPath(base) / rel) if rel else base


class AsyncSandbox(_SandboxProcesses):
    """A running sandbox.

    Make one with :meth:`create`, :meth:`from_local`, :meth:`from_codebase` or :meth:`connect`;
    use it as an async context manager to destroy it on exit. Commands run with :meth:`run` / :meth:`run_code`;
    files move with :meth:`write_file`, :meth:`read_file`, :meth:`upload`, :meth:`download`;
    background processes, sessions, set_timeout and pause/resume come from
    :class:`~corral._sandbox_procs._SandboxProcesses`.
    """

    def __init__(self, info: SandboxInfo, client: AsyncSandboxClient, *, _ref: Optional[_ClientRef] = None) -> None:
        self._info = info
        self._ref = _ref if _ref is not None else _ClientRef(None, None, client)
        self._destroyed = False
        self._upload: Optional[UploadResult] = None

    @property
    def _client(self) -> AsyncSandboxClient:
        # After destroy()/close() released the shared connection, a later call takes a new
        # reference (given back by the next close()/destroy()).
        if self._ref.released:
            self._ref = self._ref.renewed()
        return self._ref.client

    # ------------------------------------------------------------------ identity

    @property
    def sandbox_id(self) -> str:
        return self._info.sandbox_id

    @property
    def id(self) -> str:
        return self._info.sandbox_id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def client(self) -> AsyncSandboxClient:
        """The low-level client this sandbox uses."""
        return self._client

    @property
    def codebase_id(self) -> str:
        """The codebase this sandbox was created on ("" for none)."""
        return self._info.codebase_id

    @property
    def preset(self) -> str:
        """The preset it sees its codebase through ("read-only" when none and no rules were given)."""
        return self._info.preset

    @property
    def upload_result(self) -> Optional[UploadResult]:
        """What :meth:`from_local` uploaded into the sandbox's codebase (None otherwise)."""
        return self._upload

    @property
    def cached_info(self) -> SandboxInfo:
        """The last SandboxInfo seen (from create/connect/info/destroy), without a round trip."""
        return self._info

    def __repr__(self) -> str:
        return f"AsyncSandbox(sandbox_id={self.sandbox_id!r}, status={self._info.status.value!r})"

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
        client: Optional[AsyncSandboxClient] = None,
        disk_mb: Optional[int] = None,
        codebase_id: Optional[str] = None,
        preset: Optional[str] = None,
        permissions: Rules = None,
        codebase_path: Optional[str] = None,
    ) -> SandboxCreation:
        """Creates a sandbox and returns once it is RUNNING.

        ``await AsyncSandbox.create(...)`` gives the sandbox; ``async with AsyncSandbox.create(...)
        as sb`` (or ``async with await ...``) also destroys it on exit. If the creating task is
        cancelled (``asyncio.wait_for``, ``asyncio.timeout``, task.cancel()), the sandbox the
        server was making is destroyed before the cancellation propagates.

        ``timeout_seconds`` (alias ``timeout``) is the sandbox's lifetime, after which the server
        destroys it (EXPIRED). ``env_vars`` (alias ``env``) apply to every command. ``resources``
        is an alternative way to give cpus/memory/lifetime. ``image`` (alias ``template``) is the
        local image of a ``RuntimeType.DOCKER`` sandbox. ``disk_mb`` is the disk quota of
        ``/workspace`` and ``/tmp`` together (writes past it fail with ENOSPC inside the sandbox;
        ``info()`` reports the use). Unset values use server defaults.

        ``codebase_id`` shows a codebase (see :meth:`AsyncSandboxClient.upload_codebase`) at
        ``codebase_path`` (default ``/workspace``) through the ``preset`` (``view-only``,
        ``read-only``, ``agent-safe``, ``development``, ``full-access``) and then the
        ``permissions`` rules (:class:`~corral.PermissionRule` s, dicts or ``"docs/**=write"``
        strings; see :mod:`corral.permissions`); with neither, read-only. The sandbox writes to
        its own copy-on-write layer: :meth:`diff` lists what it changed.
        """
        kwargs = _create_kwargs(
            image=image,
            template=template,
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
            disk_mb=disk_mb,
            codebase_id=codebase_id,
            preset=preset,
            permissions=permissions,
            codebase_path=codebase_path,
        )
        return SandboxCreation(lambda: cls._create(kwargs, endpoint, api_key, client))

    @classmethod
    async def _create(
        cls,
        kwargs: dict[str, Any],
        endpoint: Optional[str],
        api_key: Optional[str],
        client: Optional[AsyncSandboxClient],
        after: Optional[Callable[["AsyncSandbox"], Awaitable[None]]] = None,
    ) -> "AsyncSandbox":
        ref = _ClientRef(endpoint, api_key, client)
        try:
            info = await _guarded_create(ref.client, kwargs)
        except BaseException:
            await _shielded(ref.release())
            raise
        sandbox = cls(info, ref.client, _ref=ref)
        if after is not None:
            try:
                await after(sandbox)
            except BaseException:
                await sandbox._destroy_quietly()
                raise
        return sandbox

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
        image: Optional[str] = None,
        template: Optional[str] = None,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[AsyncSandboxClient] = None,
        preset: Optional[str] = None,
        permissions: Rules = None,
        codebase: Optional[bool] = None,
        codebase_name: Optional[str] = None,
        include_secrets: bool = False,
        progress: Optional[Progress] = None,
        **create_kwargs: Any,
    ) -> SandboxCreation:
        """Creates a sandbox holding the local directory ``path`` at ``remote_path``
        (``/workspace``). Returns the running sandbox (awaitable, or ``async with``).

        **As a codebase** — when ``preset`` or ``permissions`` is given, or ``codebase=True``:
        the directory is uploaded as a new codebase (named ``codebase_name``, default the
        directory's name, labelled with ``labels``; only content the server lacks is sent), then
        the sandbox is created on it, seeing it through the preset and rules (read-only with
        neither; see :meth:`create`) and writing to its own layer (:meth:`diff`). Skipped: what
        ``.gitignore`` files exclude and ``.git/``, ``node_modules/``, ``__pycache__/``,
        ``.venv/`` (kept with ``use_gitignore=False``), secrets files (``.env*``, ``*.key``,
        ``*.pem``, ``credentials*``, ``secrets/``; kept with ``include_secrets=True``, and then
        hidden by ``agent-safe``), and ``ignore_patterns``. Hard links, devices, fifos, sockets,
        symlinks leaving the tree and set-id bits raise :class:`~corral.UploadError` before
        anything is sent. ``progress(files_done, files_total, bytes_done, bytes_total)`` follows
        the upload. The codebase outlives the sandbox: reuse it with :meth:`from_codebase`
        (``sb.codebase_id``), delete it with ``client.delete_codebase``. If the upload or the
        create fails, the new codebase is deleted.

        **As a copy** — otherwise: the files are written into the sandbox's own ``/workspace``,
        skipping ``.git/``, what ``.gitignore`` files exclude (unless ``use_gitignore=False``)
        and ``ignore_patterns`` (gitignore syntax, relative to ``path``); if the upload fails the
        sandbox is destroyed.

        ``name`` is the sandbox's name; other keyword arguments (``cpus``, ``memory_mb``,
        ``disk_mb``, ``workdir``, ``env`` ...) are :meth:`create`'s."""
        root = Path(path)
        if not root.is_dir():
            raise InvalidArgumentError(f"path: {str(path)!r} is not a local directory")
        patterns = list(ignore_patterns) if ignore_patterns is not None else None
        as_codebase = codebase if codebase is not None else (preset is not None or permissions is not None)
        if not as_codebase:
            for field, given in (
                ("preset", preset),
                ("permissions", permissions),
                ("codebase_name", codebase_name),
                ("progress", progress),
            ):
                if given is not None:
                    raise InvalidArgumentError(f"{field}: applies only to from_local(..., codebase=True)")
            if include_secrets:
                raise InvalidArgumentError("include_secrets: applies only to from_local(..., codebase=True)")
        kwargs = _create_kwargs(
            runtime=runtime,
            resources=resources,
            labels=labels,
            env_vars=env_vars,
            name=name,
            internet_access=internet_access,
            timeout_seconds=timeout_seconds,
            image=image,
            template=template,
            **create_kwargs,
        )
        if as_codebase:
            rules = parse_rules(permissions)
            kwargs.update(preset=preset, permissions=rules, codebase_path=remote_path)
            title = (codebase_name or root.resolve().name or "codebase")[:128]
            return SandboxCreation(
                lambda: cls._create_from_local(
                    kwargs,
                    endpoint,
                    api_key,
                    client,
                    root=root,
                    codebase_name=title,
                    labels=labels,
                    include_ignored=not use_gitignore,
                    include_secrets=include_secrets,
                    ignore_patterns=patterns,
                    progress=progress,
                )
            )

        async def upload(sb: "AsyncSandbox") -> None:
            await sb.upload(root, remote_path, ignore_patterns=patterns, use_gitignore=use_gitignore)

        return SandboxCreation(lambda: cls._create(kwargs, endpoint, api_key, client, after=upload))

    @classmethod
    async def _create_from_local(
        cls,
        kwargs: dict[str, Any],
        endpoint: Optional[str],
        api_key: Optional[str],
        client: Optional[AsyncSandboxClient],
        *,
        root: Path,
        codebase_name: str,
        labels: Optional[Mapping[str, str]],
        include_ignored: bool,
        include_secrets: bool,
        ignore_patterns: Optional[List[str]],
        progress: Optional[Progress],
    ) -> "AsyncSandbox":
        """Scan (refusing what a codebase cannot hold before anything is sent), create the
        codebase, upload, create the sandbox on it; the codebase is deleted if a later step fails."""
        entries = await asyncio.to_thread(
            _codebase_upload.scan,
            root,
            include_ignored=include_ignored,
            include_secrets=include_secrets,
            ignore_patterns=ignore_patterns,
        )
        ref = _ClientRef(endpoint, api_key, client)
        try:
            cb = await ref.client.create_codebase(codebase_name, labels=labels)
            try:
                result = await ref.client.upload_entries(cb.codebase_id, entries, True, progress)
                sandbox = await cls._create({**kwargs, "codebase_id": cb.codebase_id}, endpoint, api_key, client)
            except BaseException:
                await _shielded(_delete_codebase_quietly(ref.client, cb.codebase_id))
                raise
        finally:
            await _shielded(ref.release())
        sandbox._upload = result
        return sandbox

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
        client: Optional[AsyncSandboxClient] = None,
        **create_kwargs: Any,
    ) -> SandboxCreation:
        """Creates a sandbox on an existing codebase: :meth:`create` with ``codebase_id``. Each
        sandbox on a codebase sees it as uploaded, through its own ``preset`` and
        ``permissions`` (read-only with neither), and writes only to its own layer: it does not
        see other sandboxes' changes. Other keyword arguments are :meth:`create`'s."""
        if not codebase_id:
            raise InvalidArgumentError("codebase_id: is empty")
        kwargs = _create_kwargs(
            codebase_id=codebase_id,
            preset=preset,
            permissions=permissions,
            codebase_path=codebase_path,
            **create_kwargs,
        )
        return SandboxCreation(lambda: cls._create(kwargs, endpoint, api_key, client))

    @classmethod
    async def connect(
        cls,
        id_or_name: str,
        *,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[AsyncSandboxClient] = None,
    ) -> "AsyncSandbox":
        """Attaches to an existing sandbox by id (``sb-…``) or by name."""
        ref = _ClientRef(endpoint, api_key, client)
        try:
            if _looks_like_id(id_or_name):
                info = await ref.client.get_sandbox(id_or_name)
            else:
                info = await ref.client.get_sandbox_by_name(id_or_name)
        except BaseException:
            await _shielded(ref.release())
            raise
        return cls(info, ref.client, _ref=ref)

    async def diff(self) -> Diff:
        """What this sandbox changed in its codebase: a list of :class:`~corral.Change` (``path``
        relative to the codebase root, ``kind`` added/modified/deleted, ``file_kind``, ``size``),
        with ``.added`` / ``.modified`` / ``.deleted`` path lists and ``.truncated``. Read a changed
        file with :meth:`read_file`. FailedPreconditionError for a sandbox without a codebase."""
        return await self._client.diff_sandbox(self.sandbox_id)

    async def info(self) -> SandboxInfo:
        """Fresh information from the server (``Sandboxes.Get``)."""
        self._info = await self._client.get_sandbox(self.sandbox_id)
        return self._info

    get_info = info

    async def status(self) -> SandboxStatus:
        """The sandbox's current state (``"running"``, ``"stopped"``, ``"expired"`` …)."""
        return (await self.info()).status

    async def destroy(self) -> SandboxInfo:
        """Destroys the sandbox (every process is killed, its files are removed) and returns its
        final record. Runs to completion even if the calling task is cancelled meanwhile."""
        try:
            info = await _shielded(_destroy_rpc(self._client, self.sandbox_id))
            self._destroyed = True
        finally:
            await _shielded(self._release())
        self._info = info
        return info

    terminate = destroy
    kill = destroy

    async def close(self) -> None:
        """Lets go of the connection without destroying the sandbox (which lives on until its
        timeout or a destroy)."""
        await self._release()

    async def _release(self) -> None:
        await self._ref.release()

    async def _destroy_quietly(self) -> None:
        if self._destroyed:
            await _shielded(self._release())
            return
        try:
            await self.destroy()
        except (SandboxNotFoundError, FailedPreconditionError):
            pass

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self._destroy_quietly()
            return
        try:
            await self._destroy_quietly()
        except CorralError:
            pass  # the body's exception matters more

    # ------------------------------------------------------------------ listing

    @classmethod
    async def list(
        cls,
        status: StatusFilter = None,
        labels: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        *,
        page_size: int = 0,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[AsyncSandboxClient] = None,
    ) -> List[SandboxInfo]:
        """Sandboxes (every state unless ``status`` is given: one status or several) carrying all
        of ``labels``, at most ``limit`` of them (all by default), oldest pages first."""
        return [
            sb
            async for sb in cls.iter(
                status, labels, limit, page_size=page_size, endpoint=endpoint, api_key=api_key, client=client
            )
        ]

    @classmethod
    async def iter(
        cls,
        status: StatusFilter = None,
        labels: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        *,
        page_size: int = 0,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[AsyncSandboxClient] = None,
    ) -> AsyncIterator[SandboxInfo]:
        """Like :meth:`list`, but lazily: a page is fetched only when the iteration reaches it."""
        ref = _ClientRef(endpoint, api_key, client)
        try:
            async for sb in ref.client.iter_sandboxes(status=status, labels=labels, page_size=page_size, limit=limit):
                yield sb
        finally:
            await _shielded(ref.release())

    # ------------------------------------------------------------------ commands

    @staticmethod
    def _command(command: Union[str, Sequence[str]], args: Optional[Sequence[str]]) -> dict[str, Any]:
        if isinstance(command, str):
            if args is None:
                return {"shell": command}
            return {"argv": [command, *[str(a) for a in args]]}
        argv = [str(a) for a in command]
        if args:
            argv.extend(str(a) for a in args)
        if not argv:
            raise InvalidArgumentError("command: empty argv")
        return {"argv": argv}

    async def run(
        self,
        command: Union[str, Sequence[str]],
        args: Optional[Sequence[str]] = None,
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[bytes, str, None] = None,
    ) -> ExecResult:
        """Runs a command to completion.

        ``command`` alone is a shell command line (``/bin/sh -c``); with ``args`` (or as a list)
        it is a program and its arguments, run without a shell. ``timeout`` (seconds) kills the
        whole process tree and sets ``timed_out`` on the result; default is the server's (300 s).
        A non-zero exit is not an exception: check ``exit_code``.
        """
        return await self._client.exec_run(
            self.sandbox_id, **self._command(command, args), env=env, cwd=cwd, timeout_seconds=timeout, stdin=stdin
        )

    exec = run

    async def run_stream(
        self,
        command: Union[str, Sequence[str]],
        args: Optional[Sequence[str]] = None,
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[bytes, str, None] = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Runs a command, yielding its output as it comes: ``{"type": "stdout"|"stderr",
        "data": str}`` events in order, then ``{"type": "done", "exit_code": …, "timed_out": …,
        "truncated": …, "duration_ms": …, "signal": …}``. Breaking out early kills the command."""
        events = self._client.exec_stream(
            self.sandbox_id, **self._command(command, args), env=env, cwd=cwd, timeout_seconds=timeout, stdin=stdin
        )
        decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        try:
            async for ev in events:
                kind = ev["type"]
                if kind in decoders:
                    text = decoders[kind].decode(ev["data"])
                    if text:
                        yield {"type": kind, "data": text}
                else:
                    for name, dec in decoders.items():
                        rest = dec.decode(b"", final=True)
                        if rest:
                            yield {"type": name, "data": rest}
                    yield ev
        finally:
            await events.aclose()

    async def run_code(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> ExecResult:
        """Runs a snippet with ``Exec.RunCode``: the server writes it to a file in the sandbox and
        runs it with the language's toolchain on the sandbox's node (compiled languages such as
        ``c`` compile, then run). ``language`` is a name or alias (``python``/``py``, ``javascript``/
        ``js``/``node``, ``bash``, ``sh``, ``ruby``, ``perl``, ``c``, ``go``, ``rust``);
        :func:`corral.get_languages` lists what the cluster has. An unknown or unavailable
        language raises :class:`~corral.InvalidArgumentError` naming the available ones."""
        return await self._client.exec_run_code(
            self.sandbox_id, code, language, env=env, cwd=cwd, timeout_seconds=timeout
        )

    def run_code_stream(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """A snippet run with streamed output (events as in :meth:`run_stream`). Unlike
        :meth:`run_code` it passes the code on the interpreter's command line (``LANGUAGES``:
        python, bash, sh, javascript, ruby, perl), as the server has no streaming RunCode yet."""
        return self.run_stream(_code_argv(code, language), timeout=timeout, env=env, cwd=cwd)

    # ------------------------------------------------------------------ files

    async def write_file(
        self, path: str, content: Union[bytes, bytearray, memoryview, str], *, mode: Optional[int] = None
    ) -> WriteResult:
        """Writes (creates or replaces) a file; missing parent directories are created. ``str``
        content is UTF-8 encoded. Paths are absolute (``/workspace/…``, ``/tmp/…``) or relative to
        ``/workspace``."""
        return await self._client.write_file(self.sandbox_id, path, content, mode=mode)

    async def read_file(self, path: str, *, binary: bool = False, encoding: str = "utf-8") -> Any:
        """A file's content: ``str`` (decoded with ``encoding``), or ``bytes`` with ``binary=True``."""
        data = await self._client.read_file(self.sandbox_id, path)
        return data if binary else data.decode(encoding)

    async def read_bytes(self, path: str) -> bytes:
        """A file's content as bytes."""
        return await self._client.read_file(self.sandbox_id, path)

    async def list_directory(self, path: str = "/workspace") -> List[FileInfo]:
        """The entries of a directory (``name``, ``path``, ``is_dir``, ``size``, ``mode`` …)."""
        return await self._client.list_files(self.sandbox_id, path)

    async def list_files(self, path: str = "/workspace", recursive: bool = False) -> List[FileInfo]:
        """:meth:`list_directory`, or with ``recursive=True`` everything below ``path``."""
        entries = await self._client.list_files(self.sandbox_id, path)
        if not recursive:
            return entries
        out: List[FileInfo] = []
        for e in entries:
            out.append(e)
            if e.is_dir:
                out.extend(await self.list_files(e.path, recursive=True))
        return out

    async def remove_file(self, path: str, *, recursive: bool = False) -> None:
        """Removes a file or an empty directory (any directory with ``recursive=True``)."""
        await self._client.remove_file(self.sandbox_id, path, recursive=recursive)

    remove = remove_file

    async def upload(
        self,
        local_path: StrPath,
        remote_path: str,
        *,
        ignore_patterns: Optional[Iterable[str]] = None,
        use_gitignore: bool = False,
    ) -> List[str]:
        """Copies a local file or directory tree into the sandbox; returns the remote paths of the
        files written. A directory's contents go *into* ``remote_path``; ``ignore_patterns``
        (gitignore syntax) and, with ``use_gitignore=True``, ``.gitignore`` files and ``.git/``
        are skipped. File permission bits are kept."""
        local = Path(local_path)
        if local.is_file():
            remote = remote_path
            if remote.endswith("/"):
                remote = remote + local.name
            await self.write_file(remote, local.read_bytes(), mode=local.stat().st_mode & 0o777)
            return [remote]
        if not local.is_dir():
            raise InvalidArgumentError(f"local_path: {str(local_path)!r} does not exist")
        files: List[tuple[str, Path]] = []
        dirs: List[str] = []
        for rel, lp, is_dir in _ignore.walk(local, ignore_patterns, use_gitignore):
            if is_dir:
                dirs.append(rel)
            else:
                files.append((rel, lp))
        sem = asyncio.Semaphore(TRANSFER_CONCURRENCY)

        async def put(rel: str, lp: Path) -> str:
            async with sem:
                remote = _remote_join(remote_path, rel)
                data = await asyncio.to_thread(lp.read_bytes)
                await self.write_file(remote, data, mode=lp.stat().st_mode & 0o777)
                return remote

        written = list(await asyncio.gather(*(put(rel, lp) for rel, lp in files)))
        # Writes create parents; only directories with no file below them need making.
        has_files = set()
        for rel, _ in files:
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                has_files.add("/".join(parts[:i]))
        # (Files paths are relative to /workspace; a command's cwd may be elsewhere.)
        base = remote_path if remote_path.startswith("/") else _remote_join("/workspace", remote_path)
        empty = [_remote_join(base, d) for d in dirs if d not in has_files]
        for i in range(0, len(empty), 500):
            r = await self.run(["mkdir", "-p", "--", *empty[i : i + 500]])
            if r.exit_code != 0:
                raise FailedPreconditionError(f"creating directories in the sandbox failed: {r.stderr.strip()}")
        return written

    async def download(self, remote_path: str, local_path: StrPath) -> List[Path]:
        """Copies a file or directory tree out of the sandbox; returns the local files written.
        A directory's contents go *into* ``local_path`` (created if missing)."""
        local = Path(local_path)
        try:
            entries: Optional[List[FileInfo]] = await self.list_directory(remote_path)
        except (InvalidArgumentError, FailedPreconditionError, SandboxNotFoundError):
            entries = None  # not a directory: read it as a file (which reports a missing path)
        if entries is None:
            data = await self.read_bytes(remote_path)
            target = local / PurePosixPath(remote_path).name if local.is_dir() else local
            target.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(target.write_bytes, data)
            return [target]
        local.mkdir(parents=True, exist_ok=True)
        jobs: List[tuple[str, Path, int]] = []

        async def collect(remote_dir: str, local_dir: Path, items: List[FileInfo]) -> None:
            for e in items:
                if e.is_dir:
                    (local_dir / e.name).mkdir(exist_ok=True)
                    await collect(e.path, local_dir / e.name, await self.list_directory(e.path))
                elif e.is_file:
                    jobs.append((e.path, local_dir / e.name, e.mode))

        await collect(remote_path, local, entries)
        sem = asyncio.Semaphore(TRANSFER_CONCURRENCY)

        async def get(remote: str, target: Path, mode: int) -> Path:
            async with sem:
                data = await self.read_bytes(remote)
                await asyncio.to_thread(target.write_bytes, data)
                if mode:
                    os.chmod(target, mode & 0o777)
                return target

        return list(await asyncio.gather(*(get(r, t, m) for r, t, m in jobs)))


def _code_argv(code: str, language: str) -> List[str]:
    prefix = LANGUAGES.get(language.lower().strip())
    if prefix is None:
        known = ", ".join(sorted(LANGUAGES))
        raise InvalidArgumentError(f"language: {language!r} is not supported (one of {known})")
    return [*prefix, code]


def _looks_like_id(s: str) -> bool:
    hexpart = s[3:]
    return s.startswith("sb-") and len(hexpart) == 32 and all(c in "0123456789abcdef" for c in hexpart)


def _create_kwargs(
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
    disk_mb: Optional[int] = None,
    codebase_id: Optional[str] = None,
    preset: Optional[str] = None,
    permissions: Rules = None,
    codebase_path: Optional[str] = None,
) -> dict[str, Any]:
    if image is not None and template is not None and image != template:
        raise InvalidArgumentError("image: give image or its alias template, not both")
    if timeout_seconds is not None and timeout is not None and timeout_seconds != timeout:
        raise InvalidArgumentError("timeout_seconds: give timeout_seconds or its alias timeout, not both")
    if env_vars is not None and env is not None:
        raise InvalidArgumentError("env_vars: give env_vars or its alias env, not both")
    lifetime = timeout_seconds if timeout_seconds is not None else timeout
    if resources is not None:
        if resources.cpus is not None:
            if cpus is not None:
                raise InvalidArgumentError("cpus: given both directly and in resources")
            cpus = resources.cpus
        mem = resources.resolved_memory_mb()
        if mem is not None:
            if memory_mb is not None:
                raise InvalidArgumentError("memory_mb: given both directly and in resources")
            memory_mb = mem
        if resources.timeout_seconds is not None:
            if lifetime is not None:
                raise InvalidArgumentError("timeout_seconds: given both directly and in resources")
            lifetime = resources.timeout_seconds
    rt = RuntimeType.parse(runtime)
    if rt is not None:
        rt.to_pb()  # fail now, not inside the coroutine, when the protocol lacks it
    rules = parse_rules(permissions)
    if preset is not None and not isinstance(preset, str):
        raise InvalidArgumentError(f"preset: expected a str, got {type(preset).__name__}")
    return dict(
        runtime=rt,
        cpus=cpus,
        memory_mb=memory_mb,
        timeout_seconds=lifetime,
        internet_access=internet_access,
        env=env_vars if env_vars is not None else env,
        labels=labels,
        name=name,
        workdir=workdir,
        image=image if image is not None else template,
        disk_mb=disk_mb,
        codebase_id=codebase_id,
        preset=preset,
        permissions=rules,
        codebase_path=codebase_path,
    )


async def _guarded_create(client: AsyncSandboxClient, kwargs: dict[str, Any]) -> SandboxInfo:
    """``Sandboxes.Create`` that leaves nothing behind when the caller is cancelled: the call runs
    on in a task; on cancellation we wait for it, destroy what it made, then re-raise."""
    task = _spawn(client.create_sandbox(**kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await _finish(_spawn(_destroy_when_created(client, task)))
        raise


async def _destroy_rpc(client: AsyncSandboxClient, sandbox_id: str) -> SandboxInfo:
    """``Sandboxes.Destroy``, sent again once if this task is cancelled while it is in flight (as
    ``asyncio.run`` does to every task left at shutdown), so a cleanup is not lost to it."""
    try:
        return await client.destroy_sandbox(sandbox_id, timeout=CLEANUP_TIMEOUT)
    except asyncio.CancelledError:
        return await client.destroy_sandbox(sandbox_id, timeout=CLEANUP_TIMEOUT)


async def _delete_codebase_quietly(client: AsyncSandboxClient, codebase_id: str) -> None:
    try:
        await client.delete_codebase(codebase_id, timeout=CLEANUP_TIMEOUT)
    except CorralError:
        pass


async def _destroy_when_created(client: AsyncSandboxClient, task: "asyncio.Task[SandboxInfo]") -> None:
    try:
        info = await task
    except BaseException:
        return
    try:
        await _destroy_rpc(client, info.sandbox_id)
    except CorralError:
        pass
