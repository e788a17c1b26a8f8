"""The ledger's core: balanced posting, idempotency keys, limits at write time, reversals, holds, immutability."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from base.clock import utcnow
from base.errors import Conflict
from base.identity import Role
from market.catalogue.batches import publish_batch
from payments import ledger
from payments.ledger import InsufficientFunds, Posting
from payments.models import HoldState, TransactionKind
from tests import factories


@pytest.fixture
def requester(session):
    acct, _ = factories.account(session, Role.REQUESTER, now=utcnow(), funded=False)
    return acct


@pytest.fixture
def worker(session):
    acct, _ = factories.account(session, Role.WORKER, now=utcnow())
    return acct


def test_funding_credits_available_and_balances_the_books(session, requester):
    now = utcnow()
    txn, created = ledger.fund(session, requester_id=requester.id, cents=5000, currency="USD", key="f1", now=now,
                               actor_id=None)
    assert created and txn.kind == TransactionKind.FUNDING
    assert ledger.balance(session, ledger.available(requester.id, "USD")) == 5000
    assert ledger.balance(session, ledger.funding("USD")) == -5000
    again, created = ledger.fund(session, requester_id=requester.id, cents=5000, currency="USD", key="f1", now=now,
                                 actor_id=None)
    assert not created and again.id == txn.id
    assert ledger.balance(session, ledger.available(requester.id, "USD")) == 5000
    with pytest.raises(Conflict):
        ledger.fund(session, requester_id=requester.id, cents=4000, currency="USD", key="f1", now=now, actor_id=None)
    assert ledger.check_books(session) == []


def test_unbalanced_and_float_postings_are_refused(session, requester):
    ids = ledger.account_ids(session, [ledger.available(requester.id, "USD"), ledger.funding("USD")])
    a, f = ids.values()
    for legs in (((a, 5), (f, -4)), ((a, 5.0), (f, -5.0)), ((a, 5),)):
        with pytest.raises(ValueError):
            ledger.post(session, [Posting("bad", TransactionKind.FUNDING, "USD", legs)], now=utcnow())


def test_available_never_goes_negative_and_the_shortfall_is_told(session, requester):
    now = utcnow()
    ledger.fund(session, requester_id=requester.id, cents=100, currency="USD", key="f", now=now, actor_id=None)
    with pytest.raises(InsufficientFunds) as info:
        ledger.place_hold(session, requester_id=requester.id, batch_id=_batch(session, requester), currency="USD",
                          cents=150, now=now)
    assert info.value.status == 402 and info.value.extra["shortfall"] == {"cents": 50, "currency": "USD"}


def test_a_hold_is_drawn_on_released_and_closed_once(session, requester, worker):
    now = utcnow()
    ledger.fund(session, requester_id=requester.id, cents=1000, currency="USD", key="f", now=now, actor_id=None)
    hold = ledger.place_hold(session, requester_id=requester.id, batch_id=_batch(session, requester),
                             currency="USD", cents=600, now=now)
    ids = ledger.account_ids(session, [ledger.escrow(requester.id, "USD"), ledger.payable(worker.id, "USD")])
    ledger.draw(session, hold, 700, now=now, key="a1")  # more than held: extended from available first
    ledger.post(session, [Posting("a1", TransactionKind.REWARD, "USD",
                                  ((ids[ledger.escrow(requester.id, "USD")], -700),
                                   (ids[ledger.payable(worker.id, "USD")], 700)))], now=now)
    assert (hold.held, hold.posted, ledger.remaining(hold)) == (700, 700, 0)
    assert ledger.balance(session, ledger.available(requester.id, "USD")) == 300
    ledger.extend_hold(session, hold, 200, now=now, key="more")
    assert ledger.release(session, hold, 10_000, now=now, key="rel", close=True) == 200
    assert hold.state == HoldState.CLOSED
    assert ledger.release(session, hold, 1, now=now, key="rel2", close=True) == 0
    assert ledger.balance(session, ledger.available(requester.id, "USD")) == 300
    assert ledger.check_books(session) == []


def test_reversal_negates_once(session, requester):
    now = utcnow()
    txn, _ = ledger.fund(session, requester_id=requester.id, cents=300, currency="USD", key="f", now=now,
                         actor_id=None)
    rev = ledger.reverse(session, txn.id, now=now, reason="funded by mistake")
    assert ledger.reverse(session, txn.id, now=now, reason="again").id == rev.id
    assert ledger.balance(session, ledger.available(requester.id, "USD")) == 0
    assert ledger.check_books(session) == []


def test_entries_and_transactions_are_immutable(session, requester):
    txn, _ = ledger.fund(session, requester_id=requester.id, cents=300, currency="USD", key="f", now=utcnow(),
                         actor_id=None)
    session.flush()
    for sql in ("UPDATE ledger_entry SET amount = amount * 2", "DELETE FROM ledger_entry",
                f"UPDATE ledger_transaction SET reason = 'x' WHERE id = {txn.id}"):
        with pytest.raises((IntegrityError, DBAPIError)), session.begin_nested():
            session.execute(text(sql))


def _batch(session, requester) -> int:
    proj = factories.project(session, requester, now=utcnow())
    factories.items(session, proj, 3, now=utcnow())
    batch, _ = publish_batch(session, project_id=proj.id, account=requester, now=utcnow())
    session.flush()
    return batch.id
