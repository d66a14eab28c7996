"""write_file / read_file / list / remove / upload / download / from_local."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import SMALL

from corral import (
    AsyncSandbox,
    FailedPreconditionError,
    FileInfo,
    InvalidArgumentError,
    ResourceLimits,
    RuntimeType,
    SandboxNotFoundError,
    SandboxStatus,
    WriteResult,
)


@pytest.fixture(scope="module")
async def sb() -> AsyncIterator[AsyncSandbox]:
    async with AsyncSandbox.create(labels={"suite": "test_files"}, **SMALL) as s:
        yield s


async def test_write_and_read_text(sb: AsyncSandbox) -> None:
    w = await sb.write_file("/workspace/hello.txt", "héllo\n")
    assert isinstance(w, WriteResult) and w.size == len("héllo\n".encode()) and w["path"] == "/workspace/hello.txt"
    assert await sb.read_file("/workspace/hello.txt") == "héllo\n"
    assert await sb.read_file("hello.txt") == "héllo\n"  # relative to /workspace
    assert (await sb.run("cat /workspace/hello.txt")).stdout == "héllo\n"


async def test_write_and_read_binary(sb: AsyncSandbox) -> None:
    data = bytes(range(256)) * 4
    await sb.write_file("bin/all.bytes", data)
    assert await sb.read_file("bin/all.bytes", binary=True) == data
    assert await sb.read_bytes("bin/all.bytes") == data
    assert (await sb.run("wc -c < bin/all.bytes")).stdout.strip() == "1024"


async def test_large_file_round_trip(sb: AsyncSandbox) -> None:
    data = os.urandom(6 * 1024 * 1024)  # larger than gRPC's default 4 MiB message limit
    w = await sb.write_file("/tmp/big.bin", data)
    assert w.size == len(data)
    assert await sb.read_bytes("/tmp/big.bin") == data


async def test_write_creates_parents_and_sets_mode(sb: AsyncSandbox) -> None:
    await sb.write_file("deep/er/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    r = await sb.run("./deep/er/run.sh")
    assert r.stdout == "ran\n"
    entries = await sb.list_directory("/workspace/deep/er")
    assert [(e.name, stat.S_IMODE(e.mode)) for e in entries] == [("run.sh", 0o755)]


async def test_command_output_is_visible_to_read_file(sb: AsyncSandbox) -> None:
    await sb.run("mkdir -p /tmp/x && echo made > /tmp/x/f")
    assert await sb.read_file("/tmp/x/f") == "made\n"


async def test_list_directory(sb: AsyncSandbox) -> None:
    await sb.write_file("ls/a.txt", "aaa")
    await sb.write_file("ls/sub/b.txt", "b")
    await sb.run("ln -s a.txt /workspace/ls/link")
    entries = {e.name: e for e in await sb.list_directory("/workspace/ls")}
    assert set(entries) == {"a.txt", "sub", "link"}
    a = entries["a.txt"]
    assert isinstance(a, FileInfo)
    assert (a.is_dir, a.is_file, a.size, a.path, a.type) == (False, True, 3, "/workspace/ls/a.txt", "file")
    assert a["size"] == 3 and a["type"] == "file"
    assert a.modified_at is not None
    assert entries["sub"].is_dir and entries["sub"].type == "dir"
    assert entries["link"].is_symlink and entries["link"].type == "symlink"
    rec = await sb.list_files("/workspace/ls", recursive=True)
    assert sorted(e.path for e in rec) == [
        "/workspace/ls/a.txt",
        "/workspace/ls/link",
        "/workspace/ls/sub",
        "/workspace/ls/sub/b.txt",
    ]


async def test_remove_file(sb: AsyncSandbox) -> None:
    await sb.write_file("rm/one.txt", "1")
    await sb.write_file("rm/d/two.txt", "2")
    await sb.remove_file("rm/one.txt")
    with pytest.raises(SandboxNotFoundError):
        await sb.read_file("rm/one.txt")
    with pytest.raises(FailedPreconditionError, match="not empty"):
        await sb.remove_file("rm/d")
    await sb.remove_file("rm/d", recursive=True)
    assert await sb.list_directory("rm") == []


async def test_file_errors(sb: AsyncSandbox) -> None:
    with pytest.raises(SandboxNotFoundError, match="not found"):
        await sb.read_file("/workspace/does-not-exist")
    with pytest.raises(InvalidArgumentError, match="directory"):
        await sb.read_file("/workspace")
    with pytest.raises(InvalidArgumentError):
        await sb.read_file("/etc/passwd")  # outside /workspace and /tmp
    with pytest.raises(InvalidArgumentError):
        await sb.write_file("../escape.txt", "x")


def make_tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("VALUE = 42\n")
    (root / "main.py").write_text("from src.pkg.mod import VALUE\nprint(VALUE)\n")
    (root / "run.sh").write_text("#!/bin/sh\necho script\n")
    (root / "run.sh").chmod(0o755)
    (root / "data.bin").write_bytes(bytes(range(256)))
    (root / "empty").mkdir()


async def test_upload_and_download_a_tree(sb: AsyncSandbox, tmp_path: Path) -> None:
    src = tmp_path / "src-tree"
    make_tree(src)
    written = await sb.upload(src, "/workspace/up")
    assert sorted(written) == [
        "/workspace/up/data.bin",
        "/workspace/up/main.py",
        "/workspace/up/run.sh",
        "/workspace/up/src/pkg/mod.py",
    ]
    r = await sb.run(
        "cd /workspace/up && python3 main.py && ./run.sh && test -d empty && echo has-empty",
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert r.stdout == "42\nscript\nhas-empty\n", r.stderr

    await sb.run("echo generated > /workspace/up/src/out.txt")
    dst = tmp_path / "back"
    files = await sb.download("/workspace/up", dst)
    assert sorted(p.relative_to(dst).as_posix() for p in files) == [
        "data.bin",
        "main.py",
        "run.sh",
        "src/out.txt",
        "src/pkg/mod.py",
    ]
    assert (dst / "data.bin").read_bytes() == bytes(range(256))
    assert (dst / "src" / "out.txt").read_text() == "generated\n"
    assert (dst / "empty").is_dir()
    assert os.access(dst / "run.sh", os.X_OK)


async def test_upload_and_download_single_files(sb: AsyncSandbox, tmp_path: Path) -> None:
    f = tmp_path / "note.txt"
    f.write_text("single\n")
    assert await sb.upload(f, "/tmp/notes/") == ["/tmp/notes/note.txt"]
    assert await sb.upload(f, "/tmp/renamed.txt") == ["/tmp/renamed.txt"]
    assert await sb.read_file("/tmp/notes/note.txt") == "single\n"
    out = await sb.download("/tmp/renamed.txt", tmp_path / "got.txt")
    assert out == [tmp_path / "got.txt"] and (tmp_path / "got.txt").read_text() == "single\n"
    into_dir = await sb.download("/tmp/notes/note.txt", tmp_path)  # an existing directory
    assert into_dir == [tmp_path / "note.txt"]
    with pytest.raises(SandboxNotFoundError):
        await sb.download("/tmp/nothing-here", tmp_path / "x")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        await sb.upload(tmp_path / "missing", "/tmp/m")


async def test_upload_with_ignore_patterns(sb: AsyncSandbox, tmp_path: Path) -> None:
    src = tmp_path / "ign"
    make_tree(src)
    (src / "debug.log").write_text("log")
    (src / "src" / "pkg" / "cache.pyc").write_text("pyc")
    written = await sb.upload(src, "/workspace/ign", ignore_patterns=["*.log", "*.pyc", "/data.bin"])
    assert sorted(w.removeprefix("/workspace/ign/") for w in written) == ["main.py", "run.sh", "src/pkg/mod.py"]


async def test_from_local_respects_gitignore_and_ignore_patterns(tmp_path: Path, labels: dict[str, str]) -> None:
    proj = tmp_path / "proj"
    make_tree(proj)
    (proj / ".git").mkdir()
    (proj / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (proj / ".gitignore").write_text("# build output\nbuild/\n*.log\n!keep.log\n/secret.txt\n")
    (proj / "build").mkdir()
    (proj / "build" / "artifact.o").write_text("obj")
    (proj / "app.log").write_text("noise")
    (proj / "keep.log").write_text("kept")
    (proj / "secret.txt").write_text("hunter2")
    (proj / "src" / "secret.txt").write_text("not anchored: kept")
    (proj / "src" / ".gitignore").write_text("generated_*\n")
    (proj / "src" / "generated_x.py").write_text("x")
    (proj / "node_modules" / "dep").mkdir(parents=True)
    (proj / "node_modules" / "dep" / "index.js").write_text("js")

    async with AsyncSandbox.from_local(
        proj,
        runtime=RuntimeType.BWRAP,
        resources=ResourceLimits(memory_mb=64),
        labels=labels,
        ignore_patterns=["node_modules/", "data.bin"],
    ) as sb:
        listed = sorted(e.path.removeprefix("/workspace/") for e in await sb.list_files("/workspace", recursive=True))
        assert listed == [
            ".gitignore",
            "empty",
            "keep.log",
            "main.py",
            "run.sh",
            "src",
            "src/.gitignore",
            "src/pkg",
            "src/pkg/mod.py",
            "src/secret.txt",
        ]
        r = await sb.run("python3 main.py")
        assert r.stdout == "42\n"
        assert (await sb.info()).labels == labels
        assert (await sb.info()).memory_mb == 64
        sid = sb.sandbox_id
    assert [s.status for s in await AsyncSandbox.list(labels=labels)] == [SandboxStatus.STOPPED]
    assert sid


async def test_from_local_awaitable_and_errors(tmp_path: Path, labels: dict[str, str]) -> None:
    proj = tmp_path / "p2"
    proj.mkdir()
    (proj / "x.txt").write_text("x")
    sb = await AsyncSandbox.from_local(proj, labels=labels, resources=ResourceLimits(memory_mb=64))
    try:
        assert await sb.read_file("/workspace/x.txt") == "x"
    finally:
        await sb.destroy()
    with pytest.raises(InvalidArgumentError, match="not a local directory"):
        AsyncSandbox.from_local(tmp_path / "nope")
    # A failed upload destroys the sandbox it made.
    big = proj / "too-big.bin"
    with open(big, "wb") as f:
        f.truncate(65 * 1024 * 1024)  # over the server's 64 MiB max_file_bytes
    with pytest.raises(InvalidArgumentError):
        await AsyncSandbox.from_local(proj, labels=labels, resources=ResourceLimits(memory_mb=64))
    assert {s.status for s in await AsyncSandbox.list(labels=labels)} == {SandboxStatus.STOPPED}


async def test_relative_remote_paths_are_under_workspace(tmp_path: Path, labels: dict[str, str]) -> None:
    make_tree(tmp_path / "t")
    async with AsyncSandbox.create(labels=labels, workdir="/tmp", **SMALL) as sb:
        await sb.upload(tmp_path / "t", "rel")
        names = sorted(e.name for e in await sb.list_directory("/workspace/rel"))
        assert names == ["data.bin", "empty", "main.py", "run.sh", "src"]
        assert (await sb.run("ls /tmp")).stdout == ""
        got = await sb.download("rel/src", tmp_path / "src-back")
        assert [p.relative_to(tmp_path / "src-back").as_posix() for p in got] == ["pkg/mod.py"]
