#!/usr/bin/env python3
"""codebase_agent: give an agent a project it can read but not spoil.

The directory is uploaded once as a codebase (only content the server lacks is sent) and the
sandbox sees it through the `agent-safe` preset: everything readable, `output/` writable, secrets
such as `.env` invisible. What the agent writes lands in the sandbox's own layer; `diff()` lists it.
"""

import asyncio
import sys
import tempfile
from pathlib import Path

from corral import AsyncSandbox, AsyncSandboxClient


def make_project(root: Path) -> None:
    (root / "src").mkdir()
    (root / "src" / "stats.py").write_text(
        "import sys\nnums = [int(x) for x in open(sys.argv[1]).read().split()]\n"
        "print(f'n={len(nums)} sum={sum(nums)} max={max(nums)}')\n"
    )
    (root / "data.txt").write_text("3 14 15 92 65\n")
    (root / ".env").write_text("API_TOKEN=do-not-leak\n")
    (root / "output").mkdir()


async def main(path: Path) -> None:
    async with AsyncSandbox.from_local(
        path,
        preset="agent-safe",
        include_secrets=True,  # uploaded, but agent-safe hides it
        labels={"example": "codebase_agent"},
        memory_mb=128,
    ) as sb:
        up = sb.upload_result
        assert up is not None
        print(f"codebase {sb.codebase_id}: {up.files_received} entries, {up.bytes_received} bytes sent")
        # The "agent": reads the code and data, writes its report where it may.
        r = await sb.run("python3 src/stats.py data.txt > output/report.txt && cat output/report.txt")
        print("report:", r.stdout.strip())
        secret = await sb.run("cat .env")
        print("cat .env:", "hidden" if "No such file" in secret.stderr else f"VISIBLE {secret.stdout!r}")
        tamper = await sb.run("echo 'print(0)' > src/stats.py")
        print("write to src/:", "denied" if "Permission denied" in tamper.stderr else "allowed")
        for change in await sb.diff():
            print(f"diff: {change.kind.letter} {change.path} ({change.size} bytes)")
        cb_id = sb.codebase_id
    # The codebase outlives its sandboxes (AsyncSandbox.from_codebase(cb_id) makes more) until deleted.
    async with AsyncSandboxClient() as client:
        await client.delete_codebase(cb_id)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as d:
            make_project(Path(d))
            asyncio.run(main(Path(d)))
