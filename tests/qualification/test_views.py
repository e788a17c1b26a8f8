"""The qualification test pages: a test's page and "Start the test", the attempt as a form with its timer, the
result; the same service rules as the API (resume, retry delay, expiry, replays), workers only, and the known
answers never on a page."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from base.identity import Role
from qualification.models import AttemptStatus, QualificationAttempt, QualificationGrant
from tests import factories
from tests.console.worker_setup import KNOWN, QUESTIONS, csrf, qualification_type, signed_in

SECRET = "zebra-known-answer-417"


@pytest.fixture
def setup(app, session, clock):
    owner, _ = factories.account(session, Role.REQUESTER, now=clock())
    qtype = qualification_type(session, owner, clock())
    worker, token = factories.account(session, Role.WORKER, now=clock())
    return {"owner": owner, "qtype": qtype, "worker": worker, "client": signed_in(app, token)}


def start(client, type_id: int):
    url = f"/work/qualifications/{type_id}"
    return client.post(url, data={"csrf_token": csrf(client, url)})


def question_ids(html: str) -> list[int]:
    return [int(i) for i in dict.fromkeys(re.findall(r'name="q(\d+)"', html))]


def answer(client, attempt_url: str, values: list[str], **extra):
    html = client.get(attempt_url).get_data(as_text=True)
    data = {f"q{q}": v for q, v in zip(question_ids(html), values, strict=False)}
    return client.post(attempt_url, data={"csrf_token": csrf(client, attempt_url), **data, **extra})


def test_the_tests_list_and_a_tests_page_offer_to_start_it(setup):
    client, qtype = setup["client"], setup["qtype"]
    html = client.get("/work/qualifications").get_data(as_text=True)
    assert "Sentiment screener" in html and "Not taken yet" in html
    resp = client.get(f"/work/qualifications/{qtype.id}")
    html = resp.get_data(as_text=True)
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Three short reviews to label." in html and "70%" in html and "10.0 min" in html
    assert "Start the test" in html and 'name="csrf_token"' in html
    assert client.get("/work/qualifications/999999").status_code == 404


def test_starting_shows_the_questions_with_a_timer_and_resumes_the_open_attempt(setup, session, clock):
    client, qtype = setup["client"], setup["qtype"]
    resp = start(client, qtype.id)
    assert resp.status_code == 303
    url = resp.headers["Location"]
    html = client.get(url).get_data(as_text=True)
    assert all(q in html for q in QUESTIONS) and len(question_ids(html)) == 3
    assert 'data-remaining="600"' in html and "10:00" in html and "2026-01-05 09:10 UTC" in html
    assert html.count('type="radio"') == 9 and " checked" not in html  # no answer is pre-chosen
    clock.advance(seconds=90)
    again = start(client, qtype.id)
    assert again.headers["Location"] == url  # resumed: the clock runs on from the first start
    assert 'data-remaining="510"' in client.get(url).get_data(as_text=True)
    assert session.scalar(select(QualificationAttempt.status)) == AttemptStatus.STARTED


def test_a_pass_shows_the_score_and_grants_the_qualification(setup, session):
    client, qtype, worker = setup["client"], setup["qtype"], setup["worker"]
    url = start(client, qtype.id).headers["Location"]
    ids = question_ids(client.get(url).get_data(as_text=True))
    resp = answer(client, url, KNOWN)
    assert resp.status_code == 303 and resp.headers["Location"] == url
    html = client.get(url).get_data(as_text=True)
    assert 'id="score">100%' in html and "passed" in html and "You now hold this qualification" in html
    held = session.scalar(select(QualificationGrant.value).where(QualificationGrant.worker_id == worker.id))
    assert held == 100
    # The same answers again (a double submit): the same result; other answers: refused, the result stands.
    data = {"csrf_token": csrf(client, url), **{f"q{q}": a for q, a in zip(ids, KNOWN, strict=True)}}
    assert client.post(url, data=data).status_code == 303
    changed = client.post(url, data={**data, f"q{ids[0]}": "neg"})
    assert changed.status_code == 409 and "submitted already with different answers" in changed.get_data(as_text=True)
    assert 'id="score">100%' in changed.get_data(as_text=True)


def test_a_fail_shows_when_the_test_may_be_retaken_and_starting_early_is_refused(setup, session, clock):
    client, qtype = setup["client"], setup["qtype"]
    url = start(client, qtype.id).headers["Location"]
    answer(client, url, ["neu", "neu", "neu"])
    html = client.get(url).get_data(as_text=True)
    assert 'id="score">33%' in html and "failed" in html
    assert "You can retake the test after 2026-01-05 10:00 UTC." in html
    refused = start(client, qtype.id)
    assert refused.status_code == 409
    assert "You can retake this test after its retry delay: 2026-01-05 10:00 UTC." in refused.get_data(as_text=True)
    clock.advance(hours=1)
    assert start(client, qtype.id).status_code == 303


def test_an_unanswered_question_is_asked_again_and_nothing_is_scored(setup, session):
    client, qtype = setup["client"], setup["qtype"]
    url = start(client, qtype.id).headers["Location"]
    resp = answer(client, url, KNOWN[:2])
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "Please answer every question." in html and "missing an answer" in html
    assert html.count(" checked") == 2  # the answers given are kept
    attempt = session.scalar(select(QualificationAttempt))
    session.refresh(attempt)
    assert attempt.status == AttemptStatus.STARTED and attempt.score is None
    bad = answer(client, url, ["pos", "neg", "maybe"])
    assert bad.status_code == 422 and "unknown label key" in bad.get_data(as_text=True)


def test_an_attempt_past_its_deadline_is_not_scored_and_says_so(setup, session, clock):
    client, qtype = setup["client"], setup["qtype"]
    url = start(client, qtype.id).headers["Location"]
    html = client.get(url).get_data(as_text=True)
    token, ids = csrf(client, url), question_ids(html)
    clock.advance(seconds=601)
    resp = client.post(url, data={"csrf_token": token, **{f"q{q}": a for q, a in zip(ids, KNOWN, strict=True)}})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 410
    assert "The time for this attempt ran out; its answers were not scored." in html
    assert "Time ran out" in html and "score" not in html.lower().replace("not scored", "")
    attempt = session.scalar(select(QualificationAttempt))
    session.refresh(attempt)
    assert attempt.status == AttemptStatus.EXPIRED  # the service's write, kept by the unit of work
    assert session.scalar(select(QualificationGrant)) is None


def test_the_known_answers_never_reach_the_page(app, session, clock):
    owner, _ = factories.account(session, Role.REQUESTER, now=clock())
    qtype = qualification_type(session, owner, clock(), name="Free text", label_schema={"type": "text"},
                               questions=[{"data": {"text": "Type the word"}, "answer": SECRET}])
    worker, token = factories.account(session, Role.WORKER, now=clock())
    client = signed_in(app, token)
    pages = [client.get("/work/qualifications"), client.get(f"/work/qualifications/{qtype.id}")]
    url = start(client, qtype.id).headers["Location"]
    pages.append(client.get(url))
    pages.append(answer(client, url, ["wrong"]))
    pages.append(client.get(url))
    pages.append(client.get("/work"))
    assert "Type the word" in pages[2].get_data(as_text=True) and "failed" in pages[-2].get_data(as_text=True)
    assert not [p.request.path for p in pages if SECRET in p.get_data(as_text=True)]


def test_another_workers_attempt_is_not_found_and_a_form_without_csrf_is_refused(app, setup, session, clock):
    client, qtype = setup["client"], setup["qtype"]
    url = start(client, qtype.id).headers["Location"]
    _, other_token = factories.account(session, Role.WORKER, now=clock())
    other = signed_in(app, other_token)
    assert other.get(url).status_code == 404
    assert other.post(url, data={"csrf_token": csrf(other, "/work")}).status_code == 404
    assert client.post(f"/work/qualifications/{qtype.id}", data={}).status_code == 400
    assert client.post(url, data={"q1": "pos"}).status_code == 400
    assert session.scalar(select(QualificationAttempt.status)) == AttemptStatus.STARTED


@pytest.mark.parametrize("role", [Role.REQUESTER, Role.OPS])
def test_the_test_pages_are_for_workers_only(app, setup, session, clock, role):
    qtype = setup["qtype"]
    anonymous = app.test_client()
    assert anonymous.get(f"/work/qualifications/{qtype.id}").headers["Location"].startswith("/login?next=")
    _, token = factories.account(session, role, now=clock())
    client = signed_in(app, token)
    for url in ("/work/qualifications", f"/work/qualifications/{qtype.id}", "/work/qualifications/attempts/1"):
        assert client.get(url).status_code == 403, url
    assert client.post(f"/work/qualifications/{qtype.id}",
                       data={"csrf_token": csrf(client, "/work/qualifications")}).status_code == 403
    assert session.scalar(select(QualificationAttempt)) is None


def test_the_timer_counts_down_in_the_browser(app, setup, session, clock, page, live_server):
    from playwright.sync_api import expect

    from tests.browser import audit, log_in, with_password

    qtype = qualification_type(session, setup["owner"], clock(), name="Quick", test_duration_seconds=65)
    tab, problems = page
    log_in(tab, live_server, with_password(app, session, setup["worker"]))
    tab.goto(f"{live_server}/work/qualifications/{qtype.id}")
    tab.get_by_role("button", name="Start the test").click()
    tab.wait_for_url(re.compile(r".*/attempts/\d+$"))
    assert tab.locator("#timer").inner_text() in ("1:05", "1:04")
    expect(tab.locator("#timer")).to_have_text(re.compile(r"^1:0[0-3]$"))  # counting down
    expect(tab.locator("#timer-alert")).to_have_text("60 seconds left.", timeout=10_000)  # the warning, announced
    audit(tab, "qualification-test-timer")
    assert problems == []
