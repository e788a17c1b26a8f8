"""Gold feedback disputes: workers contest a missed gold item; ops correct it (re-scoring), retire it, or reject."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from base.identity import Role
from market.catalogue.models import Answer, Assignment, Item
from qualification.models import GoldStream
from tests.factories import account, auth, item_id, public_item_id
from tests.market.test_scoring import gold_project
from workers.models import WorkerStats


def take(client, token, value_for):
    """Claim a task and answer each item with value_for(item_id); the task and the submit response."""
    task = client.post("/api/v1/work/next", headers=auth(token)).get_json()
    answers = [{"item_id": i["id"], "answer": value_for(i["id"])} for i in task["items"]]
    resp = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json={"answers": answers},
                       headers=auth(token))
    assert resp.status_code == 200
    return task, resp.get_json()


def contest(client, token, task, item, note="the text is clearly negative"):
    """Contest an item (internal id) of the task, as the worker names it (by its public id)."""
    return client.post(f"/api/v1/assignments/{task['assignment_id']}/disputes", headers=auth(token),
                       json={"item_id": public_item_id(client, item), "note": note})


@pytest.fixture
def disputed(client, session, clock, turns):
    """One gold item (known answer "pos"), missed by two workers who answered "neg", matched by a third."""
    _, owner_token, proj = gold_project(session, clock, real=10, gold=1, gold_feedback=True, redundancy=3)
    gold_item = session.scalar(select(Item).where(Item.is_gold))
    workers = [account(session, Role.WORKER, now=clock()) for _ in range(3)]
    tasks = []
    for n, (_, token) in enumerate(workers):
        turns.append(True)
        value = "pos" if n == 2 else "neg"
        task, result = take(client, token, lambda _, value=value: value)
        tasks.append(task)
        assert [f["item_id"] for f in result["feedback"]] == ([] if n == 2 else [public_item_id(client, gold_item.id)])
    _, ops_token = account(session, Role.OPS, now=clock())
    return {"project": proj, "item": gold_item, "workers": workers, "tasks": tasks, "ops": ops_token,
            "owner_token": owner_token}


def test_a_worker_contests_only_a_missed_gold_item_they_were_shown(client, session, clock, disputed, turns):
    (_, token), _, (_, right_token) = disputed["workers"]
    task, item = disputed["tasks"][0], disputed["item"]
    first = contest(client, token, task, item.id)
    assert first.status_code == 201 and first.get_json()["state"] == "open"
    again = contest(client, token, task, item.id, note="again")
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    # A real item, and a gold item answered right, get the same refusal: contesting reveals nothing.
    real_task, _ = take(client, token, lambda _: "pos")
    refusals = [contest(client, token, real_task, item_id(client, real_task["items"][0]["id"])),
                contest(client, right_token, disputed["tasks"][2], item.id)]
    assert [r.status_code for r in refusals] == [409, 409]
    assert refusals[0].get_json()["detail"] == refusals[1].get_json()["detail"]
    # Someone else's assignment is not found; the worker sees their own disputes.
    assert contest(client, right_token, task, item.id).status_code == 404
    mine = client.get("/api/v1/disputes", headers=auth(token)).get_json()["data"]
    assert [d["id"] for d in mine] == [first.get_json()["id"]]


def test_without_feedback_nothing_can_be_contested(client, session, clock, turns):
    gold_project(session, clock, real=5, gold=1)
    _, token = account(session, Role.WORKER, now=clock())
    turns.append(True)
    task, result = take(client, token, lambda _: "neg")
    assert result["feedback"] == []
    assert contest(client, token, task, item_id(client, task["items"][0]["id"])).status_code == 409


def test_ops_correct_a_gold_item_and_past_answers_are_rescored(client, session, clock, disputed):
    item, ops = disputed["item"], disputed["ops"]
    ids = [contest(client, t, task, item.id).get_json()["id"]
           for (_, t), task in zip(disputed["workers"][:2], disputed["tasks"][:2], strict=True)]
    listed = client.get("/api/v1/ops/disputes", query_string={"state": "open"}, headers=auth(ops)).get_json()
    assert [d["id"] for d in listed["data"]] == ids
    assert listed["data"][0]["item"]["gold"] == "pos" and listed["data"][0]["answer"] == "neg"
    assert (listed["data"][0]["item"]["answers"], listed["data"][0]["item"]["correct"]) == (3, 1)
    bad = client.post(f"/api/v1/ops/disputes/{ids[0]}/correct", json={"gold": "nope", "note": "x"}, headers=auth(ops))
    assert bad.status_code == 422 and session.get(Item, item.id).gold_answer == "pos"
    resp = client.post(f"/api/v1/ops/disputes/{ids[0]}/correct", headers=auth(ops),
                       json={"gold": "neg", "explanation": "sarcasm", "note": "the workers are right"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["state"] == "corrected" and body["rescored"] == 3 and body["item"]["gold"] == "neg"
    session.expire_all()
    scored = session.scalars(select(Answer.gold_correct).where(Answer.item_id == item.id).order_by(Answer.id)).all()
    assert scored == [True, True, False]
    stats = {s.worker_id: s.gold_correct for s in session.scalars(select(WorkerStats))}
    assert [stats[w.id] for w, _ in disputed["workers"]] == [1, 1, 0]
    # Both disputes of the item are settled; the worker sees the decision.
    assert client.get(f"/api/v1/ops/disputes/{ids[1]}", headers=auth(ops)).get_json()["state"] == "corrected"
    mine = client.get("/api/v1/disputes", headers=auth(disputed["workers"][1][1])).get_json()["data"]
    assert mine[0]["state"] == "corrected" and mine[0]["resolution"] == "the workers are right"
    again = client.post(f"/api/v1/ops/disputes/{ids[0]}/reject", json={"note": "x"}, headers=auth(ops))
    assert again.status_code == 409
    assert client.get("/api/v1/ops/disputes", headers=auth(disputed["workers"][0][1])).status_code == 403


def test_ops_retire_a_gold_item(client, session, clock, disputed, turns):
    item, ops = disputed["item"], disputed["ops"]
    (worker, token), *_ = disputed["workers"]
    dispute_id = contest(client, token, disputed["tasks"][0], item.id).get_json()["id"]
    resp = client.post(f"/api/v1/ops/disputes/{dispute_id}/retire", json={"note": "ambiguous"}, headers=auth(ops))
    assert resp.status_code == 200 and resp.get_json()["item"]["retired_at"] is not None
    session.expire_all()
    assert session.scalars(select(Answer.gold_correct).where(Answer.item_id == item.id)).all() == [None] * 3
    assert all(s.gold_seen == 0 for s in session.scalars(select(WorkerStats)))
    # Never served again: the project has no gold left to inject, and its batch says so.
    newcomer, new_token = account(session, Role.WORKER, now=clock())
    turns.append(True)
    task, _ = take(client, new_token, lambda _: "pos")
    assert not session.get(Assignment, task["assignment_id"]).is_gold
    assert session.get(GoldStream, (newcomer.id, disputed["project"].id)) is None
    proj = disputed["project"]
    batch = client.get(f"/api/v1/projects/{proj.id}/batches", headers=auth(disputed["owner_token"])).get_json()
    assert batch["data"][0]["gold"]["hits_available"] == 0


def test_ops_reject_a_dispute(client, session, clock, disputed):
    (_, token), *_ = disputed["workers"]
    dispute_id = contest(client, token, disputed["tasks"][0], disputed["item"].id).get_json()["id"]
    resp = client.post(f"/api/v1/ops/disputes/{dispute_id}/reject", json={"note": "it is positive"},
                       headers=auth(disputed["ops"]))
    assert resp.status_code == 200 and resp.get_json()["state"] == "rejected"
    assert session.get(Item, disputed["item"].id).gold_answer == "pos"


def test_the_requester_corrects_a_gold_item_the_crowd_contradicts(client, session, clock, disputed):
    item, owner = disputed["item"], disputed["owner_token"]
    proj = disputed["project"]
    dispute = contest(client, disputed["workers"][0][1], disputed["tasks"][0], item.id).get_json()["id"]
    # Two of three answers say "neg": the quality report lists it; the requester agrees and corrects it.
    suspects = client.get(f"/api/v1/projects/{proj.id}/quality-report", headers=auth(owner)).get_json()
    assert [s["item_id"] for s in suspects["gold_suspects"]] == [item.id]
    url = f"/api/v1/projects/{proj.id}/items/{item.id}"
    resp = client.patch(url, json={"gold": "neg", "explanation": "Sarcasm: negative."}, headers=auth(owner))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["gold"] == "neg" and resp.get_json()["explanation"] == "Sarcasm: negative."
    session.expire_all()
    scored = session.execute(select(Answer.worker_id, Answer.gold_correct).where(Answer.item_id == item.id)).all()
    by_worker = dict(scored)
    assert [by_worker[w.id] for w, _ in disputed["workers"]] == [True, True, False]
    stats = {s.worker_id: (s.gold_seen, s.gold_correct) for s in session.scalars(select(WorkerStats))}
    assert [stats[w.id] for w, _ in disputed["workers"]] == [(1, 1), (1, 1), (1, 0)]
    settled = client.get(f"/api/v1/ops/disputes/{dispute}", headers=auth(disputed["ops"])).get_json()
    assert settled["state"] == "corrected"
    # Bad corrections change nothing: a value outside the schema, a real item.
    bad = client.patch(url, json={"gold": "maybe"}, headers=auth(owner))
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    real = session.scalar(select(Item.id).where(Item.project_id == proj.id, ~Item.is_gold))
    assert client.patch(f"/api/v1/projects/{proj.id}/items/{real}", json={"gold": "pos"},
                        headers=auth(owner)).status_code == 409
    session.expire_all()
    assert session.get(Item, item.id).gold_answer == "neg"
