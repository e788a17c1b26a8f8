"""A platform worker arriving on our work page: their account, and the one task of ours that is their platform
assignment. No flask here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base.errors import Conflict, Forbidden, NotFound
from base.money import expected_rate
from base.uow import savepoint
from market.catalogue.models import Batch, BatchStatus, GuidelineVersion, Item, Project
from market.engine.next_task import Task, load_task, next_assignment
from platforms.base import Arrival
from platforms.models import PlatformAssignment
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
    example = session.scalar(select(Item.data).where(Item.batch_id == batch_id, Item.is_gold.is_(False))
                             .order_by(Item.id).limit(1))
    return Preview(batch.id, project.id, batch.status == BatchStatus.OPEN, project.title, project.description,
                   project.guideline_version, instructions, project.label_schema, batch.reward_cents,
                   batch.currency, expected_rate(batch.reward_cents, measured_seconds=batch.measured_seconds,
                                                 estimated_seconds=batch.estimated_seconds), example)


def project_of(session: Session, *, batch_id: int) -> int:
    project_id = session.scalar(select(Batch.project_id).where(Batch.id == batch_id))
    if project_id is None:
        raise NotFound("No such batch.")
    return project_id


@dataclass(frozen=True)
class Arrived:
    worker: Account
    task: Task


def arrive(session: Session, *, arrival: Arrival, project_id: int, now: dt.datetime, gold_key: bytes) -> Arrived:
    """The arriving worker (an account made on first sight) and their task for this platform assignment: the one
    recorded for it (a reload of the frame, or a return after submitting), else the next task the engine leases
    them in the project, recorded against the platform assignment. The engine's rules all apply: qualification,
    blocks, gold, one live task per worker. Refusals raise the engine's errors (NoWork, Forbidden)."""
    assert not arrival.preview and arrival.worker_ref and arrival.assignment_ref
    worker = worker_for_identity(session, platform=arrival.platform, external_id=arrival.worker_ref, now=now)
    recorded = _recorded(session, arrival)
    if recorded is None:
        task = next_assignment(session, worker=worker, now=now, gold_key=gold_key, project_id=project_id)
        if task.project_id != project_id:
            raise Conflict("You have a task of another project open: finish or return it first.")
        recorded = _record(session, arrival, worker=worker, assignment_id=task.id, now=now)
    if recorded.worker_id != worker.id:
        # Someone opened another worker's platform assignment with their own worker id (or the reverse).
        raise Forbidden("This assignment was started by another worker.")
    return Arrived(worker, load_task(session, worker_id=worker.id, assignment_id=recorded.assignment_id))


def _recorded(session: Session, arrival: Arrival) -> PlatformAssignment | None:
    return session.scalar(select(PlatformAssignment).where(PlatformAssignment.platform == arrival.platform,
                                                           PlatformAssignment.external_id == arrival.assignment_ref))


def _record(session: Session, arrival: Arrival, *, worker: Account, assignment_id: int,
            now: dt.datetime) -> PlatformAssignment:
    row = PlatformAssignment(platform=arrival.platform, external_id=arrival.assignment_ref,
                             external_task_id=arrival.task_ref, external_worker_id=arrival.worker_ref,
                             assignment_id=assignment_id, worker_id=worker.id, created_at=now)
    try:
        with savepoint(session):
            session.add(row)
            session.flush()
    except IntegrityError:
        # A racing load of the same frame recorded it first; or the worker's live task is already another
        # platform assignment's (they accepted two of our HITs at once): that one must be finished first.
        raced = _recorded(session, arrival)
        if raced is not None:
            return raced
        raise Conflict("Your open task belongs to another of your assignments there: finish or return it "
                       "first.") from None
    return row
