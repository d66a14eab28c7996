#!/usr/bin/env python3
"""Fan-out: evaluate many snippets at once, each in its own sandbox, at most LIMIT at a time,
under one global timeout that leaves no sandbox behind.

    python examples/python/fanout.py [N] [LIMIT]
"""

import asyncio
import sys
import time

from corral import AsyncSandbox


async def evaluate(i: int, limit: asyncio.Semaphore) -> int:
    async with limit:
        async with AsyncSandbox.create(labels={"example": "fanout"}, memory_mb=64) as sb:
            r = await sb.run_code(f"print(sum(range({i} + 1)))", timeout=10)
            return int(r.stdout)


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    limit = asyncio.Semaphore(int(sys.argv[2]) if len(sys.argv) > 2 else 8)
    t0 = time.perf_counter()
    # return_exceptions=True: if the timeout hits, gather still waits for every sandbox's cleanup.
    results = await asyncio.wait_for(
        asyncio.gather(*(evaluate(i, limit) for i in range(n)), return_exceptions=True), timeout=120
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    assert results == [i * (i + 1) // 2 for i in range(n)]
    print(f"{n} sandboxes evaluated in {time.perf_counter() - t0:.2f} s; sum of results {sum(results)}")  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
