"""The worker API and the assignment engine's rules, one behaviour per test."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Answer, Assignment, AssignmentStatus, HitSlot, Item, SlotState
from market.engine.next_task import next_assignment
from market.engine.submit import sweep_expired
from tests.conftest import make_app
from tests.factories import TEST_GOLD_KEY, account, auth, item_id, items, project
from workers.models import WorkerBlock
from workers.service import link_identity, worker_for_identity

PROBLEM = "application/problem+json"


@pytest.fixture
def setup(session, clock):
    owner, owner_token = account(session, Role.REQUESTER, now=clock())
    # Gold off: the engine's rules are tested here on a predictable stream; gold injection in test_gold.py.
    proj = project(session, owner, now=clock(), assignments_per_item=2, gold_rate=Decimal(0))
    items(session, proj, 3, now=clock(), gold=1)
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=clock())
    workers = [account(session, Role.WORKER, now=clock()) for _ in range(4)]
    return {"owner": owner, "owner_token": owner_token, "project": proj, "batch": batch, "workers": workers}


def next_task(client, token, **query):
    return client.post("/api/v1/work/next", query_string=query, headers=auth(token))


def submit(http, token, task, value="pos", **extra):
    body = {"answers": [{"item_id": i["id"], "answer": value} for i in task["items"]], **extra}
    return http.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=body, headers=auth(token))


def test_sign_up_and_log_in(client):
    resp = client.post("/api/v1/workers", json={"username": "ada", "password": "correct horse battery"})
    assert resp.status_code == 201
    token = resp.get_json()["token"]
    assert client.get("/api/v1/me", headers=auth(token)).get_json()["role"] == "worker"
    assert client.post("/api/v1/workers", json={"username": "ada", "password": "another long one"}).status_code == 409
    weak = client.post("/api/v1/workers", json={"username": "bob", "password": "short"})
    assert weak.status_code == 422 and "password" in weak.get_json()["errors"]
    login = client.post("/api/v1/auth/token", json={"username": "ada", "password": "correct horse battery"})
    assert login.status_code == 201 and login.get_json()["token"] != token
    wrong = client.post("/api/v1/auth/token", json={"username": "ada", "password": "wrong password!"})
    unknown = client.post("/api/v1/auth/token", json={"username": "nobody", "password": "wrong password!"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json()["detail"] == unknown.get_json()["detail"]


def test_passwords_are_hashed_with_a_kdf(client, session):
    client.post("/api/v1/workers", json={"username": "cyd", "password": "correct horse battery"})
    from workers.models import Account

    stored = session.scalar(select(Account.password_hash).where(Account.username == "cyd"))
    assert stored.startswith("scrypt:") and "correct horse" not in stored


def test_next_gives_a_worker_facing_task(client, setup):
    _, token = setup["workers"][0]
    resp = next_task(client, token)
    assert resp.status_code == 200
    task = resp.get_json()
    assert set(task) == {"assignment_id", "status", "project", "guidelines", "label_schema", "reward", "leased_at",
                         "expires_at", "items", "answers", "hourly_rate"}
    assert task["status"] == "leased" and task["answers"] is None
    assert task["guidelines"] == {"version": 1, "instructions": "Pick the sentiment."}
    assert task["reward"] == {"cents": 12, "currency": "USD"}
    assert task["label_schema"]["type"] == "single_choice"
    assert [set(i) for i in task["items"]] == [{"id", "data"}]  # no gold flag or answer, ever
    assert set(task["project"]) == {"id", "title", "description"}
    # Asking again while the lease lives returns the same lease: no hoarding.
    assert next_task(client, token).get_json()["assignment_id"] == task["assignment_id"]


def test_submit_records_provenance_and_is_idempotent(client, session, clock, setup):
    _, token = setup["workers"][0]
    task = next_task(client, token).get_json()
    clock.advance(seconds=42)
    resp = submit(client, token, task, client={"ua": "test"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "submitted" and body["duration_ms"] == 42_000
    stored = session.scalars(select(Answer).where(Answer.assignment_id == task["assignment_id"])).all()
    assert [(a.value, a.duration_ms, a.guideline_version, a.client_meta) for a in stored] == \
        [("pos", 42_000, 1, {"ua": "test"})]
    clock.advance(seconds=5)
    again = submit(client, token, task, client={"ua": "test"})
    assert again.status_code == 200 and again.get_json() == body
    assert session.scalar(select(func.count()).select_from(Answer)
                          .where(Answer.assignment_id == task["assignment_id"])) == 1
    conflict = submit(client, token, task, value="neg")
    assert conflict.status_code == 409 and conflict.mimetype == PROBLEM
    view = client.get(f"/api/v1/assignments/{task['assignment_id']}", headers=auth(token)).get_json()
    assert view["answers"] == [{"item_id": task["items"][0]["id"], "answer": "pos"}]


def test_invalid_answers_are_422_per_item_and_store_nothing(client, session, setup):
    _, token = setup["workers"][0]
    task = next_task(client, token).get_json()
    item_id = task["items"][0]["id"]
    bad = submit(client, token, task, value="maybe")
    assert bad.status_code == 422 and "unknown label key" in bad.get_json()["errors"]["answers"][str(item_id)][0]
    missing = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit",
                          json={"answers": [{"item_id": 999999, "answer": "pos"}]}, headers=auth(token))
    errors = missing.get_json()["errors"]["answers"]
    assert "not an item" in errors["999999"][0] and "missing" in errors[str(item_id)][0]
    assert session.scalar(select(func.count()).select_from(Answer)) == 0
    assert submit(client, token, task).status_code == 200


def test_late_submit_is_410_and_the_slot_frees_itself(client, session, clock, setup):
    (_, t0), (_, t1), (_, t2), _ = setup["workers"]
    first = next_task(client, t0).get_json()
    next_task(client, t1)
    next_task(client, t2)
    clock.advance(seconds=601)  # leases are 600 s; nothing sweeps
    late = submit(client, t0, first)
    assert late.status_code == 410 and late.get_json()["reason"] == "expired"
    assert session.scalar(select(func.count()).select_from(Answer)) == 0
    # Every slot's lease lapsed, so the next worker gets work without any sweeper having run.
    _, t3 = setup["workers"][3]
    assert next_task(client, t3).status_code == 200


def test_redundancy_is_never_exceeded(client, session, setup):
    tokens = [t for _, t in setup["workers"]]
    got = []
    for token in tokens:
        for _ in range(3):
            resp = next_task(client, token)
            if resp.status_code != 200:
                assert resp.status_code == 404 and resp.get_json()["reason"] == "all_assigned"
                break
            task = resp.get_json()
            assert submit(client, token, task).status_code == 200
            got.append(task["items"][0]["id"])
    # 3 plain items x 2 answers each; the gold item is never published as work.
    assert sorted(got.count(i) for i in set(got)) == [2, 2, 2]
    per_worker_item = session.execute(select(Answer.worker_id, Answer.item_id, func.count())
                                      .group_by(Answer.worker_id, Answer.item_id)).all()
    assert all(n == 1 for *_, n in per_worker_item)


def test_breadth_first_and_priority(client, session, setup):
    (_, t0), (_, t1), (_, t2), (_, t3) = setup["workers"]
    first = [next_task(client, t).get_json()["items"][0]["id"] for t in (t0, t1, t2)]
    assert len(set(first)) == 3  # every item gets its first answer before any gets a second
    proj = setup["project"]
    item = session.scalar(select(Item).where(Item.project_id == proj.id, Item.external_id == "it2"))
    resp = client.post(f"/api/v1/projects/{proj.id}/items/priority", json={"items": [
        {"external_id": "it2", "priority": 10}]}, headers=auth(setup["owner_token"]))
    assert resp.status_code == 200 and resp.get_json() == {"updated": 1}
    assert session.scalar(select(Item.priority).where(Item.id == item.id)) == 10
    assert item_id(client, next_task(client, t3).get_json()["items"][0]["id"]) == item.id
    bad = client.post(f"/api/v1/projects/{proj.id}/items/priority", json={"items": [
        {"external_id": "nope", "priority": 1}]}, headers=auth(setup["owner_token"]))
    assert bad.status_code == 422 and "nope" in bad.get_json()["errors"]["items"]


def test_a_worker_never_gets_a_hit_twice_and_a_returned_one_comes_back_only_when_nothing_else_is_left(client, setup):
    _, token = setup["workers"][0]
    seen = set()
    for _ in range(3):
        task = next_task(client, token).get_json()
        assert task["items"][0]["id"] not in seen
        seen.add(task["items"][0]["id"])
        submit(client, token, task)
    assert next_task(client, token).status_code == 404
    _, other = setup["workers"][1]
    task = next_task(client, other).get_json()
    returned = client.post(f"/api/v1/assignments/{task['assignment_id']}/return", headers=auth(other))
    assert returned.status_code == 200 and returned.get_json()["status"] == "returned"
    assert client.post(f"/api/v1/assignments/{task['assignment_id']}/return", headers=auth(other)).status_code == 200
    assert submit(client, other, task).status_code == 409
    # Not straight back (a returned gold task would not be either: the two must look alike) ...
    rest = []
    for _ in range(2):
        again = next_task(client, other).get_json()
        assert again["items"][0]["id"] != task["items"][0]["id"]
        rest.append(again["items"][0]["id"])
        submit(client, other, again)
    # ... but once the rest is done, the returned HIT is served again: returning never uses a task up.
    assert next_task(client, other).get_json()["items"][0]["id"] == task["items"][0]["id"]


def test_return_frees_the_slot_at_once(client, session, clock, setup):
    _, token = setup["workers"][0]
    task = next_task(client, token).get_json()
    clock.advance(seconds=7)
    body = client.post(f"/api/v1/assignments/{task['assignment_id']}/return", headers=auth(token)).get_json()
    assert body["duration_ms"] == 7000
    slot_states = session.scalars(select(HitSlot.state).join(Assignment, Assignment.hit_id == HitSlot.hit_id)
                                  .where(Assignment.id == task["assignment_id"])).all()
    assert set(slot_states) == {SlotState.FREE}


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_paused_or_cancelled_batches_give_nothing(client, setup, action):
    proj, batch = setup["project"], setup["batch"]
    client.post(f"/api/v1/projects/{proj.id}/batches/{batch.id}/{action}", headers=auth(setup["owner_token"]))
    resp = next_task(client, setup["workers"][0][1])
    assert resp.status_code == 404 and resp.mimetype == PROBLEM
    assert resp.get_json()["reason"] == "no_open_batches"


def test_expired_batches_give_nothing(client, clock, setup):
    clock.advance(days=8)
    assert next_task(client, setup["workers"][0][1]).get_json()["reason"] == "no_open_batches"


def test_blocked_workers_get_nothing(client, session, clock, setup):
    worker, token = setup["workers"][0]
    session.add(WorkerBlock(account_id=worker.id, project_id=setup["project"].id, reason="test", created_at=clock()))
    session.commit()
    resp = next_task(client, token, project_id=setup["project"].id)
    assert resp.status_code == 403 and resp.get_json()["reason"] == "blocked"
    # Without a project filter too: told they are blocked, not that no batch is open.
    unfiltered = next_task(client, token)
    assert unfiltered.status_code == 403 and unfiltered.get_json()["reason"] == "blocked"
    session.add(WorkerBlock(account_id=worker.id, reason="global", created_at=clock()))
    session.commit()
    assert next_task(client, token).status_code == 403


def test_expired_blocks_lapse(client, session, clock, setup):
    import datetime as dt

    worker, token = setup["workers"][0]
    session.add(WorkerBlock(account_id=worker.id, reason="cool-off", created_at=clock(),
                            expires_at=clock() + dt.timedelta(hours=1)))
    session.commit()
    assert next_task(client, token).status_code == 403
    clock.advance(hours=2)
    assert next_task(client, token).status_code == 200


def test_roles_and_ownership(client, setup):
    assert next_task(client, setup["owner_token"]).status_code == 403
    task = next_task(client, setup["workers"][0][1]).get_json()
    other = setup["workers"][1][1]
    assert client.get(f"/api/v1/assignments/{task['assignment_id']}", headers=auth(other)).status_code == 404
    assert submit(client, other, task).status_code == 404
    assert client.post(f"/api/v1/assignments/{task['assignment_id']}/return", headers=auth(other)).status_code == 404
    assert next_task(client, other, project_id=999999).status_code == 404


def test_answers_record_the_guideline_version_of_their_lease(client, session, setup):
    proj = setup["project"]
    _, t0 = setup["workers"][0]
    old = next_task(client, t0).get_json()
    client.patch(f"/api/v1/projects/{proj.id}", json={"instructions": "v2"}, headers=auth(setup["owner_token"]))
    _, t1 = setup["workers"][1]
    new = next_task(client, t1).get_json()
    assert (old["guidelines"]["version"], new["guidelines"]["version"]) == (1, 2)
    assert new["guidelines"]["instructions"] == "v2"
    submit(client, t0, old)
    submit(client, t1, new)
    versions = dict(session.execute(select(Answer.assignment_id, Answer.guideline_version)).all())
    assert versions == {old["assignment_id"]: 1, new["assignment_id"]: 2}


def test_sweeper_tidies_lapsed_leases(session, clock, setup):
    worker, _ = setup["workers"][0]
    assignment = next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=clock())
    assert sweep_expired(session, now=clock()) == 0
    clock.advance(seconds=601)
    assert sweep_expired(session, now=clock()) == 1
    assert session.get(Assignment, assignment.id).status == AssignmentStatus.EXPIRED
    assert session.scalar(select(func.count()).select_from(HitSlot).where(HitSlot.state == SlotState.LEASED)) == 0


def test_external_identities(client, session, clock, setup):
    worker, _ = setup["workers"][0]
    _, ops_token = account(session, Role.OPS, now=clock())
    resp = client.post(f"/api/v1/workers/{worker.id}/identities", json={"platform": "mturk",
                                                                        "external_id": "A1B2C3"},
                       headers=auth(ops_token))
    assert resp.status_code == 201
    assert worker_for_identity(session, platform="mturk", external_id="A1B2C3", now=clock()).id == worker.id
    fresh = worker_for_identity(session, platform="mturk", external_id="ZZZ", now=clock())
    assert fresh.id != worker.id and fresh.role == Role.WORKER
    other, _ = setup["workers"][1]
    with pytest.raises(Exception, match="belongs to another account"):
        link_identity(session, account_id=other.id, platform="mturk", external_id="A1B2C3", now=clock())
    assert client.post(f"/api/v1/workers/{worker.id}/identities", json={"platform": "mturk", "external_id": "x"},
                       headers=auth(setup["owner_token"])).status_code == 403


def test_work_is_served_with_redis_down(database, clock, setup):
    app = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": "redis://127.0.0.1:1/0"})
    http = app.test_client()
    assert http.get("/healthz").get_json()["status"] == "degraded"
    _, token = setup["workers"][0]
    task = next_task(http, token).get_json()
    assert submit(http, token, task).status_code == 200


def _second_project(session, clock, setup, **overrides):
    """Another project of the same requester with one published batch of two plain items."""
    proj = project(session, setup["owner"], now=clock(), assignments_per_item=1, **overrides)
    items(session, proj, 2, now=clock(), prefix="p2-")
    batch, _ = publish_batch(session, project_id=proj.id, account=setup["owner"], now=clock())
    return proj, batch


def test_one_task_at_a_time_across_projects(client, session, clock, setup):
    _, token = setup["workers"][0]
    held = next_task(client, token, project_id=setup["project"].id).get_json()
    other, _ = _second_project(session, clock, setup)
    resp = next_task(client, token, project_id=other.id)
    assert resp.status_code == 409 and resp.mimetype == PROBLEM
    assert resp.get_json()["reason"] == "task_held" and resp.get_json()["assignment_id"] == held["assignment_id"]
    assert next_task(client, token).get_json()["assignment_id"] == held["assignment_id"]  # any project: that one
    submit(client, token, held)
    assert next_task(client, token, project_id=other.id).get_json()["project"]["id"] == other.id


def test_lapsed_slots_are_served_before_free_ones(client, session, clock, setup):
    (_, t0), (_, t1), (_, t2), _ = setup["workers"]
    first = next_task(client, t0).get_json()
    clock.advance(seconds=601)  # past the 600 s lease: the slot is free again, though nobody swept it
    again = next_task(client, t1).get_json()
    assert again["items"][0]["id"] == first["items"][0]["id"]
    assert submit(client, t0, first).status_code == 410
    assert next_task(client, t2).get_json()["items"][0]["id"] != first["items"][0]["id"]


def test_several_open_batches_are_served_by_priority_then_breadth(client, session, clock, setup):
    other, _ = _second_project(session, clock, setup)
    (_, t0), (_, t1), (_, t2), (_, t3) = setup["workers"]
    assert next_task(client, t0).get_json()["project"]["id"] == setup["project"].id  # older batch, same key
    resp = client.post(f"/api/v1/projects/{other.id}/items/priority", json={"items": [
        {"external_id": "p2-1", "priority": 5}]}, headers=auth(setup["owner_token"]))
    assert resp.status_code == 200
    top = next_task(client, t1).get_json()
    assert top["project"]["id"] == other.id
    assert session.get(Item, item_id(client, top["items"][0]["id"])).external_id == "p2-1"
    # Then breadth first over both batches: the first project's unanswered items before anyone's second answer.
    rest = [next_task(client, t).get_json() for t in (t2, t3)]
    assert {r["project"]["id"] for r in rest} == {setup["project"].id}
