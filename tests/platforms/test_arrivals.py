"""A platform worker arriving on the work page: MTurk's query parameters read strictly, one task of ours per
platform assignment, reloads finding it again, and no one taking over another worker's assignment."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from base.errors import Conflict, Forbidden, InvalidInput
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment
from market.engine.submit import submit
from platforms.base import Arrival
from platforms.models import PlatformAssignment
from platforms.mturk import MTurk
from platforms.registry import platform
from tests.factories import account, in_uow, items, project
from tests.platforms.support import make_burst
from workers.models import ExternalIdentity

GOLD_KEY = b"k" * 32
SUBMIT = "https://workersandbox.mturk.com"


def mturk_args(worker: str = "A1WORKER", assignment: str = "3ASSIGNMENT1", hit: str = "3HIT1",
               submit_to: str = SUBMIT) -> dict[str, str]:
    return {"assignmentId": assignment, "hitId": hit, "workerId": worker, "turkSubmitTo": submit_to}


def test_mturk_arrivals_are_read_strictly():
    mturk = platform("mturk")
    preview = mturk.arrival({"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HIT1"})
    assert preview == Arrival("mturk", preview=True, task_ref="3HIT1")
    arrived = mturk.arrival(mturk_args(submit_to=SUBMIT + "/"))
    assert (arrived.worker_ref, arrived.assignment_ref, arrived.task_ref, arrived.return_to) == (
        "A1WORKER", "3ASSIGNMENT1", "3HIT1", SUBMIT)
    with pytest.raises(InvalidInput) as refused:
        mturk.arrival({**mturk_args(worker="a1<script>"), "turkSubmitTo": "https://evil.example"})
    assert set(refused.value.errors) == {"workerId", "turkSubmitTo"}
    with pytest.raises(InvalidInput) as missing:
        mturk.arrival({})
    assert set(missing.value.errors) == {"assignmentId", "hitId", "workerId", "turkSubmitTo"}


def test_the_completion_form_posts_to_mturks_external_submit():
    mturk = MTurk()
    done = mturk.completion(mturk.arrival(mturk_args()), assignment_id=42)
    assert done.action == f"{SUBMIT}/mturk/externalSubmit"
    assert done.fields == {"assignmentId": "3ASSIGNMENT1", "crowdmarket_assignment": "42"}


@pytest.fixture
def published(session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=1, assignments_per_item=2, gold_rate=0)
    items(session, proj, 3, now=clock())
    batch, _ = in_uow(publish_batch, session, project_id=proj.id, account=owner, now=clock())
    return make_burst(session, owner=owner, batch_id=batch.id, now=clock())


def arrive(session, clock, burst, **kwargs):
    from platforms.arrivals import arrive as service

    return in_uow(service, session, arrival=MTurk().arrival(mturk_args(**kwargs)), burst=burst, many=False,
                  now=clock(), gold_key=GOLD_KEY)


def test_an_arrival_makes_the_worker_and_leases_them_one_task_found_again_on_reload(session, clock, published):
    first = arrive(session, clock, published)
    assert first.worker.username == "mturk-A1WORKER" and first.task.project_id == published.project_id
    assert session.scalar(select(ExternalIdentity.account_id).where(ExternalIdentity.external_id == "A1WORKER")) \
        == first.worker.id
    again = arrive(session, clock, published)
    assert again.task.id == first.task.id  # the frame reloaded: the same task, no second lease
    item = first.task.items[0]["id"]
    in_uow(submit, session, worker=first.worker, assignment_id=first.task.id,
           answers=[{"item_id": item, "answer": "pos"}], now=clock())
    after = arrive(session, clock, published)
    assert after.task.id == first.task.id and after.task.answers == {item: "pos"}  # submitted: not a new task
    # A second MTurk assignment (another HIT of ours accepted there) is a new task.
    other = arrive(session, clock, published, assignment="3ASSIGNMENT2", hit="3HIT2")
    assert other.task.id != first.task.id and other.worker.id == first.worker.id
    assert session.scalar(select(func.count()).select_from(PlatformAssignment)) == 2


def test_no_one_takes_over_another_workers_assignment(session, clock, published):
    arrive(session, clock, published)
    with pytest.raises(Forbidden):
        arrive(session, clock, published, worker="A2FORGER")
    assert session.scalar(select(func.count()).select_from(Assignment)) == 1  # the forger leased nothing


def test_two_platform_assignments_cannot_share_one_open_task(session, clock, published):
    arrive(session, clock, published)  # leased, not submitted
    with pytest.raises(Conflict, match="finish or return it first"):
        arrive(session, clock, published, assignment="3ASSIGNMENT2", hit="3HIT2")


def test_a_preview_shows_the_batchs_terms_and_a_real_item_never_gold(session, clock):
    from platforms.arrivals import preview

    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=1, gold_rate=0.1)
    items(session, proj, 0, now=clock(), gold=3)  # gold first: the lowest ids are gold
    items(session, proj, 2, now=clock(), prefix="real")
    batch, _ = in_uow(publish_batch, session, project_id=proj.id, account=owner, now=clock())
    shown = preview(session, batch_id=batch.id)
    assert shown.open and shown.title == proj.title and shown.reward_cents == 12
    assert shown.example == {"text": "text 0"}  # the first real item, though gold came first
    assert shown.hourly_rate == (1440, "estimated")  # 12 cents per 30 s
