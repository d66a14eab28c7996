"""Endpoint / API key resolution: argument → env → config file → default; the key on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from corral import AsyncSandbox, AsyncSandboxClient, InvalidArgumentError, Sandbox, SandboxStatus, resolve_config
from corral.v1 import sandbox_pb2, sandbox_pb2_grpc


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME with none of the SDK's variables set."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in ("CORRAL_ENDPOINT", "CORRAL_API_KEY", "CORRAL_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return h


def write_config(home: Path, text: str) -> Path:
    p = home / ".config" / "corral" / "config.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_default(home: Path) -> None:
    c = resolve_config()
    assert (c.target, c.secure, c.api_key, c.endpoint_source) == ("127.0.0.1:50051", False, None, "default")


def test_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_ENDPOINT", "http://10.0.0.5:7000")
    monkeypatch.setenv("CORRAL_API_KEY", "env-key")
    c = resolve_config()
    assert (c.target, c.api_key, c.endpoint_source, c.api_key_source) == (
        "10.0.0.5:7000",
        "env-key",
        "environment",
        "environment",
    )


def test_arguments_beat_environment_and_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(home, 'endpoint = "file:1"\napi_key = "file-key"\n')
    monkeypatch.setenv("CORRAL_ENDPOINT", "env:2")
    monkeypatch.setenv("CORRAL_API_KEY", "env-key")
    c = resolve_config("arg:3", "arg-key")
    assert (c.target, c.api_key, c.endpoint_source) == ("arg:3", "arg-key", "argument")


def test_file_and_each_setting_resolves_on_its_own(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(home, 'endpoint = "https://corral.example:443"\napi_key = "file-key"\n')
    c = resolve_config()
    assert (c.target, c.secure, c.api_key) == ("corral.example:443", True, "file-key")
    assert c.endpoint_source == str(path) == c.api_key_source
    monkeypatch.setenv("CORRAL_ENDPOINT", "env:9")
    c = resolve_config()
    assert (c.target, c.api_key) == ("env:9", "file-key")


def test_client_table_xdg_and_explicit_path(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(home, '[client]\nendpoint = "http://tabled:1"\n')
    assert resolve_config().target == "tabled:1"
    xdg = tmp_path / "xdg"
    (xdg / "corral").mkdir(parents=True)
    (xdg / "corral" / "config.toml").write_text('endpoint = "xdg:2"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert resolve_config().target == "xdg:2"
    explicit = tmp_path / "mine.toml"
    explicit.write_text('endpoint = "explicit:3"\n')
    monkeypatch.setenv("CORRAL_CONFIG", str(explicit))
    assert resolve_config().target == "explicit:3"


def test_bad_config_file_and_endpoint(home: Path) -> None:
    p = write_config(home, "endpoint = [unclosed\n")
    with pytest.raises(InvalidArgumentError, match=str(p)):
        resolve_config()
    write_config(home, "endpoint = 5\n")
    with pytest.raises(InvalidArgumentError, match="endpoint must be a string"):
        resolve_config()
    with pytest.raises(InvalidArgumentError, match="endpoint"):
        resolve_config("http://host:1/path")


async def test_config_file_endpoint_is_used(home: Path, endpoint: str, labels: dict[str, str]) -> None:
    write_config(home, f'endpoint = "http://{endpoint}"\n')
    async with AsyncSandbox.create(labels=labels, memory_mb=64) as sb:
        assert sb.client.endpoint == endpoint
        assert (await sb.run("echo via-file")).stdout == "via-file\n"


async def test_env_beats_a_broken_config_file(
    home: Path, endpoint: str, labels: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home, 'endpoint = "127.0.0.1:1"\n')
    monkeypatch.setenv("CORRAL_ENDPOINT", endpoint)
    async with AsyncSandbox.create(labels=labels, memory_mb=64) as sb:
        assert (await sb.status()) is SandboxStatus.RUNNING


def test_sync_mirror_uses_the_config_file(home: Path, endpoint: str, labels: dict[str, str]) -> None:
    write_config(home, f'endpoint = "{endpoint}"\n')
    with Sandbox.create(labels=labels, memory_mb=64) as sb:
        assert sb.run("echo sync-file").stdout == "sync-file\n"


class EchoAuth(sandbox_pb2_grpc.SandboxesServicer):
    """Answers Get with the request's authorization metadata as the sandbox name."""

    async def Get(self, request, context):  # type: ignore[no-untyped-def,override]
        md = dict(context.invocation_metadata())
        return sandbox_pb2.GetSandboxResponse(
            sandbox=sandbox_pb2.Sandbox(id=request.id, name=md.get("authorization", "<none>"))
        )


@pytest.fixture
async def auth_echo_server() -> AsyncIterator[str]:
    server = grpc.aio.server()
    sandbox_pb2_grpc.add_SandboxesServicer_to_server(EchoAuth(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_api_key_is_sent_as_bearer_metadata(
    home: Path, auth_echo_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = "sb-" + "a" * 32
    async with AsyncSandboxClient(auth_echo_server, api_key="k-123") as c:
        assert (await c.get_sandbox(sid)).name == "Bearer k-123"
    async with AsyncSandboxClient(auth_echo_server) as c:
        assert (await c.get_sandbox(sid)).name == "<none>"
    monkeypatch.setenv("CORRAL_API_KEY", "from-env")
    sb = await AsyncSandbox.connect(sid, endpoint=auth_echo_server)
    assert sb.name == "Bearer from-env"
    await sb.close()
    monkeypatch.delenv("CORRAL_API_KEY")
    write_config(home, 'api_key = "from-file"\n')
    async with AsyncSandboxClient(auth_echo_server) as c:
        assert (await c.get_sandbox(sid)).name == "Bearer from-file"
