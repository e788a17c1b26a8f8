"""A project's health in figures, for the ops console and the requesters' pages: gold coverage, block and
rejection rates, submitted work awaiting review per batch, and the batches of many projects at once. No flask here;
every function takes the session (and `now` where blocks expire) and only reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from market.catalogue.models import Assignment, AssignmentStatus, Batch, Item
from workers.models import WorkerBlock

# Above these a project is listed with a warning; below the sample sizes the rate says too little to warn on.
HIGH_BLOCK_RATE = 0.10
HIGH_REJECTION_RATE = 0.20
MIN_WORKERS_FOR_BLOCK_RATE = 3
MIN_REVIEWED_FOR_REJECTION_RATE = 10


@dataclass(frozen=True)
class ProjectRates:
    """Counts behind a project's rates: workers who took its work and those of them blocked now (from the project
    or from all work), reviewed and rejected assignments, gold items and gold tasks."""

    active_workers: int = 0
    blocked_workers: int = 0
    reviewed: int = 0
    rejected: int = 0
    items: int = 0
    gold_items: int = 0
    tasks: int = 0
    gold_tasks: int = 0

    @property
    def block_rate(self) -> float | None:
        return self.blocked_workers / self.active_workers if self.active_workers else None

    @property
    def rejection_rate(self) -> float | None:
        return self.rejected / self.reviewed if self.reviewed else None

    @property
    def gold_share(self) -> float | None:
        """The share of tasks served that were gold."""
        return self.gold_tasks / self.tasks if self.tasks else None

    def warnings(self) -> list[str]:
        out = []
        if (self.active_workers >= MIN_WORKERS_FOR_BLOCK_RATE and self.block_rate is not None
                and self.block_rate >= HIGH_BLOCK_RATE):
            out.append(f"High block rate: {self.blocked_workers} of {self.active_workers} workers are blocked "
                       f"({self.block_rate:.0%}, warning at {HIGH_BLOCK_RATE:.0%}).")
        if (self.reviewed >= MIN_REVIEWED_FOR_REJECTION_RATE and self.rejection_rate is not None
                and self.rejection_rate >= HIGH_REJECTION_RATE):
            out.append(f"High rejection rate: {self.rejected} of {self.reviewed} reviewed assignments rejected "
                       f"({self.rejection_rate:.0%}, warning at {HIGH_REJECTION_RATE:.0%}).")
        return out


def project_rates(session: Session, project_ids: Sequence[int], *, now: dt.datetime) -> dict[int, ProjectRates]:
    """`ProjectRates` of each project, by id: four grouped queries however many projects."""
    ids = sorted(set(project_ids))
    if not ids:
        return {}
    counts: dict[int, dict[str, int]] = {p: {} for p in ids}
    for pid, workers, tasks, gold_tasks, reviewed, rejected in session.execute(
            select(Assignment.project_id, func.count(Assignment.worker_id.distinct()), func.count(),
                   func.count().filter(Assignment.is_gold.is_(True)),
                   func.count().filter(Assignment.status.in_((AssignmentStatus.APPROVED, AssignmentStatus.REJECTED))),
                   func.count().filter(Assignment.status == AssignmentStatus.REJECTED))
            .where(Assignment.project_id.in_(ids)).group_by(Assignment.project_id)):
        counts[pid].update(active_workers=int(workers), tasks=int(tasks), gold_tasks=int(gold_tasks),
                           reviewed=int(reviewed), rejected=int(rejected))
    for pid, items, gold in session.execute(
            select(Item.project_id, func.count(), func.count().filter(Item.is_gold.is_(True)))
            .where(Item.project_id.in_(ids)).group_by(Item.project_id)):
        counts[pid].update(items=int(items) - int(gold), gold_items=int(gold))
    # A worker of the project counts as blocked when a block in force covers it: the project's own, or all work.
    worked = select(Assignment.project_id, Assignment.worker_id).where(Assignment.project_id.in_(ids)).distinct() \
        .subquery()
    for pid, blocked in session.execute(
            select(worked.c.project_id, func.count(worked.c.worker_id.distinct()))
            .join(WorkerBlock, WorkerBlock.account_id == worked.c.worker_id)
            .where(WorkerBlock.in_force(now),
                   or_(WorkerBlock.project_id.is_(None), WorkerBlock.project_id == worked.c.project_id))
            .group_by(worked.c.project_id)):
        counts[pid]["blocked_workers"] = int(blocked)
    return {pid: ProjectRates(**c) for pid, c in counts.items()}


def batches_of(session: Session, project_ids: Sequence[int]) -> dict[int, list[Batch]]:
    """Each project's batches in id order, by project id (one query)."""
    out: dict[int, list[Batch]] = {p: [] for p in project_ids}
    if not project_ids:
        return out
    for batch in session.scalars(select(Batch).where(Batch.project_id.in_(list(project_ids))).order_by(Batch.id)):
        out[batch.project_id].append(batch)
    return out


def awaiting_review(session: Session, project_id: int) -> dict[int, int]:
    """Submitted assignments awaiting review per batch of the project (batches with none are left out)."""
    return {bid: int(n) for bid, n in session.execute(
        select(Assignment.batch_id, func.count())
        .where(Assignment.project_id == project_id, Assignment.status == AssignmentStatus.SUBMITTED)
        .group_by(Assignment.batch_id))}
