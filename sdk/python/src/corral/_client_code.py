"""The low-level calls for snippets (``Exec.RunCode``) and ``corral.v1.Languages``, mixed into
:class:`~corral.AsyncSandboxClient`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

from .languages import LanguageInfo
from .types import ExecResult
from .v1 import exec_pb2, exec_pb2_grpc, languages_pb2, languages_pb2_grpc


class _CodeCalls:
    """Needs ``_unary``, ``_ensure_channel`` and ``exec`` from the client."""

    _languages: Optional[languages_pb2_grpc.LanguagesStub] = None

    async def _unary(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    def _ensure_channel(self) -> Any:
        raise NotImplementedError  # provided by AsyncSandboxClient

    @property
    def exec(self) -> exec_pb2_grpc.ExecStub:
        raise NotImplementedError  # provided by AsyncSandboxClient

    @property
    def languages(self) -> languages_pb2_grpc.LanguagesStub:
        """The generated ``corral.v1.Languages`` stub."""
        if self._languages is None:
            self._languages = languages_pb2_grpc.LanguagesStub(self._ensure_channel())
        return self._languages

    async def list_languages(self, *, timeout: Optional[float] = None) -> list[LanguageInfo]:
        """``Languages.List``: the languages some node of the cluster can run."""
        resp = await self._unary(self.languages.List, languages_pb2.ListLanguagesRequest(), timeout)
        return [LanguageInfo.from_pb(lang) for lang in resp.languages]

    get_languages = list_languages

    async def exec_run_code(
        self,
        sandbox_id: str,
        code: str,
        language: str = "python",
        *,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout_seconds: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        timeout: Optional[float] = None,
    ) -> ExecResult:
        """``Exec.RunCode``: writes ``code`` to a file in the sandbox and runs it with the
        language's toolchain (compiled languages compile, then run)."""
        from .client import _fill_run_options, _set

        req = exec_pb2.RunCodeRequest(sandbox_id=sandbox_id)
        _set(req, "language", language)
        _set(req, "code", code)
        _fill_run_options(req, env, cwd, timeout_seconds, stdin)
        resp = await self._unary(self.exec.RunCode, req, timeout)
        return ExecResult.from_pb(resp)
