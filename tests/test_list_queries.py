"""List endpoints run a fixed number of SQL statements per page, whatever its length: what each row's body needs is
loaded for the whole page in one grouped query, not one query (or five) per row. Each test serves a list of one row
and a list of twenty from the same database and counts the statements (tests/querycount.py); the entries of the
long list are the bodies the detail endpoints give, so the list and the single item are computed alike."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from base.identity import Role
from market.catalogue.batches import change_batch_status, publish_batch
from market.catalogue.models import Answer, Item
from market.catalogue.projects import update_project
from market.quality.effects import block_flagged
from market.quality.models import DisputeState, GoldDispute
from qualification.models import GoldStream
from tests.factories import account, answer, auth, items, lease, project
from tests.querycount import statements_of
from workers import flags
from workers.models import FlagReason

LONG = 20


def _get(client, connection, url: str, token: str) -> tuple[dict[str, Any], int]:
    # Once first: a token's first use in a while records it (an UPDATE), which is no part of the list's cost.
    client.get(url, headers=auth(token))
    resp, statements = statements_of(connection, client.get, url, headers=auth(token))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json(), len(statements)


# ---- batches --------------------------------------------------------------------------------------------------


def answer_items(session, chosen: list[Item], worker, now: dt.datetime) -> None:
    """The worker answers the chosen items, one assignment per HIT (as a worker's submit does)."""
    first: dict[int, Answer] = {}
    for item in chosen:
        if item.hit_id not in first:
            first[item.hit_id] = answer(session, item, worker, "pos", now=now)
            continue
        one = first[item.hit_id]
        session.add(Answer(assignment_id=one.assignment_id, item_id=item.id, worker_id=worker.id,
                           project_id=item.project_id, value="neg", guideline_version=1, submitted_at=now,
                           duration_ms=3000))
    session.commit()


def batched_project(session, clock, n: int):
    """A project of `n` batches unlike each other: answered, leased (live and lapsed), paused, cancelled,
    complete, of two gold-pool shapes, some with a short last HIT; with workers whose gold ran out."""
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=2, assignments_per_item=2, gold_rate=Decimal("0.10"))
    items(session, proj, 3 * n, now=clock(), gold=4)
    ids = list(session.scalars(select(Item.id).where(Item.project_id == proj.id, Item.is_gold.is_(False))
                               .order_by(Item.id)))
    workers = [account(session, Role.WORKER, now=clock())[0] for _ in range(2)]
    for b in range(n):
        if b == n // 2:  # the later batches draw on a gold pool of another shape
            proj.items_per_hit, proj.updated_at = 3, clock()  # (updated_at would take the wall clock)
            session.commit()
        batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=clock(), name=f"b{b}",
                                 item_ids=ids[3 * b:3 * b + 2 + b % 2])
        batch_items = list(session.scalars(select(Item).where(Item.batch_id == batch.id).order_by(Item.id)))
        for k, worker in enumerate(workers[:b % 3]):
            answer_items(session, batch_items if b % 12 == 5 else batch_items[:len(batch_items) - k], worker, clock())
        if b % 4 == 1:
            leaser, _ = account(session, Role.WORKER, now=clock())  # one live lease a worker
            lease(session, batch_items[0].hit_id, proj.id, leaser, now=clock(), seconds=60 * (b % 3))
        if b % 5 == 3:
            change_batch_status(session, project=proj, batch_id=batch.id, action="pause", now=clock())
        if b % 7 == 4:
            change_batch_status(session, project=proj, batch_id=batch.id, action="cancel", now=clock())
    session.add(GoldStream(worker_id=workers[0].id, project_id=proj.id, exhausted_at=clock()))
    session.commit()
    return proj, token


def test_the_batch_list_costs_the_same_for_one_batch_and_twenty(client, connection, session, clock):
    one, one_token = batched_project(session, clock, 1)
    many, many_token = batched_project(session, clock, LONG)
    clock.advance(seconds=90)  # some leases lapse
    short, short_count = _get(client, connection, f"/api/v1/projects/{one.id}/batches", one_token)
    long, long_count = _get(client, connection, f"/api/v1/projects/{many.id}/batches", many_token)
    assert (len(short["data"]), len(long["data"])) == (1, LONG)
    # auth (1), the project (1), its batches (1), answers per item and assignments by state (2), the gold pools
    # with their HITs and open slots, the loose gold with the workers it ran out for, the short HITs (3). Before:
    # 11 and 153, 7 a batch.
    assert short_count == long_count == 8
    statuses = {b["status"] for b in long["data"]}
    assert {"open", "paused", "cancelled", "complete"} <= statuses
    assert any(b["gold"]["short_hit"] for b in long["data"]) and any(b["gold"]["warning"] for b in long["data"])
    for body in long["data"]:
        detail = client.get(f"/api/v1/projects/{many.id}/batches/{body['id']}", headers=auth(many_token))
        assert detail.get_json() == body


# ---- disputes -------------------------------------------------------------------------------------------------


def disputed_project(session, clock, n: int, worker):
    """A project of `n` gold items the worker missed and contested; others answered them, some right. The
    disputes are in every state, one item retired."""
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=1, assignments_per_item=3, gold_feedback=True)
    items(session, proj, 1, now=clock(), gold=n)
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    others = [account(session, Role.WORKER, now=clock())[0] for _ in range(2)]
    gold = list(session.scalars(select(Item).where(Item.project_id == proj.id, Item.is_gold).order_by(Item.id)))
    states = list(DisputeState)
    for k, item in enumerate(gold):
        missed = answer(session, item, worker, "neg", now=clock())
        missed.gold_correct = False
        for other in others[:k % 3]:
            answer(session, item, other, "pos", now=clock()).gold_correct = k % 2 == 0
        state = states[k % len(states)]
        if state == DisputeState.RETIRED:
            item.gold_retired_at = clock()
        session.add(GoldDispute(item_id=item.id, project_id=proj.id, worker_id=worker.id,
                                assignment_id=missed.assignment_id, note=f"note {k}", state=state,
                                created_at=clock(), resolved_at=None if state == DisputeState.OPEN else clock(),
                                resolution=None if state == DisputeState.OPEN else f"decided {k}"))
        session.commit()
    return proj


@pytest.fixture
def disputes(session, clock):
    (one_worker, one_token), (many_worker, many_token) = (account(session, Role.WORKER, now=clock())
                                                          for _ in range(2))
    one = disputed_project(session, clock, 1, one_worker)
    many = disputed_project(session, clock, LONG, many_worker)
    _, ops_token = account(session, Role.OPS, now=clock())
    return {"one": one, "many": many, "one_token": one_token, "many_token": many_token, "ops": ops_token}


def test_the_ops_dispute_list_costs_the_same_for_one_dispute_and_twenty(client, connection, disputes):
    short, short_count = _get(client, connection, f"/api/v1/ops/disputes?project_id={disputes['one'].id}",
                              disputes["ops"])
    long, long_count = _get(client, connection, f"/api/v1/ops/disputes?project_id={disputes['many'].id}&limit=50",
                            disputes["ops"])
    assert (len(short["data"]), len(long["data"])) == (1, LONG)
    # auth (1), the disputes (1), their items (1), the contested answers (1), the items' scored answers (1).
    # Before: 6 and 82, 4 a dispute.
    assert short_count == long_count == 5
    assert len({(d["item"]["answers"], d["item"]["correct"]) for d in long["data"]}) > 1
    assert {d["state"] for d in long["data"]} == {s.value for s in DisputeState}
    for body in long["data"]:
        detail = client.get(f"/api/v1/ops/disputes/{body['id']}", headers=auth(disputes["ops"]))
        assert detail.get_json() == body


def test_the_worker_dispute_list_costs_the_same_for_one_dispute_and_twenty(client, connection, disputes):
    short, short_count = _get(client, connection, "/api/v1/disputes", disputes["one_token"])
    long, long_count = _get(client, connection, "/api/v1/disputes?limit=50", disputes["many_token"])
    assert (len(short["data"]), len(long["data"])) == (1, LONG)
    # auth (1), the disputes (1): public item ids are computed, not looked up. It cost this before too; the test
    # keeps it so.
    assert short_count == long_count == 2


# ---- projects and flags ---------------------------------------------------------------------------------------


def requester_with_projects(session, clock, n: int) -> str:
    """A requester's token; they own `n` projects, every other one with a second guideline version."""
    owner, token = account(session, Role.REQUESTER, now=clock())
    for k in range(n):
        proj = project(session, owner, now=clock(), instructions=f"first {k}")
        if k % 2:  # the later version is the one shown
            update_project(session, project=proj, account=owner, data={"instructions": f"second {k}"}, now=clock())
    return token


def test_the_project_list_costs_the_same_for_one_project_and_twenty(client, connection, session, clock):
    one_token, many_token = requester_with_projects(session, clock, 1), requester_with_projects(session, clock, LONG)
    short, short_count = _get(client, connection, "/api/v1/projects", one_token)
    long, long_count = _get(client, connection, "/api/v1/projects?limit=50", many_token)
    assert (len(short["data"]), len(long["data"])) == (1, LONG)
    # auth (1), the projects (1), their current guidelines (1). Before: 3 and 22, 1 a project.
    assert short_count == long_count == 3
    assert [p["instructions"] for p in long["data"]] == [f"{'second' if k % 2 else 'first'} {k}" for k in range(LONG)]
    for body in long["data"]:
        detail = client.get(f"/api/v1/projects/{body['id']}", headers=auth(many_token))
        assert detail.get_json() == body


def flagged_project(session, clock, n: int, ops) -> int:
    """A project with `n` flagged workers: most blocked, from it or from all work, some blocks running out."""
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    for k in range(n):
        worker, _ = account(session, Role.WORKER, now=clock())
        flag = flags.raise_flag(session, worker_id=worker.id, project_id=proj.id, reason=FlagReason.MANUAL,
                                note=f"look {k}", now=clock(), actor=ops)
        session.commit()
        if k % 3 != 2:
            expires = None if k % 2 else clock() + dt.timedelta(hours=1 + k)
            block_flagged(session, flag_id=flag.id, actor=ops, scope="all" if k % 4 else "project",
                          reason=f"block {k}", now=clock(), expires_at=expires)
    return proj.id


def test_the_flag_list_costs_the_same_for_one_flag_and_twenty(client, connection, session, clock):
    ops, ops_token = account(session, Role.OPS, now=clock())
    projects = [flagged_project(session, clock, n, ops) for n in (1, LONG)]
    clock.advance(hours=3)  # some blocks have run out
    short, short_count = _get(client, connection, f"/api/v1/ops/flags?project_id={projects[0]}", ops_token)
    long, long_count = _get(client, connection, f"/api/v1/ops/flags?project_id={projects[1]}&limit=50", ops_token)
    assert (len(short["data"]), len(long["data"])) == (1, LONG)
    # auth (1), the flags (1), their blocks (1). Before: 3 and 16, 1 a blocked flag.
    assert short_count == long_count == 3
    assert {(f["block"] or {}).get("in_force") for f in long["data"]} == {None, True, False}
    for body in long["data"]:
        detail = client.get(f"/api/v1/ops/flags/{body['id']}", headers=auth(ops_token)).get_json()
        assert {k: v for k, v in detail.items() if k != "events"} == body

