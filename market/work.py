"""The assignment engine: hand a worker the next HIT, take their answers, take a HIT back. No flask here.

Invariants, each defended by the database as well as by this code:
- an item never has more answers plus live leases than its HIT's slots: one slot row per place, claimed with
  FOR UPDATE SKIP LOCKED on PostgreSQL (BEGIN IMMEDIATE serializes writers on SQLite), and a submit stores
  answers only if its lease still owns the slot (a conditional update of the slot row);
- a worker never holds or answers a HIT twice (partial unique index on assignment(hit_id, worker_id)), and
  holds one live task at a time (partial unique index on assignment(worker_id) where leased: a worker's racing
  requests for work end with one lease, the others get that same one);
- a lapsed lease frees its slot by itself (the claim query treats it as free; the optional sweeper only tidies).

Lock order: assignment, then slot. A claim takes its slot with SKIP LOCKED, so it never waits on a slot, and
never touches another worker's assignment (a lapsed lease it takes over stays 'leased' in the past until its
owner's next claim, its late submit, or the sweeper marks it expired).

On PostgreSQL a claim and a submit are each one statement (data-modifying CTEs), atomic on their own, so the
hot endpoints run them in autocommit mode: no BEGIN/COMMIT round trips. The statements on these paths are
`HotStatement`s: compiled once, run straight on the psycopg connection. SQLite runs the same steps as several
statements in one BEGIN IMMEDIATE transaction. benchmarks/next_submit.py measures both endpoints against a bare
INSERT + COMMIT.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, case, exists, func, literal_column, or_, select, text, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.db import HotStatement, UTCDateTime
from market.labels import same_answer, validate_answer_set
from market.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    GoldStream,
    GuidelineVersion,
    Hit,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from market.problems import Conflict, DomainError, Forbidden, Gone, InvalidInput, NotFound
from qualification.gold import is_gold_turn, schedule_key
from qualification.service import unmet_requirements
from workers.models import Actor, WorkerBlock

ACTIVE = (AssignmentStatus.LEASED, AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED,
          AssignmentStatus.REJECTED)
DONE = (AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED)
_CLAIM_TRIES = 3
TEST_GOLD_KEY = schedule_key("crowdmarket tests")  # the default for callers outside the app (tests, scripts)


class NoWork(DomainError):
    status = 404
    title = "No task available"


def _ms(delta: dt.timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


@dataclass(frozen=True)
class Task:
    """An assignment as its worker sees it: never gold flags, answers, or anyone else's work."""

    id: int
    worker_id: int
    hit_id: int
    project_id: int
    status: AssignmentStatus
    leased_at: dt.datetime
    expires_at: dt.datetime
    guideline_version: int
    instructions: str
    project_title: str
    project_description: str
    label_schema: dict[str, Any]
    reward_cents: int
    currency: str
    items: list[dict[str, Any]]
    answers: dict[int, Any] | None = None


# What a task shows besides the assignment itself; read in the claim query and in `load_task`.
_SHOWN = (Project.title, Project.description, Project.label_schema, GuidelineVersion.instructions,
          Batch.reward_cents, Batch.currency)


def _shown_joins(stmt: Select, version: Any) -> Select:
    shown = (GuidelineVersion.project_id == Project.id) & (GuidelineVersion.version == version)
    return stmt.join(Project, Project.id == Batch.project_id).join(GuidelineVersion, shown)


_ITEMS = select(Item.id, Item.data).where(Item.hit_id == bindparam("hit_id")).order_by(Item.id)


def _items(session: Session, hit_id: int) -> list[dict[str, Any]]:
    return [{"id": i, "data": d} for i, d in session.connection().execute(_ITEMS, {"hit_id": hit_id})]


# The hot statements are built once, with bound parameters: building SQLAlchemy expressions per request costs
# more than running them. They are Core statements, run on the session's connection (the ORM layer of
# Session.execute would add a third to each). Parameters: worker_id, now, project_id, batch_id.
_W, _NOW = bindparam("worker_id"), bindparam("now")
# States as SQL literals, never parameters: the planner can then match them to the partial indexes (a worker's
# one leased assignment, open batches, free slots) whatever the table statistics say; with parameters, a plan
# cached while the tables were small goes on scanning them as they grow.
_LEASED = literal_column(f"assignment.status = '{AssignmentStatus.LEASED.value}'")
_ASSIGNMENT, _SLOT = Assignment.__table__, HitSlot.__table__  # Core tables: no ORM bookkeeping on hot writes


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _block_filter(project: Any) -> Any:
    return exists().where(WorkerBlock.account_id == _W, WorkerBlock.in_force(_NOW),
                          or_(WorkerBlock.project_id.is_(None), WorkerBlock.project_id == project))


@cache
def _checks(postgres: bool, one_project: bool) -> HotStatement:
    """In one read: the worker's live lease (and its project), whether they hold lapsed ones, whether they are
    blocked (from all work, or from the one project asked for), the open batches they may work on, which of
    those have qualification requirements (checked apart, only when there are any), the worker's gold stream in
    each batch that injects gold (so a claim needs no read of its own for it), and whether that project exists."""
    project = bindparam("project_id") if one_project else None
    live = (_ASSIGNMENT.c.worker_id == _W) & _LEASED
    held = select(_ASSIGNMENT.c.id, _ASSIGNMENT.c.project_id).where(live, _ASSIGNMENT.c.expires_at > _NOW).limit(1)
    gated = Batch.qualification_requirements.is_not(None).label("gated")
    # Gold is injected where the project has a gold rate and gold HITs of the batch's size.
    gold_hits = exists().where(Hit.project_id == Batch.project_id, literal_column("hit.is_gold"),
                               Hit.item_count == Batch.items_per_hit, Hit.gold_rank.is_not(None))
    gold = select(Project.id).where(Project.id == Batch.project_id, Project.gold_rate > 0, gold_hits).exists()
    batches = select(Batch.id, gated, gold.label("gold")).where(
        literal_column(f"batch.status = '{BatchStatus.OPEN.value}'"), Batch.expires_at > _NOW,
        ~_block_filter(Batch.project_id))
    if one_project:
        batches = batches.where(Batch.project_id == project)
    sub = batches.subquery()
    # The ids as one value: an array on PostgreSQL, a comma-separated string on SQLite; the gated ones (with
    # qualification requirements) again, apart.
    agg = func.array_agg if postgres else func.group_concat
    # Per batch with gold: [batch, project, items per HIT, gold rate, tasks, golds, exhausted], as one JSON array.
    row = (Batch.id, Batch.project_id, Batch.items_per_hit, Project.gold_rate, func.coalesce(GoldStream.tasks, 0),
           func.coalesce(GoldStream.golds, 0), GoldStream.exhausted_at.is_not(None))
    streams = select((func.json_agg if postgres else func.json_group_array)(
        (func.json_build_array if postgres else func.json_array)(*row))).select_from(Batch).join(
        Project, Project.id == Batch.project_id).outerjoin(
        GoldStream, (GoldStream.project_id == Batch.project_id) & (GoldStream.worker_id == _W)).where(
        Batch.id.in_(select(sub.c.id).where(sub.c.gold)))
    return HotStatement(select(
        held.with_only_columns(_ASSIGNMENT.c.id).scalar_subquery(),
        held.with_only_columns(_ASSIGNMENT.c.project_id).scalar_subquery(),
        exists().where(live, _ASSIGNMENT.c.expires_at <= _NOW), _block_filter(project),
        select(agg(sub.c.id)).scalar_subquery(), select(agg(case((sub.c.gated, sub.c.id)))).scalar_subquery(),
        streams.scalar_subquery(), exists().where(Project.id == project) if one_project else true()))


@dataclass(frozen=True, slots=True)
class _Stream:
    """A worker's gold stream in one batch's project, as the checks read it."""

    project_id: int
    items_per_hit: int
    rate: Decimal
    tasks: int
    golds: int
    exhausted: bool


def _parse_streams(value: Any) -> dict[int, _Stream]:
    rows = json.loads(value) if isinstance(value, str) else value or []
    return {r[0]: _Stream(r[1], r[2], Decimal(str(r[3])), r[4], r[5], bool(r[6])) for r in rows if r[0] is not None}


def _parse_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, str):
        return [int(v) for v in value.split(",")]
    return sorted(v for v in value if v is not None)


_GATES = select(Batch.id, Batch.qualification_requirements).where(Batch.id.in_(bindparam("ids", expanding=True)))


def _admitted(session: Session, worker_id: int, batch_ids: list[int],
              gated: list[int]) -> tuple[list[int], list[dict[str, Any]]]:
    """The open batches whose qualification requirements the worker meets, and what they miss for the rest."""
    gates = {batch_id: reqs for batch_id, reqs in session.execute(_GATES, {"ids": gated})}
    shut, missing = unmet_requirements(session, worker_id=worker_id, gates=gates)
    return [b for b in batch_ids if b not in shut], missing


_EXPIRE_OWN_LAPSED = _ASSIGNMENT.update().where(
    _ASSIGNMENT.c.worker_id == _W, _LEASED, _ASSIGNMENT.c.expires_at <= _NOW).values(status=AssignmentStatus.EXPIRED)


def next_assignment(session: Session, *, worker: Actor, now: dt.datetime, project_id: int | None = None,
                    gold_key: bytes = TEST_GOLD_KEY) -> Task:
    """Lease the next HIT to the worker. One task at a time: a worker with a live lease gets that one again.
    In projects with gold, some tasks are gold HITs, on the schedule that `gold_key` draws (the app passes one
    derived from its secret key)."""
    params = {"worker_id": worker.id, "now": now, "project_id": project_id}
    for _ in range(_CLAIM_TRIES):
        held_id, held_project, has_lapsed, blocked, batch_ids, gated, streams, project_found = _checks(
            _postgres(session), project_id is not None).first(session, params)
        if not project_found:
            session.rollback()
            raise NotFound(f"Project {project_id} not found.")
        if blocked:
            session.rollback()
            scope = "all work" if project_id is None else "this project"
            raise Forbidden(f"You are blocked from {scope}.", reason="blocked")
        if held_id is not None:
            session.commit()
            if project_id is not None and held_project != project_id:
                raise Conflict("You hold a task of another project; submit or return it first.",
                               reason="task_held", assignment_id=held_id)
            return load_task(session, worker_id=worker.id, assignment_id=held_id)
        if has_lapsed:  # the worker's own lapsed leases end now, so the HITs they held can be offered again
            session.execute(_EXPIRE_OWN_LAPSED, params)
        batch_ids, missing = _parse_ids(batch_ids), []
        if gated is not None and (gated := _parse_ids(gated)):
            batch_ids, missing = _admitted(session, worker.id, batch_ids, gated)
        if not batch_ids and missing:
            session.commit()
            raise Forbidden("This work needs qualifications you do not have; the tests listed can grant them.",
                            reason="qualification_required", missing=missing)
        if not batch_ids:
            session.commit()
            raise NoWork("No batch is open for work right now (none published, or all paused, cancelled or "
                         "expired).", reason="no_open_batches")
        try:
            return _claim(session, params, batch_ids, _parse_streams(streams), gold_key)
        except IntegrityError:
            # The same worker's other request took a lease first (one live task per worker): go round again,
            # and hand out that lease.
            session.rollback()
    raise Conflict("Too many simultaneous requests for work; try again.")


def _pick(lapsed: bool) -> Select:
    """A batch's best claimable slot straight off an index, whatever the batch size or the number of live leases:
    a lapsed one (oldest first) or a free one (priority, then fewest answers, then age). The state tests are SQL
    literals so that the planner can match them to the partial indexes."""
    mine = (select(literal_column("1")).where(Assignment.hit_id == HitSlot.hit_id, Assignment.worker_id == _W,
                                              Assignment.status.in_(ACTIVE)).limit(1).scalar_subquery())
    stmt = select(HitSlot.id, HitSlot.hit_id, HitSlot.neg_priority, HitSlot.slot_no).where(
        HitSlot.batch_id == bindparam("batch_id"), mine.is_(None))  # a probe per slot, as in _MINE_SQL
    if lapsed:
        return (stmt.where(literal_column("hit_slot.state = 'leased'"), HitSlot.lease_expires_at <= _NOW)
                .order_by(HitSlot.lease_expires_at).limit(1))
    return (stmt.where(literal_column("hit_slot.state = 'free'"))
            .order_by(HitSlot.neg_priority, HitSlot.slot_no, HitSlot.id).limit(1))


_PEEK_LAPSED, _PEEK_FREE = _pick(lapsed=True), _pick(lapsed=False)
# FOR UPDATE SKIP LOCKED: concurrent claims pass over each other's slots instead of waiting.
_LOCK_LAPSED = _PEEK_LAPSED.with_for_update(of=HitSlot, skip_locked=True)
_LOCK_FREE = _PEEK_FREE.with_for_update(of=HitSlot, skip_locked=True)
_OPEN_BATCH = (Batch.id == bindparam("batch_id")) & (Batch.status == BatchStatus.OPEN) & (Batch.expires_at > _NOW)
_BATCH_INFO = _shown_joins(select(Batch.project_id, Batch.assignment_duration_seconds, Project.guideline_version,
                                  *_SHOWN).where(_OPEN_BATCH), Project.guideline_version)
_NEW_LEASE = _ASSIGNMENT.insert().returning(_ASSIGNMENT.c.id)
_TAKE_SLOT = _SLOT.update().where(_SLOT.c.id == bindparam("slot_id")).values(
    state=SlotState.LEASED, assignment_id=bindparam("b_assignment_id"), lease_expires_at=bindparam("b_expires_at"))

# "Not a HIT the worker holds or did", as a scalar subquery with LIMIT: the planner runs it as a probe of
# (hit_id, worker_id) per candidate slot. Written as NOT EXISTS it becomes an anti-join that reads all of the
# worker's assignments first, a cost that grows with every task they do.
_MINE_SQL = f"""(SELECT 1 FROM assignment AS a WHERE a.hit_id = s.hit_id AND a.worker_id = :worker_id
                  AND a.status IN ({", ".join(f"'{st.value}'" for st in ACTIVE)}) LIMIT 1) IS NULL"""
# A gold HIT of the batch's size the worker has never had (in any state): the first such from a random rank on,
# wrapping round (COALESCE runs the wrap-round probe only when the first finds none). A few index steps, not a
# sort of the whole pool. Retired gold HITs have no rank, so they drop out without a look at their items (a
# per-pick test of the items was planned as a scan of the item table). Gold HITs have no slots: any number of
# workers may hold one at once.
_GOLD_WHERE = """h.project_id = :gold_project_id AND h.is_gold AND h.item_count = :items_per_hit
      AND NOT EXISTS (SELECT 1 FROM assignment AS a WHERE a.hit_id = h.id AND a.worker_id = :worker_id AND a.is_gold)"""
_GOLD_START = """(SELECT CAST(:gold_draw * (max(g.gold_rank) + 1) AS integer) FROM hit AS g
      WHERE g.project_id = :gold_project_id AND g.is_gold AND g.item_count = :items_per_hit)"""
_GOLD_PICK_SQL = f"""
    SELECT COALESCE(
        (SELECT h.id FROM hit AS h WHERE {_GOLD_WHERE} AND h.gold_rank >= {_GOLD_START} ORDER BY h.gold_rank LIMIT 1),
        (SELECT h.id FROM hit AS h WHERE {_GOLD_WHERE} AND h.gold_rank < {_GOLD_START} ORDER BY h.gold_rank LIMIT 1)
    ) AS hit_id"""
_GOLD_PICK = text(_GOLD_PICK_SQL)
# One more task (and gold task) in the worker's injection stream of the project.
_COUNT_SQL = """INSERT INTO gold_stream (worker_id, project_id, tasks, golds)
    {source} ON CONFLICT (worker_id, project_id)
    DO UPDATE SET tasks = gold_stream.tasks + 1, golds = gold_stream.golds + excluded.golds"""
_COUNT = text(_COUNT_SQL.format(source="VALUES (:worker_id, :gold_project_id, 1, :golds)"))
_EXHAUSTED = text("""INSERT INTO gold_stream (worker_id, project_id, tasks, golds, exhausted_at)
    VALUES (:worker_id, :gold_project_id, 0, 0, :now) ON CONFLICT (worker_id, project_id)
    DO UPDATE SET exhausted_at = excluded.exhausted_at""").bindparams(bindparam("now", type_=UTCDateTime()))


@cache
def _claim_pg(*, gold: bool, counting: bool) -> HotStatement:
    """PostgreSQL: the claim in one statement. Pick and lock a slot (a lapsed one first; the free pick is not even
    run when there is one) or, for a gold task, pick a gold HIT; insert the lease, point the slot at it, count
    the task in the worker's gold stream, and return what the worker sees, items included. The batch is checked
    again here: it may have been paused since the worker's checks were read.

    A gold claim serves gold only in place of real work, and tests for real work in the same statement (a gold
    turn costs no more round trips than any other claim); it always returns one row, whose `open` says whether
    the batch had real work for the worker, and whose `id` is NULL when there was no gold HIT left for them."""
    if gold:
        open_sql = " OR ".join(f"""EXISTS (SELECT 1 FROM hit_slot AS s WHERE s.batch_id = :batch_id AND {state}
                      AND {_MINE_SQL})""" for state in (
            "s.state = 'free'", "s.state = 'leased' AND s.lease_expires_at <= :now"))
        cand = (f"work AS MATERIALIZED (SELECT {open_sql} AS open), "
                f"pick AS ({_GOLD_PICK_SQL} FROM work WHERE work.open\n), "
                "cand AS (SELECT CAST(NULL AS integer) AS id, hit_id FROM pick WHERE hit_id IS NOT NULL)")
    else:
        cand = f"""lapsed AS (
    SELECT s.id, s.hit_id FROM hit_slot AS s
    WHERE s.batch_id = :batch_id AND s.state = 'leased' AND s.lease_expires_at <= :now AND {_MINE_SQL}
    ORDER BY s.lease_expires_at LIMIT 1 FOR UPDATE OF s SKIP LOCKED
), free AS (
    SELECT s.id, s.hit_id FROM hit_slot AS s
    WHERE s.batch_id = :batch_id AND s.state = 'free' AND {_MINE_SQL} AND NOT EXISTS (SELECT 1 FROM lapsed)
    ORDER BY s.neg_priority, s.slot_no, s.id LIMIT 1 FOR UPDATE OF s SKIP LOCKED
), cand AS (
    SELECT id, hit_id FROM lapsed UNION ALL SELECT id, hit_id FROM free
)"""
    taken = "" if gold else """, taken AS (
    UPDATE hit_slot SET state = 'leased', assignment_id = lease.id, lease_expires_at = info.expires_at
    FROM lease, info WHERE hit_slot.id = info.slot_id
)"""
    counted = "" if not counting else f""", counted AS (
    {_COUNT_SQL.format(source=f"SELECT :worker_id, info.project_id, 1, {int(gold)} FROM lease, info")}
)"""
    return HotStatement(text(f"""
WITH {cand}, info AS (
    SELECT cand.id AS slot_id, cand.hit_id, b.project_id, p.guideline_version, p.title, p.description,
           p.label_schema, g.instructions, b.reward_cents, b.currency,
           CAST(:now AS timestamptz) + b.assignment_duration_seconds * interval '1 second' AS expires_at
    FROM cand JOIN batch AS b ON b.id = :batch_id AND b.status = 'open' AND b.expires_at > :now
    JOIN project AS p ON p.id = b.project_id
    JOIN guideline_version AS g ON g.project_id = p.id AND g.version = p.guideline_version
), lease AS (
    INSERT INTO assignment (hit_id, batch_id, project_id, worker_id, is_gold, status, guideline_version, leased_at,
                            expires_at)
    SELECT hit_id, :batch_id, project_id, :worker_id, {str(gold).lower()}, 'leased', guideline_version, :now,
           expires_at FROM info
    RETURNING id
){taken}{counted}
SELECT {"work.open, " if gold else ""}lease.id, info.hit_id, info.project_id, info.guideline_version, info.title,
       info.description, info.label_schema, info.instructions, info.reward_cents, info.currency, info.expires_at,
       (SELECT json_agg(json_build_object('id', i.id, 'data', i.data) ORDER BY i.id)
        FROM item AS i WHERE i.hit_id = info.hit_id) AS items
FROM {"work LEFT JOIN (lease CROSS JOIN info) ON true" if gold else "lease, info"}
"""))


def _batch_order(session: Session, params: dict[str, Any], batch_ids: list[int]) -> list[int]:
    """Open batches in serving order: those with a lapsed slot first, then by their best free slot. Each batch is
    looked up on its own index range: ordering the slots of several batches in one query would sort them all."""
    keys = []
    for batch_id in batch_ids:
        p = {**params, "batch_id": batch_id}
        if session.execute(_PEEK_LAPSED, p).first() is not None:
            keys.append(((0, 0, 0, 0), batch_id))
        elif (best := session.execute(_PEEK_FREE, p).first()) is not None:
            keys.append(((1, best.neg_priority, best.slot_no, best.id), batch_id))
    return [batch_id for _, batch_id in sorted(keys)]


def _claim(session: Session, params: dict[str, Any], batch_ids: list[int], streams: dict[int, _Stream],
           gold_key: bytes) -> Task:
    order = batch_ids if len(batch_ids) == 1 else _batch_order(session, params, batch_ids)
    worker_id = params["worker_id"]
    for batch_id in order:
        p = {**params, "batch_id": batch_id}
        counting = gold_turn = False
        stream = streams.get(batch_id)
        if stream is not None:
            p.update(gold_project_id=stream.project_id, items_per_hit=stream.items_per_hit, gold_draw=random.random())
            # A stream whose gold ran out counts nothing until new gold comes: the rate is over tasks with gold.
            counting = not stream.exhausted
            gold_turn = counting and is_gold_turn(
                gold_key, project_id=stream.project_id, worker_id=worker_id, rate=stream.rate, tasks=stream.tasks,
                golds=stream.golds)
        if gold_turn:
            task, open_work = _lease_gold(session, p)
            if task is not None:
                return task
            if not open_work:
                continue  # gold only in place of real work: a batch with nothing left to do serves no gold either
            session.execute(_EXHAUSTED, p)  # the worker has had every gold HIT: warn ops, serve real work
            counting = False
        task = _lease(session, p, gold=False, counting=counting)
        if task is not None:
            return task
    session.commit()
    raise NoWork("Every open HIT is fully assigned or already done by you; try again later.", reason="all_assigned")


def _lease_gold(session: Session, p: dict[str, Any]) -> tuple[Task | None, bool]:
    """Lease a gold HIT in place of the batch's real work: (the task or None, whether there was real work)."""
    if _postgres(session):
        row = _claim_pg(gold=True, counting=True).first(session, p)
        if row is None or row.id is None:
            return None, row is not None and bool(row.open)
        session.commit()
        return _task_of(row, p), True
    if not (session.execute(_PEEK_LAPSED, p).first() or session.execute(_PEEK_FREE, p).first()):
        return None, False
    return _lease(session, p, gold=True, counting=True), True


def _task_of(row: Any, p: dict[str, Any]) -> Task:
    return Task(row.id, p["worker_id"], row.hit_id, row.project_id, AssignmentStatus.LEASED, p["now"],
                row.expires_at, row.guideline_version, row.instructions, row.title, row.description, row.label_schema,
                row.reward_cents, row.currency, row.items)


def _lease(session: Session, p: dict[str, Any], *, gold: bool, counting: bool) -> Task | None:
    """Lease one HIT of the batch (a gold HIT for a gold task: on SQLite only, see `_lease_gold`) and commit; None
    if there is none to lease."""
    now, worker_id = p["now"], p["worker_id"]
    if _postgres(session):
        assert not gold, "PostgreSQL leases gold in _lease_gold"
        row = _claim_pg(gold=False, counting=counting).first(session, p)
        if row is None:
            return None
        session.commit()
        return _task_of(row, p)
    if gold:
        slot = session.execute(_GOLD_PICK, p).first()
        slot = slot if slot is not None and slot.hit_id is not None else None
    else:
        slot = session.execute(_LOCK_LAPSED, p).first() or session.execute(_LOCK_FREE, p).first()
    info = session.execute(_BATCH_INFO, p).first() if slot is not None else None
    if info is None:
        return None
    expires_at = now + dt.timedelta(seconds=info.assignment_duration_seconds)
    assignment_id = session.execute(_NEW_LEASE, {
        "hit_id": slot.hit_id, "batch_id": p["batch_id"], "project_id": info.project_id, "worker_id": worker_id,
        "is_gold": gold, "status": AssignmentStatus.LEASED, "guideline_version": info.guideline_version,
        "leased_at": now, "expires_at": expires_at}).scalar_one()
    if not gold:
        session.execute(_TAKE_SLOT, {"slot_id": slot.id, "b_assignment_id": assignment_id,
                                     "b_expires_at": expires_at})
    if counting:
        session.execute(_COUNT, {**p, "golds": int(gold)})
    items = _items(session, slot.hit_id)
    session.commit()
    return Task(assignment_id, worker_id, slot.hit_id, info.project_id, AssignmentStatus.LEASED, now, expires_at,
                info.guideline_version, info.instructions, info.title, info.description, info.label_schema,
                info.reward_cents, info.currency, items)


def load_task(session: Session, *, worker_id: int, assignment_id: int) -> Task:
    """One of the worker's assignments as they see it, with their own answers once submitted."""
    stmt = _shown_joins(
        select(Assignment.id, Assignment.worker_id, Assignment.hit_id, Assignment.project_id, Assignment.status,
               Assignment.leased_at, Assignment.expires_at, Assignment.guideline_version, *_SHOWN)
        .join(Batch, Batch.id == Assignment.batch_id),
        Assignment.guideline_version).where(Assignment.id == assignment_id)
    row = session.execute(stmt).first()
    if row is None or row.worker_id != worker_id:
        raise NotFound(f"Assignment {assignment_id} not found.")
    answers = _stored_answers(session, assignment_id) if row.status in DONE else None
    return Task(row.id, row.worker_id, row.hit_id, row.project_id, row.status, row.leased_at, row.expires_at,
                row.guideline_version, row.instructions, row.title, row.description, row.label_schema,
                row.reward_cents, row.currency, _items(session, row.hit_id), answers)


def _stored_answers(session: Session, assignment_id: int) -> dict[int, Any]:
    rows = session.execute(select(Answer.item_id, Answer.value).where(Answer.assignment_id == assignment_id)
                           .order_by(Answer.item_id))
    return {item_id: value for item_id, value in rows}


@dataclass(frozen=True)
class Submitted:
    assignment_id: int
    status: AssignmentStatus
    submitted_at: dt.datetime
    duration_ms: int
    answers: dict[int, Any]
    project_id: int
    # Server-side only: a gold task's answers were scored (the caller updates the worker's accuracy).
    gold: bool = False
    # The correct answer and explanation of each gold item missed, where the project shows them; else empty.
    feedback: list[dict[str, Any]] = field(default_factory=list)


_A = bindparam("b_assignment_id")
_READ = (select(Assignment.id, Assignment.worker_id, Assignment.hit_id, Assignment.status, Assignment.leased_at,
                Assignment.expires_at, Assignment.project_id, Assignment.guideline_version, Assignment.submitted_at,
                Assignment.duration_ms, Assignment.is_gold, Project.label_schema, Project.gold_feedback,
                Item.id.label("item_id"), Item.gold_answer, Item.gold_explanation, Item.gold_retired_at)
         .join(Project, Project.id == Assignment.project_id).join(Item, Item.hit_id == Assignment.hit_id)
         .where(Assignment.id == _A).order_by(Item.id))
_LOCKED = HotStatement(_READ.with_for_update(of=Assignment))
_READ = HotStatement(_READ)
# The lease must still own its slot: a claim made after the lease ran out (by its clock) may have taken it.
_FINISH_SLOT = _SLOT.update().where(_SLOT.c.assignment_id == _A, _SLOT.c.state == SlotState.LEASED).values(
    state=SlotState.DONE, lease_expires_at=None)
_STORE_ANSWER = Answer.__table__.insert()
_MARK_SUBMITTED = _ASSIGNMENT.update().where(_ASSIGNMENT.c.id == _A).values(
    status=AssignmentStatus.SUBMITTED, submitted_at=bindparam("now"), duration_ms=bindparam("b_duration_ms"),
    client_meta=bindparam("b_client_meta"))

# PostgreSQL: the submit in one statement. The assignment is locked first (the lock order), then its slot is
# finished only if the lease still owns it (a gold task has no slot: its live lease is enough), and only then are
# the assignment and its answers written: all of it, or (lease lapsed and its slot taken, or submitted meanwhile)
# none of it. The assignment is read by its key alone (its status is tested after the lock): with the status in
# the lookup, the planner may walk the partial index of every live lease instead.
_SUBMIT_PG = HotStatement(text("""
WITH mine AS MATERIALIZED (
    SELECT id, status, is_gold FROM assignment WHERE id = :assignment_id FOR UPDATE
), slot AS (
    UPDATE hit_slot SET state = 'done', lease_expires_at = NULL
    WHERE hit_id = :hit_id AND assignment_id = (SELECT id FROM mine WHERE status = 'leased') AND state = 'leased'
    RETURNING assignment_id
), owned AS (
    SELECT assignment_id AS id FROM slot UNION ALL SELECT id FROM mine WHERE status = 'leased' AND is_gold
), done AS (
    UPDATE assignment SET status = 'submitted', submitted_at = :now, duration_ms = :duration_ms,
                          client_meta = CAST(:client_meta AS jsonb)
    FROM owned WHERE assignment.id = owned.id RETURNING assignment.id
), stored AS (
    INSERT INTO answer (assignment_id, item_id, worker_id, project_id, value, guideline_version, submitted_at,
                        duration_ms, client_meta, gold_correct)
    SELECT done.id, v.item_id, :worker_id, :project_id, v.value, :guideline_version, :now, :duration_ms,
           CAST(:client_meta AS jsonb), v.correct
    FROM done, jsonb_to_recordset(CAST(:answers AS jsonb)) AS v(item_id integer, value jsonb, correct boolean)
)
SELECT count(*) AS written FROM done
"""))


def _read(session: Session, worker_id: int, assignment_id: int, *, lock: bool) -> tuple[Any, list[Any]]:
    """The assignment row (locked on request) with its project's label schema, and its HIT's items (one row
    each, first row included)."""
    rows = (_LOCKED if lock else _READ).rows(session, {"b_assignment_id": assignment_id})
    if not rows or rows[0].worker_id != worker_id:
        session.rollback()
        raise NotFound(f"Assignment {assignment_id} not found.")
    return rows[0], rows


def _validated(schema: dict[str, Any], expected: list[int], answers: list[dict[str, Any]]) -> dict[int, Any]:
    values, errors = validate_answer_set(schema, expected, answers, key="item_id",
                                         stranger="is not an item of this assignment")
    if errors:
        raise InvalidInput("Some answers are invalid; nothing was saved.", errors={"answers": errors})
    return values


def _scored(row: Any, items: list[Any], values: dict[int, Any]) -> tuple[dict[int, bool | None], list[dict]]:
    """Each answer's gold outcome (None: not gold, or a retired gold item) and the feedback the worker gets."""
    if not row.is_gold:
        return dict.fromkeys(values), []
    outcome: dict[int, bool | None] = {}
    feedback = []
    for item in items:
        if item.gold_retired_at is not None:
            outcome[item.item_id] = None
            continue
        outcome[item.item_id] = same_answer(row.label_schema, values[item.item_id], item.gold_answer)
        if not outcome[item.item_id] and row.gold_feedback:
            feedback.append({"item_id": item.item_id, "correct_answer": item.gold_answer,
                             "explanation": item.gold_explanation or ""})
    return outcome, feedback


def _gone(session: Session, assignment_id: int, expires_at: dt.datetime, detail: str) -> Gone:
    session.execute(update(Assignment).where(Assignment.id == assignment_id,
                                             Assignment.status == AssignmentStatus.LEASED)
                    .values(status=AssignmentStatus.EXPIRED))
    session.commit()
    return Gone(detail, reason="expired", expired_at=expires_at.isoformat())


def submit(session: Session, *, worker: Actor, assignment_id: int, answers: list[dict[str, Any]],
           now: dt.datetime, client_meta: dict[str, Any] | None = None) -> tuple[Submitted, bool]:
    """Store one answer per item; returns (result, replayed). Repeating a submit is harmless. A gold task's
    answers are scored against the known answers as they are stored."""
    postgres = _postgres(session)
    for attempt in range(2):
        # PostgreSQL reads without a lock: the one-statement write below re-checks everything it relies on.
        row, items = _read(session, worker.id, assignment_id, lock=not postgres)
        try:
            values = _validated(row.label_schema, [i.item_id for i in items], answers)
        except InvalidInput:
            session.rollback()
            raise
        if row.status in DONE:
            stored = _stored_answers(session, assignment_id)
            session.commit()
            if stored != values:
                raise Conflict("This assignment was submitted already with different answers.",
                               errors={"answers": ["differ from the submitted ones"]})
            status = AssignmentStatus(row.status)
            return Submitted(assignment_id, status, row.submitted_at, row.duration_ms, stored, row.project_id,
                             row.is_gold, _scored(row, items, stored)[1]), True
        if row.status == AssignmentStatus.RETURNED:
            session.rollback()
            raise Conflict("This assignment was returned; ask for new work.", reason="returned")
        gone = "The lease on this assignment ran out; its answers were not saved."
        if row.status == AssignmentStatus.EXPIRED or now >= row.expires_at or attempt == 1:
            # On a second round the lease is still 'leased' but its slot was taken: it lapsed and was reclaimed.
            raise _gone(session, assignment_id, row.expires_at, gone)
        duration = _ms(now - row.leased_at)
        outcome, feedback = _scored(row, items, values)
        result = Submitted(assignment_id, AssignmentStatus.SUBMITTED, now, duration, values, row.project_id,
                           row.is_gold, feedback)
        if postgres:
            written = _SUBMIT_PG.first(session, {
                "assignment_id": assignment_id, "hit_id": row.hit_id, "now": now, "duration_ms": duration,
                "worker_id": worker.id,
                "project_id": row.project_id, "guideline_version": row.guideline_version,
                "client_meta": None if client_meta is None else json.dumps(client_meta),
                "answers": json.dumps([{"item_id": k, "value": v, "correct": outcome[k]}
                                       for k, v in values.items()])}).written
            session.commit()
            if written == 1:
                return result, False
            continue  # something changed since the read: read again and answer from what is there now
        if not row.is_gold and session.execute(_FINISH_SLOT, {"b_assignment_id": assignment_id}).rowcount != 1:
            raise _gone(session, assignment_id, row.expires_at, gone)
        session.execute(_STORE_ANSWER, [
            {"assignment_id": assignment_id, "item_id": item_id, "worker_id": worker.id,
             "project_id": row.project_id, "value": value, "guideline_version": row.guideline_version,
             "submitted_at": now, "duration_ms": duration, "client_meta": client_meta,
             "gold_correct": outcome[item_id]}
            for item_id, value in values.items()])
        session.execute(_MARK_SUBMITTED, {"b_assignment_id": assignment_id, "now": now, "b_duration_ms": duration,
                                          "b_client_meta": client_meta})
        session.commit()
        return result, False
    raise AssertionError("unreachable")  # pragma: no cover


def get_assignment(session: Session, *, worker: Actor, assignment_id: int, lock: bool = False) -> Assignment:
    stmt = select(Assignment).where(Assignment.id == assignment_id)
    if lock:
        stmt = stmt.with_for_update()
    assignment = session.scalar(stmt)
    if assignment is None or assignment.worker_id != worker.id:
        raise NotFound(f"Assignment {assignment_id} not found.")
    return assignment


def return_assignment(session: Session, *, worker: Actor, assignment_id: int, now: dt.datetime) -> Assignment:
    """Give a HIT back: its slot is free at once, no penalty; the time spent is recorded."""
    assignment = get_assignment(session, worker=worker, assignment_id=assignment_id, lock=True)
    if assignment.status == AssignmentStatus.RETURNED:
        session.commit()
        return assignment
    if assignment.status in DONE:
        session.rollback()
        raise Conflict("This assignment was submitted; it cannot be returned.", reason="submitted")
    if assignment.status == AssignmentStatus.EXPIRED or now >= assignment.expires_at:
        raise _gone(session, assignment.id, assignment.expires_at, "The lease on this assignment ran out already.")
    assignment.status = AssignmentStatus.RETURNED
    assignment.returned_at = now
    assignment.duration_ms = _ms(now - assignment.leased_at)
    # Frees the slot only if this lease still owns it (after a lapse, a claim may have taken it over).
    session.execute(update(HitSlot).where(HitSlot.assignment_id == assignment.id, HitSlot.state == SlotState.LEASED)
                    .values(state=SlotState.FREE, assignment_id=None, lease_expires_at=None))
    session.commit()
    return assignment


def release_slots(session: Session, assignment_ids: list[int]) -> None:
    """Free the slots these ended leases still own (a lapsed one's slot may have been taken over already)."""
    for start in range(0, len(assignment_ids), 1000):
        chunk = assignment_ids[start:start + 1000]
        session.execute(update(HitSlot).where(HitSlot.assignment_id.in_(chunk), HitSlot.state == SlotState.LEASED)
                        .values(state=SlotState.FREE, assignment_id=None, lease_expires_at=None))


def sweep_expired(session: Session, *, now: dt.datetime) -> int:
    """Tidy lapsed leases (mark them expired, free their slots). Optional: claims never wait for it."""
    lapsed = list(session.scalars(update(Assignment).where(
        Assignment.status == AssignmentStatus.LEASED, Assignment.expires_at <= now)
        .values(status=AssignmentStatus.EXPIRED).returning(Assignment.id)))
    release_slots(session, lapsed)
    session.commit()
    return len(lapsed)
