"""The ops flag queue and a flag's page: ops only, most severe first, the evidence (a server-drawn SVG chart of
gold accuracy over time, parsed here), and block / unblock / dismiss with a required note, exactly as the API."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.models import Answer
from market.quality import triage
from tests.browser import audit, log_in, with_password
from tests.console.ops_setup import csrf, gold_project, login_token, ops_session, spammer
from tests.factories import account, auth
from workers import flags
from workers.models import FlagReason, FlagState, WorkerBlock, WorkerFlag, WorkerFlagEvent, WorkerStats

SVG = "{http://www.w3.org/2000/svg}"


def events(session, flag_id):
    session.expire_all()
    return [(e.action, e.note) for e in flags.events(session, flag_id)]


def state(session, flag_id):
    session.expire_all()
    return session.get(WorkerFlag, flag_id).state


@pytest.fixture
def flagged(client, session, clock, monkeypatch):
    proj = gold_project(session, clock)
    worker, token, flag = spammer(client, session, clock, monkeypatch)
    return {"project": proj, "worker": worker, "token": token, "flag": flag}


# ---- who may see it ----------------------------------------------------------------------------------------------


def test_the_ops_pages_are_for_ops_only(client, session, clock, flagged):
    fid = flagged["flag"].id
    urls = ["/ops", f"/ops/flags/{fid}", f"/ops/workers/{flagged['worker'].id}"]
    for url in urls:
        assert client.get(url).headers["Location"] == f"/login?next={url}"
    for role in (Role.WORKER, Role.REQUESTER):
        other = client.application.test_client()
        acct, _ = account(session, role, now=clock())
        login_token(other, session, clock, acct)
        for url in urls:
            resp = other.get(url)
            assert resp.status_code == 403 and resp.mimetype == "text/html", (role, url)
        token = csrf(other, "/ops")  # the 403 page has the log-out form, with its token
        for action in ("block", "unblock", "dismiss"):
            resp = other.post(f"/ops/flags/{fid}/{action}", data={"csrf_token": token, "scope": "project",
                                                                  "note": "not mine to decide"})
            assert resp.status_code == 403, (role, action)
    assert state(session, fid) == FlagState.OPEN and [a for a, _ in events(session, fid)] == ["opened"]
    ops_session(client, session, clock)
    for url in urls:
        resp = client.get(url)
        assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store", url


# ---- the order ---------------------------------------------------------------------------------------------------


def _raise(session, clock, worker, proj, reason, evidence):
    flag = flags.raise_flag(session, worker_id=worker.id, project_id=proj.id, reason=reason, note="test",
                            evidence=evidence, now=clock())
    session.commit()
    return flag


def test_the_queue_shows_the_most_severe_first(client, session, clock, flagged):
    proj = flagged["project"]
    workers = [account(session, Role.WORKER, now=clock())[0] for _ in range(4)]
    # Raised in an order that is not the severity's: by id, the queue would be wrong.
    low = _raise(session, clock, workers[0], proj, FlagReason.FREQUENT_RETURNS,
                 {"metric": "return_rate", "value": 0.6, "threshold": 0.2, "n": 40})
    medium = _raise(session, clock, workers[1], proj, FlagReason.FAST_ANSWERS,
                    {"metric": "fast_share", "value": 0.8, "threshold": 0.5, "n": 30})
    # Gold 8/10: below 0.90, but the interval's upper bound (0.94) is not: "high", not "critical".
    high = _raise(session, clock, workers[2], proj, FlagReason.GOLD_BELOW_THRESHOLD,
                  {"metric": "accuracy", "value": 0.8, "threshold": 0.9, "n": 10, "gold_seen": 10,
                   "gold_correct": 8})
    # As sure as the spammer's, but the worker is blocked from all work already: contained, last.
    contained = _raise(session, clock, workers[3], proj, FlagReason.GOLD_BELOW_THRESHOLD,
                       {"metric": "accuracy", "value": 0.0, "threshold": 0.9, "n": 8, "gold_seen": 8,
                        "gold_correct": 0})
    other = _raise(session, clock, workers[3], proj, FlagReason.MANUAL, {})
    flags.block(session, flag_id=other.id, actor=None, scope="all", reason="earlier", now=clock())
    session.commit()
    ops_session(client, session, clock)
    html = client.get("/ops").get_data(as_text=True)
    order = [int(i) for i in re.findall(r'data-flag-id="(\d+)"', html)]
    critical = flagged["flag"].id  # 0/4 gold: even the upper bound (0.49) is far below 0.90
    assert order == [critical, high.id, medium.id, low.id, contained.id]  # the blocked MANUAL flag is not open
    levels = re.findall(r'class="sev sev-(\w+)"', html)
    assert levels == ["critical", "high", "medium", "low", "contained"]
    assert "most severe first" in html and "Wilson" in html  # the order is documented on the page
    # Filters as the API has them, and the worker's name links to their page.
    html = client.get("/ops", query_string={"reason": "GOLD_BELOW_THRESHOLD"}).get_data(as_text=True)
    assert [int(i) for i in re.findall(r'data-flag-id="(\d+)"', html)] == [critical, high.id, contained.id]
    html = client.get("/ops", query_string={"state": "blocked"}).get_data(as_text=True)
    assert [int(i) for i in re.findall(r'data-flag-id="(\d+)"', html)] == [other.id]
    html = client.get("/ops", query_string={"state": "any", "worker_id": workers[3].id}).get_data(as_text=True)
    assert sorted(int(i) for i in re.findall(r'data-flag-id="(\d+)"', html)) == [contained.id, other.id]
    assert f'href="/ops/workers/{flagged["worker"].id}"' in client.get("/ops").get_data(as_text=True)


def test_bad_filters_are_refused_on_the_page(client, session, clock, flagged):
    ops_session(client, session, clock)
    for query in ({"state": "sleeping"}, {"project_id": "abc"}, {"page": "x"}):
        resp = client.get("/ops", query_string=query)
        assert resp.status_code == 422 and "Please correct the filters" in resp.get_data(as_text=True), query


def test_the_queue_is_paged_in_severity_order(session, clock, flagged):
    proj = flagged["project"]
    for n in range(5):
        worker, _ = account(session, Role.WORKER, now=clock())
        _raise(session, clock, worker, proj, FlagReason.FAST_ANSWERS,
               {"metric": "fast_share", "value": 0.6 + n / 20, "threshold": 0.5, "n": 20})
    everything, total = triage.flag_queue(session, now=clock(), limit=50)
    assert total == 6 and everything[0].flag.id == flagged["flag"].id
    margins = [r.severity.margin for r in everything[1:]]
    assert margins == sorted(margins, reverse=True)
    pages = [triage.flag_queue(session, now=clock(), offset=o, limit=2)[0] for o in (0, 2, 4)]
    assert [r.flag.id for p in pages for r in p] == [r.flag.id for r in everything]


def test_severity_reads_the_evidence():
    def flag(reason, evidence, project_id=1):
        return WorkerFlag(id=1, account_id=1, project_id=project_id, reason=reason, evidence=evidence)

    surely = triage.severity(flag(FlagReason.GOLD_BELOW_THRESHOLD, {"threshold": 0.9, "gold_seen": 20,
                                                                    "gold_correct": 5, "n": 20}), [])
    assert surely.level == "critical" and surely.margin == pytest.approx(0.9 - 0.4687, abs=1e-3)
    # No gold: the model's upper bound stands in.
    crowd = triage.severity(flag(FlagReason.LOW_AGREEMENT, {"threshold": 0.9, "interval": [0.5, 0.95]}), [])
    assert crowd.level == "high" and crowd.margin == pytest.approx(-0.05)
    elsewhere = WorkerBlock(account_id=1, project_id=2, reason="x")
    assert not triage.severity(flag(FlagReason.MANUAL, None), [elsewhere]).contained
    assert triage.severity(flag(FlagReason.MANUAL, None, project_id=2), [elsewhere]).level == "contained"
    assert triage.severity(flag(FlagReason.GOLD_CONTESTED, {"value": "odd"}), []).margin == 0.0


# ---- the evidence ------------------------------------------------------------------------------------------------


def test_the_flag_page_draws_gold_accuracy_as_svg_with_the_data_points(client, session, clock, monkeypatch):
    gold_project(session, clock)
    worker, _, flag = spammer(client, session, clock, monkeypatch, right=2, wrong=4)
    ops_session(client, session, clock)
    html = client.get(f"/ops/flags/{flag.id}").get_data(as_text=True)
    svg = ET.fromstring(re.search(r"<svg.*?</svg>", html, re.S).group(0))  # well-formed XML
    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text.startswith("Gold accuracy over time in Sentiment of reviews")
    assert svg.get("aria-labelledby").split() == [svg.find(f"{SVG}title").get("id"), svg.find(f"{SVG}desc").get("id")]
    seen = session.scalar(select(func.count()).select_from(Answer).where(Answer.worker_id == worker.id,
                                                                         Answer.gold_correct.is_not(None)))
    points = svg.findall(f".//{SVG}circle")
    assert len(points) == seen >= 5  # the flag came once the evidence sufficed; later answers are drawn too
    values = [float(p.get("data-value")) for p in points]
    assert values[:3] == [1.0, 1.0, pytest.approx(2 / 3)] and values[-1] == pytest.approx(2 / seen)
    assert all(p.find(f"{SVG}title").text.startswith(f"Gold answer {i}") for i, p in enumerate(points, 1))
    ys = [float(p.get("cy")) for p in points]
    assert ys[0] == ys[1] < ys[2]  # lower accuracy is drawn lower
    threshold = svg.find(f".//{SVG}line[@class='threshold']")
    assert threshold is not None and "minimum 90%" in "".join(svg.itertext())
    assert svg.find(f".//{SVG}polygon[@class='band']") is not None
    # The text fallback: the same numbers in a table.
    table = re.search(r'<table id="chart-table">.*?</table>', html, re.S).group(0)
    assert table.count("<tr>") == seen + 1 and "67%" in table
    # Beside the gold answers: the worker's answers, the known answers (ops see gold: it is the evidence).
    answers = re.search(r'<table id="gold-answers">.*?</table>', html, re.S).group(0)
    assert answers.count('class="wrong"') == 4 and answers.count('class="right"') == 2
    assert "Wilson 95% interval" in html and "Project's median" in html and "Agreement" in html
    assert "<script" not in html and "style=" not in html  # CSP: no inline script or style


def test_a_flag_that_does_not_exist_is_404(client, session, clock):
    ops_session(client, session, clock)
    assert client.get("/ops/flags/999999").status_code == 404
    token = csrf(client, "/ops")
    assert client.post("/ops/flags/999999/dismiss", data={"csrf_token": token, "note": "x"}).status_code == 404


# ---- deciding ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("note", ["", "   "])
def test_every_decision_needs_a_note_and_a_refusal_changes_nothing(client, session, clock, flagged, note):
    fid = flagged["flag"].id
    ops_session(client, session, clock)
    token = csrf(client, f"/ops/flags/{fid}")
    blocks = session.scalar(select(func.count()).select_from(WorkerBlock))
    for action, extra in (("block", {"scope": "project"}), ("dismiss", {})):
        resp = client.post(f"/ops/flags/{fid}/{action}", data={"csrf_token": token, "note": note, **extra})
        html = resp.get_data(as_text=True)
        assert resp.status_code == 422 and "A note is required" in html and "Nothing was changed" in html, action
        assert state(session, fid) == FlagState.OPEN and [a for a, _ in events(session, fid)] == ["opened"]
    assert session.scalar(select(func.count()).select_from(WorkerBlock)) == blocks
    resp = client.post(f"/ops/flags/{fid}/block", data={"csrf_token": token, "note": "spam", "scope": "galaxy"})
    assert resp.status_code == 422 and state(session, fid) == FlagState.OPEN
    past = (clock() - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    resp = client.post(f"/ops/flags/{fid}/block", data={"csrf_token": token, "note": "spam", "scope": "project",
                                                        "expires_at": past})
    assert resp.status_code == 422 and "must end in the future" in resp.get_data(as_text=True)
    assert state(session, fid) == FlagState.OPEN and [a for a, _ in events(session, fid)] == ["opened"]
    assert client.post(f"/ops/flags/{fid}/block", data={"note": "spam", "scope": "project"}).status_code == 400


def test_block_unblock_and_dismiss_change_state_exactly_as_the_api(client, session, clock, flagged, monkeypatch):
    """The page and the API side by side: two flags, one decided through each, end the same (state, block, trail,
    effect on the worker's answers)."""
    page_flag = flagged["flag"]
    _, _, api_flag = spammer(client, session, clock, monkeypatch)
    ops = ops_session(client, session, clock)
    _, ops_token = account(session, Role.OPS, now=clock())
    token = csrf(client, f"/ops/flags/{page_flag.id}")
    until = (clock() + dt.timedelta(days=2)).replace(second=0, microsecond=0)  # the form's minutes

    def compare(action, form, body):
        resp = client.post(f"/ops/flags/{page_flag.id}/{action}", data={"csrf_token": token, **form})
        assert resp.status_code == 302 and resp.headers["Location"] == f"/ops/flags/{page_flag.id}"
        api = client.post(f"/api/v1/ops/flags/{api_flag.id}/{action}", json=body, headers=auth(ops_token))
        assert api.status_code == 200, api.get_json()
        session.expire_all()
        mine, theirs = session.get(WorkerFlag, page_flag.id), session.get(WorkerFlag, api_flag.id)
        assert mine.state == theirs.state
        strip = [(a, n) for a, n in events(session, page_flag.id)]
        assert strip == [(a, n) for a, n in events(session, api_flag.id)]
        if mine.block_id:
            b1, b2 = session.get(WorkerBlock, mine.block_id), session.get(WorkerBlock, theirs.block_id)
            assert (b1.project_id, b1.expires_at, b1.reason, b1.lifted_at is None) == (
                b2.project_id, b2.expires_at, b2.reason, b2.lifted_at is None)
        return mine

    mine = compare("block", {"scope": "project", "expires_at": until.strftime("%Y-%m-%dT%H:%M"),
                             "note": "answers gold wrong"},
                   {"scope": "project", "expires_at": until.isoformat(), "reason": "answers gold wrong"})
    assert mine.state == FlagState.BLOCKED
    actions = [a for a, _ in events(session, page_flag.id)]
    assert actions == ["opened", "blocked", "applied"]
    assert session.scalar(select(WorkerFlagEvent.actor_id).where(WorkerFlagEvent.flag_id == page_flag.id,
                                                                 WorkerFlagEvent.action == "blocked")) == ops.id
    excluded = session.scalars(select(Answer.excluded_at).where(Answer.worker_id == flagged["worker"].id)).all()
    assert excluded and all(e is not None for e in excluded)
    resp = client.post("/api/v1/work/next", headers=auth(flagged["token"]))
    assert resp.status_code == 403 and resp.get_json()["reason"] == "blocked"
    html = client.get(f"/ops/flags/{page_flag.id}").get_data(as_text=True)
    assert "The worker is blocked" in html and "answers gold wrong" in html  # the flash, the trail

    mine = compare("unblock", {"note": "a second look: honest mistakes"}, {"reason": "a second look: honest mistakes"})
    assert mine.state == FlagState.OPEN
    assert [a for a, _ in events(session, page_flag.id)][-2:] == ["unblocked", "restored"]
    mine = compare("dismiss", {"note": "resolved with the worker"}, {"reason": "resolved with the worker"})
    assert mine.state == FlagState.DISMISSED
    # A move that makes no sense now is refused on the page, as the API's 409, and changes nothing.
    before = events(session, page_flag.id)
    resp = client.post(f"/ops/flags/{page_flag.id}/dismiss", data={"csrf_token": token, "note": "again"})
    assert resp.status_code == 409 and "Cannot dismiss a flag that is dismissed" in resp.get_data(as_text=True)
    assert events(session, page_flag.id) == before


def test_a_block_from_all_work_by_the_page(client, session, clock, flagged):
    fid = flagged["flag"].id
    ops_session(client, session, clock)
    token = csrf(client, f"/ops/flags/{fid}")
    resp = client.post(f"/ops/flags/{fid}/block", data={"csrf_token": token, "scope": "all", "note": "spam"})
    assert resp.status_code == 302
    session.expire_all()
    block = session.get(WorkerBlock, session.get(WorkerFlag, fid).block_id)
    assert block.project_id is None and block.expires_at is None and block.reason == "spam"


# ---- in a real browser -------------------------------------------------------------------------------------------


def test_ops_block_a_flagged_spammer_from_the_queue_in_a_browser(app, client, session, clock, monkeypatch,
                                                                 live_server, page):
    page, problems = page
    proj = gold_project(session, clock)
    honest, _ = account(session, Role.WORKER, now=clock())
    _raise(session, clock, honest, proj, FlagReason.FREQUENT_RETURNS,
           {"metric": "return_rate", "value": 0.4, "threshold": 0.3, "n": 25})
    worker, worker_token, flag = spammer(client, session, clock, monkeypatch, wrong=5)
    ops, _ = account(session, Role.OPS, now=clock())
    log_in(page, live_server, with_password(app, session, ops))
    assert page.url == live_server + "/ops"
    first = page.locator("table.queue tbody tr").first
    assert first.get_attribute("data-flag-id") == str(flag.id)  # the spammer, above the earlier, milder flag
    assert worker.username in first.inner_text() and "critical" in first.inner_text()
    audit(page, "flag-queue")

    first.get_by_role("link", name=f"Flag #{flag.id}").click()
    page.wait_for_url(f"{live_server}/ops/flags/{flag.id}")
    chart = page.get_by_role("img", name=re.compile("Gold accuracy over time"))
    assert chart.is_visible() and chart.locator("circle").count() == 5
    audit(page, "flag-detail")

    # Keyboard only. An empty note: the browser's own required check stops the form.
    page.get_by_role("button", name="Block worker").focus()
    page.keyboard.press("Enter")
    assert page.locator("#block-note:invalid").count() == 1 and page.url.endswith(f"/ops/flags/{flag.id}")
    # Blanks pass the browser's check; the page refuses them, says why, and nothing changes.
    page.locator("#block-note").focus()
    page.keyboard.type("   ")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/ops/flags/{flag.id}/block")
    assert "Nothing was changed" in page.get_by_role("alert").inner_text()
    assert page.locator("#flag-state").inner_text() == "open"
    assert page.locator("#block-note").get_attribute("aria-invalid") == "true"
    page.locator("#block-note").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("answers every gold item wrong")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/ops/flags/{flag.id}")
    assert page.locator("#flag-state").inner_text() == "blocked"
    assert "answers every gold item wrong" in page.locator("#trail").inner_text()

    resp = client.post("/api/v1/work/next", headers=auth(worker_token))
    assert resp.status_code == 403 and resp.get_json()["reason"] == "blocked"

    page.get_by_role("link", name=worker.username).click()
    page.wait_for_url(f"{live_server}/ops/workers/{worker.id}")
    assert "in force" in page.locator("#blocks").inner_text()
    audit(page, "ops-worker")
    # Chromium logs the refused form's 422 as a failed resource; nothing else went wrong (CSP included).
    assert problems == ["console error: Failed to load resource: the server responded with a status of 422 "
                        "(UNPROCESSABLE ENTITY)"]


def test_the_projects_median_is_the_other_workers_median_as_the_rules_measure_it(session, clock, flagged):
    proj, spam = flagged["project"], flagged["worker"]
    for ms in (3000, 9000, 6000):
        worker, _ = account(session, Role.WORKER, now=clock())
        session.add(WorkerStats(worker_id=worker.id, project_id=proj.id, median_ms=ms, updated_at=clock()))
    session.flush()
    assert spam_median(session, spam.id, proj.id) == 5000  # the spammer's own record (5 s a task)
    assert triage.project_median_ms(session, project_id=proj.id, excluding=spam.id) == 6000
    assert triage.project_median_ms(session, project_id=proj.id) == 5000  # median_low of 3, 5, 6, 9 s


def spam_median(session, worker_id, project_id):
    return session.get(WorkerStats, (worker_id, project_id)).median_ms


def test_the_queue_pages_keep_the_filters(client, session, clock, flagged, monkeypatch):
    from console import flags as pages

    monkeypatch.setattr(pages, "PER_PAGE", 2)
    proj = flagged["project"]
    for n in range(3):
        worker, _ = account(session, Role.WORKER, now=clock())
        _raise(session, clock, worker, proj, FlagReason.FAST_ANSWERS,
               {"metric": "fast_share", "value": 0.9 - n / 10, "threshold": 0.5, "n": 20})
    ops_session(client, session, clock)
    first = client.get("/ops", query_string={"reason": "FAST_ANSWERS"}).get_data(as_text=True)
    assert "3 flags, page 1 of 2" in first and 'rel="prev"' not in first
    link = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert "reason=FAST_ANSWERS" in link and "page=2" in link
    second = client.get(link).get_data(as_text=True)
    ids = re.findall(r'data-flag-id="(\d+)"', first) + re.findall(r'data-flag-id="(\d+)"', second)
    expected = [r.flag.id for r in triage.flag_queue(session, now=clock(), reason=FlagReason.FAST_ANSWERS)[0]]
    assert [int(i) for i in ids] == expected and len(expected) == 3
    assert 'rel="prev"' in second and 'rel="next"' not in second
