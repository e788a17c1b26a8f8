"""What a worker, or several comparing notes, can observe of gold, channel by channel: returning, lapsing and coming
back; the shape and size of tasks; how long a submit takes; how many workers see an item. Each test is one channel,
and what it must not tell (issue #6, points 1-4)."""

from __future__ import annotations

import io
import random
import re
from collections import Counter
from decimal import Decimal

import pytest
from flask import request_finished, request_started
from sqlalchemy import event, func, insert, select

from base import db as market_db
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Assignment, AssignmentStatus, GoldPool, Hit, HitSlot, Item, SlotState
from market.catalogue.projects import update_project
from market.engine import next_task as engine_next
from qualification import gold as schedule
from qualification.models import GoldStream
from tests.factories import account, auth, item_id, jsonl
from tests.market.test_gold import gold_project as shared_gold_project
from workers.models import Account, FlagReason, WorkerFlag

LABELS = ("pos", "neg", "neu")


def gold_project(session, clock, *, redundancy: int = 3, **settings):
    """tests/market/test_gold.py's project, three workers per item unless told otherwise; (token, project, batch)."""
    return shared_gold_project(session, clock, redundancy=redundancy, **settings)[1:]


def next_task(client, token, **query):
    return client.post("/api/v1/work/next", query_string=query, headers=auth(token))


def submit(client, token, task, value="pos"):
    body = {"answers": [{"item_id": i["id"], "answer": value} for i in task["items"]]}
    return client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=body, headers=auth(token))


def give_back(client, token, task):
    return client.post(f"/api/v1/assignments/{task['assignment_id']}/return", headers=auth(token))


def is_gold(session, task) -> bool:
    return session.get(Assignment, task["assignment_id"]).is_gold


# ---- returning, lapsing, coming back -----------------------------------------------------------------------


def test_returns_and_lapses_never_change_which_submitted_tasks_are_gold(client, session, clock):
    """Whatever a worker gives back, the k-th task they submit is gold exactly when position k of their stream is:
    returning cannot skip gold, and a lapse is a return."""
    _, proj, _ = gold_project(session, clock, real=400, gold=120, assignment_duration_seconds=60)
    worker, token = account(session, Role.WORKER, now=clock())
    rng = random.Random(6)
    kinds, gave_back = [], Counter()
    while len(kinds) < 120:
        task = next_task(client, token).get_json()
        action = rng.choice(["submit", "submit", "return", "lapse"])
        if action == "return":
            assert give_back(client, token, task).status_code == 200
        elif action == "lapse":
            clock.advance(seconds=61)
        else:
            assert submit(client, token, task).status_code == 200
            kinds.append(is_gold(session, task))
        gave_back[action != "submit"] += 1
    expected, golds, key = [], 0, client.application.extensions["crowdmarket.gold_key"]
    for position in range(len(kinds)):
        turn = schedule.is_gold_turn(key, project_id=proj.id, worker_id=worker.id,
                                     rate=Decimal("0.10"), tasks=position, golds=golds)
        expected.append(turn)
        golds += turn
    assert kinds == expected and sum(kinds) >= 6
    assert gave_back[True] >= 60  # the worker gave back about as many tasks as they did
    stream = session.get(GoldStream, (worker.id, proj.id))
    assert (stream.tasks, stream.golds) == (120, sum(kinds))


@pytest.mark.parametrize("gold", [True, False])
def test_a_given_back_task_is_followed_by_one_of_its_kind_never_by_itself(client, session, clock, gold):
    """After returning a task (or letting it lapse), the next one is gold exactly when it was, and is another HIT:
    the same for gold as for real work, so neither tells the worker which it was."""
    gold_project(session, clock, real=200, gold=60, assignment_duration_seconds=60)
    worker, token = account(session, Role.WORKER, now=clock())
    seen = 0
    while True:
        task = next_task(client, token).get_json()
        if is_gold(session, task) == gold:
            break
        submit(client, token, task)
        seen += 1
        assert seen < 200
    for lapse in (False, True):
        if lapse:
            clock.advance(seconds=61)
        else:
            give_back(client, token, task)
        after = next_task(client, token)
        assert after.status_code == 200
        again = after.get_json()
        assert is_gold(session, again) == gold
        assert session.get(Assignment, again["assignment_id"]).hit_id != session.get(
            Assignment, task["assignment_id"]).hit_id
        task = again


def test_a_dodger_cannot_skip_gold_nor_use_it_up_and_is_flagged(client, session, clock):
    """The attack of the issue: return every task once and answer only those that come straight back (always with
    the same label). Nothing comes straight back; what comes back at last is gold as often as the schedule says;
    returns leave the gold pool as it was; and the returns alone are a flag with evidence."""
    owner_token, proj, _ = gold_project(session, clock, real=30, gold=30, redundancy=1)
    dodger, token = account(session, Role.WORKER, now=clock())
    returned: set[int] = set()
    answered, straight_back = [], 0
    for _ in range(120):
        resp = next_task(client, token)
        if resp.status_code == 404:
            break
        task = resp.get_json()
        hit = session.get(Assignment, task["assignment_id"]).hit_id
        if hit in returned:
            answered.append(is_gold(session, task))
            assert submit(client, token, task, value="pos").status_code == 200
        else:
            straight_back += bool(returned) and hit == max(returned)
            returned.add(hit)
            assert give_back(client, token, task).status_code == 200
    assert straight_back == 0
    assert answered and sum(answered) >= 1  # what came back at last includes gold
    stream = session.get(GoldStream, (dodger.id, proj.id))
    assert (stream.tasks, stream.golds) == (len(answered), sum(answered))  # on the schedule, returns or not
    # Returns used no gold up: the pool's answered slots are the gold the dodger answered, and its others are free.
    done = session.scalar(select(func.count()).select_from(HitSlot).where(
        HitSlot.gold_pool_id.is_not(None), HitSlot.state == SlotState.DONE))
    assert done == sum(answered)
    [flag] = session.scalars(select(WorkerFlag).where(WorkerFlag.account_id == dodger.id,
                                                      WorkerFlag.reason == FlagReason.FREQUENT_RETURNS)).all()
    assert flag.evidence["metric"] == "return_rate" and flag.evidence["value"] > 0.4
    assert flag.evidence["n"] >= 20 and flag.evidence["crowd_rate"] == 0


def test_a_lapsed_lease_frees_itself_and_the_next_request_serves_the_next_task(client, session, clock):
    """A worker who stepped away: their lease ran out (30 s, the minimum); their next request is simply served."""
    gold_project(session, clock, real=10, gold=6, assignment_duration_seconds=30)
    worker, token = account(session, Role.WORKER, now=clock())
    first = next_task(client, token).get_json()
    clock.advance(seconds=31)
    for _ in range(3):
        resp = next_task(client, token)
        assert resp.status_code == 200, resp.get_json()
        task = resp.get_json()
        assert task["assignment_id"] != first["assignment_id"]
        assert submit(client, token, task).status_code == 200
    assert session.get(Assignment, first["assignment_id"]).status == AssignmentStatus.EXPIRED
    assert submit(client, token, first).status_code == 410  # the late answer is refused, nothing stored


def test_next_never_stores_a_lease_it_cannot_serve(client, session, clock):
    """A HIT without items (only a broken import could make one) is passed over: no lease is stored for it and the
    worker gets a real answer, not a 500."""
    _, proj, batch = gold_project(session, clock, real=2, gold=2, redundancy=1)
    pool = session.scalar(select(GoldPool).where(GoldPool.project_id == proj.id))
    empty = session.scalar(insert(Hit).values(batch_id=batch.id, project_id=proj.id, max_assignments=1, item_count=1,
                                              is_gold=True, gold_pool_id=pool.id, gold_rank=-1).returning(Hit.id))
    session.execute(insert(HitSlot).values(hit_id=empty, gold_pool_id=pool.id, slot_no=0, neg_priority=-10,
                                           state=SlotState.FREE))
    session.commit()
    worker, token = account(session, Role.WORKER, now=clock())
    for _ in range(2):
        task = next_task(client, token)
        assert task.status_code == 200 and task.get_json()["items"]
        submit(client, token, task.get_json())
    assert session.scalar(select(func.count()).select_from(Assignment).where(Assignment.hit_id == empty)) == 0


# ---- shape and size -------------------------------------------------------------------------------------


def test_every_task_of_a_batch_has_its_size_the_last_one_too(client, session, clock):
    """7 items in HITs of 3: the last HIT is filled up with spare gold, so no task is short (a short one would be
    certainly real) and gold tasks have the same size."""
    owner_token, proj, batch = gold_project(session, clock, real=7, gold=8, items_per_hit=3, redundancy=2)
    sizes = Counter()
    for _ in range(4):
        worker, token = account(session, Role.WORKER, now=clock())
        while (resp := next_task(client, token)).status_code == 200:
            task = resp.get_json()
            sizes[(len(task["items"]), is_gold(session, task))] += 1
            submit(client, token, task)
    assert {size for size, _ in sizes} == {3}
    body = client.get(f"/api/v1/projects/{proj.id}/batches/{batch.id}", headers=auth(owner_token)).get_json()
    assert body["gold"]["short_hit"] is False
    # The gold items filling the last HIT are scored like any: their answers carry the outcome.
    last = session.scalar(select(Hit.id).where(Hit.batch_id == batch.id, Hit.is_gold.is_(False))
                          .order_by(Hit.id.desc()).limit(1))
    outcomes = session.scalars(select(Item.id).where(Item.hit_id == last, Item.is_gold)).all()
    assert len(outcomes) == 2


def test_without_spare_gold_the_short_hit_is_reported(client, session, clock):
    """The pool has gold of the batch's shape but none spare to fill its short HIT: the requester is told."""
    owner_token, proj, _ = gold_project(session, clock, real=6, gold=3, items_per_hit=3, redundancy=2)
    records = [{"external_id": f"later{i}", "data": {"text": f"later {i}"}} for i in range(7)]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    batch, _ = publish_batch(session, project_id=proj.id, account=session.get(Account, proj.owner_id),
                                     now=clock())
    body = client.get(f"/api/v1/projects/{proj.id}/batches/{batch.id}", headers=auth(owner_token)).get_json()
    assert body["gold"]["short_hit"] is True and "can tell it is not gold" in body["gold"]["warning"]


# ---- timing ---------------------------------------------------------------------------------------------


def _statements(app, session, monkeypatch) -> list[str]:
    """The SQL a request runs before its response is sent, in order (what runs after it, judging the worker, is
    left out): through SQLAlchemy and straight on the driver (base.db.HotStatement) alike."""
    seen: list[str] = []
    live = {"on": False}
    engine = session.get_bind().engine if hasattr(session.get_bind(), "engine") else session.get_bind()

    def record(_conn, _cursor, statement, *_args):
        if live["on"]:
            seen.append(re.sub(r"sa_savepoint_\d+", "sa_savepoint", statement))  # the tests' own wrapper

    rows = market_db.HotStatement.rows

    def hot(self, s, params):
        if live["on"] and s.get_bind().dialect.name == "postgresql":
            seen.append(self._sql)
        return rows(self, s, params)

    monkeypatch.setattr(market_db.HotStatement, "rows", hot)
    event.listen(engine, "before_cursor_execute", record)
    request_started.connect(lambda *_a, **_k: live.update(on=True), app, weak=False)
    request_finished.connect(lambda *_a, **_k: live.update(on=False), app, weak=False)
    return seen


# The one difference between a gold claim's statements and a real one's: which queue they walk.
_QUEUE = re.compile(r"s\.(batch_id|gold_pool_id) = (:\w+|%\(\w+\)s|\?) AND \(SELECT h\.gold_rank FROM hit AS h "
                    r"WHERE h\.id = s\.hit_id\) IS (NOT )?NULL")


def _shape(statement: str) -> str:
    return _QUEUE.sub("QUEUE", statement).replace(", true, 'leased'", ", KIND, 'leased'").replace(
        ", false, 'leased'", ", KIND, 'leased'")


def test_gold_and_real_tasks_cost_the_same_statements(client, session, clock, monkeypatch):
    """Scoring runs after the response: a gold task's submit runs statement for statement what a real task's runs,
    and a gold claim what a real claim runs but for the queue it walks (a real claim tests for real work too,
    needless for it). So their times are the same within the noise (benchmarks/gold_timing.py measures them)."""
    gold_project(session, clock, real=200, gold=60, items_per_hit=2)
    seen = _statements(client.application, session, monkeypatch)
    claims, submits = {}, {}
    worker, token = account(session, Role.WORKER, now=clock())
    submit(client, token, next_task(client, token).get_json())  # a token's first use is recorded: not compared
    while len(claims) < 2 or len(submits) < 2:
        seen.clear()
        task = next_task(client, token).get_json()
        gold = is_gold(session, task)
        claims.setdefault(gold, [_shape(s) for s in seen])
        seen.clear()
        submit(client, token, task)
        submits.setdefault(gold, list(seen))
    assert submits[True] == submits[False] and len(submits[True]) >= 2
    assert claims[True] == claims[False] and len(claims[True]) >= 2
    assert any("QUEUE" in s for s in claims[True])


# ---- cross-worker counts: colluding accounts -------------------------------------------------------------


def test_colluding_accounts_see_no_item_more_often_than_the_redundancy(client, session, clock):
    """Twelve accounts work through a project in turns and pool the item ids they were served: no item, gold or
    real, was served to more accounts than the redundancy (3), and gold items reach it as real ones do. (With three
    gold items, uncapped gold would have shown each to half the accounts.)"""
    gold_project(session, clock, real=60, gold=3, redundancy=3, rate="0.10")
    served = Counter()
    gold_ids = set()
    tokens = [account(session, Role.WORKER, now=clock())[1] for _ in range(12)]
    while tokens:
        for token in list(tokens):
            resp = next_task(client, token)
            if resp.status_code != 200:
                tokens.remove(token)
                continue
            task = resp.get_json()
            for shown in task["items"]:
                served[shown["id"]] += 1
                if session.get(Item, item_id(client, shown["id"])).is_gold:
                    gold_ids.add(shown["id"])
            submit(client, token, task)
    assert len(gold_ids) == 3 and max(served.values()) == 3
    assert all(served[i] == 3 for i in served)


def test_each_batch_serves_gold_of_its_own_shape(client, session, clock, monkeypatch):
    """Two open batches of one project, HITs of 1 and of 2 items: a gold task always has the size of the batch it
    replaces work of (the pool is looked up per batch; read once for every batch, a gold task of the wrong size
    would be told apart at a glance)."""
    monkeypatch.setattr(engine_next, "is_gold_turn", lambda *args, **kwargs: True)
    owner_token, proj, first = gold_project(session, clock, real=4, gold=4, items_per_hit=1, redundancy=3)
    owner = session.get(Account, proj.owner_id)
    update_project(session, project=proj, account=owner, data={"items_per_hit": 2}, now=clock())
    records = [{"external_id": f"two{i}", "data": {"text": f"two {i}"}} for i in range(4)]
    records += [{"external_id": f"gold-two{i}", "data": {"text": f"gold two {i}"}, "gold": "pos"} for i in range(4)]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    second, _ = publish_batch(session, project_id=proj.id, account=owner, now=clock())
    sizes = {first.id: 1, second.id: 2}
    for _ in range(6):
        _, token = account(session, Role.WORKER, now=clock())
        task = next_task(client, token).get_json()
        served = session.get(Assignment, task["assignment_id"])
        assert served.is_gold and len(task["items"]) == sizes[served.batch_id]
