"""The open work a worker can see: projects with a published batch that the engine would serve from now (open, not
expired: the same test as `next_task._checks`) and that has a HIT slot left to claim (free, or leased and lapsed:
what `claim` takes). No flask here.

Only what a worker may see of a project: its title, description, pay terms and qualification requirements; never
items, gold or anyone's answers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from base.money import expected_rate
from market.catalogue.models import Batch, BatchStatus, HitSlot, Project, SlotState
from workers.models import WorkerBlock


@dataclass(frozen=True)
class OpenProject:
    """A project with work open, as a worker sees it, from its newest open batch (the pay terms are per batch)."""

    project_id: int
    title: str
    description: str
    reward_cents: int
    currency: str
    estimated_seconds: int | None
    hourly_rate: tuple[int, str] | None  # (cents per hour, "measured" | "estimated"), base.money.expected_rate
    hits_left: int  # slots claimable now across the project's open batches (an upper bound for one worker)
    requirements: list[dict[str, Any]]  # the open batches' qualification requirements, each once
    gated_batches: dict[int, list[dict[str, Any]]]  # batch id -> its requirements (only gated batches)
    batch_ids: list[int]
    blocked: bool  # a block in force on the worker, from all work or from this project


def _claimable(now: dt.datetime) -> Any:
    # A real (non-gold) slot of the batch that a claim could take now.
    return and_(HitSlot.batch_id == Batch.id,
                or_(HitSlot.state == SlotState.FREE,
                    and_(HitSlot.state == SlotState.LEASED, HitSlot.lease_expires_at <= now)))


def open_projects(session: Session, *, worker_id: int, now: dt.datetime) -> list[OpenProject]:
    """Projects with an open batch that has work left, newest batch first per project, projects by newest batch.
    Projects the worker is blocked from are listed too, marked `blocked`, so the page can say so plainly."""
    left = select(func.count()).where(_claimable(now)).correlate(Batch).scalar_subquery()
    rows = session.execute(
        select(Batch.id, Batch.project_id, Batch.reward_cents, Batch.currency, Batch.estimated_seconds,
               Batch.measured_seconds, Batch.qualification_requirements, left.label("left"),
               Project.title, Project.description)
        .join(Project, Project.id == Batch.project_id)
        .where(Batch.status == BatchStatus.OPEN, Batch.expires_at > now, Batch.platform.is_(None),
               exists().where(_claimable(now)))
        .order_by(Batch.id.desc())).all()
    blocks = session.execute(select(WorkerBlock.project_id).where(
        WorkerBlock.account_id == worker_id, WorkerBlock.in_force(now))).scalars().all()
    everywhere, blocked_from = None in blocks, {p for p in blocks if p is not None}
    grouped: dict[int, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.project_id, []).append(row)
    out = []
    for project_id, batches in grouped.items():
        newest = batches[0]
        requirements: list[dict[str, Any]] = []
        for b in batches:
            for r in b.qualification_requirements or []:
                if r not in requirements:
                    requirements.append(r)
        out.append(OpenProject(
            project_id=project_id, title=newest.title, description=newest.description,
            reward_cents=newest.reward_cents, currency=newest.currency, estimated_seconds=newest.estimated_seconds,
            hourly_rate=expected_rate(newest.reward_cents, measured_seconds=newest.measured_seconds,
                                      estimated_seconds=newest.estimated_seconds),
            hits_left=sum(int(b.left) for b in batches), requirements=requirements,
            gated_batches={b.id: b.qualification_requirements for b in batches if b.qualification_requirements},
            batch_ids=[b.id for b in batches], blocked=everywhere or project_id in blocked_from))
    return out
