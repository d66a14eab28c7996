"""gitignore-style matching for uploads (``ignore_patterns=`` and ``.gitignore`` files).

Supported: comments, blank lines, ``!`` negation, ``\\`` escapes, a leading or middle ``/``
anchoring the pattern to its ``.gitignore``'s directory, a trailing ``/`` matching directories
only, ``*``, ``?``, ``[...]`` classes, and ``**`` (leading ``**/``, trailing ``/**``, middle
``/**/``). As with git, the last matching rule wins, rules of a deeper ``.gitignore`` come after
those of its parents, and nothing below an ignored directory is looked at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

#: Always skipped by from_local / upload(use_gitignore=True).
DEFAULT_IGNORES = (".git/",)


@dataclass(frozen=True)
class Rule:
    pattern: str
    regex: "re.Pattern[str]"
    negate: bool
    dir_only: bool
    #: Directory (relative, posix, "" for the root) the pattern is relative to.
    base: str

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not rel.startswith(self.base + "/"):
                return False
            rel = rel[len(self.base) + 1 :]
        return self.regex.fullmatch(rel) is not None


def _translate(p: str) -> str:
    """The regex for a gitignore glob (without negation or trailing slash)."""
    out: list[str] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "*":
            if p.startswith("**", i):
                at_start = i == 0
                after = p[i + 2 : i + 3]
                before_slash = i > 0 and p[i - 1] == "/"
                if (at_start or before_slash) and after == "/":
                    out.append("(?:.*/)?")  # "**/" : zero or more directories
                    i += 3
                    continue
                if before_slash and i + 2 == n:
                    out.append(".*")  # "/**" at the end: everything inside
                    i += 2
                    continue
                out.append("[^/]*")
                i += 2
                while i < n and p[i] == "*":
                    i += 1
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and p[j] in "!^":
                j += 1
            if j < n and p[j] == "]":
                j += 1
            while j < n and p[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = p[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(p[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_rule(line: str, base: str = "") -> Optional[Rule]:
    """One gitignore line → a Rule (None for blanks and comments)."""
    raw = line.rstrip("\n").rstrip("\r")
    # Trailing spaces are dropped unless escaped.
    stripped = raw.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(raw):
        stripped += " "
    p = stripped
    if not p or p.startswith("#"):
        return None
    negate = False
    if p.startswith("!"):
        negate, p = True, p[1:]
    elif p.startswith("\\!") or p.startswith("\\#"):
        p = p[1:]
    dir_only = p.endswith("/")
    p = p.rstrip("/")
    if not p:
        return None
    anchored = "/" in p
    p = p.lstrip("/")
    body = _translate(p)
    regex = body if anchored else "(?:.*/)?" + body
    return Rule(pattern=line, regex=re.compile(regex, re.DOTALL), negate=negate, dir_only=dir_only, base=base)


def parse_rules(lines: Iterable[str], base: str = "") -> list[Rule]:
    return [r for r in (parse_rule(line, base) for line in lines) if r is not None]


@dataclass
class IgnoreSpec:
    """gitignore rules (in precedence order) followed by the caller's own patterns."""

    git_rules: list[Rule] = field(default_factory=list)
    user_rules: list[Rule] = field(default_factory=list)

    def is_ignored(self, rel: str, is_dir: bool) -> bool:
        ignored = False
        for rule in self.git_rules:
            if rule.matches(rel, is_dir):
                ignored = not rule.negate
        for rule in self.user_rules:
            if rule.matches(rel, is_dir):
                ignored = not rule.negate
        return ignored


def walk(
    root: Path,
    ignore_patterns: Optional[Iterable[str]] = None,
    use_gitignore: bool = False,
) -> Iterator[tuple[str, Path, bool]]:
    """Yields ``(relative posix path, local path, is_dir)`` for every directory and regular file
    under ``root`` that the rules keep, parents before children. Symlinked files are followed;
    symlinked directories are not entered."""
    spec = IgnoreSpec()
    if use_gitignore:
        spec.git_rules.extend(parse_rules(DEFAULT_IGNORES))
    if ignore_patterns:
        if isinstance(ignore_patterns, str):
            ignore_patterns = [ignore_patterns]
        spec.user_rules.extend(parse_rules(ignore_patterns))

    def read_gitignore(dirpath: Path, base: str) -> None:
        gi = dirpath / ".gitignore"
        if use_gitignore and gi.is_file():
            spec.git_rules.extend(parse_rules(gi.read_text(encoding="utf-8", errors="replace").splitlines(), base))

    read_gitignore(root, "")
    for dirpath, dirnames, filenames in os.walk(root, topdown=True, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        kept_dirs = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            local = here / d
            if local.is_symlink():
                # A symlinked directory is treated like a file that is skipped.
                continue
            if spec.is_ignored(rel, True):
                continue
            kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for f in sorted(filenames):
            rel = f"{rel_dir}/{f}" if rel_dir else f
            local = here / f
            if not local.is_file():  # broken symlinks, sockets, fifos
                continue
            if spec.is_ignored(rel, False):
                continue
            yield rel, local, False
        for d in kept_dirs:
            rel = f"{rel_dir}/{d}" if rel_dir else d
            read_gitignore(here / d, rel)
            yield rel, here / d, True
