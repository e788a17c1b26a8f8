"""The work page as MTurk's ExternalQuestion: only URLs we signed open, a preview leases nothing and shows no gold,
an accepted assignment is the arrived worker's one task on the work page, authenticated by a work token (no
session cookie inside MTurk's frame), and the finished work is posted to MTurk's externalSubmit after our submit
stored it. In Chromium, framed by a page of MTurk's origin."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode

import pytest
from sqlalchemy import func, select

from market.catalogue.models import Answer, Assignment, Batch
from platforms.jobs import page_path
from platforms.models import PlatformAssignment
from tests.browser import audit
from tests.console.test_work_page import quiet
from tests.console.work_setup import EXPLANATION, GOLD, work_world
from tests.platforms.support import make_burst
from workers.models import Account

SANDBOX = "https://workersandbox.mturk.com"
OURS = "https://crowdmarket.test"


def task_url(app, batch_id: int, **params: str) -> str:
    return f"{page_path(app, platform='mturk', batch_id=batch_id)}&{urlencode(params)}"


def accepted(worker: str = "A1WORKER", assignment: str = "3ASSIGNMENT1") -> dict[str, str]:
    return {"assignmentId": assignment, "hitId": "3HIT1", "workerId": worker, "turkSubmitTo": SANDBOX}


@pytest.fixture
def world(app, session, clock):
    w = work_world(app, session, clock)
    parent = session.scalar(select(Batch).where(Batch.project_id == w.project.id))
    burst = make_burst(session, owner=session.get(Account, w.project.owner_id), batch_id=parent.id, now=clock())
    w.batch = session.get(Batch, burst.batch_id)  # the burst's batch: the one platforms' pages serve
    return w


def token_of(html: str) -> tuple[str, int]:
    token = re.search(r'data-work-token="([^"]+)"', html).group(1)
    first = re.search(r'data-first="([^"]+)"', html).group(1)
    return token, int(re.search(r"&#34;assignment_id&#34;: (\d+)", first).group(1))


def test_only_signed_urls_open_and_platform_parameters_are_checked(app, client, world):
    ok = task_url(app, world.batch.id, **accepted())
    forged = ok.replace(ok.split("ref=")[1].split("&")[0], "eyJiYXRjaCI6MX0")
    resp = client.get(forged)
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    resp = client.get(task_url(app, world.batch.id, assignmentId="3ASSIGNMENT1", turkSubmitTo="https://evil.example"))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "workerId" in html and "turkSubmitTo" in html
    assert client.get("/work/external/prolific?ref=x").status_code == 404


def test_a_preview_is_read_only_leases_nothing_and_shows_no_gold(app, client, session, world):
    resp = client.get(task_url(app, world.batch.id, assignmentId="ASSIGNMENT_ID_NOT_AVAILABLE", hitId="3HIT1"))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and world.project.title in html and "This is a preview" in html
    assert "Review number 0" in html and "$0.12" in html and "Guidelines v1" in html
    assert all(text not in html for _, text, _ in GOLD) and EXPLANATION not in html and "gold" not in html.lower()
    assert 'disabled' in html and session.scalar(select(func.count()).select_from(Assignment)) == 0
    policy = resp.headers["Content-Security-Policy"]
    assert f"form-action 'self' https://www.mturk.com {SANDBOX}" in policy
    assert f"frame-ancestors 'self' https://worker.mturk.com https://www.mturk.com {SANDBOX}" in policy


def test_an_accepted_assignment_is_one_task_acted_on_by_its_token_only(app, client, session, world):
    resp = client.get(task_url(app, world.batch.id, **accepted()))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200, html
    token, assignment_id = token_of(html)
    assert f'action="{SANDBOX}/mturk/externalSubmit"' in html and 'name="assignmentId" value="3ASSIGNMENT1"' in html
    assert "Return without penalty" in html and 'id="return" class="secondary" hidden' in html
    worker = session.scalar(select(Account).where(Account.username == "mturk-A1WORKER"))
    mapped = session.scalar(select(PlatformAssignment))
    assert (mapped.external_id, mapped.worker_id, mapped.assignment_id) == ("3ASSIGNMENT1", worker.id, assignment_id)
    again = client.get(task_url(app, world.batch.id, **accepted()))  # the frame reloaded
    assert token_of(again.get_data(as_text=True))[1] == assignment_id

    fresh = app.test_client()  # no session, no CSRF token: the work token alone
    items = [i["id"] for i in __import__("json").loads(
        re.search(r'data-first="([^"]+)"', html).group(1).replace("&#34;", '"'))["task"]["items"]]
    body = {"answers": [{"item_id": i, "answer": "pos"} for i in items], "next": True}
    assert fresh.post("/work/tasks/next", headers={"X-Work-Token": token}).status_code == 403
    assert fresh.post(f"/work/tasks/{assignment_id + 1}/submit", json=body,
                      headers={"X-Work-Token": token}).status_code == 403
    assert fresh.post(f"/work/tasks/{assignment_id}/submit", json=body,
                      headers={"X-Work-Token": token[:-2] + "xx"}).status_code == 401
    done = fresh.post(f"/work/tasks/{assignment_id}/submit", json=body, headers={"X-Work-Token": token})
    assert done.status_code == 200 and done.get_json()["next"] is None  # the platform hands out the next HIT
    assert session.scalar(select(func.count()).select_from(Answer).where(Answer.worker_id == worker.id)) == 2
    # Reloaded after submitting: the same task, marked submitted, so the page posts the completion again.
    assert 'data-submitted="true"' in client.get(task_url(app, world.batch.id, **accepted())).get_data(as_text=True)
    # Another MTurk worker opening this assignment is refused; nothing is leased to them.
    forger = client.get(task_url(app, world.batch.id, **accepted(worker="A2FORGER")))
    assert forger.status_code == 403 and "another worker" in forger.get_data(as_text=True)


def test_an_mturk_worker_labels_inside_mturks_frame_and_the_hit_is_handed_back(app, session, clock, world, page,
                                                                                  live_server):
    """MTurk's worker site (a page of its origin) frames our page, served at a public HTTPS origin of ours (both
    faked by the browser's routing; ours proxied to the live server): cross-site, so no cookie of ours is sent in
    the frame, as on the real site."""
    page, problems = page
    posted: list[dict[str, list[str]]] = []

    def mturk(route) -> None:
        url = route.request.url
        if "/mturk/externalSubmit" in url:
            posted.append(parse_qs(route.request.post_data or ""))
            route.fulfill(status=200, content_type="text/html",
                          body='<!doctype html><html lang="en"><title>Done</title><p>HIT submitted</p></html>')
            return
        src = OURS + url.split("?frame=", 1)[1]
        route.fulfill(status=200, content_type="text/html",
                      body=f'<!doctype html><html lang="en"><title>MTurk</title>'
                           f'<iframe title="HIT" src="{src}" width="1200" height="900"></iframe></html>')

    def ours(route) -> None:
        route.fulfill(response=route.fetch(url=live_server + route.request.url.removeprefix(OURS)))

    page.route(f"{SANDBOX}/**", mturk)
    page.route(f"{OURS}/**", ours)
    preview = task_url(app, world.batch.id, assignmentId="ASSIGNMENT_ID_NOT_AVAILABLE", hitId="3HIT1")
    page.goto(f"{SANDBOX}/mturk/preview?frame={preview}")
    hit = page.frame_locator("iframe")
    hit.get_by_text("This is a preview").wait_for()
    assert hit.locator("button.label").first.is_disabled()

    page.goto(f"{SANDBOX}/mturk/accept?frame={task_url(app, world.batch.id, **accepted())}")
    hit.locator("#task").wait_for(state="visible")
    assert hit.locator("#return").is_hidden()
    hit.locator("#item").click()  # the frame takes the keyboard
    page.keyboard.press("1")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    hit.get_by_text("HIT submitted").wait_for()
    quiet(live_server)
    session.expire_all()
    worker = session.scalar(select(Account).where(Account.username == "mturk-A1WORKER"))
    answers = list(session.scalars(select(Answer).where(Answer.worker_id == worker.id).order_by(Answer.id)))
    assert [a.value for a in answers] == ["pos", "neg"]
    assert answers[0].client_meta["source"] == "work-page-external"
    assert posted == [{"assignmentId": ["3ASSIGNMENT1"], "crowdmarket_assignment": [str(answers[0].assignment_id)]}]
    assert problems == []

    page.goto(live_server + preview)  # the preview itself, audited as a page
    audit(page, "mturk-preview")


def test_accounts_made_on_arrival_count_as_sign_ups_so_invented_worker_ids_cannot_hoard_the_batch(
        app, client, session, world):
    from edge.limits import SIGNUP_PER_ADDRESS

    limit = SIGNUP_PER_ADDRESS[0]
    for i in range(limit):
        resp = client.get(task_url(app, world.batch.id, **accepted(worker=f"A{i}FAKE", assignment=f"3ASG{i}")))
        assert resp.status_code in (200, 404), resp.get_data(as_text=True)  # 404: the batch has no more work
    held = session.scalar(select(func.count()).select_from(Assignment))
    refused = client.get(task_url(app, world.batch.id, **accepted(worker="AONEMORE", assignment="3ASGMORE")))
    assert refused.status_code == 429 and "Too many sign-ups" in refused.get_data(as_text=True)
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Assignment)) == held  # nothing more leased
    assert session.scalar(select(Account).where(Account.username == "mturk-AONEMORE")) is None
    # A worker seen before is no sign-up: their frame reloads as often as it likes.
    assert client.get(task_url(app, world.batch.id, **accepted(worker="A0FAKE", assignment="3ASG0"))).status_code \
        in (200, 404)


def test_a_prolific_participant_works_through_the_session_and_is_sent_back_with_the_code(app, session, clock, page,
                                                                                         live_server):
    """Prolific opens the study in a tab: each submit brings the session's next task (the page again), and when
    none is left the participant is sent to Prolific's completion URL with the burst's code."""
    from platforms.models import PlatformBatch

    page, problems = page
    w = work_world(app, session, clock)
    parent = session.scalar(select(Batch).where(Batch.project_id == w.project.id))
    burst = make_burst(session, owner=w.owner, batch_id=parent.id, now=clock(), platform="prolific")
    code = session.get(PlatformBatch, burst.id).completion_code
    session.commit()
    returned: list[str] = []

    def prolific(route) -> None:
        returned.append(route.request.url)
        route.fulfill(status=200, content_type="text/html",
                      body='<!doctype html><html lang="en"><title>Prolific</title><p>Thanks</p></html>')

    page.route("https://app.prolific.com/**", prolific)
    pid, study, session_id = "a" * 24, "b" * 24, "c" * 24
    url = f"{page_path(app, platform='prolific', batch_id=burst.batch_id)}&" + urlencode(
        {"PROLIFIC_PID": pid, "STUDY_ID": study, "SESSION_ID": session_id})
    page.goto(live_server + url)
    done = 0
    while not page.get_by_text("All done").is_visible():
        page.locator("#task").wait_for(state="visible")
        page.locator("#item").click()
        page.keyboard.press("1")
        page.keyboard.press("2")
        with page.expect_navigation():  # stored, then the page again: the session's next task
            page.keyboard.press("Enter")
        done += 1
        assert done <= 4, "more tasks than the burst has"
    assert done == 4  # every HIT of the burst, one after another in one session
    audit(page, "prolific-done")
    page.get_by_role("button", name="Return to Prolific").click()
    page.get_by_text("Thanks").wait_for()
    assert returned == [f"https://app.prolific.com/submissions/complete?cc={code}"]
    quiet(live_server)
    session.expire_all()
    worker = session.scalar(select(Account).where(Account.username == f"prolific-{pid}"))
    assert session.scalar(select(func.count()).select_from(PlatformAssignment)
                          .where(PlatformAssignment.worker_id == worker.id)) == 4
    assert problems == []
