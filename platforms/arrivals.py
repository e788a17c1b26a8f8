"""A platform worker arriving on our work page: their account, and the one task of ours that is their platform
assignment. No flask here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base.errors import Conflict, DomainError, Forbidden, NotFound
from base.money import expected_rate
from base.uow import savepoint
from market.catalogue.models import Assignment, AssignmentStatus, Batch, BatchStatus, GuidelineVersion, Item, Project
from market.engine.next_task import NoWork, Task, load_task, next_assignment
from platforms.base import Arrival
from platforms.models import PlatformAssignment, PlatformBatch, PlatformTask
from workers.models import Account
from workers.service import worker_for_identity


@dataclass(frozen=True)
class Preview:
    """What a platform worker previewing a HIT sees of it: the batch's terms, the guidelines and one example
    item (never a gold one), read-only."""

    batch_id: int
    project_id: int
    open: bool
    title: str
    description: str
    guideline_version: int
    instructions: str
    label_schema: dict[str, Any]
    reward_cents: int
    currency: str
    hourly_rate: tuple[int, str] | None
    example: dict[str, Any] | None


def preview(session: Session, *, batch_id: int) -> Preview:
    """The preview of a batch's HITs. Gold items are never the example: a previewer sees no answer key, and
    collecting previews tells no one which items are gold."""
    row = session.execute(
        select(Batch, Project, GuidelineVersion.instructions)
        .join(Project, Project.id == Batch.project_id)
        .join(GuidelineVersion, (GuidelineVersion.project_id == Project.id)
              & (GuidelineVersion.version == Project.guideline_version))
        .where(Batch.id == batch_id)).one_or_none()
    if row is None:
        raise NotFound("No such batch.")
    batch, project, instructions = row
    example = session.scalar(select(Item.data).where(Item.batch_id == (batch.parent_id or batch.id),
                                                     Item.is_gold.is_(False)).order_by(Item.id).limit(1))
    return Preview(batch.id, project.id, batch.status == BatchStatus.OPEN, project.title, project.description,
                   project.guideline_version, instructions, project.label_schema, batch.reward_cents,
                   batch.currency, expected_rate(batch.reward_cents, measured_seconds=batch.measured_seconds,
                                                 estimated_seconds=batch.estimated_seconds), example)


def burst_of(session: Session, *, batch_id: int, platform: str) -> PlatformBatch:
    """The burst whose batch the page was opened for, on this platform (a page reference names a batch; only a
    burst's batch has a task page on a platform)."""
    burst = session.scalar(select(PlatformBatch).where(PlatformBatch.batch_id == batch_id,
                                                       PlatformBatch.platform == platform))
    if burst is None:
        raise NotFound("This task page does not exist.")
    return burst


@dataclass(frozen=True)
class Arrived:
    worker: Account
    task: Task


class SessionDone(DomainError):
    """A platform session of several tasks (Prolific's) has none left for the worker: it is complete."""

    status = 200
    title = "All done"


def arrive(session: Session, *, arrival: Arrival, burst: PlatformBatch, many: bool, now: dt.datetime,
           gold_key: bytes) -> Arrived:
    """The arriving worker (an account made on first sight) and their task for this platform assignment: the one
    recorded for it (a reload of the frame, or a return after submitting), else the next task the engine leases
    them in the burst's batch, recorded against the platform assignment. With `many` (a session of several
    tasks), a finished task is followed by the next, and `SessionDone` says there is none left for them. The
    engine's rules all apply: qualification, blocks, gold, one live task per worker. Refusals raise the engine's
    errors (NoWork, Forbidden)."""
    assert not arrival.preview and arrival.worker_ref and arrival.assignment_ref
    if arrival.task_ref is not None and not _task_of(session, burst, arrival.task_ref):
        raise NotFound("This task is not one of ours.")
    worker = worker_for_identity(session, platform=arrival.platform, external_id=arrival.worker_ref, now=now)
    recorded = _recorded(session, arrival)
    if recorded is not None and recorded.worker_id != worker.id:
        # Someone opened another worker's platform assignment with their own worker id (or the reverse).
        raise Forbidden("This assignment was started by another worker.")
    if recorded is None or (many and _finished(session, recorded)):
        try:
            task = next_assignment(session, worker=worker, now=now, gold_key=gold_key, project_id=burst.project_id,
                                   batch_id=burst.batch_id)
        except NoWork:
            if recorded is not None:
                raise SessionDone("You have done every task this study has for you.") from None
            raise
        if task.project_id != burst.project_id:
            raise Conflict("You have a task of another project open: finish or return it first.")
        seq = 0 if recorded is None else recorded.seq + 1
        recorded = _record(session, arrival, burst=burst, seq=seq, worker=worker, assignment_id=task.id, now=now)
        if recorded.worker_id != worker.id:
            raise Forbidden("This assignment was started by another worker.")
    return Arrived(worker, load_task(session, worker_id=worker.id, assignment_id=recorded.assignment_id))


def _task_of(session: Session, burst: PlatformBatch, task_ref: str) -> bool:
    """Whether the platform's task is the burst's (before the burst's tasks are recorded, any is)."""
    refs = set(session.scalars(select(PlatformTask.external_id).where(PlatformTask.platform_batch_id == burst.id)))
    return not refs or task_ref in refs


def _finished(session: Session, recorded: PlatformAssignment) -> bool:
    status = session.scalar(select(Assignment.status).where(Assignment.id == recorded.assignment_id))
    return status is not None and status != AssignmentStatus.LEASED


def _recorded(session: Session, arrival: Arrival) -> PlatformAssignment | None:
    """The platform assignment's latest task of ours."""
    return session.scalar(select(PlatformAssignment).where(
        PlatformAssignment.platform == arrival.platform, PlatformAssignment.external_id == arrival.assignment_ref)
        .order_by(PlatformAssignment.seq.desc()).limit(1))


def _record(session: Session, arrival: Arrival, *, burst: PlatformBatch, seq: int, worker: Account,
            assignment_id: int, now: dt.datetime) -> PlatformAssignment:
    existing = session.scalar(select(PlatformAssignment).where(PlatformAssignment.assignment_id == assignment_id))
    if existing is not None:
        if existing.external_id == arrival.assignment_ref:
            return existing
        # The worker's live task is already another platform assignment's (they accepted two of our HITs at once).
        raise Conflict("Your open task belongs to another of your assignments there: finish or return it first.")
    row = PlatformAssignment(platform=arrival.platform, external_id=arrival.assignment_ref, seq=seq,
                             external_task_id=arrival.task_ref, external_worker_id=arrival.worker_ref,
                             assignment_id=assignment_id, worker_id=worker.id, platform_batch_id=burst.id,
                             created_at=now)
    try:
        with savepoint(session):
            session.add(row)
            session.flush()
    except IntegrityError:
        # A racing load of the same page recorded it first.
        raced = _recorded(session, arrival)
        if raced is not None:
            return raced
        raise Conflict("Your open task belongs to another of your assignments there: finish or return it "
                       "first.") from None
    return row


def _refs(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="crowdmarket.external-question")


def page_ref(secret: str, *, batch_id: int) -> str:
    """Our signed reference to a burst's batch in its task page URL, so only URLs we generated open anything: no
    one enumerates projects through the page. (Signed, not secret: it holds nothing a worker may not read; a
    completion code is shown only once a session is done.)"""
    return _refs(secret).dumps({"batch": batch_id})


def read_ref(secret: str, ref: str | None) -> int:
    try:
        return int(_refs(secret).loads(ref or "")["batch"])
    except (BadSignature, KeyError, TypeError, ValueError):
        raise NotFound("This task page does not exist.") from None
