#!/usr/bin/env python3
"""from_local: upload a project directory (honouring .gitignore) and run its tests inside."""

import asyncio
import sys
import tempfile
from pathlib import Path

from corral import AsyncSandbox, ResourceLimits, RuntimeType


def make_project(root: Path) -> None:
    (root / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "test_calc.py").write_text("from calc import add\nassert add(2, 3) == 5\nprint('tests ok')\n")
    (root / ".gitignore").write_text("*.log\n")
    (root / "debug.log").write_text("not uploaded\n")


async def main(path: Path) -> None:
    async with AsyncSandbox.from_local(
        path,
        runtime=RuntimeType.BWRAP,
        resources=ResourceLimits(memory_mb=128),
        labels={"example": "from_local"},
        ignore_patterns=["__pycache__/"],
    ) as sb:
        print("uploaded:", sorted(f.name for f in await sb.list_directory("/workspace")))
        r = await sb.run("python3 test_calc.py")
        print(f"{r.stdout.strip()} (exit {r.exit_code})")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as d:
            make_project(Path(d))
            asyncio.run(main(Path(d)))
