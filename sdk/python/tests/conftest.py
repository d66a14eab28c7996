"""Test fixtures: a real ``corral dev`` for the whole session.

The binary is ``$CORRAL_BIN``, else ``target/debug/corral`` or ``$CARGO_TARGET_DIR/debug/corral``
(relative to the repository root). A missing binary fails the run with a clear message: build it
with ``cargo build -p corral-cli -p corral-init``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SDK_ROOT = Path(__file__).resolve().parents[1]


def find_corral_bin() -> Path:
    explicit = os.environ.get("CORRAL_BIN")
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            pytest.fail(f"CORRAL_BIN={explicit} does not exist", pytrace=False)
        return p
    candidates = []
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        t = Path(target)
        candidates.append((t if t.is_absolute() else REPO_ROOT / t) / "debug" / "corral")
    candidates.append(REPO_ROOT / "target" / "debug" / "corral")
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    pytest.fail(
        f"the corral binary was not found (tried {tried}). Build it with "
        "`cargo build -p corral-cli -p corral-init` or point CORRAL_BIN at it.",
        pytrace=False,
    )
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"corral dev exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}", pytrace=False
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(
        f"corral dev did not listen on {port} within {timeout}s:\n{log.read_text(errors='replace')[-4000:]}",
        pytrace=False,
    )


def wait_for_agent(endpoint: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Waits until the server can place a sandbox (its agent has registered), so the first test
    does not race the agent's registration ("no agent is registered")."""
    from corral import FailedPreconditionError, Sandbox

    deadline = time.monotonic() + timeout
    while True:
        try:
            Sandbox.create(endpoint=endpoint, memory_mb=16, timeout_seconds=30).destroy()
            return
        except FailedPreconditionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"corral dev never registered its agent:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.1)


class DevServer:
    def __init__(self, endpoint: str, bin: Path, state_dir: Path, log: Path) -> None:
        self.endpoint = endpoint
        self.bin = bin
        self.state_dir = state_dir
        self.log = log


@pytest.fixture(scope="session")
def corral_dev() -> Iterator[DevServer]:
    """``corral dev`` on a free port with a private state dir; killed at the end of the session.

    Sets CORRAL_ENDPOINT for the session, so ``AsyncSandbox.create()`` with no endpoint finds it.
    """
    binary = find_corral_bin()
    work = Path(tempfile.mkdtemp(prefix="corral-py-sdk-"))
    work.chmod(0o755)  # sandboxes run unprivileged: their directories must be reachable
    state = work / "state"
    state.mkdir()
    log = work / "corral-dev.log"
    port = free_port()
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "dev", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    endpoint = f"127.0.0.1:{port}"
    old = os.environ.get("CORRAL_ENDPOINT")
    try:
        wait_for_port(port, proc, log)
        wait_for_agent(endpoint, proc, log)
        os.environ["CORRAL_ENDPOINT"] = endpoint
        yield DevServer(endpoint, binary, state, log)
    finally:
        if old is None:
            os.environ.pop("CORRAL_ENDPOINT", None)
        else:
            os.environ["CORRAL_ENDPOINT"] = old
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def _server(request: pytest.FixtureRequest) -> Optional[DevServer]:
    """Every test runs against the session's server (and CORRAL_ENDPOINT points at it), except
    those marked ``unit``: pure client-side tests, which ``pytest -m unit`` runs without a binary.
    Everything else fails (never skips) when the server cannot be started."""
    if request.node.get_closest_marker("unit") is not None:
        return None
    corral_dev: DevServer = request.getfixturevalue("corral_dev")
    os.environ["CORRAL_ENDPOINT"] = corral_dev.endpoint
    return corral_dev


@pytest.fixture
def endpoint(corral_dev: DevServer) -> str:
    return corral_dev.endpoint


@pytest.fixture
def labels() -> dict[str, str]:
    """Labels unique to one test, to find exactly its sandboxes with list()."""
    return {"test-run": uuid.uuid4().hex[:16]}


# Small sandboxes: the dev node's memory capacity is the host's RAM, and 100 sandboxes at the
# default 512 MiB would not fit on a small machine.
SMALL = {"memory_mb": 64}


@pytest.fixture
def python() -> str:
    return sys.executable
