"""The queries the work page adds to the domains: the guideline version a worker last answered under, answers
since UTC midnight (market/engine/progress.py), and pending and approved earnings (payments/review/listing.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment, Item
from market.engine.progress import answers_since, last_answered_guideline_version, utc_midnight
from payments.review.approve import approve
from payments.review.listing import worker_earnings_summary
from tests import factories
from tests.review_setup import world


@pytest.fixture
def three(session, clock):
    """A published project of three items, and two workers."""
    owner, _ = factories.account(session, Role.REQUESTER, now=clock())
    proj = factories.project(session, owner, now=clock())
    factories.items(session, proj, 3, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    other, _ = factories.account(session, Role.WORKER, now=clock())
    return proj, worker, other, list(session.scalars(select(Item).where(Item.project_id == proj.id)
                                                     .order_by(Item.id)))


def test_the_last_answered_guideline_version_is_that_of_the_latest_submitted_assignment(session, clock, three):
    proj, worker, other, (first, second, third) = three
    assert last_answered_guideline_version(session, worker_id=worker.id, project_id=proj.id) is None
    factories.answer(session, first, worker, "pos", now=clock(), guideline_version=1)
    factories.answer(session, second, worker, "pos", now=clock.advance(seconds=5), guideline_version=2)
    factories.answer(session, third, other, "pos", now=clock.advance(seconds=5), guideline_version=3)
    assert last_answered_guideline_version(session, worker_id=worker.id, project_id=proj.id) == 2
    # A lease not submitted does not count, whatever version it was leased under.
    factories.lease(session, third.hit_id, proj.id, worker, now=clock()).guideline_version = 3
    session.commit()
    assert last_answered_guideline_version(session, worker_id=worker.id, project_id=proj.id) == 2
    assert last_answered_guideline_version(session, worker_id=other.id, project_id=proj.id) == 3


def test_answers_since_midnight_count_only_the_workers_answers_of_today(session, clock, three):
    proj, worker, other, (first, second, third) = three
    midnight = utc_midnight(clock())
    factories.answer(session, first, worker, "pos", now=midnight - dt.timedelta(seconds=1))
    factories.answer(session, second, worker, "pos", now=midnight)
    factories.answer(session, third, worker, "neg", now=midnight + dt.timedelta(hours=3))
    factories.answer(session, third, other, "neg", now=midnight + dt.timedelta(hours=3))
    assert answers_since(session, worker_id=worker.id, since=midnight) == 2
    assert utc_midnight(dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))) == \
        dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def test_earnings_summary_splits_pending_from_approved_in_cents(session, clock):
    w = world(session, clock(), items=3, workers=1, reward=12)
    worker = w.workers[0][0]
    assert worker_earnings_summary(session, worker_id=worker.id) == {"USD": {"pending": 36, "approved": 0}}
    first = w.by_worker[0][0]
    approve(session, actor=w.owner, now=clock.advance(seconds=10), assignment_ids=[first])
    session.commit()
    assert worker_earnings_summary(session, worker_id=worker.id) == {"USD": {"pending": 24, "approved": 12}}
    assert session.get(Assignment, first).status.value == "approved"
    assert worker_earnings_summary(session, worker_id=w.owner.id) == {}
