"""The two end-to-end journeys of issue #9, one page after another as real users go, in Chromium.

The worker: signs up, passes the qualification test a project requires, labels a HIT with the keyboard only, loses
the network for one submit (stored once all the same), misses a gold item and sees the feedback, contests it; the
requester approves the batch in bulk in a second browser context; the worker sees the pay on the earnings page.
Every response the worker's browser received is scanned for the gold items' secrets before the gold was answered.

Ops: the flag queue shows the spammer first, ops block them with a note, the spammer's next task request is refused;
a payout batch holds the spammer back, pays the honest worker, is approved and marked paid, and the books balance.

Set CROWDMARKET_SCREENSHOTS=docs/screenshots to also write the README's two screenshots (viewport, not full page)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import expect
from sqlalchemy import select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Answer, Assignment, AssignmentStatus, Item
from market.quality.models import GoldDispute
from payments import ledger
from payments.models import AssignmentPay
from payments.review.approve import approve
from tests.browser import audit, log_in, watched, with_password
from tests.console.money_support import browser_log_in
from tests.console.ops_setup import gold_project, spammer, task
from tests.console.test_work_page import contest, held, painted, quiet, stored
from tests.console.work_setup import EXPLANATION, GOLD
from tests.console.worker_setup import KNOWN, QUESTIONS, qualification_type
from tests.factories import account, auth, jsonl, project
from workers import flags
from workers.models import Account, FlagReason

SCREENSHOTS = os.environ.get("CROWDMARKET_SCREENSHOTS")
TEXT_TYPES = ("document", "script", "stylesheet", "fetch", "xhr")


def screenshot(page, name: str) -> None:
    """The README's screenshots, when asked for: the 1280x800 viewport (small PNGs), not the full page."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def worker_payable(session, worker_id: int) -> int:
    return ledger.balance(session, ledger.payable(worker_id, "USD"))


# ---- the gold-leak scanner ----------------------------------------------------------------------------------------

# Where a known answer would sit if a response gave it away: a field naming the right answer, in JSON or HTML.
ANSWER_FIELD = r"""["']?(?:data-)?(?:correct[_-]?answer|gold[_-]?answer|known[_-]?answer|expected|truth|is[_-]?gold)"""


def leaks(body: str, known: list[str], explanations: list[str]) -> list[str]:
    """What in `body` would tell a worker which items are gold or what their answers are (text checks)."""
    found = [f"the word {w!r}" for w in ("is_gold", "gold_answer", "gold") if w in body.lower()]
    found += [f"the explanation {e!r}" for e in explanations if e in body]
    for value in set(known):
        if re.search(ANSWER_FIELD + rf"""["']?\s*[:=]\s*["']?{re.escape(value)}\b""", body, re.I):
            found.append(f"the known answer {value!r} in an answer field")
    return found


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _values(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _values(v)
    elif isinstance(node, list):
        for v in node:
            yield from _values(v)
    else:
        yield node


def gold_positions(docs: list, gold: dict[str, str]) -> dict[int, list[str]]:
    """Structural check of JSON bodies, by index in `docs`: a known answer (`gold`: item text -> answer) beside a
    gold item (in its object, or in any object naming its public id, whichever response carried the item) or among
    the answers of a task that carries it."""
    ids = {d["id"]: gold[d["data"]["text"]] for doc in docs for d in _walk(doc)
           if isinstance(d.get("data"), dict) and d["data"].get("text") in gold and "id" in d}
    found: dict[int, list[str]] = {}
    for n, doc in enumerate(docs):
        for d in _walk(doc):
            for ref in {d.get("id"), d.get("item_id")} & set(ids):
                if ids[ref] in set(_values({k: v for k, v in d.items() if k != "data"})):
                    found.setdefault(n, []).append(f"item {ref}'s known answer beside it")
            items = d.get("items") if isinstance(d.get("items"), list) else []
            if any(isinstance(i, dict) and i.get("id") in ids for i in items) and \
                    set(_values(d.get("answers"))) & set(ids.values()):
                found.setdefault(n, []).append("a known answer among the answers of a task carrying gold")
    return found


class Seen:
    """A response as the browser received it: its body read at once (a page navigated away from loses it)."""

    def __init__(self, response) -> None:
        self.url, self.kind, self.status = response.url, response.request.resource_type, response.status
        self.path = urlsplit(self.url).path
        self.body = response.text() if self.kind in TEXT_TYPES and not 300 <= self.status < 400 else ""


def scan(responses: list[Seen], known: list[str], explanations: list[str]) -> dict[str, list[str]]:
    """The leaks of each recorded text response (HTML, JSON, scripts, styles), by URL: text checks on each, and
    the structural check across the JSON ones (a gold item's id in one response, its answer in another)."""
    out = {r.url: found for r in responses if (found := leaks(r.body, known, explanations))}
    json_ones = [r for r in responses if r.kind in ("fetch", "xhr") and r.body[:1] in ("{", "[")]
    found = gold_positions([json.loads(r.body) for r in json_ones], {text: answer for _, text, answer in GOLD})
    for n, what in found.items():
        out.setdefault(json_ones[n].url, []).extend(what)
    return out


def prove_the_scanner_catches_a_planted_leak(page, responses: list, known: list[str]) -> None:
    """Plant five leaks (and one look-alike that is none) through the very recording the journey uses: each leak
    must be caught, then the planted responses are forgotten."""
    planted = {"/journey-planted/answer.json": json.dumps({"items": [{"id": "x", "correct_answer": known[0]}]}),
               "/journey-planted/explained.html": f"<p>{EXPLANATION}</p>",
               "/journey-planted/flag.json": json.dumps({"items": [{"id": "x", "is_gold": True}]}),
               "/journey-planted/task.json": json.dumps({"task": {"items": [{"id": 77, "data": {"text": GOLD[0][1]}}],
                                                                  "answers": [known[0], None]}}),
               "/journey-planted/later.json": json.dumps({"hints": [{"item_id": 77, "answer": known[0]}]}),
               # the worker's own answer on a real item, in the words a submit's result uses: no leak
               "/journey-planted/clean.json": json.dumps({"result": {"answers": [{"item_id": 5, "answer": known[0]}]}})}
    page.route("**/journey-planted/**", lambda r: r.fulfill(
        status=200, body=planted[urlsplit(r.request.url).path],
        content_type="text/html" if r.request.url.endswith(".html") else "application/json"))
    before = len(responses)
    for path in planted:
        with page.expect_response(f"**{path}"):
            page.evaluate("p => fetch(p).then(r => r.text())", path)
    page.unroute("**/journey-planted/**")
    caught = scan(responses[before:], known, [EXPLANATION])
    assert {urlsplit(u).path for u in caught} == set(planted) - {"/journey-planted/clean.json"}, caught
    assert "the known answer 'neg' in an answer field" in caught[next(u for u in caught if "answer.json" in u)]
    del responses[before:]


# ---- journey 1: the worker ----------------------------------------------------------------------------------------


def gated_gold_project(app, session, clock):
    """A funded requester's published project of 2-item HITs (12 cents each) with a 2-item gold HIT, gold feedback
    on, whose work needs a pass on the requester's qualification test; the requester has a password."""
    owner, _ = account(session, Role.REQUESTER, now=clock())
    qtype = qualification_type(session, owner, clock())
    reqs = [{"qualification_id": qtype.id, "comparator": "GreaterThanOrEqualTo", "values": [70]}]
    proj = project(session, owner, now=clock(), title="Review sentiment", items_per_hit=2, assignments_per_item=1,
                   reward_cents=12, gold_rate=Decimal("0.10"), gold_feedback=True,
                   instructions="Pick the sentiment.", qualification_requirements=reqs)
    records = [{"external_id": f"r{i}", "data": {"text": f"Review number {i}: it was fine."}} for i in range(6)]
    records += [{"external_id": e, "data": {"text": text}, "gold": answer, "explanation": EXPLANATION}
                for e, text, answer in GOLD]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    session.commit()
    return owner, with_password(app, session, owner), qtype, proj


def label_hit(page, keys: str) -> None:
    """Keyboard only: a number key per item, then Enter submits."""
    for key in keys:
        page.keyboard.press(key)
    expect(page.locator("#confirm")).to_have_text("Submit answers (Enter)")
    page.keyboard.press("Enter")


def next_hit(page, previous: int, session, worker_id: int, live_server: str) -> Assignment:
    expect(page.locator("#saving")).to_have_text("Saved.")
    page.locator("#task").wait_for(state="visible")
    lease = held(session, worker_id, live_server)
    assert lease is not None and lease.id != previous
    return lease


def test_the_workers_journey_from_sign_up_to_earnings(app, session, clock, browser, page, live_server, turns):
    owner, owner_login, qtype, proj = gated_gold_project(app, session, clock)
    tab, problems = page
    tab.set_viewport_size({"width": 1280, "height": 800})
    responses: list[Seen] = []  # every response the worker's browser context receives, from the sign-up page on
    tab.context.on("response", lambda r: responses.append(Seen(r)))
    known = [answer for _, _, answer in GOLD]

    # Sign up; the dashboard shows the project and the test it requires.
    tab.goto(live_server + "/signup")
    prove_the_scanner_catches_a_planted_leak(tab, responses, known)
    audit(tab, "journey-signup")
    tab.get_by_label("Username").fill("journeyer")
    tab.get_by_label("Password").fill("correct horse battery")
    tab.get_by_role("button", name="Sign up").click()
    tab.wait_for_url(live_server + "/work")
    card = tab.locator(f"#project-{proj.id}")
    assert "Review sentiment" in card.inner_text() and "Sentiment screener" in card.inner_text()
    assert "Not taken yet" in card.inner_text()
    assert card.get_by_role("link", name=re.compile("Start working")).count() == 0
    audit(tab, "journey-dashboard")

    # The qualification test, keyboard only, passed.
    card.get_by_role("link", name="Take the test").focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url(f"{live_server}/work/qualifications/{qtype.id}")
    audit(tab, "journey-qualification")
    tab.get_by_role("button", name="Start the test").focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url(re.compile(r".*/work/qualifications/attempts/\d+$"))
    audit(tab, "journey-qualification-test")
    tab.locator("main").focus()
    for n, key in enumerate(KNOWN):
        tab.keyboard.press("Tab")
        assert QUESTIONS[n] in tab.get_by_role("group", name=f"Question {n + 1} of 3").inner_text()
        for _ in range(["pos", "neg", "neu"].index(key)):
            tab.keyboard.press("ArrowDown")
        tab.keyboard.press("Space")
    tab.keyboard.press("Tab")
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#score")
    assert tab.locator("#score").inner_text() == "100%" and "passed" in tab.locator("#result").inner_text()
    audit(tab, "journey-qualification-result")

    # The project opens; the work page from the dashboard's link, by keyboard.
    tab.goto(live_server + "/work")
    card = tab.locator(f"#project-{proj.id}")
    assert "Passed" in card.inner_text()
    card.get_by_role("link", name=re.compile("Start working")).focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url(f"{live_server}/work/tasks?project_id={proj.id}")
    painted(tab)
    worker = session.scalar(select(Account).where(Account.username == "journeyer"))
    first = held(session, worker.id, live_server)
    assert not first.is_gold and tab.locator("#position").inner_text() == "item 1 of 2"
    audit(tab, "journey-work-page")
    screenshot(tab, "work-page")

    # HIT 1, keyboard only.
    label_hit(tab, "12")
    second = next_hit(tab, first.id, session, worker.id, live_server)
    assert [(a.assignment_id, a.value) for a in stored(session, worker.id, live_server)] == \
        [(first.id, "pos"), (first.id, "neg")]

    # HIT 2: the network drops the submit once; the page retries it and the worker goes on. The HIT leased in its
    # response is the gold one (scripted).
    turns.append(True)
    sent = []

    def lossy(route) -> None:
        sent.append(route.request.post_data)
        route.fallback() if len(sent) > 1 else route.abort()

    tab.route("**/work/tasks/*/submit*", lossy)
    label_hit(tab, "31")
    gold = next_hit(tab, second.id, session, worker.id, live_server)
    tab.unroute("**/work/tasks/*/submit*")
    assert len(sent) == 2 and sent[0] == sent[1]  # the very same request, sent again
    answers = stored(session, worker.id, live_server)
    assert [(a.assignment_id, a.value) for a in answers if a.assignment_id == second.id] == \
        [(second.id, "neu"), (second.id, "pos")]  # stored exactly once
    assert gold.is_gold

    # The gold HIT: both answered wrong. Nothing received so far gives the gold away.
    tab.keyboard.press("1")
    tab.keyboard.press("3")
    tab.wait_for_load_state("networkidle")
    before_gold = list(responses)
    assert scan(before_gold, known, [EXPLANATION]) == {}
    paths = {r.path for r in before_gold}
    assert {"/signup", "/work", f"/work/qualifications/{qtype.id}", "/work/tasks", "/work/tasks/next",
            f"/work/tasks/{second.id}/submit", "/static/work/task.js"} <= paths, paths
    assert any(GOLD[0][1] in r.body for r in before_gold if r.kind == "fetch")  # it was shown
    tab.keyboard.press("Enter")
    tab.locator("#feedback").wait_for(state="visible")
    missed = tab.locator("article.missed")
    assert missed.count() == 2
    assert missed.first.locator(".correct").inner_text() == "Correct answer: Negative"
    assert EXPLANATION in missed.first.inner_text() and "Your answer: Positive" in missed.first.inner_text()
    audit(tab, "journey-gold-feedback")

    # Contest the first miss.
    contest(missed.first, "It is praise, read it again.")
    quiet(live_server)
    session.expire_all()
    [dispute] = session.scalars(select(GoldDispute).where(GoldDispute.worker_id == worker.id))
    assert (dispute.assignment_id, dispute.note) == (gold.id, "It is praise, read it again.")
    tab.get_by_role("button", name="Continue to the next task").click()
    tab.locator("#task").wait_for(state="visible")
    fourth = held(session, worker.id, live_server)
    assert fourth is not None and fourth.id != gold.id

    # The requester, in a browser context of their own, approves the batch's submitted work in bulk.
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    req = context.new_page()
    req_problems = watched(req, live_server)
    browser_log_in(req, live_server, owner_login, "/requester")
    audit(req, "journey-requester-projects")
    req.get_by_role("link", name="Review sentiment").click()
    req.wait_for_url(f"**/requester/projects/{proj.id}")
    req.get_by_label("Yes, approve and pay all 3").check()
    audit(req, "journey-requester-project")
    req.get_by_role("button", name=re.compile("Approve all submitted work in batch")).click()
    req.wait_for_selector("text=Approved 3 assignment(s)")
    context.close()
    assert req_problems == []
    quiet(live_server)
    session.expire_all()
    mine = [first.id, second.id, gold.id]
    assert [session.get(Assignment, a).status for a in mine] == [AssignmentStatus.APPROVED] * 3

    # The worker's earnings: the reward of each approved assignment (and a top-up where one was paid).
    tab.get_by_role("navigation", name="Main").get_by_role("link", name="Earnings").click()
    tab.wait_for_url(live_server + "/work/earnings")
    for a in mine:
        row = tab.locator(f"#a{a}").inner_text()
        assert "approved" in row and "$0.12" in row, row
        pay = session.scalar(select(AssignmentPay).where(AssignmentPay.assignment_id == a))
        assert pay is not None and pay.reward_cents == 12
        if pay.top_up_cents:
            assert "Fair-wage top-up" in row
    assert tab.locator(".payable").inner_text() == "$0.36"
    audit(tab, "journey-earnings")

    # After the gold answer: its feedback alone shows the correct answer and the explanation; nothing else does.
    after = responses[len(before_gold):]
    graded = [r for r in after if r.path == f"/work/tasks/{gold.id}/submit"]
    assert len(graded) == 1 and leaks(graded[0].body, known, [EXPLANATION])  # the feedback: allowed, and scanned
    assert scan([r for r in after if r not in graded], known, [EXPLANATION]) == {}
    assert len(session.scalars(select(Answer).where(Answer.worker_id == worker.id)).all()) == 6
    assert session.scalar(select(Item.id).where(Item.id == dispute.item_id, Item.is_gold))
    # Chromium logs the one dropped submit as a failed resource; nothing else went wrong (CSP included).
    assert problems == ["console error: Failed to load resource: net::ERR_FAILED"]


# ---- journey 2: ops ------------------------------------------------------------------------------------------------


def test_the_ops_journey_from_the_flag_queue_to_a_paid_payout(app, client, session, clock, page, live_server,
                                                              monkeypatch):
    proj = gold_project(session, clock)
    honest, honest_token = account(session, Role.WORKER, now=clock())
    for _ in range(2):  # real work (no gold turn), answered and later approved
        task(client, session, clock, honest_token, correct=True)
    milder, _ = account(session, Role.WORKER, now=clock())  # an earlier, milder flag: the spammer must outrank it
    flags.raise_flag(session, worker_id=milder.id, project_id=proj.id, reason=FlagReason.FREQUENT_RETURNS,
                     note="returns a lot", evidence={"metric": "return_rate", "value": 0.4, "threshold": 0.3,
                                                      "n": 25}, now=clock())
    spam, spam_token, flag = spammer(client, session, clock, monkeypatch, wrong=5)
    # The requester approves everything submitted: both workers have earnings, the spammer's to be held back.
    submitted = list(session.scalars(select(Assignment.id).where(Assignment.project_id == proj.id,
                                                                 Assignment.status == AssignmentStatus.SUBMITTED)))
    approve(session, actor=session.get(Account, proj.owner_id), now=clock(), assignment_ids=submitted)
    ops, _ = account(session, Role.OPS, now=clock())
    ops_login = with_password(app, session, ops)
    session.commit()
    payable = {w.id: worker_payable(session, w.id) for w in (honest, spam)}
    assert all(payable.values()), payable

    tab, problems = page
    tab.set_viewport_size({"width": 1280, "height": 800})
    log_in(tab, live_server, ops_login)
    assert tab.url == live_server + "/ops"
    rows = tab.locator("table.queue tbody tr")
    assert rows.count() == 2 and rows.first.get_attribute("data-flag-id") == str(flag.id)
    assert spam.username in rows.first.inner_text() and "critical" in rows.first.inner_text()
    audit(tab, "journey-flag-queue")
    screenshot(tab, "flag-queue")

    rows.first.get_by_role("link", name=f"Flag #{flag.id}").click()
    tab.wait_for_url(f"{live_server}/ops/flags/{flag.id}")
    audit(tab, "journey-flag")
    tab.locator("#block-note").fill("answers every gold item wrong")
    tab.get_by_role("button", name="Block worker").click()
    tab.wait_for_url(f"{live_server}/ops/flags/{flag.id}")
    assert tab.locator("#flag-state").inner_text() == "blocked"
    assert "answers every gold item wrong" in tab.locator("#trail").inner_text()
    quiet(live_server)
    refused = client.post("/api/v1/work/next", headers=auth(spam_token))
    assert refused.status_code == 403 and refused.get_json()["reason"] == "blocked"

    # Payouts: a batch pays the honest worker and holds the blocked spammer back, saying why.
    tab.get_by_role("navigation", name="Main").get_by_role("link", name="Payouts").click()
    tab.wait_for_url(live_server + "/ops/payouts")
    tab.get_by_label("Period end (UTC)").fill((clock() + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    tab.get_by_label("Minimum payout (cents)").fill("1")
    audit(tab, "journey-payouts")
    tab.get_by_role("button", name="Create payout batch").click()
    tab.wait_for_url(re.compile(r".*/ops/payouts/\d+$"))
    lines = {r.locator("td").nth(1).inner_text(): r.inner_text() for r in tab.locator("#lines tbody tr").all()}
    assert set(lines) == {honest.username, spam.username}, lines
    assert f"${payable[honest.id] // 100}.{payable[honest.id] % 100:02d}" in lines[honest.username]
    assert "pending" in lines[honest.username]
    assert "held" in lines[spam.username] and f"flag {flag.id} (blocked)" in lines[spam.username]
    assert f"flag {flag.id} (blocked)" in tab.locator("#held").inner_text()
    audit(tab, "journey-payout-draft")
    tab.get_by_role("button", name="Approve").click()
    tab.wait_for_selector("text=approved.")
    assert tab.locator("#batch-status").inner_text() == "approved"
    tab.get_by_label("Payment reference").fill("WIRE-9")
    tab.get_by_role("button", name="Mark paid").click()
    tab.wait_for_selector("text=marked paid")
    assert tab.locator("#batch-status").inner_text() == "paid"
    lines = {r.locator("td").nth(1).inner_text(): r.inner_text() for r in tab.locator("#lines tbody tr").all()}
    assert "paid" in lines[honest.username] and "held" in lines[spam.username]
    assert tab.locator("#reconciliation").inner_text().strip() == "The books balance."
    assert tab.locator("#reconciliation").get_attribute("class") == "ok"
    audit(tab, "journey-payout-paid")
    quiet(live_server)
    session.expire_all()
    assert worker_payable(session, honest.id) == 0 and worker_payable(session, spam.id) == payable[spam.id]
    assert problems == []
