"""Auto-approval: submitted work nobody reviewed is approved (and paid) once its batch's delay has passed.

The rules, in the order the job applies them to each submitted assignment whose `submitted_at +
batch.auto_approval_delay_seconds <= now`:

1. **A blocked worker's excluded answers.** While a block excludes any answer of the assignment
   (`Answer.excluded_at IS NOT NULL`, market/quality/effects.py), the job neither approves nor rejects it: the
   work is kept out of the labels and out of automatic pay, and the requester may approve or reject it by hand.
   When the block is lifted (its answers' `excluded_at` cleared), the assignment is auto-approved like any other,
   its delay still counted from its submission (so it is approved by the next run if that has passed).
2. **Gold misses** never reject work automatically, unless the project opted in (`Project.reject_gold_misses`):
   then an assignment with an answer whose `gold_correct` is false is rejected, with the generic feedback
   `GOLD_MISS_FEEDBACK` (it says which kind of check failed, never which item was the check).
3. Everything else is approved and paid like a requester's approval (reviewed_by_id NULL: the job).

Idempotent: the status guard of `review_where` makes a second run (or a concurrent one) find nothing left. Each
batch is reviewed in a savepoint of its own: a requester whose money is short (402) leaves that batch's work
waiting for the next run, and everyone else is still paid.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, select
from sqlalchemy.orm import Session

from base.uow import savepoint
from market.catalogue.models import Answer, AssignmentStatus, Batch, Project
from payments.ledger import InsufficientFunds
from payments.review.approve import _A, review_where

log = logging.getLogger(__name__)
GOLD_MISS_FEEDBACK = "An answer did not match a check item's known answer"


def _excluded() -> ColumnElement[bool]:
    return exists().where(Answer.assignment_id == _A.c.id, Answer.excluded_at.is_not(None))


def _gold_miss() -> ColumnElement[bool]:
    return and_(_A.c.project_id.in_(select(Project.id).where(Project.reject_gold_misses)),
                exists().where(Answer.assignment_id == _A.c.id, Answer.gold_correct.is_(false())))


def auto_approve(session: Session, *, now: dt.datetime) -> dict[str, Any]:
    """Approve (or, where the project opted in, reject for a gold miss) every submitted assignment whose batch's
    auto-approval delay has passed; returns what it did. Running it twice does it once."""
    submitted = _A.c.status == AssignmentStatus.SUBMITTED.value
    delays = sorted(session.scalars(select(Batch.auto_approval_delay_seconds).distinct().where(
        exists().where(_A.c.batch_id == Batch.id, submitted))))
    done: dict[str, Any] = {"approved": 0, "rejected": 0, "waiting_blocked": 0, "short_of_funds": []}
    for delay in delays:
        due = (submitted, _A.c.submitted_at <= now - dt.timedelta(seconds=delay),
               _A.c.batch_id.in_(select(Batch.id).where(Batch.auto_approval_delay_seconds == delay)))
        done["waiting_blocked"] += session.scalar(select(func.count()).select_from(_A).where(*due, _excluded())) or 0
        batch_ids = sorted(session.scalars(select(_A.c.batch_id).distinct().where(*due, not_(_excluded()))))
        for batch_id in batch_ids:
            crit = (*due, _A.c.batch_id == batch_id, not_(_excluded()))
            try:
                with savepoint(session):
                    rejected = review_where(session, (*crit, _gold_miss()), approve=False, actor=None, now=now,
                                            feedback=GOLD_MISS_FEEDBACK)
                    approved = review_where(session, crit, approve=True, actor=None, now=now)
            except InsufficientFunds as exc:
                log.warning("auto-approval of batch %s waits: %s", batch_id, exc.detail)
                done["short_of_funds"].append(batch_id)
                continue
            done["rejected"] += len(rejected.reviewed)
            done["approved"] += len(approved.reviewed)
    return done
