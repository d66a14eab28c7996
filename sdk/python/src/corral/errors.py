"""Exceptions: one class per gRPC status code, all subclasses of :class:`CorralError`.

Every error carries the server's message (``.message``, also ``str(err)``) and the gRPC code
(``.code``, a :class:`grpc.StatusCode`; ``.code_name`` is its name, e.g. ``"NOT_FOUND"``).
Errors the SDK detects itself before calling the server (an unknown language for ``run_code``, a
local path that does not exist, ...) use the same classes, so one ``except`` covers both.
"""

from __future__ import annotations

from typing import Optional

import grpc

__all__ = [
    "CorralError",
    "RequestCancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "SandboxTimeoutError",
    "JobTimeoutError",
    "SandboxNotFoundError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "UploadError",
    "DownloadError",
    "error_from_rpc",
]


class CorralError(Exception):
    """Base class of every error raised by the Corral SDK."""

    #: The gRPC code this class stands for.
    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str = "", code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code: grpc.StatusCode = code if code is not None else self.default_code

    @property
    def code_name(self) -> str:
        return self.code.name

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, message={self.message!r})"


class RequestCancelledError(CorralError):
    """CANCELLED: the call was cancelled (by the server, or by closing the client)."""

    default_code = grpc.StatusCode.CANCELLED


class UnknownError(CorralError):
    """UNKNOWN."""

    default_code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(CorralError, ValueError):
    """INVALID_ARGUMENT: a request field is missing, malformed or out of range; the message names it."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class SandboxTimeoutError(CorralError, TimeoutError):
    """DEADLINE_EXCEEDED: the call did not finish before its deadline."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class JobTimeoutError(SandboxTimeoutError):
    """A job did not end before the client's timeout (``wait_for_job(..., timeout=)``,
    ``execute_code(..., wait_timeout=)``). ``.job_id`` names it and ``.job`` is the job as last
    seen (a :class:`~corral.JobInfo`); the job itself keeps running unless the helper says otherwise."""

    def __init__(self, message: str, job_id: str = "", job: Optional[object] = None) -> None:
        super().__init__(message, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.job_id = job_id
        self.job = job


class SandboxNotFoundError(CorralError, LookupError):
    """NOT_FOUND: no such sandbox (or file inside it)."""

    default_code = grpc.StatusCode.NOT_FOUND


NotFoundError = SandboxNotFoundError


class AlreadyExistsError(CorralError):
    """ALREADY_EXISTS: e.g. a live sandbox already has that name."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(CorralError, PermissionError):
    """PERMISSION_DENIED."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class QuotaExceededError(CorralError):
    """RESOURCE_EXHAUSTED: no node has room for the sandbox, or a quota is used up."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


ResourceExhaustedError = QuotaExceededError


class FailedPreconditionError(CorralError):
    """FAILED_PRECONDITION: the sandbox is in the wrong state for the operation (e.g. not running),
    or an idempotency key was used before with a different job or batch."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(CorralError):
    """ABORTED: a concurrent change won; retrying is safe."""

    default_code = grpc.StatusCode.ABORTED


class OutOfRangeError(CorralError):
    """OUT_OF_RANGE."""

    default_code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(CorralError):
    """UNIMPLEMENTED: the server does not offer this call."""

    default_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(CorralError):
    """INTERNAL: a bug or broken invariant on the server."""

    default_code = grpc.StatusCode.INTERNAL


class UnavailableError(CorralError, ConnectionError):
    """UNAVAILABLE: the coordinator (or its store/bus) cannot be reached; retrying later may work."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DataLossError(CorralError):
    """DATA_LOSS."""

    default_code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(CorralError):
    """UNAUTHENTICATED: missing or wrong API key."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class UploadError(InvalidArgumentError):
    """A local directory cannot be uploaded as a codebase, found before anything is sent: a hard
    link, a device, fifo or socket, a symlink that is absolute or leaves the tree, set-id bits, a
    name that is not UTF-8, a file that cannot be read or changed while it was sent. ``.path`` is
    the offending path (relative to the directory) and ``.reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", grpc.StatusCode.INVALID_ARGUMENT)
        self.path = path
        self.reason = reason


class DownloadError(CorralError):
    """A codebase download cannot be written where it was asked to go: a tar member that would
    land outside the destination (absolute, ``..``, a symlink leaving it) or that is not a file,
    directory or symlink, or a destination of the wrong kind. Nothing of the archive is written
    when a member is refused. ``.path`` names the member, ``.reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", grpc.StatusCode.DATA_LOSS)
        self.path = path
        self.reason = reason


_BY_CODE: dict[grpc.StatusCode, type[CorralError]] = {
    cls.default_code: cls
    for cls in (
        RequestCancelledError,
        UnknownError,
        InvalidArgumentError,
        SandboxTimeoutError,
        SandboxNotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        QuotaExceededError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_class(code: grpc.StatusCode) -> type[CorralError]:
    """The exception class for a gRPC code."""
    return _BY_CODE.get(code, CorralError)


def error_from_rpc(err: grpc.RpcError) -> CorralError:
    """Converts a gRPC error (``grpc.aio.AioRpcError`` or a sync ``grpc.RpcError``) to a CorralError."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = details_fn() if callable(details_fn) else None
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    message = details or f"gRPC call failed with {code.name}"
    exc = error_class(code)(message, code)
    return exc
