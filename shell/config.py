"""Configuration from the environment.

Every setting is read from `CROWDMARKET_<NAME>`; the database and Redis URLs also honour the plain
`DATABASE_URL` / `REDIS_URL` that hosting platforms set.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from werkzeug.security import generate_password_hash

from base.identity import DEFAULT_PASSWORD_HASH
from platforms.registry import SETTINGS as PLATFORM_SETTINGS

log = logging.getLogger(__name__)

# Keys that are public, so signing with them protects nothing: the development default of earlier versions
# and the key the test suite passes. Refused unless TESTING.
TEST_SECRET_KEY = "crowdmarket test suite key: public, refused outside tests"
PUBLISHED_SECRET_KEYS = frozenset({"dev-insecure-secret-key", TEST_SECRET_KEY})
MIN_SECRET_LENGTH = 32
# Where the generated key lives, inside the instance folder (next to the embedded database).
SECRET_KEY_FILE = "secret_key"

_PASSWORD_HASH = re.compile(r"\A(?:scrypt(?::(?P<n>\d+)(?::(?P<r>\d+)(?::(?P<p>\d+))?)?)?"
                            r"|pbkdf2(?::(?P<digest>sha256|sha512)(?::(?P<iterations>\d+))?)?)\Z")
MIN_PBKDF2_ITERATIONS = 600_000  # OWASP's figure for PBKDF2-HMAC-SHA256

# name -> (default, parser). The default of DATABASE_URL depends on the instance path, see load_config.
_SETTINGS: dict[str, tuple[Any, type]] = {
    "ENV": ("development", str),
    "DATABASE_URL": (None, str),
    "REDIS_URL": (None, str),
    "SECRET_KEY": (None, str),
    # Request bodies of ordinary JSON endpoints; imports have their own, larger limit.
    "MAX_REQUEST_BYTES": (1024 * 1024, int),
    "MAX_IMPORT_BYTES": (1024 * 1024 * 1024, int),
    "DB_POOL_SIZE": (10, int),
    "LOG_LEVEL": ("INFO", str),
    # Log lines as JSON objects or plain text (edge/telemetry.py); `crowdmarket run` defaults to json.
    "LOG_FORMAT": ("text", str),
    # A bearer token that may scrape /metrics (besides ops tokens and loopback; edge/metrics.py).
    "METRICS_TOKEN": ("", str),
    "PASSWORD_HASH": (DEFAULT_PASSWORD_HASH, str),
    # Reverse proxies in front of the app whose X-Forwarded-* headers are trusted (werkzeug's ProxyFix).
    "PROXY_HOPS": (0, int),
    # Where workers are judged after a submit or a return (market/quality/evaluation.py): "queue" (a job), "thread" (a
    # thread of each serving process), "inline" (the request's thread, once the response is sent); "auto": queue
    # with Redis configured, else thread.
    "EVALUATION": ("auto", str),
    # Pay (payments/wage/): the platform's wage floor in integer cents per hour (publishing below it is refused,
    # top-ups to it are never optional), and our fee on rewards and bonuses, a Decimal rate in [0, 1).
    "WAGE_FLOOR_CENTS_PER_HOUR": (800, int),
    "PLATFORM_FEE_RATE": (Decimal(0), Decimal),
    # How often RQ's scheduler runs the payments cycle (payments/cycle.py: auto-approval, top-ups, holds).
    "PAYMENTS_CYCLE_SECONDS": (300, int),
    # The public HTTPS origin of this app (https://crowd.example.org): platforms open our work page there.
    "PUBLIC_BASE_URL": ("", str),
    # How often RQ's scheduler runs the platforms' sync (platforms/service.py).
    "PLATFORMS_SYNC_SECONDS": (300, int),
    # Next-task requests per worker account (edge/limits.py; "120/minute" in the `limits` notation; "" or 0: none).
    # A worker taking a task every 0.5 s stays under it; a script hammering next does not.
    "RATELIMIT_NEXT": ("120/minute", str),
    # The platforms' own settings (platforms/registry.py SETTINGS) are added below.
}
_SETTINGS.update(PLATFORM_SETTINGS)
EVALUATION_MODES = ("auto", "queue", "thread", "inline")
LOG_FORMATS = ("text", "json")

_PLAIN_ALIASES = {"DATABASE_URL": "DATABASE_URL", "REDIS_URL": "REDIS_URL"}


class ConfigError(RuntimeError):
    """The configuration cannot run the app (e.g. production without a secret key)."""


def _parse(name: str, raw: str, kind: type) -> Any:
    if kind is int:
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"CROWDMARKET_{name} must be an integer, got {raw!r}") from exc
    if kind is Decimal:
        try:
            return Decimal(raw)
        except InvalidOperation as exc:
            raise ConfigError(f"CROWDMARKET_{name} must be a decimal number like 0.05, got {raw!r}") from exc
    return raw


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs given in the short forms hosting platforms hand out."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def default_instance_path() -> str:
    """The instance folder when Flask is not asked: $CROWDMARKET_INSTANCE_PATH, else <repo>/instance."""
    return os.environ.get("CROWDMARKET_INSTANCE_PATH") or str(Path(__file__).resolve().parent.parent / "instance")


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


def resolve_secret_key(config: dict[str, Any], instance_path: str) -> None:
    """Fill in SECRET_KEY when none is configured: from the instance folder's key file, generated on first start.
    Production and tests must name theirs (several production hosts would each generate a different one)."""
    if config.get("SECRET_KEY"):
        return
    if config.get("TESTING"):
        raise ConfigError("tests pass their own SECRET_KEY (build test apps with tests.conftest.make_app)")
    if config["ENV"] == "production":
        raise ConfigError("CROWDMARKET_SECRET_KEY must be set to a real secret in production")
    config["SECRET_KEY"] = instance_secret_key(Path(instance_path))


def instance_secret_key(folder: Path) -> str:
    """The key in `folder`/secret_key, created with mode 0600 if there is none yet. Creation is atomic and never
    overwrites: the key is written to a private temporary file and hard-linked into place, so processes starting
    at once (gunicorn's workers) all end up reading the one key that was linked first."""
    path = folder / SECRET_KEY_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{SECRET_KEY_FILE}.")  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temporary, path)
                log.info("generated a secret key in %s", path)
            except FileExistsError:
                pass  # another process was first: use its key
        finally:
            os.unlink(temporary)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{path} holds no usable key; delete it to have a new one generated")
    return key


def _check_password_hash(config: dict[str, Any]) -> None:
    method = config["PASSWORD_HASH"]
    match = _PASSWORD_HASH.match(method)
    if not match:
        raise ConfigError(f"CROWDMARKET_PASSWORD_HASH must be werkzeug's 'scrypt:N:r:p' or 'pbkdf2:sha256:ITERATIONS',"
                          f" got {method!r}")
    if method != DEFAULT_PASSWORD_HASH:
        try:  # once, so that a method OpenSSL refuses (too small an N for werkzeug's memory bound) fails here
            generate_password_hash("probe", method=method)
        except ValueError as exc:
            raise ConfigError(f"CROWDMARKET_PASSWORD_HASH {method!r} does not work: {exc}") from exc
    if config["ENV"] != "production":
        return
    if method.startswith("scrypt"):
        n, r = int(match["n"] or 32768), int(match["r"] or 8)
        weak = n < 32768 or r < 8
    else:
        weak = int(match["iterations"] or MIN_PBKDF2_ITERATIONS) < MIN_PBKDF2_ITERATIONS
    if weak:
        raise ConfigError(f"CROWDMARKET_PASSWORD_HASH {method!r} is weaker than {DEFAULT_PASSWORD_HASH!r}, "
                          "which production requires at least")


def _check_pay(config: dict[str, Any]) -> None:
    floor, rate = config["WAGE_FLOOR_CENTS_PER_HOUR"], config["PLATFORM_FEE_RATE"]
    if type(floor) is not int or not 0 <= floor <= 100_000:
        raise ConfigError("CROWDMARKET_WAGE_FLOOR_CENTS_PER_HOUR must be whole cents per hour from 0 to 100000")
    if not isinstance(rate, Decimal) or not rate.is_finite() or not Decimal(0) <= rate < Decimal(1):
        raise ConfigError("CROWDMARKET_PLATFORM_FEE_RATE must be a decimal rate from 0 up to (not including) 1")
    if rate != rate.quantize(Decimal("0.0001")):
        raise ConfigError("CROWDMARKET_PLATFORM_FEE_RATE has at most four decimal places (0.0525)")


def check_config(config: dict[str, Any]) -> None:
    """Refuse settings that are unsafe for the configured environment."""
    key = config["SECRET_KEY"]
    if not config.get("TESTING") and (key in PUBLISHED_SECRET_KEYS or len(key) < MIN_SECRET_LENGTH):
        raise ConfigError(f"the secret key is {'a published one' if key in PUBLISHED_SECRET_KEYS else 'too short'}: "
                          f"set CROWDMARKET_SECRET_KEY to {MIN_SECRET_LENGTH}+ random characters (python -c 'import "
                          "secrets; print(secrets.token_urlsafe(48))'), or unset it to use a generated one")
    if config["MAX_REQUEST_BYTES"] <= 0 or config["MAX_IMPORT_BYTES"] <= 0:
        raise ConfigError("request size limits must be positive")
    if config["PROXY_HOPS"] < 0:
        raise ConfigError("CROWDMARKET_PROXY_HOPS must be 0 or more")
    if config.get("PAYMENTS_CYCLE_SECONDS", 300) < 1:
        raise ConfigError("CROWDMARKET_PAYMENTS_CYCLE_SECONDS must be 1 or more")
    if config.get("LOG_FORMAT", "text") not in LOG_FORMATS:
        raise ConfigError(f"CROWDMARKET_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    if config.get("METRICS_TOKEN") and len(config["METRICS_TOKEN"]) < 16:
        raise ConfigError("CROWDMARKET_METRICS_TOKEN must be 16 characters or more (or unset)")
    if config["EVALUATION"] not in EVALUATION_MODES:
        raise ConfigError(f"CROWDMARKET_EVALUATION must be one of {', '.join(EVALUATION_MODES)}")
    _check_pay(config)
    _check_password_hash(config)
