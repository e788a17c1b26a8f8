"""The payments cycle: the periodic, idempotent work of payments, as an ordered list of steps.

Run by RQ's scheduler every PAYMENTS_CYCLE_SECONDS when Redis is configured (payments/jobs.py; `crowdmarket jobs
work` runs it), or by `crowdmarket payments cycle` from cron otherwise. Each step takes the session and the time
and returns a summary of what it did; every step is idempotent, so a cycle run twice does its work once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from payments.review.auto import auto_approve
from payments.wage.settle import settle_holds
from payments.wage.topups import pay_top_ups

Step = Callable[..., dict[str, Any]]


def top_ups(session: Session, *, now: dt.datetime) -> dict[str, Any]:
    return dataclasses.asdict(pay_top_ups(session, now=now))


def settle(session: Session, *, now: dt.datetime) -> dict[str, Any]:
    return {"holds_settled": settle_holds(session, now=now)}


# In order: approvals first, so that top-ups see the work approved this cycle, and holds are settled last.
STEPS: list[tuple[str, Step]] = [
    ("auto_approve", auto_approve),
    ("top_ups", top_ups),
    ("settle_holds", settle),
]


def run(session: Session, *, now: dt.datetime) -> dict[str, Any]:
    """Run every step of the cycle in order, in the caller's unit of work; returns each step's summary."""
    return {name: step(session, now=now) for name, step in STEPS}
