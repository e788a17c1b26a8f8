"""A requester sees and changes only their own projects (404 for others'); ops may read all. Tested per endpoint.

The endpoints are discovered from the app's URL map, so a new route under /api/v1/projects is covered by the
401/403/404 checks as soon as it exists (and the owner check fails until it is given a request body here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from aggregation import service as aggregation
from aggregation.jobs import execute_run
from base.db import Base, Database
from base.identity import Role
from market.catalogue.batches import change_batch_status, publish_batch
from market.catalogue.models import Item, Project
from market.catalogue.projects import update_project
from payments import ledger
from payments.review.approve import reject
from tests.conftest import make_app
from tests.factories import account, answer, auth, in_uow, items, jsonl, project, project_payload
from workers.models import Account, ApiToken
from workers.service import issue_token, revoke_token

PREFIX = "/api/v1/projects"
PROBLEM = "application/problem+json"
_PARAM = re.compile(r"<(?:[^:<>]+:)?(\w+)>")


def _project_rules(app) -> list[tuple[str, str]]:
    return sorted({(rule.rule, method) for rule in app.url_map.iter_rules()
                   if rule.rule == PREFIX or rule.rule.startswith(PREFIX + "/")
                   for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}})


def _discover() -> list[tuple[str, str]]:
    database = Database.from_url("sqlite://")
    try:
        return _project_rules(make_app({"DATABASE": database, "REDIS_URL": None}))
    finally:
        database.engine.dispose()


ENDPOINTS = _discover()
KNOWN = {
    (PREFIX, "GET"), (PREFIX, "POST"),
    (f"{PREFIX}/<int:project_id>", "GET"), (f"{PREFIX}/<int:project_id>", "PATCH"),
    (f"{PREFIX}/<int:project_id>/guidelines", "GET"),
    (f"{PREFIX}/<int:project_id>/guidelines/<int:version>", "GET"),
    (f"{PREFIX}/<int:project_id>/items", "GET"), (f"{PREFIX}/<int:project_id>/items", "POST"),
    (f"{PREFIX}/<int:project_id>/items/<int:item_id>", "GET"),
    (f"{PREFIX}/<int:project_id>/items/<int:item_id>", "PATCH"),
    (f"{PREFIX}/<int:project_id>/items/priority", "POST"),
    (f"{PREFIX}/<int:project_id>/batches", "GET"), (f"{PREFIX}/<int:project_id>/batches", "POST"),
    (f"{PREFIX}/<int:project_id>/batches/<int:batch_id>", "GET"),
    (f"{PREFIX}/<int:project_id>/batches/<int:batch_id>/pause", "POST"),
    (f"{PREFIX}/<int:project_id>/batches/<int:batch_id>/resume", "POST"),
    (f"{PREFIX}/<int:project_id>/batches/<int:batch_id>/cancel", "POST"),
    (f"{PREFIX}/<int:project_id>/batches/<int:batch_id>/progress", "GET"),
    (f"{PREFIX}/<int:project_id>/answers", "GET"),
    (f"{PREFIX}/<int:project_id>/answers/export", "GET"),
    (f"{PREFIX}/<int:project_id>/aggregations", "GET"), (f"{PREFIX}/<int:project_id>/aggregations", "POST"),
    (f"{PREFIX}/<int:project_id>/aggregations/<int:run_id>", "GET"),
    (f"{PREFIX}/<int:project_id>/aggregations/<int:run_id>/labels", "GET"),
    (f"{PREFIX}/<int:project_id>/aggregations/<int:run_id>/workers", "GET"),
    (f"{PREFIX}/<int:project_id>/aggregations/<int:run_id>/export", "GET"),
    (f"{PREFIX}/<int:project_id>/quality-report", "GET"),
    (f"{PREFIX}/<int:project_id>/quality-report/download", "GET"),
    (f"{PREFIX}/<int:project_id>/quality-report/link", "GET"),
    (f"{PREFIX}/<int:project_id>/assignments", "GET"),
    (f"{PREFIX}/<int:project_id>/assignments/<int:assignment_id>/approve", "POST"),
    (f"{PREFIX}/<int:project_id>/assignments/<int:assignment_id>/reject", "POST"),
    (f"{PREFIX}/<int:project_id>/assignments/<int:assignment_id>/reverse-rejection", "POST"),
    (f"{PREFIX}/<int:project_id>/reviews", "POST"),
}
PROJECT_SCOPED = [e for e in ENDPOINTS if "<int:project_id>" in e[0]]
# Routes whose path also names a child of the project: another project's id plus the owner's child id must 404.
NESTED = [e for e in PROJECT_SCOPED if any(f"<int:{child}>" in e[0] for child in ("batch_id", "item_id", "run_id",
                                                                                "assignment_id"))]
GETS = [e for e in ENDPOINTS if e[1] == "GET"]
WRITES = [e for e in ENDPOINTS if e[1] != "GET"]


def _id(endpoint: tuple[str, str]) -> str:
    return f"{endpoint[1]} {endpoint[0]}"


@dataclass
class World:
    owner: Account
    owner_token: str
    other: Account
    other_token: str
    ops_token: str
    worker_token: str
    revoked_token: str
    project: Project
    other_project: Project
    params: dict[str, int]


@pytest.fixture
def world(session: Session, clock) -> World:
    now = clock()
    owner, owner_token = account(session, Role.REQUESTER, now=now)
    other, other_token = account(session, Role.REQUESTER, now=now)
    _, ops_token = account(session, Role.OPS, now=now)
    worker, worker_token = account(session, Role.WORKER, now=now)
    old, revoked_token = issue_token(session, account=owner, now=now, name="old")
    session.commit()
    revoke_token(session, account_id=owner.id, token_id=old.id, now=now)

    proj = project(session, owner, now=now)
    update_project(session, project=proj, account=owner, data={"instructions": "Version two."}, now=now)
    items(session, proj, 4, now=now, gold=1)
    batch, created = publish_batch(session, project_id=proj.id, account=owner, now=now, name="first")
    assert created and batch.item_count == 4
    item = session.scalars(select(Item).where(Item.batch_id == batch.id).order_by(Item.id)).first()
    assert item is not None
    submitted = answer(session, item, worker, "pos", now=now).assignment_id
    ledger.fund(session, requester_id=owner.id, cents=10_000, currency="USD", key=f"world-{owner.id}", now=now,
                actor_id=None)  # approving pays
    items(session, proj, 1, now=now, prefix="fresh")  # unpublished, so the owner can publish another batch
    other_project = project(session, other, now=now, title="Someone else's")
    items(session, other_project, 2, now=now)
    session.commit()
    gold_item = session.scalar(select(Item.id).where(Item.project_id == proj.id, Item.is_gold))
    run, _ = aggregation.request_run(session, project=proj, account=owner, method="mv", params={},
                                     idempotency_key=None, now=now)
    execute_run(session, run.id, clock=clock)
    return World(owner=owner, owner_token=owner_token, other=other, other_token=other_token, ops_token=ops_token,
                 worker_token=worker_token, revoked_token=revoked_token, project=proj, other_project=other_project,
                 params={"project_id": proj.id, "batch_id": batch.id, "item_id": gold_item, "version": 2,
                         "run_id": run.id, "assignment_id": submitted})


def _url(rule: str, params: dict[str, int]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            pytest.fail(f"no test value for path parameter <{name}> of {rule}; add one to the world fixture")
        return str(params[name])

    return _PARAM.sub(fill, rule)


def _request(rule: str, method: str) -> dict[str, Any]:
    """A valid, minimal request for the endpoint (the owner's write must succeed with it)."""
    if method == "GET" and rule.endswith("/bursts/estimate"):
        return {"query_string": {"platform": "mturk", "hits": 1}}
    if method == "GET":
        return {}
    if (rule, method) == (PREFIX, "POST"):
        return {"json": project_payload(title="Created in a test")}
    if (rule, method) == (f"{PREFIX}/<int:project_id>", "PATCH"):
        return {"json": {"title": "x"}}
    if (rule, method) == (f"{PREFIX}/<int:project_id>/items", "POST"):
        return {"data": jsonl([{"external_id": "new-1", "data": {"text": "new"}}]),
                "content_type": "application/x-ndjson"}
    if (rule, method) == (f"{PREFIX}/<int:project_id>/batches", "POST"):
        return {"json": {}}
    if (rule, method) == (f"{PREFIX}/<int:project_id>/batches/<int:batch_id>/bursts", "POST"):
        return {"json": {"platform": "mturk", "hits": 1}}
    if (rule, method) == (f"{PREFIX}/<int:project_id>/items/<int:item_id>", "PATCH"):
        return {"json": {"gold": "neg"}}  # the world's item is its gold item ("pos")
    if (rule, method) == (f"{PREFIX}/<int:project_id>/aggregations", "POST"):
        return {"json": {"method": "mv"}}
    if (rule, method) == (f"{PREFIX}/<int:project_id>/items/priority", "POST"):
        return {"json": {"items": [{"external_id": "it0", "priority": 3}]}}
    if method == "POST" and rule.endswith(("/pause", "/resume", "/cancel", "/approve", "/reverse-rejection")):
        return {}
    if method == "POST" and rule.endswith("/reject"):
        return {"json": {"feedback": "Not what was asked."}}
    if (rule, method) == (f"{PREFIX}/<int:project_id>/reviews", "POST"):
        return {"json": {"decision": "approve", "assignment_ids": ["assignment_id"]}}  # filled in by _call
    return {"json": {}, "unknown": True}


def _call(client, rule: str, method: str, params: dict[str, int], token: str | None = None,
          headers: dict[str, str] | None = None):
    kwargs = {k: v for k, v in _request(rule, method).items() if k != "unknown"}
    if kwargs.get("json", {}).get("assignment_ids") == ["assignment_id"]:
        kwargs["json"] = {**kwargs["json"], "assignment_ids": [params["assignment_id"]]}
    all_headers = {**(auth(token) if token else {}), **(headers or {})}
    return client.open(_url(rule, params), method=method, headers=all_headers, **kwargs)


def _snapshot(connection: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (bar a token's last-use time, which any authenticated call may refresh)."""
    state = {}
    for table in Base.metadata.sorted_tables:
        cols = [c for c in table.columns if not (table.name == ApiToken.__tablename__ and c.name == "last_used_at")]
        rows = connection.execute(select(*cols).order_by(*table.primary_key.columns))
        state[table.name] = [tuple(row) for row in rows]
    return state


def _assert_problem(resp, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == PROBLEM
    body = resp.get_json()
    assert body["status"] == status and body["title"]
    return body


# ---- discovery ------------------------------------------------------------------------------------------


def test_endpoints_are_discovered_from_the_url_map(app):
    assert ENDPOINTS, "no routes found under /api/v1/projects"
    assert set(_project_rules(app)) == set(ENDPOINTS)
    missing = KNOWN - set(ENDPOINTS)
    assert not missing, f"known endpoints not discovered: {sorted(missing)}"
    assert PROJECT_SCOPED and NESTED and GETS and WRITES


# ---- per endpoint ---------------------------------------------------------------------------------------


BAD_AUTH = [None, "Basic dXNlcjpwYXNz", "Bearer ", "Bearer cm_not-a-real-token", "Bearer not-even-our-prefix"]


@pytest.mark.parametrize(("rule", "method"), ENDPOINTS, ids=[_id(e) for e in ENDPOINTS])
def test_without_a_live_token_is_401(client, connection, world, rule, method):
    before = _snapshot(connection)
    for header in [*BAD_AUTH, f"Bearer {world.revoked_token}", f"bearer {world.revoked_token}"]:
        resp = _call(client, rule, method, world.params, headers={"Authorization": header} if header else None)
        _assert_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), header
    assert _snapshot(connection) == before


@pytest.mark.parametrize(("rule", "method"), ENDPOINTS, ids=[_id(e) for e in ENDPOINTS])
def test_a_worker_is_403(client, connection, world, rule, method):
    before = _snapshot(connection)
    resp = _call(client, rule, method, world.params, token=world.worker_token)
    _assert_problem(resp, 403)
    assert _snapshot(connection) == before


@pytest.mark.parametrize(("rule", "method"), PROJECT_SCOPED, ids=[_id(e) for e in PROJECT_SCOPED])
def test_another_requester_gets_404_and_changes_nothing(client, connection, world, rule, method):
    before = _snapshot(connection)
    resp = _call(client, rule, method, world.params, token=world.other_token)
    body = _assert_problem(resp, 404)
    assert world.project.title not in resp.get_data(as_text=True)
    assert str(world.project.id) in body.get("detail", "")
    assert _snapshot(connection) == before


@pytest.mark.parametrize(("rule", "method"), NESTED, ids=[_id(e) for e in NESTED])
def test_a_child_of_another_project_is_404_through_your_own_project(client, connection, world, rule, method):
    """Your own project id does not unlock another project's batch or item."""
    before = _snapshot(connection)
    params = {**world.params, "project_id": world.other_project.id}
    resp = _call(client, rule, method, params, token=world.other_token)
    _assert_problem(resp, 404)
    assert _snapshot(connection) == before


@pytest.mark.parametrize(("rule", "method"), GETS, ids=[_id(e) for e in GETS])
def test_the_owner_can_read(client, world, rule, method):
    resp = _call(client, rule, method, world.params, token=world.owner_token)
    assert 200 <= resp.status_code < 300, resp.get_data(as_text=True)


@pytest.mark.parametrize(("rule", "method"), WRITES, ids=[_id(e) for e in WRITES])
def test_the_owner_can_write(client, session, connection, clock, world, rule, method):
    if _request(rule, method).get("unknown"):
        pytest.fail(f"new write endpoint {method} {rule}: give it a valid minimal request in _request()")
    if rule.endswith("/resume"):
        change_batch_status(session, project=world.project, batch_id=world.params["batch_id"],
                                    action="pause", now=clock())
    if rule.endswith("/reverse-rejection"):
        in_uow(reject, session, actor=world.owner, now=clock(), feedback="No.",
               assignment_ids=[world.params["assignment_id"]])
    before = _snapshot(connection)
    resp = _call(client, rule, method, world.params, token=world.owner_token)
    assert 200 <= resp.status_code < 300, resp.get_data(as_text=True)
    assert _snapshot(connection) != before
    if (rule, method) == (f"{PREFIX}/<int:project_id>", "PATCH"):
        title = connection.execute(select(Project.title).where(Project.id == world.project.id)).scalar_one()
        assert title == "x"


@pytest.mark.parametrize(("rule", "method"), GETS, ids=[_id(e) for e in GETS])
def test_ops_can_read_every_project(client, world, rule, method):
    resp = _call(client, rule, method, world.params, token=world.ops_token)
    assert 200 <= resp.status_code < 300, resp.get_data(as_text=True)


@pytest.mark.parametrize(("rule", "method"), WRITES, ids=[_id(e) for e in WRITES])
def test_ops_cannot_write(client, connection, world, rule, method):
    before = _snapshot(connection)
    resp = _call(client, rule, method, world.params, token=world.ops_token)
    _assert_problem(resp, 403)
    assert _snapshot(connection) == before


# ---- lists ----------------------------------------------------------------------------------------------


def _listed_ids(client, token: str) -> list[int]:
    ids, after = [], None
    while True:
        resp = client.get(PREFIX, query_string={"limit": 2, **({"after": after} if after else {})},
                          headers=auth(token))
        assert resp.status_code == 200, resp.get_data(as_text=True)
        page = resp.get_json()
        ids += [p["id"] for p in page["data"]]
        after = page["next_after"]
        if after is None:
            return ids


def test_a_requester_lists_only_their_own_projects(client, session, clock, world):
    second = project(session, world.owner, now=clock(), title="Second")
    assert _listed_ids(client, world.owner_token) == [world.project.id, second.id]
    assert _listed_ids(client, world.other_token) == [world.other_project.id]
    _, newcomer = account(session, Role.REQUESTER, now=clock())
    assert _listed_ids(client, newcomer) == []


def test_ops_lists_every_project(client, session, clock, world):
    second = project(session, world.owner, now=clock(), title="Second")
    listed = _listed_ids(client, world.ops_token)
    assert {world.project.id, world.other_project.id, second.id} <= set(listed)
    assert listed == sorted(listed)
    ops_body = client.get(PREFIX, headers=auth(world.ops_token)).get_json()
    assert {p["owner_id"] for p in ops_body["data"]} >= {world.owner.id, world.other.id}


def test_the_project_list_is_not_for_workers(client, world):
    _assert_problem(client.get(PREFIX, headers=auth(world.worker_token)), 403)


# ---- /me and /tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/me", "/api/v1/tokens"])
def test_account_endpoints_need_a_live_token(client, world, path):
    for headers in ({}, auth(world.revoked_token), {"Authorization": "Bearer cm_nope"}):
        resp = client.get(path, headers=headers)
        _assert_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_me_is_the_tokens_own_account(client, world):
    for token, acct in ((world.owner_token, world.owner), (world.other_token, world.other)):
        body = client.get("/api/v1/me", headers=auth(token)).get_json()
        assert body["id"] == acct.id and body["role"] == acct.role.value
    assert client.get("/api/v1/me", headers=auth(world.worker_token)).get_json()["role"] == "worker"
    assert client.get("/api/v1/me", headers=auth(world.ops_token)).get_json()["role"] == "ops"


def _token_ids(connection: Connection, account_id: int) -> set[int]:
    return set(connection.execute(select(ApiToken.id).where(ApiToken.account_id == account_id)).scalars())


def test_tokens_lists_only_your_own_tokens(client, connection, world):
    for token, acct in ((world.owner_token, world.owner), (world.other_token, world.other)):
        resp = client.get("/api/v1/tokens", headers=auth(token))
        assert resp.status_code == 200
        listed = {t["id"] for t in resp.get_json()}
        assert listed == _token_ids(connection, acct.id)
        assert all("token" not in t and "token_hash" not in t for t in resp.get_json())
    assert len(_token_ids(connection, world.owner.id)) == 2  # the live one and the revoked one


def test_revoking_another_accounts_token_is_404_and_it_keeps_working(client, connection, world):
    (victim_id,) = _token_ids(connection, world.other.id)
    before = _snapshot(connection)
    for token in (world.owner_token, world.ops_token, world.worker_token):
        _assert_problem(client.delete(f"/api/v1/tokens/{victim_id}", headers=auth(token)), 404)
    _assert_problem(client.delete("/api/v1/tokens/999999", headers=auth(world.owner_token)), 404)
    assert _snapshot(connection) == before
    assert client.get("/api/v1/me", headers=auth(world.other_token)).status_code == 200


def test_revoking_your_own_token_works_at_once(client, connection, world):
    created = client.post("/api/v1/tokens", json={"name": "ci"}, headers=auth(world.other_token))
    assert created.status_code == 201
    new = created.get_json()
    assert client.get("/api/v1/me", headers=auth(new["token"])).get_json()["id"] == world.other.id
    resp = client.delete(f"/api/v1/tokens/{new['id']}", headers=auth(world.other_token))
    assert resp.status_code == 200 and resp.get_json()["revoked_at"]
    _assert_problem(client.get("/api/v1/me", headers=auth(new["token"])), 401)
    assert client.get("/api/v1/me", headers=auth(world.other_token)).status_code == 200
