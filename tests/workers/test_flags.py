"""Ops review of flagged workers: flag, list and filter, block (project or all, optional expiry), unblock,
dismiss; every step in the audit trail; blocks stop new work at once."""

from __future__ import annotations

import datetime as dt

import pytest

from base.identity import Role
from market.catalogue.batches import publish_batch
from tests.factories import account, auth, items, project
from workers import flags
from workers.models import FlagReason

OPS = "/api/v1/ops/flags"


@pytest.fixture
def crowd(session, clock):
    owner, owner_token = account(session, Role.REQUESTER, now=clock())
    projects = []
    for n in range(2):
        proj = project(session, owner, now=clock(), title=f"p{n}")
        items(session, proj, 3, now=clock(), prefix=f"p{n}-")
        publish_batch(session, project_id=proj.id, account=owner, now=clock())
        projects.append(proj)
    ops, ops_token = account(session, Role.OPS, now=clock())
    worker, worker_token = account(session, Role.WORKER, now=clock())
    return {"owner_token": owner_token, "projects": projects, "ops": ops, "ops_token": ops_token,
            "worker": worker, "worker_token": worker_token}


def flag(client, crowd, project_id=None, note="answers in under a second"):
    return client.post(OPS, json={"worker_id": crowd["worker"].id, "project_id": project_id, "note": note,
                                  "evidence": {"metric": "median_seconds", "threshold": 2, "n": 40}},
                       headers=auth(crowd["ops_token"]))


def next_status(client, crowd, project_id):
    return client.post("/api/v1/work/next", query_string={"project_id": project_id},
                       headers=auth(crowd["worker_token"]))


def test_only_ops_review_flags(client, crowd):
    for token in (crowd["owner_token"], crowd["worker_token"]):
        assert client.get(OPS, headers=auth(token)).status_code == 403
        assert flag(client, {**crowd, "ops_token": token}).status_code == 403


def test_ops_flag_a_worker_by_hand_with_a_note_and_evidence(client, crowd):
    resp = flag(client, crowd, crowd["projects"][0].id)
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["reason"] == "MANUAL" and body["state"] == "open" and body["block"] is None
    assert body["evidence"] == {"metric": "median_seconds", "threshold": 2, "n": 40}
    assert [(e["action"], e["actor_id"], e["note"]) for e in body["events"]] == [
        ("opened", crowd["ops"].id, "answers in under a second")]


def test_flagging_needs_a_note_a_worker_and_a_real_project(client, crowd):
    no_note = client.post(OPS, json={"worker_id": crowd["worker"].id}, headers=auth(crowd["ops_token"]))
    assert no_note.status_code == 422 and "note" in no_note.get_json()["errors"]
    not_worker = client.post(OPS, json={"worker_id": crowd["ops"].id, "note": "x"}, headers=auth(crowd["ops_token"]))
    assert not_worker.status_code == 404
    assert flag(client, crowd, project_id=999_999).status_code == 422


def test_flags_list_and_filter(client, session, clock, crowd):
    first = flag(client, crowd, crowd["projects"][0].id).get_json()
    second = flag(client, crowd).get_json()
    flags.raise_flag(session, worker_id=crowd["worker"].id, project_id=None, reason=FlagReason.FAST_ANSWERS,
                     note="system", now=clock())
    session.commit()
    listed = client.get(OPS, headers=auth(crowd["ops_token"])).get_json()["data"]
    assert [f["id"] for f in listed][:2] == [first["id"], second["id"]] and len(listed) == 3
    by_project = client.get(OPS, query_string={"project_id": crowd["projects"][0].id},
                            headers=auth(crowd["ops_token"])).get_json()["data"]
    assert [f["id"] for f in by_project] == [first["id"]]
    by_reason = client.get(OPS, query_string={"reason": "FAST_ANSWERS"}, headers=auth(crowd["ops_token"]))
    assert [f["created_by_id"] for f in by_reason.get_json()["data"]] == [None]  # raised by the system
    client.post(f"{OPS}/{second['id']}/dismiss", json={"reason": "fine"}, headers=auth(crowd["ops_token"]))
    opened = client.get(OPS, query_string={"state": "open"}, headers=auth(crowd["ops_token"])).get_json()["data"]
    assert second["id"] not in [f["id"] for f in opened]
    assert client.get(OPS, query_string={"state": "sleeping"}, headers=auth(crowd["ops_token"])).status_code == 422


def test_a_project_block_stops_that_projects_work_at_once_and_only_that(client, crowd):
    blocked_project, other = crowd["projects"]
    fid = flag(client, crowd, blocked_project.id).get_json()["id"]
    resp = client.post(f"{OPS}/{fid}/block", json={"scope": "project", "reason": "random answers"},
                       headers=auth(crowd["ops_token"]))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["state"] == "blocked" and body["block"]["scope"] == "project" and body["block"]["in_force"] is True
    refused = next_status(client, crowd, blocked_project.id)
    assert refused.status_code == 403 and refused.get_json()["reason"] == "blocked"
    assert next_status(client, crowd, other.id).status_code == 200


def test_a_block_from_all_work_with_an_expiry_ends_by_itself(client, clock, crowd):
    fid = flag(client, crowd).get_json()["id"]
    until = (clock() + dt.timedelta(hours=1)).isoformat()
    client.post(f"{OPS}/{fid}/block", json={"scope": "all", "reason": "cool off", "expires_at": until},
                headers=auth(crowd["ops_token"]))
    assert next_status(client, crowd, crowd["projects"][1].id).status_code == 403
    clock.advance(hours=1)
    assert next_status(client, crowd, crowd["projects"][1].id).status_code == 200
    shown = client.get(f"{OPS}/{fid}", headers=auth(crowd["ops_token"])).get_json()
    assert shown["block"]["in_force"] is False


def test_unblock_lifts_the_block_and_the_trail_keeps_every_step(client, crowd):
    fid = flag(client, crowd, crowd["projects"][0].id).get_json()["id"]
    headers = auth(crowd["ops_token"])
    client.post(f"{OPS}/{fid}/block", json={"scope": "project", "reason": "gold 40%"}, headers=headers)
    unblocked = client.post(f"{OPS}/{fid}/unblock", json={"reason": "gold item was wrong"}, headers=headers)
    assert unblocked.status_code == 200 and unblocked.get_json()["state"] == "open"
    assert unblocked.get_json()["block"]["lifted_at"] is not None
    assert next_status(client, crowd, crowd["projects"][0].id).status_code == 200
    dismissed = client.post(f"{OPS}/{fid}/dismiss", json={"reason": "resolved"}, headers=headers).get_json()
    assert [(e["action"], e["note"]) for e in dismissed["events"]] == [
        ("opened", "answers in under a second"), ("blocked", "project: gold 40%"),
        ("applied", "ended 0 lease(s), excluded 0 answer(s), reopened 0 item slot(s)"),
        ("unblocked", "gold item was wrong"), ("restored", "restored 0 answer(s), took back 0 unused item slot(s)"),
        ("dismissed", "resolved")]
    assert all(e["actor_id"] == crowd["ops"].id for e in dismissed["events"])


@pytest.mark.parametrize("first,then,status", [
    ("dismiss", "block", 409), ("dismiss", "dismiss", 409), ("block", "dismiss", 409), (None, "unblock", 409)])
def test_moves_that_make_no_sense_are_409(client, crowd, first, then, status):
    fid = flag(client, crowd, crowd["projects"][0].id).get_json()["id"]
    bodies = {"block": {"scope": "project", "reason": "r"}, "dismiss": {"reason": "r"}, "unblock": {"reason": "r"}}
    if first:
        done = client.post(f"{OPS}/{fid}/{first}", json=bodies[first], headers=auth(crowd["ops_token"]))
        assert done.status_code == 200
    resp = client.post(f"{OPS}/{fid}/{then}", json=bodies[then], headers=auth(crowd["ops_token"]))
    assert resp.status_code == status and resp.mimetype == "application/problem+json"


def test_block_needs_a_reason_a_project_for_project_scope_and_a_future_expiry(client, clock, crowd):
    fid = flag(client, crowd).get_json()["id"]  # no project
    headers = auth(crowd["ops_token"])
    assert client.post(f"{OPS}/{fid}/block", json={"scope": "all"}, headers=headers).status_code == 422
    no_project = client.post(f"{OPS}/{fid}/block", json={"scope": "project", "reason": "r"}, headers=headers)
    assert no_project.status_code == 422 and "scope" in no_project.get_json()["errors"]
    past = client.post(f"{OPS}/{fid}/block", headers=headers,
                       json={"scope": "all", "reason": "r", "expires_at": (clock() - dt.timedelta(1)).isoformat()})
    assert past.status_code == 422 and "expires_at" in past.get_json()["errors"]
    assert client.get(f"{OPS}/{fid}", headers=headers).get_json()["state"] == "open"
