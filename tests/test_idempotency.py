"""Every endpoint that takes an Idempotency-Key: a retry replays what the first request made; the same key with a
different request is 409 and makes nothing. The endpoints come from the OpenAPI spec, so a new one is covered as
soon as it documents the header (and fails here until it is given bodies)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from base.identity import Role
from market.catalogue.batches import publish_batch
from tests.factories import account, auth, items, project
from tests.test_bad_input import _errors_at, _problem, _snapshot

PROJECT = "/api/v1/projects/{project_id}"
# path -> (the first request's body, a retry that asks for the same thing, different requests)
BODIES: dict[str, tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = {
    f"{PROJECT}/batches": ({"name": "first"}, {"name": "first"}, [{"name": "second"}, {"name": "first",
                                                                                      "item_ids": [1]}]),
    # A run is the same run when its method and parameters are, defaults filled in.
    f"{PROJECT}/aggregations": ({"method": "mv"}, {"method": "mv", "seed": 0},
                                [{"method": "ds"}, {"method": "mv", "seed": 7}, {"method": "mv", "max_iter": 5}]),
    # Ops endpoints (payments/books): funding a requester, a payout batch.
    "/api/v1/ledger/requesters/{requester_id}/funding": ({"cents": 500}, {"cents": 500, "currency": "USD"},
                                                         [{"cents": 600}, {"cents": 500, "currency": "EUR"}]),
    "/api/v1/payouts/batches": ({"period_end": "2026-01-31T00:00:00Z"},
                                {"period_end": "2026-01-31T00:00:00Z", "minimum_cents": 0, "currency": "USD"},
                                [{"period_end": "2026-01-31T00:00:00Z", "minimum_cents": 100},
                                 {"period_end": "2026-02-28T00:00:00Z"}]),
}
# A burst of a batch's HITs to another crowd (platforms/): the batch is published first.
BODIES[f"{PROJECT}/batches/{{batch_id}}/bursts"] = ({"platform": "mturk", "hits": 1},
                                                   {"platform": "mturk", "hits": 1, "split": False},
                                                   [{"platform": "mturk", "hits": 2},
                                                    {"platform": "prolific", "hits": 1}])
OPS_ONLY = {"/api/v1/ledger/requesters/{requester_id}/funding", "/api/v1/payouts/batches"}


def _keyed_operations(client) -> set[str]:
    spec = client.get("/openapi.json").get_json()
    return {path for path, ops in spec["paths"].items() for method, op in ops.items() if method != "parameters"
            for p in op.get("parameters", []) if p["in"] == "header" and p["name"] == "Idempotency-Key"}


def test_every_keyed_endpoint_is_covered(client):
    assert _keyed_operations(client) == set(BODIES)


@pytest.mark.parametrize("path", sorted(BODIES))
def test_same_key_replays_and_a_different_request_is_409(client, session: Session, clock, connection: Connection,
                                                         path: str, subtests):
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    items(session, proj, 3, now=clock())
    if path in OPS_ONLY:
        _, token = account(session, Role.OPS, now=clock())
    batch_id = None
    if "{batch_id}" in path:
        batch_id = publish_batch(session, project_id=proj.id, account=owner, now=clock())[0].id
        session.commit()
    url, (first, retry, others) = path.format(project_id=proj.id, requester_id=owner.id,
                                              batch_id=batch_id), BODIES[path]
    headers = {**auth(token), "Idempotency-Key": "k-1"}
    created = client.post(url, json=first, headers=headers)
    assert created.status_code in (201, 202), created.get_json()
    replay = client.post(url, json=retry, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == created.get_json()["id"]
    for body in others:
        with subtests.test(msg=str(body)):
            before = _snapshot(connection)
            _errors_at(_problem(client.post(url, json=body, headers=headers), 409), "Idempotency-Key")
            assert _snapshot(connection) == before
