"""A funded requester's published batch with submitted work, for the review tests (tests/test_review*.py)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Answer, Assignment, Batch, Item, Project
from payments import ledger
from payments.models import AssignmentPay, HoldState, LedgerTransaction, TransactionKind
from tests import factories
from workers.models import Account

_keys = itertools.count(1)


@dataclass
class World:
    owner: Account
    owner_token: str
    project: Project
    batch: Batch
    workers: list[tuple[Account, str]]
    # Assignment ids by worker index, in item order.
    by_worker: dict[int, list[int]] = field(default_factory=dict)

    @property
    def assignments(self) -> list[int]:
        return sorted(a for ids in self.by_worker.values() for a in ids)


def fund(session: Session, requester: Account, cents: int, now: dt.datetime) -> None:
    ledger.fund(session, requester_id=requester.id, cents=cents, currency="USD", key=f"review-{next(_keys)}",
                now=now, actor_id=None)


def world(session: Session, now: dt.datetime, *, items: int = 4, workers: int = 3, reward: int = 10,
          funds: int = 10_000, delay: int | None = None, reject_gold_misses: bool = False,
          owner: Account | None = None, owner_token: str = "") -> World:
    """A project (estimated_seconds=30) with `items` published items, each answered by `workers` workers."""
    if owner is None:
        owner, owner_token = factories.account(session, Role.REQUESTER, now=now)
    if funds:
        fund(session, owner, funds, now)
    extra = {} if delay is None else {"auto_approval_delay_seconds": delay}
    proj = factories.project(session, owner, now=now, reward_cents=reward, assignments_per_item=workers, **extra)
    proj.estimated_seconds = 30
    proj.reject_gold_misses = reject_gold_misses
    factories.items(session, proj, items, now=now, prefix=f"p{proj.id}-")
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=now)
    session.commit()
    rows = session.scalars(select(Item).where(Item.batch_id == batch.id).order_by(Item.id)).all()
    accounts = [factories.account(session, Role.WORKER, now=now) for _ in range(workers)]
    w = World(owner, owner_token, proj, batch, accounts, {i: [] for i in range(workers)})
    for item in rows:
        for i, (acct, _) in enumerate(accounts):
            ans = factories.answer(session, item, acct, "pos", now=now, duration_ms=20_000)
            w.by_worker[i].append(ans.assignment_id)
    # The server measures an assignment's time at submit; the factory's answers leave it to us.
    session.execute(update(Assignment).where(Assignment.id.in_(w.assignments)).values(duration_ms=20_000))
    session.commit()
    return w


def payable(session: Session, worker: Account) -> int:
    return ledger.balance(session, ledger.payable(worker.id, "USD"))


def requester_total(session: Session, requester: Account) -> int:
    """Available plus escrow: what the requester has, wherever it sits (publishing may hold some)."""
    return (ledger.balance(session, ledger.available(requester.id, "USD"))
            + ledger.balance(session, ledger.escrow(requester.id, "USD")))


def paid_count(session: Session) -> tuple[int, int]:
    """(AssignmentPay rows, REWARD transactions)."""
    pays = session.scalar(select(func.count()).select_from(AssignmentPay))
    rewards = session.scalar(select(func.count()).select_from(LedgerTransaction)
                             .where(LedgerTransaction.kind == TransactionKind.REWARD))
    return pays, rewards


def status(session: Session, assignment_id: int) -> str:
    return session.scalar(select(Assignment.status).where(Assignment.id == assignment_id).execution_options(
        populate_existing=True)).value


def leave_only(session: Session, requester: Account, batch: Batch, cents: int, now: dt.datetime) -> None:
    """Leave the requester exactly `cents` available and no open hold on `batch` (whether or not publishing placed
    one), so that paying more than that is short."""
    hold = ledger.lock_hold(session, batch.id)
    if hold is not None and hold.state == HoldState.OPEN:
        ledger.release(session, hold, ledger.remaining(hold), now=now, key=f"release:{batch.id}:test", close=True)
    for txn in session.scalars(select(LedgerTransaction).where(LedgerTransaction.kind == TransactionKind.FUNDING,
                                                               LedgerTransaction.requester_id == requester.id)):
        ledger.reverse(session, txn.id, now=now, reason="test: empty the account")
    if cents:
        fund(session, requester, cents, now)
    session.commit()


def exclude(session: Session, assignment_id: int, now: dt.datetime | None) -> None:
    """What a block does to the worker's answers (market/quality/effects.py): excluded_at set; lifting clears it."""
    for ans in session.scalars(select(Answer).where(Answer.assignment_id == assignment_id)):
        ans.excluded_at = now
    session.commit()
