"""Ops project health: the rates' queries (market/catalogue/health.py), ops only, warnings first (gold exhausted,
pay below the floor, high block and rejection rates), a project's batches with progress, gold coverage and pay."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from base.identity import Role
from market.catalogue import health
from market.catalogue.models import Assignment
from payments.review.approve import reject
from qualification.models import GoldStream
from tests import factories
from tests import review_setup as setup
from tests.browser import audit, with_password
from tests.console.money_support import browser_log_in, sign_in
from workers.models import WorkerBlock


def _block(session, worker, now, *, project_id=None, expires_at=None, lifted_at=None):
    session.add(WorkerBlock(account_id=worker.id, project_id=project_id, reason="test", created_at=now,
                            expires_at=expires_at, lifted_at=lifted_at))
    session.flush()


@pytest.fixture
def sick(session, clock):
    """A project paying 7 cents a HIT, published at the floor for its 30 s estimate but measured at 2 minutes (below
    the floor), its 12 assignments by 3 workers all rejected, one worker blocked from it, and a worker whose gold
    stream ran dry."""
    w = setup.world(session, clock(), items=4, workers=3, reward=7)
    session.execute(update(Assignment).where(Assignment.id.in_(w.assignments)).values(duration_ms=120_000))
    w.project.title = "Sick project"
    reject(session, actor=w.owner, now=clock(), feedback="not careful", batch_id=w.batch.id, project_id=w.project.id)
    _block(session, w.workers[0][0], clock(), project_id=w.project.id)
    session.add(GoldStream(worker_id=w.workers[1][0].id, project_id=w.project.id, tasks=5, golds=1,
                           exhausted_at=clock()))
    session.commit()
    return w


@pytest.fixture
def healthy(session, clock):
    w = setup.world(session, clock(), items=2, workers=1, reward=50)
    w.project.title = "Healthy project"
    session.commit()
    return w


def test_project_rates_count_blocks_in_force_from_the_project_or_all_work(session, clock):
    w = setup.world(session, clock(), items=2, workers=4, reward=10)
    other = setup.world(session, clock(), items=1, workers=1, reward=10)
    now = clock()
    a, b, c, d = (acct for acct, _ in w.workers)
    _block(session, a, now, project_id=w.project.id)  # counts
    _block(session, b, now)  # from all work: counts
    _block(session, c, now, project_id=w.project.id, lifted_at=now)  # lifted
    _block(session, d, now, project_id=w.project.id, expires_at=now - dt.timedelta(seconds=1))  # expired
    _block(session, d, now, project_id=other.project.id)  # another project's block
    reject(session, actor=w.owner, now=now, feedback="no", assignment_ids=w.by_worker[0], project_id=w.project.id)
    rates = health.project_rates(session, [w.project.id, other.project.id, 999_999], now=now)
    mine = rates[w.project.id]
    assert (mine.active_workers, mine.blocked_workers, mine.block_rate) == (4, 2, 0.5)
    assert (mine.reviewed, mine.rejected, mine.rejection_rate) == (2, 2, 1.0)
    assert (mine.items, mine.gold_items, mine.tasks, mine.gold_tasks) == (2, 0, 8, 0)
    assert rates[other.project.id].blocked_workers == 0 and rates[other.project.id].reviewed == 0
    assert rates[999_999] == health.ProjectRates() and rates[999_999].block_rate is None
    assert health.project_rates(session, [], now=now) == {}


def test_rate_warnings_need_a_sample_and_a_rate_at_the_threshold():
    assert health.ProjectRates(active_workers=2, blocked_workers=2).warnings() == []  # too few workers to say
    assert health.ProjectRates(active_workers=10, blocked_workers=0).warnings() == []
    [block] = health.ProjectRates(active_workers=10, blocked_workers=1).warnings()
    assert "1 of 10 workers" in block
    assert health.ProjectRates(reviewed=9, rejected=9).warnings() == []
    assert health.ProjectRates(reviewed=10, rejected=1).warnings() == []
    [rejected] = health.ProjectRates(reviewed=10, rejected=2).warnings()
    assert "2 of 10 reviewed" in rejected


def test_awaiting_review_counts_submitted_work_per_batch(session, clock):
    w = setup.world(session, clock(), items=2, workers=2, reward=10)
    assert health.awaiting_review(session, w.project.id) == {w.batch.id: 4}
    reject(session, actor=w.owner, now=clock(), feedback="no", assignment_ids=w.by_worker[0],
           project_id=w.project.id)
    assert health.awaiting_review(session, w.project.id) == {w.batch.id: 2}


@pytest.mark.parametrize("role", [Role.WORKER, Role.REQUESTER])
def test_project_health_is_for_ops_only(client, app, session, clock, healthy, role):
    other, _ = factories.account(session, role, now=clock())
    sign_in(client, app, session, other)
    assert client.get("/ops/projects").status_code == 403
    assert client.get(f"/ops/projects/{healthy.project.id}").status_code == 403


def test_the_list_puts_projects_with_warnings_first(client, app, session, clock, healthy, sick):
    ops, _ = factories.account(session, Role.OPS, now=clock())
    sign_in(client, app, session, ops)
    resp = client.get("/ops/projects")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert html.index("Sick project") < html.index("Healthy project")
    sick_row = html[html.index("Sick project"):html.index("Healthy project")]
    assert "Gold pool exhausted: 1 worker(s)" in sick_row
    assert "below the platform&#39;s wage floor" in sick_row
    assert "High block rate: 1 of 3 workers" in sick_row
    assert "High rejection rate: 12 of 12" in sick_row
    healthy_row = html[html.index("Healthy project"):]
    assert "None" in healthy_row.split("</tr>")[0]


def test_a_project_page_shows_progress_gold_rates_and_pay(client, app, session, clock, sick):
    ops, _ = factories.account(session, Role.OPS, now=clock())
    sign_in(client, app, session, ops)
    resp = client.get(f"/ops/projects/{sick.project.id}")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "4 of 4 items complete (100%)" in html
    assert "33.3%: 1 of 3 workers blocked" in html and "100.0%: 12 of 12 reviewed" in html
    assert "0 gold items beside 4 items" in html
    assert "$8.00/h" in html  # the floor
    assert "$0.07" in html and "$2.10/h (measured)" in html  # the reward per HIT and the rate, as money
    assert client.get("/ops/projects/999999").status_code == 404


def test_an_ops_user_opens_project_health_in_the_browser(app, session, clock, page, live_server, sick, healthy):
    page, problems = page
    ops, _ = factories.account(session, Role.OPS, now=clock())
    browser_log_in(page, live_server, with_password(app, session, ops), "/ops/projects")
    assert page.locator("#projects tbody tr").first.inner_text().startswith("Sick project")
    page.get_by_role("link", name="Sick project").click()
    page.wait_for_url(f"**/ops/projects/{sick.project.id}")
    assert "High rejection rate" in page.locator("#warnings").inner_text()
    audit(page, "project-health")
    assert problems == []
