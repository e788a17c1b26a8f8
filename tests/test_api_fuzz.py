"""schemathesis against the app in process: every operation, with generated valid and invalid requests, answers
no 5xx, and every response (errors included) has a status, content type and body the OpenAPI spec documents.

The requests carry a token of the role the operation is for, and path ids both of real rows (a world built
through the API) and generated ones. The example budget is small and the seed fixed, so the run is the same
every time and takes seconds, not minutes.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from base.identity import Role
from tests.factories import account, auth, jsonl
from workers.service import issue_token

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 5  # per operation, mode and kind of path ids
SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


@dataclass
class World:
    accounts: dict[Role, Any]
    ids: dict[str, int] = field(default_factory=dict)


def _ok(resp, status: int = 200) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


@pytest.fixture
def world(client, session, clock) -> World:
    """A project with items, gold, a batch, answers, a held task, a run, a qualification with an attempt and a
    grant, a flag and (when the worker met gold) a dispute: every kind of row a path can name."""
    (owner, owner_token), (ops, ops_token) = (account(session, r, now=clock()) for r in (Role.REQUESTER, Role.OPS))
    (worker, worker_token), (other, _) = (account(session, Role.WORKER, now=clock()) for _ in range(2))
    req, wrk, opsh = auth(owner_token), auth(worker_token), auth(ops_token)
    w = World({Role.REQUESTER: owner, Role.OPS: ops, Role.WORKER: worker})
    labels = {"type": "single_choice", "categories": [{"key": k, "name": k} for k in ("pos", "neg")]}
    proj = _ok(client.post("/api/v1/projects", headers=req, json={
        "title": "Fuzzed", "label_schema": labels, "reward_cents": 5, "estimated_seconds": 20, "gold_rate": 0.1,
        "gold_feedback": True}), 201)
    p = f"/api/v1/projects/{proj['id']}"
    records = [{"external_id": f"r{i}", "data": {"text": f"real {i}"}} for i in range(20)]
    records += [{"external_id": f"g{i}", "data": {"text": f"gold {i}"}, "gold": "pos"} for i in range(10)]
    _ok(client.post(f"{p}/items", headers=req, data=jsonl(records), content_type="application/x-ndjson"), 201)
    batch = _ok(client.post(f"{p}/batches", headers=req, json={}), 201)
    gold_item = _ok(client.get(f"{p}/items?gold=true", headers=req))["data"][0]
    # The worker answers "neg" until gold feedback shows a miss to contest (gold is 10% of tasks).
    for _ in range(15):
        task = _ok(client.post("/api/v1/work/next", headers=wrk))
        answers = [{"item_id": i["id"], "answer": "neg"} for i in task["items"]]
        result = _ok(client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=wrk,
                                 json={"answers": answers}))
        if result["feedback"]:
            dispute = _ok(client.post(f"/api/v1/assignments/{task['assignment_id']}/disputes", headers=wrk,
                                      json={"item_id": result["feedback"][0]["item_id"], "note": "it is neg"}), 201)
            w.ids["dispute_id"] = dispute["id"]
            break
    held = _ok(client.post("/api/v1/work/next", headers=wrk))
    run = _ok(client.post(f"{p}/aggregations", headers=req, json={"method": "mv"}), 202)
    qual = _ok(client.post("/api/v1/qualifications", headers=req, json={
        "name": "Sentiment test", "label_schema": labels, "passing_score": 50,
        "questions": [{"data": {"text": "great"}, "answer": "pos"}]}), 201)
    attempt = _ok(client.post(f"/api/v1/qualification-tests/{qual['id']}/attempts", headers=wrk), 201)
    _ok(client.post(f"/api/v1/qualifications/{qual['id']}/grants", headers=req,
                    json={"worker_id": worker.id, "reason": "known to us"}), 201)
    flag = _ok(client.post("/api/v1/ops/flags", headers=opsh, json={"worker_id": other.id, "note": "odd"}), 201)
    spare = _ok(client.post("/api/v1/tokens", headers=req, json={"name": "spare"}), 201)
    w.ids.update(project_id=proj["id"], version=1, item_id=gold_item["id"], batch_id=batch["id"],
                 run_id=run["id"], assignment_id=held["assignment_id"], type_id=qual["id"],
                 attempt_id=attempt["id"], flag_id=flag["id"], token_id=spare["id"], worker_id=worker.id)
    return w


def _roles(app, path: str, method: str) -> tuple[Role, ...]:
    """The roles the operation's view is for (`requires`); a requester's token where it needs none."""
    endpoint, _ = app.url_map.bind("localhost").match(re.sub(r"\{\w+\}", "1", path), method=method.upper())
    view = app.view_functions[endpoint]
    view = getattr(getattr(view, "view_class", None), method.lower(), view)
    return getattr(view, "_roles", None) or (Role.REQUESTER,)


def _strict(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without `default` responses, so an undocumented 4xx fails status_code_conformance (5xx fail
    not_a_server_error anyway)."""
    spec = copy.deepcopy(spec)
    for path in spec["paths"].values():
        for operation in path.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("default", None)
    return spec


def _failures(exc: BaseException) -> list[str]:
    """Each failure's title and the lines that say where (the value and the schema path for a body)."""
    return [" / ".join(line.strip() for line in str(f).strip().splitlines()[:4] if line.strip())
            for f in getattr(exc, "exceptions", [exc])]


def _fuzz(operation: Any, token: str, mode: schemathesis.GenerationMode, path_parameters: dict[str, int],
          found: dict[tuple[str, str], str]) -> int:
    """Send the operation's generated requests; record each failure once (with an example); the count sent."""
    sent = 0

    @given(case=operation.as_strategy(mode, path_parameters=path_parameters or None))
    @SETTINGS
    def call(case: schemathesis.Case) -> None:
        nonlocal sent
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        response = case.call()
        sent += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # noqa: BLE001 - schemathesis raises a group of failures
            if isinstance(exc, KeyboardInterrupt):
                raise
            for failure in _failures(exc):
                found.setdefault((operation.label, failure), f"{response.status_code}: {response.text[:300]}\n"
                                                             f"    {case.as_curl_command()[:500]}")

    call()
    return sent


def test_every_operation_keeps_to_the_spec(app, client, session, clock, world):
    spec = client.get("/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(_strict(spec))
    schema.app = app
    found: dict[tuple[str, str], str] = {}
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        # A fresh token per operation: one that revokes tokens revokes only its own.
        _, token = issue_token(session, account=world.accounts[_roles(app, operation.path, operation.method)[0]],
                               now=clock())
        session.commit()
        names = [p.name for p in operation.path_parameters]
        fixed = {n: world.ids[n] for n in names if n in world.ids}
        sent += _fuzz(operation, token, schemathesis.GenerationMode.POSITIVE, fixed, found)
        sent += _fuzz(operation, token, schemathesis.GenerationMode.NEGATIVE, fixed, found)
        if names:  # generated ids: mostly rows that do not exist
            sent += _fuzz(operation, token, schemathesis.GenerationMode.POSITIVE, {}, found)
    report = "\n".join(f"{label}: {failure}\n    {example}" for (label, failure), example in sorted(found.items()))
    assert not found, f"{len(found)} problems in {sent} requests:\n{report}"
    assert sent > 500
