"""The review API: requesters approve, reject, reverse and list their projects' work; ops review any project;
workers see their own reviewed work, never gold flags. Problems are problem+json; money short is 402."""

from __future__ import annotations

import datetime as dt

import pytest

from base.identity import Role
from market.catalogue.models import Assignment
from payments import ledger
from tests import factories
from tests.factories import auth
from tests.review_setup import leave_only, paid_count, payable, requester_total, status, world

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def books_balance(session):
    yield
    assert ledger.check_books(session) == []


def _url(w, path: str = "") -> str:
    return f"/api/v1/projects/{w.project.id}{path}"


def test_approve_one_then_again_pays_once(client, session, clock):
    w = world(session, clock())
    first = w.by_worker[0][0]
    resp = client.post(_url(w, f"/assignments/{first}/approve"), json={}, headers=auth(w.owner_token))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"decision": "approve", "reviewed": [first], "skipped": [],
                               "rewards": [{"cents": 10, "currency": "USD"}],
                               "fees": [{"cents": 0, "currency": "USD"}]}
    again = client.post(_url(w, f"/assignments/{first}/approve"), headers=auth(w.owner_token))
    assert again.status_code == 200 and again.get_json()["skipped"] == [
        {"assignment_id": first, "reason": "already_approved"}]
    assert payable(session, w.workers[0][0]) == 10 and paid_count(session) == (1, 1)
    # Approved work is not rejected afterwards.
    resp = client.post(_url(w, f"/assignments/{first}/reject"), json={"feedback": "No"}, headers=auth(w.owner_token))
    assert resp.status_code == 409 and resp.mimetype == PROBLEM and resp.get_json()["reason"] == "already_approved"


@pytest.mark.parametrize(("length", "code"), [(0, 422), (1, 200), (1024, 200), (1025, 422)])
def test_rejection_feedback_length(client, session, clock, length, code):
    w = world(session, clock(), items=1, workers=1)
    [only] = w.assignments
    resp = client.post(_url(w, f"/assignments/{only}/reject"), json={"feedback": "y" * length},
                       headers=auth(w.owner_token))
    assert resp.status_code == code, resp.get_data(as_text=True)
    assert status(session, only) == ("rejected" if code == 200 else "submitted")
    if code == 422:
        assert resp.mimetype == PROBLEM and "feedback" in resp.get_json()["errors"]
    missing = client.post(_url(w, f"/assignments/{only}/reject"), json={}, headers=auth(w.owner_token))
    assert missing.status_code == 422


def test_not_your_project_is_404_a_worker_403_ops_use_their_own_endpoint(client, session, clock):
    w = world(session, clock(), items=1)
    _, stranger = factories.account(session, Role.REQUESTER, now=clock())
    _, ops = factories.account(session, Role.OPS, now=clock())
    first = w.by_worker[0][0]
    for token, code in ((stranger, 404), (w.workers[0][1], 403), (ops, 403)):
        resp = client.post(_url(w, f"/assignments/{first}/approve"), headers=auth(token))
        assert resp.status_code == code and resp.mimetype == PROBLEM
        resp = client.post(_url(w, "/reviews"), json={"decision": "approve", "batch_id": w.batch.id},
                           headers=auth(token))
        assert resp.status_code == code
    # Someone else's assignment through your own project is not found either.
    mine = world(session, clock(), items=1, owner=None)
    resp = client.post(_url(mine, f"/assignments/{first}/approve"), headers=auth(mine.owner_token))
    assert resp.status_code == 404
    resp = client.post(_url(mine, "/reviews"), json={"decision": "approve", "batch_id": w.batch.id},
                       headers=auth(mine.owner_token))
    assert resp.status_code == 404
    assert all(status(session, a) == "submitted" for a in w.assignments)
    resp = client.post("/api/v1/ops/reviews", json={"decision": "approve", "assignment_ids": [first]},
                       headers=auth(ops))
    assert resp.status_code == 200 and resp.get_json()["reviewed"] == [first]
    assert client.post("/api/v1/ops/reviews", json={"decision": "approve", "batch_id": w.batch.id},
                       headers=auth(w.owner_token)).status_code == 403


def test_bulk_by_ids_batch_and_workers(client, session, clock):
    w = world(session, clock())
    head = auth(w.owner_token)
    resp = client.post(_url(w, "/reviews"), json={"decision": "reject", "feedback": "Careless",
                                                  "worker_ids": [w.workers[0][0].id]}, headers=head)
    assert resp.status_code == 200 and resp.get_json()["reviewed"] == w.by_worker[0]
    resp = client.post(_url(w, "/reviews"), json={"decision": "approve",
                                                  "assignment_ids": [*w.by_worker[1], w.by_worker[0][0]]},
                       headers=head)
    body = resp.get_json()
    assert body["reviewed"] == w.by_worker[1]
    assert body["skipped"] == [{"assignment_id": w.by_worker[0][0], "reason": "already_rejected"}]
    resp = client.post(_url(w, "/reviews"), json={"decision": "approve", "batch_id": w.batch.id}, headers=head)
    assert resp.get_json()["reviewed"] == w.by_worker[2]
    assert [payable(session, a) for a, _ in w.workers] == [0, 40, 40]
    for bad in ({"decision": "approve"}, {"decision": "approve", "batch_id": w.batch.id, "worker_ids": [1]},
                {"decision": "reject", "batch_id": w.batch.id}, {"decision": "pay", "batch_id": w.batch.id},
                {"decision": "approve", "assignment_ids": []}):
        resp = client.post(_url(w, "/reviews"), json=bad, headers=head)
        assert resp.status_code == 422 and resp.mimetype == PROBLEM, bad


def test_money_short_is_a_402_problem_and_nothing_changes(client, session, clock):
    w = world(session, clock())
    leave_only(session, w.owner, w.batch, 25, clock())
    resp = client.post(_url(w, "/reviews"), json={"decision": "approve", "batch_id": w.batch.id},
                       headers=auth(w.owner_token))
    assert resp.status_code == 402 and resp.mimetype == PROBLEM
    assert resp.get_json()["shortfall"] == {"cents": 95, "currency": "USD"}
    assert all(status(session, a) == "submitted" for a in w.assignments)
    assert requester_total(session, w.owner) == 25 and paid_count(session) == (0, 0)


def test_reverse_a_rejection_through_the_api(client, session, clock):
    w = world(session, clock(), items=1, workers=1)
    [only] = w.assignments
    head = auth(w.owner_token)
    client.post(_url(w, f"/assignments/{only}/reject"), json={"feedback": "Wrong"}, headers=head)
    clock.advance(days=31)
    resp = client.post(_url(w, f"/assignments/{only}/reverse-rejection"), headers=head)
    assert resp.status_code == 409 and resp.mimetype == PROBLEM
    clock.advance(days=-2)
    resp = client.post(_url(w, f"/assignments/{only}/reverse-rejection"), headers=head)
    assert resp.status_code == 200 and resp.get_json()["reviewed"] == [only]
    assert client.post(_url(w, f"/assignments/{only}/reverse-rejection"), headers=head).get_json()["reviewed"] == []
    assert payable(session, w.workers[0][0]) == 10 and paid_count(session) == (1, 1)


def test_the_requester_lists_work_awaiting_review_with_its_auto_approval_time(client, session, clock):
    w = world(session, clock(), items=2, workers=2, delay=3600)
    head = auth(w.owner_token)
    client.post(_url(w, f"/assignments/{w.by_worker[0][0]}/approve"), headers=head)
    body = client.get(_url(w, "/assignments"), headers=head).get_json()
    rows = body["data"]
    assert [r["assignment_id"] for r in rows] == sorted(set(w.assignments) - {w.by_worker[0][0]})
    due = (clock() + dt.timedelta(seconds=3600)).isoformat()
    assert {r["auto_approve_at"] for r in rows} == {due}
    assert rows[0]["reward"] == {"cents": 10, "currency": "USD"} and rows[0]["paid"] is None
    assert rows[0]["status"] == "submitted" and rows[0]["worker_id"] in {a.id for a, _ in w.workers}
    approved = client.get(_url(w, "/assignments"), query_string={"status": "approved"}, headers=head).get_json()
    assert [(r["assignment_id"], r["paid"]) for r in approved["data"]] == [
        (w.by_worker[0][0], {"cents": 10, "currency": "USD"})]
    assert approved["data"][0]["auto_approve_at"] is None
    paged = client.get(_url(w, "/assignments"), query_string={"status": "all", "limit": 3}, headers=head).get_json()
    assert len(paged["data"]) == 3 and paged["next_after"] == paged["data"][-1]["assignment_id"]
    assert client.get(_url(w, "/assignments"), query_string={"status": "paid"}, headers=head).status_code == 422


def test_a_worker_sees_their_own_reviewed_work_without_gold_flags(client, session, clock):
    w = world(session, clock(), items=2, workers=2)
    session.query(Assignment).filter(Assignment.id == w.by_worker[0][1]).update({"is_gold": True})
    session.commit()
    head = auth(w.owner_token)
    client.post(_url(w, f"/assignments/{w.by_worker[0][0]}/approve"), headers=head)
    client.post(_url(w, f"/assignments/{w.by_worker[0][1]}/reject"), json={"feedback": "Read the guide"},
                headers=head)
    client.post(_url(w, f"/assignments/{w.by_worker[1][0]}/reject"), json={"feedback": "Theirs"}, headers=head)
    resp = client.get("/api/v1/work/reviewed", headers=auth(w.workers[0][1]))
    assert resp.status_code == 200
    rows = resp.get_json()["data"]
    assert [(r["assignment_id"], r["status"], r["feedback"]) for r in rows] == [
        (w.by_worker[0][0], "approved", None), (w.by_worker[0][1], "rejected", "Read the guide")]
    assert rows[0]["reward"] == {"cents": 10, "currency": "USD"} and rows[1]["reward"] is None
    assert rows[0]["project"] == {"id": w.project.id, "title": w.project.title}
    assert "gold" not in resp.get_data(as_text=True)
    assert client.get("/api/v1/work/reviewed", headers=auth(w.owner_token)).status_code == 403
