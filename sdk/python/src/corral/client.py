"""The low-level asyncio client: one method per RPC of the ``corral.v1`` services.

``AsyncSandboxClient`` owns one ``grpc.aio`` channel (HTTP/2, many calls multiplexed on it). It
converts requests from keyword arguments, responses to the SDK's result objects, and every gRPC
error to a :class:`~corral.errors.CorralError` subclass. The generated stubs are available as
``client.sandboxes``, ``client.exec``, ``client.files``, ``client.sessions``, ``client.languages``,
``client.jobs``, ``client.batches`` and ``client.codebases`` for callers who want raw protobuf. The
process and session calls live in :mod:`corral._client_procs`, the job and batch calls in
:mod:`corral._client_jobs`, the codebase calls in :mod:`corral._client_codebases`.

The high-level :class:`~corral.AsyncSandbox` is built on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, Union

import grpc
import grpc.aio

from ._config import ResolvedConfig, resolve
from .errors import CorralError, InvalidArgumentError, SandboxTimeoutError, error_from_rpc
from .permissions import RuleLike, parse_rules
from .types import ExecResult, FileInfo, RuntimeType, SandboxInfo, SandboxStatus, WriteResult, _Record
from ._client_code import _CodeCalls
from ._client_codebases import _CodebaseCalls
from ._client_jobs import _JobCalls
from ._client_procs import _ProcessAndSessionCalls
from .v1 import exec_pb2, exec_pb2_grpc, files_pb2, files_pb2_grpc, sandbox_pb2, sandbox_pb2_grpc, session_pb2_grpc

__all__ = ["AsyncSandboxClient", "SandboxPage", "StatusFilter"]

#: Files up to the server's max_file_bytes (64 MiB by default) and exec output up to 2 × 16 MiB
#: travel in one message; allow well above that.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

StatusFilter = Union[SandboxStatus, str, Iterable[Union[SandboxStatus, str]], None]

T = TypeVar("T")


@dataclass(frozen=True)
class SandboxPage(_Record):
    """One page of ``Sandboxes.List``; ``next_page_token`` is empty on the last page."""

    sandboxes: list[SandboxInfo]
    next_page_token: str


def _states(status: StatusFilter) -> list[int]:
    if status is None:
        return []
    if isinstance(status, (str, SandboxStatus)):
        status = [status]
    return [SandboxStatus.parse(s).to_pb() for s in status]


def _str_map(field: str, value: Optional[Mapping[str, Any]]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{field}: expected a mapping of str to str, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise InvalidArgumentError(f"{field}: keys must be str, got {k!r}")
        out[k] = v if isinstance(v, str) else str(v)
    return out


def _fill_run_options(
    req: Any,
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    timeout_seconds: Optional[float],
    stdin: Union[bytes, str, None],
) -> Any:
    """Sets the options ExecRequest and RunCodeRequest share; returns ``req``."""
    req.env.update(_str_map("env", env))
    if cwd:
        _set(req, "cwd", cwd)
    if timeout_seconds is not None:
        _set(req, "timeout_seconds", float(timeout_seconds))
    if stdin is not None:
        req.stdin = _to_bytes("stdin", stdin)
    return req


def _set(msg: Any, field: str, value: Any) -> None:
    """Sets a scalar field, turning protobuf's type errors into InvalidArgumentError naming it."""
    try:
        setattr(msg, field, value)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{field}: {value!r} is not valid here ({e})") from None


def _to_bytes(field: str, data: Union[bytes, bytearray, memoryview, str]) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgumentError(f"{field}: expected bytes or str, got {type(data).__name__}")


class AsyncSandboxClient(_ProcessAndSessionCalls, _CodeCalls, _JobCalls, _CodebaseCalls):
    """A connection to a Corral coordinator (asyncio).

    ``endpoint`` and ``api_key`` resolve as: arguments, then ``CORRAL_ENDPOINT`` /
    ``CORRAL_API_KEY``, then ``~/.config/corral/config.toml``, then ``127.0.0.1:50051``.
    The API key is sent as ``authorization: Bearer <key>`` metadata.

    Use it as ``async with AsyncSandboxClient() as client:`` or call :meth:`close`. The channel
    is opened on first use, inside the running event loop, and belongs to that loop.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        options: Optional[Sequence[tuple[str, Any]]] = None,
    ) -> None:
        self._config: ResolvedConfig = resolve(endpoint, api_key)
        self._extra_options = list(options or [])
        self._channel: Optional[grpc.aio.Channel] = None
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {self._config.api_key}"),) if self._config.api_key else ()
        )
        self._closed = False
        self._sandboxes: Optional[sandbox_pb2_grpc.SandboxesStub] = None
        self._exec: Optional[exec_pb2_grpc.ExecStub] = None
        self._files: Optional[files_pb2_grpc.FilesStub] = None
        self._sessions: Optional[session_pb2_grpc.SessionsStub] = None

    # ------------------------------------------------------------------ connection

    @property
    def endpoint(self) -> str:
        """The ``host:port`` this client talks to."""
        return self._config.target

    @property
    def api_key(self) -> Optional[str]:
        return self._config.api_key

    @property
    def config(self) -> ResolvedConfig:
        """The resolved endpoint and key, with where each came from."""
        return self._config

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with every call."""
        return self._metadata

    def _ensure_channel(self) -> grpc.aio.Channel:
        if self._closed:
            raise CorralError("this AsyncSandboxClient is closed")
        if self._channel is None:
            options = [
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_retries", 1),
                *self._extra_options,
            ]
            if self._config.secure:
                self._channel = grpc.aio.secure_channel(
                    self._config.target, grpc.ssl_channel_credentials(), options=options
                )
            else:
                self._channel = grpc.aio.insecure_channel(self._config.target, options=options)
            self._sandboxes = sandbox_pb2_grpc.SandboxesStub(self._channel)
            self._exec = exec_pb2_grpc.ExecStub(self._channel)
            self._files = files_pb2_grpc.FilesStub(self._channel)
            self._sessions = session_pb2_grpc.SessionsStub(self._channel)
            self._languages = None
            self._jobs = None
            self._batches = None
            self._codebases = None
        return self._channel

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._ensure_channel()

    @property
    def sandboxes(self) -> sandbox_pb2_grpc.SandboxesStub:
        """The generated ``corral.v1.Sandboxes`` stub (raw protobuf in and out)."""
        self._ensure_channel()
        assert self._sandboxes is not None
        return self._sandboxes

    @property
    def exec(self) -> exec_pb2_grpc.ExecStub:
        """The generated ``corral.v1.Exec`` stub."""
        self._ensure_channel()
        assert self._exec is not None
        return self._exec

    @property
    def files(self) -> files_pb2_grpc.FilesStub:
        """The generated ``corral.v1.Files`` stub."""
        self._ensure_channel()
        assert self._files is not None
        return self._files

    @property
    def sessions(self) -> session_pb2_grpc.SessionsStub:
        """The generated ``corral.v1.Sessions`` stub."""
        self._ensure_channel()
        assert self._sessions is not None
        return self._sessions

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Closes the channel (calls in flight are cancelled). Idempotent."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> "AsyncSandboxClient":
        self._ensure_channel()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncSandboxClient(endpoint={self.endpoint!r})"

    async def _unary(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        start = time.monotonic()
        try:
            return await method(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise _convert(e, timeout, start) from None

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until the channel is connected (raises UnavailableError after ``timeout``)."""
        from .errors import UnavailableError

        channel = self._ensure_channel()
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise UnavailableError(f"coordinator at {self.endpoint} not reachable within {timeout}s") from None

    async def health(self, service: str = "", timeout: Optional[float] = 5.0) -> str:
        """``grpc.health.v1.Health/Check``: ``"SERVING"``, ``"NOT_SERVING"``, ``"UNKNOWN"`` ..."""
        channel = self._ensure_channel()
        svc = service.encode("utf-8")
        # CheckRequest{service=1: string}; encoded by hand to avoid another dependency.
        request = (b"\x0a" + _varint(len(svc)) + svc) if svc else b""
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        raw: bytes = await self._unary(check, request, timeout)
        status = _read_varint_field1(raw)
        return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, str(status))

    # ------------------------------------------------------------------ corral.v1.Sandboxes

    async def create_sandbox(
        self,
        *,
        runtime: Union[RuntimeType, str, None] = None,
        cpus: Optional[float] = None,
        memory_mb: Optional[int] = None,
        timeout_seconds: Optional[int] = None,
        internet_access: bool = False,
        env: Optional[Mapping[str, str]] = None,
        labels: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        workdir: Optional[str] = None,
        image: Optional[str] = None,
        timeout: Optional[float] = None,
        disk_mb: Optional[int] = None,
        codebase_id: Optional[str] = None,
        preset: Optional[str] = None,
        permissions: Union[Iterable[RuleLike], RuleLike, None] = None,
        codebase_path: Optional[str] = None,
    ) -> SandboxInfo:
        """``Sandboxes.Create``: returns once the sandbox is RUNNING (or raises).

        Unset values use the server's defaults. ``timeout`` is the gRPC deadline of the call.
        ``disk_mb`` is the disk quota of ``/workspace`` and ``/tmp`` together (inodes in
        proportion); writes past it fail with ENOSPC inside the sandbox.

        ``codebase_id`` shows a codebase at ``codebase_path`` (default ``/workspace``) through the
        ``preset`` (view-only, read-only, agent-safe, development, full-access) and then the
        ``permissions`` rules (see :mod:`corral.permissions`); with neither, read-only. The
        sandbox's writes land in its own layer (``diff_sandbox``).
        """
        req = sandbox_pb2.CreateSandboxRequest()
        rt = RuntimeType.parse(runtime)
        if rt is not None:
            req.runtime = rt.to_pb()  # type: ignore[assignment]
        if cpus is not None:
            _set(req, "cpus", float(cpus) if isinstance(cpus, int) else cpus)
        if memory_mb is not None:
            _set(req, "memory_mb", memory_mb)
        if disk_mb is not None:
            _set(req, "disk_mb", disk_mb)
        if timeout_seconds is not None:
            _set(req, "timeout_seconds", timeout_seconds)
        _set(req, "internet_access", bool(internet_access))
        req.env.update(_str_map("env", env))
        req.labels.update(_str_map("labels", labels))
        if name:
            _set(req, "name", name)
        if workdir:
            _set(req, "workdir", workdir)
        if image:
            _set(req, "image", image)
        if codebase_id:
            _set(req, "codebase_id", codebase_id)
        if preset:
            _set(req, "preset", preset)
        req.permissions.extend(r.to_pb() for r in parse_rules(permissions))
        if codebase_path:
            _set(req, "codebase_path", codebase_path)
        resp = await self._unary(self.sandboxes.Create, req, timeout)
        return SandboxInfo.from_pb(resp.sandbox)

    async def get_sandbox(self, sandbox_id: str, *, timeout: Optional[float] = None) -> SandboxInfo:
        """``Sandboxes.Get``."""
        resp = await self._unary(self.sandboxes.Get, sandbox_pb2.GetSandboxRequest(id=sandbox_id), timeout)
        return SandboxInfo.from_pb(resp.sandbox)

    async def get_sandbox_by_name(self, name: str, *, timeout: Optional[float] = None) -> SandboxInfo:
        """``Sandboxes.GetByName``: the live sandbox holding ``name``."""
        req = sandbox_pb2.GetSandboxByNameRequest(name=name)
        resp = await self._unary(self.sandboxes.GetByName, req, timeout)
        return SandboxInfo.from_pb(resp.sandbox)

    async def list_sandboxes(
        self,
        *,
        status: StatusFilter = None,
        labels: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: Optional[float] = None,
    ) -> SandboxPage:
        """``Sandboxes.List``: one page (``page_size`` 1..1000, 0 = server default 100)."""
        req = sandbox_pb2.ListSandboxesRequest(page_token=page_token)
        _set(req, "page_size", page_size)
        req.states.extend(_states(status))  # type: ignore[arg-type]
        req.labels.update(_str_map("labels", labels))
        resp = await self._unary(self.sandboxes.List, req, timeout)
        return SandboxPage(
            sandboxes=[SandboxInfo.from_pb(s) for s in resp.sandboxes], next_page_token=resp.next_page_token
        )

    async def iter_sandboxes(
        self,
        *,
        status: StatusFilter = None,
        labels: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        limit: Optional[int] = None,
    ) -> AsyncIterator[SandboxInfo]:
        """Every matching sandbox, fetching one page at a time as the iteration needs it."""
        token = ""
        seen = 0
        while True:
            if limit is not None and seen >= limit:
                return
            size = page_size
            if limit is not None:
                size = min(page_size or 100, limit - seen)
            page = await self.list_sandboxes(status=status, labels=labels, page_size=size, page_token=token)
            for sb in page.sandboxes:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield sb
            token = page.next_page_token
            if not token:
                return

    async def destroy_sandbox(self, sandbox_id: str, *, timeout: Optional[float] = None) -> SandboxInfo:
        """``Sandboxes.Destroy``: kills everything in the sandbox and records it STOPPED."""
        req = sandbox_pb2.DestroySandboxRequest(id=sandbox_id)
        resp = await self._unary(self.sandboxes.Destroy, req, timeout)
        return SandboxInfo.from_pb(resp.sandbox)

    async def pause_sandbox(self, sandbox_id: str, *, timeout: Optional[float] = None) -> SandboxInfo:
        """``Sandboxes.Pause``: freezes every process of a RUNNING sandbox (PAUSED)."""
        resp = await self._unary(self.sandboxes.Pause, sandbox_pb2.PauseSandboxRequest(id=sandbox_id), timeout)
        return SandboxInfo.from_pb(resp.sandbox)

    async def resume_sandbox(self, sandbox_id: str, *, timeout: Optional[float] = None) -> SandboxInfo:
        """``Sandboxes.Resume``: thaws a PAUSED sandbox (RUNNING)."""
        resp = await self._unary(self.sandboxes.Resume, sandbox_pb2.ResumeSandboxRequest(id=sandbox_id), timeout)
        return SandboxInfo.from_pb(resp.sandbox)

    async def set_sandbox_timeout(
        self, sandbox_id: str, timeout_seconds: int, *, timeout: Optional[float] = None
    ) -> SandboxInfo:
        """``Sandboxes.SetTimeout``: the sandbox now expires ``timeout_seconds`` from now."""
        req = sandbox_pb2.SetSandboxTimeoutRequest(id=sandbox_id)
        _set(req, "timeout_seconds", timeout_seconds)
        resp = await self._unary(self.sandboxes.SetTimeout, req, timeout)
        return SandboxInfo.from_pb(resp.sandbox)

    # ------------------------------------------------------------------ corral.v1.Exec

    @staticmethod
    def _exec_request(
        sandbox_id: str,
        argv: Optional[Sequence[str]],
        shell: Optional[str],
        env: Optional[Mapping[str, str]],
        cwd: Optional[str],
        timeout_seconds: Optional[float],
        stdin: Union[bytes, str, None],
    ) -> exec_pb2.ExecRequest:
        if (argv is None) == (shell is None):
            raise InvalidArgumentError("argv, shell: exactly one of argv and shell must be given")
        req = exec_pb2.ExecRequest(sandbox_id=sandbox_id)
        if argv is not None:
            if isinstance(argv, str):
                raise InvalidArgumentError(
                    "argv: expected a sequence of str, got a str (use shell= for a command line)"
                )
            try:
                req.argv.extend([str(a) if not isinstance(a, str) else a for a in argv])
            except TypeError as e:
                raise InvalidArgumentError(f"argv: {e}") from None
        else:
            _set(req, "shell", shell)
        return _fill_run_options(req, env, cwd, timeout_seconds, stdin)

    async def exec_run(
        self,
        sandbox_id: str,
        *,
        argv: Optional[Sequence[str]] = None,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout_seconds: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        timeout: Optional[float] = None,
    ) -> ExecResult:
        """``Exec.Run``: runs ``argv`` (or the ``shell`` command line) to completion.

        ``timeout_seconds`` is the command's own timeout (the result then has ``timed_out``);
        ``timeout`` is the gRPC deadline of the call.
        """
        req = self._exec_request(sandbox_id, argv, shell, env, cwd, timeout_seconds, stdin)
        resp = await self._unary(self.exec.Run, req, timeout)
        return ExecResult.from_pb(resp)

    async def exec_stream(
        self,
        sandbox_id: str,
        *,
        argv: Optional[Sequence[str]] = None,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout_seconds: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        timeout: Optional[float] = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``Exec.RunStream``: yields ``{"type": "stdout"|"stderr", "data": bytes}`` in order, then
        one ``{"type": "done", "exit_code", "timed_out", "truncated", "duration_ms", "signal",
        "oom_killed"}``.

        Leaving the iteration early cancels the call, and the server then kills the command.
        """
        req = self._exec_request(sandbox_id, argv, shell, env, cwd, timeout_seconds, stdin)
        start = time.monotonic()
        call: Any = self.exec.RunStream(req, metadata=self._metadata, timeout=timeout)
        done = False
        try:
            async for ev in call:
                kind = ev.WhichOneof("event")
                if kind == "stdout":
                    yield {"type": "stdout", "data": ev.stdout}
                elif kind == "stderr":
                    yield {"type": "stderr", "data": ev.stderr}
                elif kind == "exit":
                    x = ev.exit
                    done = True
                    yield {
                        "type": "done",
                        "exit_code": x.exit_code,
                        "timed_out": x.timed_out,
                        "truncated": x.truncated,
                        "duration_ms": x.duration_ms,
                        "signal": x.signal,
                        "oom_killed": bool(getattr(x, "oom_killed", False)),
                    }
        except grpc.aio.AioRpcError as e:
            raise _convert(e, timeout, start) from None
        finally:
            if not done:
                call.cancel()

    # ------------------------------------------------------------------ corral.v1.Files

    async def read_file(self, sandbox_id: str, path: str, *, timeout: Optional[float] = None) -> bytes:
        """``Files.Read``: the file's bytes."""
        req = files_pb2.ReadFileRequest(sandbox_id=sandbox_id, path=path)
        resp = await self._unary(self.files.Read, req, timeout)
        return bytes(resp.data)

    async def write_file(
        self,
        sandbox_id: str,
        path: str,
        data: Union[bytes, bytearray, memoryview, str],
        *,
        mode: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> WriteResult:
        """``Files.Write``: creates or replaces the file (and missing parents); ``mode`` default 0644."""
        req = files_pb2.WriteFileRequest(sandbox_id=sandbox_id, path=path, data=_to_bytes("data", data))
        if mode is not None:
            _set(req, "mode", mode)
        resp = await self._unary(self.files.Write, req, timeout)
        return WriteResult(path=path, size=resp.size)

    async def list_files(self, sandbox_id: str, path: str, *, timeout: Optional[float] = None) -> list[FileInfo]:
        """``Files.List``: the entries of a directory."""
        req = files_pb2.ListFilesRequest(sandbox_id=sandbox_id, path=path)
        resp = await self._unary(self.files.List, req, timeout)
        return [FileInfo.from_pb(e, path) for e in resp.entries]

    async def remove_file(
        self, sandbox_id: str, path: str, *, recursive: bool = False, timeout: Optional[float] = None
    ) -> None:
        """``Files.Remove``: a file, or a directory (with ``recursive=True`` if it is not empty)."""
        req = files_pb2.RemoveFileRequest(sandbox_id=sandbox_id, path=path, recursive=recursive)
        await self._unary(self.files.Remove, req, timeout)


def _convert(e: grpc.aio.AioRpcError, timeout: Optional[float], start: float) -> CorralError:
    """The CorralError for a failed call. A call with a deadline that ends CANCELLED once the
    deadline has passed timed out: tonic servers answer an expired ``grpc-timeout`` with CANCELLED
    ("Timeout expired") and that answer can beat the client's own DEADLINE_EXCEEDED."""
    if timeout is not None and e.code() is grpc.StatusCode.CANCELLED and time.monotonic() - start >= timeout * 0.95:
        return SandboxTimeoutError(
            f"deadline of {timeout}s exceeded ({e.details() or 'cancelled'})", grpc.StatusCode.DEADLINE_EXCEEDED
        )
    return error_from_rpc(e)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint_field1(raw: bytes) -> int:
    """Reads field 1 (varint) of a tiny protobuf message; 0 when absent."""
    i = 0
    while i < len(raw):
        key = raw[i]
        i += 1
        if key == 0x08:
            value, shift = 0, 0
            while i < len(raw):
                b = raw[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    return value
            return value
        break
    return 0
