"""Codebases against corral dev: the store (upload, dedup, listing, download, delete), sandboxes
on a codebase through presets and rules (seen from inside), copy-on-write layers and diff, and
the errors for bad rules."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import SMALL

from corral import (
    PRESETS,
    AsyncSandbox,
    AsyncSandboxClient,
    ChangeKind,
    FailedPreconditionError,
    FileKind,
    InvalidArgumentError,
    NotFoundError,
    Permission,
    PermissionRule,
    Sandbox,
)


def fixture_repo(root: Path) -> str:
    """A small repository: code, docs, secrets, ignored and default-ignored files, an empty
    directory, a symlink, and one file unique to this call (so its first upload sends bytes)."""
    unique = uuid.uuid4().hex
    files = {
        "README.md": "# demo\n",
        "src/main.py": "print('hello')\n",
        "src/util/helpers.py": "X = 1\n",
        "docs/guide.md": "guide\n",
        "notes.txt": "private notes\n",
        ".env": "SECRET=1\n",
        "secrets/api.txt": "key\n",
        "id.key": "k\n",
        "build/out.o": "ignored\n",
        ".gitignore": "build/\n",
        ".git/config": "[core]\n",
        "node_modules/x/index.js": "1\n",
        "unique.txt": unique + "\n",
    }
    for rel, body in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    (root / "output").mkdir()
    os.symlink("src/main.py", root / "main-link.py")
    return unique


@pytest.fixture
async def client() -> AsyncIterator[AsyncSandboxClient]:
    async with AsyncSandboxClient() as c:
        yield c


async def test_store_upload_list_download_delete(
    client: AsyncSandboxClient, tmp_path: Path, labels: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    unique = fixture_repo(repo)
    cb = await client.create_codebase("py-store", owner="sdk-tests", labels=labels)
    assert cb.id.startswith("cb-") and cb.name == "py-store" and cb.owner == "sdk-tests"
    assert (cb.labels, cb.digest, cb.file_count) == (labels, "", 0)

    seen: list[tuple[int, int, int, int]] = []
    first = await client.upload_codebase(cb.id, repo, progress=lambda *a: seen.append(a))
    assert first.bytes_received > 0 and first.files_received > 0 and seen[-1][0] == seen[-1][1] > 0
    listed = [f.path async for f in client.iter_codebase_files(cb.id)]
    for want in [
        "README.md",
        "src/main.py",
        "src/util/helpers.py",
        "docs/guide.md",
        "output",
        "main-link.py",
        ".gitignore",
    ]:
        assert want in listed
    for gone in [".env", "secrets/api.txt", "id.key", "build/out.o", ".git/config", "node_modules/x/index.js"]:
        assert gone not in listed
    files = {f.path: f for f in (await client.list_codebase_files(cb.id)).files}
    assert files["main-link.py"].kind is FileKind.SYMLINK and files["main-link.py"].link_target == "src/main.py"
    assert files["output"].is_dir and files["src/main.py"].size == len("print('hello')\n")

    got = await client.get_codebase(cb.id)
    assert got.digest and got.file_count == first.codebase.file_count and got.sandboxes == 0
    assert got.size_bytes == sum(f.size for f in files.values() if f.is_file)
    assert cb.id in [c.id async for c in client.iter_codebases(labels)]

    # The same tree again: nothing to send.
    again = await client.upload_codebase(cb.id, repo)
    assert again.bytes_received == 0
    assert again.bytes_deduplicated == got.size_bytes and again.codebase.digest == got.digest

    assert await client.download_codebase(cb.id, "src/main.py") == b"print('hello')\n"
    out = tmp_path / "out"
    written = await client.download_codebase_to(cb.id, "", out)
    assert {p.relative_to(out).as_posix() for p in written} >= {"src/main.py", "output", "main-link.py"}
    assert (out / "unique.txt").read_text() == unique + "\n"
    assert os.readlink(out / "main-link.py") == "src/main.py" and (out / "output").is_dir()
    src = [
        p.relative_to(tmp_path / "src").as_posix()
        for p in await client.download_codebase_to(cb.id, "src", tmp_path / "src")
    ]
    assert sorted(src) == ["main.py", "util", "util/helpers.py"]
    with pytest.raises(NotFoundError):
        await client.download_codebase(cb.id, "no/such/path")

    # Replace=False adds; replace=True (the default) makes the upload the whole tree.
    extra = tmp_path / "extra"
    (extra / "more").mkdir(parents=True)
    (extra / "more" / "x.txt").write_text("x\n")
    await client.upload_codebase(cb.id, extra, replace=False)
    paths = [f.path async for f in client.iter_codebase_files(cb.id)]
    assert "more/x.txt" in paths and "src/main.py" in paths
    await client.upload_codebase(cb.id, extra)
    assert [f.path async for f in client.iter_codebase_files(cb.id)] == ["more", "more/x.txt"]

    deleted = await client.delete_codebase(cb.id)
    assert deleted.id == cb.id
    with pytest.raises(NotFoundError):
        await client.get_codebase(cb.id)
    with pytest.raises(InvalidArgumentError, match="id"):
        await client.get_codebase("cb-nope")


async def test_presets_are_listed(client: AsyncSandboxClient) -> None:
    presets = await client.list_presets()
    assert tuple(p.name for p in presets) == PRESETS
    agent_safe = next(p for p in presets if p.name == "agent-safe")
    assert agent_safe.description
    assert PermissionRule("/output/**", Permission.WRITE) in agent_safe.rules


async def test_from_local_agent_safe_sandbox_seen_from_inside(tmp_path: Path, labels: dict[str, str]) -> None:
    fixture_repo(tmp_path)
    async with AsyncSandbox.from_local(
        tmp_path,
        preset="agent-safe",
        permissions=["docs/**=write", {"pattern": "notes.txt", "permission": "view", "type": "file"}],
        include_secrets=True,  # uploaded, then hidden by agent-safe
        labels=labels,
        **SMALL,
    ) as sb:
        cb_id = sb.codebase_id
        assert cb_id.startswith("cb-") and sb.preset == "agent-safe"
        assert sb.upload_result is not None and sb.upload_result.files_received > 0
        info = await sb.info()
        assert info.codebase_path == "/workspace" and info.preset == "agent-safe"
        assert info.permissions == [
            PermissionRule("docs/**", Permission.WRITE),
            PermissionRule("notes.txt", Permission.VIEW, "file"),
        ]

        r = await sb.run("cat /workspace/src/main.py")
        assert (r.exit_code, r.stdout) == (0, "print('hello')\n")
        r = await sb.run("cat /workspace/.env")
        assert r.exit_code != 0 and "No such file" in r.stderr
        listing = (await sb.run("ls -a /workspace")).stdout.split()
        assert ".env" not in listing and "secrets" not in listing and "notes.txt" in listing
        r = await sb.run("cat /workspace/notes.txt")
        assert r.exit_code != 0 and "Permission denied" in r.stderr

        r = await sb.run("echo hi > /workspace/output/x && cat /workspace/output/x")
        assert (r.exit_code, r.stdout) == (0, "hi\n"), r.stderr
        r = await sb.run("echo x > /workspace/src/new.py")
        assert r.exit_code != 0 and "Permission denied" in r.stderr
        r = await sb.run("echo more >> /workspace/docs/guide.md")
        assert r.exit_code == 0, r.stderr
        assert await sb.read_file("/workspace/output/x") == "hi\n"

        diff = await sb.diff()
        assert "output/x" in diff.added and "docs/guide.md" in diff.modified and not diff.truncated
        added = next(c for c in diff if c.path == "output/x")
        assert (added.kind, added.file_kind, added.size) == (ChangeKind.ADDED, FileKind.FILE, 3)
        assert not any(c.path.startswith("src/") for c in diff)

        # Another sandbox on the same codebase does not see the first one's writes.
        async with AsyncSandbox.from_codebase(cb_id, "agent-safe", labels=labels, **SMALL) as other:
            r = await other.run("cat /workspace/output/x")
            assert r.exit_code != 0 and "No such file" in r.stderr
            assert (await other.run("cat /workspace/docs/guide.md")).stdout == "guide\n"
            assert await other.diff() == []
            with pytest.raises(FailedPreconditionError):
                await other.client.delete_codebase(cb_id)
        # The codebase itself never changes.
        assert await sb.client.download_codebase(cb_id, "docs/guide.md") == b"guide\n"
    async with AsyncSandboxClient() as client:
        await client.delete_codebase(cb_id)


async def test_default_is_read_only_and_secrets_stay_local(tmp_path: Path, labels: dict[str, str]) -> None:
    fixture_repo(tmp_path)
    async with AsyncSandbox.from_local(tmp_path, codebase=True, labels=labels, **SMALL) as sb:
        assert sb.preset == "read-only"
        assert (await sb.run("cat /workspace/README.md")).stdout == "# demo\n"
        r = await sb.run("echo x > /workspace/output/x")
        assert r.exit_code != 0
        r = await sb.run("cat /workspace/.env")  # not uploaded at all without include_secrets
        assert r.exit_code != 0 and "No such file" in r.stderr
        cb_id = sb.codebase_id
    async with AsyncSandboxClient() as client:
        await client.delete_codebase(cb_id)


async def test_bad_rules_and_presets_name_the_field(client: AsyncSandboxClient, labels: dict[str, str]) -> None:
    cb = await client.create_codebase("py-rules", labels=labels)
    try:
        with pytest.raises(InvalidArgumentError, match=r"permissions\[0\]"):
            await AsyncSandbox.from_codebase(cb.id, permissions=["a/../b=read"], labels=labels, **SMALL)
        with pytest.raises(InvalidArgumentError, match=r"permissions\[1\]"):
            await AsyncSandbox.from_codebase(cb.id, permissions=["x=read", "[abc=read"], labels=labels, **SMALL)
        with pytest.raises(InvalidArgumentError, match=r"^permissions\[0\]: permission: 'writ'"):
            AsyncSandbox.from_codebase(cb.id, permissions=["docs/**=writ"])  # refused before any call
        with pytest.raises(InvalidArgumentError, match="preset"):
            await AsyncSandbox.from_codebase(cb.id, "nope", labels=labels, **SMALL)
        with pytest.raises(InvalidArgumentError, match="preset"):
            await AsyncSandbox.create(preset="read-only", labels=labels, **SMALL)
        with pytest.raises(NotFoundError, match="codebase"):
            await AsyncSandbox.from_codebase("cb-" + "1" * 32, labels=labels, **SMALL)
        async with AsyncSandbox.create(labels=labels, **SMALL) as plain:
            with pytest.raises(FailedPreconditionError, match="no codebase"):
                await plain.diff()
    finally:
        await client.delete_codebase(cb.id, force=True)


def test_sync_from_local_and_from_codebase(tmp_path: Path, labels: dict[str, str]) -> None:
    fixture_repo(tmp_path)
    with Sandbox.from_local(tmp_path, preset="development", labels=labels, memory_mb=64) as sb:
        assert sb.preset == "development"
        r = sb.run("echo changed > /workspace/src/main.py && echo new > /workspace/src/new.py")
        assert r.exit_code == 0, r.stderr
        diff = sb.diff()
        assert "src/main.py" in diff.modified and "src/new.py" in diff.added
        with Sandbox.from_codebase(sb.codebase_id, permissions=["src/**=read"], labels=labels, memory_mb=64) as other:
            assert other.preset == ""
            assert other.run("cat /workspace/src/main.py").stdout == "print('hello')\n"
            assert other.run("cat /workspace/README.md").exit_code != 0  # no rule covers it: invisible
        cb_id = sb.codebase_id
    from corral._sync_loop import run

    async def delete() -> None:
        async with AsyncSandboxClient() as client:
            await client.delete_codebase(cb_id)

    run(delete())
