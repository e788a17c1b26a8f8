"""The call log: every call to a platform, its idempotency key, its outcome and its retries. Throttling and
transient faults (PlatformError.retryable) are retried with exponential backoff and jitter; every other error is
recorded and raised, never lost. `sink` receives each finished call (the burst's job log persists them)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from platforms.base import PlatformError

T = TypeVar("T")


@dataclass
class CallRecord:
    operation: str
    key: str | None
    target: str | None
    attempts: int
    outcome: str  # "ok" | "error"
    error: str | None = None
    errors: list[str] = field(default_factory=list)  # each failed attempt, retried or last
    ms: int = 0
    listing: bool = False


class RecordingLog:
    """A CallLog that keeps its records (and hands each to `sink`)."""

    def __init__(self, *, sink: Callable[[CallRecord], None] | None = None, attempts: int = 5,
                 base_delay: float = 0.25, max_delay: float = 8.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.records: list[CallRecord] = []
        self._sink, self._attempts, self._base, self._max, self._sleep = sink, attempts, base_delay, max_delay, sleep

    def call(self, operation: str, fn: Callable[[], T], *, key: str | None = None, target: str | None = None,
             listing: bool = False) -> T:
        started, errors = time.perf_counter(), []
        for attempt in range(1, self._attempts + 1):
            try:
                result = fn()
            except PlatformError as exc:
                errors.append(str(exc))
                if exc.retryable and attempt < self._attempts:
                    self._sleep(min(self._max, self._base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))
                    continue
                self._done(CallRecord(operation, key, target, attempt, "error", str(exc), errors,
                                      _ms(started), listing))
                raise
            self._done(CallRecord(operation, key, target, attempt, "ok", None, errors, _ms(started), listing))
            return result
        raise AssertionError("unreachable")

    def _done(self, record: CallRecord) -> None:
        self.records.append(record)
        if self._sink is not None:
            self._sink(record)


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
