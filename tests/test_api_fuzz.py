"""schemathesis against the app in process: every operation, with generated valid and invalid requests, answers
no 5xx, and every response (errors included) has a status, content type and body the OpenAPI spec documents.

Each operation is sent with a requester's, a worker's and an ops token and with none (a part per role); a role
it is not for must be refused with a documented problem. The requests carry path ids both of real rows (a world
built through the API) and generated ones. The example budget is small and the seed fixed, so the run is the same
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


def _fuzz(operation: Any, token: str | None, mode: schemathesis.GenerationMode, path_parameters: dict[str, int],
          found: dict[tuple[str, str], str], *, examples: int = EXAMPLES,
          expected: frozenset[int] | None = None) -> int:
    """Send the operation's generated requests (with `token`, or none); record each failure once (with an
    example), and a status outside `expected` as one too; the count sent."""
    sent = 0

    @given(case=operation.as_strategy(mode, path_parameters=path_parameters or None))
    @settings(SETTINGS, max_examples=examples)
    def call(case: schemathesis.Case) -> None:
        nonlocal sent
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, "Authorization": f"Bearer {token}"} if token else headers
        response = case.call()
        sent += 1
        failures = []
        if expected is not None and response.status_code not in expected:
            failures.append(f"status {response.status_code}, expected one of {sorted(expected)}")
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # noqa: BLE001 - schemathesis raises a group of failures
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures += _failures(exc)
        for failure in failures:
            found.setdefault((operation.label, failure), f"{response.status_code}: {response.text[:300]}\n"
                                                         f"    {case.as_curl_command()[:500]}")

    call()
    return sent


# The parts: each operation with each role's token, and with none. The role an operation is first for gets the
# full budget (valid and invalid requests, real and generated ids), its other roles (ops reads what requesters
# do) one valid and one invalid request, and so do a wrong role and no token, which must be refused (403 or 401:
# the role is checked before anything else is looked at), or 404 where the path names no route.
PARTS = [(Role.REQUESTER, slice(0, None, 2)), (Role.REQUESTER, slice(1, None, 2)), (Role.WORKER, slice(None)),
         (Role.OPS, slice(None)), (None, slice(None))]
REFUSED = {Role.REQUESTER: frozenset({403, 404}), Role.WORKER: frozenset({403, 404}),
           Role.OPS: frozenset({403, 404}), None: frozenset({401, 404})}
ALSO_EXAMPLES = DENIED_EXAMPLES = 1


def _is_public(spec: dict[str, Any], path: str, method: str) -> bool:
    return spec["paths"][path][method.lower()].get("security") == []


def _fuzz_as(app: Any, spec: dict[str, Any], operation: Any, role: Role | None, token: str | None,
             ids: dict[str, int], found: dict[tuple[str, str], str]) -> int:
    """One operation in one role's part, with the budget and the statuses that role is owed; the count sent."""
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    roles = _roles(app, operation.path, operation.method)
    names = [p.name for p in operation.path_parameters]
    fixed = {n: ids[n] for n in names if n in ids}
    public = _is_public(spec, operation.path, operation.method)
    if role == roles[0] or public and role is not None:
        sent = _fuzz(operation, token, positive, fixed, found) + _fuzz(operation, token, negative, fixed, found)
        if names:  # generated ids: mostly rows that do not exist
            sent += _fuzz(operation, token, positive, {}, found)
        return sent
    if role in roles:
        return sum(_fuzz(operation, token, mode, fixed, found, examples=ALSO_EXAMPLES) for mode in (positive, negative))
    expected = None if public else REFUSED[role]
    return sum(_fuzz(operation, token, mode, fixed, found, examples=DENIED_EXAMPLES, expected=expected)
               for mode in (positive, negative))


@pytest.mark.parametrize(("role", "share"), PARTS, ids=["requester-1", "requester-2", "worker", "ops", "anonymous"])
def test_every_operation_keeps_to_the_spec(app, client, session, clock, world, role, share):
    """Every operation with this role's token (or none). In parts, one per role (the requester's, the largest, in
    two halves of the operations), so test workers share them."""
    spec = client.get("/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(_strict(spec))
    schema.app = app
    found: dict[tuple[str, str], str] = {}
    sent = operations = 0
    for operation in [r.ok() for r in schema.get_all_operations()][share]:
        operations += 1
        token = None
        if role is not None:
            # A fresh token per operation: one that revokes tokens revokes only its own.
            _, token = issue_token(session, account=world.accounts[role], now=clock())
            session.commit()
        sent += _fuzz_as(app, spec, operation, role, token, world.ids, found)
    print(f"{operations} operations, {sent} requests as {role.value if role else 'anonymous'}")
    report = "\n".join(f"{label}: {failure}\n    {example}" for (label, failure), example in sorted(found.items()))
    assert not found, f"{len(found)} problems in {sent} requests:\n{report}"
    assert operations > (90 if share.step is None else 45) and sent >= 2 * operations
