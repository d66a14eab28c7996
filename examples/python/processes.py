#!/usr/bin/env python3
"""Background processes and sessions: start a server, follow its log, stop it with a signal;
keep `cd` and `export` across commands in a session."""

import asyncio
import signal

from corral import AsyncSandbox

SERVER = """
import http.server, signal, sys
signal.signal(signal.SIGTERM, lambda *_: (print("shutting down", flush=True), sys.exit(0)))
print("listening on 8000", flush=True)
http.server.HTTPServer(("127.0.0.1", 8000), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


async def main() -> None:
    async with AsyncSandbox.create(labels={"example": "processes"}, memory_mb=128) as sb:
        await sb.write_file("/workspace/server.py", SERVER)
        server = await sb.start_process("python3", ["-u", "/workspace/server.py"])
        async for event in sb.follow_output(server.pid):
            if event.type == "stdout" and "listening" in event.data:
                print(f"server {server.pid}: {event.data.strip()}")
                break
        fetch = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/').status)\""
        print("fetched:", (await sb.run(fetch)).stdout.strip())
        await sb.send_signal(server.pid, signal.SIGTERM)
        done = await server.wait()
        [info] = await sb.list_processes()
        print(f"server {info.pid} {info.status} with exit code {done.exit_code}")

        async with sb.session() as s:
            await s.exec("mkdir -p /workspace/app && cd /workspace/app && export STAGE=test")
            r = await s.exec("pwd; echo stage=$STAGE")
            print("session:", " ".join(r.stdout.split()))


if __name__ == "__main__":
    asyncio.run(main())
