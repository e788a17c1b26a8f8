"""Per-worker accuracy from gold answers, the project's thresholds and actions, and a simulated crowd."""

from __future__ import annotations

import io
import random
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Answer, Assignment, Item
from market.engine import next_task
from market.engine.next_task import next_assignment
from market.engine.submit import submit
from market.quality import scoring
from qualification import gold as schedule
from qualification.accuracy import wilson_interval
from qualification.judgement import judge
from tests.factories import TEST_GOLD_KEY, account, auth, item_id, jsonl, project
from workers import flags
from workers.models import Account, FlagReason, FlagState, WorkerBlock, WorkerFlag

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
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
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
    session.expire_all()  # the worker was judged in a session of the app's
    return task


def gold_tasks(client, session, clock, turns, token, outcomes) -> None:
    """Gold tasks (the script says so), answered right or wrong as `outcomes` say, in turn."""
    for correct in outcomes:
        turns.append(True)
        do_task(client, session, clock, token, correct=correct)


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


def test_flagged_once_when_the_posterior_passes_the_flag_level(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=20, gold=10, min_judged_answers=4)
    worker, token = account(session, Role.WORKER, now=clock())
    gold_tasks(client, session, clock, turns, token, (False, True, False))
    assert flags_of(session, worker.id) == []  # 1/3: P(below 0.90) is 0.98, but fewer than 4 answers judged
    gold_tasks(client, session, clock, turns, token, (True,))  # 2/4: P = 0.96, past the flag level, short of 0.99
    [flag] = flags_of(session, worker.id)
    assert flag.state == FlagState.OPEN and flag.project_id == proj.id and flag.created_by_id is None
    # Gold alone decided (nobody else answered these items): the reason says so.
    assert flag.reason == FlagReason.GOLD_BELOW_THRESHOLD and flag.evidence["decision"] == "flag"
    assert flag.evidence["metric"] == "accuracy" and flag.evidence["n"] == 4 and flag.evidence["threshold"] == 0.9
    assert (flag.evidence["gold_seen"], flag.evidence["gold_correct"], flag.evidence["compared"]) == (4, 2, 0)
    expected = judge([False, True, False, True], [], n_classes=3, minimum=0.9, flag_level=0.9, act_level=0.99,
                     min_answers=4)
    assert flag.evidence["p_below"] == pytest.approx(expected.p_below) and 0.9 <= expected.p_below < 0.99
    for _ in range(4):
        turns.append(True)
        do_task(client, session, clock, token, correct=False)
    assert len(flags_of(session, worker.id)) == 1  # no pile of flags for one finding
    # The project's action is "flag": however sure the evidence, no block.
    assert session.scalars(select(WorkerBlock).where(WorkerBlock.account_id == worker.id)).all() == []
    got = record(client, owner_token, proj.id, worker.id)
    assert got["p_below"] > 0.999 and got["judged_answers"] == 8 and got["model_high"] < 0.9


def test_auto_block_past_the_action_level(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=20, gold=10, min_judged_answers=5,
                                        quality_action="block", redundancy=2)
    worker, token = account(session, Role.WORKER, now=clock())
    do_task(client, session, clock, token)  # a real answer, excluded by the block below
    gold_tasks(client, session, clock, turns, token, (True, False, False, True))
    assert flags_of(session, worker.id) == []  # 2/4 (P = 0.96): fewer than 5 answers judged (the real one has no
    # other answers to be compared with)
    gold_tasks(client, session, clock, turns, token, (False,))  # 2/5: P(below 0.90) = 0.992 >= 0.99
    [flag] = flags_of(session, worker.id)
    assert flag.state == FlagState.BLOCKED and flag.evidence["decision"] == "act"
    block = session.get(WorkerBlock, flag.block_id)
    assert block.project_id == proj.id and block.created_by_id is None and "automatic" in block.reason
    resp = client.post("/api/v1/work/next", query_string={"project_id": proj.id}, headers=auth(token))
    assert resp.status_code == 403 and resp.get_json()["reason"] == "blocked"
    excluded = session.scalars(select(Answer.excluded_at).where(Answer.worker_id == worker.id)).all()
    assert len(excluded) == 6 and all(e is not None for e in excluded)
    assert [e.action for e in flags.events(session, flag.id)] == ["opened", "blocked", "applied"]


def test_a_flag_whose_evidence_has_gone_closes_itself(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=80, gold=80, min_judged_answers=3)
    worker, token = account(session, Role.WORKER, now=clock())
    gold_tasks(client, session, clock, turns, token, (False, False, True))
    [flag] = flags_of(session, worker.id)
    assert flag.state == FlagState.OPEN
    # An unlucky start: the worker then answers gold right, and the probability of being below falls away.
    closed_after = None
    for n in range(60):
        turns.append(True)
        do_task(client, session, clock, token, correct=True)
        if session.get(WorkerFlag, flag.id).state == FlagState.DISMISSED:
            closed_after = n + 1
            break
    assert closed_after is not None
    session.refresh(flag)
    event = flags.events(session, flag.id)[-1]
    assert (event.action, event.actor_id) == ("closed", None) and "closed by the system" in event.note
    assert record(client, owner_token, proj.id, worker.id)["p_below"] < 0.5
    # Closed by the system, so a relapse flags again at the flag level (after an ops dismissal only the action
    # level would).
    for _ in range(12):
        turns.append(True)
        do_task(client, session, clock, token, correct=False)
        if len(flags_of(session, worker.id)) == 2:
            break
    assert len(flags_of(session, worker.id)) == 2 and flags_of(session, worker.id)[1].state == FlagState.OPEN


def test_after_an_ops_dismissal_only_the_action_level_flags_again(client, session, clock, turns):
    _, _, proj = gold_project(session, clock, real=40, gold=40, min_judged_answers=4)
    worker, token = account(session, Role.WORKER, now=clock())
    _, ops_token = account(session, Role.OPS, now=clock())
    gold_tasks(client, session, clock, turns, token, (False, True, False, True))
    [flag] = flags_of(session, worker.id)  # 2/4: P = 0.96
    client.post(f"/api/v1/ops/flags/{flag.id}/dismiss", json={"reason": "new worker"}, headers=auth(ops_token))
    session.expire_all()
    assert session.get(WorkerFlag, flag.id).state == FlagState.DISMISSED
    for correct in (True, False):  # 3/5 and 3/6: P = 0.95, then 0.99 less a hair: a flag's worth, not the action's
        gold_tasks(client, session, clock, turns, token, (correct,))
        assert len(flags_of(session, worker.id)) == 1
    gold_tasks(client, session, clock, turns, token, (False,))  # 3/7: P past 0.99
    assert len(flags_of(session, worker.id)) == 2


def test_fast_answers_are_counted_and_flagged(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=60, gold=10, redundancy=2)
    (careful, careful_token), (hasty, hasty_token) = (account(session, Role.WORKER, now=clock()) for _ in range(2))
    for _ in range(20):
        do_task(client, session, clock, careful_token, seconds=20)  # the project's median: 20 s
    for _ in range(12):
        do_task(client, session, clock, hasty_token, seconds=1)  # under a quarter of the 20 s median
    got = record(client, owner_token, proj.id, hasty.id)
    assert got["tasks"] == 12 and got["fast_answers"] == 12 and got["median_ms"] == 1000
    [flag] = flags_of(session, hasty.id, FlagReason.FAST_ANSWERS)
    assert flag.evidence["metric"] == "fast_share" and flag.evidence["n"] == 10  # flagged at the 10th task
    assert flags_of(session, careful.id, FlagReason.FAST_ANSWERS) == []


def test_every_worker_has_a_record_from_their_first_task(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=5, gold=3, redundancy=2)
    worker, token = account(session, Role.WORKER, now=clock())
    do_task(client, session, clock, token, seconds=7)  # a real task (the script has no gold turn): no gold met
    got = record(client, owner_token, proj.id, worker.id)
    assert (got["tasks"], got["gold_seen"], got["median_ms"], got["leases"], got["given_back"]) == (1, 0, 7000, 1, 0)


def test_agreement_with_the_other_workers_majority(client, session, clock, turns):
    _, owner_token, proj = gold_project(session, clock, real=4, gold=3, redundancy=4)
    tokens = [account(session, Role.WORKER, now=clock()) for _ in range(4)]
    for _ in range(4):  # everyone answers every item: three say "pos", the last "neg"
        for n, (_, token) in enumerate(tokens):
            do_task(client, session, clock, token, label="neg" if n == 3 else "pos")
    # Gold comes only in place of real work: one more item, then a gold task each recomputes the figures.
    records = [{"external_id": "more", "data": {"text": "one more"}}]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=session.get(Account, proj.owner_id), now=clock())
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


def simulated_crowd(session, clock, monkeypatch, seed: int, *, tasks: int = 60) -> tuple[float, float]:
    """16 honest workers (accuracy drawn from 0.70-0.95), 3 answering at random and 3 always giving one label, 8% gold,
    HITs of 2 items answered by 3 workers each, the project's minimum 0.60: each works `tasks` tasks, in turns,
    through the engine, judged after every submit as the app does. Returns flag (precision, recall) against the
    bad workers.

    Each worker's answers come from a generator of their own, and their gold schedule is the engine's drawn for
    their place in the crowd, not their database id: ids shift as other tests are added, run in parallel or on
    another backend, and would deal the workers different luck from run to run."""
    rng = random.Random(seed)
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=2, assignments_per_item=3, gold_rate=Decimal("0.08"),
                   min_gold_accuracy=Decimal("0.60"))
    truth = {f"r{i}": rng.choice(LABELS) for i in range(950)}
    records = [{"external_id": k, "data": {"text": f"review {k}"}} for k in truth]
    records += [{"external_id": f"g{g}", "data": {"text": f"review g{g}"}, "gold": LABELS[g % 3]} for g in range(130)]
    rng.shuffle(records)
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    kinds = [("honest", rng.uniform(0.70, 0.95)) for _ in range(16)] + [("random", 0.0)] * 3 + [("same", 0.0)] * 3
    rng.shuffle(kinds)
    crowd = [(account(session, Role.WORKER, now=clock())[0], kind, accuracy, random.Random(f"{seed}-{n}"))
             for n, (kind, accuracy) in enumerate(kinds)]
    place = {w.id: n for n, (w, *_) in enumerate(crowd)}
    key = schedule.schedule_key(f"crowd {seed}")
    monkeypatch.setattr(next_task, "is_gold_turn", lambda _key, *, worker_id, **turn: schedule.is_gold_turn(
        key, worker_id=place[worker_id], **turn))

    def answer(kind: str, accuracy: float, item: Item, luck: random.Random) -> str:
        right = item.gold_answer if item.is_gold else truth[item.external_id]
        if kind == "same":
            return LABELS[0]
        if kind == "random":
            return luck.choice(LABELS)
        return right if luck.random() < accuracy else luck.choice([v for v in LABELS if v != right])

    for _ in range(tasks):
        for worker, kind, accuracy, luck in rng.sample(crowd, len(crowd)):
            task = next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=clock(), project_id=proj.id)
            clock.advance(seconds=luck.uniform(20, 40))
            shown = [session.get(Item, i["id"]) for i in task.items]
            submit(session, worker=worker, assignment_id=task.id, now=clock(),
                        answers=[{"item_id": i.id, "answer": answer(kind, accuracy, i, luck)} for i in shown])
            scoring.evaluate(session, worker_id=worker.id, project_id=proj.id, now=clock())
            session.commit()
    flagged = {w.id for w, *_ in crowd if session.scalar(select(WorkerFlag.id).where(
        WorkerFlag.account_id == w.id, WorkerFlag.project_id == proj.id).limit(1)) is not None}
    bad = {w.id for w, kind, *_ in crowd if kind != "honest"}
    assert session.scalar(select(func.count()).select_from(Assignment).where(Assignment.is_gold)) > 0.05 * tasks * 22
    return len(flagged & bad) / max(len(flagged), 1), len(flagged & bad) / len(bad)


@pytest.mark.parametrize("seed", [2026, 7])
def test_a_simulated_crowd_is_judged_with_precision_and_recall_of_at_least_0_9(session, clock, monkeypatch, seed):
    precision, recall = simulated_crowd(session, clock, monkeypatch, seed)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
