"""The worker's dashboard, /work: open projects with pay per HIT and per hour (with its basis), the qualifications
each requires and the worker's standing; answers today and earnings; workers only, and only what workers may see."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from base.identity import Role
from market.catalogue.batches import change_batch_status
from market.catalogue.models import Assignment, AssignmentStatus, Item
from market.engine.next_task import next_assignment
from market.engine.open_work import open_projects
from payments.review.listing import worker_summary
from qualification.service import grant, requirement_statuses, start_attempt, submit_attempt
from tests import factories
from tests.browser import audit, log_in, with_password
from tests.console.worker_setup import KNOWN, QUESTIONS, gated_market, open_market, signed_in
from tests.factories import TEST_GOLD_KEY
from workers.models import WorkerBlock


@pytest.fixture
def worker(session, clock):
    return factories.account(session, Role.WORKER, now=clock())


# ---- the domain queries ---------------------------------------------------------------------------------------


def test_open_projects_lists_open_batches_with_work_left_and_their_pay(session, clock):
    proj, batch, owner = open_market(session, clock(), reward_cents=12, estimated_seconds=30)
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    [found] = [p for p in open_projects(session, worker_id=worker.id, now=clock()) if p.project_id == proj.id]
    assert (found.title, found.reward_cents, found.estimated_seconds) == ("Open sentiment", 12, 30)
    assert found.hourly_rate == (1440, "estimated") and found.hits_left == 2 * 3 and not found.blocked
    batch.measured_seconds = Decimal("60")  # measured once enough work was submitted (payments/wage/topups.py)
    session.flush()
    [found] = [p for p in open_projects(session, worker_id=worker.id, now=clock()) if p.project_id == proj.id]
    assert found.hourly_rate == (720, "measured")
    # Its one slot leased: no work left to claim; once the lease lapsed, its slot is claimable again.
    single, _, _ = open_market(session, clock(), title="One slot", items=1, assignments_per_item=1)
    other, _ = factories.account(session, Role.WORKER, now=clock())
    task = next_assignment(session, worker=other, now=clock(), gold_key=TEST_GOLD_KEY, project_id=single.id)
    assert single.id not in {p.project_id for p in open_projects(session, worker_id=worker.id, now=clock())}
    later = task.expires_at + dt.timedelta(seconds=1)
    [found] = [p for p in open_projects(session, worker_id=worker.id, now=later) if p.project_id == single.id]
    assert found.hits_left == 1


def test_paused_and_expired_batches_are_not_open_and_a_blocked_worker_is_told(session, clock):
    proj, batch, owner = open_market(session, clock())
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    session.add(WorkerBlock(account_id=worker.id, project_id=proj.id, reason="spam", created_at=clock()))
    session.flush()
    [found] = [p for p in open_projects(session, worker_id=worker.id, now=clock()) if p.project_id == proj.id]
    assert found.blocked
    change_batch_status(session, project=proj, batch_id=batch.id, action="pause", now=clock())
    assert proj.id not in {p.project_id for p in open_projects(session, worker_id=worker.id, now=clock())}
    change_batch_status(session, project=proj, batch_id=batch.id, action="resume", now=clock())
    later = batch.expires_at + dt.timedelta(seconds=1)
    assert proj.id not in {p.project_id for p in open_projects(session, worker_id=worker.id, now=later)}


def test_worker_summary_counts_todays_answers_and_pending_and_approved_money(session, clock):
    proj, batch, owner = open_market(session, clock(), items=3, reward_cents=12)
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    items = session.scalars(select(Item).where(Item.batch_id == batch.id).order_by(Item.id)).all()
    factories.answer(session, items[0], worker, "pos", now=clock() - dt.timedelta(days=1))  # yesterday
    factories.answer(session, items[1], worker, "pos", now=clock())
    third = factories.answer(session, items[2], worker, "neg", now=clock())
    from payments.review.approve import approve

    approve(session, actor=owner, now=clock(), assignment_ids=[third.assignment_id])
    summary = worker_summary(session, worker_id=worker.id, now=clock())
    assert summary == {"answers_today": 2, "earnings": [{"currency": "USD", "pending": 24, "approved": 12}]}
    other, _ = factories.account(session, Role.WORKER, now=clock())
    assert worker_summary(session, worker_id=other.id, now=clock()) == {"answers_today": 0, "earnings": []}


def test_requirement_statuses_say_met_and_where_the_test_stands(session, clock):
    market = gated_market(session, clock())
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    reqs = market.project.qualification_requirements
    [s] = requirement_statuses(session, worker=worker, requirements=reqs, now=clock())
    assert (s.name, s.met, s.held_value, s.test.attempts_used) == ("Sentiment screener", False, None, 0)
    attempt, questions, _ = start_attempt(session, worker=worker, type_id=market.qtype.id, now=clock())
    submit_attempt(session, worker=worker, attempt_id=attempt.id, now=clock(),
                   answers=[{"question_id": q.id, "answer": "pos"} for q in questions])  # 1 of 3: 33
    [s] = requirement_statuses(session, worker=worker, requirements=reqs, now=clock())
    assert not s.met and s.test.available_at == clock() + dt.timedelta(hours=1)
    grant(session, type_id=market.qtype.id, account=market.owner, worker_id=worker.id, value=90, reason="ok",
          now=clock(), worked_for=lambda _w: True)
    [s] = requirement_statuses(session, worker=worker, requirements=reqs, now=clock())
    assert s.met and s.held_value == 90


# ---- the page -------------------------------------------------------------------------------------------------


def card(html: str, project_id: int) -> str:
    return re.search(rf'<article class="card"[^>]*id="project-{project_id}">(.*?)</article>', html, re.S).group(1)


def test_the_dashboard_shows_pay_rate_basis_and_requirements_and_gates_the_start_link(app, session, clock, worker):
    market = gated_market(session, clock(), reward_cents=15, estimated_seconds=45)
    plain, _, _ = open_market(session, clock())
    client = signed_in(app, worker[1])
    resp = client.get("/work")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    html = resp.get_data(as_text=True)
    gated = card(html, market.project.id)
    assert "Review sentiment" in gated and "$0.15" in gated and "0.8 min" in gated
    assert "$12.00/h" in gated and "(requester's estimate)" in gated
    assert "Sentiment screener" in gated and "at least 70" in gated and "Not taken yet" in gated
    assert f'href="/work/qualifications/{market.qtype.id}"' in gated and "Take the test" in gated
    assert "/work/tasks?project_id" not in gated and "You need the qualifications above" in gated
    assert f'href="/work/tasks?project_id={plain.id}"' in card(html, plain.id)
    # Passing the test (by the service) opens the project: the status says passed, the start link appears.
    attempt, questions, _ = start_attempt(session, worker=worker[0], type_id=market.qtype.id, now=clock())
    submit_attempt(session, worker=worker[0], attempt_id=attempt.id, now=clock(),
                   answers=[{"question_id": q.id, "answer": a} for q, a in zip(questions, KNOWN, strict=True)])
    session.commit()
    gated = card(client.get("/work").get_data(as_text=True), market.project.id)
    assert "Passed" in gated and "(score 100)" in gated
    assert f'href="/work/tasks?project_id={market.project.id}"' in gated


def test_a_failed_test_shows_the_retake_time_and_a_measured_rate_says_so(app, session, clock, worker):
    market = gated_market(session, clock())
    market.batch.measured_seconds = Decimal("24")
    attempt, questions, _ = start_attempt(session, worker=worker[0], type_id=market.qtype.id, now=clock())
    submit_attempt(session, worker=worker[0], attempt_id=attempt.id, now=clock(),
                   answers=[{"question_id": q.id, "answer": "neu"} for q in questions])
    session.commit()
    gated = card(signed_in(app, worker[1]).get("/work").get_data(as_text=True), market.project.id)
    assert "Failed — retake after 2026-01-05 10:00 UTC" in gated
    assert "$18.00/h" in gated and "measured from submitted work" in gated


def test_a_blocked_worker_is_told_plainly_and_gets_no_start_link(app, session, clock, worker):
    proj, _, _ = open_market(session, clock())
    session.add(WorkerBlock(account_id=worker[0].id, project_id=None, reason="spam", created_at=clock()))
    session.commit()
    html = card(signed_in(app, worker[1]).get("/work").get_data(as_text=True), proj.id)
    assert "You are blocked from this project." in html and "/work/tasks" not in html


def test_the_summary_is_the_workers_own_and_no_item_or_gold_is_shown(app, session, clock, worker):
    proj, batch, owner = open_market(session, clock(), items=2, reward_cents=12)
    factories.items(session, proj, 1, now=clock(), gold=1, prefix="secret-gold-")
    other, other_token = factories.account(session, Role.WORKER, now=clock())
    items = session.scalars(select(Item).where(Item.batch_id == batch.id).order_by(Item.id)).all()
    factories.answer(session, items[0], worker[0], "pos", now=clock())
    factories.answer(session, items[1], other, "neg", now=clock())
    factories.answer(session, items[0], other, "neg", now=clock())
    html = signed_in(app, worker[1]).get("/work").get_data(as_text=True)
    assert re.search(r'id="answers-today">1<', html) and '<dd class="pending">$0.12</dd>' in html
    assert signed_in(app, other_token).get("/work").get_data(as_text=True).count('id="answers-today">2<') == 1
    texts = [i.data for i in session.scalars(select(Item).where(Item.project_id == proj.id))]
    assert texts and not any(str(v) in html for t in texts for v in t.values())
    assert "gold" not in html.lower()
    assert session.scalar(select(Assignment.status).where(Assignment.worker_id == worker[0].id)) == \
        AssignmentStatus.SUBMITTED


@pytest.mark.parametrize("role", [Role.REQUESTER, Role.OPS])
def test_the_dashboard_is_for_workers_only(app, client, session, clock, role):
    assert client.get("/work").headers["Location"] == "/login?next=/work"
    _, token = factories.account(session, role, now=clock())
    resp = signed_in(app, token).get("/work")
    assert resp.status_code == 403 and resp.mimetype == "text/html"


# ---- in the browser -------------------------------------------------------------------------------------------


def test_a_worker_signs_up_passes_the_test_by_keyboard_and_the_project_opens(app, session, clock, page, live_server):
    market = gated_market(session, clock())
    tab, problems = page
    tab.goto(live_server + "/signup")
    tab.get_by_label("Username").fill("keyboarder")
    tab.get_by_label("Password").fill("correct horse battery")
    tab.get_by_role("button", name="Sign up").click()
    tab.wait_for_url(live_server + "/work")
    article = tab.locator(f"#project-{market.project.id}")
    assert "Not taken yet" in article.inner_text() and "Start working" not in article.inner_text()
    audit(tab, "dashboard")
    article.get_by_role("link", name="Take the test").focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url(f"{live_server}/work/qualifications/{market.qtype.id}")
    tab.get_by_role("button", name="Start the test").focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url(re.compile(r".*/work/qualifications/attempts/\d+$"))
    assert re.fullmatch(r"\d+:\d\d", tab.locator("#timer").inner_text())
    audit(tab, "qualification-test")
    # Keyboard only: Tab into each question's radio group, arrow keys to the answer (Positive, Negative, Neutral).
    tab.locator("main").focus()
    for n, key in enumerate(KNOWN):
        tab.keyboard.press("Tab")
        group = tab.get_by_role("group", name=f"Question {n + 1} of 3")
        assert QUESTIONS[n] in group.inner_text()
        for _ in range(["pos", "neg", "neu"].index(key)):
            tab.keyboard.press("ArrowDown")
        tab.keyboard.press("Space")
        assert group.locator(f'input[value="{key}"]').is_checked()
    tab.keyboard.press("Tab")
    assert tab.evaluate("document.activeElement.textContent") == "Submit answers"
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#score")
    assert tab.locator("#score").inner_text() == "100%" and "passed" in tab.locator("#result").inner_text()
    audit(tab, "qualification-result")
    tab.goto(live_server + "/work")
    article = tab.locator(f"#project-{market.project.id}")
    assert "Passed" in article.inner_text()
    assert article.get_by_role("link", name=re.compile("Start working")).get_attribute("href") == \
        f"/work/tasks?project_id={market.project.id}"
    assert problems == []


def test_a_worker_fails_the_test_and_sees_when_to_retake_it(app, session, clock, page, live_server, worker):
    market = gated_market(session, clock())
    tab, problems = page
    log_in(tab, live_server, with_password(app, session, worker[0]))
    tab.goto(f"{live_server}/work/qualifications/{market.qtype.id}")
    tab.get_by_role("button", name="Start the test").click()
    for n in range(3):
        tab.get_by_role("group", name=f"Question {n + 1} of 3").get_by_label("Neutral").check()
    tab.get_by_role("button", name="Submit answers").click()
    tab.wait_for_selector("#score")
    assert tab.locator("#score").inner_text() == "33%" and "failed" in tab.locator("#result").inner_text()
    assert "retake the test after 2026-01-05 10:00 UTC" in tab.locator("#retake").inner_text()
    audit(tab, "qualification-result-failed")
    tab.goto(live_server + "/work")
    assert "Failed — retake after 2026-01-05 10:00 UTC" in tab.locator(f"#project-{market.project.id}").inner_text()
    assert problems == []
