"""The assignment engine's front door: hand a worker the next HIT (submit.py takes their answers). No flask here.

Invariants, each defended by the database as well as by this code:
- an item never has more answers plus live leases than its HIT's slots: one slot row per place, claimed with
  FOR UPDATE SKIP LOCKED on PostgreSQL (BEGIN IMMEDIATE serializes writers on SQLite), and a submit stores
  answers only if its lease still owns the slot (a conditional update of the slot row); gold HITs have slots too,
  in their pool's queue, so a gold item is seen by no more workers than a real one;
- a worker never holds or answers a HIT twice (partial unique index on assignment(hit_id, worker_id)), and
  holds one live task at a time (partial unique index on assignment(worker_id) where leased: a worker's racing
  requests for work end with one lease, the others get that same one);
- a lapsed lease frees its slot by itself (the claim query treats it as free; the optional sweeper only tidies),
  and the worker's own lapsed lease ends at their next request for work.

The gold schedule moves on submits, never on leases: a task leased at position n of the worker's stream
(qualification/gold.py) moves it to n + 1 when it is submitted; one returned or let lapse gives n back, so the
next task is drawn for the same position. Returning can thus neither skip gold nor tell it apart: after a gold
task the next is gold, after a real one real, and neither HIT comes straight back (market/engine/claim.py).

Lock order: assignment, then slot. A claim takes its slot with SKIP LOCKED, so it never waits on a slot, and
never touches another worker's assignment (a lapsed lease it takes over stays 'leased' in the past until its
owner's next claim, its late submit, or the sweeper marks it expired).

On PostgreSQL a claim and a submit are each one statement (data-modifying CTEs), atomic on their own, so the
hot endpoints run them in autocommit mode: no BEGIN/COMMIT round trips. benchmarks/next_submit.py measures both
endpoints against a bare INSERT + COMMIT.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import bindparam, case, exists, func, literal_column, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base import events
from base.db import HotStatement
from base.errors import Conflict, DomainError, Forbidden, NotFound
from base.events import LeasesLapsed
from base.identity import Actor
from base.uow import savepoint
from market.catalogue.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    GoldPool,
    Hit,
    HitSlot,
    Project,
)
from market.engine import claim
from market.engine.claim import ACTIVE, Task
from qualification.gold import is_gold_turn
from qualification.models import GoldStream
from qualification.service import unmet_requirements
from workers.models import WorkerBlock

__all__ = ["ACTIVE", "DONE", "NoWork", "Task", "load_task", "next_assignment"]

DONE = (AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED)

_CLAIM_TRIES = 3



class NoWork(DomainError):
    status = 404
    title = "No task available"


def elapsed_ms(delta: dt.timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


# The hot statements are built once, with bound parameters: building SQLAlchemy expressions per request costs
# more than running them. They are Core statements, run on the session's connection (the ORM layer of
# Session.execute would add a third to each). Parameters: worker_id, now, project_id, batch_id.
_W, _NOW = bindparam("worker_id"), bindparam("now")

# States as SQL literals, never parameters: the planner can then match them to the partial indexes (a worker's
# one leased assignment, open batches, free slots) whatever the table statistics say; with parameters, a plan
# cached while the tables were small goes on scanning them as they grow.
_LEASED = literal_column(f"assignment.status = '{AssignmentStatus.LEASED.value}'")

_OPEN = literal_column(f"batch.status = '{BatchStatus.OPEN.value}'")

_ASSIGNMENT, _SLOT = Assignment.__table__, HitSlot.__table__  # Core tables: no ORM bookkeeping on hot writes


def _block_filter(project: Any) -> Any:
    return exists().where(WorkerBlock.account_id == _W, WorkerBlock.in_force(_NOW),
                          or_(WorkerBlock.project_id.is_(None), WorkerBlock.project_id == project))


@cache
def _checks(postgres: bool, one_project: bool, one_batch: bool = False) -> HotStatement:
    """In one read: the worker's live lease (and its project), whether they hold lapsed ones, whether they are
    blocked (from all work, or from the one project asked for), the open batches they may work on, which of
    those have qualification requirements (checked apart, only when there are any), the worker's gold stream in
    each batch whose project has gold of the batch's shape (so a claim needs no read of its own for it), whether
    that project exists, and whether open work exists in projects the worker is blocked from."""
    project = bindparam("project_id") if one_project else None
    live = (_ASSIGNMENT.c.worker_id == _W) & _LEASED
    held = select(_ASSIGNMENT.c.id, _ASSIGNMENT.c.project_id).where(live, _ASSIGNMENT.c.expires_at > _NOW).limit(1)
    gated = Batch.qualification_requirements.is_not(None).label("gated")
    # Gold is injected where the project has a gold rate and a gold pool of the batch's shape with HITs in it.
    pool = (select(GoldPool.id).where(
        GoldPool.project_id == Batch.project_id, GoldPool.items_per_hit == Batch.items_per_hit,
        GoldPool.assignments_per_item == Batch.assignments_per_item,
        exists().where(Hit.gold_pool_id == GoldPool.id, literal_column("hit.is_gold"), Hit.gold_rank.is_not(None)))
        .correlate(Batch).scalar_subquery())  # to the batch of the enclosing query, however deeply nested
    gold = (select(Project.id).where(Project.id == Batch.project_id, Project.gold_rate > 0, pool.is_not(None))
            .correlate(Batch).exists())
    # A burst's batch (platforms/burst.py) is served only through its platform's task page, which names it.
    served = Batch.id == bindparam("batch_id") if one_batch else Batch.platform.is_(None)
    batches = select(Batch.id, gated, gold.label("gold")).where(_OPEN, Batch.expires_at > _NOW, served,
                                                                ~_block_filter(Batch.project_id))
    if one_project:
        batches = batches.where(Batch.project_id == project)
    sub = batches.subquery()
    # The ids as one value: an array on PostgreSQL, a comma-separated string on SQLite; the gated ones (with
    # qualification requirements) again, apart.
    agg = func.array_agg if postgres else func.group_concat
    # Per batch with gold: [batch, project, pool, gold rate, tasks, golds, exhausted], as one JSON array.
    row = (Batch.id, Batch.project_id, pool, Project.gold_rate, func.coalesce(GoldStream.tasks, 0),
           func.coalesce(GoldStream.golds, 0), GoldStream.exhausted_at.is_not(None))
    streams = select((func.json_agg if postgres else func.json_group_array)(
        (func.json_build_array if postgres else func.json_array)(*row))).select_from(Batch).join(
        Project, Project.id == Batch.project_id).outerjoin(
        GoldStream, (GoldStream.project_id == Batch.project_id) & (GoldStream.worker_id == _W)).where(
        Batch.id.in_(select(sub.c.id).where(sub.c.gold)))
    shut = exists().where(_OPEN, Batch.expires_at > _NOW, served, _block_filter(Batch.project_id))
    if one_project:
        shut = shut.where(Batch.project_id == project)
    return HotStatement(select(
        held.with_only_columns(_ASSIGNMENT.c.id).scalar_subquery(),
        held.with_only_columns(_ASSIGNMENT.c.project_id).scalar_subquery(),
        exists().where(live, _ASSIGNMENT.c.expires_at <= _NOW), _block_filter(project),
        select(agg(sub.c.id)).scalar_subquery(), select(agg(case((sub.c.gated, sub.c.id)))).scalar_subquery(),
        streams.scalar_subquery(), exists().where(Project.id == project) if one_project else true(), shut))


@dataclass(frozen=True, slots=True)
class _Stream:
    """A worker's gold stream in one batch's project, as the checks read it."""

    project_id: int
    pool_id: int
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
    _ASSIGNMENT.c.worker_id == bindparam("b_worker_id"), _LEASED,
    _ASSIGNMENT.c.expires_at <= bindparam("b_now")).values(status=AssignmentStatus.EXPIRED).returning(
    _ASSIGNMENT.c.project_id)


def next_assignment(session: Session, *, worker: Actor, now: dt.datetime, gold_key: bytes,
                    project_id: int | None = None, batch_id: int | None = None) -> Task:
    """Lease the next HIT to the worker. One task at a time: a worker with a live lease gets that one again; a
    lease of theirs that lapsed ends now (`LeasesLapsed`, per project, so the worker is judged there again) and
    the next task is served. In projects with gold, some tasks are gold HITs, on the schedule that `gold_key`
    draws: required, because a key anyone knows makes the schedule predictable (the app derives its own from its
    secret key). `batch_id` serves that one batch (with `project_id`, its project): a burst's, on its platform's
    task page; without it, a burst's batch is never served."""
    assert batch_id is None or project_id is not None, "a batch is served within its project"
    params: dict[str, Any] = {"worker_id": worker.id, "now": now, "project_id": project_id}
    if batch_id is not None:
        params["batch_id"] = batch_id
    for _ in range(_CLAIM_TRIES):
        held_id, held_project, has_lapsed, blocked, batch_ids, gated, streams, project_found, shut = _checks(
            claim.postgres(session), project_id is not None, batch_id is not None).first(session, params)
        if not project_found:
            raise NotFound(f"Project {project_id} not found.")
        if blocked:
            scope = "all work" if project_id is None else "this project"
            raise Forbidden(f"You are blocked from {scope}.", reason="blocked")
        if held_id is not None:
            if project_id is not None and held_project != project_id:
                raise Conflict("You hold a task of another project; submit or return it first.",
                               reason="task_held", assignment_id=held_id).keep_writes()
            return load_task(session, worker_id=worker.id, assignment_id=held_id)
        if has_lapsed:  # the worker's own lapsed leases end now, so the HITs they held can be offered again
            ended = session.execute(_EXPIRE_OWN_LAPSED, {"b_worker_id": worker.id, "b_now": now}).scalars().all()
            for lapsed_in in sorted(set(ended)):
                events.publish(session, LeasesLapsed(worker_id=worker.id, project_id=lapsed_in, at=now))
        batch_ids, missing = _parse_ids(batch_ids), []
        if gated is not None and (gated := _parse_ids(gated)):
            batch_ids, missing = _admitted(session, worker.id, batch_ids, gated)
        # Refusals from here on keep the writes before them (`keep_writes`): the worker's lapsed leases ended.
        if not batch_ids and missing:
            raise Forbidden("This work needs qualifications you do not have; the tests listed can grant them.",
                            reason="qualification_required", missing=missing).keep_writes()
        if not batch_ids:
            if shut:
                raise Forbidden("You are blocked from the projects that have work open.",
                                reason="blocked").keep_writes()
            raise NoWork("No batch is open for work right now (none published, or all paused, cancelled or "
                         "expired).", reason="no_open_batches").keep_writes()
        try:
            with savepoint(session):
                return _claim(session, params, batch_ids, _parse_streams(streams), gold_key)
        except IntegrityError:
            # The same worker's other request took a lease first (one live task per worker): go round again,
            # and hand out that lease.
            pass
    raise Conflict("Too many simultaneous requests for work; try again.").keep_writes()


def _claim(session: Session, params: dict[str, Any], batch_ids: list[int], streams: dict[int, _Stream],
           gold_key: bytes) -> Task:
    order = batch_ids if len(batch_ids) == 1 else claim.batch_order(session, params, batch_ids)
    for batch_id in order:
        p = {**params, "batch_id": batch_id}
        stream = streams.get(batch_id)
        if stream is not None:
            p.update(stream_position=stream.tasks, pool_id=stream.pool_id, gold_project_id=stream.project_id)
            if is_gold_turn(gold_key, project_id=stream.project_id, worker_id=params["worker_id"], rate=stream.rate,
                            tasks=stream.tasks, golds=stream.golds):
                task, open_work = claim.lease(session, p, gold=True)
                if task is not None:
                    return task
                if not open_work:
                    continue  # gold only in place of real work: a batch with nothing left to do serves no gold
                # No gold left for the worker: real work, off the schedule (the position stays gold for the next).
                if not stream.exhausted:
                    session.execute(claim.exhausted(session.get_bind().dialect.name), p)
                p["stream_position"] = None
        task, _ = claim.lease(session, p, gold=False)
        if task is not None:
            return task
    raise NoWork("Every open HIT is fully assigned or already done by you; try again later.",
                 reason="all_assigned").keep_writes()  # lapsed leases ended, a gold stream marked exhausted


def load_task(session: Session, *, worker_id: int, assignment_id: int) -> Task:
    """One of the worker's assignments as they see it, with their own answers once submitted."""
    stmt = claim.shown_joins(
        select(Assignment.id, Assignment.worker_id, Assignment.hit_id, Assignment.project_id, Assignment.status,
               Assignment.leased_at, Assignment.expires_at, Assignment.guideline_version, *claim.SHOWN)
        .join(Batch, Batch.id == Assignment.batch_id),
        Assignment.guideline_version).where(Assignment.id == assignment_id)
    row = session.execute(stmt).first()
    if row is None or row.worker_id != worker_id:
        raise NotFound(f"Assignment {assignment_id} not found.")
    answers = stored_answers(session, assignment_id) if row.status in DONE else None
    return Task(row.id, row.worker_id, row.hit_id, row.project_id, row.status, row.leased_at, row.expires_at,
                row.guideline_version, row.instructions, row.title, row.description, row.label_schema,
                row.reward_cents, row.currency, claim.items(session, row.hit_id), answers,
                hourly_rate=claim.rate_of(row))


def stored_answers(session: Session, assignment_id: int) -> dict[int, Any]:
    rows = session.execute(select(Answer.item_id, Answer.value).where(Answer.assignment_id == assignment_id)
                           .order_by(Answer.item_id))
    return {item_id: value for item_id, value in rows}
