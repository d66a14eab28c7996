"""Where the coordinator is and which API key to send.

Each setting resolves on its own, first match wins:

1. the argument (``endpoint=`` / ``api_key=``),
2. the environment (``CORRAL_ENDPOINT`` / ``CORRAL_API_KEY``),
3. the config file: ``$CORRAL_CONFIG`` if set, else ``$XDG_CONFIG_HOME/corral/config.toml``, else
   ``~/.config/corral/config.toml`` — top-level ``endpoint = "..."`` / ``api_key = "..."`` (a
   ``[client]`` table with the same keys, as the ``corral`` CLI's file has, is read too),
4. the default endpoint ``127.0.0.1:50051`` and no API key.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from .errors import InvalidArgumentError

DEFAULT_ENDPOINT = "127.0.0.1:50051"
ENV_ENDPOINT = "CORRAL_ENDPOINT"
ENV_API_KEY = "CORRAL_API_KEY"
ENV_CONFIG = "CORRAL_CONFIG"


@dataclass(frozen=True)
class ResolvedConfig:
    #: ``host:port`` as grpc expects it (any ``http://`` / ``https://`` prefix removed).
    target: str
    #: True for an ``https://`` endpoint: the channel then uses TLS.
    secure: bool
    api_key: Optional[str]
    #: Where each value came from: "argument", "environment", a file path, or "default".
    endpoint_source: str
    api_key_source: Optional[str]


def config_path() -> Path:
    """The config file consulted (it need not exist)."""
    explicit = os.environ.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "corral" / "config.toml"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise InvalidArgumentError(f"cannot read the Corral config file {path}: {e}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"the Corral config file {path} is not valid TOML: {e}") from e
    return data


def _from_file(data: dict[str, Any], key: str, path: Path) -> Optional[str]:
    value = data.get(key)
    if value is None and isinstance(data.get("client"), dict):
        value = data["client"].get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{path}: {key} must be a string, not {type(value).__name__}")
    return value or None


def normalize_endpoint(endpoint: str) -> tuple[str, bool]:
    """``http://h:p`` → (``h:p``, False); ``https://h:p`` → (``h:p``, True); ``h:p`` as is."""
    e = endpoint.strip()
    secure = False
    for prefix, is_secure in (("https://", True), ("http://", False), ("grpcs://", True), ("grpc://", False)):
        if e.lower().startswith(prefix):
            e, secure = e[len(prefix) :], is_secure
            break
    e = e.rstrip("/")
    if not e or "/" in e:
        raise InvalidArgumentError(f"endpoint: {endpoint!r} is not host:port (or http[s]://host:port)")
    return e, secure


def resolve(endpoint: Optional[str] = None, api_key: Optional[str] = None) -> ResolvedConfig:
    """Resolves the endpoint and API key (see the module docstring for the order)."""
    ep, ep_src = endpoint or None, "argument"
    key, key_src = api_key or None, "argument"
    if ep is None:
        ep, ep_src = os.environ.get(ENV_ENDPOINT) or None, "environment"
    if key is None:
        key, key_src = os.environ.get(ENV_API_KEY) or None, "environment"
    if ep is None or key is None:
        path = config_path()
        data = _read_file(path)
        if ep is None:
            ep, ep_src = _from_file(data, "endpoint", path), str(path)
        if key is None:
            key, key_src = _from_file(data, "api_key", path), str(path)
    if ep is None:
        ep, ep_src = DEFAULT_ENDPOINT, "default"
    target, secure = normalize_endpoint(ep)
    return ResolvedConfig(
        target=target,
        secure=secure,
        api_key=key,
        endpoint_source=ep_src,
        api_key_source=key_src if key is not None else None,
    )
