"""Helpers for the books' tests: money moved through the ledger as the payments services do (a reward posted as
`reward:<assignment_id>` out of the batch's hold, a top-up as `topup:<batch>:<worker>:<day>`), without depending on
the review helpers' code."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment, Batch, Item
from payments import ledger
from payments.models import AssignmentPay, Hold, TransactionKind
from tests import factories


def requester(session: Session, now: dt.datetime, cents: int = 0, key: str | None = None):
    acct, token = factories.account(session, Role.REQUESTER, now=now, funded=False)
    if cents:
        ledger.fund(session, requester_id=acct.id, cents=cents, currency="USD", key=key or f"seed-{acct.id}",
                    now=now, actor_id=None)
        session.commit()
    return acct, token


def batch(session: Session, owner, now: dt.datetime, *, items: int = 4, hold_cents: int = 0,
          title: str = "Sentiment of reviews") -> Batch:
    """A published batch of `items` items with a hold of `hold_cents` placed here: its reward is 0, so publishing
    holds nothing (the tests pay what they choose, through the ledger)."""
    proj = factories.project(session, owner, now=now, title=title, reward_cents=0)
    proj.estimated_seconds = 30
    session.flush()
    factories.items(session, proj, items, now=now, prefix=f"p{proj.id}-")
    published, _ = publish_batch(session, project_id=proj.id, account=owner, now=now)
    hold = session.scalar(select(Hold).where(Hold.batch_id == published.id))
    if hold is None and hold_cents:
        ledger.place_hold(session, requester_id=owner.id, batch_id=published.id, currency="USD", cents=hold_cents,
                          now=now)
    elif hold is not None and hold_cents > hold.held:
        ledger.extend_hold(session, hold, hold_cents - hold.held, now=now, key=f"hold:{published.id}")
    session.commit()
    return published


def assignment(session: Session, batch: Batch, worker, now: dt.datetime, *, duration_ms: int = 60_000,
               n: int = 0) -> Assignment:
    items = list(session.scalars(select(Item).where(Item.project_id == batch.project_id).order_by(Item.id)))
    answer = factories.answer(session, items[n % len(items)], worker, "pos", now=now, duration_ms=duration_ms)
    asg = session.get(Assignment, answer.assignment_id)
    asg.duration_ms = duration_ms
    session.flush()
    return asg


def _accounts(session: Session, owner_id: int, worker_id: int):
    refs = [ledger.escrow(owner_id, "USD"), ledger.available(owner_id, "USD"), ledger.payable(worker_id, "USD"),
            ledger.fees("USD")]
    ids = ledger.account_ids(session, refs)
    return [ids[r] for r in refs]


def pay(session: Session, batch: Batch, asg: Assignment, *, reward: int, fee: int, now: dt.datetime) -> int:
    """Approve-and-pay as the review service does: out of the hold when open, else from available."""
    owner_id = _owner(session, batch)
    escrow, available, payable, fees = _accounts(session, owner_id, asg.worker_id)
    key = f"reward:{asg.id}"
    hold = ledger.lock_hold(session, batch.id)
    source = available
    if hold is not None and hold.state.value == "open":
        ledger.draw(session, hold, reward + fee, now=now, key=key)
        source = escrow
    [tid] = ledger.post(session, [ledger.Posting(key, TransactionKind.REWARD, "USD",
                                                 ((source, -(reward + fee)), (payable, reward), (fees, fee)),
                                                 {"requester_id": owner_id, "worker_id": asg.worker_id,
                                                  "project_id": batch.project_id, "batch_id": batch.id,
                                                  "assignment_id": asg.id, "reason": "Approved"})], now=now)
    session.add(AssignmentPay(assignment_id=asg.id, worker_id=asg.worker_id, batch_id=batch.id,
                              project_id=batch.project_id, currency="USD", reward_cents=reward,
                              reward_transaction_id=tid, top_up_cents=0, duration_ms=asg.duration_ms or 0,
                              approved_at=now))
    session.flush()
    return tid


def bonus(session: Session, batch: Batch, worker_id: int, *, cents: int, fee: int, now: dt.datetime) -> int:
    owner_id = _owner(session, batch)
    escrow, available, payable, fees = _accounts(session, owner_id, worker_id)
    key = f"topup:{batch.id}:{worker_id}:{now.date().isoformat()}"
    hold = ledger.lock_hold(session, batch.id)
    source = available
    if hold is not None and hold.state.value == "open":
        ledger.draw(session, hold, cents + fee, now=now, key=key)
        source = escrow
    [tid] = ledger.post(session, [ledger.Posting(key, TransactionKind.BONUS, "USD",
                                                 ((source, -(cents + fee)), (payable, cents), (fees, fee)),
                                                 {"requester_id": owner_id, "worker_id": worker_id,
                                                  "project_id": batch.project_id, "batch_id": batch.id,
                                                  "reason": "Fair-wage top-up"})], now=now)
    session.flush()
    return tid


def _owner(session: Session, batch: Batch) -> int:
    from market.catalogue.models import Project

    return session.get(Project, batch.project_id).owner_id
