"""The assignment engine under real concurrency: separate connections and committed transactions, not the rollback
wrapper. On PostgreSQL claims race through FOR UPDATE SKIP LOCKED; on SQLite writers are serialized by BEGIN
IMMEDIATE. Either way: no item over its redundancy, no worker answering an item twice, every acknowledged submit
stored, and no deadlock or serialization error surfaced to a caller."""

from __future__ import annotations

import datetime as dt
import io
import random
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text

from base.clock import utcnow
from base.db import Database, make_engine
from base.errors import Gone
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    Batch,
    GoldPool,
    GuidelineVersion,
    Hit,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from market.engine import next_task
from market.engine.claim import Task
from market.engine.next_task import NoWork, load_task, next_assignment
from market.engine.submit import return_assignment, submit
from qualification.models import GoldStream
from tests.conftest import DATABASE_URL, make_app
from tests.factories import SENTIMENT, TEST_GOLD_KEY, in_uow, item_id, items, project
from workers.models import Account, ApiToken, WorkerFlag, WorkerStats
from workers.service import create_account, issue_token

WORKERS = 40
ITEMS = 60
ITEMS_PER_HIT = 2
REDUNDANCY = 3
RETURN_RATE = 0.10
RESUBMIT_RATE = 0.15
LABEL = SENTIMENT["categories"][0]["key"]
JOIN_TIMEOUT = 60


@dataclass
class Market:
    """A committed project with one published batch and its worker accounts."""

    project_id: int
    batch_id: int
    owner_id: int
    worker_ids: list[int]
    lease: dt.timedelta


@dataclass
class Made:
    project_ids: list[int] = field(default_factory=list)
    account_ids: list[int] = field(default_factory=list)


@pytest.fixture
def db(engine, database_url: str) -> Iterator[Database]:
    """A pool wide enough that every worker thread holds its own connection (PostgreSQL); `engine` migrates."""
    database = Database(make_engine(database_url, pool_size=WORKERS + 2))
    yield database
    database.dispose()


@pytest.fixture
def market(db: Database) -> Iterator[Callable[..., Market]]:
    """Build committed markets; every row they (and the test) made is deleted afterwards, children first."""
    made = Made()

    def build(*, n_items: int, per_hit: int, redundancy: int, n_workers: int, now: dt.datetime,
              gold: int = 0) -> Market:
        tag = uuid.uuid4().hex[:10]
        with db.session_scope() as s:
            owner = in_uow(create_account, s, role=Role.REQUESTER, email=f"req-{tag}@example.com", now=now)
            in_uow(issue_token, s, account=owner, now=now)
            s.commit()
            made.account_ids.append(owner.id)
            proj = in_uow(project, s, owner, now=now, items_per_hit=per_hit, assignments_per_item=redundancy)
            made.project_ids.append(proj.id)
            workers = []
            for i in range(n_workers):
                workers.append(in_uow(create_account, s, role=Role.WORKER, username=f"w-{tag}-{i}", now=now))
            s.commit()
            made.account_ids.extend(w.id for w in workers)
            in_uow(items, s, proj, n_items, now=now, prefix=f"{tag}-", gold=gold)
            batch, created = in_uow(publish_batch, s, project_id=proj.id, account=owner, now=now)
            assert created
            return Market(proj.id, batch.id, owner.id, [w.id for w in workers],
                          dt.timedelta(seconds=batch.assignment_duration_seconds))

    yield build

    with db.session_scope() as s:
        pids, aids = made.project_ids, made.account_ids
        s.execute(delete(Answer).where(Answer.project_id.in_(pids)))
        s.execute(delete(HitSlot).where(HitSlot.hit_id.in_(select(Hit.id).where(Hit.project_id.in_(pids)))))
        s.execute(delete(Assignment).where(Assignment.project_id.in_(pids)))
        s.execute(delete(Item).where(Item.project_id.in_(pids)))
        s.execute(delete(Hit).where(Hit.project_id.in_(pids)))
        for model in (GoldPool, GoldStream, WorkerStats):
            s.execute(delete(model).where(model.project_id.in_(pids)))
        s.execute(delete(WorkerFlag).where(WorkerFlag.project_id.in_(pids)))
        s.execute(delete(Batch).where(Batch.project_id.in_(pids)))
        s.execute(delete(GuidelineVersion).where(GuidelineVersion.project_id.in_(pids)))
        s.execute(delete(Project).where(Project.id.in_(pids)))
        s.execute(delete(ApiToken).where(ApiToken.account_id.in_(aids)))
        s.execute(delete(Account).where(Account.id.in_(aids)))
        s.commit()


def _run(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a worker thread hung (deadlock or lock wait)"


def _answers(view: Task) -> list[dict[str, Any]]:
    return [{"item_id": it["id"], "answer": LABEL} for it in view.items]


# ---- many workers, one batch with tight redundancy ------------------------------------------------------


def test_many_workers_claim_and_submit_without_overfilling_or_losing_answers(db, market):
    started = time.monotonic()
    m = market(n_items=ITEMS, per_hit=ITEMS_PER_HIT, redundancy=REDUNDANCY, n_workers=WORKERS, now=utcnow())
    barrier = threading.Barrier(WORKERS)
    acked: list[tuple[int, int, dict[int, Any]]] = []  # (assignment id, worker id, {item id: answer})
    returned: list[int] = []
    replays: list[int] = []
    errors: list[str] = []
    deadline = time.monotonic() + 45

    def worker(i: int) -> None:
        rng = random.Random(7919 + i)
        barrier.wait()  # before any query: on SQLite the first statement takes the write lock
        try:
            with db.session_scope() as s:
                me = s.get_one(Account, m.worker_ids[i])
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError("worker still finding work at the deadline")
                    try:
                        asg = in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY,
                                              worker=me, now=utcnow(), project_id=m.project_id)
                    except NoWork:
                        return
                    assert asg.worker_id == me.id and asg.status == AssignmentStatus.LEASED
                    answers = _answers(asg)
                    roll = rng.random()
                    if roll < RETURN_RATE:
                        in_uow(return_assignment, s, worker=me, assignment_id=asg.id, now=utcnow())
                        returned.append(asg.id)
                        continue
                    _, replayed = in_uow(submit, s, worker=me, assignment_id=asg.id, answers=answers, now=utcnow())
                    assert not replayed, f"first submit of {asg.id} was taken for a replay"
                    acked.append((asg.id, me.id, {a["item_id"]: a["answer"] for a in answers}))
                    if roll > 1 - RESUBMIT_RATE:  # a retried request: must be a harmless replay
                        _, replayed = in_uow(submit, s, worker=me, assignment_id=asg.id, answers=answers,
                                                  now=utcnow())
                        assert replayed, f"second submit of {asg.id} was not a replay"
                        replays.append(asg.id)
        except Exception as exc:  # noqa: BLE001 - any surfaced error (deadlock, serialization, ...) fails the test
            errors.append(f"worker {i}: {exc!r}\n{traceback.format_exc()}")

    _run(WORKERS, worker)
    elapsed = time.monotonic() - started
    assert not errors, "\n".join(errors)

    hits = ITEMS // ITEMS_PER_HIT
    with db.session_scope() as s:
        per_item = dict(s.execute(
            select(Item.id, func.count(Answer.id)).outerjoin(Answer, Answer.item_id == Item.id)
            .where(Item.project_id == m.project_id).group_by(Item.id)).all())
        assert len(per_item) == ITEMS
        assert sorted(set(per_item.values())) == [REDUNDANCY], per_item  # all done, none over
        twice = s.execute(select(Answer.worker_id, Answer.item_id).where(Answer.project_id == m.project_id)
                          .group_by(Answer.worker_id, Answer.item_id).having(func.count() > 1)).all()
        assert twice == []
        stored = {tuple(row) for row in s.execute(
            select(Answer.assignment_id, Answer.worker_id, Answer.item_id, Answer.value)
            .where(Answer.project_id == m.project_id))}
        expected = {(aid, wid, item_id, value) for aid, wid, vals in acked for item_id, value in vals.items()}
        assert expected <= stored, f"acknowledged but not stored: {sorted(expected - stored)[:5]}"
        assert len(stored) == sum(len(vals) for _, _, vals in acked) == ITEMS * REDUNDANCY
        assert stored == expected  # nothing stored that was not acknowledged
        states = dict(s.execute(select(HitSlot.state, func.count()).where(HitSlot.batch_id == m.batch_id)
                                .group_by(HitSlot.state)).all())
        assert states == {SlotState.DONE: hits * REDUNDANCY}
        statuses = dict(s.execute(select(Assignment.status, func.count()).where(
            Assignment.project_id == m.project_id).group_by(Assignment.status)).all())
        assert statuses.get(AssignmentStatus.LEASED, 0) == 0
        assert statuses.get(AssignmentStatus.SUBMITTED, 0) == len(acked) == hits * REDUNDANCY
        assert statuses.get(AssignmentStatus.RETURNED, 0) == len(returned)
        same_hit = s.execute(select(Assignment.hit_id, Assignment.worker_id).where(
            Assignment.project_id == m.project_id, Assignment.status == AssignmentStatus.SUBMITTED)
            .group_by(Assignment.hit_id, Assignment.worker_id).having(func.count() > 1)).all()
        assert same_hit == []
    assert returned and replays, "the run should exercise returns and replayed submits"
    assert elapsed < 30, f"took {elapsed:.1f}s"


# ---- the same through the HTTP API, as served --------------------------------------------------------


def test_many_workers_through_the_http_api(db, market):
    """Flask views, token auth and, on PostgreSQL, the autocommit sessions of the hot endpoints: 32 workers ask,
    submit (some twice) and return through the API until the batch is done."""
    n_workers, n_items = 32, 48
    m = market(n_items=n_items, per_hit=1, redundancy=REDUNDANCY, n_workers=n_workers, now=utcnow())
    with db.session_scope() as s:
        tokens = [in_uow(issue_token, s, account=s.get_one(Account, wid), now=utcnow())[1] for wid in m.worker_ids]
        s.commit()
    app = make_app({"DATABASE": db})
    barrier = threading.Barrier(n_workers)
    acked: list[tuple[int, int]] = []  # (assignment id, item id)
    errors: list[str] = []

    def worker(i: int) -> None:
        http, rng, headers = app.test_client(), random.Random(31 + i), {"Authorization": f"Bearer {tokens[i]}"}
        barrier.wait()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            got = http.post("/api/v1/work/next", query_string={"project_id": m.project_id}, headers=headers)
            if got.status_code == 404 and got.get_json()["reason"] == "all_assigned":
                return
            if got.status_code != 200:
                errors.append(f"worker {i}: next {got.status_code} {got.get_data(as_text=True)[:300]}")
                return
            task = got.get_json()
            path = f"/api/v1/assignments/{task['assignment_id']}"
            if rng.random() < RETURN_RATE:
                back = http.post(f"{path}/return", headers=headers)
                if back.status_code != 200:
                    errors.append(f"worker {i}: return {back.status_code} {back.get_data(as_text=True)[:300]}")
                continue
            body = {"answers": [{"item_id": it["id"], "answer": LABEL} for it in task["items"]]}
            for _ in range(2 if rng.random() < RESUBMIT_RATE else 1):  # a retried request is a harmless replay
                done = http.post(f"{path}/submit", json=body, headers=headers)
                if done.status_code != 200:
                    errors.append(f"worker {i}: submit {done.status_code} {done.get_data(as_text=True)[:300]}")
                    return
            acked.append((task["assignment_id"], item_id(http, task["items"][0]["id"])))
        errors.append(f"worker {i}: still finding work at the deadline")

    _run(n_workers, worker)
    assert not errors, "\n".join(errors)
    if db.engine.dialect.name == "postgresql":
        assert db._autocommit is not None  # the hot endpoints did run on the autocommit pool
    with db.session_scope() as s:
        stored = {(a, i) for a, i in s.execute(select(Answer.assignment_id, Answer.item_id)
                                                .where(Answer.project_id == m.project_id))}
        per_item = {i: n for i, n in s.execute(select(Answer.item_id, func.count())
                                                .where(Answer.project_id == m.project_id).group_by(Answer.item_id))}
        pairs = s.scalar(select(func.count()).select_from(
            select(Answer.worker_id, Answer.item_id).where(Answer.project_id == m.project_id).distinct().subquery()))
    assert stored == set(acked)  # every acknowledged submit stored, once; nothing else
    assert sorted(set(per_item.values())) == [REDUNDANCY] and len(per_item) == n_items  # done, none over
    assert pairs == len(stored)  # no worker answered an item twice


# ---- a lapsed lease: its slot goes to exactly one new worker, its late submit is refused --------------


def test_lapsed_lease_goes_to_one_racer_and_its_late_submit_is_gone(db, market):
    t0 = utcnow()
    m = market(n_items=1, per_hit=1, redundancy=2, n_workers=10, now=t0)
    first_id, late_id, racer_ids = m.worker_ids[0], m.worker_ids[1], m.worker_ids[2:]
    with db.session_scope() as s:
        first = s.get_one(Account, first_id)
        done = in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY, worker=first, now=t0, project_id=m.project_id)
        in_uow(submit, s, worker=first, assignment_id=done.id, answers=_answers(done),
                    now=t0 + dt.timedelta(seconds=1))
        late = s.get_one(Account, late_id)
        leased = in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY,
                                 worker=late, now=t0 + dt.timedelta(seconds=2), project_id=m.project_id)
        late_answers = _answers(leased)
        s.commit()
    t1 = leased.expires_at + dt.timedelta(seconds=1)  # the single remaining slot's lease ran out

    barrier = threading.Barrier(len(racer_ids) + 1)
    outcomes: dict[int, object] = {}

    def racer(i: int) -> None:
        barrier.wait()
        with db.session_scope() as s:
            try:
                if i == len(racer_ids):  # the worker whose lease lapsed submits late, during the race
                    me = s.get_one(Account, late_id)
                    outcomes[i] = in_uow(submit, s, worker=me, assignment_id=leased.id, answers=late_answers, now=t1)
                else:
                    me = s.get_one(Account, racer_ids[i])
                    outcomes[i] = in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY, worker=me, now=t1,
                                         project_id=m.project_id)
            except Exception as exc:  # noqa: BLE001 - the test inspects what each thread saw
                outcomes[i] = exc

    _run(len(racer_ids) + 1, racer)
    late_outcome = outcomes.pop(len(racer_ids))
    assert isinstance(late_outcome, Gone), late_outcome
    wins = [o for o in outcomes.values() if isinstance(o, Task)]
    assert len(wins) == 1, outcomes
    assert all(isinstance(o, NoWork) for o in outcomes.values() if not isinstance(o, Task)), outcomes
    winner = wins[0]
    assert winner.hit_id == leased.hit_id and winner.expires_at > t1

    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.assignment_id == leased.id)) == 0
        assert s.get_one(Assignment, leased.id).status == AssignmentStatus.EXPIRED
        slots = [tuple(row) for row in s.execute(select(HitSlot.state, HitSlot.assignment_id)
                                                 .where(HitSlot.hit_id == leased.hit_id).order_by(HitSlot.slot_no))]
        assert slots == [(SlotState.DONE, done.id), (SlotState.LEASED, winner.id)]
        me = s.get_one(Account, winner.worker_id)
        in_uow(submit, s, worker=me, assignment_id=winner.id, answers=late_answers, now=t1 + dt.timedelta(seconds=1))
        # A retry of the late submit after the slot was refilled is still refused and still stores nothing.
        with pytest.raises(Gone):
            in_uow(submit, s, worker=s.get_one(Account, late_id), assignment_id=leased.id, answers=late_answers,
                        now=t1 + dt.timedelta(seconds=2))
        per_worker = s.execute(select(Answer.worker_id).where(Answer.project_id == m.project_id)
                               .order_by(Answer.id)).scalars().all()
        assert per_worker == [first_id, winner.worker_id]
        assert s.scalar(select(func.count()).select_from(HitSlot).where(
            HitSlot.batch_id == m.batch_id, HitSlot.state != SlotState.DONE)) == 0


# ---- a submit at the very edge of its lease racing claims made just after it ---------------------------


def test_submit_at_lease_edge_racing_reclaims_never_deadlocks(db, market):
    """The holder submits a millisecond before its lease ends (on time by its clock) while others ask for work a
    millisecond after (the slot looks free to them). Either side may win, but nobody may see a deadlock."""
    rounds, racers = 8, 6
    problems: list[str] = []
    for k in range(rounds):
        t0 = utcnow()
        m = market(n_items=1, per_hit=1, redundancy=1, n_workers=racers + 1, now=t0)
        holder_id, racer_ids = m.worker_ids[0], m.worker_ids[1:]
        with db.session_scope() as s:
            asg = in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY,
                                  worker=s.get_one(Account, holder_id), now=t0, project_id=m.project_id)
            answers = _answers(asg)
            s.commit()
        edge = asg.expires_at
        barrier = threading.Barrier(racers + 1)
        outcomes: dict[int, object] = {}

        def racer(i: int, asg=asg, answers=answers, edge=edge, outcomes=outcomes, barrier=barrier, m=m,
                  racer_ids=racer_ids) -> None:
            barrier.wait()
            with db.session_scope() as s:
                try:
                    if i == racers:
                        me = s.get_one(Account, asg.worker_id)
                        outcomes[i] = in_uow(submit, s, worker=me, assignment_id=asg.id, answers=answers,
                                                  now=edge - dt.timedelta(milliseconds=1))
                    else:
                        me = s.get_one(Account, racer_ids[i])
                        outcomes[i] = in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY,
                                                      worker=me, now=edge + dt.timedelta(milliseconds=1),
                                                           project_id=m.project_id)
                except Exception as exc:  # noqa: BLE001 - the test inspects what each thread saw
                    outcomes[i] = exc

        _run(racers + 1, racer)
        submitted = outcomes.pop(racers)
        wins = [o for o in outcomes.values() if isinstance(o, Task)]
        odd = [f"{who}: {o!r}"[:200] for who, o in [("submit", submitted), *(("claim", o) for o in outcomes.values())]
               if not isinstance(o, tuple | Task | NoWork | Gone)]
        with db.session_scope() as s:
            stored = s.scalar(select(func.count()).select_from(Answer).where(Answer.project_id == m.project_id))
            live = s.scalar(select(func.count()).select_from(Assignment).where(
                Assignment.project_id == m.project_id, Assignment.status == AssignmentStatus.LEASED,
                Assignment.expires_at > edge))
        if odd:
            problems.append(f"round {k}: surfaced {odd}")
        elif isinstance(submitted, tuple):  # the submit won: stored, and nobody got the slot
            assert (stored, wins, live) == (1, [], 0), (k, outcomes)
        else:  # a reclaim won: exactly one racer holds the slot, the late-by-a-hair submit stored nothing
            assert isinstance(submitted, Gone) and (stored, len(wins), live) == (0, 1, 1), (k, submitted, outcomes)
    assert not problems, "\n".join(problems)


# ---- one worker, many simultaneous requests for work ---------------------------------------------------


def test_one_worker_racing_itself_gets_one_lease(db, market):
    threads = 8
    now = utcnow()
    m = market(n_items=10, per_hit=1, redundancy=2, n_workers=1, now=now)
    barrier = threading.Barrier(threads)
    outcomes: dict[int, object] = {}

    def request(i: int) -> None:
        barrier.wait()
        with db.session_scope() as s:
            try:
                me = s.get_one(Account, m.worker_ids[0])
                asg = in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY, worker=me, now=now, project_id=m.project_id)
                outcomes[i] = (asg.id, asg.hit_id)
            except Exception as exc:  # noqa: BLE001 - the test inspects what each thread saw
                outcomes[i] = exc

    _run(threads, request)
    got = [o for o in outcomes.values() if isinstance(o, tuple)]
    assert len(got) == threads, outcomes  # every request is answered, with the one lease the race produced
    with db.session_scope() as s:
        live = s.execute(select(Assignment.id, Assignment.hit_id).where(
            Assignment.worker_id == m.worker_ids[0], Assignment.status == AssignmentStatus.LEASED)).all()
        leased_slots = s.scalar(select(func.count()).select_from(HitSlot).where(
            HitSlot.batch_id == m.batch_id, HitSlot.state == SlotState.LEASED))
    assert len({hit for _, hit in live}) == len(live)  # never two live leases on one HIT
    assert len(live) <= 1, f"one worker holds {len(live)} live leases at once: {live}"
    assert len(set(got)) == 1, f"simultaneous requests were handed different HITs: {sorted(set(got))}"
    assert leased_slots == len(live)


# ---- gold under concurrency ----------------------------------------------------------------------------------


def test_gold_streams_stay_consistent_under_concurrency(db, market, monkeypatch):
    """Workers racing themselves (two requests at once, half the time) and each other, gold at 10% with a small
    pool: no gold HIT over its redundancy, each stream's counts match its worker's submitted tasks on the
    schedule, each position used once, one lease each."""
    n_workers, tasks_each = 12, 12
    now = utcnow()
    m = market(n_items=400, per_hit=1, redundancy=1, n_workers=n_workers, now=now, gold=3)
    with db.session_scope() as s:
        s.get_one(Project, m.project_id).gold_rate = Decimal("0.10")
        s.commit()
    # A busier schedule than the real one, so the pool runs out during the test: every third turn is gold.
    monkeypatch.setattr(next_task, "is_gold_turn", lambda key, *, tasks, **_: tasks % 3 == 1)
    barrier = threading.Barrier(n_workers)
    errors: list[str] = []

    def worker(i: int) -> None:
        rng = random.Random(i)
        barrier.wait()
        try:
            for _ in range(tasks_each):
                racers = 2 if rng.random() < 0.5 else 1
                seen: list[int] = []

                def claim(out: list[int]) -> None:
                    with db.session_scope() as s:
                        me = s.get_one(Account, m.worker_ids[i])
                        out.append(in_uow(next_assignment, s, gold_key=TEST_GOLD_KEY,
                                                   worker=me, now=now, project_id=m.project_id).id)

                pair = [threading.Thread(target=claim, args=(seen,)) for _ in range(racers)]
                for t in pair:
                    t.start()
                for t in pair:
                    t.join(JOIN_TIMEOUT)
                if len(set(seen)) != 1:
                    errors.append(f"worker {i}: racing requests got {seen}")
                    return
                with db.session_scope() as s:
                    me = s.get_one(Account, m.worker_ids[i])
                    view = in_uow(load_task, s, worker_id=me.id, assignment_id=seen[0])
                    in_uow(submit, s, worker=me, assignment_id=seen[0], answers=_answers(view), now=now)
        except Exception:  # noqa: BLE001 - reported below
            errors.append(traceback.format_exc())

    _run(n_workers, worker)
    assert not errors, "\n".join(errors)
    with db.session_scope() as s:
        all_gold = []
        for wid in m.worker_ids:
            rows = s.execute(select(Assignment.hit_id, Assignment.is_gold, Assignment.stream_position).where(
                Assignment.worker_id == wid)).all()
            gold_hits = [h for h, g, _ in rows if g]
            all_gold += gold_hits
            positions = [p for _, _, p in rows if p is not None]
            assert len(rows) == tasks_each and len(set(gold_hits)) == len(gold_hits)
            stream = s.get(GoldStream, (wid, m.project_id))
            # The stream counts the tasks submitted on the schedule, each position once; the gold it counted is
            # exactly the worker's gold tasks.
            assert sorted(positions) == list(range(len(positions))), positions
            assert stream.tasks == len(positions) and stream.golds == len(gold_hits)
        assert len(all_gold) <= 3 and len(set(all_gold)) == len(all_gold)  # three gold HITs of one slot each
        assert s.scalar(select(func.count()).select_from(GoldStream).where(
            GoldStream.project_id == m.project_id, GoldStream.exhausted_at.is_not(None))) > 0


# ---- a dead connection in the autocommit pool -------------------------------------------------------------


@pytest.mark.skipif(not (DATABASE_URL or "").startswith("postgres"),
                    reason="PostgreSQL only: the autocommit pool (which does not ping) exists only there")
def test_hot_endpoints_run_again_on_a_fresh_connection_when_theirs_died(db, market):
    """The autocommit pool skips the ping at checkout; when the database has dropped its connections (a restart),
    `next` and `submit` run once more on a fresh one instead of failing."""
    m = market(n_items=4, per_hit=1, redundancy=1, n_workers=1, now=utcnow())
    with db.session_scope() as s:
        token = in_uow(issue_token, s, account=s.get_one(Account, m.worker_ids[0]), now=utcnow())[1]
        s.commit()
    http = make_app({"DATABASE": db}).test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def drop_connections() -> None:
        with db.engine.connect() as conn:
            killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                       "AND backend_type = 'client backend'")).scalar_one()
        assert killed >= 1

    first = http.post("/api/v1/work/next", headers=headers)
    assert first.status_code == 200
    drop_connections()
    again = http.post("/api/v1/work/next", headers=headers)
    assert again.status_code == 200 and again.get_json()["assignment_id"] == first.get_json()["assignment_id"]
    drop_connections()
    task = again.get_json()
    done = http.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=headers,
                     json={"answers": [{"item_id": it["id"], "answer": LABEL} for it in task["items"]]})
    assert done.status_code == 200 and done.get_json()["status"] == "submitted"


# ---- gold grouping under concurrent imports ------------------------------------------------------------------


def test_concurrent_imports_with_gold_group_each_gold_item_once(db, market):
    """Imports racing each other, each carrying gold, into a project of 2-item HITs: every gold HIT holds exactly
    2 items, no gold item is in two HITs, ranks are 0, 1, 2, ... without gaps or repeats, every HIT has its slots,
    and every claim the pool then serves has items."""
    from market.catalogue.imports import import_items
    from tests.factories import jsonl

    now = utcnow()
    m = market(n_items=40, per_hit=2, redundancy=2, n_workers=6, now=now)
    with db.session_scope() as s:
        s.get_one(Project, m.project_id).gold_rate = Decimal("0.10")
        s.commit()
    imports, per_import = 8, 3  # odd on purpose: the leftovers of one import pair up with another's
    barrier = threading.Barrier(imports)
    errors: list[str] = []

    def run(i: int) -> None:
        records = [{"external_id": f"g{i}-{n}", "data": {"text": f"gold {i} {n}"}, "gold": LABEL}
                   for n in range(per_import)]
        barrier.wait()
        try:
            with db.session_scope() as s:
                in_uow(import_items, s, project=s.get_one(Project, m.project_id), stream=io.BytesIO(jsonl(records)),
                             fmt="jsonl", now=now)
        except Exception:  # noqa: BLE001 - reported below
            errors.append(traceback.format_exc())

    _run(imports, run)
    assert not errors, "\n".join(errors)
    with db.session_scope() as s:
        hits = s.execute(select(Hit.id, Hit.gold_rank, Hit.item_count).where(
            Hit.project_id == m.project_id, Hit.is_gold)).all()
        members = s.execute(select(Item.hit_id, func.count()).where(
            Item.project_id == m.project_id, Item.is_gold, Item.hit_id.is_not(None)).group_by(Item.hit_id)).all()
        slots = dict(s.execute(select(HitSlot.hit_id, func.count()).where(
            HitSlot.gold_pool_id.is_not(None)).group_by(HitSlot.hit_id)).all())
        ungrouped = s.scalar(select(func.count()).select_from(Item).where(
            Item.project_id == m.project_id, Item.is_gold, Item.hit_id.is_(None)))
    assert len(hits) == imports * per_import // 2 and ungrouped == imports * per_import % 2
    assert sorted(rank for _, rank, _ in hits) == list(range(len(hits)))
    assert {hit: n for hit, n in members} == {hit: 2 for hit, _, _ in hits}
    assert all(count == 2 for _, _, count in hits) and all(slots[hit] == 2 for hit, _, _ in hits)
