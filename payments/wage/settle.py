"""Settling holds: when a batch is cancelled, expires or completes, the unused part of its hold goes back to the
requester's available money.

What stays held is what outstanding work may still cost: each submitted assignment not yet reviewed and each
live lease (it may still be submitted) at the assignment's maximum cost, and the top-up headroom of each approved
assignment whose top-up is not settled yet (`AssignmentPay.top_up_cents` NULL). Once nothing is outstanding the
hold is closed (at most once: a closed hold is never reopened; pay that comes later, such as a reversed
rejection, is drawn from available money). With fewer than 10 submissions in all and nothing outstanding, no
top-up can come any more (payments/wage/topups.py), so that headroom is not kept. Idempotent: a second run
releases nothing new.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from base.events import BatchStatusChanged
from market.catalogue.batches import batch_progress_many, effective_status
from market.catalogue.models import Assignment, AssignmentStatus, Batch, BatchStatus
from payments import ledger
from payments.models import AssignmentPay, Hold, HoldState, LedgerTransaction, TransactionKind
from payments.wage.costs import assignment_cost
from payments.wage.topups import MIN_SUBMISSIONS, SUBMITTED

FINISHED = (BatchStatus.CANCELLED, BatchStatus.EXPIRED, BatchStatus.COMPLETE)


@dataclass
class Outstanding:
    submitted: int = 0  # submitted, not reviewed
    leased: int = 0  # live leases
    top_ups: int = 0  # approved, top-up not settled
    submissions: int = 0  # all submitted, approved or rejected work with a time (the top-ups' measure)

    @property
    def pending_top_ups(self) -> int:
        """Approved work whose top-up may still come: none once the batch's work is final below 10 submissions."""
        return self.top_ups if self.submissions >= MIN_SUBMISSIONS or self.submitted or self.leased else 0

    def needs(self, batch: Batch) -> int:
        cost = assignment_cost(batch)
        return (self.submitted + self.leased) * cost.total + self.pending_top_ups * cost.top_up_total

    @property
    def none(self) -> bool:
        return not (self.submitted or self.leased or self.pending_top_ups)


def outstanding(session: Session, batch_ids: Sequence[int], *, now: dt.datetime) -> dict[int, Outstanding]:
    """What each batch's hold must still cover, by batch id (three grouped queries for the lot)."""
    out: defaultdict[int, Outstanding] = defaultdict(Outstanding)
    ids = list(batch_ids)
    if not ids:
        return {}
    live = (Assignment.status == AssignmentStatus.LEASED) & (Assignment.expires_at > now)
    rows = session.execute(select(Assignment.batch_id, Assignment.status, func.count())
                           .where(Assignment.batch_id.in_(ids),
                                  (Assignment.status == AssignmentStatus.SUBMITTED) | live)
                           .group_by(Assignment.batch_id, Assignment.status))
    for batch_id, status, count in rows:
        if status == AssignmentStatus.SUBMITTED:
            out[batch_id].submitted = int(count)
        else:
            out[batch_id].leased = int(count)
    for batch_id, count in session.execute(select(AssignmentPay.batch_id, func.count())
                                           .where(AssignmentPay.batch_id.in_(ids),
                                                  AssignmentPay.top_up_cents.is_(None))
                                           .group_by(AssignmentPay.batch_id)):
        out[batch_id].top_ups = int(count)
    for batch_id, count in session.execute(select(Assignment.batch_id, func.count())
                                           .where(Assignment.batch_id.in_(ids), Assignment.status.in_(SUBMITTED),
                                                  Assignment.duration_ms.is_not(None))
                                           .group_by(Assignment.batch_id)):
        out[batch_id].submissions = int(count)
    return {batch_id: out[batch_id] for batch_id in ids}


def settle_hold(session: Session, batch: Batch, *, now: dt.datetime) -> bool:
    """Release what the batch's (finished) hold no longer needs and close it when nothing is outstanding; returns
    whether anything changed."""
    hold = ledger.lock_hold(session, batch.id)  # first: concurrent approvals and top-ups queue behind it
    if hold is None or hold.state != HoldState.OPEN:
        return False
    owed = outstanding(session, [batch.id], now=now)[batch.id]
    keep = 0 if owed.none else owed.needs(batch)
    spare = ledger.remaining(hold) - keep
    if spare <= 0 and not owed.none:
        return False
    releases = session.scalar(select(func.count()).select_from(LedgerTransaction)
                              .where(LedgerTransaction.hold_id == hold.id,
                                     LedgerTransaction.kind == TransactionKind.RELEASE)) or 0
    ledger.release(session, hold, max(spare, 0), now=now, key=f"release:{batch.id}:{releases + 1}",
                   close=owed.none)
    return True


def settle_holds(session: Session, *, now: dt.datetime) -> int:
    """Settle the open hold of every batch that is cancelled, expired or complete; returns how many changed."""
    batches = list(session.scalars(select(Batch).join(Hold, Hold.batch_id == Batch.id)
                                   .where(Hold.state == HoldState.OPEN).order_by(Batch.id)))
    progress = batch_progress_many(session, batches, now=now)
    changed = 0
    for batch in batches:
        if effective_status(batch, now=now, complete=progress[batch.id].complete) in FINISHED:
            changed += settle_hold(session, batch, now=now)
    return changed


def on_batch_status_changed(session: Session, event: BatchStatusChanged) -> None:
    """A cancelled batch's unused hold goes back at once."""
    if event.status != BatchStatus.CANCELLED.value:
        return
    batch = session.get(Batch, event.batch_id)
    if batch is not None:
        settle_hold(session, batch, now=event.at)
