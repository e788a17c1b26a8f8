"""Domain events (base/events.py): the engine says what happened, listeners it does not import act on it."""

from __future__ import annotations

import inspect
from decimal import Decimal

import pytest
from sqlalchemy import select

from base.events import AssignmentReturned, AssignmentSubmitted, EventHub, LeasesLapsed
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment, AssignmentStatus
from market.engine.next_task import next_assignment
from market.engine.submit import submit
from tests.factories import TEST_GOLD_KEY, account, auth, in_uow, items, project


@pytest.fixture
def work(session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=1, assignments_per_item=1, gold_rate=Decimal(0),
                   assignment_duration_seconds=60)
    items(session, proj, 3, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker, token = account(session, Role.WORKER, now=clock())
    return proj, worker, token


def test_subscribing_twice_is_once():
    hub, seen = EventHub(), []

    def handler(_session, event):
        seen.append(event)

    hub.subscribe(LeasesLapsed, handler)
    hub.subscribe(LeasesLapsed, handler)
    hub.publish(None, LeasesLapsed(1, 2, None))  # type: ignore[arg-type]
    assert len(seen) == 1 and hub.handlers(AssignmentSubmitted) == []


def test_a_listener_acts_in_the_publishers_transaction(database, session, clock, work):
    """What payments will do with approvals: the handler sees the publisher's writes, and a handler that fails
    takes the publisher's writes down with it."""
    proj, worker, _ = work
    seen = []

    def ledger(s, event):
        seen.append(s.scalar(select(Assignment.status).where(Assignment.id == event.assignment_id)))
        if len(seen) == 2:
            raise RuntimeError("the ledger refused")

    database.events.subscribe(AssignmentSubmitted, ledger)
    for expected in ("stored", "rolled back"):
        task = in_uow(next_assignment, session, worker=worker, now=clock(), gold_key=TEST_GOLD_KEY)
        answers = [{"item_id": i["id"], "answer": "pos"} for i in task.items]
        if expected == "stored":
            in_uow(submit, session, worker=worker, assignment_id=task.id, answers=answers, now=clock())
        else:
            with pytest.raises(RuntimeError):
                in_uow(submit, session, worker=worker, assignment_id=task.id, answers=answers, now=clock())
        status = session.scalar(select(Assignment.status).where(Assignment.id == task.id))
        assert status == (AssignmentStatus.SUBMITTED if expected == "stored" else AssignmentStatus.LEASED)
    assert seen == [AssignmentStatus.SUBMITTED, AssignmentStatus.SUBMITTED]


def test_the_engine_tells_of_submits_returns_and_lapses_once_each(app, client, clock, work):
    proj, worker, token = work
    seen = []
    app.extensions["crowdmarket.db"].events.subscribe(
        AssignmentSubmitted, lambda _s, e: seen.append(("submitted", e.assignment_id, e.worker_id, e.project_id)))
    app.extensions["crowdmarket.db"].events.subscribe(
        AssignmentReturned, lambda _s, e: seen.append(("returned", e.assignment_id, e.worker_id, e.project_id)))
    app.extensions["crowdmarket.db"].events.subscribe(
        LeasesLapsed, lambda _s, e: seen.append(("lapsed", None, e.worker_id, e.project_id)))
    first = client.post("/api/v1/work/next", headers=auth(token)).get_json()
    body = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in first["items"]]}
    url = f"/api/v1/assignments/{first['assignment_id']}/submit"
    assert client.post(url, json=body, headers=auth(token)).status_code == 200
    assert client.post(url, json=body, headers=auth(token)).status_code == 200  # a replay tells nothing
    second = client.post("/api/v1/work/next", headers=auth(token)).get_json()
    assert client.post(f"/api/v1/assignments/{second['assignment_id']}/return", headers=auth(token)).status_code == 200
    client.post("/api/v1/work/next", headers=auth(token))
    clock.advance(seconds=61)  # that lease lapses; the next request for work ends it
    client.post("/api/v1/work/next", headers=auth(token))
    assert seen == [("submitted", first["assignment_id"], worker.id, proj.id),
                    ("returned", second["assignment_id"], worker.id, proj.id),
                    ("lapsed", None, worker.id, proj.id)]


def test_the_gold_schedule_key_has_no_default():
    """A default key is a public key: a caller that forgot it would serve gold on a schedule anyone can draw."""
    assert inspect.signature(next_assignment).parameters["gold_key"].default is inspect.Parameter.empty
