"""gRPC status codes → exception classes, with the server's message."""

from __future__ import annotations

import uuid

import grpc
import pytest
from conftest import SMALL

import corral
from corral import (
    AlreadyExistsError,
    AsyncSandbox,
    AsyncSandboxClient,
    CorralError,
    FailedPreconditionError,
    InvalidArgumentError,
    QuotaExceededError,
    SandboxNotFoundError,
    SandboxTimeoutError,
    UnavailableError,
)
from corral.errors import error_class, error_from_rpc


async def test_bad_memory_is_invalid_argument_naming_the_field(labels: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError) as ei:
        await AsyncSandbox.create(memory_mb=1, labels=labels)
    err = ei.value
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and err.code_name == "INVALID_ARGUMENT"
    assert err.message.startswith("memory_mb:") and "16" in err.message
    assert str(err) == err.message
    assert isinstance(err, CorralError) and isinstance(err, ValueError)
    assert await AsyncSandbox.list(labels=labels) == []


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"cpus": -1}, "cpus"),
        ({"timeout_seconds": -5}, "timeout_seconds"),
        ({"labels": {"bad key!": "v"}}, "labels"),
        ({"env_vars": {"1BAD": "v"}}, "env"),
        ({"name": "Has Upper"}, "name"),
        ({"workdir": "/etc"}, "workdir"),
    ],
)
async def test_invalid_create_fields_are_named(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        await AsyncSandbox.create(**{**SMALL, **kwargs})


async def test_wrong_python_type_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(InvalidArgumentError, match="memory_mb"):
        await AsyncSandbox.create(memory_mb="lots")  # type: ignore[arg-type]


async def test_unknown_id_is_sandbox_not_found() -> None:
    missing = "sb-" + uuid.uuid4().hex
    with pytest.raises(SandboxNotFoundError) as ei:
        await AsyncSandbox.connect(missing)
    assert missing in ei.value.message and ei.value.code is grpc.StatusCode.NOT_FOUND
    assert isinstance(ei.value, LookupError)
    with pytest.raises(SandboxNotFoundError, match="no sandbox named"):
        await AsyncSandbox.connect("no-such-name")
    async with AsyncSandboxClient() as c:
        with pytest.raises(SandboxNotFoundError):
            await c.exec_run(missing, shell="true")
        with pytest.raises(SandboxNotFoundError):
            await c.destroy_sandbox(missing)
        with pytest.raises(InvalidArgumentError, match="id"):
            await c.get_sandbox("not-an-id")


async def test_duplicate_name_is_already_exists(labels: dict[str, str]) -> None:
    name = f"dup-{uuid.uuid4().hex[:10]}"
    async with AsyncSandbox.create(name=name, labels=labels, **SMALL):
        with pytest.raises(AlreadyExistsError, match=name):
            await AsyncSandbox.create(name=name, labels=labels, **SMALL)


async def test_no_room_is_quota_exceeded(labels: dict[str, str]) -> None:
    with pytest.raises(QuotaExceededError, match="room") as ei:
        await AsyncSandbox.create(memory_mb=262144, labels=labels)
    assert ei.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await AsyncSandbox.list(status="running", labels=labels) == []


async def test_operations_on_a_destroyed_sandbox_fail_precondition(labels: dict[str, str]) -> None:
    sb = await AsyncSandbox.create(labels=labels, **SMALL)
    await sb.destroy()
    with pytest.raises(FailedPreconditionError, match="STOPPED"):
        await sb.run("true")
    with pytest.raises(FailedPreconditionError):
        await sb.write_file("a", "b")
    await sb.close()


async def test_bad_exec_fields(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        with pytest.raises(InvalidArgumentError, match="cwd"):
            await sb.run("pwd", cwd="/etc")
        with pytest.raises(InvalidArgumentError, match="timeout_seconds"):
            await sb.run("true", timeout=-1)
        with pytest.raises(InvalidArgumentError, match="stdin"):
            await sb.run("cat", stdin=b"x" * (256 * 1024 + 1))
        with pytest.raises(InvalidArgumentError, match="env"):
            await sb.run("true", env={"BAD-NAME": "x"})


async def test_unreachable_endpoint_is_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(UnavailableError) as ei:
        await AsyncSandbox.create(endpoint=f"127.0.0.1:{port}")
    assert isinstance(ei.value, ConnectionError)


async def test_deadline_is_sandbox_timeout_error(labels: dict[str, str]) -> None:
    async with AsyncSandbox.create(labels=labels, **SMALL) as sb:
        with pytest.raises(SandboxTimeoutError) as ei:
            await sb.client.exec_run(sb.sandbox_id, shell="sleep 5", timeout=0.3)
        assert ei.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert isinstance(ei.value, TimeoutError)


def test_every_code_has_a_class() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        cls = error_class(code)
        assert issubclass(cls, CorralError)
        assert cls is not CorralError, code
        assert cls.default_code is code
        assert cls.__name__ in corral.__all__


def test_error_from_rpc_keeps_code_and_message() -> None:
    class FakeRpcError(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return "no node has room"

    err = error_from_rpc(FakeRpcError())
    assert type(err) is QuotaExceededError
    assert (err.message, err.code) == ("no node has room", grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert repr(err) == "QuotaExceededError(code=RESOURCE_EXHAUSTED, message='no node has room')"
    assert corral.NotFoundError is SandboxNotFoundError
    assert corral.ResourceExhaustedError is QuotaExceededError
