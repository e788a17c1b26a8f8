"""Limits hold under concurrency: 16 threads spending one requester's money at once on PostgreSQL, each in its own
transaction, never take it below zero, and the books balance after."""

from __future__ import annotations

import threading

import pytest
from alembic import command

from base.clock import utcnow
from base.db import Database, make_engine
from base.identity import Role
from payments import ledger
from payments.ledger import InsufficientFunds, Posting
from payments.models import TransactionKind
from shell.cli import alembic_config
from tests.conftest import DATABASE_URL
from workers.service import create_account

pytestmark = pytest.mark.skipif(not (DATABASE_URL or "").startswith("postgresql"),
                                reason="needs PostgreSQL's row locks and real concurrent transactions")


@pytest.fixture
def live_database(empty_database_url):
    cfg = alembic_config(empty_database_url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    engine = make_engine(empty_database_url)
    yield Database(engine)
    engine.dispose()


def test_sixteen_spenders_never_overdraw_a_requester(live_database):
    now = utcnow()
    with live_database.unit_of_work() as s:
        requester = create_account(s, role=Role.REQUESTER, email="spender@example.com", now=now).id
        worker = create_account(s, role=Role.WORKER, username="payee", now=now).id
        s.flush()
        ledger.fund(s, requester_id=requester, cents=1000, currency="USD", key="seed", now=now, actor_id=None)
    start, outcomes, lock = threading.Barrier(16), [], threading.Lock()

    def spend(n: int) -> None:
        start.wait()
        for attempt in range(4):
            try:
                with live_database.unit_of_work() as s:
                    ids = ledger.account_ids(s, [ledger.available(requester, "USD"), ledger.payable(worker, "USD")])
                    ledger.post(s, [Posting(f"spend:{n}:{attempt}", TransactionKind.BONUS, "USD",
                                            ((ids[ledger.available(requester, "USD")], -30),
                                             (ids[ledger.payable(worker, "USD")], 30)))], now=utcnow())
                result = "ok"
            except InsufficientFunds:
                result = "short"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 33 and outcomes.count("short") == 64 - 33  # 33 x 30 = 990 of 1000
    with live_database.session_scope() as s:
        assert ledger.balance(s, ledger.available(requester, "USD")) == 10
        assert ledger.check_books(s) == []
