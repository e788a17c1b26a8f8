"""A block's effect on the worker's work: live leases end, answers are excluded (kept) and their items reopened
for other workers; lifting the block restores the answers and takes back the reopened slots still free."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Answer, HitSlot, SlotState
from tests.factories import account, auth, items, project

OPS = "/api/v1/ops/flags"


def next_task(client, token, project_id):
    resp = client.post("/api/v1/work/next", query_string={"project_id": project_id}, headers=auth(token))
    return resp


def do_task(client, token, project_id):
    task = next_task(client, token, project_id)
    assert task.status_code == 200, task.get_json()
    task = task.get_json()
    done = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=auth(token),
                       json={"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]})
    assert done.status_code == 200
    return task


@pytest.fixture
def market(client, session, clock):
    owner, owner_token = account(session, Role.REQUESTER, now=clock())
    projects = []
    for n in range(2):
        proj = project(session, owner, now=clock(), title=f"p{n}", assignments_per_item=2, items_per_hit=1)
        items(session, proj, 3, now=clock(), prefix=f"p{n}-")
        batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=clock())
        projects.append((proj, batch))
    _, ops_token = account(session, Role.OPS, now=clock())
    workers = [account(session, Role.WORKER, now=clock()) for _ in range(4)]
    return {"owner_token": owner_token, "projects": projects, "ops_token": ops_token, "workers": workers}


def free_slots(session, batch_id):
    return session.scalar(select(func.count()).select_from(HitSlot).where(
        HitSlot.batch_id == batch_id, HitSlot.state == SlotState.FREE))


def live_answers(client, owner_token, project_id, worker_id):
    rows = client.get(f"/api/v1/projects/{project_id}/answers", query_string={"worker_id": worker_id},
                      headers=auth(owner_token)).get_json()["data"]
    return len(rows)


def test_a_block_excludes_answers_reopens_items_and_ends_leases_and_an_unblock_restores(client, session, market):
    (a, batch_a), (b, _) = market["projects"]
    (bad, bad_token), (good, good_token), (third, third_token), _ = market["workers"]
    do_task(client, bad_token, a.id)
    do_task(client, bad_token, a.id)
    held = next_task(client, bad_token, a.id).get_json()  # a live lease at block time
    do_task(client, good_token, a.id)
    free_before = free_slots(session, batch_a.id)
    assert live_answers(client, market["owner_token"], a.id, bad.id) == 2

    fid = client.post(OPS, json={"worker_id": bad.id, "project_id": a.id, "note": "random answers"},
                      headers=auth(market["ops_token"])).get_json()["id"]
    blocked = client.post(f"{OPS}/{fid}/block", json={"scope": "project", "reason": "gold 30%"},
                          headers=auth(market["ops_token"]))
    assert blocked.status_code == 200
    assert blocked.get_json()["events"][-1]["note"] == "ended 1 lease(s), excluded 2 answer(s), reopened 2 item slot(s)"

    # Answers kept but excluded from what the requester sees and from progress; items reopened; the lease ended.
    assert session.scalar(select(func.count()).select_from(Answer).where(Answer.worker_id == bad.id)) == 2
    assert live_answers(client, market["owner_token"], a.id, bad.id) == 0
    assert free_slots(session, batch_a.id) == free_before + 2 + 1  # two reopened, the ended lease's slot freed
    progress = client.get(f"/api/v1/projects/{a.id}/batches/{batch_a.id}/progress",
                          headers=auth(market["owner_token"])).get_json()
    assert progress["answers"] == 1
    late = client.post(f"/api/v1/assignments/{held['assignment_id']}/submit", headers=auth(bad_token),
                       json={"answers": [{"item_id": i["id"], "answer": "pos"} for i in held["items"]]})
    assert late.status_code == 410
    assert next_task(client, bad_token, a.id).status_code == 403
    assert next_task(client, bad_token, b.id).status_code == 200  # the block is for project a only

    # Other workers restore the redundancy: every item of a gets its two answers without the blocked worker's.
    for token in (good_token, good_token, third_token, third_token, third_token):
        do_task(client, token, a.id)
    progress = client.get(f"/api/v1/projects/{a.id}/batches/{batch_a.id}/progress",
                          headers=auth(market["owner_token"])).get_json()
    assert progress["items_complete"] == 3 and progress["answers"] == 6

    unblocked = client.post(f"{OPS}/{fid}/unblock", json={"reason": "gold item was wrong"},
                            headers=auth(market["ops_token"]))
    assert unblocked.status_code == 200
    assert live_answers(client, market["owner_token"], a.id, bad.id) == 2
    assert free_slots(session, batch_a.id) == 0  # the reopened slots were all taken; nothing left to take back


def test_an_unblock_takes_back_reopened_slots_nobody_took(client, session, market):
    (a, batch_a), _ = market["projects"]
    (bad, bad_token), *_ = market["workers"]
    do_task(client, bad_token, a.id)
    free_before = free_slots(session, batch_a.id)
    fid = client.post(OPS, json={"worker_id": bad.id, "project_id": a.id, "note": "n"},
                      headers=auth(market["ops_token"])).get_json()["id"]
    client.post(f"{OPS}/{fid}/block", json={"scope": "project", "reason": "r"}, headers=auth(market["ops_token"]))
    assert free_slots(session, batch_a.id) == free_before + 1
    client.post(f"{OPS}/{fid}/unblock", json={"reason": "r"}, headers=auth(market["ops_token"]))
    assert free_slots(session, batch_a.id) == free_before
    assert live_answers(client, market["owner_token"], a.id, bad.id) == 1


def test_a_block_from_all_work_reaches_every_project(client, session, market):
    (a, _), (b, _) = market["projects"]
    (bad, bad_token), *_ = market["workers"]
    do_task(client, bad_token, a.id)
    do_task(client, bad_token, b.id)
    fid = client.post(OPS, json={"worker_id": bad.id, "note": "n"}, headers=auth(market["ops_token"])).get_json()["id"]
    client.post(f"{OPS}/{fid}/block", json={"scope": "all", "reason": "r"}, headers=auth(market["ops_token"]))
    assert live_answers(client, market["owner_token"], a.id, bad.id) == 0
    assert live_answers(client, market["owner_token"], b.id, bad.id) == 0
    export = client.get(f"/api/v1/projects/{b.id}/answers/export", query_string={"format": "jsonl"},
                        headers=auth(market["owner_token"]))
    assert export.status_code == 200 and export.get_data(as_text=True).strip() == ""
