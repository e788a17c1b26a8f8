"""Concurrent reviewers on PostgreSQL: 16 threads, each with its own session and unit of work, approve (in bulk and
one by one) and reject overlapping sets of one batch's work, while ops run payouts. No assignment is paid twice,
none both paid and rejected, no balance goes negative, the books balance, and nobody deadlocks."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import func, select

from base.clock import utcnow
from base.db import Database
from base.identity import Caller, Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment, AssignmentStatus, Item
from payments import ledger
from payments.books import payouts
from payments.books.reconcile import reconcile
from payments.models import (
    AssignmentPay,
    LedgerAccount,
    LedgerTransaction,
    PayoutLine,
    PayoutLineStatus,
    TransactionKind,
)
from payments.review.approve import approve, reject
from shell.app import subscribe
from shell.cli import alembic_config
from tests import factories
from tests.conftest import DATABASE_URL

THREADS = 16
ITEMS, PER_ITEM, REWARD = 60, 4, 10



def _payout_runs(db: Database) -> None:
    """Ops pay out while the reviewers pay in: five payout batches, each created and approved in its own unit of
    work, each taking whatever payable money exists at that moment."""
    with db.unit_of_work() as s:
        ops = factories.account(s, Role.OPS, now=utcnow())[0].id
    for n in range(5):
        with db.unit_of_work() as s:
            batch, _ = payouts.create_batch(s, actor_id=ops, currency="USD", period_end=utcnow(), minimum_cents=1,
                                            now=utcnow(), key=f"concurrent-{n}")
            payouts.approve(s, batch_id=batch.id, actor_id=ops, now=utcnow())
        time.sleep(0.05)


# A concurrent payout run, started with the reviewers and joined with them: it opens its own units of work.
CONCURRENT_PAYOUT_RUN: Callable[[Database], None] | None = _payout_runs

pytestmark = pytest.mark.skipif(not DATABASE_URL or not DATABASE_URL.startswith("postgresql"),
                                reason="needs PostgreSQL (CROWDMARKET_DATABASE_URL): concurrent reviewers queue on "
                                       "row locks, which SQLite does not have (it has one writer at a time)")


@pytest.fixture
def db(empty_database_url):
    cfg = alembic_config(empty_database_url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    database = Database.from_url(empty_database_url, pool_size=THREADS + 4)
    subscribe(database.events)  # as the app does: publishing's handlers (holds) run as in production
    yield database
    database.dispose()


def _world(db: Database):
    now = utcnow()
    with db.unit_of_work() as s:
        owner, _ = factories.account(s, Role.REQUESTER, now=now)
        ledger.fund(s, requester_id=owner.id, cents=1_000_000, currency="USD", key="threads", now=now, actor_id=None)
        proj = factories.project(s, owner, now=now, reward_cents=REWARD, assignments_per_item=PER_ITEM)
        proj.estimated_seconds = 30
        factories.items(s, proj, ITEMS, now=now)
        batch, _ = publish_batch(s, project_id=proj.id, account=owner, now=now)
        s.commit()
        workers = [factories.account(s, Role.WORKER, now=now)[0] for _ in range(PER_ITEM)]
        for item in s.scalars(select(Item).where(Item.batch_id == batch.id)).all():
            for w in workers:
                factories.answer(s, item, w, "pos", now=now)
        ids = sorted(s.scalars(select(Assignment.id).where(Assignment.batch_id == batch.id)))
        return Caller(owner.id, Role.REQUESTER), proj.id, batch.id, [w.id for w in workers], ids


def test_sixteen_concurrent_reviewers_pay_each_assignment_once(db):
    actor, project_id, batch_id, worker_ids, ids = _world(db)
    assert len(ids) == ITEMS * PER_ITEM
    barrier = threading.Barrier(THREADS + (CONCURRENT_PAYOUT_RUN is not None))
    errors: list[BaseException] = []

    def reviewer(n: int) -> None:
        rng = random.Random(n)
        try:
            barrier.wait()
            kind = n % 4
            if kind == 0:  # every submitted assignment of the batch, in one call
                with db.unit_of_work() as s:
                    approve(s, actor=actor, now=utcnow(), batch_id=batch_id)
            elif kind == 1:  # overlapping random sets of ids, out of order
                for _ in range(3):
                    with db.unit_of_work() as s:
                        approve(s, actor=actor, now=utcnow(), assignment_ids=rng.sample(ids, len(ids) // 3))
            elif kind == 2:  # one by one
                for aid in rng.sample(ids, 40):
                    with db.unit_of_work() as s:
                        approve(s, actor=actor, now=utcnow(), assignment_ids=[aid])
            elif n == 3:  # a rejecter racing the approvers
                for aid in rng.sample(ids, 20):
                    with db.unit_of_work() as s:
                        reject(s, actor=actor, now=utcnow(), feedback="Raced", assignment_ids=[aid])
            else:  # by worker
                with db.unit_of_work() as s:
                    approve(s, actor=actor, now=utcnow(), worker_ids=rng.sample(worker_ids, 2),
                            project_id=project_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def payout() -> None:
        try:
            barrier.wait()
            CONCURRENT_PAYOUT_RUN(db)  # type: ignore[misc]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(THREADS)]
    if CONCURRENT_PAYOUT_RUN is not None:
        threads.append(threading.Thread(target=payout))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a reviewer hangs"
    assert errors == []

    with db.unit_of_work() as s:
        approved = set(s.scalars(select(Assignment.id).where(Assignment.batch_id == batch_id,
                                                             Assignment.status == AssignmentStatus.APPROVED)))
        rejected = set(s.scalars(select(Assignment.id).where(Assignment.batch_id == batch_id,
                                                             Assignment.status == AssignmentStatus.REJECTED)))
        assert approved | rejected == set(ids) and len(approved) > 0  # the batch-wide approvals took the rest
        pays = list(s.scalars(select(AssignmentPay.assignment_id)))
        rewards = list(s.scalars(select(LedgerTransaction.assignment_id).where(
            LedgerTransaction.kind == TransactionKind.REWARD)))
        assert sorted(pays) == sorted(rewards) == sorted(approved)  # each approved paid once, nothing else paid
        earned = s.scalar(select(func.sum(LedgerAccount.balance)).where(
            LedgerAccount.code.like("worker:%:payable:%") | LedgerAccount.code.like("worker:%:paid_out:%")))
        assert earned == REWARD * len(approved)  # payable + paid out: every reward once, however paid out
        assert s.scalar(select(func.count()).select_from(PayoutLine)
                        .where(PayoutLine.status == PayoutLineStatus.APPROVED)) > 0
        assert reconcile(s)["ok"], reconcile(s)["problems"]
        assert s.scalar(select(func.count()).select_from(LedgerAccount).where(LedgerAccount.balance < 0,
                                                                                LedgerAccount.nonnegative)) == 0
        assert ledger.check_books(s) == []
