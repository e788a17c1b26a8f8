"""Approvals: approve (and pay) and reject submitted work, one or in bulk, reverse rejections; who may; 402."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from base.errors import Conflict, InvalidInput, NotFound
from base.events import AssignmentsReviewed
from base.identity import Role
from market.catalogue.models import Assignment
from payments import ledger
from payments.ledger import InsufficientFunds
from payments.models import AssignmentPay, LedgerTransaction
from payments.review.approve import Skip, approve, reject, reverse_rejection
from tests import factories
from tests.factories import in_uow
from tests.review_setup import leave_only, paid_count, payable, requester_total, status, world


@pytest.fixture(autouse=True)
def books_balance(session):
    yield
    assert ledger.check_books(session) == []


def test_approving_one_pays_its_reward_once(session, clock):
    w = world(session, clock())
    total = requester_total(session, w.owner)
    first = w.by_worker[0][0]
    done = in_uow(approve, session, actor=w.owner, now=clock(), assignment_ids=[first])
    assert done.reviewed == [first] and done.skipped == {} and done.rewards == {"USD": 10}
    again = in_uow(approve, session, actor=w.owner, now=clock(), assignment_ids=[first])
    assert again.reviewed == [] and again.skipped == {first: Skip.ALREADY_APPROVED}
    assert payable(session, w.workers[0][0]) == 10
    assert requester_total(session, w.owner) == total - 10
    assert paid_count(session) == (1, 1)
    a = session.get(Assignment, first, populate_existing=True)
    assert (a.status.value, a.reviewed_at, a.reviewed_by_id, a.review_feedback) == ("approved", clock(), w.owner.id,
                                                                                    None)
    assert ledger.find(session, f"reward:{first}") is not None


def test_bulk_by_ids_says_why_it_skipped(session, clock):
    w = world(session, clock())
    other = world(session, clock())
    rejected = w.by_worker[1][0]
    in_uow(reject, session, actor=w.owner, now=clock(), feedback="Off topic", assignment_ids=[rejected])
    leased = factories.lease(session, session.get(Assignment, w.by_worker[0][0]).hit_id, w.project.id,
                             factories.account(session, Role.WORKER, now=clock())[0], now=clock())
    named = [*w.by_worker[0], rejected, leased.id, other.by_worker[0][0], 10**9]
    done = in_uow(approve, session, actor=w.owner, now=clock(), assignment_ids=named)
    assert done.reviewed == w.by_worker[0]
    assert done.skipped == {rejected: Skip.ALREADY_REJECTED, leased.id: Skip.NOT_SUBMITTED,
                            other.by_worker[0][0]: Skip.NOT_FOUND, 10**9: Skip.NOT_FOUND}
    assert payable(session, w.workers[0][0]) == 40 and payable(session, other.workers[0][0]) == 0


def test_bulk_by_batch_approves_every_submitted_assignment_of_it(session, clock):
    w = world(session, clock())
    second = world(session, clock(), owner=w.owner, owner_token=w.owner_token, funds=0)
    done = in_uow(approve, session, actor=w.owner, now=clock(), batch_id=w.batch.id)
    assert done.reviewed == w.assignments and done.rewards == {"USD": 120}
    assert all(payable(session, acct) == 40 for acct, _ in w.workers)
    assert all(status(session, a) == "submitted" for a in second.assignments)
    assert paid_count(session) == (12, 12)


def test_bulk_by_worker_takes_only_their_work_in_the_project(session, clock):
    w = world(session, clock())
    done = in_uow(approve, session, actor=w.owner, now=clock(), worker_ids=[w.workers[2][0].id],
                  project_id=w.project.id)
    assert done.reviewed == w.by_worker[2]
    assert [payable(session, acct) for acct, _ in w.workers] == [0, 0, 40]
    with pytest.raises(InvalidInput):
        approve(session, actor=w.owner, now=clock(), worker_ids=[w.workers[2][0].id])


def test_one_event_per_review_call(session, clock, database):
    seen = []
    database.events.subscribe(AssignmentsReviewed, lambda _s, e: seen.append(e))
    w = world(session, clock())
    in_uow(approve, session, actor=w.owner, now=clock(), batch_id=w.batch.id)
    assert len(seen) == 1 and seen[0].approved and seen[0].assignment_ids == tuple(w.assignments)


@pytest.mark.parametrize(("feedback", "ok"), [("", False), ("   ", False), ("x" * 1024, True), ("x" * 1025, False)])
def test_rejection_feedback_is_1_to_1024_characters(session, clock, feedback, ok):
    w = world(session, clock(), items=1, workers=1)
    [only] = w.assignments
    if not ok:
        with pytest.raises(InvalidInput):
            in_uow(reject, session, actor=w.owner, now=clock(), feedback=feedback, assignment_ids=[only])
        assert status(session, only) == "submitted"
        return
    done = in_uow(reject, session, actor=w.owner, now=clock(), feedback=feedback, assignment_ids=[only])
    assert done.reviewed == [only]
    a = session.get(Assignment, only, populate_existing=True)
    assert (a.status.value, a.review_feedback) == ("rejected", feedback)
    assert payable(session, w.workers[0][0]) == 0 and paid_count(session) == (0, 0)


def test_not_your_project_is_404_and_changes_nothing(session, clock):
    w = world(session, clock())
    stranger, _ = factories.account(session, Role.REQUESTER, now=clock())
    with pytest.raises(NotFound):
        approve(session, actor=stranger, now=clock(), batch_id=w.batch.id)
    with pytest.raises(NotFound):
        approve(session, actor=stranger, now=clock(), worker_ids=[w.workers[0][0].id], project_id=w.project.id)
    done = in_uow(approve, session, actor=stranger, now=clock(), assignment_ids=w.assignments)
    assert done.reviewed == [] and set(done.skipped.values()) == {Skip.NOT_FOUND}
    worker = w.workers[0][0]
    with pytest.raises(NotFound):
        approve(session, actor=worker, now=clock(), batch_id=w.batch.id)
    assert all(status(session, a) == "submitted" for a in w.assignments)


def test_ops_review_any_project(session, clock):
    w = world(session, clock())
    ops, _ = factories.account(session, Role.OPS, now=clock())
    done = in_uow(approve, session, actor=ops, now=clock(), assignment_ids=w.by_worker[0])
    assert done.reviewed == w.by_worker[0] and payable(session, w.workers[0][0]) == 40


def test_reject_then_reverse_pays_once(session, clock):
    w = world(session, clock(), items=1, workers=1)
    [only] = w.assignments
    total = requester_total(session, w.owner)
    in_uow(reject, session, actor=w.owner, now=clock(), feedback="Wrong", assignment_ids=[only])
    clock.advance(days=30)  # the last day it can be reversed
    done = in_uow(reverse_rejection, session, actor=w.owner, now=clock(), assignment_id=only)
    assert done.reviewed == [only] and done.rewards == {"USD": 10}
    again = in_uow(reverse_rejection, session, actor=w.owner, now=clock(), assignment_id=only)
    assert again.reviewed == [] and again.skipped == {only: Skip.ALREADY_APPROVED}
    assert in_uow(approve, session, actor=w.owner, now=clock(), assignment_ids=[only]).reviewed == []
    a = session.get(Assignment, only, populate_existing=True)
    assert (a.status.value, a.rejection_reversed_at, a.review_feedback) == ("approved", clock(), "Wrong")
    assert payable(session, w.workers[0][0]) == 10 and requester_total(session, w.owner) == total - 10
    assert paid_count(session) == (1, 1)


def test_a_rejection_31_days_old_is_not_reversed(session, clock):
    w = world(session, clock(), items=1, workers=1)
    [only] = w.assignments
    in_uow(reject, session, actor=w.owner, now=clock(), feedback="Wrong", assignment_ids=[only])
    clock.advance(days=31)
    with pytest.raises(Conflict):
        in_uow(reverse_rejection, session, actor=w.owner, now=clock(), assignment_id=only)
    assert status(session, only) == "rejected" and payable(session, w.workers[0][0]) == 0


def test_only_rejections_are_reversed(session, clock):
    w = world(session, clock(), items=1, workers=2)
    with pytest.raises(Conflict):
        reverse_rejection(session, actor=w.owner, now=clock(), assignment_id=w.by_worker[0][0])
    stranger, _ = factories.account(session, Role.REQUESTER, now=clock())
    in_uow(reject, session, actor=w.owner, now=clock(), feedback="No", assignment_ids=w.by_worker[1])
    with pytest.raises(NotFound):
        reverse_rejection(session, actor=stranger, now=clock(), assignment_id=w.by_worker[1][0])


def test_money_short_is_402_and_the_call_changes_nothing(session, clock):
    w = world(session, clock())
    leave_only(session, w.owner, w.batch, 15, clock())
    before = (requester_total(session, w.owner), paid_count(session),
              session.scalar(select(func.count()).select_from(LedgerTransaction)))
    with pytest.raises(InsufficientFunds) as info:
        in_uow(approve, session, actor=w.owner, now=clock(), batch_id=w.batch.id)
    assert info.value.status == 402 and info.value.extra["shortfall"] == {"cents": 105, "currency": "USD"}
    assert all(status(session, a) == "submitted" for a in w.assignments)
    assert (requester_total(session, w.owner), paid_count(session),
            session.scalar(select(func.count()).select_from(LedgerTransaction))) == before
    assert all(payable(session, acct) == 0 for acct, _ in w.workers)
    # What the money covers can still be approved.
    assert in_uow(approve, session, actor=w.owner, now=clock(), assignment_ids=w.by_worker[0][:1]).reviewed


def test_pay_rows_record_the_work(session, clock):
    w = world(session, clock(), items=1, workers=1)
    [only] = w.assignments
    in_uow(approve, session, actor=w.owner, now=clock(), assignment_ids=[only])
    pay = session.get(AssignmentPay, only)
    assert (pay.worker_id, pay.batch_id, pay.reward_cents, pay.duration_ms, pay.top_up_cents) == (
        w.workers[0][0].id, w.batch.id, 10, 20_000, None)
    assert pay.reward_transaction_id == ledger.find(session, f"reward:{only}").id
    assert pay.approved_at == clock() and clock() - dt.timedelta(seconds=1) < pay.approved_at
