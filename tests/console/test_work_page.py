"""The work page in a real browser (Chromium): keyboard-only labeling of 2-item HITs, the next HIT without a page
load, submits that survive a failing network, gold feedback and contesting it, shortcuts off, returning, the
lease countdown, the guidelines banner, and no gold leaking before the worker answered."""

from __future__ import annotations

import urllib.request

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from market.catalogue.models import Answer, Assignment, AssignmentStatus
from market.quality.models import GoldDispute
from tests.browser import audit, log_in
from tests.console.work_setup import EXPLANATION, GOLD, work_world
from tests.factories import auth


def open_work(page, live_server: str, login: str) -> None:
    log_in(page, live_server, login)
    page.goto(live_server + "/work/tasks")
    painted(page)


def painted(page) -> None:
    """Wait for the task to be painted and the page's requests to end: the live server shares the test's database
    connection, so the test reads the database only while the server is idle."""
    try:
        page.locator("#task").wait_for(state="visible")
    except Exception as exc:  # say what the page showed instead
        raise AssertionError(f"no task painted: {page.locator('#work').inner_text()!r}") from exc
    page.wait_for_load_state("networkidle")


def shown(page) -> tuple[str, str]:
    """(item k, the item's text) as painted."""
    return page.locator("#item-k").inner_text(), page.locator("#item-body").inner_text()


def quiet(live_server: str) -> None:
    """Return once the live server has finished everything it was doing: it serves one request at a time and
    judges workers after a response is sent (market/quality/evaluation.py, inline in tests), on the test's own
    database connection; so the test touches the database only after a request of its own came back."""
    with urllib.request.urlopen(live_server + "/static/base.css") as resp:
        resp.read()


def contest(missed, note: str) -> None:
    """Contest a missed gold item from its feedback, and wait until the page says it was filed."""
    missed.get_by_role("button", name="Contest this answer").click()
    missed.get_by_label("Why is the correct answer wrong?").fill(note)
    missed.get_by_role("button", name="Send").click()
    missed.get_by_text("Contest filed (open)").wait_for()


def held(session, worker_id: int, live_server: str) -> Assignment:
    quiet(live_server)
    session.expire_all()
    return session.scalar(select(Assignment).where(Assignment.worker_id == worker_id,
                                                   Assignment.status == AssignmentStatus.LEASED))


def stored(session, worker_id: int, live_server: str) -> list[Answer]:
    quiet(live_server)
    session.expire_all()
    return list(session.scalars(select(Answer).where(Answer.worker_id == worker_id).order_by(Answer.id)))


def wait_for_next_hit(page, previous: int, session, worker_id: int, live_server: str) -> Assignment:
    expect(page.locator("#saving")).to_have_text("Saved.")
    page.locator("#task").wait_for(state="visible")
    lease = held(session, worker_id, live_server)
    assert lease is not None and lease.id != previous
    return lease


def test_a_worker_labels_a_hit_with_the_keyboard_and_the_next_appears_without_a_page_load(
        app, session, clock, page, live_server):
    page, problems = page
    w = work_world(app, session, clock)
    open_work(page, live_server, w.login)
    page.evaluate("window.__loaded = 'once'")
    first = held(session, w.worker.id, live_server)
    assert page.locator("#position").inner_text() == "item 1 of 2"
    assert page.locator("#reward").inner_text() == "$0.12"
    assert page.locator("#hourly-rate").inner_text().startswith("$14.40 per hour (estimated")
    assert page.locator("#guidelines summary").inner_text() == "Guidelines v1"
    assert page.locator("#guidelines-changed").is_hidden()
    assert page.locator("#answers-today").inner_text() == "0"
    audit(page, "work-page")
    k, text_1 = shown(page)
    assert k == "1" and page.locator("button.label").first.inner_text().startswith("1")
    page.keyboard.press("1")  # Positive: item 2 is there at once
    k, text_2 = shown(page)
    assert k == "2" and text_2 != text_1 and page.locator("#position").inner_text() == "item 2 of 2"
    page.keyboard.press("2")  # Negative, then Enter submits
    assert page.locator("#confirm").inner_text() == "Submit answers (Enter)"
    page.keyboard.press("Enter")
    second = wait_for_next_hit(page, first.id, session, w.worker.id, live_server)
    assert page.evaluate("window.__loaded") == "once"  # no navigation
    assert shown(page)[0] == "1" and shown(page)[1] not in (text_1, text_2)
    assert page.locator("#answers-today").inner_text() == "2"
    assert page.locator("#pending").inner_text() == "$0.12"
    answers = stored(session, w.worker.id, live_server)
    assert [a.value for a in answers] == ["pos", "neg"] and {a.assignment_id for a in answers} == {first.id}
    assert all(a.client_meta["source"] == "work-page" and "Chrom" in a.client_meta["user_agent"] for a in answers)
    assert all(a.guideline_version == 1 for a in answers)
    assert second.status == AssignmentStatus.LEASED
    assert problems == []


@pytest.mark.parametrize("failure", ["request lost", "response lost"])
def test_a_submit_that_fails_on_the_network_is_stored_exactly_once(app, session, clock, page, live_server,
                                                                   failure):
    page, problems = page
    w = work_world(app, session, clock)
    open_work(page, live_server, w.login)
    first = held(session, w.worker.id, live_server)
    sent = []

    def flaky(route) -> None:
        sent.append(route.request.post_data)
        if len(sent) > 1:
            route.fallback()
            return
        if failure == "response lost":
            route.fetch()  # the server stores the answers and leases the next HIT; the browser never hears it
        route.abort()

    page.route("**/work/tasks/*/submit*", flaky)
    page.keyboard.press("3")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    second = wait_for_next_hit(page, first.id, session, w.worker.id, live_server)
    assert len(sent) == 2 and sent[0] == sent[1]  # retried with the very same request
    assert page.evaluate("localStorage.getItem('crowdmarket.work.outbox')") is None
    answers = stored(session, w.worker.id, live_server)
    assert [(a.assignment_id, a.value) for a in answers] == [(first.id, "neu"), (first.id, "pos")]
    # The worker goes on: the next HIT is theirs, and it is the one lease they hold.
    assert session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.worker_id == w.worker.id)) == 2
    page.keyboard.press("1")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_next_hit(page, second.id, session, w.worker.id, live_server)
    assert len(stored(session, w.worker.id, live_server)) == 4
    assert [p for p in problems if "ERR_FAILED" not in p] == []


def test_a_submit_waiting_in_the_outbox_is_sent_after_a_reload(app, session, clock, page, live_server):
    page, problems = page
    w = work_world(app, session, clock)
    open_work(page, live_server, w.login)
    first = held(session, w.worker.id, live_server)
    page.route("**/work/tasks/*/submit*", lambda route: route.abort())
    page.keyboard.press("2")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(page.locator("#saving")).to_have_text("Saving… (retrying)")
    assert stored(session, w.worker.id, live_server) == []
    page.unroute("**/work/tasks/*/submit*")
    page.reload()  # the crash: the page is gone, the outbox is not
    wait_for_next_hit(page, first.id, session, w.worker.id, live_server)
    assert [(a.assignment_id, a.value) for a in stored(session, w.worker.id, live_server)] == [(first.id, "neg")] * 2
    assert [p for p in problems if "ERR_FAILED" not in p] == []


def test_a_missed_gold_item_shows_the_feedback_and_the_worker_contests_it(app, session, clock, page, live_server,
                                                                          turns):
    page, problems = page
    w = work_world(app, session, clock)
    turns.append(True)  # the first task is the gold HIT
    log_in(page, live_server, w.login)
    responses = []  # every response of the work page, from its load on
    page.on("response", lambda r: responses.append(r))
    page.goto(live_server + "/work/tasks")
    painted(page)
    gold = held(session, w.worker.id, live_server)
    assert gold.is_gold
    page.keyboard.press("1")  # Positive: both known answers are Negative
    page.keyboard.press("3")
    # Nothing the page received so far says which items are gold, or what their answers are.
    for resp in responses:
        if resp.request.resource_type in ("document", "script", "stylesheet", "fetch", "xhr"):
            body = resp.text()
            assert "gold" not in body.lower() and EXPLANATION not in body, resp.url
            if resp.request.resource_type in ("fetch", "xhr"):  # (the script reads feedback, once it comes)
                assert "correct_answer" not in body and "explanation" not in body, resp.url
    assert {r.url.split("?")[0].removeprefix(live_server) for r in responses} >= {
        "/work/tasks", "/work/tasks/next", "/static/work/task.js"}
    assert page.locator("#feedback").is_hidden()
    page.keyboard.press("Enter")
    page.locator("#feedback").wait_for(state="visible")
    missed = page.locator("article.missed")
    assert missed.count() == 2
    assert missed.first.locator(".correct").inner_text() == "Correct answer: Negative"
    assert EXPLANATION in missed.first.inner_text() and GOLD[0][1] in missed.first.inner_text()
    assert "Your answer: Positive" in missed.first.inner_text()
    audit(page, "work-feedback")
    contest(missed.first, "It is praise, read it again.")
    quiet(live_server)
    session.expire_all()
    [dispute] = session.scalars(select(GoldDispute).where(GoldDispute.worker_id == w.worker.id))
    assert dispute.assignment_id == gold.id and dispute.item_id == w.gold_items[0].id
    assert dispute.note == "It is praise, read it again."
    page.get_by_role("button", name="Continue to the next task").click()
    page.locator("#task").wait_for(state="visible")
    assert page.locator("#feedback").is_hidden() and shown(page)[0] == "1"
    assert problems == []


def test_a_project_without_gold_feedback_shows_none(app, session, clock, page, live_server, turns):
    page, problems = page
    w = work_world(app, session, clock, feedback=False)
    submits = []
    page.on("response", lambda r: submits.append(r) if "/submit" in r.url else None)
    turns.append(True)
    open_work(page, live_server, w.login)
    gold = held(session, w.worker.id, live_server)
    assert gold.is_gold
    page.keyboard.press("1")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_next_hit(page, gold.id, session, w.worker.id, live_server)
    assert page.locator("#feedback").is_hidden() and page.locator("article.missed").count() == 0
    [resp] = submits
    body = resp.json()
    assert body["result"]["feedback"] == [] and EXPLANATION not in resp.text()
    assert problems == []


def test_with_shortcuts_off_number_keys_do_nothing_and_buttons_work_and_return_gives_the_hit_back(
        app, session, clock, page, live_server):
    page, problems = page
    w = work_world(app, session, clock)
    open_work(page, live_server, w.login)
    page.get_by_label("Single-key shortcuts (number keys, R)").uncheck()
    page.locator("#item").focus()
    page.keyboard.press("1")
    page.keyboard.press("r")
    assert shown(page)[0] == "1" and page.locator("button.label[aria-pressed='true']").count() == 0
    assert page.locator("#return-confirm").is_hidden()
    page.get_by_role("button", name="Negative").click()
    assert shown(page)[0] == "2"
    page.reload()  # remembered
    painted(page)
    assert not page.get_by_label("Single-key shortcuts (number keys, R)").is_checked()
    first = held(session, w.worker.id, live_server)
    page.get_by_role("button", name="Return without penalty").click()
    page.get_by_role("button", name="Yes, return it").click()
    expect(page.locator("#saving")).to_have_text("Task returned.")
    quiet(live_server)
    session.expire_all()
    assert session.get(Assignment, first.id).status == AssignmentStatus.RETURNED
    nxt = held(session, w.worker.id, live_server)
    assert nxt is not None and nxt.hit_id != first.hit_id
    assert stored(session, w.worker.id, live_server) == []
    # With shortcuts on again, R then Enter on the confirmation returns by keyboard.
    page.get_by_label("Single-key shortcuts (number keys, R)").check()
    page.locator("#item").focus()
    page.keyboard.press("r")
    assert page.get_by_role("button", name="Yes, return it").evaluate("b => b === document.activeElement")
    # "Task returned." is on the page from the first return already: wait for this return's own response.
    with page.expect_response(lambda r: r.url.endswith(f"/work/tasks/{nxt.id}/return")):
        page.keyboard.press("Enter")
    expect(page.locator("#saving")).to_have_text("Task returned.")
    quiet(live_server)
    session.expire_all()
    assert session.get(Assignment, nxt.id).status == AssignmentStatus.RETURNED
    assert problems == []


def test_the_countdown_warns_before_the_lease_lapses_and_says_when_it_did(app, session, clock, page,
                                                                        live_server):
    page, problems = page
    w = work_world(app, session, clock)
    open_work(page, live_server, w.login)
    lease = held(session, w.worker.id, live_server)
    clock.advance(seconds=(lease.expires_at - clock()).total_seconds() - 70)
    page.reload()
    painted(page)
    alert = page.locator("#lease-alert")
    assert alert.is_hidden() and page.locator("#countdown").inner_text().startswith("1:")
    clock.advance(seconds=68)  # 2 s left on the server's clock
    page.reload()
    painted(page)
    assert alert.get_attribute("role") == "alert"
    assert "seconds left on this task" in alert.inner_text()
    expect(alert).to_contain_text("lapsed", timeout=5000)
    assert page.locator("#countdown").inner_text() == "0:00"
    assert problems == []


def test_the_guidelines_banner_appears_after_the_requester_publishes_new_instructions(
        app, client, session, clock, page, live_server):
    page, problems = page
    w = work_world(app, session, clock)
    open_work(page, live_server, w.login)
    first = held(session, w.worker.id, live_server)
    page.keyboard.press("1")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    second = wait_for_next_hit(page, first.id, session, w.worker.id, live_server)
    assert page.locator("#guidelines-changed").is_hidden()  # leased under v1, as the last answered
    quiet(live_server)
    resp = client.patch(f"/api/v1/projects/{w.project.id}", headers=auth(w.owner_token),
                        json={"instructions": "Pick the sentiment. Sarcasm counts as negative."})
    assert resp.status_code == 200, resp.get_json()
    page.get_by_role("button", name="Return without penalty").click()  # the next lease is under v2
    page.get_by_role("button", name="Yes, return it").click()
    expect(page.locator("#saving")).to_have_text("Task returned.")
    assert held(session, w.worker.id, live_server).id != second.id
    banner = page.locator("#guidelines-changed")
    banner.wait_for(state="visible")
    assert "Guidelines v2" in banner.inner_text()
    assert page.locator("#guidelines summary").inner_text() == "Guidelines v2"
    assert page.locator("#guidelines").evaluate("d => d.open")
    assert "Sarcasm counts as negative." in page.locator("#guidelines-text").inner_text()
    assert problems == []


def test_when_there_is_no_task_the_page_says_why_and_links_back(app, session, clock, page, live_server):
    page, problems = page
    w = work_world(app, session, clock, real=2)
    open_work(page, live_server, w.login)
    first = held(session, w.worker.id, live_server)
    page.keyboard.press("1")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.locator("#empty").wait_for(state="visible")
    assert page.get_by_role("heading", level=1).inner_text() == "No task for you right now"
    assert "fully assigned or already done" in page.locator("#empty-reason").inner_text()
    assert page.get_by_role("link", name="Back to the dashboard").get_attribute("href") == "/work"
    answers = stored(session, w.worker.id, live_server)
    assert [a.assignment_id for a in answers] == [first.id, first.id]
    audit(page, "work-empty")
    assert problems == []



PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5"
         "ErkJggg==")
TAGS = {"type": "multi_choice", "min_choices": 1, "max_choices": 2,
        "categories": [{"key": "cat", "name": "Cat"}, {"key": "dog", "name": "Dog"}, {"key": "car", "name": "Car"}]}


def test_multi_choice_labels_toggle_by_key_and_images_show_with_their_alt_text(app, session, clock, page,
                                                                              live_server):
    page, problems = page
    data = [{"image_url": PIXEL, "alt": f"Photo {i} of a street"} for i in range(4)]
    w = work_world(app, session, clock, data=data, label_schema=TAGS)
    open_work(page, live_server, w.login)
    first = held(session, w.worker.id, live_server)
    image = page.locator("#item-body img")
    assert image.get_attribute("alt") == "Photo 0 of a street" and image.evaluate("i => i.naturalWidth") == 1
    audit(page, "work-multi-choice")
    page.keyboard.press("1")
    page.keyboard.press("3")
    page.keyboard.press("2")  # a third label: refused, at most 2
    assert page.locator("#answer-error").inner_text() == "Choose at most 2 labels."
    page.keyboard.press("3")  # toggled off again
    assert page.locator("button.label[aria-pressed='true']").all_inner_texts() == ["1 Cat"]
    page.keyboard.press("Enter")  # multi-choice waits for Enter on every item
    assert page.get_by_role("img").get_attribute("alt") == "Photo 1 of a street"
    page.keyboard.press("Enter")  # nothing chosen: at least one is needed
    assert page.locator("#answer-error").inner_text() == "Choose at least 1 label."
    page.keyboard.press("3")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    wait_for_next_hit(page, first.id, session, w.worker.id, live_server)
    assert [a.value for a in stored(session, w.worker.id, live_server)] == [["cat"], ["dog", "car"]]
    assert problems == []


def test_free_text_answers_are_typed_and_ctrl_enter_confirms(app, session, clock, page, live_server):
    page, problems = page
    w = work_world(app, session, clock, label_schema={"type": "text", "max_length": 200})
    open_work(page, live_server, w.login)
    first = held(session, w.worker.id, live_server)
    box = page.get_by_label("Type your answer")
    assert box.evaluate("b => b === document.activeElement")
    page.keyboard.type("12 r")  # number keys and R type in the box
    page.keyboard.press("Enter")  # a new line, not a submit
    page.keyboard.type("fine")
    assert box.input_value() == "12 r\nfine" and page.locator("#item-k").inner_text() == "1"
    page.keyboard.press("Control+Enter")
    page.get_by_label("Type your answer").fill("second")
    page.keyboard.press("Control+Enter")
    wait_for_next_hit(page, first.id, session, w.worker.id, live_server)
    assert [a.value for a in stored(session, w.worker.id, live_server)] == ["12 r\nfine", "second"]
    assert problems == []
