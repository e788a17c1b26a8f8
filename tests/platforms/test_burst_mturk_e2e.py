"""A burst to MTurk end to end, through the public API and real boto3 against the fake MTurk endpoint on
127.0.0.1: the estimate and the idempotent burst, the HITs' ExternalQuestion, local workers kept off the burst's
places, MTurk workers working through our page and its work token, reviews, top-ups as bonuses, closing and
cancelling (places back to the batch), retried and failed publishes, and MTurk work we never saw rejected.

Jobs run inline without Redis (after the response); with Redis they are queued, so the test runs them itself
(`publish_now` / `sync_now` are idempotent)."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.models import Assignment, HitSlot, SlotState
from payments import cycle
from platforms import jobs
from platforms.service import NO_WORK
from tests import factories
from tests.factories import auth, in_uow
from tests.platforms.fake_mturk import FakeMTurk, MTurkError

PUBLIC = "https://crowd.example.test"
SANDBOX = "https://workersandbox.mturk.com"
XMLNS = "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd}"
REWARD, ESTIMATE = 10, 40  # 10c for an estimated 40 s: $9.00/h, above the floor, below the $15.00/h target


@pytest.fixture
def mturk(app, fake_mturk, monkeypatch) -> FakeMTurk:
    # boto3's standard credential chain, from the environment; every call goes to the fake.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    app.config["MTURK_ENDPOINT_URL"] = fake_mturk.url
    app.config["PUBLIC_BASE_URL"] = PUBLIC
    app.extensions["crowdmarket.platform_sleep"] = lambda s: None
    return fake_mturk


@dataclass
class World:
    project_id: int
    batch_id: int
    token: str

    def url(self, path: str = "") -> str:
        return f"/api/v1/projects/{self.project_id}{path}"


def _world(client, session, clock, *, items: int, gold: int = 0, **settings: Any) -> World:
    """A funded requester's published batch: one item per HIT, two answers each (and `gold` gold items)."""
    _, token = factories.account(session, Role.REQUESTER, now=clock())
    body = factories.project_payload(**{"reward_cents": REWARD, "estimated_seconds": ESTIMATE,
                                        "assignments_per_item": 2, "items_per_hit": 1, **settings})
    resp = client.post("/api/v1/projects", json=body, headers=auth(token))
    assert resp.status_code == 201, resp.get_json()
    project_id = resp.get_json()["id"]
    records = [{"external_id": f"i{n}", "data": {"text": f"review {n}"}} for n in range(items)]
    records += [{"external_id": f"g{n}", "data": {"text": f"known {n}"}, "gold": "pos"} for n in range(gold)]
    resp = client.post(f"/api/v1/projects/{project_id}/items", data=factories.jsonl(records),
                       headers=auth(token) | {"Content-Type": "application/x-ndjson"})
    assert resp.status_code == 201, resp.get_json()
    resp = client.post(f"/api/v1/projects/{project_id}/batches", json={}, headers=auth(token))
    assert resp.status_code == 201, resp.get_json()
    return World(project_id, resp.get_json()["id"], token)


def _queued(app) -> bool:
    return bool(app.config.get("REDIS_URL"))


def _burst(app, client, w: World, *, hits: int, key: str | None = "burst-1") -> Any:
    headers = auth(w.token) | ({"Idempotency-Key": key} if key else {})
    resp = client.post(w.url(f"/batches/{w.batch_id}/bursts"), json={"platform": "mturk", "hits": hits},
                       headers=headers)
    if resp.status_code == 202 and _queued(app):  # inline, the job ran as the response closed
        with app.app_context():
            jobs.publish_now(resp.get_json()["id"])
    return resp


def _sync(app) -> dict[str, Any]:
    with app.app_context():
        return jobs.sync_now()


def _status(client, w: World, burst_id: int) -> dict[str, Any]:
    resp = client.get(f"/api/v1/bursts/{burst_id}", headers=auth(w.token))
    assert resp.status_code == 200
    return resp.get_json()


def _ended(burst: dict[str, Any]) -> int:
    return sum(task["ended_at"] is not None for task in burst["platform_tasks"])


def _calls(client, w: World, burst_id: int) -> list[dict[str, Any]]:
    return client.get(f"/api/v1/bursts/{burst_id}/calls", headers=auth(w.token)).get_json()["data"]


def _made(fake: FakeMTurk, operation: str) -> list[dict[str, Any]]:
    return [params for op, params in fake.requests if op == operation]


def _external_url(fake: FakeMTurk, hit_id: str) -> str:
    return html.unescape(re.search(r"<ExternalURL>(.*?)</ExternalURL>", fake.hits[hit_id].question).group(1))


def _open(client, fake: FakeMTurk, hit_id: str, worker: str, assignment: str) -> Any:
    """What MTurk's frame opens: the HIT's ExternalURL, on our host, with MTurk's parameters appended."""
    url = urlsplit(_external_url(fake, hit_id))
    params = {"assignmentId": assignment, "hitId": hit_id, "workerId": worker, "turkSubmitTo": SANDBOX}
    return client.get(f"{url.path}?{url.query}&{urlencode(params)}")


def _work(app, client, clock, fake: FakeMTurk, hit_id: str, worker: str, *, seconds: int = 60) -> tuple[str, int]:
    """An MTurk worker accepts the HIT, works on our page for `seconds`, submits through the work token, and
    the frame posts to MTurk; returns MTurk's assignment id and ours."""
    assignment = fake.accept(hit_id, worker)
    page = _open(client, fake, hit_id, worker, assignment)
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text
    assert "gold" not in text.lower()  # a gold task looks like any other (test items never say "gold")
    assert f'action="{SANDBOX}/mturk/externalSubmit"' in text and f'value="{assignment}"' in text
    token = re.search(r'data-work-token="([^"]+)"', text).group(1)
    first = json.loads(html.unescape(re.search(r'data-first="([^"]+)"', text).group(1)))
    ours = first["task"]["assignment_id"]
    clock.advance(seconds=seconds)
    body = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in first["task"]["items"]], "next": True}
    # No session cookie inside MTurk's frame: the work token alone.
    done = app.test_client().post(f"/work/tasks/{ours}/submit", json=body, headers={"X-Work-Token": token})
    assert done.status_code == 200, done.get_json()
    fake.submit(assignment)
    return assignment, ours


def _hits_of(session, batch_id: int) -> set[int]:
    return set(session.scalars(select(HitSlot.hit_id).where(HitSlot.batch_id == batch_id)))


def _free(session, batch_id: int) -> int:
    session.expire_all()
    return session.scalar(select(func.count(HitSlot.id)).where(HitSlot.batch_id == batch_id,
                                                               HitSlot.state == SlotState.FREE))


def test_a_burst_from_estimate_to_bonus_and_close(app, client, session, clock, mturk):
    w = _world(client, session, clock, items=7)
    dry = client.get(w.url(f"/batches/{w.batch_id}/bursts/estimate?platform=mturk&hits=5"), headers=auth(w.token))
    assert dry.status_code == 200 and mturk.requests == []
    estimate = dry.get_json()
    assert (estimate["places"], estimate["tasks"], estimate["per_platform_task"]) == (10, 10, 2)
    # MTurk's 20% on the reward (10c + 2c) and on the top-up headroom (15c: 1.5 x 40 s at $15.00/h, less the
    # reward; + 3c): a local assignment of this batch holds 25c, a burst's 30c.
    assert (estimate["fee_rate"], estimate["per_task_cents"], estimate["total_cents"]) == ("0.20", 12, 10 * 30)

    first = _burst(app, client, w, hits=5)
    assert first.status_code == 202, first.get_json()
    burst = first.get_json()
    again = _burst(app, client, w, hits=5)
    assert again.status_code == 200 and again.get_json()["id"] == burst["id"]
    assert len(mturk.hits) == 5 and len(_made(mturk, "CreateHITWithHITType")) == 5  # no second set
    burst = _status(client, w, burst["id"])
    assert (burst["status"], burst["places"], burst["places_left"], burst["platform_tasks"][0]["max_assignments"]) \
        == ("open", 10, 10, 2)

    # The HITs: our https page for the burst's batch as a documented ExternalQuestion, 2 assignments, a token each.
    tokens = set()
    for params in _made(mturk, "CreateHITWithHITType"):
        question = ET.fromstring(params["Question"])
        assert question.tag == f"{XMLNS}ExternalQuestion"
        assert [child.tag for child in question] == [f"{XMLNS}ExternalURL", f"{XMLNS}FrameHeight"]
        url = urlsplit(question.find(f"{XMLNS}ExternalURL").text)
        assert (url.scheme, url.netloc, url.path) == ("https", "crowd.example.test", "/work/external/mturk")
        assert params["MaxAssignments"] == 2 and params["UniqueRequestToken"]
        tokens.add(params["UniqueRequestToken"])
    assert len(tokens) == 5

    # A local worker is served the parent's two HITs left, never the burst's (their places are MTurk's now).
    burst_hits = _hits_of(session, burst["burst_batch_id"])
    _, local = factories.account(session, Role.WORKER, now=clock())
    leased = []
    while (task := client.post("/api/v1/work/next", headers=auth(local))).status_code == 200:
        task = task.get_json()
        leased.append(session.get(Assignment, task["assignment_id"]).hit_id)
        body = {"answers": [{"item_id": i["id"], "answer": "neg"} for i in task["items"]]}
        assert client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=body,
                           headers=auth(local)).status_code == 200
    assert task.status_code == 404 and len(leased) == 2 and not set(leased) & burst_hits

    # Two MTurk workers do every place, 60 s each; the same assignment opened under another worker id is refused.
    hit_ids = list(mturk.hits)
    done = {(worker, hit): _work(app, client, clock, mturk, hit, worker)[0]
            for worker in ("A1WORKER", "A2WORKER") for hit in hit_ids}
    forged = _open(client, mturk, hit_ids[0], "A3FORGER", done["A1WORKER", hit_ids[0]])
    assert forged.status_code == 403 and "another worker" in forged.get_data(as_text=True)

    # The sync lists the submissions; nothing is reviewed yet, so nothing is mirrored. Every place is done: the
    # HITs are expired on MTurk and the burst closes, giving nothing back.
    _sync(app)
    burst = _status(client, w, burst["id"])
    assert (burst["submissions"], burst["mirrored"], burst["pending"], burst["problems"]) == (10, 0, 10, 0)
    assert (burst["status"], burst["places_left"], _ended(burst)) == ("closed", 0, 5)
    assert sorted(hit for hit, _ in mturk.expirations) == sorted(hit_ids) and all(
        mturk.hits[hit].expired() for hit in hit_ids)
    assert _made(mturk, "ApproveAssignment") == []

    resp = client.post(w.url("/reviews"), json={"decision": "approve", "batch_id": burst["burst_batch_id"]},
                       headers=auth(w.token))
    assert resp.status_code == 200 and len(resp.get_json()["reviewed"]) == 10
    _sync(app)
    assert {a.status for a in mturk.assignments.values()} == {"Approved"}
    assert len(_made(mturk, "ApproveAssignment")) == 10
    _sync(app)  # nothing more to do: no second approval
    assert len(_made(mturk, "ApproveAssignment")) == 10
    burst = _status(client, w, burst["id"])
    assert (burst["mirrored"], burst["pending"], burst["problems"], burst["failed_calls"]) == (10, 0, 0, 0)
    approvals = [c for c in _calls(client, w, burst["id"]) if c["operation"] == "ApproveAssignment"]
    assert len(approvals) == 10 and {(c["job"], c["outcome"], c["attempts"]) for c in approvals} == {("sync", "ok", 1)}

    # The payments cycle measures the burst's 10 submissions at 60 s: 10c is $6.00/h, so each approved assignment
    # is topped up to $15.00/h (25c, 15c more); the sync pays that as MTurk's bonus, once.
    topped = in_uow(cycle.run, session, now=clock())["top_ups"]
    assert topped["assignments"] == 10 and topped["top_up_cents"] == 150
    assert mturk.bonuses == []
    _sync(app)
    assert sorted((b["WorkerId"], b["AssignmentId"], b["BonusAmount"]) for b in mturk.bonuses) == sorted(
        (worker, assignment, "0.15") for (worker, _), assignment in done.items())
    assert len({b["UniqueRequestToken"] for b in mturk.bonuses}) == 10
    _sync(app)
    assert len(mturk.bonuses) == 10 and len(_made(mturk, "SendBonus")) == 10
    assert _status(client, w, burst["id"])["bonus_cents"] == 150


def test_cancel_ends_the_hits_and_gives_the_unused_places_back(app, client, session, clock, mturk):
    w = _world(client, session, clock, items=3)
    burst = _burst(app, client, w, hits=3).get_json()
    assert _free(session, w.batch_id) == 0
    hit = next(iter(mturk.hits))
    _work(app, client, clock, mturk, hit, "A1WORKER")
    _, local = factories.account(session, Role.WORKER, now=clock())
    assert client.post("/api/v1/work/next", headers=auth(local)).status_code == 404  # every place is MTurk's
    resp = client.post(f"/api/v1/bursts/{burst['id']}/cancel", headers=auth(w.token))
    assert resp.status_code == 202
    if _queued(app):
        _sync(app)
    burst = _status(client, w, burst["id"])
    assert (burst["status"], _ended(burst), burst["submissions"]) == ("closed", 3, 1)
    assert all(h.expired() for h in mturk.hits.values()) and len(mturk.expirations) == 3
    assert _free(session, w.batch_id) == 5  # the five places MTurk did not use are the batch's again
    task = client.post("/api/v1/work/next", headers=auth(local))
    assert task.status_code == 200 and session.get(Assignment, task.get_json()["assignment_id"]).batch_id == w.batch_id
    with pytest.raises(ValueError, match="no more workers"):
        mturk.accept(hit, "A2WORKER")
    # Work submitted before the cancel is still reviewed and mirrored.
    [ours] = session.scalars(select(Assignment.id).where(Assignment.batch_id == burst["burst_batch_id"]))
    assert client.post(w.url(f"/assignments/{ours}/approve"), headers=auth(w.token)).status_code == 200
    _sync(app)
    _sync(app)
    assert [a.status for a in mturk.assignments.values()] == ["Approved"]
    assert len(_made(mturk, "UpdateExpirationForHIT")) == 3 and len(_made(mturk, "ApproveAssignment")) == 1


def test_a_throttled_hit_is_retried_and_recorded(app, client, session, clock, mturk):
    w = _world(client, session, clock, items=2)
    mturk.fail_next("CreateHITWithHITType", "ThrottlingException")
    burst = _burst(app, client, w, hits=2).get_json()
    assert _status(client, w, burst["id"])["status"] == "open" and len(mturk.hits) == 2
    creates = [c for c in reversed(_calls(client, w, burst["id"])) if c["operation"] == "CreateHITWithHITType"]
    assert [(c["job"], c["attempts"], c["outcome"]) for c in creates] == [("publish", 2, "ok"), ("publish", 1, "ok")]
    assert "ThrottlingException" in creates[0]["retried_errors"][0] and creates[0]["idempotency_key"]


def test_a_refused_publish_stays_publishing_and_publishing_again_makes_each_hit_once(app, client, session, clock,
                                                                                     mturk, monkeypatch):
    w = _world(client, session, clock, items=2)
    create, seen = mturk._op_CreateHITWithHITType, []

    def second_refused(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params["UniqueRequestToken"])
        if len(seen) == 2:  # the first HIT is made, the second refused (not retryable)
            raise MTurkError("Your account has insufficient funds.", code="RequestError")
        return create(params)

    monkeypatch.setattr(mturk, "_op_CreateHITWithHITType", second_refused)
    burst = _burst(app, client, w, hits=2).get_json()
    status = _status(client, w, burst["id"])
    assert status["status"] == "publishing" and "insufficient funds" in status["last_error"]
    assert status["failed_calls"] == 1 and len(mturk.hits) == 1
    _sync(app)  # a burst still publishing is not synced
    assert _made(mturk, "ListReviewableHITs") == []

    with app.app_context():
        jobs.publish_now(burst["id"])
    status = _status(client, w, burst["id"])
    assert (status["status"], status["last_error"], len(status["platform_tasks"])) == ("open", None, 2)
    # A retry lists our HITs first (MTurk forgets tokens after a day): the first is found by its annotation and
    # not asked for again; only the second is made.
    assert len(mturk.hits) == 2 and len(seen) == 3 and seen[1] == seen[2] and len(set(seen)) == 2
    assert sorted(h.annotation for h in mturk.hits.values()) == sorted(set(seen))
    assert len(_made(mturk, "ListHITs")) == 1
    with app.app_context():
        jobs.publish_now(burst["id"])  # published: left alone
    assert len(seen) == 3


def test_mturk_work_never_done_on_our_page_is_rejected_with_feedback(app, client, session, clock, mturk):
    w = _world(client, session, clock, items=2)
    burst = _burst(app, client, w, hits=2).get_json()
    hit = next(iter(mturk.hits))
    assignment = mturk.accept(hit, "A9SKIPPER")
    mturk.submit(assignment)
    _sync(app)
    assert (mturk.assignments[assignment].status, mturk.assignments[assignment].feedback) == ("Rejected", NO_WORK)
    status = _status(client, w, burst["id"])
    assert (status["submissions"], status["mirrored"], status["problems"], status["status"]) == (1, 1, 1, "open")
    _sync(app)
    assert len(_made(mturk, "RejectAssignment")) == 1


def test_gold_tasks_are_asked_for_held_and_served_among_the_burst(app, client, session, clock, mturk):
    w = _world(client, session, clock, items=4, gold=2, gold_rate="0.10")
    burst = _burst(app, client, w, hits=4).get_json()
    estimate = burst["estimate"]
    # 8 real places at a gold rate of 1 in 10: 1 gold task, so MTurk is asked for 9 assignments.
    assert (estimate["places"], estimate["gold_tasks"], estimate["tasks"]) == (8, 1, 9)
    assert estimate["total_cents"] == 9 * 30
    assert sorted(h.max_assignments for h in mturk.hits.values()) == [1, 2, 2, 2, 2]
    # Whatever the gold schedule serves an MTurk worker is the burst's real work or gold, never the parent's
    # (and the page does not say which: _work).
    burst_batch, parent = burst["burst_batch_id"], w.batch_id
    served = [session.get(Assignment, _work(app, client, clock, mturk, hit, "A1WORKER")[1])
              for hit in list(mturk.hits)[:4]]
    assert all(a.is_gold or a.batch_id == burst_batch for a in served) and parent not in {a.batch_id for a in served}


def test_cancelling_the_batch_ends_its_bursts_hits(app, client, session, clock, mturk):
    w = _world(client, session, clock, items=2)
    burst = _burst(app, client, w, hits=2).get_json()
    assert client.post(w.url(f"/batches/{w.batch_id}/cancel"), headers=auth(w.token)).status_code == 200
    _sync(app)
    burst = _status(client, w, burst["id"])
    assert (burst["status"], _ended(burst)) == ("closed", 2) and all(h.expired() for h in mturk.hits.values())


def test_the_page_reference_holds_only_the_batch(app, client, session, clock, mturk):
    """A worker can read the signed reference in the URL: it says which batch, nothing more (no completion code
    a Prolific participant could paste without doing the work)."""
    import base64

    w = _world(client, session, clock, items=1)
    _burst(app, client, w, hits=1)
    ref = urlsplit(_external_url(mturk, next(iter(mturk.hits)))).query.split("ref=")[1].split("&")[0]
    payload = ref.split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).keys() == {"batch"}


def test_a_review_is_mirrored_once_the_request_commits_without_waiting_for_the_schedule(app, client, session, clock,
                                                                                        mturk):
    from edge import jobs as queue

    w = _world(client, session, clock, items=1)
    burst = _burst(app, client, w, hits=1).get_json()
    hit = next(iter(mturk.hits))
    _, ours = _work(app, client, clock, mturk, hit, "A1WORKER")
    _sync(app)  # MTurk lists the submission
    assert client.post(w.url(f"/assignments/{ours}/approve"), headers=auth(w.token)).status_code == 200
    if _queued(app):
        queue.work(app, burst=True)  # the sync the review queued
    assert [a.status for a in mturk.assignments.values()] == ["Approved"]
    assert _status(client, w, burst["id"])["mirrored"] == 1


def test_only_the_bursts_own_hits_open_its_page(app, client, session, clock, mturk):
    """Our page URL is public inside any HIT that carries it; a forged arrival naming a HIT that is not this
    burst's (another requester's, or invented) leases nothing."""
    w = _world(client, session, clock, items=1)
    _burst(app, client, w, hits=1)
    url = urlsplit(_external_url(mturk, next(iter(mturk.hits))))
    forged = {"assignmentId": "3FORGED", "hitId": "3NOTOURS", "workerId": "A1FORGER", "turkSubmitTo": SANDBOX}
    resp = client.get(f"{url.path}?{url.query}&{urlencode(forged)}")
    assert resp.status_code == 404
    assert session.scalar(select(func.count()).select_from(Assignment)) == 0
