"""Auto-approval and the payments cycle: the delay, the gold-miss opt-in, blocked workers' work, idempotency, and
how the cycle runs (RQ's scheduler with Redis, the CLI for cron without)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import update

from base.identity import Role
from edge import jobs
from market.catalogue.models import Answer, Assignment
from payments import cycle, ledger
from payments.jobs import ensure_scheduled, job_id
from payments.review.approve import approve, reject
from payments.review.auto import GOLD_MISS_FEEDBACK, auto_approve
from shell.cli import cli
from tests import factories
from tests.factories import in_uow
from tests.review_setup import exclude, leave_only, paid_count, payable, requester_total, status, world

HOUR = 3600


@pytest.fixture(autouse=True)
def books_balance(session):
    yield
    assert ledger.check_books(session) == []


def test_auto_approval_waits_for_the_delay_to_the_second(session, clock):
    w = world(session, clock(), delay=HOUR)
    total = requester_total(session, w.owner)
    clock.advance(seconds=HOUR - 1)
    assert in_uow(auto_approve, session, now=clock())["approved"] == 0
    assert all(status(session, a) == "submitted" for a in w.assignments)
    clock.advance(seconds=1)
    done = in_uow(auto_approve, session, now=clock())
    assert done == {"approved": 12, "rejected": 0, "waiting_blocked": 0, "short_of_funds": []}
    a = session.get(Assignment, w.assignments[0], populate_existing=True)
    assert (a.status.value, a.reviewed_by_id, a.reviewed_at) == ("approved", None, clock())
    assert all(payable(session, acct) == 40 for acct, _ in w.workers)
    assert requester_total(session, w.owner) == total - 120


def test_auto_approval_run_twice_is_run_once(session, clock):
    w = world(session, clock(), delay=60)
    clock.advance(seconds=60)
    assert in_uow(cycle.run, session, now=clock())["auto_approve"]["approved"] == 12
    assert in_uow(cycle.run, session, now=clock())["auto_approve"]["approved"] == 0
    assert paid_count(session) == (12, 12) and payable(session, w.workers[0][0]) == 40


def test_the_default_delay_is_three_days(session, clock):
    w = world(session, clock(), items=1, workers=1)
    assert w.batch.auto_approval_delay_seconds == 3 * 86400
    clock.advance(days=3, seconds=-1)
    assert in_uow(auto_approve, session, now=clock())["approved"] == 0
    clock.advance(seconds=1)
    assert in_uow(auto_approve, session, now=clock())["approved"] == 1


def test_reviewed_work_is_left_alone(session, clock):
    w = world(session, clock(), delay=60, items=1)
    in_uow(reject, session, actor=w.owner, now=clock(), feedback="No", assignment_ids=w.by_worker[0])
    in_uow(approve, session, actor=w.owner, now=clock(), assignment_ids=w.by_worker[1])
    clock.advance(seconds=60)
    assert in_uow(auto_approve, session, now=clock())["approved"] == 1
    assert status(session, w.by_worker[0][0]) == "rejected"
    assert paid_count(session) == (2, 2)


def _miss(session, assignment_id: int) -> None:
    session.execute(update(Answer).where(Answer.assignment_id == assignment_id).values(gold_correct=False))
    session.commit()


@pytest.mark.parametrize("opted_in", [False, True])
def test_gold_misses_reject_automatically_only_when_the_project_opted_in(session, clock, opted_in):
    w = world(session, clock(), delay=60, items=1, reject_gold_misses=opted_in)
    missed, hit = w.by_worker[0][0], w.by_worker[1][0]
    _miss(session, missed)
    session.execute(update(Answer).where(Answer.assignment_id == hit).values(gold_correct=True))
    clock.advance(seconds=60)
    done = in_uow(auto_approve, session, now=clock())
    assert (done["approved"], done["rejected"]) == ((2, 1) if opted_in else (3, 0))
    a = session.get(Assignment, missed, populate_existing=True)
    if opted_in:
        assert (a.status.value, a.review_feedback, a.reviewed_by_id) == ("rejected", GOLD_MISS_FEEDBACK, None)
        assert payable(session, w.workers[0][0]) == 0
    else:
        assert a.status.value == "approved" and payable(session, w.workers[0][0]) == 10
    assert status(session, hit) == "approved"


def test_a_blocked_workers_excluded_work_waits_for_the_block_to_be_lifted(session, clock):
    w = world(session, clock(), delay=60, items=2)
    blocked = w.by_worker[0]
    for a in blocked:
        exclude(session, a, clock())
    clock.advance(seconds=60)
    done = in_uow(auto_approve, session, now=clock())
    assert (done["approved"], done["waiting_blocked"]) == (4, 2)
    assert [status(session, a) for a in blocked] == ["submitted", "submitted"]
    # The requester may decide by hand meanwhile.
    assert in_uow(reject, session, actor=w.owner, now=clock(), feedback="Spam", assignment_ids=blocked[:1]).reviewed
    # The block is lifted: approved like any other, its delay counted from its submission (passed long ago).
    exclude(session, blocked[1], None)
    done = in_uow(auto_approve, session, now=clock())
    assert (done["approved"], done["waiting_blocked"]) == (1, 0)
    assert [status(session, a) for a in blocked] == ["rejected", "approved"]
    assert payable(session, w.workers[0][0]) == 10


def test_a_requester_short_of_money_waits_and_the_others_are_paid(session, clock):
    poor = world(session, clock(), delay=60, items=1)
    rich = world(session, clock(), delay=60, items=1)
    leave_only(session, poor.owner, poor.batch, 5, clock())
    clock.advance(seconds=60)
    done = in_uow(auto_approve, session, now=clock())
    assert done["approved"] == 3 and done["short_of_funds"] == [poor.batch.id]
    assert all(status(session, a) == "submitted" for a in poor.assignments)
    assert all(status(session, a) == "approved" for a in rich.assignments)
    assert requester_total(session, poor.owner) == 5


# --- running the cycle ----------------------------------------------------------------------------------------

def test_the_cli_runs_one_cycle_and_says_what_it_did(app, session, clock):
    w = world(session, clock(), delay=60, items=1)
    clock.advance(seconds=60)
    runner = app.test_cli_runner()
    result = runner.invoke(cli, ["payments", "cycle"], obj=lambda: app)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["auto_approve"]["approved"] == 3
    assert json.loads(runner.invoke(cli, ["payments", "cycle"], obj=lambda: app).stdout)["auto_approve"][
        "approved"] == 0
    assert all(status(session, a) == "approved" for a in w.assignments)


def test_without_redis_nothing_is_scheduled(app):
    app.config["REDIS_URL"] = None
    app.extensions.pop("crowdmarket.jobs", None)
    assert ensure_scheduled(app) is None


def test_rq_scheduler_runs_the_cycle_and_schedules_the_next_once(app, session, clock):
    if not app.config["REDIS_URL"]:
        pytest.skip("needs Redis (CROWDMARKET_REDIS_URL): RQ's scheduler")
    app.config["PAYMENTS_CYCLE_SECONDS"] = 300
    w = world(session, clock(), delay=60, items=1)
    clock.advance(seconds=60)
    queue = jobs.queue(app)
    first = ensure_scheduled(app, at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert first.id == job_id(queue) and first.get_status() == JobStatus.SCHEDULED
    assert ensure_scheduled(app).id == first.id  # at most one: a second call schedules nothing more
    assert queue.scheduled_job_registry.get_job_ids() == [first.id]

    before = dt.datetime.now(dt.UTC)
    jobs.work(app, burst=True)  # the scheduler enqueues what is due, the worker runs it
    assert all(status(session, a) == "approved" for a in w.assignments)
    assert payable(session, w.workers[0][0]) == 10

    job = Job.fetch(first.id, connection=queue.connection)
    assert job.get_status() == JobStatus.SCHEDULED
    assert job.latest_result().return_value["auto_approve"]["approved"] == 3
    assert queue.scheduled_job_registry.get_job_ids() == [first.id]  # re-scheduled once, same id
    next_at = queue.scheduled_job_registry.get_scheduled_time(first.id)
    assert before + dt.timedelta(seconds=299) <= next_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=301)
    assert len(queue) == 0

    # Not due yet: another burst runs nothing, and the cycle stays scheduled once.
    jobs.work(app, burst=True)
    assert queue.scheduled_job_registry.get_job_ids() == [first.id] and len(queue) == 0


def test_jobs_work_schedules_the_cycle_and_the_platforms_sync(app, session, clock):
    from platforms.jobs import job_id as sync_job_id

    if not app.config["REDIS_URL"]:
        pytest.skip("needs Redis (CROWDMARKET_REDIS_URL)")
    factories.account(session, Role.REQUESTER, now=clock())
    result = app.test_cli_runner().invoke(cli, ["jobs", "work", "--burst"], obj=lambda: app)
    assert result.exit_code == 0, result.output
    queue = jobs.queue(app)
    assert sorted(queue.scheduled_job_registry.get_job_ids()) == [job_id(queue), sync_job_id(queue)]
    client = redis.Redis.from_url(app.config["REDIS_URL"])
    try:
        assert Queue(queue.name, connection=client).scheduled_job_registry.count == 2
    finally:
        client.close()


def test_the_cycle_period_is_configured_and_checked(tmp_path):
    from shell.config import ConfigError, check_config, load_config

    config = load_config(str(tmp_path), {})
    assert config["PAYMENTS_CYCLE_SECONDS"] == 300
    config = load_config(str(tmp_path), {"CROWDMARKET_PAYMENTS_CYCLE_SECONDS": "0"})
    with pytest.raises(ConfigError, match="PAYMENTS_CYCLE_SECONDS"):
        check_config({**config, "SECRET_KEY": "k" * 40})
