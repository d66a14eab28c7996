"""Codebases on the client alone (no server): permission rules in every accepted form, the
directory scan (ignores, secrets, and what a codebase cannot hold), the Upload stream's shape,
and the safe extraction of a downloaded tar."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import blake3
import pytest

import corral
from corral import (
    Change,
    ChangeKind,
    Diff,
    DownloadError,
    FileKind,
    InvalidArgumentError,
    PatternType,
    Permission,
    PermissionRule,
    SandboxInfo,
    UploadError,
)
from corral._codebase_download import extract_tar
from corral._codebase_upload import PIECE, ask_batches, link_problem, messages, scan
from corral.permissions import parse_rules
from corral.v1 import codebase_pb2, sandbox_pb2

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    "text, expected",
    [
        ("docs/**=write", PermissionRule("docs/**", Permission.WRITE)),
        ("src=read:directory", PermissionRule("src", Permission.READ, PatternType.DIRECTORY)),
        ("src=read:dir", PermissionRule("src", Permission.READ, PatternType.DIRECTORY)),
        ("notes.txt=view:file:5", PermissionRule("notes.txt", Permission.VIEW, PatternType.FILE, 5)),
        ("*.md=none:glob:-3", PermissionRule("*.md", Permission.NONE, PatternType.GLOB, -3)),
        ("a=b=write", PermissionRule("a=b", Permission.WRITE)),
        ("=read", PermissionRule("", Permission.READ)),
    ],
)
def test_cli_form_of_a_rule(text: str, expected: PermissionRule) -> None:
    rule = PermissionRule.parse(text)
    assert rule == expected
    assert PermissionRule.parse(str(rule)) == rule


@pytest.mark.parametrize(
    "text, message",
    [
        ("docs/**", "is not PATTERN=PERMISSION"),
        ("docs/**=writ", "'writ' is not a permission"),
        ("docs=write:folder", "'folder' is not a pattern type"),
        ("docs=write:glob:high", "'high' is not an integer"),
        ("docs=write:glob:1:2", "too many ':' parts"),
    ],
)
def test_bad_cli_rules_say_why(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        PermissionRule.parse(text)


def test_rules_in_every_form_and_errors_name_their_place() -> None:
    rules = parse_rules(
        [
            PermissionRule("a", "read"),
            {"pattern": "docs/**", "permission": "write"},
            {"pattern": "src", "permission": Permission.VIEW, "type": "directory", "priority": 2},
            "x.txt=none:file",
            codebase_pb2.PermissionRule(pattern="p", permission=codebase_pb2.PERMISSION_READ),
        ]
    )
    assert [str(r) for r in rules] == ["a=read", "docs/**=write", "src=view:directory:2", "x.txt=none:file", "p=read"]
    assert parse_rules("one=read") == [PermissionRule("one", Permission.READ)]
    assert parse_rules({"pattern": "one", "permission": "read"}) == [PermissionRule("one", Permission.READ)]
    assert parse_rules(None) == []
    with pytest.raises(InvalidArgumentError, match=r"^permissions\[1\]: permission: 'writ' is not a permission"):
        parse_rules(["ok=read", "docs=writ"])
    with pytest.raises(InvalidArgumentError, match=r"^permissions\[0\]: unknown key 'perm'"):
        parse_rules([{"pattern": "a", "perm": "read"}])
    with pytest.raises(InvalidArgumentError, match=r"^permissions\[0\]: permission: missing"):
        parse_rules([{"pattern": "a"}])
    with pytest.raises(InvalidArgumentError, match=r"^permissions\[2\]: expected a PermissionRule, a dict"):
        parse_rules(["a=read", "b=read", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="priority: expected an int"):
        PermissionRule("a", "read", "glob", "1")  # type: ignore[arg-type]


def test_rules_on_the_wire() -> None:
    rule = PermissionRule("docs/**", "write", "file", 7)
    pb = rule.to_pb()
    assert (pb.pattern, pb.permission, pb.type, pb.priority) == (
        "docs/**",
        codebase_pb2.PERMISSION_WRITE,
        codebase_pb2.PATTERN_TYPE_FILE,
        7,
    )
    assert PermissionRule.from_pb(pb) == rule
    assert rule.to_dict() == {"pattern": "docs/**", "permission": "write", "type": "file", "priority": 7}
    assert rule["permission"] is Permission.WRITE and Permission.WRITE == "write"
    for p in Permission:
        assert Permission.from_pb(p.to_pb()) is p
    for t in PatternType:
        assert PatternType.from_pb(t.to_pb()) is t
    assert PatternType.from_pb(codebase_pb2.PATTERN_TYPE_UNSPECIFIED) is PatternType.GLOB
    assert Permission.parse("PERMISSION_READ") is Permission.READ


def test_rules_are_checked_when_a_create_is_described() -> None:
    with pytest.raises(InvalidArgumentError, match=r"permissions\[1\]"):
        corral.AsyncSandbox.create(codebase_id="cb-x", permissions=["a=read", "b=nope"])
    with pytest.raises(InvalidArgumentError, match=r"permissions\[0\]"):
        corral.AsyncSandbox.from_codebase("cb-x", "agent-safe", [{"pattern": "x"}])
    with pytest.raises(InvalidArgumentError, match="codebase_id: is empty"):
        corral.AsyncSandbox.from_codebase("")


def test_from_local_codebase_options_need_codebase_mode(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="include_secrets: applies only"):
        corral.AsyncSandbox.from_local(tmp_path, include_secrets=True)
    with pytest.raises(InvalidArgumentError, match="codebase_name: applies only"):
        corral.AsyncSandbox.from_local(tmp_path, codebase=False, codebase_name="x")
    with pytest.raises(InvalidArgumentError, match=r"permissions\[0\]"):
        corral.AsyncSandbox.from_local(tmp_path, permissions=["bad"])


def test_sandbox_info_and_diff_from_the_wire() -> None:
    sb = sandbox_pb2.Sandbox(
        id="sb-1",
        codebase_id="cb-1",
        preset="agent-safe",
        codebase_path="/workspace",
        permissions=[PermissionRule("docs/**", "write").to_pb()],
    )
    info = SandboxInfo.from_pb(sb)
    assert (info.codebase_id, info.preset, info.codebase_path) == ("cb-1", "agent-safe", "/workspace")
    assert info.permissions == [PermissionRule("docs/**", Permission.WRITE)]
    assert info.to_dict()["permissions"] == [
        {"pattern": "docs/**", "permission": "write", "type": "glob", "priority": 0}
    ]
    resp = sandbox_pb2.DiffSandboxResponse(
        changes=[
            sandbox_pb2.Change(path="output/x", kind=sandbox_pb2.CHANGE_KIND_ADDED, file_kind=1, size=3),
            sandbox_pb2.Change(path="README.md", kind=sandbox_pb2.CHANGE_KIND_DELETED, file_kind=1),
            sandbox_pb2.Change(path="docs", kind=sandbox_pb2.CHANGE_KIND_MODIFIED, file_kind=2),
        ],
        truncated=True,
    )
    diff = Diff.from_pb(resp)
    assert isinstance(diff, list) and len(diff) == 3 and diff.truncated
    assert diff[0] == Change("output/x", ChangeKind.ADDED, FileKind.FILE, 3)
    assert (diff.added, diff.deleted, diff.modified) == (["output/x"], ["README.md"], ["docs"])
    assert diff[2].file_kind is FileKind.DIRECTORY and ChangeKind.DELETED.letter == "D"


# ---------------------------------------------------------------------- scan


def write(root: Path, rel: str, body: str = "x") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    return p


def repo(root: Path) -> None:
    for rel, body in [
        ("README.md", "# demo\n"),
        ("src/main.py", "print('hello')\n"),
        ("src/util/helpers.py", "X = 1\n"),
        ("docs/guide.md", "guide\n"),
        ("docs/.env", "DOCS_TOKEN=1\n"),
        (".env", "SECRET=1\n"),
        (".env.local", "SECRET=2\n"),
        ("secrets/api.txt", "key\n"),
        ("config/secrets/db.txt", "pw\n"),
        ("config/credentials.json", "{}\n"),
        ("id.key", "k\n"),
        ("tls/cert.pem", "c\n"),
        ("build/out.o", "ignored\n"),
        ("app.log", "ignored\n"),
        ("keep.log", "kept by negation\n"),
        (".gitignore", "build/\n*.log\n!keep.log\n"),
        ("src/.gitignore", "gen_*\n"),
        ("src/gen_x.py", "generated\n"),
        (".git/config", "[core]\n"),
        ("node_modules/x/index.js", "1\n"),
        ("pkg/__pycache__/m.pyc", "pyc\n"),
        (".venv/bin/python", "py\n"),
    ]:
        write(root, rel, body)
    (root / "output").mkdir()
    os.symlink("src/main.py", root / "main-link.py")
    os.symlink("../README.md", root / "docs" / "readme-link")


def paths(entries: list[Any]) -> list[str]:
    return [e.path for e in entries]


def test_scan_honours_gitignore_default_ignores_and_skips_secrets(tmp_path: Path) -> None:
    repo(tmp_path)
    entries = scan(tmp_path)
    assert paths(entries) == [
        ".gitignore",
        "README.md",
        "config",
        "docs",
        "docs/guide.md",
        "docs/readme-link",
        "keep.log",
        "main-link.py",
        "output",
        "pkg",
        "src",
        "src/.gitignore",
        "src/main.py",
        "src/util",
        "src/util/helpers.py",
        "tls",
    ]
    by_path = {e.path: e for e in entries}
    main = by_path["src/main.py"]
    assert main.kind is FileKind.FILE and main.size == len("print('hello')\n")
    assert main.digest == blake3.blake3(b"print('hello')\n").hexdigest()
    assert main.mode == (tmp_path / "src/main.py").stat().st_mode & 0o777
    link = by_path["main-link.py"]
    assert (link.kind, link.link_target, link.size, link.digest) == (FileKind.SYMLINK, "src/main.py", 0, "")
    assert by_path["docs/readme-link"].link_target == "../README.md"
    assert by_path["output"].kind is FileKind.DIRECTORY


def test_scan_secrets_and_ignored_on_request(tmp_path: Path) -> None:
    repo(tmp_path)
    with_secrets = paths(scan(tmp_path, include_secrets=True))
    for secret in [
        ".env",
        ".env.local",
        "docs/.env",
        "secrets",
        "secrets/api.txt",
        "config/secrets/db.txt",
        "config/credentials.json",
        "id.key",
        "tls/cert.pem",
    ]:
        assert secret in with_secrets
    assert "build/out.o" not in with_secrets and ".git/config" not in with_secrets
    everything = paths(scan(tmp_path, include_ignored=True))
    for ignored in ["build/out.o", "app.log", "src/gen_x.py", ".git/config", "node_modules/x/index.js"]:
        assert ignored in everything
    assert "pkg/__pycache__/m.pyc" in everything and ".venv/bin/python" in everything
    assert ".env" not in everything  # secrets stay out unless asked for too
    narrowed = paths(scan(tmp_path, ignore_patterns=["docs/", "*.md"]))
    assert "docs" not in narrowed and "README.md" not in narrowed and "src/main.py" in narrowed


def test_scan_default_ignores_are_directories_only(tmp_path: Path) -> None:
    write(tmp_path, "node_modules", "a file named like the directory")
    write(tmp_path, "lib/.git", "a gitdir file of a worktree")
    assert paths(scan(tmp_path)) == ["lib", "lib/.git", "node_modules"]


def test_scan_refuses_hard_links(tmp_path: Path) -> None:
    write(tmp_path, "a", "x")
    os.link(tmp_path / "a", tmp_path / "sub-b")
    with pytest.raises(UploadError, match=r"^a: is a hard link") as e:
        scan(tmp_path)
    assert e.value.path == "a" and "hard link" in e.value.reason
    assert isinstance(e.value, InvalidArgumentError)


def test_scan_refuses_fifos(tmp_path: Path) -> None:
    write(tmp_path, "ok.txt")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(UploadError, match=r"^pipe: is a device, fifo or socket"):
        scan(tmp_path)


def test_scan_refuses_sockets(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(UploadError, match=r"^s: is a device, fifo or socket"):
            scan(tmp_path)


@pytest.mark.parametrize(
    "link, target, why",
    [
        ("up", "../outside", "leaves the tree"),
        ("deep/up", "../../outside", "leaves the tree"),
        ("deep/sneaky", "x/../../../etc", "leaves the tree"),
        ("abs", "/etc/passwd", "absolute path /etc/passwd"),
    ],
)
def test_scan_refuses_escaping_symlinks(tmp_path: Path, link: str, target: str, why: str) -> None:
    (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, tmp_path / link)
    with pytest.raises(UploadError, match=why) as e:
        scan(tmp_path)
    assert e.value.path == link


def test_link_problem_is_lexical_from_the_links_directory() -> None:
    assert link_problem("a/b/link", "../c") is None
    assert link_problem("a/link", "b/../c") is None
    assert link_problem("link", "./a/./b") is None
    assert link_problem("link", "../x") is not None
    assert link_problem("a/link", "../../x") is not None
    assert link_problem("link", "") is not None


def test_scan_refuses_set_id_bits(tmp_path: Path) -> None:
    p = write(tmp_path, "tool")
    os.chmod(p, 0o4755)
    if not os.stat(p).st_mode & stat.S_ISUID:
        pytest.fail("this file system dropped the set-uid bit; the test cannot run here")
    with pytest.raises(UploadError, match=r"^tool: has set-id or sticky bits"):
        scan(tmp_path)


def test_scan_refuses_names_that_are_not_utf8(tmp_path: Path) -> None:
    with open(os.path.join(os.fsencode(tmp_path), b"bad-\xff.txt"), "w") as f:
        f.write("x")
    with pytest.raises(UploadError, match="its name is not UTF-8"):
        scan(tmp_path)


def test_scan_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a local directory"):
        scan(tmp_path / "nope")


def test_symlinked_directories_are_links_not_followed(tmp_path: Path) -> None:
    write(tmp_path, "real/a.txt")
    os.symlink("real", tmp_path / "alias")
    entries = {e.path: e for e in scan(tmp_path)}
    assert sorted(entries) == ["alias", "real", "real/a.txt"]
    assert entries["alias"].kind is FileKind.SYMLINK


# ---------------------------------------------------------------------- the Upload stream


async def collect(agen: Any) -> list[Any]:
    return [m async for m in agen]


def test_stream_sends_missing_content_once_and_the_rest_by_reference(tmp_path: Path) -> None:
    big = os.urandom(PIECE * 2 + 123)
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "copy.bin").write_bytes(big)
    write(tmp_path, "held.txt", "the server has this")
    write(tmp_path, "empty.txt", "")
    (tmp_path / "dir").mkdir()
    entries = scan(tmp_path)
    digests = {e.path: e.digest for e in entries}
    assert ask_batches(entries) == [sorted({digests["big.bin"], digests["held.txt"]})]
    calls: list[tuple[int, int, int, int]] = []
    msgs = asyncio.run(collect(messages("cb-1", True, entries, {digests["big.bin"]}, lambda *a: calls.append(a))))
    assert msgs[0].WhichOneof("item") == "start"
    assert (msgs[0].start.codebase_id, msgs[0].start.replace) == ("cb-1", True)
    headers: dict[str, Any] = {}
    data: dict[str, bytes] = {}
    current = ""
    for m in msgs[1:]:
        if m.WhichOneof("item") == "file":
            current = m.file.path
            headers[current] = m.file
            data[current] = b""
        else:
            assert m.WhichOneof("item") == "data" and len(m.data) <= PIECE
            data[current] += m.data
    assert list(headers) == ["big.bin", "copy.bin", "dir", "empty.txt", "held.txt"]
    assert data["big.bin"] == big and not headers["big.bin"].by_reference
    assert headers["copy.bin"].by_reference and data["copy.bin"] == b""  # same content: sent once
    assert headers["held.txt"].by_reference and headers["held.txt"].digest == digests["held.txt"]
    assert not headers["empty.txt"].by_reference and data["empty.txt"] == b""
    assert headers["dir"].kind == codebase_pb2.FILE_KIND_DIRECTORY and headers["dir"].size == 0
    total = 2 * len(big) + len("the server has this")
    assert calls[-1] == (5, 5, total, total) and len(calls) == 5


def test_stream_refuses_a_file_that_shrank(tmp_path: Path) -> None:
    p = write(tmp_path, "f.txt", "0123456789")
    entries = scan(tmp_path)
    p.write_text("012")
    with pytest.raises(UploadError, match=r"^f.txt: changed while uploading"):
        asyncio.run(collect(messages("cb-1", True, entries, {entries[0].digest})))


def test_ask_batches_are_at_most_5000() -> None:
    from corral._codebase_upload import LocalEntry

    entries = [LocalEntry(f"f{i}", FileKind.FILE, 0o644, 1, f"{i:064x}", "", Path("x")) for i in range(12001)]
    assert [len(b) for b in ask_batches(entries)] == [5000, 5000, 2001]


# ---------------------------------------------------------------------- tar extraction


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, body in members:
            info.size = len(body) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
    buf.seek(0)
    return buf


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    return info


def test_extract_writes_files_dirs_links_and_modes(tmp_path: Path) -> None:
    long = "d/" + "n" * 150 + ".txt"
    archive = tar_of(
        (member("d/", tarfile.DIRTYPE, 0o755), b""),
        (member("d/run.sh", mode=0o755), b"#!/bin/sh\n"),
        (member(long), b"long name"),
        (member("ro/", tarfile.DIRTYPE, 0o555), b""),
        (member("ro/f"), b"in a read-only dir"),
        (member("link", tarfile.SYMTYPE, 0o777, "d/run.sh"), b""),
    )
    dest = tmp_path / "out"
    written = extract_tar(archive, dest)
    assert [p.relative_to(dest).as_posix() for p in written] == ["d", "d/run.sh", long, "ro", "ro/f", "link"]
    assert (dest / "d/run.sh").read_text() == "#!/bin/sh\n" and os.access(dest / "d/run.sh", os.X_OK)
    assert (dest / long).read_text() == "long name"
    assert os.readlink(dest / "link") == "d/run.sh"
    assert (dest / "ro" / "f").read_text() == "in a read-only dir"
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    os.chmod(dest / "ro", 0o755)


@pytest.mark.parametrize(
    "bad, why",
    [
        (member("/etc/evil"), "is an absolute path"),
        (member("a/../../evil"), "has a '..' segment"),
        (member("up", tarfile.SYMTYPE, link="../outside"), "leaves the tree"),
        (member("abs", tarfile.SYMTYPE, link="/etc/passwd"), "absolute path"),
        (member("hard", tarfile.LNKTYPE, link="ok.txt"), "is a hard link"),
        (member("dev", tarfile.CHRTYPE), "device, fifo or other special file"),
        (member("fifo", tarfile.FIFOTYPE), "device, fifo or other special file"),
    ],
)
def test_extract_refuses_members_escaping_dest_before_writing(tmp_path: Path, bad: tarfile.TarInfo, why: str) -> None:
    archive = tar_of((member("ok.txt"), b"fine"), (bad, b""))
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match=why):
        extract_tar(archive, dest)
    assert list(dest.iterdir()) == []  # nothing written
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_extract_refuses_a_symlink_that_escapes_through_another(tmp_path: Path) -> None:
    # "d" points at the destination itself, so "d/x -> ../y" is lexically inside but resolves
    # one level above it.
    archive = tar_of((member("d", tarfile.SYMTYPE, link="."), b""), (member("d/x", tarfile.SYMTYPE, link="../y"), b""))
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match="resolves outside the destination"):
        extract_tar(archive, dest)
    assert not os.path.lexists(dest / "x")


def test_extract_does_not_write_through_an_existing_symlink(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (tmp_path / "victim").write_text("untouched")
    os.symlink(tmp_path / "victim", dest / "f")
    extract_tar(tar_of((member("f"), b"new")), dest)
    assert (tmp_path / "victim").read_text() == "untouched"
    assert not (dest / "f").is_symlink() and (dest / "f").read_text() == "new"


def test_extract_into_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DownloadError, match="is not a directory"):
        extract_tar(tar_of((member("a"), b"")), tmp_path / "file")
