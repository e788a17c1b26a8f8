"""What a block on a worker does to their work in the market, and what lifting it undoes.

A block (from one project, or from all work) ends the worker's live leases in its scope, excludes their answers
there (kept, never deleted) and reopens their items, one new free slot per excluded assignment, so the items get
their redundancy back from other workers. Lifting the block restores the answers and takes back the reopened
slots still free; those already taken stay, so an item may end with more answers than it was published for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, delete, func, insert, literal, select, true, update
from sqlalchemy.orm import Session

from base.identity import Actor
from market.catalogue.models import Answer, Assignment, AssignmentStatus, Hit, HitSlot, SlotState
from market.engine.submit import release_slots
from workers import flags
from workers.models import WorkerBlock, WorkerFlag

_SLOT = HitSlot.__table__


@dataclass(frozen=True)
class BlockEffect:
    leases_ended: int
    answers_excluded: int
    slots_reopened: int


def _in_scope(column: ColumnElement[int], block: WorkerBlock) -> ColumnElement[bool]:
    return column == block.project_id if block.project_id is not None else true()


def apply_block(session: Session, *, block: WorkerBlock, now: dt.datetime) -> BlockEffect:
    """End the worker's live leases, exclude their answers and reopen their items, within the block's scope."""
    worker = block.account_id
    live = session.scalars(update(Assignment).where(
        Assignment.worker_id == worker, Assignment.status == AssignmentStatus.LEASED,
        _in_scope(Assignment.project_id, block)).values(status=AssignmentStatus.EXPIRED)
        .returning(Assignment.id)).all()
    release_slots(session, list(live))
    excluded = session.scalars(update(Answer).where(
        Answer.worker_id == worker, Answer.excluded_at.is_(None), _in_scope(Answer.project_id, block))
        .values(excluded_at=now, excluded_by_block_id=block.id).returning(Answer.assignment_id)).all()
    assignments = sorted(set(excluded))
    if assignments:
        # One new slot per excluded assignment (a worker has at most one per HIT), numbered after the HIT's last, in
        # the HIT's own queue: its batch's, or its gold pool's (gold keeps the same count of workers per item).
        next_no = select(func.max(_SLOT.c.slot_no) + 1).where(_SLOT.c.hit_id == Assignment.hit_id).scalar_subquery()
        priority = select(func.min(_SLOT.c.neg_priority)).where(_SLOT.c.hit_id == Assignment.hit_id).scalar_subquery()
        batch = case((Hit.gold_pool_id.is_(None), Hit.batch_id))
        reopened = len(session.execute(insert(_SLOT).from_select(
            ["hit_id", "batch_id", "gold_pool_id", "slot_no", "neg_priority", "state", "reopened_by_block_id"],
            select(Assignment.hit_id, batch, Hit.gold_pool_id, next_no, priority, literal(SlotState.FREE.value),
                   literal(block.id)).join(Hit, Hit.id == Assignment.hit_id)
            .where(Assignment.id.in_(assignments))).returning(_SLOT.c.id)).all())
    else:
        reopened = 0
    return BlockEffect(len(live), len(excluded), reopened)


def lift_block(session: Session, *, block: WorkerBlock) -> tuple[int, int]:
    """Restore the answers the block excluded and take back its reopened slots still free: (restored, removed)."""
    restored = session.execute(update(Answer).where(Answer.excluded_by_block_id == block.id)
                               .values(excluded_at=None, excluded_by_block_id=None)).rowcount
    removed = session.execute(delete(HitSlot).where(HitSlot.reopened_by_block_id == block.id,
                                                    HitSlot.state == SlotState.FREE)).rowcount
    return restored, removed


def block_and_apply(session: Session, *, flag_id: int, actor: Actor | None, scope: str, reason: str,
                    now: dt.datetime, expires_at: dt.datetime | None = None) -> WorkerFlag:
    """Block a flagged worker (by ops, or by the system when `actor` is None), apply the block to their work and
    record what it did in the flag's trail. Its unit of work commits (base/uow.py)."""
    flag = flags.block(session, flag_id=flag_id, actor=actor, scope=scope, reason=reason, now=now,
                       expires_at=expires_at)
    held = flags.block_of(session, flag)
    assert held is not None
    done = apply_block(session, block=held, now=now)
    flags.record(session, flag, "applied", actor, f"ended {done.leases_ended} lease(s), excluded "
                 f"{done.answers_excluded} answer(s), reopened {done.slots_reopened} item slot(s)", now)
    return flag


def block_flagged(session: Session, *, flag_id: int, actor: Actor, scope: str, reason: str, now: dt.datetime,
                  expires_at: dt.datetime | None = None) -> WorkerFlag:
    """Block a flagged worker and apply the block to their work, in one transaction."""
    flag = block_and_apply(session, flag_id=flag_id, actor=actor, scope=scope, reason=reason, now=now,
                           expires_at=expires_at)
    session.flush()
    return flag


def unblock_flagged(session: Session, *, flag_id: int, actor: Actor, reason: str, now: dt.datetime) -> WorkerFlag:
    """Lift a flagged worker's block and undo its effects, in one transaction."""
    flag = flags.unblock(session, flag_id=flag_id, actor=actor, reason=reason, now=now)
    held = flags.block_of(session, flag)
    if held is not None:
        restored, removed = lift_block(session, block=held)
        flags.record(session, flag, "restored", actor, f"restored {restored} answer(s), took back {removed} "
                     "unused item slot(s)", now)
    session.flush()
    return flag
