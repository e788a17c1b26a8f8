"""The assignment engine: hand a worker the next HIT, take their answers, take a HIT back. No flask here.

Invariants, each defended by the database as well as by this code:
- an item never has more answers plus live leases than its HIT's slots (one slot row per place, claimed with a
  conditional row lock: FOR UPDATE SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite);
- a worker never holds or answers a HIT twice (partial unique index on assignment(hit_id, worker_id));
- a lapsed lease frees its slot by itself (the claim query treats it as free; the optional sweeper only tidies).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.labels import AnswerError, validate_answer
from market.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    GuidelineVersion,
    Hit,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from market.problems import Conflict, DomainError, Forbidden, Gone, InvalidInput, NotFound
from workers.models import Account
from workers.service import active_blocks

ACTIVE = (AssignmentStatus.LEASED, AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED,
          AssignmentStatus.REJECTED)
DONE = (AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED)
_CLAIM_TRIES = 3


class NoWork(DomainError):
    status = 404
    title = "No task available"


def _ms(delta: dt.timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


def _open_batch_ids(session: Session, *, now: dt.datetime, project_id: int | None,
                    blocked_projects: set[int]) -> list[int]:
    stmt = select(Batch.id).where(Batch.status == BatchStatus.OPEN, Batch.expires_at > now)
    if project_id is not None:
        stmt = stmt.where(Batch.project_id == project_id)
    if blocked_projects:
        stmt = stmt.where(Batch.project_id.not_in(blocked_projects))
    return list(session.scalars(stmt))


def _live_lease(session: Session, worker_id: int, now: dt.datetime, project_id: int | None) -> Assignment | None:
    stmt = select(Assignment).where(Assignment.worker_id == worker_id, Assignment.status == AssignmentStatus.LEASED,
                                    Assignment.expires_at > now).order_by(Assignment.id).limit(1)
    if project_id is not None:
        stmt = stmt.where(Assignment.project_id == project_id)
    return session.scalar(stmt)


def next_assignment(session: Session, *, worker: Account, now: dt.datetime,
                    project_id: int | None = None) -> Assignment:
    """Lease the next HIT to the worker; a worker with a live lease gets that one again (no hoarding)."""
    blocks = active_blocks(session, account_id=worker.id, now=now)
    if any(b.project_id is None for b in blocks):
        raise Forbidden("You are blocked from all work.", reason="blocked")
    blocked_projects = {b.project_id for b in blocks if b.project_id is not None}
    if project_id is not None:
        if session.get(Project, project_id) is None:
            raise NotFound(f"Project {project_id} not found.")
        if project_id in blocked_projects:
            raise Forbidden("You are blocked from this project.", reason="blocked")
    held = _live_lease(session, worker.id, now, project_id)
    if held is not None:
        return held
    for attempt in range(_CLAIM_TRIES):
        try:
            return _claim(session, worker, now, project_id, blocked_projects)
        except IntegrityError:
            # Two claims by one worker raced for slots of the same HIT; the unique index stopped the second.
            session.rollback()
            if attempt == _CLAIM_TRIES - 1:
                raise Conflict("Too many simultaneous requests for work; try again.") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _claim(session: Session, worker: Account, now: dt.datetime, project_id: int | None,
           blocked_projects: set[int]) -> Assignment:
    # The worker's own lapsed leases end now, so the HITs they held can be offered to them again.
    session.execute(update(Assignment).where(
        Assignment.worker_id == worker.id, Assignment.status == AssignmentStatus.LEASED,
        Assignment.expires_at <= now).values(status=AssignmentStatus.EXPIRED))
    batch_ids = _open_batch_ids(session, now=now, project_id=project_id, blocked_projects=blocked_projects)
    if not batch_ids:
        session.commit()
        raise NoWork("No batch is open for work right now (none published, or all paused, cancelled or expired).",
                     reason="no_open_batches")
    mine = exists().where(Assignment.hit_id == HitSlot.hit_id, Assignment.worker_id == worker.id,
                          Assignment.status.in_(ACTIVE))
    stmt = (select(HitSlot.id, HitSlot.hit_id, HitSlot.batch_id, HitSlot.assignment_id)
            .where(HitSlot.batch_id.in_(batch_ids), literal_column("hit_slot.state <> 'done'"),
                   or_(HitSlot.state == SlotState.FREE, HitSlot.lease_expires_at <= now), ~mine)
            .order_by(HitSlot.neg_priority, HitSlot.slot_no, HitSlot.id)
            .limit(1).with_for_update(skip_locked=True))
    row = session.execute(stmt).first()
    if row is None:
        session.commit()
        raise NoWork("Every open HIT is fully assigned or already done by you; try again later.",
                     reason="all_assigned")
    slot_id, hit_id, batch_id, lapsed_id = row
    if lapsed_id is not None:  # a lease that ran out: its late submit will get 410
        session.execute(update(Assignment).where(Assignment.id == lapsed_id,
                                                 Assignment.status == AssignmentStatus.LEASED)
                        .values(status=AssignmentStatus.EXPIRED))
    batch = session.get_one(Batch, batch_id)
    version = session.scalar(select(Project.guideline_version).where(Project.id == batch.project_id))
    assignment = Assignment(hit_id=hit_id, project_id=batch.project_id, worker_id=worker.id,
                            status=AssignmentStatus.LEASED, guideline_version=version, leased_at=now,
                            expires_at=now + dt.timedelta(seconds=batch.assignment_duration_seconds))
    session.add(assignment)
    session.flush()
    session.execute(update(HitSlot).where(HitSlot.id == slot_id).values(
        state=SlotState.LEASED, assignment_id=assignment.id, lease_expires_at=assignment.expires_at))
    session.commit()
    return assignment


def get_assignment(session: Session, *, worker: Account, assignment_id: int, lock: bool = False) -> Assignment:
    stmt = select(Assignment).where(Assignment.id == assignment_id)
    if lock:
        stmt = stmt.with_for_update()
    assignment = session.scalar(stmt)
    if assignment is None or assignment.worker_id != worker.id:
        raise NotFound(f"Assignment {assignment_id} not found.")
    return assignment


@dataclass
class TaskView:
    """What the worker sees of an assignment: never gold flags, answers, or anyone else's work."""

    assignment: Assignment
    project: Project
    batch: Batch
    instructions: str
    items: list[dict[str, Any]]
    answers: dict[int, Any] | None


def task_view(session: Session, assignment: Assignment) -> TaskView:
    """The worker-facing view of an assignment, with the worker's own answers once submitted."""
    project = session.get_one(Project, assignment.project_id)
    batch = session.scalar(select(Batch).join(Hit, Hit.batch_id == Batch.id).where(Hit.id == assignment.hit_id))
    instructions = session.scalar(select(GuidelineVersion.instructions).where(
        GuidelineVersion.project_id == project.id, GuidelineVersion.version == assignment.guideline_version)) or ""
    items = [{"id": i, "data": d} for i, d in session.execute(
        select(Item.id, Item.data).where(Item.hit_id == assignment.hit_id).order_by(Item.id))]
    answers = None
    if assignment.status in DONE:
        answers = _stored_answers(session, assignment.id)
    assert batch is not None
    return TaskView(assignment, project, batch, instructions, items, answers)


def _stored_answers(session: Session, assignment_id: int) -> dict[int, Any]:
    rows = session.execute(select(Answer.item_id, Answer.value).where(Answer.assignment_id == assignment_id))
    return {item_id: value for item_id, value in rows}


def _validated(session: Session, assignment: Assignment, answers: list[dict[str, Any]]) -> dict[int, Any]:
    schema = session.scalar(select(Project.label_schema).where(Project.id == assignment.project_id))
    expected = list(session.scalars(select(Item.id).where(Item.hit_id == assignment.hit_id).order_by(Item.id)))
    errors: dict[str, list[str]] = {}
    values: dict[int, Any] = {}
    for entry in answers:
        item_id = entry["item_id"]
        if item_id not in expected:
            errors[str(item_id)] = ["is not an item of this assignment"]
        elif item_id in values:
            errors[str(item_id)] = ["answered more than once"]
        else:
            try:
                values[item_id] = validate_answer(schema, entry["answer"])
            except AnswerError as exc:
                errors[str(item_id)] = [f"answer {exc}"]
    for item_id in expected:
        if item_id not in values and str(item_id) not in errors:
            errors[str(item_id)] = ["missing an answer"]
    if errors:
        raise InvalidInput("Some answers are invalid; nothing was saved.", errors={"answers": errors})
    return values


def submit(session: Session, *, worker: Account, assignment_id: int, answers: list[dict[str, Any]],
           now: dt.datetime, client_meta: dict[str, Any] | None = None) -> tuple[Assignment, bool]:
    """Store one answer per item; returns (assignment, replayed). Repeating a submit is harmless."""
    assignment = get_assignment(session, worker=worker, assignment_id=assignment_id, lock=True)
    values = _validated(session, assignment, answers)
    if assignment.status in DONE:
        if _stored_answers(session, assignment.id) != values:
            raise Conflict("This assignment was submitted already with different answers.",
                           errors={"answers": ["differ from the submitted ones"]})
        session.commit()
        return assignment, True
    if assignment.status == AssignmentStatus.RETURNED:
        raise Conflict("This assignment was returned; ask for new work.", reason="returned")
    if assignment.status == AssignmentStatus.EXPIRED or now >= assignment.expires_at:
        _expire(session, assignment)
        raise Gone("The lease on this assignment ran out; its answers were not saved.", reason="expired",
                   expired_at=assignment.expires_at.isoformat())
    duration = _ms(now - assignment.leased_at)
    session.execute(Answer.__table__.insert(), [
        {"assignment_id": assignment.id, "item_id": item_id, "worker_id": worker.id,
         "project_id": assignment.project_id, "value": value, "guideline_version": assignment.guideline_version,
         "submitted_at": now, "duration_ms": duration, "client_meta": client_meta}
        for item_id, value in values.items()])
    assignment.status = AssignmentStatus.SUBMITTED
    assignment.submitted_at = now
    assignment.duration_ms = duration
    assignment.client_meta = client_meta
    session.execute(update(HitSlot).where(HitSlot.assignment_id == assignment.id)
                    .values(state=SlotState.DONE, lease_expires_at=None))
    session.commit()
    return assignment, False


def _expire(session: Session, assignment: Assignment) -> None:
    if assignment.status == AssignmentStatus.LEASED:
        assignment.status = AssignmentStatus.EXPIRED
    session.commit()


def return_assignment(session: Session, *, worker: Account, assignment_id: int, now: dt.datetime) -> Assignment:
    """Give a HIT back: its slot is free at once, no penalty; the time spent is recorded."""
    assignment = get_assignment(session, worker=worker, assignment_id=assignment_id, lock=True)
    if assignment.status == AssignmentStatus.RETURNED:
        session.commit()
        return assignment
    if assignment.status in DONE:
        raise Conflict("This assignment was submitted; it cannot be returned.", reason="submitted")
    if assignment.status == AssignmentStatus.EXPIRED or now >= assignment.expires_at:
        _expire(session, assignment)
        raise Gone("The lease on this assignment ran out already.", reason="expired")
    assignment.status = AssignmentStatus.RETURNED
    assignment.returned_at = now
    assignment.duration_ms = _ms(now - assignment.leased_at)
    session.execute(update(HitSlot).where(HitSlot.assignment_id == assignment.id, HitSlot.state == SlotState.LEASED)
                    .values(state=SlotState.FREE, assignment_id=None, lease_expires_at=None))
    session.commit()
    return assignment


def sweep_expired(session: Session, *, now: dt.datetime) -> int:
    """Tidy lapsed leases (mark them expired, free their slots). Optional: claims never wait for it."""
    lapsed = list(session.scalars(select(Assignment.id).where(
        Assignment.status == AssignmentStatus.LEASED, Assignment.expires_at <= now)))
    if lapsed:
        session.execute(update(HitSlot).where(HitSlot.assignment_id.in_(lapsed), HitSlot.state == SlotState.LEASED)
                        .values(state=SlotState.FREE, assignment_id=None, lease_expires_at=None))
        session.execute(update(Assignment).where(Assignment.id.in_(lapsed),
                                                 Assignment.status == AssignmentStatus.LEASED)
                        .values(status=AssignmentStatus.EXPIRED))
    session.commit()
    return len(lapsed)
