"""Fair wage (payments/wage/): hold sizes at publish, top-ups from measured times, settling holds. Services called
directly; the edge's side (422, 402, cancel, the pay endpoint, the task's hourly rate) is tests/test_wage_api.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment, AssignmentStatus, Batch
from payments import ledger
from payments.books import balances
from payments.models import AssignmentPay, Hold, HoldState, LedgerTransaction, TransactionKind
from payments.wage.settle import settle_holds
from payments.wage.topups import estimated_seconds, median_of_medians, pay_top_ups
from shell.app import subscribe
from tests import factories
from tests.conftest import START
from tests.wage_setup import approve, hits, work

NOW = START


@pytest.fixture
def wired(database):
    """The payments handlers on this test's database (the app subscribes them; services alone do not)."""
    subscribe(database.events)
    return database


@pytest.fixture
def requester(session, wired):
    acct, _ = factories.account(session, Role.REQUESTER, now=NOW)
    return acct


@pytest.fixture
def workers(session):
    return [factories.account(session, Role.WORKER, now=NOW)[0] for _ in range(3)]


def _publish(session, requester, *, items=10, gold=0, fee_rate=Decimal(0), **settings) -> Batch:
    settings = {"reward_cents": 10, "estimated_seconds": 40, "assignments_per_item": 1, **settings}
    proj = factories.project(session, requester, now=NOW, **settings)
    factories.items(session, proj, items, gold=gold, now=NOW)
    batch, created = publish_batch(session, project_id=proj.id, account=requester, now=NOW,
                                   platform_fee_rate=fee_rate)
    assert created
    return batch


def _hold(session, batch) -> Hold:
    hold = session.scalar(select(Hold).where(Hold.batch_id == batch.id))
    session.refresh(hold)
    return hold


def _available(session, requester) -> int:
    return ledger.balance(session, ledger.available(requester.id, "USD"))


def _done(session, batch, workers, seconds, *, approved=True):
    """One submission per HIT, round-robin over the workers, each taking seconds[i]; approved (test setup)."""
    done = [work(session, hit, workers[i % len(workers)].id, seconds=s, now=NOW)
            for i, (hit, s) in enumerate(zip(hits(session, batch.id), seconds, strict=False))]
    if approved:
        approve(session, done, now=NOW)
    return done


# --- hold sizes -----------------------------------------------------------------------------------------------

def test_hold_is_the_hand_computed_maximum_cost(session, requester):
    # 10 assignments x (10c reward + top-up headroom): 1.5 x 40 s = 60 s at $15.00/h is 25c, so 15c headroom.
    batch = _publish(session, requester)
    hold = _hold(session, batch)
    assert hold.held == 10 * 25 and hold.state == HoldState.OPEN
    assert hold.detail["per_assignment"] == {"reward_cents": 10, "reward_fee_cents": 0, "top_up_headroom_cents": 15,
                                             "bonus_fee_cents": 0, "total_cents": 25}
    assert (hold.detail["real_assignments"], hold.detail["gold_assignments"]) == (10, 0)
    assert _available(session, requester) == factories.REQUESTER_FUNDS_CENTS - 250
    assert ledger.check_books(session) == []


def test_hold_adds_gold_overhead_and_fees(session, requester):
    # Gold rate 0.08 with gold items: ceil(10 x 0.08 / 0.92) = 1 more assignment. Fee 10%: reward fee 1c,
    # bonus fee on 15c = 1.5c, half up: 2c. So 11 x (10 + 1 + 15 + 2) = 308.
    batch = _publish(session, requester, gold=4, gold_rate=Decimal("0.08"), fee_rate=Decimal("0.10"))
    hold = _hold(session, batch)
    assert hold.detail["gold_assignments"] == 1
    assert hold.detail["per_assignment"]["total_cents"] == 28
    assert hold.held == 308
    assert batch.fee_model == "platform" and batch.fee_rate == Decimal("0.10")
    assert ledger.check_books(session) == []


def test_hold_with_auto_top_up_off_heads_room_only_to_the_floor(session, requester):
    # 60 s at $8.00/h = 13.33c: ceil(13.33 - 10) = 4c of headroom.
    batch = _publish(session, requester, auto_top_up=False)
    assert _hold(session, batch).held == 10 * 14


# --- the measured time ----------------------------------------------------------------------------------------

def test_median_of_per_hit_medians_is_robust_to_outliers():
    normal = {h: [60_000, 62_000, 58_000] for h in range(5)}
    assert median_of_medians(normal) == 60_000
    one_slow = {**normal, 0: [60_000, 36_000_000, 61_000]}  # one 10-hour duration
    assert median_of_medians(one_slow) == 60_000
    slow_hit = {**normal, 0: [36_000_000] * 3}  # even a whole HIT of them
    assert median_of_medians(slow_hit) == 60_000
    mean = sum(sum(d) for d in one_slow.values()) / 15
    assert mean > 2_000_000  # a mean would say 40 minutes


def test_a_staller_on_every_hit_cannot_raise_the_measured_time(session, requester, workers):
    """Think like the crowd: a worker who sits on each task until near the lease's end, to raise the measured time
    and with it everyone's top-up, moves nothing while the other two of each HIT's three workers work honestly:
    the estimate is a median of per-HIT medians. (A majority of colluding accounts on a HIT would move it; #11's
    simulator has colluders.)"""
    batch = _publish(session, requester, assignments_per_item=3)
    honest, staller = workers[:2], workers[2]
    for hit in hits(session, batch.id):
        for worker in honest:
            work(session, hit, worker.id, seconds=60, now=NOW)
        work(session, hit, staller.id, seconds=590, now=NOW)
    assert estimated_seconds(session, batch.id) == 60
    # A mean over all work would have let the staller raise it almost fourfold (to 237 s).
    assert session.scalar(select(func.avg(Assignment.duration_ms)).where(Assignment.batch_id == batch.id)) > 230_000


def test_estimated_time_needs_10_submissions_and_ignores_an_outlier(session, requester, workers):
    batch = _publish(session, requester, items=12)
    _done(session, batch, workers, [60] * 9, approved=False)
    assert estimated_seconds(session, batch.id) is None
    _done_more = [work(session, h, workers[0].id, seconds=s, now=NOW)
                  for h, s in zip(hits(session, batch.id)[9:], [36_000, 60, 61], strict=True)]
    assert len(_done_more) == 3
    assert estimated_seconds(session, batch.id) == 60  # 12 per-HIT medians: 60 x 10, 61, 36,000


# --- top-ups --------------------------------------------------------------------------------------------------

def _paid(session, worker) -> int:
    return ledger.balance(session, ledger.payable(worker.id, "USD"))


def test_hand_computed_top_up_10c_60s_15_an_hour_is_15c(session, requester, workers):
    batch = _publish(session, requester)
    done = _done(session, batch, workers[:2], [60] * 10)
    summary = pay_top_ups(session, now=NOW)
    assert summary.transactions == 2 and summary.assignments == 10 and summary.top_up_cents == 150
    assert [p.top_up_cents for p in session.scalars(select(AssignmentPay).order_by(AssignmentPay.assignment_id))] \
        == [15] * 10
    assert _paid(session, workers[0]) == 5 * (10 + 15) and _paid(session, workers[1]) == 5 * 25
    txn = session.scalar(select(LedgerTransaction).where(
        LedgerTransaction.idempotency_key == f"topup:{batch.id}:{workers[0].id}:2026-01-05"))
    assert txn.kind == TransactionKind.BONUS
    assert txn.reason == ("Fair-wage top-up: HITs of Sentiment of reviews took a median 60 s, so 0.10 USD is "
                          "6.00 USD/h; topped up to 15.00 USD/h")
    assert session.get(AssignmentPay, done[0].id).top_up_transaction_id == txn.id
    assert session.get(Batch, batch.id).measured_seconds == 60
    hold = _hold(session, batch)
    assert hold.posted == 250 and ledger.remaining(hold) == 0  # exactly the headroom: 1.5 x 40 s = 60 s
    assert ledger.check_books(session) == []


def test_a_reward_ops_reversed_earns_no_top_up(session, requester, workers):
    batch = _publish(session, requester)
    done = _done(session, batch, workers[:2], [60] * 10)
    reward = session.scalar(select(LedgerTransaction.id).where(
        LedgerTransaction.idempotency_key == f"reward:{done[0].id}"))
    balances.reverse(session, transaction_id=reward, reason="approved by mistake", now=NOW, actor_id=None)
    summary = pay_top_ups(session, now=NOW)
    assert summary.assignments == 10 and summary.top_up_cents == 9 * 15
    assert session.get(AssignmentPay, done[0].id).top_up_cents == 0
    assert _paid(session, workers[0]) == 4 * (10 + 15)  # its other four assignments, reward and top-up
    assert ledger.check_books(session) == []


def test_no_top_up_when_the_rate_meets_the_target(session, requester, workers):
    # 30c for 60 s is $18.00/h: above $15.00/h.
    batch = _publish(session, requester, reward_cents=30)
    _done(session, batch, workers, [60] * 10)
    summary = pay_top_ups(session, now=NOW)
    assert summary.transactions == 0 and summary.assignments == 10
    assert {p.top_up_cents for p in session.scalars(select(AssignmentPay))} == {0}
    assert {p.top_up_transaction_id for p in session.scalars(select(AssignmentPay))} == {None}
    assert ledger.check_books(session) == []


def test_fewer_than_10_submissions_earn_no_top_up(session, requester, workers):
    batch = _publish(session, requester)
    _done(session, batch, workers, [60] * 9)
    assert pay_top_ups(session, now=NOW).transactions == 0
    assert {p.top_up_cents for p in session.scalars(select(AssignmentPay))} == {None}
    assert session.get(Batch, batch.id).measured_seconds is None


def test_rejected_work_counts_toward_the_time_but_earns_nothing(session, requester, workers):
    batch = _publish(session, requester)
    all_hits = hits(session, batch.id)
    approve(session, [work(session, h, workers[0].id, seconds=60, now=NOW) for h in all_hits[:5]], now=NOW)
    for h in all_hits[5:]:
        work(session, h, workers[1].id, seconds=60, now=NOW, status=AssignmentStatus.REJECTED)
    summary = pay_top_ups(session, now=NOW)
    assert summary.top_up_cents == 5 * 15 and _paid(session, workers[1]) == 0


def test_top_ups_are_paid_once_per_worker_batch_and_day(session, requester, workers):
    batch = _publish(session, requester, items=12)
    _done(session, batch, workers[:1], [60] * 10)
    assert pay_top_ups(session, now=NOW).transactions == 1
    assert _paid(session, workers[0]) == 10 * 25
    assert pay_top_ups(session, now=NOW).transactions == 0  # run again: nothing more
    assert _paid(session, workers[0]) == 10 * 25
    late = [work(session, h, workers[0].id, seconds=60, now=NOW) for h in hits(session, batch.id)[10:]]
    approve(session, late, now=NOW)
    before = _paid(session, workers[0])
    assert pay_top_ups(session, now=NOW + dt.timedelta(hours=1)).transactions == 0  # same day: the key is taken
    assert _paid(session, workers[0]) == before
    assert pay_top_ups(session, now=NOW + dt.timedelta(days=1)).transactions == 1  # the next day's run
    assert _paid(session, workers[0]) == before + 2 * 15
    assert session.scalar(select(LedgerTransaction.id).where(
        LedgerTransaction.idempotency_key == f"topup:{batch.id}:{workers[0].id}:2026-01-06")) is not None
    assert ledger.check_books(session) == []


def test_auto_top_up_off_tops_up_to_the_floor_only(session, requester, workers):
    # The floor $8.00/h for 60 s is 13.33c: ceil(13.33 - 10) = 4c.
    batch = _publish(session, requester, auto_top_up=False)
    _done(session, batch, workers, [60] * 10)
    assert pay_top_ups(session, now=NOW).top_up_cents == 10 * 4
    assert "topped up to 8.00 USD/h" in session.scalar(select(LedgerTransaction.reason).where(
        LedgerTransaction.kind == TransactionKind.BONUS).limit(1))
    assert ledger.check_books(session) == []


def test_top_ups_beyond_the_hold_draw_on_available_money(session, requester, workers):
    # Work took 3 minutes, not the estimated 40 s: 75c at $15.00/h, 65c top-ups; the hold had 15c of headroom each.
    batch = _publish(session, requester)
    _done(session, batch, workers, [180] * 10)
    assert pay_top_ups(session, now=NOW).top_up_cents == 10 * 65
    hold = _hold(session, batch)
    assert hold.posted == 10 * 75 and ledger.remaining(hold) == 0
    assert _available(session, requester) == factories.REQUESTER_FUNDS_CENTS - 750
    assert ledger.check_books(session) == []


def test_a_requester_who_cannot_pay_top_ups_is_reported_not_crashed(session, wired, workers):
    poor, _ = factories.account(session, Role.REQUESTER, now=NOW, funded=False)
    factories.fund(session, poor, 250, now=NOW)  # exactly the hold
    batch = _publish(session, poor)
    _done(session, batch, workers, [180] * 10)  # 65c top-ups each: 400c more than the hold has
    summary = pay_top_ups(session, now=NOW)
    assert summary.unfunded == [batch.id] and summary.transactions == 0
    assert {p.top_up_cents for p in session.scalars(select(AssignmentPay))} == {None}  # tried again next run
    assert ledger.check_books(session) == []


# --- settling holds -------------------------------------------------------------------------------------------

def test_expiry_releases_the_unused_hold_and_closes_it_once(session, requester, workers):
    batch = _publish(session, requester)
    _done(session, batch, workers, [30] * 4)  # 4 approved (10c each), fewer than 10 submissions: no top-ups
    assert settle_holds(session, now=NOW) == 0  # still open: nothing to settle
    later = batch.expires_at + dt.timedelta(seconds=1)
    assert settle_holds(session, now=later) == 1
    hold = _hold(session, batch)
    assert hold.state == HoldState.CLOSED and (hold.held, hold.posted, hold.released) == (250, 40, 210)
    assert _available(session, requester) == factories.REQUESTER_FUNDS_CENTS - 40
    assert settle_holds(session, now=later) == 0  # closed once
    assert ledger.check_books(session) == []


def test_expiry_keeps_what_submitted_work_and_live_leases_may_cost(session, requester, workers):
    batch = _publish(session, requester)
    all_hits = hits(session, batch.id)
    approve(session, [work(session, all_hits[0], workers[0].id, seconds=30, now=NOW)], now=NOW)
    work(session, all_hits[1], workers[1].id, seconds=30, now=NOW)  # submitted, not reviewed
    later = batch.expires_at + dt.timedelta(seconds=1)
    work(session, all_hits[2], workers[2].id, seconds=0, now=later - dt.timedelta(minutes=5),
         status=AssignmentStatus.LEASED)  # a lease that is still live at `later`
    assert settle_holds(session, now=later) == 1
    hold = _hold(session, batch)
    # Kept: 2 x 25 for the submitted and the leased ones, 15 of headroom for the approved one's top-up.
    assert hold.state == HoldState.OPEN and ledger.remaining(hold) == 2 * 25 + 15
    assert hold.released == 250 - 10 - 65
    assert settle_holds(session, now=later) == 0  # nothing new
    assert ledger.check_books(session) == []


def test_completion_releases_after_top_ups_settle(session, requester, workers):
    batch = _publish(session, requester)
    _done(session, batch, workers, [48] * 10)  # every item answered: complete. 48 s at $15.00/h = 20c: 10c each
    assert settle_holds(session, now=NOW) == 0  # top-ups not settled yet: their headroom is kept, nothing spare
    hold = _hold(session, batch)
    assert hold.state == HoldState.OPEN and ledger.remaining(hold) == 10 * 15
    assert pay_top_ups(session, now=NOW).top_up_cents == 100
    assert settle_holds(session, now=NOW) == 1
    hold = _hold(session, batch)
    assert hold.state == HoldState.CLOSED and (hold.posted, hold.released) == (200, 50)
    assert settle_holds(session, now=NOW) == 0
    assert ledger.check_books(session) == []
