"""The worker's earnings page, /work/earnings: each assignment's reward, top-up with its reason, rejection with its
feedback; the realized hourly rate; balances; payouts. The worker's own only; workers only."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from base.identity import Role
from market.catalogue.models import Assignment
from payments.books import payouts
from payments.books.reports import worker_realized_rate
from payments.review.approve import approve, reject
from payments.review.listing import worker_history
from payments.wage.topups import pay_top_ups
from tests import factories
from tests.browser import audit, log_in, with_password
from tests.console.worker_setup import signed_in
from tests.review_setup import world

FEEDBACK = "Item 2 was plainly negative: please read the guidelines again."


@pytest.fixture
def reviewed(session, clock):
    """Three workers' work on 4 items (60 s each, 10 cents: below the $15/h target, so top-ups are due): worker 0
    has three approved (then topped up) and one rejected with feedback; worker 1 one rejected; the rest waits."""
    w = world(session, clock(), items=4, workers=3, reward=10, funds=100_000)
    session.execute(update(Assignment).where(Assignment.id.in_(w.assignments)).values(duration_ms=60_000))
    mine = w.by_worker[0]
    approve(session, actor=w.owner, now=clock(), assignment_ids=mine[:3])
    reject(session, actor=w.owner, now=clock(), feedback=FEEDBACK, assignment_ids=[mine[3]])
    reject(session, actor=w.owner, now=clock(), feedback="Another worker's feedback",
           assignment_ids=[w.by_worker[1][0]])
    pay_top_ups(session, now=clock())
    session.commit()
    return w


def test_worker_history_is_newest_first_with_top_up_reasons_and_feedback(session, reviewed):
    worker = reviewed.workers[0][0]
    rows = worker_history(session, worker_id=worker.id, before=None, limit=10)
    assert [r["assignment_id"] for r in rows] == sorted(reviewed.by_worker[0], reverse=True)
    rejected, *approved = rows
    assert rejected["status"] == "rejected" and rejected["feedback"] == FEEDBACK and rejected["reward"] is None
    # 10 cents for 60 s is $6/h; topped up to $15/h: ceil(1500 x 60 / 3600 - 10) = 15 cents each.
    assert all(r["reward"] == {"cents": 10, "currency": "USD"} for r in approved)
    assert all(r["top_up"] == {"cents": 15, "currency": "USD"} for r in approved)
    assert all(r["top_up_reason"].startswith("Fair-wage top-up: HITs of Sentiment of reviews took a median 60 s")
               for r in approved)
    page = worker_history(session, worker_id=worker.id, before=rows[1]["assignment_id"], limit=10)
    assert [r["assignment_id"] for r in page] == [r["assignment_id"] for r in rows[2:]]
    waiting = worker_history(session, worker_id=reviewed.workers[2][0].id, before=None, limit=10)
    assert {r["status"] for r in waiting} == {"submitted"} and waiting[0]["offered"]["cents"] == 10


def test_the_realized_rate_is_what_was_paid_per_hour_of_approved_work(session, reviewed):
    [rate] = worker_realized_rate(session, worker_id=reviewed.workers[0][0].id)
    # (3 x 10 + 3 x 15) cents over 3 minutes of approved work: $15.00 an hour.
    assert (rate["rewards"], rate["bonuses"], rate["assignments"], rate["duration_ms"]) == (30, 45, 3, 180_000)
    assert rate["hourly_rate_cents"] == 1500
    assert worker_realized_rate(session, worker_id=reviewed.workers[2][0].id) == []


def test_worker_lines_are_the_workers_own_payout_lines_newest_first(session, clock, reviewed):
    ops, _ = factories.account(session, Role.OPS, now=clock())
    batch, _ = payouts.create_batch(session, actor_id=ops.id, currency="USD", period_end=clock(), minimum_cents=0,
                                    now=clock())
    payouts.approve(session, batch_id=batch.id, actor_id=ops.id, now=clock())
    worker = reviewed.workers[0][0]
    [(line, of)] = payouts.worker_lines(session, worker_id=worker.id, limit=10)
    assert (line.worker_id, line.amount_cents, of.id) == (worker.id, 75, batch.id)
    assert payouts.worker_lines(session, worker_id=reviewed.workers[2][0].id, limit=10) == []


def test_the_earnings_page_shows_pay_top_ups_feedback_rate_balance_and_payouts(app, session, clock, reviewed):
    ops, _ = factories.account(session, Role.OPS, now=clock())
    batch, _ = payouts.create_batch(session, actor_id=ops.id, currency="USD", period_end=clock(), minimum_cents=0,
                                    now=clock())
    payouts.approve(session, batch_id=batch.id, actor_id=ops.id, now=clock())
    session.commit()
    resp = signed_in(app, reviewed.workers[0][1]).get("/work/earnings")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    html = resp.get_data(as_text=True)
    assert html.count("$0.10") >= 3 and html.count("$0.15:") == 3 and "Fair-wage top-up" in html
    assert FEEDBACK in html and "rejected" in html
    assert 'id="realized-USD">$15.00/h' in html
    assert '<dd class="paid-out">$0.75</dd>' in html and '<dd class="payable">$0.00</dd>' in html
    assert re.search(r"\$0\.75</td>\s*<td>approved", html)
    assert "Another worker&#39;s feedback" not in html and "Another worker's feedback" not in html
    assert "gold" not in html.lower()


def test_the_page_shows_fifty_newest_first_and_links_to_older_ones(app, session, clock, monkeypatch, reviewed):
    import console.earnings

    monkeypatch.setattr(console.earnings, "PAGE", 2)
    client = signed_in(app, reviewed.workers[0][1])
    ids = sorted(reviewed.by_worker[0], reverse=True)
    html = client.get("/work/earnings").get_data(as_text=True)
    assert re.findall(r'<tr id="a(\d+)">', html) == [str(i) for i in ids[:2]]
    older = re.search(r'href="(/work/earnings\?before=\d+)">Older', html).group(1)
    html = client.get(older).get_data(as_text=True)
    assert re.findall(r'<tr id="a(\d+)">', html) == [str(i) for i in ids[2:]] and "Older" not in html
    assert client.get("/work/earnings?before=abc").status_code == 200  # ignored: the newest page


@pytest.mark.parametrize("role", [Role.REQUESTER, Role.OPS])
def test_the_earnings_page_is_for_workers_only(app, client, session, clock, role):
    assert client.get("/work/earnings").headers["Location"] == "/login?next=/work/earnings"
    _, token = factories.account(session, role, now=clock())
    assert signed_in(app, token).get("/work/earnings").status_code == 403


def test_a_worker_reads_their_earnings_in_the_browser(app, session, clock, reviewed, page, live_server):
    tab, problems = page
    log_in(tab, live_server, with_password(app, session, reviewed.workers[0][0]))
    tab.get_by_role("navigation", name="Main").get_by_role("link", name="Earnings").click()
    tab.wait_for_url(live_server + "/work/earnings")
    rows = tab.locator("tbody tr")
    text = tab.locator("main").inner_text()
    assert FEEDBACK in text and "Fair-wage top-up" in text and "$15.00/h" in text
    assert rows.count() == 4
    audit(tab, "earnings")
    assert problems == []
