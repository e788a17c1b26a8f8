"""Rate limits on sign-up and next-task, with flask-limiter: its storage (Redis at REDIS_URL, shared by every
process; this process's memory otherwise) and its fixed-window strategy, hit from inside the views, once the
account (next-task) or the address (sign-up) is known, rather than by its route decorators, which run before our
bearer/session authentication and would have to key on an unauthenticated header.

`limits`' fixed window counts then decides in one step (Redis INCRBY with its expiry in one script; a lock in
memory): parallel requests cannot all pass a check made before any of them was counted. Failed logins stay on
edge/ratelimit.py: their rule needs three counts taken all-or-nothing and a success given back (a success does not
count), which `limits` has no operation for.

Redis down never stops the API: the limit then lets the request through and logs it."""

from __future__ import annotations

import functools
import logging
import math
import time

import redis
from flask import Flask, current_app
from flask_limiter import Limiter
from limits import RateLimitItem, parse
from limits.errors import StorageError

from base.errors import TooManyRequests

__all__ = ["TooManyRequests", "hit", "install", "next_task", "parse_rule", "sign_up"]

log = logging.getLogger(__name__)
EXTENSION = "crowdmarket.limiter"
# Per client address, every sign-up attempt (a 409 tells that a username exists, and accounts are what the
# per-account limits count).
SIGNUP_PER_ADDRESS = (20, 60 * 60)  # (events, window seconds)
SIGNUP_RULE = f"{SIGNUP_PER_ADDRESS[0]}/{SIGNUP_PER_ADDRESS[1]} seconds"


@functools.lru_cache(maxsize=64)
def parse_rule(raw: str | None) -> RateLimitItem | None:
    """A limit like "120/minute" (the `limits` notation), or None for "", "0" or "off": no limit."""
    if raw is None or raw.strip().lower() in ("", "0", "off", "none"):
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"not a rate limit like '120/minute': {raw!r}") from exc


def next_task(account_id: int) -> None:
    """Count one next-task request of a worker account (the API's, the work page's, a submit asking for the next)."""
    hit("next", current_app.config.get("RATELIMIT_NEXT"), str(account_id),
        "Too many next-task requests from your account; slow down and try again shortly.")


def sign_up(address: str) -> None:
    """Count one sign-up from a client address."""
    hit("signup", SIGNUP_RULE, address, "Too many sign-ups from your address; try again later.")


def install(app: Flask) -> None:
    """A flask-limiter of the app's own, on its Redis when it has one (no default or route limits: the views
    hit theirs)."""
    url = app.config.get("REDIS_URL")
    limiter = Limiter(key_func=lambda: "", app=app, default_limits=[], storage_uri=url or "memory://",
                      storage_options={"socket_timeout": 1, "socket_connect_timeout": 1} if url else {},
                      strategy="fixed-window", swallow_errors=True)
    app.extensions[EXTENSION] = limiter


def hit(name: str, raw_rule: str | None, key: str, detail: str) -> None:
    """Count one event of `key` against `raw_rule` ("120/minute"; "" or 0: none); past it, 429 with Retry-After
    (the seconds to the window's end). The rule is read per call, so a test (or the config) may change it."""
    rule = parse_rule(raw_rule)
    if rule is None:
        return
    limiter: Limiter = current_app.extensions[EXTENSION]
    # The namespace keeps one app's (one test's) counts from another's on a shared Redis.
    ids = (current_app.config.get("LIMIT_NAMESPACE", "crowdmarket"), name, key)
    try:
        if limiter.limiter.hit(rule, *ids):
            return
        reset = limiter.limiter.get_window_stats(rule, *ids).reset_time
    except (redis.RedisError, StorageError, OSError) as exc:
        log.warning("rate limit %s not enforced: storage unavailable (%s)", name, exc)
        return
    raise TooManyRequests(detail, retry_after=max(1, math.ceil(reset - time.time())))
