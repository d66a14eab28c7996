"""Path permission rules for sandboxes on a codebase.

A sandbox created on a codebase sees each path through the rules of a *preset* (``view-only``,
``read-only``, ``agent-safe``, ``development``, ``full-access``) followed by its own
:class:`PermissionRule` s. Among the rules matching a path the highest ``priority`` wins, then the
most specific type (file > directory > glob), then the longest literal prefix, then the later rule;
a path no rule matches is invisible. A codebase sandbox with neither preset nor rules gets
``read-only``.

Wherever rules are taken (``permissions=``) each may be a :class:`PermissionRule`, a dict
``{"pattern": "docs/**", "permission": "write", "type": "glob", "priority": 0}`` (``type`` and
``priority`` optional) or the CLI's string form ``PATTERN=PERMISSION[:TYPE[:PRIORITY]]``, e.g.
``"docs/**=write"``, ``"src=read:directory"``, ``"notes.txt=view:file:5"``. Client-side errors
name the rule's place (``permissions[1]: ...``); the server checks the patterns themselves and
names the rule the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Union, cast

from .errors import InvalidArgumentError
from .types import _Record
from .v1 import codebase_pb2

__all__ = ["Permission", "PatternType", "PermissionRule", "RuleLike", "PRESETS", "parse_rule", "parse_rules"]

#: The server's presets, weakest first (``list_presets()`` gives their rules).
PRESETS = ("view-only", "read-only", "agent-safe", "development", "full-access")


class Permission(str, enum.Enum):
    """What a sandbox may do with a path: ``none`` (invisible), ``view`` (listed and stat-able,
    contents unreadable), ``read``, ``write``. Compares equal to its lowercase name."""

    NONE = "none"
    VIEW = "view"
    READ = "read"
    WRITE = "write"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: Union["Permission", str], field: str = "permission") -> "Permission":
        if isinstance(value, Permission):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower().removeprefix("permission_"))
            except ValueError:
                pass
        raise InvalidArgumentError(f"{field}: {value!r} is not a permission (one of none, view, read, write)")

    def to_pb(self) -> int:
        return int(codebase_pb2.Permission.Value(f"PERMISSION_{self.name}"))

    @classmethod
    def from_pb(cls, value: int) -> "Permission":
        if value not in codebase_pb2.Permission.values() or value == codebase_pb2.PERMISSION_UNSPECIFIED:
            return cls.NONE
        return cls(codebase_pb2.Permission.Name(cast(Any, value)).removeprefix("PERMISSION_").lower())


class PatternType(str, enum.Enum):
    """How a rule's pattern matches: ``glob`` (gitignore-style: ``**`` at any depth, classes,
    ``/x`` anchored), ``directory`` (the directory and everything beneath it), ``file`` (exactly
    one path)."""

    GLOB = "glob"
    DIRECTORY = "directory"
    FILE = "file"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: Union["PatternType", str, None], field: str = "type") -> "PatternType":
        if value is None:
            return cls.GLOB
        if isinstance(value, PatternType):
            return value
        if isinstance(value, str):
            raw = value.strip().lower().removeprefix("pattern_type_")
            if raw == "dir":
                raw = "directory"
            try:
                return cls(raw)
            except ValueError:
                pass
        raise InvalidArgumentError(f"{field}: {value!r} is not a pattern type (one of glob, directory, file)")

    def to_pb(self) -> int:
        return int(codebase_pb2.PatternType.Value(f"PATTERN_TYPE_{self.name}"))

    @classmethod
    def from_pb(cls, value: int) -> "PatternType":
        if value == codebase_pb2.PATTERN_TYPE_DIRECTORY:
            return cls.DIRECTORY
        if value == codebase_pb2.PATTERN_TYPE_FILE:
            return cls.FILE
        return cls.GLOB


@dataclass(frozen=True)
class PermissionRule(_Record):
    """One path rule: ``pattern`` (relative to the codebase root) gets ``permission``.

    ``PermissionRule("docs/**", "write")`` works too: the string fields are parsed (and checked)
    on construction. ``str(rule)`` is the CLI form, ``PermissionRule.parse`` reads it back."""

    pattern: str
    permission: Permission
    type: PatternType = PatternType.GLOB
    priority: int = 0

    _keys: ClassVar[frozenset[str]] = frozenset({"pattern", "permission", "type", "priority"})

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str):
            raise InvalidArgumentError(f"pattern: expected a str, got {type(self.pattern).__name__}")
        object.__setattr__(self, "permission", Permission.parse(self.permission))
        object.__setattr__(self, "type", PatternType.parse(self.type))
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise InvalidArgumentError(f"priority: expected an int, got {type(self.priority).__name__}")
        if not -(2**31) <= self.priority < 2**31:
            raise InvalidArgumentError(f"priority: {self.priority} does not fit in 32 bits")

    def __str__(self) -> str:
        out = f"{self.pattern}={self.permission.value}"
        if self.type is not PatternType.GLOB or self.priority:
            out += f":{self.type.value}"
        if self.priority:
            out += f":{self.priority}"
        return out

    @classmethod
    def parse(cls, text: str) -> "PermissionRule":
        """The CLI form ``PATTERN=PERMISSION[:TYPE[:PRIORITY]]`` (the last ``=`` splits, so a
        pattern may contain ``=``)."""
        pattern, sep, rest = text.rpartition("=")
        if not sep:
            raise InvalidArgumentError(f"{text!r} is not PATTERN=PERMISSION[:TYPE[:PRIORITY]]")
        parts = rest.split(":")
        if len(parts) > 3:
            raise InvalidArgumentError(f"{text!r} has too many ':' parts (PATTERN=PERMISSION[:TYPE[:PRIORITY]])")
        permission = Permission.parse(parts[0], "permission")
        kind = PatternType.parse(parts[1] if len(parts) > 1 else None, "type")
        priority = 0
        if len(parts) > 2:
            try:
                priority = int(parts[2])
            except ValueError:
                raise InvalidArgumentError(f"priority: {parts[2]!r} is not an integer") from None
        return cls(pattern, permission, kind, priority)

    @classmethod
    def from_value(cls, value: "RuleLike") -> "PermissionRule":
        """A rule from a PermissionRule, a dict or the CLI string form."""
        if isinstance(value, PermissionRule):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, codebase_pb2.PermissionRule):
            return cls.from_pb(value)
        if isinstance(value, Mapping):
            unknown = sorted(str(k) for k in value if k not in cls._keys)
            if unknown:
                raise InvalidArgumentError(f"unknown key {unknown[0]!r} (pattern, permission, type, priority)")
            for key in ("pattern", "permission"):
                if key not in value:
                    raise InvalidArgumentError(f"{key}: missing")
            return cls(
                value["pattern"], value["permission"], value.get("type") or PatternType.GLOB, value.get("priority", 0)
            )
        raise InvalidArgumentError(
            f"expected a PermissionRule, a dict or a 'PATTERN=PERMISSION[:TYPE[:PRIORITY]]' str, "
            f"got {type(value).__name__}"
        )

    def to_pb(self) -> codebase_pb2.PermissionRule:
        return codebase_pb2.PermissionRule(
            pattern=self.pattern,
            permission=cast(Any, self.permission.to_pb()),
            type=cast(Any, self.type.to_pb()),
            priority=self.priority,
        )

    @classmethod
    def from_pb(cls, r: codebase_pb2.PermissionRule) -> "PermissionRule":
        return cls(r.pattern, Permission.from_pb(r.permission), PatternType.from_pb(r.type), r.priority)


RuleLike = Union[PermissionRule, Mapping[str, Any], str, codebase_pb2.PermissionRule]


def parse_rule(value: RuleLike) -> PermissionRule:
    """One rule in any accepted form (see the module doc)."""
    return PermissionRule.from_value(value)


def parse_rules(rules: Union[Iterable[RuleLike], RuleLike, None], field: str = "permissions") -> list[PermissionRule]:
    """Every rule of ``rules`` (one rule alone is a list of one); errors name the rule's place,
    e.g. ``permissions[2]: permission: 'writ' is not a permission (...)``."""
    if rules is None:
        return []
    if isinstance(rules, (str, Mapping, PermissionRule, codebase_pb2.PermissionRule)):
        rules = [rules]
    out: list[PermissionRule] = []
    for i, r in enumerate(rules):
        try:
            out.append(PermissionRule.from_value(r))
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{field}[{i}]: {e.message}") from None
    return out
