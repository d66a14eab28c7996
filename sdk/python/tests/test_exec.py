"""run / run_code / run_stream / run_code_stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import SMALL

from corral import AsyncSandbox, ExecResult, InvalidArgumentError, LANGUAGES


@pytest.fixture(scope="module")
async def sb() -> AsyncIterator[AsyncSandbox]:
    async with AsyncSandbox.create(labels={"suite": "test_exec"}, env_vars={"SANDBOX_WIDE": "yes"}, **SMALL) as s:
        yield s


async def test_shell_command(sb: AsyncSandbox) -> None:
    r = await sb.run("echo out; echo err >&2; exit 7")
    assert isinstance(r, ExecResult)
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out, r.truncated) == ("out\n", "err\n", 7, False, False)
    assert not r.success
    assert r.duration_ms >= 0
    assert r.output == "out\nerr\n"


async def test_mapping_access(sb: AsyncSandbox) -> None:
    r = await sb.run("printf abc")
    assert r["stdout"] == r.stdout == "abc"
    assert r["exit_code"] == 0 and r["timed_out"] is False and r["duration_ms"] == r.duration_ms
    assert r.success and r["success"] is True
    assert r.get("missing", "dflt") == "dflt"
    assert "stderr" in r and r.to_dict()["stdout"] == "abc"
    with pytest.raises(KeyError):
        r["nope"]


async def test_argv_with_args_runs_without_a_shell(sb: AsyncSandbox) -> None:
    r = await sb.run("echo", ["$HOME", "a b", "*"])
    assert r.stdout == "$HOME a b *\n"
    r = await sb.run(["printf", "%s|", "x y", "z"])
    assert r.stdout == "x y|z|"


async def test_env_cwd_and_sandbox_env(sb: AsyncSandbox) -> None:
    r = await sb.run("echo $FOO $SANDBOX_WIDE; pwd", env={"FOO": "bar"}, cwd="/tmp")
    assert r.stdout == "bar yes\n/tmp\n"
    r = await sb.run("pwd")
    assert r.stdout == "/workspace\n"


async def test_state_persists_between_commands(sb: AsyncSandbox) -> None:
    await sb.run("echo 41 > /workspace/n.txt")
    r = await sb.run("echo $(( $(cat /workspace/n.txt) + 1 ))")
    assert r.stdout == "42\n"


async def test_timeout_kills_and_flags(sb: AsyncSandbox) -> None:
    r = await sb.run("echo started; sleep 30", timeout=0.5)
    assert r.timed_out is True
    assert r.exit_code == -1 and r.signal == 9
    assert r.stdout == "started\n"
    assert 400 <= r.duration_ms < 5000
    assert not r.success


async def test_stdin(sb: AsyncSandbox) -> None:
    r = await sb.run("tr a-z A-Z", stdin="shout\n")
    assert r.stdout == "SHOUT\n"
    r = await sb.run(["wc", "-c"], stdin=b"\x00\x01\x02")
    assert r.stdout.strip() == "3"


async def test_binary_output_is_kept_in_bytes(sb: AsyncSandbox) -> None:
    r = await sb.run("printf '\\377\\376ok'")
    assert r.stdout_bytes == b"\xff\xfeok"
    assert r.stdout.endswith("ok") and "\ufffd" in r.stdout


async def test_run_code_python(sb: AsyncSandbox) -> None:
    r = await sb.run_code("import sys\nprint(sum(range(10)))\nprint('e', file=sys.stderr)")
    assert (r.stdout, r.stderr, r.exit_code) == ("45\n", "e\n", 0)
    r = await sb.run_code("raise SystemExit(3)", language="python")
    assert r.exit_code == 3
    r = await sb.run_code("import os; print(os.environ['X'], os.getcwd())", env={"X": "1"}, cwd="/tmp")
    assert r.stdout == "1 /tmp\n"


async def test_run_code_shells(sb: AsyncSandbox) -> None:
    r = await sb.run_code('x=5; echo "$((x*2))"', language="sh")
    assert r.stdout == "10\n"
    r = await sb.run_code('a=(1 2 3); echo "${#a[@]}"', language="bash")
    assert r.stdout == "3\n"


async def test_run_code_node_when_the_host_has_it(sb: AsyncSandbox) -> None:
    has_node = (await sb.run("command -v node")).exit_code == 0
    r = await sb.run_code("console.log(6 * 7)", language="javascript")
    if has_node:
        assert (r.stdout, r.exit_code) == ("42\n", 0)
    else:
        assert r.exit_code == 127  # the sandbox has no node: the exec says so, no exception


async def test_run_code_timeout(sb: AsyncSandbox) -> None:
    r = await sb.run_code("import time; time.sleep(30)", timeout=0.5)
    assert r.timed_out


async def test_run_code_unknown_language(sb: AsyncSandbox) -> None:
    with pytest.raises(InvalidArgumentError, match="cobol"):
        await sb.run_code("DISPLAY 'HI'", language="cobol")
    assert "python" in LANGUAGES and "bash" in LANGUAGES


async def test_run_code_stream_events(sb: AsyncSandbox) -> None:
    code = (
        "import sys, time\n"
        "for i in range(3):\n"
        "    print(i, flush=True)\n"
        "    time.sleep(0.05)\n"
        "print('warn', file=sys.stderr, flush=True)\n"
        "sys.exit(4)"
    )
    events = [ev async for ev in sb.run_code_stream(code)]
    assert events[-1]["type"] == "done"
    assert events[-1]["exit_code"] == 4 and events[-1]["timed_out"] is False
    assert events[-1]["duration_ms"] >= 100
    body = events[:-1]
    assert all(e["type"] in ("stdout", "stderr") and isinstance(e["data"], str) for e in body)
    assert "".join(e["data"] for e in body if e["type"] == "stdout") == "0\n1\n2\n"
    assert "".join(e["data"] for e in body if e["type"] == "stderr") == "warn\n"
    # Output comes in order and as it is produced: the stdout lines are separate events.
    assert len([e for e in body if e["type"] == "stdout"]) >= 3


async def test_stream_arrives_before_the_command_ends(sb: AsyncSandbox) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    first_at = None
    async for ev in sb.run_stream("echo first; sleep 1; echo second"):
        if ev["type"] == "stdout" and first_at is None:
            first_at = loop.time() - start
    end = loop.time() - start
    assert first_at is not None and first_at < 0.8 < end


async def test_stream_decodes_utf8_split_across_chunks(sb: AsyncSandbox) -> None:
    # "é" is two bytes, written in two separate writes with a pause between them.
    code = (
        "import sys, time\n"
        "b = 'é'.encode()\n"
        "sys.stdout.buffer.write(b[:1]); sys.stdout.flush(); time.sleep(0.2)\n"
        "sys.stdout.buffer.write(b[1:] + b'\\n'); sys.stdout.flush()"
    )
    events = [ev async for ev in sb.run_code_stream(code)]
    text = "".join(e["data"] for e in events if e["type"] == "stdout")
    assert text == "é\n"


async def test_leaving_a_stream_early_kills_the_command(sb: AsyncSandbox) -> None:
    await sb.run("rm -f /workspace/after")
    stream = sb.run_stream("echo go; sleep 1.5; touch /workspace/after")
    async for ev in stream:
        assert ev == {"type": "stdout", "data": "go\n"}
        break
    await stream.aclose()
    await asyncio.sleep(2.5)
    r = await sb.run("test -e /workspace/after")
    assert r.exit_code == 1, "the abandoned command should have been killed"


async def test_exec_alias(sb: AsyncSandbox) -> None:
    assert (await sb.exec("echo alias")).stdout == "alias\n"
