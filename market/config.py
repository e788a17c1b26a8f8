"""Configuration from the environment.

Every setting is read from `CROWDMARKET_<NAME>`; the database and Redis URLs also honour the plain
`DATABASE_URL` / `REDIS_URL` that hosting platforms set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEV_SECRET_KEY = "dev-insecure-secret-key"

# name -> (default, parser). The default of DATABASE_URL depends on the instance path, see load_config.
_SETTINGS: dict[str, tuple[Any, type]] = {
    "ENV": ("development", str),
    "DATABASE_URL": (None, str),
    "REDIS_URL": (None, str),
    "SECRET_KEY": (DEV_SECRET_KEY, str),
    # Request bodies of ordinary JSON endpoints; imports have their own, larger limit.
    "MAX_REQUEST_BYTES": (1024 * 1024, int),
    "MAX_IMPORT_BYTES": (1024 * 1024 * 1024, int),
    "DB_POOL_SIZE": (10, int),
    "LOG_LEVEL": ("INFO", str),
}

_PLAIN_ALIASES = {"DATABASE_URL": "DATABASE_URL", "REDIS_URL": "REDIS_URL"}


class ConfigError(RuntimeError):
    """The configuration cannot run the app (e.g. production without a secret key)."""


def _parse(name: str, raw: str, kind: type) -> Any:
    if kind is int:
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"CROWDMARKET_{name} must be an integer, got {raw!r}") from exc
    return raw


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs given in the short forms hosting platforms hand out."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config(instance_path: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Read settings from `environ` (default: os.environ) into a Flask config mapping."""
    env = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for name, (default, kind) in _SETTINGS.items():
        raw = env.get(f"CROWDMARKET_{name}")
        if raw is None and name in _PLAIN_ALIASES:
            raw = env.get(_PLAIN_ALIASES[name])
        config[name] = default if raw in (None, "") else _parse(name, raw, kind)
    if not config["DATABASE_URL"]:
        config["DATABASE_URL"] = f"sqlite:///{Path(instance_path) / 'crowdmarket.db'}"
    config["DATABASE_URL"] = normalize_database_url(config["DATABASE_URL"])
    return config


def check_config(config: dict[str, Any]) -> None:
    """Refuse settings that are unsafe for the configured environment."""
    if config["ENV"] == "production" and config["SECRET_KEY"] in ("", DEV_SECRET_KEY):
        raise ConfigError("CROWDMARKET_SECRET_KEY must be set to a real secret in production")
    if config["MAX_REQUEST_BYTES"] <= 0 or config["MAX_IMPORT_BYTES"] <= 0:
        raise ConfigError("request size limits must be positive")
