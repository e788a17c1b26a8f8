"""How a lease is taken: a slot claimed off a queue, a batch's (real work) or a gold pool's (gold tasks). No flask.

Both queues are served by the same statements, so whatever a worker does with a task, gold or real, the engine
answers alike:
- lapsed slots first (oldest lease first), then free ones (priority, then fewest answers: breadth-first, then
  age); a slot is locked with FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite serializes writers with BEGIN
  IMMEDIATE), so concurrent claims pass over each other's;
- a HIT the worker holds or answered is never theirs again (the database's partial unique index); one they
  returned or let lapse is passed over while the queue has anything else for them, then served again, so a
  return neither brings a task straight back nor uses it up;
- a lease is stored only together with the items it serves: a HIT without items is never leased.

On PostgreSQL a claim is one statement (data-modifying CTEs: pick and lock a slot, insert the lease, take the
slot, return what the worker sees), run on the autocommit pool; SQLite runs the same steps as several statements
in one BEGIN IMMEDIATE transaction. The statements are `HotStatement`s, compiled once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, literal_column, select, text
from sqlalchemy.orm import Session

from base.db import HotStatement, UTCDateTime
from market.catalogue.models import (
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    GuidelineVersion,
    HitSlot,
    Item,
    Project,
)

ACTIVE = (AssignmentStatus.LEASED, AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED,
          AssignmentStatus.REJECTED)
_ACTIVE_SQL = ", ".join(f"'{st.value}'" for st in ACTIVE)


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


def postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# The queues: a batch's real slots, a gold pool's slots (of gold HITs still ranked: a retired one has no rank).
# Each tests its HIT's rank, so both kinds of claim do the same work (real HITs have none).
_RANK = "(SELECT h.gold_rank FROM hit AS h WHERE h.id = s.hit_id)"
_QUEUES = {False: f"s.batch_id = :batch_id AND {_RANK} IS NULL",
           True: f"s.gold_pool_id = :pool_id AND {_RANK} IS NOT NULL"}
# Which HITs a pass may take. First pass: none the worker ever had, in any state. Second pass (only when the first
# finds nothing): any the worker does not hold or has not answered, so what they returned or let lapse comes back
# only when nothing else is left. Each is a scalar probe of (hit_id, worker_id) per candidate slot: written as NOT
# EXISTS it becomes an anti-join that reads all of the worker's assignments first, a cost that grows with every
# task they do.
_PASSES = (
    ("", "(SELECT 1 FROM assignment AS a WHERE a.hit_id = s.hit_id AND a.worker_id = :worker_id LIMIT 1) IS NULL"),
    ("_again", f"""(SELECT 1 FROM assignment AS a WHERE a.hit_id = s.hit_id AND a.worker_id = :worker_id
                    AND a.status IN ({_ACTIVE_SQL}) LIMIT 1) IS NULL"""),
)
_STATES = (
    ("lapsed", "s.state = 'leased' AND s.lease_expires_at <= :now", "s.lease_expires_at"),
    ("free", "s.state = 'free'", "s.neg_priority, s.slot_no, s.id"),
)


def _picks(gold: bool) -> list[tuple[str, str]]:
    """The four picks of a queue in serving order, as (name, SELECT ... WHERE ... ORDER BY ... LIMIT 1) without
    the lock clause; a later pick runs only when the earlier ones found nothing."""
    picks = []
    for suffix, probe in _PASSES:
        for state, where, order in _STATES:
            picks.append((f"{state}{suffix}", f"""SELECT s.id, s.hit_id FROM hit_slot AS s
    WHERE {_QUEUES[gold]} AND {where} AND {probe} {{guard}}
    ORDER BY {order} LIMIT 1"""))
    return picks


def _open_work_sql() -> str:
    """Whether the batch has any real work for the worker (a gold task is served only in place of real work): the
    real claim's own picks, unlocked, each a walk of its ordered index that stops at the first slot. (As a bare
    EXISTS the planner may scan the table instead and test the worker's probe on every row it passes.)"""
    probe = _PASSES[1][1]
    return " OR ".join(f"EXISTS (SELECT s.id FROM hit_slot AS s WHERE {_QUEUES[False]} AND {where} AND {probe} "
                       f"ORDER BY {order} LIMIT 1)" for _, where, order in _STATES)


@cache
def claim_pg(gold: bool) -> HotStatement:
    """PostgreSQL: the claim in one statement. The batch's real work is tested first in the same statement (a gold
    task is served only where there is real work to replace), and the statement always returns one row, whose
    `open` says whether there was, and whose `id` is NULL when the queue had nothing for the worker. A real claim
    runs the same test, needless for it, so that both kinds do the same work: a gold claim would otherwise be
    half a millisecond slower, measurably (benchmarks/gold_timing.py)."""
    ctes = [f"work AS MATERIALIZED (SELECT {_open_work_sql()} AS open)"]
    guards = ["(SELECT open FROM work)"]
    for name, sql in _picks(gold):
        guard = "".join(f" AND {g}" for g in guards)
        ctes.append(f"{name} AS ({sql.format(guard=guard)} FOR UPDATE OF s SKIP LOCKED)")
        guards.append(f"NOT EXISTS (SELECT 1 FROM {name})")
    union = " UNION ALL ".join(f"SELECT id, hit_id FROM {name}" for name, _ in _picks(gold))
    ctes.append(f"cand AS ({union})")
    ctes.append("""info AS (
    SELECT cand.id AS slot_id, cand.hit_id, b.project_id, p.guideline_version, p.title, p.description,
           p.label_schema, g.instructions, b.reward_cents, b.currency, it.items,
           CAST(:now AS timestamptz) + b.assignment_duration_seconds * interval '1 second' AS expires_at
    FROM cand JOIN batch AS b ON b.id = :batch_id AND b.status = 'open' AND b.expires_at > :now
    JOIN project AS p ON p.id = b.project_id
    JOIN guideline_version AS g ON g.project_id = p.id AND g.version = p.guideline_version
    CROSS JOIN LATERAL (SELECT json_agg(json_build_object('id', i.id, 'data', i.data) ORDER BY i.id) AS items
                        FROM item AS i WHERE i.hit_id = cand.hit_id) AS it
    WHERE it.items IS NOT NULL
)""")
    ctes.append(f"""lease AS (
    INSERT INTO assignment (hit_id, batch_id, project_id, worker_id, is_gold, status, guideline_version, leased_at,
                            expires_at, stream_position)
    SELECT hit_id, :batch_id, project_id, :worker_id, {str(gold).lower()}, 'leased', guideline_version, :now,
           expires_at, CAST(:stream_position AS integer) FROM info
    RETURNING id
)""")
    ctes.append("""taken AS (
    UPDATE hit_slot SET state = 'leased', assignment_id = lease.id, lease_expires_at = info.expires_at
    FROM lease, info WHERE hit_slot.id = info.slot_id
)""")
    columns = ("work.open, lease.id, info.hit_id, info.project_id, info.guideline_version, info.title, "
               "info.description, info.label_schema, info.instructions, info.reward_cents, info.currency, "
               "info.expires_at, info.items")
    return HotStatement(text(f"WITH {', '.join(ctes)}\nSELECT {columns} FROM work LEFT JOIN (lease CROSS JOIN info) "
                             "ON true"))


def _sqlite_text(sql: str) -> Any:
    stmt = text(sql)  # `now` is bound as the column type does: stored naive, in UTC
    return stmt.bindparams(bindparam("now", type_=UTCDateTime())) if ":now" in sql else stmt


# SQLite: the same picks, one statement each, run in order until one finds a slot.
@cache
def _picks_sqlite(gold: bool) -> tuple[Any, ...]:
    return tuple(_sqlite_text(sql.format(guard="")) for _, sql in _picks(gold))


_OPEN_WORK = _sqlite_text(f"SELECT {_open_work_sql()}")
_OPEN_BATCH = (Batch.id == bindparam("batch_id")) & (Batch.status == BatchStatus.OPEN) & (Batch.expires_at >
                                                                                             bindparam("now"))
# What a task shows besides the assignment itself; read in the claim and in `market.engine.next_task.load_task`.
SHOWN = (Project.title, Project.description, Project.label_schema, GuidelineVersion.instructions,
         Batch.reward_cents, Batch.currency)


def shown_joins(stmt: Select, version: Any) -> Select:
    shown = (GuidelineVersion.project_id == Project.id) & (GuidelineVersion.version == version)
    return stmt.join(Project, Project.id == Batch.project_id).join(GuidelineVersion, shown)


_BATCH_INFO = shown_joins(select(Batch.project_id, Batch.assignment_duration_seconds, Project.guideline_version,
                                 *SHOWN).where(_OPEN_BATCH), Project.guideline_version)
_ITEMS = select(Item.id, Item.data).where(Item.hit_id == bindparam("hit_id")).order_by(Item.id)
_ASSIGNMENT, _SLOT = Assignment.__table__, HitSlot.__table__
_NEW_LEASE = _ASSIGNMENT.insert().returning(_ASSIGNMENT.c.id)
_TAKE_SLOT = _SLOT.update().where(_SLOT.c.id == bindparam("slot_id")).values(
    state="leased", assignment_id=bindparam("b_assignment_id"), lease_expires_at=bindparam("b_expires_at"))


def items(session: Session, hit_id: int) -> list[dict[str, Any]]:
    return [{"id": i, "data": d} for i, d in session.connection().execute(_ITEMS, {"hit_id": hit_id})]


def _task_of(row: Any, p: dict[str, Any]) -> Task:
    return Task(row.id, p["worker_id"], row.hit_id, row.project_id, AssignmentStatus.LEASED, p["now"],
                row.expires_at, row.guideline_version, row.instructions, row.title, row.description, row.label_schema,
                row.reward_cents, row.currency, row.items)


def lease(session: Session, p: dict[str, Any], *, gold: bool) -> tuple[Task | None, bool]:
    """Lease a HIT off the batch's queue (`p["batch_id"]`), or, for a gold task, off the gold pool's
    (`p["pool_id"]`) in place of the batch's real work; no commit. Returns (the task or None, whether the batch had
    real work for the worker)."""
    p = {"stream_position": None, "pool_id": None, **p}
    if postgres(session):
        row = claim_pg(gold).first(session, p)
        if row.id is None:
            return None, bool(row.open)
        return _task_of(row, p), True
    if not session.execute(_OPEN_WORK, p).scalar():  # a real claim tests it too, as on PostgreSQL
        return None, False
    slot = next((found for pick in _picks_sqlite(gold) if (found := session.execute(pick, p).first())), None)
    info = session.execute(_BATCH_INFO, p).first() if slot is not None else None
    shown = items(session, slot.hit_id) if info is not None else []
    if not shown:  # nothing to lease, or (never by design) a HIT without items: store no lease
        return None, gold
    expires_at = p["now"] + dt.timedelta(seconds=info.assignment_duration_seconds)
    assignment_id = session.execute(_NEW_LEASE, {
        "hit_id": slot.hit_id, "batch_id": p["batch_id"], "project_id": info.project_id, "worker_id": p["worker_id"],
        "is_gold": gold, "status": AssignmentStatus.LEASED, "guideline_version": info.guideline_version,
        "leased_at": p["now"], "expires_at": expires_at, "stream_position": p["stream_position"]}).scalar_one()
    session.execute(_TAKE_SLOT, {"slot_id": slot.id, "b_assignment_id": assignment_id, "b_expires_at": expires_at})
    return Task(assignment_id, p["worker_id"], slot.hit_id, info.project_id, AssignmentStatus.LEASED, p["now"],
                expires_at, info.guideline_version, info.instructions, info.title, info.description,
                info.label_schema, info.reward_cents, info.currency, shown), True


# Serving order across several open batches: those with a lapsed slot first, then by their best free slot. Each
# batch is looked up on its own index range: ordering the slots of several batches in one query would sort them.
def _peek(lapsed: bool) -> Select:
    mine = (select(literal_column("1")).where(Assignment.hit_id == HitSlot.hit_id,
                                              Assignment.worker_id == bindparam("worker_id"),
                                              Assignment.status.in_(ACTIVE)).limit(1).scalar_subquery())
    stmt = select(HitSlot.id, HitSlot.neg_priority, HitSlot.slot_no).where(
        HitSlot.batch_id == bindparam("batch_id"), mine.is_(None))
    if lapsed:
        return (stmt.where(literal_column("hit_slot.state = 'leased'"), HitSlot.lease_expires_at <= bindparam("now"))
                .order_by(HitSlot.lease_expires_at).limit(1))
    return (stmt.where(literal_column("hit_slot.state = 'free'"))
            .order_by(HitSlot.neg_priority, HitSlot.slot_no, HitSlot.id).limit(1))


_PEEK_LAPSED, _PEEK_FREE = _peek(lapsed=True), _peek(lapsed=False)


def batch_order(session: Session, params: dict[str, Any], batch_ids: list[int]) -> list[int]:
    """Open batches in serving order; those with nothing for the worker are left out."""
    keys = []
    for batch_id in batch_ids:
        p = {**params, "batch_id": batch_id}
        if session.execute(_PEEK_LAPSED, p).first() is not None:
            keys.append(((0, 0, 0, 0), batch_id))
        elif (best := session.execute(_PEEK_FREE, p).first()) is not None:
            keys.append(((1, best.neg_priority, best.slot_no, best.id), batch_id))
    return [batch_id for _, batch_id in sorted(keys)]


# A gold turn that found no gold for the worker: ops see the stream as exhausted until a gold task is submitted or
# new gold is pooled.
EXHAUSTED = text("""INSERT INTO gold_stream (worker_id, project_id, tasks, golds, exhausted_at)
    VALUES (:worker_id, :gold_project_id, 0, 0, :now) ON CONFLICT (worker_id, project_id)
    DO UPDATE SET exhausted_at = excluded.exhausted_at""").bindparams(bindparam("now", type_=UTCDateTime()))
