"""Publishing under real concurrency: separate connections and committed transactions, not the rollback wrapper."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, func, select

from base.db import Database
from base.errors import InvalidInput
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Batch, Hit, Item, Project
from tests.conftest import START
from tests.factories import account, in_uow, items, project
from workers.models import Account, ApiToken

THREADS = 8


@pytest.fixture
def committed(engine) -> Iterator[tuple[Database, int, int]]:
    db = Database(engine)
    with db.session_scope() as s:
        owner, _ = account(s, Role.REQUESTER, now=START, funded=False)  # no ledger rows to clean up
        proj = in_uow(project, s, owner, now=START)
        in_uow(items, s, proj, 40, now=START)
        ids = (owner.id, proj.id)
    yield db, *ids
    with db.session_scope() as s:
        s.execute(delete(Item).where(Item.project_id == ids[1]))
        s.execute(delete(Hit).where(Hit.project_id == ids[1]))
        s.execute(delete(Batch).where(Batch.project_id == ids[1]))
        s.execute(delete(Project).where(Project.id == ids[1]))
        s.execute(delete(ApiToken).where(ApiToken.account_id == ids[0]))
        s.execute(delete(Account).where(Account.id == ids[0]))
        s.commit()


def _race(db: Database, owner_id: int, project_id: int, key: str | None) -> list[object]:
    barrier = threading.Barrier(THREADS)
    outcomes: list[object] = [None] * THREADS

    def worker(i: int) -> None:
        barrier.wait()  # before any query: on SQLite the first statement takes the write lock
        with db.session_scope() as s:
            owner = s.get(Account, owner_id)
            try:
                batch, created = in_uow(publish_batch, s, project_id=project_id, account=owner, now=START,
                                                       idempotency_key=key)
                outcomes[i] = (batch.id, created)
            except Exception as exc:  # noqa: BLE001 - the test inspects what each thread saw
                outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


def test_concurrent_publishes_with_one_key_make_one_batch(committed):
    db, owner_id, project_id = committed
    outcomes = _race(db, owner_id, project_id, key="same-key")
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    assert len({batch_id for batch_id, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Batch).where(Batch.project_id == project_id)) == 1


def test_concurrent_publishes_never_publish_an_item_twice(committed):
    db, owner_id, project_id = committed
    outcomes = _race(db, owner_id, project_id, key=None)
    made = [o for o in outcomes if isinstance(o, tuple)]
    assert len(made) == 1, outcomes  # the first takes every item; the rest find nothing left
    assert all(isinstance(o, InvalidInput) for o in outcomes if not isinstance(o, tuple))
    with db.session_scope() as s:
        assert s.scalar(select(func.sum(Batch.item_count)).where(Batch.project_id == project_id)) == 40
        assert s.scalar(select(func.count()).select_from(Item).where(
            Item.project_id == project_id, Item.hit_id.is_(None))) == 0
