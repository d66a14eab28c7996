"""Shell sessions: :class:`AsyncSession`, where ``cd`` and ``export`` persist between commands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import TYPE_CHECKING, Any, Optional

from .errors import FailedPreconditionError, NotFoundError
from .types import ExecResult

if TYPE_CHECKING:  # pragma: no cover
    from .client import AsyncSandboxClient

__all__ = ["AsyncSession", "SessionOpening"]


class AsyncSession:
    """A shell session of a sandbox (``Sessions.Open``). Each :meth:`exec` runs one shell command
    line; the working directory and exported variables carry over to the next one (shell
    functions, aliases and unexported variables do not). One command at a time per session; open
    several sessions to run commands concurrently. ``async with`` closes it on exit."""

    def __init__(self, client: "AsyncSandboxClient", sandbox_id: str, session_id: str) -> None:
        self._client = client
        self.sandbox_id = sandbox_id
        self.session_id = session_id
        self.closed = False

    @property
    def id(self) -> str:
        return self.session_id

    def __repr__(self) -> str:
        return f"AsyncSession(session_id={self.session_id!r})"

    async def exec(self, command: str, *, timeout: Optional[float] = None) -> ExecResult:
        """Runs ``command`` in the session; ``timeout`` (seconds) kills it and sets ``timed_out``
        (the session then keeps the state it had before the command)."""
        return await self._client.session_exec(self.session_id, command, timeout_seconds=timeout)

    run = exec

    async def close(self) -> None:
        """Closes the session. Idempotent; a session whose sandbox is gone counts as closed."""
        if self.closed:
            return
        self.closed = True
        try:
            await self._client.close_session(self.session_id)
        except (NotFoundError, FailedPreconditionError):
            pass

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SessionOpening(Awaitable[AsyncSession]):
    """What ``sb.session()`` returns: ``await`` it for the session, or use ``async with
    sb.session() as s`` (``async with await sb.session() as s`` works too) to close it on exit."""

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, AsyncSession]]) -> None:
        self._factory = factory
        self._session: Optional[AsyncSession] = None

    def __await__(self) -> Generator[Any, None, AsyncSession]:
        return self._factory().__await__()

    async def __aenter__(self) -> AsyncSession:
        self._session = await self._factory()
        return self._session

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()


def open_session(
    client: "AsyncSandboxClient", sandbox_id: str, cwd: Optional[str], env: Optional[Mapping[str, str]]
) -> SessionOpening:
    async def make() -> AsyncSession:
        session_id = await client.open_session(sandbox_id, cwd=cwd, env=env)
        return AsyncSession(client, sandbox_id, session_id)

    return SessionOpening(make)
