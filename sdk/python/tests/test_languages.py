"""get_languages / detect_language / run_code over Exec.RunCode, async and sync."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conftest import SMALL

import corral
from corral import (
    AsyncSandbox,
    AsyncSandboxClient,
    InvalidArgumentError,
    LanguageInfo,
    RuntimeType,
    Sandbox,
    detect_language,
    get_languages,
)
from corral.languages import LANGUAGE_ALIASES, LANGUAGE_EXTENSIONS, canonical_language


@pytest.fixture(scope="module")
async def sb() -> AsyncIterator[AsyncSandbox]:
    async with AsyncSandbox.create(labels={"suite": "test_languages"}, **SMALL) as s:
        yield s


def test_detect_language_by_extension() -> None:
    assert detect_language("main.py") == "python"
    assert detect_language("/work/src/App.MJS") == "javascript"
    assert detect_language("build.sh") == "bash"
    assert detect_language("x.c") == "c"
    assert detect_language("main.go") == "go"
    assert detect_language("lib.rs") == "rust"
    assert detect_language("t.rb") == "ruby" and detect_language("t.pl") == "perl"
    assert detect_language("Makefile") is None and detect_language("notes.txt") is None
    assert canonical_language(" PY ") == "python" and canonical_language("golang") == "go"
    assert canonical_language("cobol") is None


async def test_get_languages_matches_the_local_table() -> None:
    langs = await get_languages()
    assert all(isinstance(lang, LanguageInfo) for lang in langs)
    by_name = {lang.name: lang for lang in langs}
    for want in ("python", "sh", "bash"):
        assert want in by_name, by_name
    py = by_name["python"]
    assert py["file_name"] == "main.py" and "py" in py.aliases and RuntimeType.BWRAP in py.runtimes
    assert py.to_dict()["runtimes"][0] == "bwrap"  # then "docker" once corral/python is probed
    for lang in langs:
        # The SDK's pure table agrees with the server's registry.
        assert set(lang.extensions) == set(LANGUAGE_EXTENSIONS[lang.name]), lang
        assert all(LANGUAGE_ALIASES[a] == lang.name for a in lang.aliases), lang
        for ext in lang.extensions:
            assert detect_language(f"f.{ext}") == lang.name
    async with AsyncSandboxClient() as client:
        assert [lang.name for lang in await client.get_languages()] == [lang.name for lang in langs]


async def test_run_code_uses_the_server_registry(sb: AsyncSandbox) -> None:
    r = await sb.run_code("import sys\nprint(sum(range(10)))\nsys.exit(3)", language="py")
    assert (r.stdout, r.exit_code) == ("45\n", 3)
    r = await sb.run_code('echo "$X-$((6 * 7))"', language="sh", env={"X": "v"})
    assert (r.stdout, r.exit_code) == ("v-42\n", 0)
    r = await sb.run_code('#include <stdio.h>\nint main(void) { puts("from c"); return 0; }', language="c")
    assert (r.stdout, r.exit_code) == ("from c\n", 0), r.stderr
    with pytest.raises(InvalidArgumentError, match=r"language: unknown language .*cobol.*available: python"):
        await sb.run_code("DISPLAY 'HI'", language="cobol")
    with pytest.raises(InvalidArgumentError, match="code: "):
        await sb.run_code("#" * (512 * 1024 + 1))


def test_sync_mirror() -> None:
    names = [lang.name for lang in Sandbox.get_languages()]
    assert "python" in names and names == [lang.name for lang in corral.get_languages_sync()]
    with Sandbox.create(**SMALL) as sb:
        r = sb.run_code("x=5; echo $((x * 2))", language="bash")
        assert (r.stdout, r.exit_code) == ("10\n", 0)
        with pytest.raises(InvalidArgumentError, match="available"):
            sb.run_code("x", language="brainfuck")
