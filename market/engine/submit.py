"""Taking a worker's answers, and a HIT back: submit, return, lapsed leases. No flask here."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from base import events
from base.db import HotStatement
from base.errors import Conflict, Gone, InvalidInput, NotFound
from base.events import AssignmentReturned, AssignmentSubmitted
from base.identity import Actor
from base.labels import same_answer, validate_answer_set
from market.catalogue.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from market.engine import claim
from market.engine.next_task import DONE, elapsed_ms, stored_answers

_ASSIGNMENT, _SLOT = Assignment.__table__, HitSlot.__table__  # Core tables: no ORM bookkeeping on hot writes


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
    # The lease ran out whatever the worker sent: it stays expired though the request is refused.
    return Gone(detail, reason="expired", expired_at=expires_at.isoformat()).keep_writes()


def submit(session: Session, *, worker: Actor, assignment_id: int, answers: list[dict[str, Any]],
           now: dt.datetime, client_meta: dict[str, Any] | None = None) -> tuple[Submitted, bool]:
    """Store one answer per item; returns (result, replayed). Repeating a submit is harmless. Answers to gold
    items are scored against the known answers as they are stored; the worker's figures are judged afterwards,
    apart from the response (market/quality/scoring.py), so a gold task is answered exactly as fast as any other."""
    postgres = claim.postgres(session)
    for attempt in range(2):
        # PostgreSQL reads without a lock: the one-statement write below re-checks everything it relies on.
        row, items = _read(session, worker.id, assignment_id, lock=not postgres)
        values = _validated(row.label_schema, [i.item_id for i in items], answers)
        if row.status in DONE:
            stored = stored_answers(session, assignment_id)
            if stored != values:
                raise Conflict("This assignment was submitted already with different answers.",
                               errors={"answers": ["differ from the submitted ones"]})
            status = AssignmentStatus(row.status)
            return Submitted(assignment_id, status, row.submitted_at, row.duration_ms, stored, row.project_id,
                             _scored(row, items, stored)[1]), True
        if row.status == AssignmentStatus.RETURNED:
            raise Conflict("This assignment was returned; ask for new work.", reason="returned")
        gone = "The lease on this assignment ran out; its answers were not saved."
        if row.status == AssignmentStatus.EXPIRED or now >= row.expires_at or attempt == 1:
            # On a second round the lease is still 'leased' but its slot was taken: it lapsed and was reclaimed.
            raise _gone(session, assignment_id, row.expires_at, gone)
        duration = elapsed_ms(now - row.leased_at)
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
            if written == 1:
                events.publish(session, AssignmentSubmitted(assignment_id, worker.id, row.project_id, now))
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
        events.publish(session, AssignmentSubmitted(assignment_id, worker.id, row.project_id, now))
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
        return assignment
    if assignment.status in DONE:
        raise Conflict("This assignment was submitted; it cannot be returned.", reason="submitted")
    if assignment.status == AssignmentStatus.EXPIRED or now >= assignment.expires_at:
        raise _gone(session, assignment.id, assignment.expires_at, "The lease on this assignment ran out already.")
    assignment.status = AssignmentStatus.RETURNED
    assignment.returned_at = now
    assignment.duration_ms = elapsed_ms(now - assignment.leased_at)
    # Frees the slot only if this lease still owns it (after a lapse, a claim may have taken it over).
    session.execute(update(HitSlot).where(HitSlot.assignment_id == assignment.id, HitSlot.state == SlotState.LEASED)
                    .values(state=SlotState.FREE, assignment_id=None, lease_expires_at=None))
    events.publish(session, AssignmentReturned(assignment.id, worker.id, assignment.project_id, now))
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
    return len(lapsed)
