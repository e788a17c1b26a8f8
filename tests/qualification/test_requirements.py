"""Qualification requirements on projects and batches, and the scheduler honouring them."""

from __future__ import annotations

import pytest

from base.identity import Role
from qualification import requirements as req
from tests.factories import account, auth, items, project_payload
from tests.qualification.test_api import KNOWN, TYPES, submit, type_payload

PROJECTS = "/api/v1/projects"


@pytest.mark.parametrize("comparator,values,held,expected", [
    ("GreaterThanOrEqualTo", [80], 80, True), ("GreaterThanOrEqualTo", [80], 79, False),
    ("GreaterThan", [80], 80, False), ("LessThan", [3], 2, True), ("LessThanOrEqualTo", [3], 3, True),
    ("EqualTo", [1], 1, True), ("EqualTo", [1], 2, False), ("NotEqualTo", [1], 2, True),
    ("NotEqualTo", [1], None, False), ("LessThan", [50], None, False),  # not held: only DoesNotExist is met
    ("Exists", [], 0, True), ("Exists", [], None, False), ("DoesNotExist", [], None, True),
    ("DoesNotExist", [], 5, False), ("In", [1, 2], 2, True), ("In", [1, 2], 3, False),
    ("NotIn", [1, 2], 3, True), ("NotIn", [1, 2], 1, False), ("NotIn", [1, 2], None, False),
])
def test_comparators_follow_mturk(comparator, values, held, expected):
    assert req.meets({"qualification_id": 1, "comparator": comparator, "values": values}, held) is expected


@pytest.fixture
def gated(client, session, clock):
    """A requester with a qualification type (with a test) and a project requiring a score of at least 80."""
    owner, token = account(session, Role.REQUESTER, now=clock())
    qtype = client.post(TYPES, json=type_payload(retry_delay_seconds=0), headers=auth(token)).get_json()
    body = project_payload(qualification_requirements=[
        {"qualification_id": qtype["id"], "comparator": "GreaterThanOrEqualTo", "values": [80]}])
    proj = client.post(PROJECTS, json=body, headers=auth(token))
    assert proj.status_code == 201, proj.get_json()
    from market.catalogue.models import Project

    items(session, session.get(Project, proj.get_json()["id"]), 4, now=clock())
    batch = client.post(f"{PROJECTS}/{proj.get_json()['id']}/batches", json={}, headers=auth(token))
    assert batch.status_code == 201
    return {"owner": owner, "token": token, "type": qtype, "project": proj.get_json(), "batch": batch.get_json()}


def next_task(client, token, **query):
    return client.post("/api/v1/work/next", query_string=query, headers=auth(token))


def test_a_batch_takes_the_projects_requirements(gated):
    wanted = [{"qualification_id": gated["type"]["id"], "comparator": "GreaterThanOrEqualTo", "values": [80]}]
    assert gated["project"]["qualification_requirements"] == wanted
    assert gated["batch"]["qualification_requirements"] == wanted


def test_a_worker_without_the_qualification_gets_403_naming_it_and_its_test(client, session, clock, gated):
    _, token = account(session, Role.WORKER, now=clock())
    resp = next_task(client, token)
    assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["reason"] == "qualification_required"
    assert body["missing"] == [{"qualification_id": gated["type"]["id"], "name": "Sentiment screener",
                                "comparator": "GreaterThanOrEqualTo", "values": [80], "your_value": None,
                                "test": f"/api/v1/qualification-tests/{gated['type']['id']}/attempts"}]


def test_passing_the_test_opens_the_work(client, session, clock, gated):
    _, token = account(session, Role.WORKER, now=clock())
    attempt = client.post(next_task(client, token).get_json()["missing"][0]["test"], headers=auth(token)).get_json()
    assert submit(client, token, attempt, KNOWN).get_json()["passed"] is True
    resp = next_task(client, token)
    assert resp.status_code == 200 and resp.get_json()["project"]["id"] == gated["project"]["id"]


def test_a_value_below_the_threshold_is_not_enough_and_a_revoke_shuts_the_work_again(client, session, clock, gated):
    worker, token = account(session, Role.WORKER, now=clock())
    grants = f"{TYPES}/{gated['type']['id']}/grants"
    client.post(grants, json={"username": worker.username, "value": 79, "reason": "trial"},
                headers=auth(gated["token"]))
    low = next_task(client, token)
    assert low.status_code == 403 and low.get_json()["missing"][0]["your_value"] == 79
    client.post(grants, json={"worker_id": worker.id, "value": 80, "reason": "trial"},
                headers=auth(gated["token"]))  # by id now: the grant above made them the requester's worker
    task = next_task(client, token).get_json()
    submit_resp = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=auth(token),
                              json={"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]})
    assert submit_resp.status_code == 200
    client.post(f"{grants}/{worker.id}/revoke", json={"reason": "spot check failed"}, headers=auth(gated["token"]))
    assert next_task(client, token).status_code == 403


def test_does_not_exist_keeps_holders_out(client, session, clock, gated):
    pid = gated["project"]["id"]
    patched = client.patch(f"{PROJECTS}/{pid}", headers=auth(gated["token"]), json={"qualification_requirements": [
        {"qualification_id": gated["type"]["id"], "comparator": "DoesNotExist"}]})
    assert patched.status_code == 200
    from market.catalogue.models import Project

    items(session, session.get(Project, pid), 2, now=clock(), prefix="later")
    newer = client.post(f"{PROJECTS}/{pid}/batches", json={}, headers=auth(gated["token"])).get_json()
    assert newer["qualification_requirements"][0]["comparator"] == "DoesNotExist"
    holder, holder_token = account(session, Role.WORKER, now=clock())
    client.post(f"{TYPES}/{gated['type']['id']}/grants", json={"username": holder.username, "reason": "did study 1"},
                headers=auth(gated["token"]))
    _, newcomer_token = account(session, Role.WORKER, now=clock())
    # The first batch kept its terms (80+ required); the second admits only those without the qualification.
    assert next_task(client, holder_token).status_code == 403
    task = next_task(client, newcomer_token)
    assert task.status_code == 200 and task.get_json()["items"][0]["data"]["text"].startswith("text")


def test_an_ungated_batch_still_serves_workers_the_gated_one_turns_away(client, session, clock, gated):
    from market.catalogue.models import Project

    open_project = client.post(PROJECTS, json=project_payload(title="open to all"), headers=auth(gated["token"]))
    pid = open_project.get_json()["id"]
    items(session, session.get(Project, pid), 2, now=clock(), prefix="open")
    client.post(f"{PROJECTS}/{pid}/batches", json={}, headers=auth(gated["token"]))
    _, token = account(session, Role.WORKER, now=clock())
    task = next_task(client, token)
    assert task.status_code == 200 and task.get_json()["project"]["id"] == pid
    _, fresh_token = account(session, Role.WORKER, now=clock())
    only_gated = next_task(client, fresh_token, project_id=gated["project"]["id"])
    assert only_gated.status_code == 403 and only_gated.get_json()["reason"] == "qualification_required"


def test_a_batch_can_be_published_with_its_own_requirements(client, session, clock, gated):
    from market.catalogue.models import Project

    plain = client.post(PROJECTS, json=project_payload(title="plain"), headers=auth(gated["token"])).get_json()
    items(session, session.get(Project, plain["id"]), 2, now=clock(), prefix="own")
    own = [{"qualification_id": gated["type"]["id"], "comparator": "Exists", "values": []}]
    batch = client.post(f"{PROJECTS}/{plain['id']}/batches", json={"qualification_requirements": own},
                        headers=auth(gated["token"])).get_json()
    assert plain["qualification_requirements"] is None and batch["qualification_requirements"] == own
    _, token = account(session, Role.WORKER, now=clock())
    assert next_task(client, token, project_id=plain["id"]).status_code == 403


@pytest.mark.parametrize("requirement,field", [
    ({"comparator": "GreaterThan", "values": []}, "values"),
    ({"comparator": "In", "values": list(range(16))}, "values"),
    ({"comparator": "Exists", "values": [1]}, "values"),
    ({"comparator": "Roughly", "values": [1]}, "comparator"),
])
def test_badly_formed_requirements_are_422(client, gated, requirement, field):
    body = project_payload(qualification_requirements=[{"qualification_id": gated["type"]["id"], **requirement}])
    resp = client.post(PROJECTS, json=body, headers=auth(gated["token"]))
    assert resp.status_code == 422
    assert field in resp.get_json()["errors"]["qualification_requirements"]["0"]


def test_requirements_must_name_your_own_types(client, session, clock, gated):
    _, other_token = account(session, Role.REQUESTER, now=clock())
    body = project_payload(qualification_requirements=[
        {"qualification_id": gated["type"]["id"], "comparator": "Exists"}])
    resp = client.post(PROJECTS, json=body, headers=auth(other_token))
    assert resp.status_code == 422 and resp.get_json()["errors"]["qualification_requirements"] == {
        "0": [f"unknown qualification type {gated['type']['id']}"]}
    assert client.get(PROJECTS, headers=auth(other_token)).get_json()["data"] == []
