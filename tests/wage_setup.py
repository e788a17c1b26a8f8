"""Test setup for the fair-wage tests (tests/test_wage*.py): work done and approved without the review API.

`approve` is TEST SETUP ONLY, standing in for payments' approval service until it exists: it marks assignments
approved and pays their reward as the spec says approval does (AssignmentPay + one REWARD transaction under the
key `reward:<assignment id>`, drawn on the batch's hold when it is open, else from available money)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.catalogue.models import Answer, Assignment, AssignmentStatus, Batch, Hit, Item, Project
from payments import ledger
from payments.ledger import Posting
from payments.models import AssignmentPay, HoldState, TransactionKind
from payments.wage.costs import fees_of


def work(session: Session, hit: Hit, worker_id: int, *, seconds: float, now: dt.datetime,
         status: AssignmentStatus = AssignmentStatus.SUBMITTED, answer: bool = True) -> Assignment:
    """An assignment of `worker_id` on `hit` that took `seconds` (server-measured), with an answer per item."""
    ms = int(seconds * 1000)
    asg = Assignment(hit_id=hit.id, batch_id=hit.batch_id, project_id=hit.project_id, worker_id=worker_id,
                     status=status, guideline_version=1, leased_at=now - dt.timedelta(milliseconds=ms),
                     expires_at=now + dt.timedelta(minutes=10),
                     submitted_at=None if status == AssignmentStatus.LEASED else now,
                     duration_ms=None if status == AssignmentStatus.LEASED else ms,
                     review_feedback="no" if status == AssignmentStatus.REJECTED else None)
    session.add(asg)
    session.flush()
    if answer and status != AssignmentStatus.LEASED:
        for item_id in session.scalars(select(Item.id).where(Item.hit_id == hit.id)):
            session.add(Answer(assignment_id=asg.id, item_id=item_id, worker_id=worker_id,
                               project_id=hit.project_id, value="pos", guideline_version=1, submitted_at=now,
                               duration_ms=ms))
    session.flush()
    return asg


def approve(session: Session, assignments: Sequence[Assignment], *, now: dt.datetime) -> None:
    """TEST SETUP: approve and pay the reward (see the module docstring)."""
    for asg in assignments:
        batch = session.get(Batch, asg.batch_id)
        project = session.get(Project, asg.project_id)
        hit = session.get(Hit, asg.hit_id)
        assert batch and project and hit
        reward = batch.reward_cents
        fee = fees_of(batch).reward_fee(reward, hit.max_assignments)
        asg.status, asg.reviewed_at = AssignmentStatus.APPROVED, now
        tid = None
        if reward:
            hold = ledger.lock_hold(session, batch.id)
            from_hold = hold is not None and hold.state == HoldState.OPEN
            source = (ledger.escrow if from_hold else ledger.available)(project.owner_id, batch.currency)
            fees, payable = ledger.fees(batch.currency, batch.fee_model), ledger.payable(asg.worker_id, batch.currency)
            ids = ledger.account_ids(session, [source, fees, payable])
            if from_hold:
                ledger.draw(session, hold, reward + fee, now=now, key=f"reward:{asg.id}")
            [tid] = ledger.post(session, [Posting(f"reward:{asg.id}", TransactionKind.REWARD, batch.currency,
                                                  ((ids[source], -(reward + fee)), (ids[payable], reward),
                                                   (ids[fees], fee)),
                                                  {"worker_id": asg.worker_id, "batch_id": batch.id,
                                                   "assignment_id": asg.id, "requester_id": project.owner_id})],
                                now=now)
        session.add(AssignmentPay(assignment_id=asg.id, worker_id=asg.worker_id, batch_id=batch.id,
                                  project_id=project.id, currency=batch.currency, reward_cents=reward,
                                  reward_transaction_id=tid, duration_ms=asg.duration_ms or 0, approved_at=now))
    session.flush()


def hits(session: Session, batch_id: int) -> list[Hit]:
    return list(session.scalars(select(Hit).where(Hit.batch_id == batch_id, Hit.is_gold.is_(False))
                                .order_by(Hit.id)))
