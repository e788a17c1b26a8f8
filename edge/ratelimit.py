"""Fixed-window rate limits: Redis when it is configured (shared by every process), else this process's memory.

Every check counts first and decides after, in one atomic step (Redis MULTI/EXEC; a lock in memory): checking
and counting apart let parallel requests all read a count under the limit before any of them was counted.

Redis being down never stops the API: the limiter then lets requests through and logs it (the database stays
the source of truth; /healthz reports the outage)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Sequence

import redis

log = logging.getLogger(__name__)

# (events, window seconds). Failed logins: per (address, username), someone mistyping or guessing one account
# from one place; per username, looser, so locking a chosen worker out takes five addresses and not ten requests;
# per address, trying many accounts from one place. (Sign-ups and next-task: edge/limits.py, with flask-limiter; this
# limiter stays for failed logins, whose rule takes three counts all-or-nothing and gives a success back, which the
# `limits` library has no operation for.)
LOGIN_PER_PAIR = (10, 15 * 60)
LOGIN_PER_USER = (50, 15 * 60)
LOGIN_PER_ADDRESS = (100, 15 * 60)

# Give back one event, but never create the key: a DECR on a key that expired meanwhile would leave -1 for ever.
_RELEASE = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return 0"
# The in-memory table sweeps out ended windows when it has grown this much since the last sweep.
_SWEEP_AT = 10_000


class Limiter:
    """At most `limit` events per key in a window of `window` seconds, counted from the key's first event."""

    def __init__(self, name: str, *, limit: int, window: int, client: redis.Redis | None,
                 namespace: str = "crowdmarket") -> None:
        self.name, self.limit, self.window, self.client = name, limit, window, client
        self.prefix = f"{namespace}:limit:{name}:"
        self._memory: dict[str, tuple[int, dt.datetime]] = {}  # key -> (count, window end)
        self._lock = threading.Lock()
        self._sweep_at = _SWEEP_AT
        self._release = client.register_script(_RELEASE) if client is not None else None

    def acquire(self, key: str, now: dt.datetime) -> int | None:
        """Count one event for `key`, then check it: None if it is within the limit, else the seconds until the
        window ends (the event stays counted; `release` gives it back)."""
        if self.client is not None:
            try:
                count, _, ttl = (self.client.pipeline(transaction=True).incr(self.prefix + key)
                                 .expire(self.prefix + key, self.window, nx=True).ttl(self.prefix + key).execute())
            except redis.RedisError as exc:
                log.warning("rate limit %s not enforced: Redis unavailable (%s)", self.name, exc)
                return None
            return None if count <= self.limit else max(1, int(ttl))
        with self._lock:
            count, end = self._memory.get(key, (0, now))
            if end <= now:
                count, end = 0, now + dt.timedelta(seconds=self.window)
            self._memory[key] = (count + 1, end)
            if len(self._memory) >= self._sweep_at:
                self._memory = {k: v for k, v in self._memory.items() if v[1] > now}
                self._sweep_at = max(_SWEEP_AT, 2 * len(self._memory))
            return None if count + 1 <= self.limit else max(1, math.ceil((end - now).total_seconds()))

    def release(self, key: str) -> None:
        """Give back one event counted by `acquire` that turned out not to count (a login that succeeded)."""
        if self._release is not None:
            try:
                self._release(keys=[self.prefix + key])
            except redis.RedisError as exc:
                log.warning("rate limit %s not released: Redis unavailable (%s)", self.name, exc)
            return
        with self._lock:
            if key in self._memory:
                count, end = self._memory[key]
                self._memory[key] = (max(0, count - 1), end)

    def reset(self, key: str) -> None:
        """Forget every event of `key`."""
        if self.client is not None:
            try:
                self.client.delete(self.prefix + key)
            except redis.RedisError as exc:
                log.warning("rate limit %s not reset: Redis unavailable (%s)", self.name, exc)
            return
        with self._lock:
            self._memory.pop(key, None)


def acquire_all(checks: Sequence[tuple[Limiter, str]], now: dt.datetime) -> int | None:
    """Count one event against each (limiter, key); if any is over its limit, give them all back (a refused
    request is not an attempt) and return the longest wait, else None."""
    waits = [wait for limiter, key in checks if (wait := limiter.acquire(key, now)) is not None]
    if not waits:
        return None
    for limiter, key in checks:
        limiter.release(key)
    return max(waits)


class LoginLimits:
    """The limits on failed logins, for one app."""

    def __init__(self, client: redis.Redis | None, *, namespace: str = "crowdmarket") -> None:
        def make(name: str, rule: tuple[int, int]) -> Limiter:
            return Limiter(name, limit=rule[0], window=rule[1], client=client, namespace=namespace)

        self.pair, self.user = make("login-pair", LOGIN_PER_PAIR), make("login-user", LOGIN_PER_USER)
        self.address = make("login-address", LOGIN_PER_ADDRESS)

    def login_checks(self, username_key: str, address: str) -> list[tuple[Limiter, str]]:
        # An address holds no '|', so the pair key cannot be forged from another pair's parts.
        return [(self.pair, f"{address}|{username_key}"), (self.user, username_key), (self.address, address)]

    def login_succeeded(self, username_key: str, address: str) -> None:
        """A success is no failure: give its events back, and clear the pair's earlier failures (the username's
        own count stays, or its rightful owner would reset the count for guessers elsewhere)."""
        for limiter, key in self.login_checks(username_key, address):
            if limiter is self.pair:
                limiter.reset(key)
            else:
                limiter.release(key)
