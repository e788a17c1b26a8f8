"""The assignment engine: hand a worker the next HIT, take their answers, take a HIT back. No flask here.

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
task the next is gold, after a real one real, and neither HIT comes straight back (market/claim.py).

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
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import bindparam, case, exists, func, literal_column, or_, select, text, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market import claim
from market.claim import ACTIVE, Task
from market.db import HotStatement
from market.labels import same_answer, validate_answer_set
from market.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    GoldPool,
    GoldStream,
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

__all__ = ["ACTIVE", "DONE", "NoWork", "Submitted", "Task", "load_task", "next_assignment", "return_assignment",
           "submit", "sweep_expired"]

DONE = (AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED)
_CLAIM_TRIES = 3
TEST_GOLD_KEY = schedule_key("crowdmarket tests")  # the default for callers outside the app (tests, scripts)


class NoWork(DomainError):
    status = 404
    title = "No task available"


def _ms(delta: dt.timedelta) -> int:
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
def _checks(postgres: bool, one_project: bool) -> HotStatement:
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
    batches = select(Batch.id, gated, gold.label("gold")).where(_OPEN, Batch.expires_at > _NOW,
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
    shut = exists().where(_OPEN, Batch.expires_at > _NOW, _block_filter(Batch.project_id))
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


def next_assignment(session: Session, *, worker: Actor, now: dt.datetime, project_id: int | None = None,
                    gold_key: bytes = TEST_GOLD_KEY, lapsed: list[int] | None = None) -> Task:
    """Lease the next HIT to the worker. One task at a time: a worker with a live lease gets that one again; a
    lease of theirs that lapsed ends now (its project's id is added to `lapsed`, if given, so the caller can
    judge the worker there again) and the next task is served. In projects with gold, some tasks are gold HITs,
    on the schedule that `gold_key` draws (the app passes one derived from its secret key)."""
    params = {"worker_id": worker.id, "now": now, "project_id": project_id}
    for _ in range(_CLAIM_TRIES):
        held_id, held_project, has_lapsed, blocked, batch_ids, gated, streams, project_found, shut = _checks(
            claim.postgres(session), project_id is not None).first(session, params)
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
            ended = session.execute(_EXPIRE_OWN_LAPSED, {"b_worker_id": worker.id, "b_now": now}).scalars().all()
            if lapsed is not None:
                lapsed.extend(ended)
        batch_ids, missing = _parse_ids(batch_ids), []
        if gated is not None and (gated := _parse_ids(gated)):
            batch_ids, missing = _admitted(session, worker.id, batch_ids, gated)
        if not batch_ids and missing:
            session.commit()
            raise Forbidden("This work needs qualifications you do not have; the tests listed can grant them.",
                            reason="qualification_required", missing=missing)
        if not batch_ids:
            session.commit()
            if shut:
                raise Forbidden("You are blocked from the projects that have work open.", reason="blocked")
            raise NoWork("No batch is open for work right now (none published, or all paused, cancelled or "
                         "expired).", reason="no_open_batches")
        try:
            return _claim(session, params, batch_ids, _parse_streams(streams), gold_key)
        except IntegrityError:
            # The same worker's other request took a lease first (one live task per worker): go round again,
            # and hand out that lease.
            session.rollback()
    raise Conflict("Too many simultaneous requests for work; try again.")


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
                    session.execute(claim.EXHAUSTED, p)
                p["stream_position"] = None
        task, _ = claim.lease(session, p, gold=False)
        if task is not None:
            return task
    session.commit()
    raise NoWork("Every open HIT is fully assigned or already done by you; try again later.", reason="all_assigned")


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
    answers = _stored_answers(session, assignment_id) if row.status in DONE else None
    return Task(row.id, row.worker_id, row.hit_id, row.project_id, row.status, row.leased_at, row.expires_at,
                row.guideline_version, row.instructions, row.title, row.description, row.label_schema,
                row.reward_cents, row.currency, claim.items(session, row.hit_id), answers)


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
    # The correct answer and explanation of each gold item missed, where the project shows them; else empty.
    feedback: list[dict[str, Any]] = field(default_factory=list)


_A = bindparam("b_assignment_id")
_READ = (select(Assignment.id, Assignment.worker_id, Assignment.hit_id, Assignment.status, Assignment.leased_at,
                Assignment.expires_at, Assignment.project_id, Assignment.guideline_version, Assignment.submitted_at,
                Assignment.duration_ms, Assignment.is_gold, Assignment.stream_position, Project.label_schema,
                Project.gold_feedback, Item.id.label("item_id"), Item.gold_answer, Item.gold_explanation,
                Item.gold_retired_at)
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
# A task submitted at its stream position moves the stream on by one (and a gold one ends an exhausted spell);
# the guard makes a repeat harmless.
_ADVANCE_SQL = """INSERT INTO gold_stream (worker_id, project_id, tasks, golds)
    {source} ON CONFLICT (worker_id, project_id) DO UPDATE
    SET tasks = gold_stream.tasks + 1, golds = gold_stream.golds + excluded.golds,
        exhausted_at = CASE WHEN excluded.golds = 1 THEN NULL ELSE gold_stream.exhausted_at END
    WHERE gold_stream.tasks = {position}"""
_ADVANCE = text(_ADVANCE_SQL.format(source="VALUES (:worker_id, :project_id, 1, :golds)", position=":position"))

# PostgreSQL: the submit in one statement. The assignment is locked first (the lock order), then its slot is
# finished only if the lease still owns it, and only then are the assignment and its answers written and the
# worker's gold stream moved on: all of it, or (lease lapsed and its slot taken, or submitted meanwhile) none of
# it. Gold and real tasks run this same statement. The assignment is read by its key alone (its status is tested
# after the lock): with the status in the lookup, the planner may walk the partial index of every live lease.
_SUBMIT_PG = HotStatement(text(f"""
WITH mine AS MATERIALIZED (
    SELECT id, status, is_gold, stream_position FROM assignment WHERE id = :assignment_id FOR UPDATE
), slot AS (
    UPDATE hit_slot SET state = 'done', lease_expires_at = NULL
    WHERE hit_id = :hit_id AND assignment_id = (SELECT id FROM mine WHERE status = 'leased') AND state = 'leased'
    RETURNING assignment_id
), done AS (
    UPDATE assignment SET status = 'submitted', submitted_at = :now, duration_ms = :duration_ms,
                          client_meta = CAST(:client_meta AS jsonb)
    FROM slot WHERE assignment.id = slot.assignment_id RETURNING assignment.id
), stored AS (
    INSERT INTO answer (assignment_id, item_id, worker_id, project_id, value, guideline_version, submitted_at,
                        duration_ms, client_meta, gold_correct)
    SELECT done.id, v.item_id, :worker_id, :project_id, v.value, :guideline_version, :now, :duration_ms,
           CAST(:client_meta AS jsonb), v.correct
    FROM done, jsonb_to_recordset(CAST(:answers AS jsonb)) AS v(item_id integer, value jsonb, correct boolean)
), advanced AS (
    {_ADVANCE_SQL.format(
        source="SELECT :worker_id, :project_id, 1, CAST(mine.is_gold AS integer) FROM done, mine "
               "WHERE mine.stream_position IS NOT NULL",
        position="(SELECT stream_position FROM mine)")}
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
    """Each answer's gold outcome (None: not a gold item, or a retired one) and the feedback the worker gets. Gold
    items are scored wherever they are served: in a gold task, or filling a batch's last HIT."""
    outcome: dict[int, bool | None] = {}
    feedback = []
    for item in items:
        if item.gold_answer is None or item.gold_retired_at is not None:
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
    """Store one answer per item; returns (result, replayed). Repeating a submit is harmless. Answers to gold
    items are scored against the known answers as they are stored; the worker's figures are judged afterwards,
    apart from the response (market/scoring.py), so a gold task is answered exactly as fast as any other."""
    postgres = claim.postgres(session)
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
                             _scored(row, items, stored)[1]), True
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
                           feedback)
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
        if session.execute(_FINISH_SLOT, {"b_assignment_id": assignment_id}).rowcount != 1:
            raise _gone(session, assignment_id, row.expires_at, gone)
        session.execute(_STORE_ANSWER, [
            {"assignment_id": assignment_id, "item_id": item_id, "worker_id": worker.id,
             "project_id": row.project_id, "value": value, "guideline_version": row.guideline_version,
             "submitted_at": now, "duration_ms": duration, "client_meta": client_meta,
             "gold_correct": outcome[item_id]}
            for item_id, value in values.items()])
        session.execute(_MARK_SUBMITTED, {"b_assignment_id": assignment_id, "now": now, "b_duration_ms": duration,
                                          "b_client_meta": client_meta})
        if row.stream_position is not None:
            session.execute(_ADVANCE, {"worker_id": worker.id, "project_id": row.project_id,
                                       "golds": int(row.is_gold), "position": row.stream_position})
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
