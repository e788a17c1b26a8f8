"""Per-worker accuracy from gold answers, the project's thresholds and actions, and a simulated crowd."""

from __future__ import annotations

import io
import random
from decimal import Decimal

import pytest
from sqlalchemy import select

from market import scoring, service, work
from market.imports import import_items
from market.models import Answer, Assignment, Item
from market.problems import Forbidden
from qualification.accuracy import wilson_interval
from tests.factories import account, auth, item_id, jsonl, project
from workers import flags
from workers.models import Account, FlagReason, FlagState, Role, WorkerBlock, WorkerFlag

LABELS = ("pos", "neg", "neu")


def gold_project(session, clock, *, real: int, gold: int, items_per_hit: int = 1, redundancy: int = 1,
                 **settings):
    owner, owner_token = account(session, Role.REQUESTER, now=clock())
    settings.setdefault("gold_rate", Decimal("0.10"))
    proj = project(session, owner, now=clock(), items_per_hit=items_per_hit, assignments_per_item=redundancy,
                   **settings)
    records = [{"external_id": f"r{i}", "data": {"text": f"review {i}"}} for i in range(real)]
    records += [{"external_id": f"g{g}", "data": {"text": f"review g{g}"}, "gold": LABELS[g % 3],
                 "explanation": f"it reads {LABELS[g % 3]}"} for g in range(gold)]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    service.publish_batch(session, project_id=proj.id, account=owner, now=clock())
    return owner, owner_token, proj


def do_task(client, session, clock, token, *, correct: bool = True, seconds: float = 5, label: str | None = None):
    """Claim and submit one task through the API; on gold items answer right or wrong as told."""
    resp = client.post("/api/v1/work/next", headers=auth(token))
    assert resp.status_code == 200, resp.get_json()
    task = resp.get_json()
    clock.advance(seconds=seconds)
    answers = []
    for shown in task["items"]:
        item = session.get(Item, item_id(client, shown["id"]))
        if label is not None:
            value = label
        elif item.is_gold:
            value = item.gold_answer if correct else next(v for v in LABELS if v != item.gold_answer)
        else:
            value = "pos"
        answers.append({"item_id": shown["id"], "answer": value})
    resp = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json={"answers": answers},
                       headers=auth(token))
    assert resp.status_code == 200, resp.get_json()
    return task


def record(client, token, project_id, worker_id):
    rows = client.get(f"/api/v1/projects/{project_id}/workers", headers=auth(token)).get_json()["data"]
    return next(r for r in rows if r["worker_id"] == worker_id)


def flags_of(session, worker_id, reason=FlagReason.GOLD_BELOW_THRESHOLD):
    return session.scalars(select(WorkerFlag).where(WorkerFlag.account_id == worker_id, WorkerFlag.reason == reason)
                           .order_by(WorkerFlag.id)).all()


def test_gold_answers_update_the_workers_accuracy(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=10, gold=5, accuracy_window=2)
    worker, token = account(session, Role.WORKER, now=clock())
    turns += [True, False, True, True]
    do_task(client, session, clock, token, correct=True, seconds=4)
    do_task(client, session, clock, token, seconds=10)
    do_task(client, session, clock, token, correct=False, seconds=6)
    do_task(client, session, clock, token, correct=True, seconds=8)
    got = record(client, owner_token, proj.id, worker.id)
    low, high = wilson_interval(2, 3)
    assert (got["gold_seen"], got["gold_correct"]) == (3, 2)
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert (got["wilson_low"], got["wilson_high"]) == (pytest.approx(low), pytest.approx(high))
    assert (got["rolling_seen"], got["rolling_accuracy"]) == (2, 0.5)  # the last two: wrong, right
    assert got["tasks"] == 4 and got["median_ms"] == 6000  # the lower middle of 4, 6, 8 and 10 s
    # Real answers are not gold: only the gold tasks are scored.
    scored = session.scalars(select(Answer.gold_correct).where(Answer.worker_id == worker.id)
                             .order_by(Answer.id)).all()
    assert scored == [True, None, False, True]


def test_below_the_minimum_a_worker_is_flagged_once_after_enough_gold(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=20, gold=10, min_gold_answers=4)
    worker, token = account(session, Role.WORKER, now=clock())
    for _ in range(3):
        turns.append(True)
        do_task(client, session, clock, token, correct=False)
    assert flags_of(session, worker.id) == []  # 0/3 but fewer than 4 gold answers: nothing yet
    turns.append(True)
    do_task(client, session, clock, token, correct=True)  # 1/4: below 0.90
    [flag] = flags_of(session, worker.id)
    assert flag.state == FlagState.OPEN and flag.project_id == proj.id and flag.created_by_id is None
    assert flag.evidence["metric"] == "gold_accuracy" and flag.evidence["n"] == 4
    assert flag.evidence["value"] == 0.25 and flag.evidence["threshold"] == 0.9
    for _ in range(4):
        turns.append(True)
        do_task(client, session, clock, token, correct=False)
    assert len(flags_of(session, worker.id)) == 1  # no pile of flags for one finding
    # The project's action is "flag": however sure the evidence, no block.
    assert session.scalars(select(WorkerBlock).where(WorkerBlock.account_id == worker.id)).all() == []


def test_auto_block_when_the_upper_bound_is_below_the_minimum(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=20, gold=10, min_gold_answers=5,
                                        quality_action="block", redundancy=2)
    worker, token = account(session, Role.WORKER, now=clock())
    do_task(client, session, clock, token)  # a real answer, excluded by the block below
    for correct in (True, False, False, True):
        turns.append(True)
        do_task(client, session, clock, token, correct=correct)
    assert flags_of(session, worker.id) == []
    turns.append(True)
    do_task(client, session, clock, token, correct=False)  # 2/5: the 99% interval's top is 0.87 < 0.90
    [flag] = flags_of(session, worker.id)
    assert flag.state == FlagState.BLOCKED and flag.evidence["decision"] == "act"
    block = session.get(WorkerBlock, flag.block_id)
    assert block.project_id == proj.id and block.created_by_id is None and "automatic" in block.reason
    resp = client.post("/api/v1/work/next", query_string={"project_id": proj.id}, headers=auth(token))
    assert resp.status_code == 403 and resp.get_json()["reason"] == "blocked"
    excluded = session.scalars(select(Answer.excluded_at).where(Answer.worker_id == worker.id)).all()
    assert len(excluded) == 6 and all(e is not None for e in excluded)
    assert [e.action for e in flags.events(session, flag.id)] == [
        "opened", "blocked", "applied"]


def test_fast_answers_are_counted_and_flagged(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=60, gold=10, redundancy=2)
    (careful, careful_token), (hasty, hasty_token) = (account(session, Role.WORKER, now=clock()) for _ in range(2))
    for _ in range(19):
        do_task(client, session, clock, careful_token, seconds=20)
    turns.append(True)
    do_task(client, session, clock, careful_token, seconds=20)  # their figures: the project's median is 20 s
    for _ in range(11):
        do_task(client, session, clock, hasty_token, seconds=1)  # under a quarter of the 20 s median
    turns.append(True)
    do_task(client, session, clock, hasty_token, seconds=1)
    got = record(client, owner_token, proj.id, hasty.id)
    assert got["tasks"] == 12 and got["fast_answers"] == 12 and got["median_ms"] == 1000
    [flag] = flags_of(session, hasty.id, FlagReason.FAST_ANSWERS)
    assert flag.evidence["metric"] == "fast_share" and flag.evidence["n"] == 12
    assert flags_of(session, careful.id, FlagReason.FAST_ANSWERS) == []


def test_agreement_with_the_other_workers_majority(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=4, gold=3, redundancy=4)
    tokens = [account(session, Role.WORKER, now=clock()) for _ in range(4)]
    for _ in range(4):  # everyone answers every item: three say "pos", the last "neg"
        for n, (_, token) in enumerate(tokens):
            do_task(client, session, clock, token, label="neg" if n == 3 else "pos")
    # Gold comes only in place of real work: one more item, then a gold task each recomputes the figures.
    records = [{"external_id": "more", "data": {"text": "one more"}}]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    service.publish_batch(session, project_id=proj.id, account=session.get(Account, proj.owner_id), now=clock())
    for _, token in tokens:
        turns.append(True)
        do_task(client, session, clock, token)
    agreeing = record(client, owner_token, proj.id, tokens[0][0].id)
    dissenting = record(client, owner_token, proj.id, tokens[3][0].id)
    assert (agreeing["agreement_counted"], agreeing["agreement"]) == (4, 1.0)
    assert (dissenting["agreement_counted"], dissenting["agreement"]) == (4, 0.0)


def test_ops_see_a_workers_quality_per_project_and_overall(client, session, clock, turns):
    worker, token = account(session, Role.WORKER, now=clock())
    _, ops_token = account(session, Role.OPS, now=clock())
    projects = [gold_project(session, clock, real=5, gold=3)[2] for _ in range(2)]
    for proj, outcomes in zip(projects, ((True, True), (False,)), strict=True):
        for correct in outcomes:
            turns.append(True)
            task = client.post("/api/v1/work/next", query_string={"project_id": proj.id},
                               headers=auth(token)).get_json()
            item = session.get(Item, item_id(client, task["items"][0]["id"]))
            value = item.gold_answer if correct else next(v for v in LABELS if v != item.gold_answer)
            client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=auth(token),
                        json={"answers": [{"item_id": task["items"][0]["id"], "answer": value}]})
    rows = client.get(f"/api/v1/ops/workers/{worker.id}/quality", headers=auth(ops_token)).get_json()["data"]
    assert [(r["project_id"], r["gold_seen"], r["gold_correct"]) for r in rows] == [
        (projects[0].id, 2, 2), (projects[1].id, 1, 0), (None, 3, 2)]
    assert rows[-1]["accuracy"] == pytest.approx(2 / 3)
    assert client.get(f"/api/v1/ops/workers/{worker.id}/quality", headers=auth(token)).status_code == 403
    # A requester sees only their own project's workers.
    other_owner, other_token = account(session, Role.REQUESTER, now=clock())
    assert client.get(f"/api/v1/projects/{projects[0].id}/workers", headers=auth(other_token)).status_code == 404


def test_simulated_crowd(session, clock):
    """80 honest workers (95% right), 10 who answer at random, 10 who always pick the first label; gold answers
    spread over the three labels. Every spammer is flagged within 20 gold answers; no honest worker is blocked,
    though the project blocks automatically.

    Each worker's gold answers come from a generator of their own, seeded by their place in the crowd: which
    tasks turn out gold depends on database ids (the schedule is keyed by the worker's id), and those shift as
    other tests are added, so a shared generator would deal honest workers different luck from run to run (with
    80 of them, one is auto-blocked about one run in four)."""
    proj = gold_project(session, clock, real=9000, gold=50, items_per_hit=5, redundancy=3,
                        quality_action="block")[2]
    rng = random.Random(2026)
    kinds = ["honest"] * 80 + ["random"] * 10 + ["first"] * 10
    rng.shuffle(kinds)
    crowd = [(account(session, Role.WORKER, now=clock())[0], kind, random.Random(f"2026-{n}"))
             for n, kind in enumerate(kinds)]

    def answer(kind: str, item: Item, luck: random.Random) -> str:
        if kind == "first":
            return LABELS[0]
        if not item.is_gold:
            return rng.choice(LABELS)
        if kind == "random":
            return luck.choice(LABELS)
        return item.gold_answer if luck.random() < 0.95 else luck.choice([v for v in LABELS if v != item.gold_answer])

    for worker, kind, luck in crowd:
        gold_seen = 0
        while gold_seen < 20:
            try:
                task = work.next_assignment(session, worker=worker, now=clock(), project_id=proj.id)
            except Forbidden:
                break  # blocked
            items = [session.get(Item, i["id"]) for i in task.items]
            clock.advance(seconds=rng.uniform(20, 40))
            result, _ = work.submit(session, worker=worker, assignment_id=task.id, now=clock(),
                                    answers=[{"item_id": i.id, "answer": answer(kind, i, luck)} for i in items])
            if result.gold:
                scoring.record_gold(session, worker_id=worker.id, project_id=task.project_id, now=clock())
                gold_seen += len(items)
    for worker, kind, _ in crowd:
        flagged = flags_of(session, worker.id)
        blocked = session.scalars(select(WorkerBlock).where(WorkerBlock.account_id == worker.id)).all()
        if kind == "honest":
            assert blocked == [], worker.id
        else:
            assert flagged and flagged[0].evidence["n"] <= 20, (kind, worker.id)
    assert session.scalar(select(Assignment.id).where(Assignment.is_gold).limit(1)) is not None
