"""Taking a worker's answers, and a HIT back: submit, return, lapsed leases. No flask here."""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    Update,
    bindparam,
    case,
    cast,
    column,
    func,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from base import events
from base.db import HotStatement, dialect_insert
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
from qualification.models import GoldStream

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

_GOLD_STREAM = GoldStream.__table__
_ONE = literal_column("1")


def _literal(state: enum.Enum) -> Any:
    return literal_column(f"'{state.value}'")  # states as literals, as in the claim (market/engine/claim.py)


def _finish_slot(assignment_id: Any) -> Update:
    """The lease must still own its slot: a claim made after the lease ran out (by its clock) may have taken it."""
    return _SLOT.update().where(
        _SLOT.c.hit_id == bindparam("b_hit_id"), _SLOT.c.assignment_id == assignment_id,
        _SLOT.c.state == _literal(SlotState.LEASED)).values(state=_literal(SlotState.DONE), lease_expires_at=null())


def _mark_submitted(which: Any, client_meta: Any) -> Update:
    return _ASSIGNMENT.update().where(which).values(
        status=_literal(AssignmentStatus.SUBMITTED), submitted_at=bindparam("now"),
        duration_ms=bindparam("b_duration_ms"), client_meta=client_meta)


def _answer(assignment_id: Any, item_id: Any, value: Any, correct: Any, client_meta: Any) -> dict[str, Any]:
    """An answer row, column by column (worker, project, guideline version, time and duration are parameters)."""
    return {"assignment_id": assignment_id, "item_id": item_id, "worker_id": bindparam("b_worker_id", type_=Integer),
            "project_id": bindparam("b_project_id", type_=Integer), "value": value,
            "guideline_version": bindparam("b_version", type_=Integer), "submitted_at": bindparam("now"),
            "duration_ms": bindparam("b_duration_ms", type_=Integer), "client_meta": client_meta,
            "gold_correct": correct}


def _advance(stmt: Any, position: Any) -> Any:
    """A task submitted at its stream position moves the stream on by one (and a gold one ends an exhausted spell);
    the guard makes a repeat harmless. `stmt`: the dialect's insert of (worker_id, project_id, tasks, golds)."""
    gs, new = _GOLD_STREAM.c, stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[gs.worker_id, gs.project_id],
        set_={"tasks": gs.tasks + _ONE, "golds": gs.golds + new.golds,
              "exhausted_at": case((new.golds == _ONE, null()), else_=gs.exhausted_at)},
        where=gs.tasks == position)


_STREAM_COLUMNS = ["worker_id", "project_id", "tasks", "golds"]

# SQLite: the same steps as successive statements, in the transaction the locked read began.
_FINISH_SLOT = _finish_slot(_A)
_STORE_ANSWER = Answer.__table__.insert().values(_answer(
    _A, bindparam("b_item_id"), bindparam("b_value"), bindparam("b_correct"), bindparam("b_client_meta")))
_MARK_SUBMITTED = _mark_submitted(_ASSIGNMENT.c.id == _A, bindparam("b_client_meta"))
_ADVANCE = _advance(dialect_insert("sqlite")(_GOLD_STREAM).values(
    worker_id=bindparam("b_worker_id"), project_id=bindparam("b_project_id"), tasks=_ONE,
    golds=bindparam("b_golds")), bindparam("b_position"))


def _submit_pg() -> HotStatement:
    """PostgreSQL: the submit in one statement. The assignment is locked first (the lock order), then its slot is
    finished only if the lease still owns it, and only then are the assignment and its answers written and the
    worker's gold stream moved on: all of it, or (lease lapsed and its slot taken, or submitted meanwhile) none of
    it. Gold and real tasks run this same statement. The assignment is read by its key alone (its status is tested
    after the lock): with the status in the lookup, the planner may walk the partial index of every live lease."""
    mine = (select(_ASSIGNMENT.c.id, _ASSIGNMENT.c.status, _ASSIGNMENT.c.is_gold, _ASSIGNMENT.c.stream_position)
            .where(_ASSIGNMENT.c.id == _A).with_for_update().cte("mine").prefix_with("MATERIALIZED"))
    live = select(mine.c.id).where(mine.c.status == _literal(AssignmentStatus.LEASED)).scalar_subquery()
    slot = _finish_slot(live).returning(_SLOT.c.assignment_id).cte("slot")
    client_meta = cast(bindparam("b_client_meta"), JSONB)
    done = (_mark_submitted(_ASSIGNMENT.c.id == slot.c.assignment_id, client_meta).returning(_ASSIGNMENT.c.id)
            .cte("done"))
    given = func.jsonb_to_recordset(cast(bindparam("b_answers"), JSONB)).table_valued(
        column("item_id", Integer), column("value", JSONB), column("correct", Boolean)).render_derived(
        name="v", with_types=True)
    row = _answer(done.c.id, given.c.item_id, given.c.value, given.c.correct, client_meta)
    stored = Answer.__table__.insert().from_select(list(row), select(*row.values()).select_from(done, given))
    moved = select(bindparam("b_worker_id", type_=Integer), bindparam("b_project_id", type_=Integer), _ONE,
                   cast(mine.c.is_gold, Integer)).select_from(done, mine).where(mine.c.stream_position.is_not(None))
    advanced = _advance(dialect_insert("postgresql")(_GOLD_STREAM).from_select(_STREAM_COLUMNS, moved),
                        select(mine.c.stream_position).scalar_subquery())
    return HotStatement(select(func.count().label("written")).select_from(done)
                        .add_cte(stored.cte("stored"), advanced.cte("advanced")))


_SUBMIT_PG = _submit_pg()


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
        common = {"b_assignment_id": assignment_id, "b_hit_id": row.hit_id, "now": now, "b_duration_ms": duration,
                  "b_worker_id": worker.id, "b_project_id": row.project_id, "b_version": row.guideline_version}
        if postgres:
            written = _SUBMIT_PG.first(session, {
                **common, "b_client_meta": None if client_meta is None else json.dumps(client_meta),
                "b_answers": json.dumps([{"item_id": k, "value": v, "correct": outcome[k]}
                                         for k, v in values.items()])}).written
            if written == 1:
                events.publish(session, AssignmentSubmitted(assignment_id, worker.id, row.project_id, now))
                return result, False
            continue  # something changed since the read: read again and answer from what is there now
        if session.execute(_FINISH_SLOT, common).rowcount != 1:
            raise _gone(session, assignment_id, row.expires_at, gone)
        session.execute(_STORE_ANSWER, [{**common, "b_client_meta": client_meta, "b_item_id": item_id,
                                         "b_value": value, "b_correct": outcome[item_id]}
                                        for item_id, value in values.items()])
        session.execute(_MARK_SUBMITTED, {**common, "b_client_meta": client_meta})
        if row.stream_position is not None:
            session.execute(_ADVANCE, {**common, "b_golds": int(row.is_gold), "b_position": row.stream_position})
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
