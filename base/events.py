"""Domain events: a room says what happened, and whoever listens acts on it in the same unit of work, without the
room importing the listener. The engine says "an assignment was submitted" and worker quality schedules judging;
the catalogue says "a batch was published" and payments holds its cost (or refuses it, which undoes the publish);
neither listener is imported by the publisher.

Handlers run synchronously, in the publisher's session and transaction: what they write commits or rolls back
with the publisher's own writes. They are subscribed by the composition root (shell/app.py) on the database's
hub, which every session of that database carries (`Database`); a session of a bare database (a script) has a
hub with no handlers.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

HUB_KEY = "crowdmarket.events"


@dataclass(frozen=True, slots=True)
class AssignmentSubmitted:
    """A worker's answers to an assignment were stored (a replayed submit is not an event)."""

    assignment_id: int
    worker_id: int
    project_id: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class TaskLeased:
    """A worker was leased a task (a new lease, not the one they held already); `gold`: off a gold pool. Only
    ops' metrics listen (edge/metrics.py): nothing a worker sees may depend on it."""

    assignment_id: int
    worker_id: int
    project_id: int
    gold: bool
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class AssignmentReturned:
    """A worker gave a leased assignment back."""

    assignment_id: int
    worker_id: int
    project_id: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class LeasesLapsed:
    """A worker's own leases in a project ran out and were ended (at their next request for work)."""

    worker_id: int
    project_id: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class AssignmentsReviewed:
    """A requester, ops or the auto-approval job approved or rejected submitted work (one event per review call,
    however many assignments: bulk approval of 100,000 is one event). Platforms (#10) mirror it to other crowds."""

    assignment_ids: tuple[int, ...]
    approved: bool
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class BatchPublished:
    """A batch was published (not a replay): payments checks its pay against the wage floor and holds its maximum
    cost in escrow, in the publisher's transaction, so a refusal (402, 422) publishes nothing."""

    batch_id: int
    project_id: int
    requester_id: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class BatchStatusChanged:
    """A requester paused, resumed or cancelled a batch (expiry and completion follow from the clock and the
    answers, and are found by the payments cycle instead)."""

    batch_id: int
    project_id: int
    status: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class PlacesMoved:
    """`places` free HIT places moved from one batch's queue to another's (a burst taking part of a batch, or
    giving back what its platform did not use): payments moves their share of the holds with them."""

    from_batch_id: int
    to_batch_id: int
    places: int
    key: str  # unique per move: the hold movements' idempotency keys derive from it
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class GoldItemChanged:
    """A gold item's known answer changed or it was retired: answers to it are scored again."""

    item_id: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class FlagRaised:
    """A worker was put up for review, by ops or by the system (fast answers, gold accuracy, ...)."""

    flag_id: int
    worker_id: int
    reason: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class LedgerPosted:
    """Transactions were posted to the ledger in one call: their kinds, one per transaction, in order."""

    kinds: tuple[str, ...]
    at: dt.datetime


Handler = Callable[[Session, Any], None]


class EventHub:
    """Handlers by event type. Subscribing the same handler twice is harmless (apps built twice on one database,
    as tests do, subscribe once)."""

    def __init__(self) -> None:
        self._handlers: defaultdict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, kind: type, handler: Handler) -> None:
        if handler not in self._handlers[kind]:
            self._handlers[kind].append(handler)

    def handlers(self, kind: type) -> list[Handler]:
        return list(self._handlers.get(kind, ()))

    def publish(self, session: Session, event: Any) -> None:
        for handler in self._handlers.get(type(event), ()):
            handler(session, event)


def publish(session: Session, event: Any) -> None:
    """Tell the handlers subscribed on the session's hub, in this session (and its transaction)."""
    hub: EventHub | None = session.info.get(HUB_KEY)
    if hub is not None:
        hub.publish(session, event)
