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
import enum
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    Update,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from base import events
from base.db import HotStatement, UTCDateTime, dialect_insert
from base.money import expected_rate
from market.catalogue.models import (
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    GuidelineVersion,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from qualification.models import GoldStream

ACTIVE = (AssignmentStatus.LEASED, AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED,
          AssignmentStatus.REJECTED)


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
    # The task's expected pay per hour (cents, and "measured" or "estimated"), from the batch's columns.
    hourly_rate: tuple[int, str] | None = None


def rate_of(row: Any) -> tuple[int, str] | None:
    """The expected hourly rate of a row carrying SHOWN's columns."""
    return expected_rate(row.reward_cents, measured_seconds=row.measured_seconds,
                         estimated_seconds=row.estimated_seconds)


def postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


_ASSIGNMENT, _SLOT = Assignment.__table__, HitSlot.__table__
_S, _A = _SLOT.alias("s"), _ASSIGNMENT.alias("a")
_ONE = literal_column("1")  # LIMIT 1 as a literal: a generic plan cannot know a bound limit, and costs it as 10%


def _literal(state: enum.Enum) -> Any:
    """A state as an SQL literal, never a parameter: the planner then matches it to the partial indexes (free
    slots, a worker's active assignments) whatever the statistics said when the plan was cached."""
    return literal_column(f"'{state.value}'")


# The queues: a batch's real slots, a gold pool's slots (of gold HITs still ranked: a retired one has no rank).
# Each tests its HIT's rank, so both kinds of claim do the same work (real HITs have none). This one leaf is text:
# it is what tells a gold claim from a real one, and tests/market/test_gold_channels.py recognises it by its text
# (Core would render newlines and bind casts into it).
_RANK = "(SELECT h.gold_rank FROM hit AS h WHERE h.id = s.hit_id)"
_QUEUES = {False: text(f"s.batch_id = :batch_id AND {_RANK} IS NULL"),
           True: text(f"s.gold_pool_id = :pool_id AND {_RANK} IS NOT NULL")}


def _probe(*, again: bool) -> Any:
    """Which HITs a pass may take. First pass: none the worker ever had, in any state. Second pass (only when the
    first finds nothing): any the worker does not hold or has not answered, so what they returned or let lapse
    comes back only when nothing else is left. A scalar probe of (hit_id, worker_id) per candidate slot: written as
    NOT EXISTS it becomes an anti-join that reads all of the worker's assignments first, a cost that grows with
    every task they do."""
    mine = select(_ONE).select_from(_A).where(_A.c.hit_id == _S.c.hit_id, _A.c.worker_id == bindparam("worker_id"))
    if again:
        mine = mine.where(_A.c.status.in_([_literal(st) for st in ACTIVE]))
    return mine.limit(_ONE).scalar_subquery().is_(None)


_STATES = (
    ("lapsed", (_S.c.state == _literal(SlotState.LEASED), _S.c.lease_expires_at <= bindparam("now")),
     (_S.c.lease_expires_at,)),
    ("free", (_S.c.state == _literal(SlotState.FREE),), (_S.c.neg_priority, _S.c.slot_no, _S.c.id)),
)


def _pick(gold: bool, state: int, *, again: bool) -> Select:
    _, where, order = _STATES[state]
    return (select(_S.c.id, _S.c.hit_id).where(_QUEUES[gold], *where, _probe(again=again)).order_by(*order)
            .limit(_ONE))


def _picks(gold: bool) -> list[tuple[str, Select]]:
    """The four picks of a queue in serving order, as (name, SELECT ... WHERE ... ORDER BY ... LIMIT 1) without
    the lock clause; a later pick runs only when the earlier ones found nothing."""
    return [(f"{name}{'_again' if again else ''}", _pick(gold, state, again=again))
            for again in (False, True) for state, (name, _, _) in enumerate(_STATES)]


# Whether the batch has any real work for the worker (a gold task is served only in place of real work): the real
# claim's own picks, unlocked, each a walk of its ordered index that stops at the first slot. (As a bare EXISTS
# the planner may scan the table instead and test the worker's probe on every row it passes.)
_OPEN_WORK = or_(*(_pick(False, state, again=True).exists() for state in range(len(_STATES))))

_OPEN_BATCH = ((Batch.id == bindparam("batch_id")) & (Batch.status == _literal(BatchStatus.OPEN))
               & (Batch.expires_at > bindparam("now")))
# What a task shows besides the assignment itself; read in the claim and in `market.engine.next_task.load_task`.
SHOWN = (Project.title, Project.description, Project.label_schema, GuidelineVersion.instructions,
         Batch.reward_cents, Batch.currency, Batch.estimated_seconds, Batch.measured_seconds)


def shown_joins(stmt: Select, version: Any) -> Select:
    shown = (GuidelineVersion.project_id == Project.id) & (GuidelineVersion.version == version)
    return stmt.join(Project, Project.id == Batch.project_id).join(GuidelineVersion, shown)


def _new_lease(hit_id: Any, project_id: Any, version: Any, expires_at: Any, is_gold: Any) -> dict[str, Any]:
    """The assignment a claim stores, column by column (the batch, worker, time and stream position are the
    claim's parameters)."""
    return {"hit_id": hit_id, "batch_id": bindparam("batch_id", type_=Integer), "project_id": project_id,
            "worker_id": bindparam("worker_id", type_=Integer), "is_gold": is_gold,
            "status": _literal(AssignmentStatus.LEASED), "guideline_version": version,
            "leased_at": bindparam("now", type_=UTCDateTime()), "expires_at": expires_at,
            "stream_position": cast(bindparam("stream_position"), Integer)}


def _take_slot(slot_id: Any, assignment_id: Any, expires_at: Any) -> Update:
    return _SLOT.update().where(_SLOT.c.id == slot_id).values(
        state=_literal(SlotState.LEASED), assignment_id=assignment_id, lease_expires_at=expires_at)


def _shown_items(hit_id: Any) -> Any:
    """The HIT's items as one JSON array, in id order (PostgreSQL)."""
    item = Item.__table__.alias("i")
    shown = func.json_build_object(literal_column("'id'"), item.c.id, literal_column("'data'"), item.c.data)
    return select(func.json_agg(aggregate_order_by(shown, item.c.id)).label("items")).where(
        item.c.hit_id == hit_id).lateral("it")


@cache
def claim_pg(gold: bool) -> HotStatement:
    """PostgreSQL: the claim in one statement. The batch's real work is tested first in the same statement (a gold
    task is served only where there is real work to replace), and the statement always returns one row, whose
    `open` says whether there was, and whose `id` is NULL when the queue had nothing for the worker. A real claim
    runs the same test, needless for it, so that both kinds do the same work: a gold claim would otherwise be
    half a millisecond slower, measurably (benchmarks/gold_timing.py)."""
    work = select(_OPEN_WORK.label("open")).cte("work").prefix_with("MATERIALIZED")
    guards, picks = [select(work.c.open).scalar_subquery()], []
    for name, pick in _picks(gold):
        picks.append(pick.where(*guards).with_for_update(of=_S, skip_locked=True).cte(name))
        guards.append(~select(_ONE).select_from(picks[-1]).exists())
    cand = union_all(*(select(c.c.id, c.c.hit_id) for c in picks)).cte("cand")
    items = _shown_items(cand.c.hit_id)
    expires_at = (bindparam("now", type_=UTCDateTime())
                  + Batch.assignment_duration_seconds * literal_column("interval '1 second'")).label("expires_at")
    info = (shown_joins(select(cand.c.id.label("slot_id"), cand.c.hit_id, Batch.project_id,
                               Project.guideline_version, *SHOWN, items.c["items"], expires_at)
                        .select_from(cand).join(Batch, _OPEN_BATCH), Project.guideline_version)
            .join(items, true()).where(items.c["items"].is_not(None)).cte("info"))
    row = _new_lease(info.c.hit_id, info.c.project_id, info.c.guideline_version, info.c.expires_at,
                     literal_column(str(gold).lower()))
    lease = (_ASSIGNMENT.insert().from_select(list(row), select(*row.values()).select_from(info))
             .returning(_ASSIGNMENT.c.id).cte("lease"))
    taken = _take_slot(info.c.slot_id, lease.c.id, info.c.expires_at).cte("taken")
    shown = [info.c[c.name] for c in SHOWN]
    return HotStatement(
        select(work.c.open, lease.c.id, info.c.hit_id, info.c.project_id, info.c.guideline_version, *shown,
               info.c.expires_at, info.c["items"])
        .select_from(work.outerjoin(lease.join(info, true()), true())).add_cte(taken))


# SQLite: the same picks, one statement each, run in order until one finds a slot; then the lease and the slot.
_PICKS_SQLITE = {gold: tuple(pick for _, pick in _picks(gold)) for gold in (False, True)}
_OPEN_WORK_SQLITE = select(_OPEN_WORK)
_BATCH_INFO = shown_joins(select(Batch.project_id, Batch.assignment_duration_seconds, Project.guideline_version,
                                 *SHOWN).where(_OPEN_BATCH), Project.guideline_version)
_ITEMS = select(Item.id, Item.data).where(Item.hit_id == bindparam("hit_id")).order_by(Item.id)
_NEW_LEASE = _ASSIGNMENT.insert().values(_new_lease(
    bindparam("b_hit_id"), bindparam("b_project_id"), bindparam("b_version"), bindparam("b_expires_at"),
    bindparam("b_is_gold"))).returning(_ASSIGNMENT.c.id)
_TAKE_SLOT = _take_slot(bindparam("b_slot_id"), bindparam("b_assignment_id"), bindparam("b_expires_at"))


def items(session: Session, hit_id: int) -> list[dict[str, Any]]:
    return [{"id": i, "data": d} for i, d in session.connection().execute(_ITEMS, {"hit_id": hit_id})]


def _task_of(row: Any, p: dict[str, Any]) -> Task:
    return Task(row.id, p["worker_id"], row.hit_id, row.project_id, AssignmentStatus.LEASED, p["now"],
                row.expires_at, row.guideline_version, row.instructions, row.title, row.description, row.label_schema,
                row.reward_cents, row.currency, row.items, hourly_rate=rate_of(row))


def lease(session: Session, p: dict[str, Any], *, gold: bool) -> tuple[Task | None, bool]:
    """Lease a HIT off the batch's queue (`p["batch_id"]`), or, for a gold task, off the gold pool's
    (`p["pool_id"]`) in place of the batch's real work; no commit. Returns (the task or None, whether the batch had
    real work for the worker)."""
    task, open_work = _lease(session, {"stream_position": None, "pool_id": None, **p}, gold=gold)
    if task is not None:
        events.publish(session, events.TaskLeased(task.id, task.worker_id, task.project_id, gold, task.leased_at))
    return task, open_work


def _lease(session: Session, p: dict[str, Any], *, gold: bool) -> tuple[Task | None, bool]:
    if postgres(session):
        row = claim_pg(gold).first(session, p)
        if row.id is None:
            return None, bool(row.open)
        return _task_of(row, p), True
    if not session.execute(_OPEN_WORK_SQLITE, p).scalar():  # a real claim tests it too, as on PostgreSQL
        return None, False
    slot = next((found for pick in _PICKS_SQLITE[gold] if (found := session.execute(pick, p).first())), None)
    info = session.execute(_BATCH_INFO, p).first() if slot is not None else None
    shown = items(session, slot.hit_id) if info is not None else []
    if not shown:  # nothing to lease, or (never by design) a HIT without items: store no lease
        return None, gold
    expires_at = p["now"] + dt.timedelta(seconds=info.assignment_duration_seconds)
    assignment_id = session.execute(_NEW_LEASE, {
        **p, "b_hit_id": slot.hit_id, "b_project_id": info.project_id, "b_version": info.guideline_version,
        "b_expires_at": expires_at, "b_is_gold": gold}).scalar_one()
    session.execute(_TAKE_SLOT, {"b_slot_id": slot.id, "b_assignment_id": assignment_id, "b_expires_at": expires_at})
    return Task(assignment_id, p["worker_id"], slot.hit_id, info.project_id, AssignmentStatus.LEASED, p["now"],
                expires_at, info.guideline_version, info.instructions, info.title, info.description,
                info.label_schema, info.reward_cents, info.currency, shown, hourly_rate=rate_of(info)), True


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
@cache
def exhausted(dialect: str) -> Any:
    """The statement marking the worker's gold stream (`gold_project_id`) exhausted `now`, for `dialect`."""
    stmt = dialect_insert(dialect)(GoldStream).values(
        worker_id=bindparam("worker_id"), project_id=bindparam("gold_project_id"), tasks=literal_column("0"),
        golds=literal_column("0"),
        exhausted_at=bindparam("now"))
    return stmt.on_conflict_do_update(index_elements=[GoldStream.worker_id, GoldStream.project_id],
                                      set_={"exhausted_at": stmt.excluded.exhausted_at})
