"""The burst service on a real database: the estimate under the platform's fee terms, places moved with their
holds (books balanced, 402 changing nothing, idempotent on the key), the engine keeping burst places off the local
queue, places given back once, and the sync's checks and mirroring against a tiny recording Crowd.

Hand figures: reward 10c, estimate 40 s, so the headroom is 60 s at $15.00/h = 25c - 10c = 15c. An assignment of
the parent batch (our fee 0) may cost 25c; on MTurk at 20% 10 + 2 + 15 + 3 = 30c; at 40% 10 + 4 + 15 + 3 = 32c."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from base.errors import IdempotencyConflict, InvalidInput
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment, Batch, BatchStatus, HitSlot, SlotState
from market.engine.next_task import NoWork, next_assignment
from market.engine.submit import submit
from payments import ledger
from payments.models import Hold
from payments.review.approve import approve, reject
from platforms import burst as bursts
from platforms import mturk, service
from platforms.arrivals import arrive
from platforms.base import ExternalSubmission, ExternalTask
from platforms.models import BurstStatus, PlatformBatch, PlatformBlock, PlatformSubmission
from shell.app import subscribe
from tests import factories
from tests.factories import TEST_GOLD_KEY, in_uow
from workers.models import WorkerBlock

TITLE = mturk.MTurk.title
HIT = "3HIT1"
SUBMIT_TO = "https://workersandbox.mturk.com"


@pytest.fixture
def owner(session, clock, database):
    subscribe(database.events)  # payments' holds follow the burst's events (the app subscribes them)
    return factories.account(session, Role.REQUESTER, now=clock())[0]


def publish(session, clock, owner, *, items=5, redundancy=3, gold=0, gold_rate=0.0):
    proj = factories.project(session, owner, now=clock(), reward_cents=10, estimated_seconds=40, items_per_hit=1,
                             assignments_per_item=redundancy, gold_rate=gold_rate)
    factories.items(session, proj, items, now=clock(), gold=gold)
    batch, _ = in_uow(publish_batch, session, project_id=proj.id, account=owner, now=clock())
    return proj, batch


def estimate(session, proj, batch, hits, *, split=False):
    return bursts.estimate(session, batch=batch, project=proj, platform="mturk", platform_title=TITLE,
                           fees=mturk.FEES, hits=hits, split=split)


def create(session, clock, owner, batch, hits=2, *, key="burst-1", split=False):
    return in_uow(bursts.create, session, actor=owner, batch_id=batch.id, platform="mturk", platform_title=TITLE,
                  fees=mturk.FEES, hits=hits, split=split, key=key, now=clock())


def hold_of(session, batch_id):
    hold = session.scalar(select(Hold).where(Hold.batch_id == batch_id))
    session.refresh(hold)
    return hold


def slots(session, batch_id, state=SlotState.FREE):
    return session.scalar(select(func.count(HitSlot.id)).where(HitSlot.batch_id == batch_id,
                                                               HitSlot.state == state))


def worker(session, clock):
    return factories.account(session, Role.WORKER, now=clock())[0]


def lease_real(session, clock, proj, batch):
    """A local worker's lease of a real place of the batch (gold is served among them: new workers until one)."""
    for _ in range(10):
        task = in_uow(next_assignment, session, worker=worker(session, clock), now=clock(), gold_key=TEST_GOLD_KEY,
                      project_id=proj.id)
        if session.scalar(select(HitSlot.batch_id).where(HitSlot.assignment_id == task.id)) == batch.id:
            return task
    raise AssertionError("no real place leased")


# --- estimate -------------------------------------------------------------------------------------------------

def test_the_estimate_counts_places_and_gold_at_mturks_fee(session, clock, owner):
    proj, batch = publish(session, clock, owner, gold=2, gold_rate=0.1)
    shown = estimate(session, proj, batch, 2)
    # 2 HITs x 3 places; gold at 10% of what is served: ceil(6 x 0.1 / 0.9) = 1.
    assert (shown.hits, shown.places, shown.gold_tasks, shown.tasks, shown.redundancy) == (2, 6, 1, 7, 3)
    assert (shown.fee_rate, shown.bonus_fee_rate, shown.per_platform_task, shown.split) == ("0.20", "0.20", 3, False)
    assert (shown.per_task_cents, shown.total_cents, shown.warnings) == (12, 7 * 30, [])
    assert slots(session, batch.id) == 15  # nothing moved


def test_ten_assignments_a_hit_pay_mturks_large_hit_fee_unless_split(session, clock, owner):
    proj, batch = publish(session, clock, owner, items=1, redundancy=10, gold=1, gold_rate=0.1)
    large = estimate(session, proj, batch, 1)
    # 10 places, ceil(10 / 9) = 2 gold.
    assert (large.places, large.gold_tasks, large.tasks, large.per_platform_task) == (10, 2, 12, 10)
    assert (large.fee_rate, large.per_task_cents, large.total_cents) == ("0.40", 14, 12 * 32)
    assert large.warnings == ["10 assignments per Mechanical Turk task: at 10 or more, Mechanical Turk charges 40% "
                              "instead of 20% on rewards. Burst with split to publish tasks of at most 9 assignments "
                              "each."]
    split = estimate(session, proj, batch, 1, split=True)
    assert (split.fee_rate, split.per_platform_task, split.split, split.warnings) == ("0.20", 9, True, [])
    assert (split.tasks, split.per_task_cents, split.total_cents) == (12, 12, 12 * 30)


# --- create ---------------------------------------------------------------------------------------------------

def test_a_burst_moves_the_chosen_hits_free_places_with_their_holds(session, clock, owner):
    proj, batch = publish(session, clock, owner, gold=2, gold_rate=0.1)
    local = lease_real(session, clock, proj, batch)
    parent_before = hold_of(session, batch.id)
    held, released = parent_before.held, parent_before.released
    available = ledger.balance(session, ledger.available(owner.id, "USD"))

    burst, created = create(session, clock, owner, batch, 2)
    assert created and burst.status == BurstStatus.PUBLISHING and (burst.hits, burst.slots) == (2, 6)
    child = session.get(Batch, burst.batch_id)
    assert child.parent_id == batch.id and child.platform == "mturk" and child.status == BatchStatus.OPEN
    assert (child.fee_model, child.fee_rate, child.reward_cents) == ("mturk", Decimal("0.20"), 10)
    moved = session.execute(select(HitSlot.hit_id, func.count()).where(HitSlot.batch_id == child.id)
                            .group_by(HitSlot.hit_id)).all()
    # The two HITs with every place free (the one a local worker holds a place of keeps it), all three places each.
    assert len(moved) == 2 and all(n == 3 for _, n in moved) and local.hit_id not in {h for h, _ in moved}
    assert slots(session, batch.id) == 15 - 1 - 6 and slots(session, batch.id, SlotState.LEASED) == 1

    parent = hold_of(session, batch.id)
    assert parent.held == held and parent.released - released == 6 * 25  # the places' share left the parent
    own = hold_of(session, child.id)
    assert own.held == 7 * 30 == burst.estimate["total_cents"]  # 6 places + 1 gold under MTurk's 20%
    assert ledger.balance(session, ledger.available(owner.id, "USD")) == available + 6 * 25 - 7 * 30
    assert ledger.check_books(session) == []


def test_too_little_money_bursts_nothing(session, clock, database):
    subscribe(database.events)
    poor = factories.account(session, Role.REQUESTER, now=clock(), funded=False)[0]
    # The parent's hold: 15 places + ceil(15 / 9) = 2 gold at 25c = 425c; 50c more leaves 50 + 150 < 210.
    in_uow(factories.fund, session, poor, 425 + 50, now=clock())
    proj, batch = publish(session, clock, poor, gold=2, gold_rate=0.1)
    assert hold_of(session, batch.id).held == 425
    with pytest.raises(ledger.InsufficientFunds) as refused:
        create(session, clock, poor, batch, 2)
    assert refused.value.status == 402
    session.expire_all()
    assert session.scalar(select(func.count(PlatformBatch.id))) == 0
    assert session.scalar(select(func.count(Batch.id)).where(Batch.parent_id == batch.id)) == 0
    assert slots(session, batch.id) == 15
    parent = hold_of(session, batch.id)
    assert (parent.held, parent.released) == (425, 0)
    assert ledger.balance(session, ledger.available(poor.id, "USD")) == 50
    assert ledger.check_books(session) == []


def test_the_same_key_is_the_same_burst_and_another_request_under_it_a_conflict(session, clock, owner):
    proj, batch = publish(session, clock, owner)
    first, created = create(session, clock, owner, batch, 2)
    again, created_again = create(session, clock, owner, batch, 2)
    assert created and not created_again and again.id == first.id
    assert slots(session, batch.id) == 9  # moved once
    with pytest.raises(IdempotencyConflict):
        create(session, clock, owner, batch, 3)
    with pytest.raises(IdempotencyConflict):
        create(session, clock, owner, batch, 2, split=True)
    other, created_other = create(session, clock, owner, batch, 1, key="burst-2")
    assert created_other and other.id != first.id and slots(session, batch.id) == 6
    assert ledger.check_books(session) == []


def test_a_burst_of_a_burst_is_refused(session, clock, owner):
    proj, batch = publish(session, clock, owner)
    burst, _ = create(session, clock, owner, batch, 2)
    child = session.get(Batch, burst.batch_id)
    with pytest.raises(InvalidInput, match="a burst already"):
        estimate(session, proj, child, 1)
    with pytest.raises(InvalidInput, match="a burst already"):
        create(session, clock, owner, child, 1, key="burst-of-burst")
    assert session.scalar(select(func.count(PlatformBatch.id))) == 1


# --- the engine -----------------------------------------------------------------------------------------------

def test_burst_places_are_served_only_with_the_bursts_batch(session, clock, owner):
    proj, batch = publish(session, clock, owner, items=2, redundancy=1)
    burst, _ = create(session, clock, owner, batch, 1)

    def lease(who, **scope):
        return in_uow(next_assignment, session, worker=who, now=clock(), gold_key=TEST_GOLD_KEY, **scope)

    here = lease(worker(session, clock))
    assert session.get(Assignment, here.id).batch_id == batch.id  # the HIT not burst
    with pytest.raises(NoWork):  # the other HIT's place is the platform's alone
        lease(worker(session, clock))
    with pytest.raises(NoWork):
        lease(worker(session, clock), project_id=proj.id)
    there = lease(worker(session, clock), project_id=proj.id, batch_id=burst.batch_id)
    assert session.get(Assignment, there.id).batch_id == burst.batch_id


# --- give back ------------------------------------------------------------------------------------------------

def test_give_back_closes_the_burst_and_returns_its_free_places_once(session, clock, owner):
    proj, batch = publish(session, clock, owner)
    burst, _ = create(session, clock, owner, batch, 2)
    taken = in_uow(next_assignment, session, worker=worker(session, clock), now=clock(), gold_key=TEST_GOLD_KEY,
                   project_id=proj.id, batch_id=burst.batch_id)
    parent_held = hold_of(session, batch.id).held
    burst_released = hold_of(session, burst.batch_id).released

    assert in_uow(bursts.give_back, session, burst, now=clock(), status=BatchStatus.CANCELLED) == 5
    session.expire_all()
    assert session.get(PlatformBatch, burst.id).status == BurstStatus.CLOSED
    assert session.get(Batch, burst.batch_id).status == BatchStatus.CANCELLED
    assert slots(session, batch.id) == 9 + 5 and slots(session, burst.batch_id) == 0
    assert session.get(Assignment, taken.id).batch_id == burst.batch_id  # the leased place stays with its work
    assert hold_of(session, batch.id).held == parent_held + 5 * 25  # their share is held on the parent again
    assert hold_of(session, burst.batch_id).released - burst_released >= 5 * 30
    assert ledger.check_books(session) == []

    parent = hold_of(session, batch.id)
    held, released = parent.held, parent.released
    assert in_uow(bursts.give_back, session, session.get(PlatformBatch, burst.id), now=clock(),
                  status=BatchStatus.CANCELLED) == 0
    parent = hold_of(session, batch.id)
    assert (parent.held, parent.released, slots(session, batch.id)) == (held, released, 14)
    assert ledger.check_books(session) == []

    # The lease left behind lapses: the next sync's reclaim brings its place back too, with its share.
    leased = slots(session, batch.id, SlotState.LEASED)
    clock.advance(seconds=session.get(Batch, burst.batch_id).assignment_duration_seconds + 1)
    assert in_uow(bursts.reclaim, session, session.get(PlatformBatch, burst.id), now=clock()) == 1
    assert slots(session, batch.id, SlotState.LEASED) == leased + 1  # lapsed: the parent's claims take it over
    assert slots(session, burst.batch_id, SlotState.LEASED) == 0
    assert hold_of(session, batch.id).held == held + 25 and ledger.check_books(session) == []
    assert in_uow(bursts.reclaim, session, session.get(PlatformBatch, burst.id), now=clock()) == 0


# --- the sync, against a recording Crowd ----------------------------------------------------------------------

class RecordingCrowd:
    """A Crowd that lists what the test sets and records what the sync asks of it."""

    name = "mturk"
    fees = mturk.FEES

    def __init__(self) -> None:
        self.listed: list[ExternalSubmission] = []
        self.calls: list[tuple] = []

    def publish(self, order, log):
        self.calls.append(("publish", order.key))
        return [ExternalTask(HIT, order.redundancy, order.reward_cents, key=order.key)]

    def submissions(self, tasks, log):
        return list(self.listed)

    def approve(self, submission, log, *, feedback=None):
        self.calls.append(("approve", submission.external_id))

    def reject(self, submission, log, *, feedback):
        self.calls.append(("reject", submission.external_id, feedback))

    def bonus(self, log, *, submission, cents, reason, key):
        self.calls.append(("bonus", submission.external_id, cents, key))

    def block(self, log, *, worker_ref, reason):
        self.calls.append(("block", worker_ref, reason))

    def cancel(self, task, log):
        self.calls.append(("cancel", task.external_id))

    def status(self, log):
        return {}


@pytest.fixture
def out_there(session, clock, owner, database):
    """A published burst of 2 HITs x 3 places on the recording crowd."""
    proj, batch = publish(session, clock, owner)
    burst, _ = create(session, clock, owner, batch, 2)
    crowd = RecordingCrowd()
    assert service.publish(database, crowd, burst.id, url="https://crowd.example.test/x", keywords=(),
                           now=clock()).done == {"tasks": 1}
    crowd.calls.clear()
    session.expire_all()
    return proj, session.get(PlatformBatch, burst.id), crowd


def work_done(session, clock, burst, worker_ref, assignment_ref):
    """The platform worker's task of ours for their assignment, submitted."""
    arrival = mturk.MTurk().arrival({"assignmentId": assignment_ref, "hitId": HIT, "workerId": worker_ref,
                                     "turkSubmitTo": SUBMIT_TO})
    arrived = in_uow(arrive, session, arrival=arrival, burst=burst, many=False, now=clock(), gold_key=TEST_GOLD_KEY)
    in_uow(submit, session, worker=arrived.worker, assignment_id=arrived.task.id,
           answers=[{"item_id": i["id"], "answer": "pos"} for i in arrived.task.items], now=clock())
    return arrived


def submission(assignment_ref, worker_ref, status="submitted", raw="Submitted"):
    return ExternalSubmission(assignment_ref, HIT, worker_ref, status, raw)


def sync(database, crowd, burst, clock):
    return service.sync(database, crowd, burst.id, now=clock(), sleep=lambda s: None)


def row(session, external_id):
    session.expire_all()
    return session.scalar(select(PlatformSubmission).where(PlatformSubmission.external_id == external_id))


def test_a_submission_without_work_of_ours_is_rejected_with_the_problem_recorded(session, clock, database,
                                                                                 out_there):
    _, burst, crowd = out_there
    crowd.listed = [submission("3ASGNONE", "A9STRANGER")]
    out = sync(database, crowd, burst, clock)
    assert crowd.calls == [("reject", "3ASGNONE", service.NO_WORK)]
    assert out.done == {"listed": 1, "new": 1, "problems": 1, "rejected": 1} and out.errors == []
    seen = row(session, "3ASGNONE")
    assert (seen.mirrored, seen.problem) == ("rejected", "no work of ours recorded for it")


def test_a_submission_by_another_worker_id_than_ours_is_rejected(session, clock, database, out_there):
    _, burst, crowd = out_there
    work_done(session, clock, burst, "A1WORKER", "3ASG1")
    crowd.listed = [submission("3ASG1", "A2OTHER")]
    sync(database, crowd, burst, clock)
    assert crowd.calls == [("reject", "3ASG1", service.NOT_YOURS)]
    assert row(session, "3ASG1").problem == "submitted by A2OTHER, our task done by A1WORKER"


def test_our_approval_is_mirrored_once(session, clock, database, owner, out_there):
    _, burst, crowd = out_there
    arrived = work_done(session, clock, burst, "A1WORKER", "3ASG1")
    crowd.listed = [submission("3ASG1", "A1WORKER")]
    sync(database, crowd, burst, clock)
    assert crowd.calls == []  # not reviewed here yet: nothing to mirror
    in_uow(approve, session, actor=owner, now=clock(), assignment_ids=[arrived.task.id])
    sync(database, crowd, burst, clock)
    assert crowd.calls == [("approve", "3ASG1")]
    crowd.listed = [submission("3ASG1", "A1WORKER", "approved", "Approved")]
    sync(database, crowd, burst, clock)
    assert crowd.calls == [("approve", "3ASG1")]  # no second call
    seen = row(session, "3ASG1")
    assert (seen.mirrored, seen.problem, seen.external_status) == ("approved", None, "Approved")


def test_our_rejection_is_mirrored_with_our_feedback(session, clock, database, owner, out_there):
    _, burst, crowd = out_there
    arrived = work_done(session, clock, burst, "A1WORKER", "3ASG1")
    in_uow(reject, session, actor=owner, now=clock(), feedback="Every review was labelled positive.",
           assignment_ids=[arrived.task.id])
    crowd.listed = [submission("3ASG1", "A1WORKER")]
    sync(database, crowd, burst, clock)
    sync(database, crowd, burst, clock)
    assert crowd.calls == [("reject", "3ASG1", "Every review was labelled positive.")]
    assert row(session, "3ASG1").mirrored == "rejected"


def test_a_platform_approval_before_our_rejection_is_recorded_and_nothing_is_sent(session, clock, database, owner,
                                                                                    out_there):
    _, burst, crowd = out_there
    arrived = work_done(session, clock, burst, "A1WORKER", "3ASG1")
    in_uow(reject, session, actor=owner, now=clock(), feedback="Off-topic answers.", assignment_ids=[arrived.task.id])
    crowd.listed = [submission("3ASG1", "A1WORKER", "approved", "Approved")]  # MTurk's auto-approval came first
    out = sync(database, crowd, burst, clock)
    sync(database, crowd, burst, clock)
    assert crowd.calls == [] and out.done.get("problems") == 1
    seen = row(session, "3ASG1")
    assert (seen.mirrored, seen.problem) == ("approved", "approved on the platform before our review (rejected here)")


def _external(session, burst):
    session.expire_all()
    return ledger.balance(session, ledger.external(burst.platform, "USD"))


def test_what_the_platform_charges_for_a_submission_is_what_the_books_say(session, clock, database, owner,
                                                                           out_there):
    """Approvals paid one task of ours (10c); the platform charges its task's reward per submission. Here the
    approval before our rejection is charged in full (10c + 20%); a submission the platform prices at 30c (a
    session of three) costs 20c more; one it prices at 5c gives 5c back. Each once, the books balanced."""
    _, burst, crowd = out_there
    rejected = work_done(session, clock, burst, "A1WORKER", "3ASG1")
    in_uow(reject, session, actor=owner, now=clock(), feedback="Off-topic answers.", assignment_ids=[rejected.task.id])
    crowd.listed = [submission("3ASG1", "A1WORKER", "approved", "Approved")]  # MTurk's auto-approval came first
    before = _external(session, burst)
    sync(database, crowd, burst, clock)
    assert _external(session, burst) - before == 10  # MTurk paid the worker: so do our books
    assert ledger.check_books(session) == []

    from platforms.models import PlatformTask

    for assignment_ref, worker, price, extra in (("3ASG2", "A2WORKER", 30, 20), ("3ASG3", "A3WORKER", 5, -5)):
        session.execute(PlatformTask.__table__.update().values(reward_cents=price))
        session.commit()
        done = work_done(session, clock, burst, worker, assignment_ref)
        before = _external(session, burst)
        in_uow(approve, session, actor=owner, now=clock(), assignment_ids=[done.task.id])
        crowd.listed = [submission(assignment_ref, worker)]
        sync(database, crowd, burst, clock)
        sync(database, crowd, burst, clock)
        assert _external(session, burst) - before == 10 + extra == price  # the reward, then the difference
        assert ledger.check_books(session) == []
    fees = ledger.balance(session, ledger.fees("USD", "mturk"))
    assert fees == 2 + (2 + 4) + (2 - 1)  # 20% of 10 (the first), of 10 and 20, of 10 less 20% of 5


def test_a_block_of_a_worker_from_the_platform_is_sent_once(session, clock, database, owner, out_there):
    _, burst, crowd = out_there
    arrived = work_done(session, clock, burst, "A1WORKER", "3ASG1")
    local = worker(session, clock)  # blocked too, but never came from the platform
    for blocked in (arrived.worker, local):
        session.add(WorkerBlock(account_id=blocked.id, project_id=None, reason="Copied answers.",
                                created_by_id=owner.id, created_at=clock()))
    session.commit()
    assert service.sync_blocks(database, crowd, now=clock(), sleep=lambda s: None).done == {"blocked": 1}
    assert service.sync_blocks(database, crowd, now=clock(), sleep=lambda s: None).done == {}
    assert crowd.calls == [("block", "A1WORKER", "Copied answers.")]
    session.expire_all()
    assert session.scalar(select(PlatformBlock.external_worker_id)) == "A1WORKER"
