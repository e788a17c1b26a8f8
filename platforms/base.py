"""The interface every platform implements: how its workers reach our work page (`Platform`: arrival and
completion) and how we publish to it and mirror our decisions there (`Crowd`: publish, submissions, approve,
reject, bonus, block, cancel). Nothing outside this package names a platform. No flask here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from base.money import FeeModel

T = TypeVar("T")


@dataclass(frozen=True)
class Arrival:
    """A platform worker reaching our work page, as the platform's query parameters describe them.

    `assignment_ref` is the platform's id of this piece of work (MTurk's assignmentId, Prolific's SESSION_ID);
    `preview` means the worker is only looking (nothing may be leased or recorded); `return_to` is where the
    finished work is announced."""

    platform: str
    preview: bool
    worker_ref: str | None = None
    assignment_ref: str | None = None
    task_ref: str | None = None
    return_to: str | None = None


@dataclass(frozen=True)
class Completion:
    """How the page hands the work back once our submit stored it: a form sent by the browser to `action`
    (the platform's endpoint) with these fields, by `method` ("post", or "get" for a redirect)."""

    action: str
    fields: Mapping[str, str] = field(default_factory=dict)
    method: str = "post"


class Platform(Protocol):
    name: str
    title: str  # as workers know it
    # Origins the page's form may post to (its CSP form-action).
    form_origins: tuple[str, ...]
    # Sites that show our work page in a frame (CSP frame-ancestors); () when the platform opens it in a tab.
    frame_origins: tuple[str, ...]
    # How many of our tasks one platform assignment is: 1 (an MTurk assignment is one HIT of ours), or many (a
    # Prolific submission is a session working through the burst's HITs until none is left for the worker).
    tasks_per_assignment: str  # "one" | "many"

    def arrival(self, args: Mapping[str, str]) -> Arrival:
        """Read an arrival from the page's query string; raises InvalidInput naming what is missing or wrong."""
        ...

    def completion(self, arrival: Arrival, *, assignment_id: int, code: str | None = None) -> Completion:
        """The form that tells the platform the work is done (`code`: the burst's completion code)."""
        ...


# --- publishing and mirroring --------------------------------------------------------------------------------

class PlatformError(Exception):
    """A platform call that failed: `code` as the platform names it, `retryable` for throttling and transient
    faults (the call log retries those with backoff), `status` the HTTP status when there was one."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retryable, self.status = code, message, retryable, status


class CallLog(Protocol):
    """Every external call goes through `call`: it records the operation, our idempotency key, the outcome and
    each retry (platforms/calls.py), retries PlatformErrors marked retryable with backoff, and re-raises the last
    error. `fn` must raise PlatformError for every failure of the platform (never its client's own errors)."""

    def call(self, operation: str, fn: Callable[[], T], *, key: str | None = None, target: str | None = None,
             listing: bool = False) -> T:
        """`listing`: a read-only page of a list, which the log may keep with the run of pages it belongs to."""
        ...


@dataclass(frozen=True)
class BurstOrder:
    """What a burst asks a platform for. Amounts are integer cents in `currency`; times in seconds.

    `tasks` is how many of our tasks the platform's workers are to do in all: the real slots moved to the burst
    (`hits` HITs x up to `redundancy` answers each) plus the gold tasks served among them. `key` is our
    idempotency root for the burst: every token sent is derived from it, so a retried burst makes nothing twice.
    `url` is the absolute HTTPS work page the platform opens (it appends its own parameters)."""

    key: str
    url: str
    title: str
    description: str
    keywords: tuple[str, ...]
    reward_cents: int  # per task of ours
    currency: str
    hits: int
    redundancy: int
    tasks: int
    assignment_seconds: int
    auto_approval_seconds: int
    lifetime_seconds: int
    estimated_seconds: int  # one task's working time, from measured times (else the requester's estimate)
    split: bool = False  # keep each platform task under the platform's large-task fee threshold
    completion_code: str | None = None  # for platforms that confirm completion with a code
    # An earlier publish of this order may have made some of its tasks: look for them before making any (MTurk
    # forgets a UniqueRequestToken after 24 hours, so the token alone does not guard a late retry).
    retry: bool = False


@dataclass(frozen=True)
class ExternalTask:
    """What the platform made for a burst: an MTurk HIT, a Prolific study. `group` is the platform's grouping
    (MTurk's HITTypeId); `key` the idempotency token it was made with."""

    external_id: str
    max_assignments: int
    reward_cents: int
    group: str | None = None
    key: str | None = None
    expires_at: dt.datetime | None = None
    ended: bool = False  # ended by us (cancel, or the burst done): no new workers there


@dataclass(frozen=True)
class ExternalSubmission:
    """A worker's submitted (or reviewed) work on the platform. `status` is ours: "submitted", "approved",
    "rejected", or "other" (returned, abandoned, still working); `raw_status` the platform's word."""

    external_id: str  # MTurk's AssignmentId, Prolific's submission id (= SESSION_ID)
    task_ref: str  # the ExternalTask's external_id
    worker_ref: str
    status: str
    raw_status: str
    submitted_at: dt.datetime | None = None


class Crowd(Protocol):
    """A platform we publish to. Implementations hold their own client (boto3, an HTTP session)."""

    name: str
    fees: FeeModel  # what the platform charges the requester on rewards and bonuses

    def publish(self, order: BurstOrder, log: CallLog) -> list[ExternalTask]:
        """Make (or find, on a retry) the platform's tasks for the order; idempotent on `order.key`."""
        ...

    def submissions(self, tasks: list[ExternalTask], log: CallLog) -> list[ExternalSubmission]:
        """Every submission on these tasks, all pages."""
        ...

    def approve(self, submission: ExternalSubmission, log: CallLog, *, feedback: str | None = None) -> None:
        """Approve; one approved already counts as success."""
        ...

    def reject(self, submission: ExternalSubmission, log: CallLog, *, feedback: str) -> None:
        """Reject with the feedback the worker is shown; one rejected already counts as success."""
        ...

    def bonus(self, log: CallLog, *, submission: ExternalSubmission, cents: int, reason: str, key: str) -> None:
        """Pay the worker of the submission `cents` more, once per `key`."""
        ...

    def block(self, log: CallLog, *, worker_ref: str, reason: str) -> None:
        """Keep the worker from our tasks on the platform; idempotent."""
        ...

    def cancel(self, task: ExternalTask, log: CallLog) -> None:
        """End the task now (no new workers); idempotent."""
        ...

    def status(self, log: CallLog) -> dict[str, Any]:
        """Facts about our account there for `crowdmarket platforms status` (endpoint, balance)."""
        ...
