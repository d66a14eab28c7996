#!/usr/bin/env python3
"""Streaming: print a long-running snippet's output as it is produced."""

import asyncio

from corral import AsyncSandbox

CODE = """
import time
for step in range(5):
    print(f"step {step}", flush=True)
    time.sleep(0.2)
raise SystemExit(0)
"""


async def main() -> None:
    async with AsyncSandbox.create(labels={"example": "streaming"}, memory_mb=64) as sb:
        async for event in sb.run_code_stream(CODE):
            if event["type"] == "done":
                print(f"done: exit {event['exit_code']} after {event['duration_ms']} ms")
            else:
                for line in event["data"].splitlines():  # an event may carry several lines
                    print(f"[{event['type']}] {line}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
