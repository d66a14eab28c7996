"""The SDK's private event loop thread for the blocking API, and helpers to run on it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Optional, TypeVar

from .sandbox import CLEANUP_TIMEOUT

T = TypeVar("T")

_lock = threading.Lock()
_loop: Optional[asyncio.AbstractEventLoop] = None


def get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=main, name="corral-sync-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def run(coro: Awaitable[T]) -> T:
    """Runs a coroutine on the SDK's loop thread and waits for it. Ctrl-C cancels it (and waits
    for its cleanup, e.g. destroying a sandbox that was being created)."""
    finished = threading.Event()

    async def wrapper() -> T:
        try:
            return await coro
        finally:
            finished.set()

    fut = asyncio.run_coroutine_threadsafe(wrapper(), get_loop())
    try:
        return fut.result()
    except KeyboardInterrupt:
        fut.cancel()
        finished.wait(CLEANUP_TIMEOUT)
        raise


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    try:
        while True:
            try:
                yield run(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            run(aclose())
