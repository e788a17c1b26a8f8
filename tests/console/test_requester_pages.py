"""Requesters' project pages: their own projects only (another's is 404), progress and spend as money, the quality
report, and approving a batch's submitted work in bulk through the review service (confirmed, once, paid as the
API pays; refused with the reason and nothing changed when the money is short)."""

from __future__ import annotations

import pytest

from base.identity import Role
from market.catalogue.models import AssignmentStatus
from tests import factories
from tests import review_setup as setup
from tests.browser import audit, with_password
from tests.console.money_support import browser_log_in, csrf, sign_in


@pytest.fixture
def world(session, clock):
    """A requester's project (10 cents a HIT) whose 6 assignments (2 items x 3 workers) await review."""
    w = setup.world(session, clock(), items=2, workers=3, reward=10)
    w.project.title = "Movie reviews"
    session.commit()
    return w


def _approve(client, w, **data):
    url = f"/requester/projects/{w.project.id}"
    return client.post(f"{url}/batches/{w.batch.id}/approve", data={"csrf_token": csrf(client, url), **data})


@pytest.mark.parametrize("role", [Role.WORKER, Role.OPS])
def test_requester_pages_refuse_other_roles(client, app, session, clock, world, role):
    other, _ = factories.account(session, role, now=clock())
    sign_in(client, app, session, other)
    assert client.get("/requester").status_code == 403
    assert client.get(f"/requester/projects/{world.project.id}").status_code == 403


def test_another_requesters_project_is_not_found_and_cannot_be_approved(client, app, session, clock, world):
    other, _ = factories.account(session, Role.REQUESTER, now=clock())
    sign_in(client, app, session, other)
    listing = client.get("/requester").get_data(as_text=True)
    assert "Movie reviews" not in listing and "no project yet" in listing
    url = f"/requester/projects/{world.project.id}"
    assert client.get(url).status_code == 404
    assert client.get(f"{url}/quality").status_code == 404
    token = csrf(client, "/requester")
    resp = client.post(f"{url}/batches/{world.batch.id}/approve", data={"csrf_token": token, "confirm": "yes"})
    assert resp.status_code == 404
    assert {setup.status(session, a) for a in world.assignments} == {"submitted"}


def test_the_owner_sees_progress_spend_and_work_awaiting_review(client, app, session, world):
    sign_in(client, app, session, world.owner)
    resp = client.get("/requester")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert "Movie reviews" in html and "2 of 2 items" in html and "$0.00" in html
    html = client.get(f"/requester/projects/{world.project.id}").get_data(as_text=True)
    assert "2 of 2 items complete (100%)" in html and "$0.10" in html  # the reward per HIT, as money
    assert f"Approve all submitted work in batch {world.batch.id}" in html
    assert '<td class="num">6</td>' in html  # six awaiting review
    report = client.get(f"/requester/projects/{world.project.id}/quality")
    assert report.status_code == 200 and "Movie reviews" in report.get_data(as_text=True)


def test_bulk_approval_pays_every_submitted_assignment_of_the_batch_once(client, app, session, world):
    sign_in(client, app, session, world.owner)
    before = setup.requester_total(session, world.owner)
    resp = _approve(client, world)  # not confirmed: nothing happens
    assert resp.status_code == 422 and "tick the box" in resp.get_data(as_text=True)
    assert {setup.status(session, a) for a in world.assignments} == {"submitted"}
    resp = _approve(client, world, confirm="yes")
    assert resp.status_code == 303
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Approved 6 assignment(s)" in page and "0.60 USD" in page
    assert "No submitted work is awaiting review." in page
    session.expire_all()
    assert {setup.status(session, a) for a in world.assignments} == {AssignmentStatus.APPROVED.value}
    assert setup.paid_count(session) == (6, 6)
    assert [setup.payable(session, acct) for acct, _ in world.workers] == [20, 20, 20]
    spent = before - setup.requester_total(session, world.owner)
    assert spent >= 60  # rewards plus the platform's fees
    resp = _approve(client, world, confirm="yes")  # again: nothing more is paid
    assert resp.status_code == 303 and setup.paid_count(session) == (6, 6)
    # The list's spend is what left the requester's money: the rewards and the fees.
    assert f"${spent // 100}.{spent % 100:02d}" in client.get("/requester").get_data(as_text=True)


def test_bulk_approval_with_too_little_money_is_refused_and_changes_nothing(client, app, session, clock, world):
    setup.leave_only(session, world.owner, world.batch, 5, clock())
    sign_in(client, app, session, world.owner)
    resp = _approve(client, world, confirm="yes")
    assert resp.status_code == 402 and "Nothing was approved" in resp.get_data(as_text=True)
    session.expire_all()
    assert {setup.status(session, a) for a in world.assignments} == {"submitted"}
    assert setup.paid_count(session) == (0, 0)


def test_a_requester_approves_a_batch_in_bulk_in_the_browser(app, session, page, live_server, world):
    page, problems = page
    browser_log_in(page, live_server, with_password(app, session, world.owner), "/requester")
    page.get_by_role("link", name="Movie reviews").click()
    page.wait_for_url(f"**/requester/projects/{world.project.id}")
    page.get_by_label("Yes, approve and pay all 6").check()
    audit(page, "requester-project")
    page.get_by_role("button", name=f"Approve all submitted work in batch {world.batch.id}").click()
    page.wait_for_selector("text=Approved 6 assignment(s)")
    assert "No submitted work is awaiting review." in page.content()
    assert setup.paid_count(session) == (6, 6)
    assert problems == []
