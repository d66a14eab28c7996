#!/usr/bin/env python3
"""Jobs and batches: the server runs each command in a fresh sandbox of its own, queues what the
cluster has no room for yet, and keeps the results.

    python examples/python/jobs.py [N]
"""

import asyncio
import sys

import corral


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 12

    # Submit and wait in one call: a result object (attributes or keys).
    r = await corral.execute_code("python", "print(6 * 7)")
    print(f"execute_code: {r['status']} {r.stdout.strip()} (job {r.job_id})")

    # Submit now, collect later.
    job_id = await corral.execute_async("bash", "sleep 0.2; echo background done")
    done = await corral.wait_for_job(job_id, timeout=60)
    print(f"wait_for_job: {done.status} {done.stdout.strip()}")

    # A long job, cancelled.
    slow = await corral.execute_async("sh", "sleep 30")
    print(f"cancel_job: {(await corral.cancel_job(slow)).status}")

    # A batch: at most 4 items at once, results as they finish; leaving the `async with` early
    # would cancel the rest.
    items = [{"code": f"print({i} ** 2)", "language": "python"} for i in range(n)]
    total = 0
    async with corral.run_batch(items, max_concurrency=4, labels={"example": "jobs"}) as results:
        async for item in results:
            total += int(item.stdout)
    print(f"run_batch: {n} items, sum of squares {total}")


if __name__ == "__main__":
    asyncio.run(main())
