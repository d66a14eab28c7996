"""Pure client-side pieces: result objects, enums, gitignore matching, packaging."""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
from corral import ExecResult, InvalidArgumentError, ResourceLimits, RuntimeType, SandboxStatus
from corral._ignore import parse_rule, walk


def test_exec_result_is_a_mapping() -> None:
    r = ExecResult(stdout="o", stderr="e", exit_code=0, duration_ms=5)
    assert r.stdout == r["stdout"] == "o"
    assert dict(r)["exit_code"] == 0
    assert list(r.keys())[:3] == ["stdout", "stderr", "exit_code"]
    assert r.get("nope") is None and "stdout" in r and "nope" not in r
    assert r.success and r["success"] and r.ok
    assert len(r) == len(r.to_dict())
    with pytest.raises(AttributeError):
        r.stdout = "x"  # type: ignore[misc]


def test_status_and_runtime_enums() -> None:
    assert SandboxStatus.parse("RUNNING") is SandboxStatus.RUNNING
    assert SandboxStatus.parse("SANDBOX_STATE_EXPIRED") is SandboxStatus.EXPIRED
    assert SandboxStatus.RUNNING == "running" and str(SandboxStatus.LOST) == "lost"
    assert SandboxStatus.STOPPED.is_terminal and not SandboxStatus.RUNNING.is_terminal
    for s in SandboxStatus:
        assert SandboxStatus.from_pb(s.to_pb()) is s
    assert RuntimeType.parse("BWRAP") is RuntimeType.BWRAP and RuntimeType.parse(None) is None
    assert RuntimeType.from_pb(RuntimeType.BWRAP.to_pb()) is RuntimeType.BWRAP
    with pytest.raises(InvalidArgumentError):
        RuntimeType.parse("vm")


def test_resource_limits() -> None:
    assert ResourceLimits(memory_bytes=512 * 1024 * 1024).resolved_memory_mb() == 512
    assert ResourceLimits(memory_bytes=1).resolved_memory_mb() == 1
    assert ResourceLimits(memory_mb=64).resolved_memory_mb() == 64
    with pytest.raises(InvalidArgumentError):
        ResourceLimits(memory_mb=1, memory_bytes=1).resolved_memory_mb()


def test_create_argument_conflicts_fail_before_any_call() -> None:
    with pytest.raises(InvalidArgumentError, match="timeout"):
        corral.AsyncSandbox.create(timeout_seconds=5, timeout=6)
    with pytest.raises(InvalidArgumentError, match="env"):
        corral.AsyncSandbox.create(env_vars={"A": "1"}, env={"B": "2"})
    with pytest.raises(InvalidArgumentError, match="memory_mb"):
        corral.AsyncSandbox.create(memory_mb=64, resources=ResourceLimits(memory_mb=32))


@pytest.mark.parametrize(
    "pattern, path, is_dir, base, expected",
    [
        ("*.log", "a.log", False, "", True),
        ("*.log", "x/y/a.log", False, "", True),
        ("*.log", "a.logx", False, "", False),
        ("/build", "build", True, "", True),
        ("/build", "src/build", True, "", False),
        ("build/", "src/build", True, "", True),
        ("build/", "src/build", False, "", False),
        ("doc/*.txt", "doc/a.txt", False, "", True),
        ("doc/*.txt", "doc/x/a.txt", False, "", False),
        ("**/foo", "a/b/foo", False, "", True),
        ("abc/**", "abc/x/y", False, "", True),
        ("abc/**", "abc", True, "", False),
        ("a/**/b", "a/b", False, "", True),
        ("a/**/b", "a/x/y/b", False, "", True),
        ("*.py[co]", "m.pyc", False, "", True),
        ("*.py[!co]", "m.pyc", False, "", False),
        ("?.txt", "a.txt", False, "", True),
        ("?.txt", "ab.txt", False, "", False),
        ("gen_*", "sub/gen_x", False, "sub", True),
        ("gen_*", "other/gen_x", False, "sub", False),
        ("\\#hash", "#hash", False, "", True),
        ("trailing   ", "trailing", False, "", True),
    ],
)
def test_gitignore_rules(pattern: str, path: str, is_dir: bool, base: str, expected: bool) -> None:
    rule = parse_rule(pattern, base)
    assert rule is not None
    assert rule.matches(path, is_dir) is expected


def test_gitignore_comments_and_blanks() -> None:
    assert parse_rule("# comment") is None
    assert parse_rule("") is None
    assert parse_rule("   ") is None
    neg = parse_rule("!keep.log")
    assert neg is not None and neg.negate


def test_walk_applies_precedence(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.log\n!keep.log\nout/\n")
    (tmp_path / "a.log").write_text("")
    (tmp_path / "keep.log").write_text("")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_text("!a.log\n")
    (tmp_path / "sub" / "a.log").write_text("")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("")
    kept = sorted(rel for rel, _, _ in walk(tmp_path, ["keep.log"], use_gitignore=True))
    # The caller's patterns come last and win over .gitignore; deeper .gitignore files override.
    assert kept == [".gitignore", "sub", "sub/.gitignore", "sub/a.log"]
    everything = sorted(rel for rel, _, _ in walk(tmp_path))
    assert ".git/config" in everything and "out/x" in everything


def test_package_is_typed_and_stubs_import() -> None:
    root = Path(corral.__file__).parent
    assert (root / "py.typed").is_file()
    assert (root / "v1" / "sandbox_pb2.pyi").is_file()
    from corral.v1 import exec_pb2_grpc, files_pb2_grpc, sandbox_pb2_grpc

    assert hasattr(sandbox_pb2_grpc, "SandboxesStub")
    assert hasattr(exec_pb2_grpc, "ExecStub")
    assert hasattr(files_pb2_grpc, "FilesStub")
