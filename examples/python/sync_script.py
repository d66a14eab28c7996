#!/usr/bin/env python3
"""The synchronous API, for scripts: the same names as AsyncSandbox, without await."""

from corral import Sandbox

with Sandbox.create(labels={"example": "sync"}, memory_mb=64) as sb:
    sb.write_file("hello.py", "print('hello from', __import__('platform').python_version())")
    print(sb.run("python3 hello.py").stdout.strip())
    for event in sb.run_code_stream("for i in range(3): print(i)"):
        if event["type"] == "stdout":
            for line in event["data"].splitlines():  # one event may carry several lines
                print("streamed:", line)
print("status after exit:", sb.status())
