"""Languages for ``run_code``: :func:`detect_language` (pure, by file extension) and
:func:`get_languages` (what the cluster's nodes can run, from ``Languages.List``).

The table below mirrors the server's registry (``core/src/languages.rs``); a test checks that
every language the server lists maps the same way here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from .types import RuntimeType, _Record

__all__ = ["LanguageInfo", "detect_language", "get_languages", "canonical_language"]

#: Canonical language name -> file extensions (without the dot), as the server's registry.
LANGUAGE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "python": ("py",),
    "javascript": ("js", "mjs", "cjs"),
    "bash": ("sh", "bash"),
    "sh": (),
    "ruby": ("rb",),
    "perl": ("pl", "pm"),
    "c": ("c",),
    "go": ("go",),
    "rust": ("rs",),
}

#: Other accepted names -> canonical name, as the server's registry.
LANGUAGE_ALIASES: dict[str, str] = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "nodejs": "javascript",
    "shell": "sh",
    "rb": "ruby",
    "pl": "perl",
    "gcc": "c",
    "golang": "go",
    "rs": "rust",
    "rustc": "rust",
}


def canonical_language(name: str) -> Optional[str]:
    """The canonical name of a language name or alias (``"py"`` -> ``"python"``), else None."""
    key = name.strip().lower()
    if key in LANGUAGE_EXTENSIONS:
        return key
    return LANGUAGE_ALIASES.get(key)


def detect_language(filename: str) -> Optional[str]:
    """The language of a file by its extension (``"main.py"`` -> ``"python"``), or None.

    Pure: no server call. ``.sh`` files are ``bash``.
    """
    base = str(filename).rsplit("/", 1)[-1]
    if "." not in base:
        return None
    ext = base.rsplit(".", 1)[1].lower()
    for name, exts in LANGUAGE_EXTENSIONS.items():
        if ext in exts:
            return name
    return None


@dataclass(frozen=True)
class LanguageInfo(_Record):
    """A language some node of the cluster can run: its canonical ``name``, ``aliases``, the
    ``file_name`` the code is written to, ``extensions``, and the ``runtimes`` offering it."""

    name: str
    aliases: tuple[str, ...] = ()
    file_name: str = ""
    extensions: tuple[str, ...] = ()
    runtimes: tuple[RuntimeType, ...] = field(default=())

    _aliases: ClassVar[dict[str, str]] = {"fileName": "file_name"}

    @classmethod
    def from_pb(cls, msg: object) -> "LanguageInfo":
        return cls(
            name=getattr(msg, "name"),
            aliases=tuple(getattr(msg, "aliases")),
            file_name=getattr(msg, "file_name"),
            extensions=tuple(getattr(msg, "extensions")),
            runtimes=tuple(r for r in (RuntimeType.from_pb(v) for v in getattr(msg, "runtimes")) if r is not None),
        )


async def get_languages(endpoint: Optional[str] = None, api_key: Optional[str] = None) -> list[LanguageInfo]:
    """``Languages.List``: the languages the cluster can run (the union over its nodes)."""
    from .client import AsyncSandboxClient

    async with AsyncSandboxClient(endpoint, api_key) as client:
        return await client.get_languages()
