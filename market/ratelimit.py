"""Fixed-window rate limits: Redis when it is configured (shared by every process), else this process's memory.

Redis being down never stops the API: the limiter then lets requests through and logs it (the database stays
the source of truth; /healthz reports the outage)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading

import redis

log = logging.getLogger(__name__)


# Failed logins: per username (guessing one account's password) and per client address (trying many accounts).
LOGIN_PER_USER = (10, 15 * 60)
LOGIN_PER_ADDRESS = (100, 15 * 60)


class Limiter:
    """At most `limit` events per key in a window of `window` seconds, counted from the key's first event."""

    def __init__(self, name: str, *, limit: int, window: int, client: redis.Redis | None) -> None:
        self.name, self.limit, self.window, self.client = name, limit, window, client
        self._memory: dict[str, tuple[int, dt.datetime]] = {}  # key -> (count, window end)
        self._lock = threading.Lock()

    def _key(self, key: str) -> str:
        return f"crowdmarket:limit:{self.name}:{key}"

    def retry_after(self, key: str, now: dt.datetime) -> int | None:
        """Seconds until `key` may act again, or None if it may act now."""
        if self.client is not None:
            try:
                count, ttl = self.client.pipeline().get(self._key(key)).ttl(self._key(key)).execute()
            except redis.RedisError as exc:
                log.warning("rate limit %s not enforced: Redis unavailable (%s)", self.name, exc)
                return None
            return max(1, int(ttl)) if count is not None and int(count) >= self.limit and ttl > 0 else None
        with self._lock:
            count, end = self._memory.get(key, (0, now))
            if end <= now or count < self.limit:
                return None
            return max(1, math.ceil((end - now).total_seconds()))

    def hit(self, key: str, now: dt.datetime) -> None:
        """Count one event for `key`."""
        if self.client is not None:
            try:
                pipe = self.client.pipeline()
                pipe.incr(self._key(key)).expire(self._key(key), self.window, nx=True).execute()
            except redis.RedisError as exc:
                log.warning("rate limit %s not counted: Redis unavailable (%s)", self.name, exc)
            return
        with self._lock:
            count, end = self._memory.get(key, (0, now))
            if end <= now:
                count, end = 0, now + dt.timedelta(seconds=self.window)
            self._memory[key] = (count + 1, end)

    def reset(self, key: str) -> None:
        if self.client is not None:
            try:
                self.client.delete(self._key(key))
            except redis.RedisError as exc:
                log.warning("rate limit %s not reset: Redis unavailable (%s)", self.name, exc)
            return
        with self._lock:
            self._memory.pop(key, None)
