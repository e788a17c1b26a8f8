"""Gold injection: the schedule's properties, the engine serving gold tasks, and what workers and requesters see."""

from __future__ import annotations

import io
import math
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.batches import batch_progress, publish_batch
from market.catalogue.gold import gold_supply
from market.catalogue.imports import import_items
from market.catalogue.models import Answer, Assignment, Hit, Item
from market.engine import next_task as engine_next
from market.engine import submit as engine_submit
from market.engine.next_task import next_assignment
from qualification import gold as schedule
from qualification.models import GoldStream
from tests.factories import TEST_GOLD_KEY, account, auth, item_id, jsonl, project, public_item_id

KEY = schedule.schedule_key("test seed")
LABELS = ("pos", "neg", "neu")


def stream(rate: Decimal, worker_id: int, n: int = 1000, key: bytes = KEY) -> list[int]:
    """The positions of gold tasks among a worker's first n tasks, as the engine would draw them."""
    tasks = golds = 0
    positions = []
    for i in range(n):
        if schedule.is_gold_turn(key, project_id=1, worker_id=worker_id, rate=rate, tasks=tasks, golds=golds):
            golds += 1
            positions.append(i)
        tasks += 1
    return positions


# ---- the schedule ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", ["0.05", "0.075", "0.10"])
def test_realized_rate_converges_to_the_configured_rate_for_every_worker(rate):
    for worker_id in range(200):
        realized = len(stream(Decimal(rate), worker_id)) / 1000
        assert abs(realized - float(rate)) <= 0.015, (worker_id, realized)


def test_gold_positions_are_random_not_periodic():
    positions = stream(Decimal("0.10"), worker_id=7)
    gaps = np.diff(positions)
    assert len(set(gaps.tolist())) >= 10  # a periodic schedule has one gap
    assert gaps.min() <= 2 and gaps.max() >= 20  # gold may come back to back, or not for a long while
    # No period p in 2..50 puts gold on a few residues: each residue's share stays near 1/p.
    for period in range(2, 51):
        counts = np.bincount(np.asarray(positions) % period, minlength=period)
        assert counts.max() <= 3 * len(positions) / period + 5, period
    # Each worker has their own stream: two workers' gold positions overlap about as chance would have it.
    other = set(stream(Decimal("0.10"), worker_id=8))
    assert len(other & set(positions)) < 30  # ~10 expected by chance; identical streams would share 100


def test_the_next_task_is_never_certainly_gold_or_certainly_not():
    rate = Decimal("0.08")
    for tasks, golds in ((0, 0), (100, 0), (100, 40), (1000, 80), (5, 5)):
        p = schedule.probability(rate, tasks, golds)
        assert 0 < p < 1
        assert float(rate) / 4 <= p <= float(rate) * 3
    assert schedule.probability(Decimal(0), 10, 0) == 0


def test_the_schedule_is_keyed():
    assert stream(Decimal("0.10"), 1, n=300) != stream(Decimal("0.10"), 1, n=300, key=schedule.schedule_key("x"))
    assert stream(Decimal("0.10"), 1, n=300) == stream(Decimal("0.10"), 1, n=300)


def test_gold_tasks_needed():
    assert schedule.gold_tasks_needed(90, Decimal("0.10")) == 10  # 10 / (90 + 10)
    assert schedule.gold_tasks_needed(100, Decimal("0.10")) == 12  # 11.1 rounded up
    assert schedule.gold_tasks_needed(100, Decimal(0)) == 0


# ---- the engine ---------------------------------------------------------------------------------------------


def gold_project(session, clock, *, real: int, gold: int, items_per_hit: int = 1, redundancy: int = 1,
                 rate: str = "0.10", **settings):
    """A published project whose gold items are interleaved with the real ones (one id sequence)."""
    owner, owner_token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=items_per_hit, assignments_per_item=redundancy,
                   gold_rate=Decimal(rate), **settings)
    records = [{"external_id": f"r{i}", "data": {"text": f"review {i}"}} for i in range(real)]
    for g in range(gold):
        records.insert(min(len(records), g * 3 + 1), {"external_id": f"g{g}", "data": {"text": f"review g{g}"},
                                                  "gold": LABELS[g % 3], "explanation": f"because {g}"})
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=clock())
    return owner, owner_token, proj, batch


def work_through(session, clock, worker, n: int) -> list[tuple[int, bool]]:
    """Claim and submit n tasks as the worker; (hit_id, is_gold) of each."""
    served = []
    for _ in range(n):
        task = next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=clock())
        clock.advance(seconds=5)
        engine_submit.submit(session, worker=worker, assignment_id=task.id, now=clock(),
                    answers=[{"item_id": i["id"], "answer": "pos"} for i in task.items])
        served.append((task.hit_id, session.get(Assignment, task.id).is_gold))
    return served


def test_the_engine_injects_gold_at_the_rate_never_twice(session, clock):
    _, _, proj, batch = gold_project(session, clock, real=1000, gold=150)
    worker, _ = account(session, Role.WORKER, now=clock())
    served = work_through(session, clock, worker, 1000)
    gold_hits = [hit for hit, gold in served if gold]
    assert abs(len(gold_hits) / 1000 - 0.10) <= 0.015
    assert len(set(gold_hits)) == len(gold_hits)  # never the same gold twice
    positions = [i for i, (_, gold) in enumerate(served) if gold]
    assert len(set(np.diff(positions).tolist())) >= 5
    stream_row = session.get(GoldStream, (worker.id, proj.id))
    assert (stream_row.tasks, stream_row.golds) == (1000, len(gold_hits))
    # Gold answers are scored and stay out of the batch's redundancy and progress.
    progress = batch_progress(session, batch, now=clock())
    assert progress.answers == 1000 - len(gold_hits) and progress.items == 1000
    assert progress.assignments_by_status["submitted"] == 1000 - len(gold_hits)
    scored = session.scalar(select(func.count()).select_from(Answer).where(Answer.gold_correct.is_not(None)))
    assert scored == len(gold_hits)


def test_gold_hits_have_the_batch_size_and_stay_out_of_the_batch(session, clock):
    _, _, proj, batch = gold_project(session, clock, real=10, gold=5, items_per_hit=2)
    gold_hits = session.scalars(select(Hit).where(Hit.is_gold)).all()
    assert [h.item_count for h in gold_hits] == [2, 2]  # the fifth gold item waits for a partner
    assert batch.item_count == 10 and batch.hit_count == 5
    assert session.scalar(select(func.count()).select_from(Item).where(Item.is_gold, Item.batch_id.is_not(None))) == 0


@pytest.fixture
def always_gold(monkeypatch):
    """Every turn a gold turn: the engine's handling of gold, apart from the schedule's odds."""
    monkeypatch.setattr(engine_next, "is_gold_turn", lambda *args, **kwargs: True)


def next_task(client, token, **query):
    return client.post("/api/v1/work/next", query_string=query, headers=auth(token))


def submit(client, token, task, value="pos"):
    body = {"answers": [{"item_id": i["id"], "answer": value} for i in task["items"]]}
    return client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=body, headers=auth(token))


def shape(value):
    """The structure of a JSON value: keys and types, not contents."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def test_gold_is_indistinguishable_in_every_worker_payload(client, session, clock, monkeypatch):
    _, _, proj, _ = gold_project(session, clock, real=30, gold=10, items_per_hit=2, redundancy=1)
    worker, token = account(session, Role.WORKER, now=clock())
    turns = iter([False, True, False, True])
    monkeypatch.setattr(engine_next, "is_gold_turn", lambda *args, **kwargs: next(turns))
    tasks, details, results = [], [], []
    for _ in range(4):
        task = next_task(client, token).get_json()
        tasks.append(task)
        details.append(client.get(f"/api/v1/assignments/{task['assignment_id']}", headers=auth(token)).get_json())
        results.append(submit(client, token, task).get_json())
    gold = [session.get(Assignment, t["assignment_id"]).is_gold for t in tasks]
    assert gold == [False, True, False, True]
    for payloads in (tasks, details, results):
        assert shape(payloads[1]) == shape(payloads[0]) and shape(payloads[3]) == shape(payloads[2])
    for task in tasks:
        assert [set(i) for i in task["items"]] == [{"id", "data"}, {"id", "data"}]
        assert task["reward"] == tasks[0]["reward"] and task["guidelines"] == tasks[0]["guidelines"]
    assert all(r["feedback"] == [] for r in results)  # the project shows no feedback
    # Ids from the same sequences: gold items sit among the real ones, assignments are numbered in turn.
    # Workers see keyed public ids, unrelated to import order: a gold item imported apart does not stand out.
    gold_ids = {item_id(client, i["id"]) for t, g in zip(tasks, gold, strict=True) if g for i in t["items"]}
    assert gold_ids <= set(session.scalars(select(Item.id).where(Item.is_gold)))
    shown = [public_item_id(client, i) for i in range(1, 1001)]
    assert sorted(shown) != shown and len(set(shown)) == 1000 and all(0 <= i < 2**52 for i in shown)
    assert [t["assignment_id"] for t in tasks] == list(range(tasks[0]["assignment_id"],
                                                             tasks[0]["assignment_id"] + 4))
    body = str(tasks) + str(details) + str(results)
    assert "gold" not in body.lower() and "because" not in body


def test_gold_only_in_place_of_real_work(client, session, clock, always_gold):
    gold_project(session, clock, real=1, gold=1)
    (_, first), (_, second) = (account(session, Role.WORKER, now=clock()) for _ in range(2))
    task = next_task(client, first).get_json()
    assert session.get(Assignment, task["assignment_id"]).is_gold
    assert submit(client, first, task).status_code == 200
    # Their gold is used up: the real HIT.
    assert not session.get(Assignment, next_task(client, first).get_json()["assignment_id"]).is_gold
    # The one real HIT is taken: no work left, so the second worker gets no gold either (though it is new to them).
    resp = next_task(client, second)
    assert resp.status_code == 404 and resp.get_json()["reason"] == "all_assigned"


def test_gold_is_used_up_like_real_work_and_exhaustion_is_reported(client, session, clock, always_gold):
    owner, owner_token, proj, batch = gold_project(session, clock, real=20, gold=2)
    worker, token = account(session, Role.WORKER, now=clock())
    ops, ops_token = account(session, Role.OPS, now=clock())
    first = next_task(client, token).get_json()
    client.post(f"/api/v1/assignments/{first['assignment_id']}/return", headers=auth(token))
    # The returned gold HIT is not used up: its slot is free again. The worker gets the other one first.
    second = next_task(client, token).get_json()
    hits = [session.get(Assignment, t["assignment_id"]).hit_id for t in (first, second)]
    assert all(session.get(Assignment, t["assignment_id"]).is_gold for t in (first, second))
    assert hits[0] != hits[1]
    assert submit(client, token, second).status_code == 200
    # Nothing else is left for them in the pool: the gold HIT they returned comes back.
    third = next_task(client, token).get_json()
    assert session.get(Assignment, third["assignment_id"]).hit_id == hits[0]
    assert submit(client, token, third).status_code == 200
    # Both gold HITs are used up (one slot each): the gold turn finds none, real work is served and the stream is
    # marked exhausted.
    fourth = next_task(client, token).get_json()
    assert not session.get(Assignment, fourth["assignment_id"]).is_gold
    assert session.get(GoldStream, (worker.id, proj.id)).exhausted_at is not None
    pools = client.get("/api/v1/ops/gold-pools", headers=auth(ops_token)).get_json()["data"]
    assert [(p["project_id"], p["workers_exhausted"]) for p in pools] == [(proj.id, 1)]
    body = client.get(f"/api/v1/projects/{proj.id}/batches/{batch.id}", headers=auth(owner_token)).get_json()
    assert body["gold"]["workers_exhausted"] == 1 and body["gold"]["tasks_left"] == 0 and body["gold"]["warning"]
    # New gold joins the pool at once; the next gold turn serves it and ends the exhausted spell.
    records = [{"external_id": "late-gold", "data": {"text": "late"}, "gold": "neg"}]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    assert session.get(GoldStream, (worker.id, proj.id)).exhausted_at is None
    assert submit(client, token, fourth).status_code == 200
    fifth = next_task(client, token).get_json()
    assert session.get(Assignment, fifth["assignment_id"]).is_gold
    assert client.get("/api/v1/ops/gold-pools", headers=auth(ops_token)).get_json()["data"] == []
    assert client.get("/api/v1/ops/gold-pools", headers=auth(owner_token)).status_code == 403


def test_the_batch_tells_the_requester_how_much_gold_it_needs(client, session, clock):
    owner, owner_token, proj, batch = gold_project(session, clock, real=200, gold=9, items_per_hit=2)
    body = client.get(f"/api/v1/projects/{proj.id}/batches/{batch.id}", headers=auth(owner_token)).get_json()
    needed = math.ceil(100 * 0.10 / 0.90)  # 100 HITs at 10%: 12 gold tasks for a worker who does them all
    assert body["gold"] == {"rate": 0.1, "hits_needed": needed, "items_needed": 2 * needed, "hits_available": 4,
                            "items_available": 8, "tasks_left": 4, "items_waiting": 1, "workers_exhausted": 0,
                            "short_hit": False, "warning": body["gold"]["warning"]}
    assert "24 gold items" in body["gold"]["warning"]
    _, _, proj2, batch2 = gold_project(session, clock, real=20, gold=5)
    rich = gold_supply(session, batch2, proj2)
    assert rich.hits_needed == 3 and rich.hits_available == 5


def test_gold_feedback_shows_the_correct_answer_after_a_miss(client, session, clock, always_gold):
    gold_project(session, clock, real=5, gold=3, gold_feedback=True)
    _, token = account(session, Role.WORKER, now=clock())
    task = next_task(client, token).get_json()
    item = session.get(Item, item_id(client, task["items"][0]["id"]))
    wrong = next(label for label in LABELS if label != item.gold_answer)
    result = submit(client, token, task, value=wrong).get_json()
    assert result["feedback"] == [{"item_id": task["items"][0]["id"], "correct_answer": item.gold_answer,
                                   "explanation": item.gold_explanation}]
    again = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=auth(token),
                        json={"answers": [{"item_id": task["items"][0]["id"], "answer": wrong}]})
    assert again.get_json()["feedback"] == result["feedback"]  # a replay says the same
    task = next_task(client, token).get_json()
    item = session.get(Item, item_id(client, task["items"][0]["id"]))
    assert submit(client, token, task, value=item.gold_answer).get_json()["feedback"] == []


def test_no_worker_facing_schema_names_gold(client):
    """Every response a worker's endpoints document: no field says gold (the OpenAPI is made from the schemas)."""
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]

    def fields(ref_or_schema, seen=()):
        schema = ref_or_schema
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name in seen:
                return set()
            seen, schema = (*seen, name), schemas[name]
        names = set(schema.get("properties", {}))
        for sub in [*schema.get("properties", {}).values(), schema.get("items", {})]:
            if isinstance(sub, dict) and ("$ref" in sub or "properties" in sub or "items" in sub):
                names |= fields(sub, seen)
        return names

    worker_paths = [p for p in spec["paths"] if p.startswith(("/api/v1/work/", "/api/v1/assignments/",
                                                              "/api/v1/disputes"))]
    assert len(worker_paths) >= 5
    items = spec["paths"]["/api/v1/projects/{project_id}/items"]["get"]["responses"]["200"]
    assert "is_gold" in fields(items["content"]["application/json"]["schema"])  # the walk finds gold where it is
    for path in worker_paths:
        for operation in (op for op in spec["paths"][path].values() if isinstance(op, dict)):
            for response in operation.get("responses", {}).values():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema:
                    assert not [f for f in fields(schema) if "gold" in f.lower()], path


def test_gold_hits_are_served_breadth_first_and_capped_like_real_ones(session, clock, always_gold):
    """Each new worker's first task is gold: the pool serves every gold HIT once before any twice, and no gold HIT
    to more workers than the batch's redundancy (3 here), after which gold turns serve real work."""
    _, _, proj, _ = gold_project(session, clock, real=300, gold=10, redundancy=3)
    picks = []
    for _ in range(40):
        worker, _ = account(session, Role.WORKER, now=clock())
        task = next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=clock())
        picks.append((task.hit_id, session.get(Assignment, task.id).is_gold))
    gold = [hit for hit, is_gold in picks if is_gold]
    assert len(gold) == 30 and not any(is_gold for _, is_gold in picks[30:])
    assert len(set(gold[:10])) == 10 and len(set(gold[10:20])) == 10  # breadth-first
    assert sorted(gold.count(h) for h in set(gold)) == [3] * 10
