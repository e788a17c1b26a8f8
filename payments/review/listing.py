"""Reviewed and awaiting work as requesters and workers see it: a project's assignments by status, with when they
will be auto-approved and what they pay; a worker's own reviewed work (never gold flags, never others')."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.catalogue.models import Assignment, AssignmentStatus, Batch, Project
from market.engine import progress
from payments.models import AssignmentPay, LedgerTransaction

REVIEWED = (AssignmentStatus.APPROVED, AssignmentStatus.REJECTED)


def project_assignments(session: Session, *, project: Project, status: str, after: int | None,
                        limit: int) -> list[dict[str, Any]]:
    """One keyset page (by id) of the project's assignments in `status` ("all": every status), with the pay of
    each: the reward it earns when approved, what it was paid once approved, and when the job approves it."""
    stmt = (select(Assignment, Batch.reward_cents, Batch.currency, Batch.auto_approval_delay_seconds,
                   AssignmentPay.reward_cents, AssignmentPay.top_up_cents)
            .join(Batch, Batch.id == Assignment.batch_id)
            .outerjoin(AssignmentPay, AssignmentPay.assignment_id == Assignment.id)
            .where(Assignment.project_id == project.id).order_by(Assignment.id).limit(limit))
    if status != "all":
        stmt = stmt.where(Assignment.status == AssignmentStatus(status))
    if after is not None:
        stmt = stmt.where(Assignment.id > after)
    out = []
    for a, reward, currency, delay, paid, top_up in session.execute(stmt):
        due = (a.submitted_at + dt.timedelta(seconds=delay)
               if a.status == AssignmentStatus.SUBMITTED and a.submitted_at else None)
        out.append({"id": a.id, "assignment_id": a.id, "worker_id": a.worker_id, "batch_id": a.batch_id,
                    "hit_id": a.hit_id, "is_gold": a.is_gold, "status": a.status.value,
                    "submitted_at": a.submitted_at, "duration_ms": a.duration_ms, "auto_approve_at": due,
                    "reviewed_at": a.reviewed_at, "reviewed_by_id": a.reviewed_by_id,
                    "review_feedback": a.review_feedback, "rejection_reversed_at": a.rejection_reversed_at,
                    "reward": {"cents": reward, "currency": currency},
                    "paid": None if paid is None else {"cents": paid, "currency": currency},
                    "top_up": None if top_up is None else {"cents": top_up, "currency": currency}})
    return out


def worker_reviewed(session: Session, *, worker_id: int, after: int | None, limit: int) -> list[dict[str, Any]]:
    """One keyset page (by id) of the worker's own reviewed work: status, the feedback of a rejection, what it
    paid. Gold flags are never part of it."""
    stmt = (select(Assignment.id, Assignment.status, Assignment.project_id, Project.title, Assignment.submitted_at,
                   Assignment.reviewed_at, Assignment.review_feedback, Assignment.rejection_reversed_at,
                   Batch.currency, AssignmentPay.reward_cents, AssignmentPay.top_up_cents)
            .join(Project, Project.id == Assignment.project_id).join(Batch, Batch.id == Assignment.batch_id)
            .outerjoin(AssignmentPay, AssignmentPay.assignment_id == Assignment.id)
            .where(Assignment.worker_id == worker_id, Assignment.status.in_(REVIEWED))
            .order_by(Assignment.id).limit(limit))
    if after is not None:
        stmt = stmt.where(Assignment.id > after)
    out = []
    for row in session.execute(stmt):
        rejected = row.status == AssignmentStatus.REJECTED
        out.append({"id": row.id, "assignment_id": row.id, "status": row.status.value,
                    "project": {"id": row.project_id, "title": row.title}, "submitted_at": row.submitted_at,
                    "reviewed_at": row.reviewed_at, "feedback": row.review_feedback if rejected else None,
                    "rejection_reversed_at": row.rejection_reversed_at,
                    "reward": None if row.reward_cents is None else {"cents": row.reward_cents,
                                                                      "currency": row.currency},
                    "top_up": None if row.top_up_cents is None else {"cents": row.top_up_cents,
                                                                      "currency": row.currency}})
    return out


SUBMITTED_OR_REVIEWED = (AssignmentStatus.SUBMITTED, *REVIEWED)


def _money(cents: int | None, currency: str) -> dict[str, Any] | None:
    return None if cents is None else {"cents": cents, "currency": currency}


def worker_history(session: Session, *, worker_id: int, before: int | None, limit: int) -> list[dict[str, Any]]:
    """One keyset page, newest first (ids below `before`), of the worker's own submitted and reviewed work: the
    reward it earns (awaiting review) or was paid, a top-up with the reason the worker is told (its ledger
    transaction's), a rejection's feedback. Gold flags are never part of it."""
    stmt = (select(Assignment.id, Assignment.status, Assignment.project_id, Project.title, Assignment.submitted_at,
                   Assignment.reviewed_at, Assignment.review_feedback, Assignment.rejection_reversed_at,
                   Assignment.duration_ms, Batch.currency, Batch.reward_cents.label("offered"),
                   AssignmentPay.reward_cents, AssignmentPay.top_up_cents, LedgerTransaction.reason)
            .join(Project, Project.id == Assignment.project_id).join(Batch, Batch.id == Assignment.batch_id)
            .outerjoin(AssignmentPay, AssignmentPay.assignment_id == Assignment.id)
            .outerjoin(LedgerTransaction, LedgerTransaction.id == AssignmentPay.top_up_transaction_id)
            .where(Assignment.worker_id == worker_id, Assignment.status.in_(SUBMITTED_OR_REVIEWED))
            .order_by(Assignment.id.desc()).limit(limit))
    if before is not None:
        stmt = stmt.where(Assignment.id < before)
    out = []
    for row in session.execute(stmt):
        out.append({"assignment_id": row.id, "status": row.status.value,
                    "project": {"id": row.project_id, "title": row.title}, "submitted_at": row.submitted_at,
                    "reviewed_at": row.reviewed_at, "duration_ms": row.duration_ms,
                    "feedback": row.review_feedback if row.status == AssignmentStatus.REJECTED else None,
                    "rejection_reversed_at": row.rejection_reversed_at,
                    "offered": _money(row.offered, row.currency), "reward": _money(row.reward_cents, row.currency),
                    "top_up": _money(row.top_up_cents, row.currency) if row.top_up_cents else None,
                    "top_up_reason": row.reason if row.top_up_cents else None})
    return out


def worker_earnings_summary(session: Session, *, worker_id: int) -> dict[str, dict[str, int]]:
    """Per currency, what the worker's work earns: "pending" (submitted, not reviewed yet: the batch's reward per
    HIT) and "approved" (rewards and fair-wage top-ups paid on approval). Integer cents."""
    out: dict[str, dict[str, int]] = {}
    pending = (select(Batch.currency, func.sum(Batch.reward_cents)).join(Assignment, Assignment.batch_id == Batch.id)
               .where(Assignment.worker_id == worker_id, Assignment.status == AssignmentStatus.SUBMITTED)
               .group_by(Batch.currency))
    for currency, cents in session.execute(pending):
        out.setdefault(currency, {"pending": 0, "approved": 0})["pending"] = int(cents or 0)
    approved = (select(AssignmentPay.currency,
                       func.sum(AssignmentPay.reward_cents + func.coalesce(AssignmentPay.top_up_cents, 0)))
                .where(AssignmentPay.worker_id == worker_id).group_by(AssignmentPay.currency))
    for currency, cents in session.execute(approved):
        out.setdefault(currency, {"pending": 0, "approved": 0})["approved"] = int(cents or 0)
    return out


def worker_summary(session: Session, *, worker_id: int, now: dt.datetime) -> dict[str, Any]:
    """The worker's answers since UTC midnight, and per currency their pending and approved earnings
    (`worker_earnings_summary`), as the dashboard shows them."""
    since = progress.utc_midnight(now)
    return {"answers_today": progress.answers_since(session, worker_id=worker_id, since=since),
            "earnings": [{"currency": c, **v}
                         for c, v in sorted(worker_earnings_summary(session, worker_id=worker_id).items())]}
