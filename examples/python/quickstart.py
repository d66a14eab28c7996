#!/usr/bin/env python3
"""Quick start: create a sandbox, run a command and a Python snippet, move a file, destroy it.

corral dev &                      # or point CORRAL_ENDPOINT at a coordinator
python examples/python/quickstart.py
"""

import asyncio

from corral import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(labels={"example": "quickstart"}, memory_mb=128) as sb:
        print("sandbox", sb.sandbox_id)

        r = await sb.run("uname -s; whoami")
        print("run:", r.stdout.split(), "exit", r.exit_code)

        await sb.write_file("/workspace/data.csv", "a,b\n1,2\n3,4\n")
        r = await sb.run_code(
            "import csv\n"
            "rows = list(csv.DictReader(open('/workspace/data.csv')))\n"
            "print(sum(int(r['a']) + int(r['b']) for r in rows))"
        )
        print("run_code:", r.stdout.strip())

        await sb.run("echo result > /workspace/out.txt")
        print("read_file:", (await sb.read_file("/workspace/out.txt")).strip())
        print("files:", [f.name for f in await sb.list_directory("/workspace")])
    print("destroyed:", (await sb.info()).status)
    await sb.close()


if __name__ == "__main__":
    asyncio.run(main())
