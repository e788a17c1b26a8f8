"""Approving and rejecting submitted work, and paying for it, in a few statements however many assignments.

Only `submitted` assignments move, by one conditional UPDATE on their status (`status = 'submitted'`): of two
concurrent reviews of one assignment, the second finds it approved (or rejected) and skips it, so work is paid at
most once; the reward's idempotency key (`reward:<assignment id>`) and AssignmentPay's primary key say the same
again in the database. Lock order, always: assignments (by id), then the batches' holds (by batch id), then
ledger accounts (`ledger.post`, by account id): concurrent reviewers queue up and never deadlock.

Approval pays `batch.reward_cents` and the batch's fee model's fee, one REWARD transaction per assignment, posted
in bulk: drawn on the batch's open hold (legs out of escrow), or, when the batch has no open hold (closed, or
published before payments existed), straight from the requester's available money. Money short: 402
(`InsufficientFunds`), raised before the unit of work commits, so the whole call changes nothing.

Who may review: the project's owner, or ops (any project). Assignments of other projects are reported as
`not_found`, never as someone else's (the house rule: 404, never 403, for what is not yours).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Row, select, update
from sqlalchemy.orm import Session

from base import events
from base.errors import Conflict, InvalidInput, NotFound
from base.events import AssignmentsReviewed
from base.identity import Actor, Role
from market.catalogue.models import Assignment, AssignmentStatus, Batch, Hit, Project
from payments import ledger
from payments.ledger import Posting
from payments.models import AssignmentPay, HoldState, TransactionKind
from payments.wage.costs import fees_of

MAX_FEEDBACK = 1024
REVERSAL_WINDOW = dt.timedelta(days=30)
_A = Assignment.__table__
_COLUMNS = (_A.c.id, _A.c.batch_id, _A.c.project_id, _A.c.worker_id, _A.c.hit_id, _A.c.duration_ms)
_ID_CHUNK = 5000  # ids per IN list: under SQLite's and PostgreSQL's bound-parameter limits


class Skip(enum.StrEnum):
    """Why an assignment named in a review was not reviewed."""

    NOT_FOUND = "not_found"  # no such assignment, or not in a project of yours
    NOT_SUBMITTED = "not_submitted"  # still leased, returned or expired: nothing to review
    ALREADY_APPROVED = "already_approved"
    ALREADY_REJECTED = "already_rejected"


@dataclass
class ReviewResult:
    """What one review call did: the assignments it approved (or rejected), and those it skipped with why."""

    approved: bool
    reviewed: list[int] = field(default_factory=list)
    skipped: dict[int, Skip] = field(default_factory=dict)
    # Money moved, per currency: rewards to workers and fees (nothing for a rejection).
    rewards: dict[str, int] = field(default_factory=dict)
    fees: dict[str, int] = field(default_factory=dict)


# --- who may review what ------------------------------------------------------------------------------------

def _may_review(actor: Actor | None, owner_id: int) -> bool:
    return actor is None or actor.role == Role.OPS or (actor.role == Role.REQUESTER and actor.id == owner_id)


def reviewable_project(session: Session, actor: Actor | None, project_id: int) -> Project:
    """The project if `actor` may review its work (owner, ops, or the job: None); 404 otherwise."""
    project = session.get(Project, project_id)
    if project is None or not _may_review(actor, project.owner_id):
        raise NotFound(f"Project {project_id} not found.")
    return project


def _scope(session: Session, *, actor: Actor | None, assignment_ids: Sequence[int] | None, batch_id: int | None,
           worker_ids: Sequence[int] | None, project_id: int | None) -> list[ColumnElement[bool]]:
    """The review's selection as SQL criteria, after checking the actor may review the project or batch named."""
    if sum(x is not None for x in (assignment_ids, batch_id, worker_ids)) != 1:
        raise InvalidInput("Name the work to review: assignment ids, a batch, or workers of a project.",
                           errors={"_schema": ["give exactly one of assignment_ids, batch_id, worker_ids"]})
    crit: list[ColumnElement[bool]] = []
    if project_id is not None:
        reviewable_project(session, actor, project_id)
        crit.append(_A.c.project_id == project_id)
    if batch_id is not None:
        batch = session.get(Batch, batch_id)
        if batch is None or (project_id is not None and batch.project_id != project_id):
            raise NotFound(f"Batch {batch_id} not found.")
        reviewable_project(session, actor, batch.project_id)
        crit.append(_A.c.batch_id == batch_id)
    elif worker_ids is not None:
        if project_id is None:
            raise InvalidInput("Reviewing by worker needs the project.", errors={"project_id": ["required"]})
        crit.append(_A.c.worker_id.in_(sorted(set(worker_ids))))
    else:
        crit.append(_A.c.id.in_(sorted(set(assignment_ids or ()))))
        if actor is not None and actor.role != Role.OPS:
            crit.append(_A.c.project_id.in_(select(Project.id).where(Project.owner_id == actor.id)))
    return crit


def check_feedback(feedback: Any) -> str:
    """Rejection feedback, which the worker sees: 1 to 1,024 characters, not only blanks."""
    if not isinstance(feedback, str) or not feedback.strip() or len(feedback) > MAX_FEEDBACK:
        raise InvalidInput(f"A rejection needs feedback for the worker: 1 to {MAX_FEEDBACK} characters.",
                           errors={"feedback": [f"1 to {MAX_FEEDBACK} characters, not only blanks"]})
    return feedback


# --- the services -------------------------------------------------------------------------------------------

def approve(session: Session, *, actor: Actor | None, now: dt.datetime, assignment_ids: Sequence[int] | None = None,
            batch_id: int | None = None, worker_ids: Sequence[int] | None = None,
            project_id: int | None = None) -> ReviewResult:
    """Approve submitted work (by ids, every submitted assignment of a batch, or of given workers in a project)
    and pay it; `actor` None is the auto-approval job. 402 when the requester's money is short."""
    crit = _scope(session, actor=actor, assignment_ids=assignment_ids, batch_id=batch_id, worker_ids=worker_ids,
                  project_id=project_id)
    return review_where(session, crit, approve=True, actor=actor, now=now, named=assignment_ids)


def reject(session: Session, *, actor: Actor | None, now: dt.datetime, feedback: str,
           assignment_ids: Sequence[int] | None = None, batch_id: int | None = None,
           worker_ids: Sequence[int] | None = None, project_id: int | None = None) -> ReviewResult:
    """Reject submitted work with feedback the worker sees (1-1,024 characters); nothing is paid."""
    feedback = check_feedback(feedback)
    crit = _scope(session, actor=actor, assignment_ids=assignment_ids, batch_id=batch_id, worker_ids=worker_ids,
                  project_id=project_id)
    return review_where(session, crit, approve=False, actor=actor, now=now, named=assignment_ids,
                        feedback=feedback)


def review_where(session: Session, crit: Sequence[ColumnElement[bool]], *, approve: bool, actor: Actor | None,
                 now: dt.datetime, named: Sequence[int] | None = None, feedback: str | None = None) -> ReviewResult:
    """Approve (and pay) or reject every submitted assignment matching `crit` (criteria on the assignment
    table); `named`: the ids the caller asked for, to say why those not reviewed were skipped."""
    where = (*crit, _A.c.status == AssignmentStatus.SUBMITTED.value)
    if session.get_bind().dialect.name == "postgresql":
        # Lock the rows in id order first (LockRows above the sort), so overlapping reviews never deadlock; FOR NO
        # KEY UPDATE, the lock the UPDATE takes anyway (it lets foreign keys to the rows be checked meanwhile).
        where = (_A.c.id.in_(select(_A.c.id).where(*where).order_by(_A.c.id).with_for_update(key_share=True)),
                 _A.c.status == AssignmentStatus.SUBMITTED.value)
    status = AssignmentStatus.APPROVED if approve else AssignmentStatus.REJECTED
    rows = session.execute(update(_A).where(*where).values(
        status=status.value, reviewed_at=now, reviewed_by_id=actor.id if actor else None,
        review_feedback=None if approve else feedback).returning(*_COLUMNS)).all()
    rows.sort(key=lambda r: r.id)
    result = ReviewResult(approved=approve, reviewed=[r.id for r in rows])
    if named is not None:
        result.skipped = _why_skipped(session, set(named) - set(result.reviewed), actor)
    if approve and rows:
        result.rewards, result.fees = pay(session, rows, actor_id=actor.id if actor else None, now=now)
    if rows:
        events.publish(session, AssignmentsReviewed(assignment_ids=tuple(result.reviewed), approved=approve, at=now))
    session.flush()
    return result


def reverse_rejection(session: Session, *, actor: Actor, now: dt.datetime, assignment_id: int,
                      project_id: int | None = None) -> ReviewResult:
    """Reverse a rejection within 30 days of it: the assignment is approved and paid like an approval (a repeat
    is a replay that pays nothing more). 409 for work that is not rejected, or rejected more than 30 days ago."""
    if project_id is not None:
        reviewable_project(session, actor, project_id)
    found = session.execute(select(_A.c.status, _A.c.reviewed_at, _A.c.rejection_reversed_at, Project.owner_id,
                                   _A.c.project_id).join(Project, Project.id == _A.c.project_id)
                            .where(_A.c.id == assignment_id).with_for_update(of=_A, key_share=True)).first()
    if found is None or not _may_review(actor, found.owner_id) or \
            (project_id is not None and found.project_id != project_id):
        raise NotFound(f"Assignment {assignment_id} not found.")
    result = ReviewResult(approved=True)
    if found.status == AssignmentStatus.APPROVED and found.rejection_reversed_at is not None:
        result.skipped = {assignment_id: Skip.ALREADY_APPROVED}
        return result
    if found.status != AssignmentStatus.REJECTED:
        raise Conflict(f"Assignment {assignment_id} is {found.status}, not rejected: there is nothing to reverse.",
                       errors={"status": [f"is {found.status}"]})
    if now > found.reviewed_at + REVERSAL_WINDOW:
        raise Conflict(f"Assignment {assignment_id} was rejected more than 30 days ago ({found.reviewed_at:%Y-%m-%d}):"
                       " a rejection can be reversed within 30 days of it.",
                       errors={"reviewed_at": ["more than 30 days ago"]})
    rows = session.execute(update(_A).where(_A.c.id == assignment_id,
                                            _A.c.status == AssignmentStatus.REJECTED.value)
                           .values(status=AssignmentStatus.APPROVED.value, rejection_reversed_at=now)
                           .returning(*_COLUMNS)).all()
    result.reviewed = [r.id for r in rows]
    if rows:
        result.rewards, result.fees = pay(session, rows, actor_id=actor.id, now=now,
                                          reason="Rejection reversed: reward")
        events.publish(session, AssignmentsReviewed(assignment_ids=tuple(result.reviewed), approved=True, at=now))
    session.flush()
    return result


def _why_skipped(session: Session, ids: set[int], actor: Actor | None) -> dict[int, Skip]:
    out = {i: Skip.NOT_FOUND for i in ids}
    ordered = sorted(ids)
    for start in range(0, len(ordered), _ID_CHUNK):
        stmt = (select(_A.c.id, _A.c.status, Project.owner_id).join(Project, Project.id == _A.c.project_id)
                .where(_A.c.id.in_(ordered[start:start + _ID_CHUNK])))
        for aid, status, owner in session.execute(stmt):
            if not _may_review(actor, owner):
                continue
            out[aid] = {AssignmentStatus.APPROVED: Skip.ALREADY_APPROVED,
                        AssignmentStatus.REJECTED: Skip.ALREADY_REJECTED}.get(AssignmentStatus(status),
                                                                             Skip.NOT_SUBMITTED)
    return out


# --- paying -------------------------------------------------------------------------------------------------

def pay(session: Session, rows: Sequence[Row[Any]], *, actor_id: int | None, now: dt.datetime,
        reason: str = "Reward") -> tuple[dict[str, int], dict[str, int]]:
    """Pay approved assignments (rows of id, batch_id, project_id, worker_id, hit_id, duration_ms): one REWARD
    transaction each, drawn on its batch's open hold or from the requester's available money; one AssignmentPay
    row each. Returns (rewards, fees) by currency."""
    by_batch: defaultdict[int, list[Row[Any]]] = defaultdict(list)
    for row in rows:
        by_batch[row.batch_id].append(row)
    batches = {b.id: (b, owner) for b, owner in session.execute(
        select(Batch, Project.owner_id).join(Project, Project.id == Batch.project_id)
        .where(Batch.id.in_(sorted(by_batch))))}
    models = {bid: fees_of(b) for bid, (b, _) in batches.items()}
    sizes = _hit_sizes(session, [r.hit_id for bid, rs in by_batch.items() if models[bid].large_hit_assignments
                                 for r in rs])
    # Holds first, all of them in batch id order, before any account is locked (lock order, module docstring).
    holds = {bid: ledger.lock_hold(session, bid) for bid in sorted(by_batch)}
    refs: set[ledger.AccountRef] = set()
    for bid, rs in by_batch.items():
        b, owner = batches[bid]
        refs |= {ledger.escrow(owner, b.currency), ledger.available(owner, b.currency),
                 ledger.fees(b.currency, models[bid].name)}
        refs |= {payee(b, r.worker_id) for r in rs}
    ids = ledger.account_ids(session, refs)
    postings: list[Posting] = []
    paid: list[tuple[Row[Any], int]] = []  # (row, reward) for every row; postings only for what moves money
    rewards: defaultdict[str, int] = defaultdict(int)
    fees: defaultdict[str, int] = defaultdict(int)
    for bid in sorted(by_batch):
        b, owner = batches[bid]
        model, cur, reward = models[bid], b.currency, b.reward_cents
        hold = holds[bid]
        from_hold = hold is not None and hold.state == HoldState.OPEN
        source = ids[(ledger.escrow if from_hold else ledger.available)(owner, cur)]
        fees_account = ids[ledger.fees(cur, model.name)]
        total = 0
        for r in by_batch[bid]:
            fee = model.reward_fee(reward, sizes.get(r.hit_id, 0))
            paid.append((r, reward))
            if reward + fee == 0:
                continue
            total += reward + fee
            rewards[cur] += reward
            fees[cur] += fee
            postings.append(Posting(f"reward:{r.id}", TransactionKind.REWARD, cur,
                                    ((source, -(reward + fee)), (ids[payee(b, r.worker_id)], reward),
                                     (fees_account, fee)),
                                    {"requester_id": owner, "worker_id": r.worker_id, "project_id": r.project_id,
                                     "batch_id": bid, "assignment_id": r.id,
                                     "hold_id": hold.id if from_hold else None, "actor_id": actor_id,
                                     "reason": reason}))
        if from_hold and total:
            ledger.draw(session, hold, total, now=now, key=f"hold:{bid}:reward:{by_batch[bid][0].id}")
    postings.sort(key=lambda p: p.meta["assignment_id"])
    txn = dict(zip((p.meta["assignment_id"] for p in postings), ledger.post(session, postings, now=now), strict=True))
    pay_rows = [{"assignment_id": r.id, "worker_id": r.worker_id, "batch_id": r.batch_id, "project_id": r.project_id,
                 "currency": batches[r.batch_id][0].currency, "reward_cents": reward,
                 "reward_transaction_id": txn.get(r.id), "top_up_cents": None, "top_up_transaction_id": None,
                 "duration_ms": r.duration_ms or 0, "approved_at": now} for r, reward in paid]
    if pay_rows:
        session.execute(AssignmentPay.__table__.insert(), pay_rows)
    return dict(rewards), dict(fees)


def payee(batch: Batch, worker_id: int) -> ledger.AccountRef:
    """Who is paid for the batch's work: the worker, or for a burst the platform, which pays its workers."""
    if batch.platform is not None:
        return ledger.external(batch.platform, batch.currency)
    return ledger.payable(worker_id, batch.currency)


def _hit_sizes(session: Session, hit_ids: list[int]) -> dict[int, int]:
    """Each HIT's max_assignments, for fee models that charge more on large HITs (MTurk's 10+)."""
    wanted = sorted(set(hit_ids))
    out: dict[int, int] = {}
    for start in range(0, len(wanted), _ID_CHUNK):
        out.update(dict(session.execute(select(Hit.id, Hit.max_assignments)
                                        .where(Hit.id.in_(wanted[start:start + _ID_CHUNK]))).all()))
    return out
