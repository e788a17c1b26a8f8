"""Flags on workers and what ops do about them: block (from a project or from all work, optionally until a
time), unblock, dismiss. Every step is kept in the flag's audit trail. No flask here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import column, select, table
from sqlalchemy.orm import Session

from base.errors import Conflict, InvalidInput, NotFound
from base.events import FlagRaised, publish
from base.identity import Actor, Role
from base.paging import keyset_page
from workers.models import Account, FlagReason, FlagState, WorkerBlock, WorkerFlag, WorkerFlagEvent

_PROJECT = table("project", column("id"))  # the market's table, named without importing the market


def record(session: Session, flag: WorkerFlag, action: str, actor: Actor | None, note: str,
           now: dt.datetime) -> None:
    """Add a step to the flag's audit trail."""
    session.add(WorkerFlagEvent(flag_id=flag.id, action=action, actor_id=actor.id if actor else None, note=note,
                                at=now))


def raise_flag(session: Session, *, worker_id: int, project_id: int | None, reason: FlagReason, note: str,
               now: dt.datetime, evidence: dict[str, Any] | None = None, actor: Actor | None = None) -> WorkerFlag:
    """Put a worker up for review (by ops, or by the system when `actor` is None); flushes, the unit of work
    commits (base/uow.py)."""
    worker = session.get(Account, worker_id)
    if worker is None or worker.role != Role.WORKER:
        raise NotFound(f"Worker {worker_id} not found.")
    if project_id is not None and session.scalar(select(_PROJECT.c.id).where(_PROJECT.c.id == project_id)) is None:
        raise InvalidInput("No such project.", errors={"project_id": [f"project {project_id} does not exist"]})
    flag = WorkerFlag(account_id=worker_id, project_id=project_id, reason=reason, evidence=evidence,
                      state=FlagState.OPEN, created_by_id=actor.id if actor else None, created_at=now, updated_at=now)
    session.add(flag)
    session.flush()
    record(session, flag, "opened", actor, note, now)
    session.flush()
    publish(session, FlagRaised(flag.id, worker_id, FlagReason(reason).value, now))
    return flag


def get_flag(session: Session, *, flag_id: int, lock: bool = False) -> WorkerFlag:
    stmt = select(WorkerFlag).where(WorkerFlag.id == flag_id)
    flag = session.scalar(stmt.with_for_update() if lock else stmt)
    if flag is None:
        raise NotFound(f"Flag {flag_id} not found.")
    return flag


def list_flags(session: Session, *, after: int | None, limit: int, state: FlagState | None = None,
               reason: FlagReason | None = None, worker_id: int | None = None,
               project_id: int | None = None) -> list[WorkerFlag]:
    """Flags by id, filtered."""
    return keyset_page(session, WorkerFlag, after=after, limit=limit, equal=(
        (WorkerFlag.state, state), (WorkerFlag.reason, reason), (WorkerFlag.account_id, worker_id),
        (WorkerFlag.project_id, project_id)))


def events(session: Session, flag_id: int) -> list[WorkerFlagEvent]:
    return list(session.scalars(select(WorkerFlagEvent).where(WorkerFlagEvent.flag_id == flag_id)
                                .order_by(WorkerFlagEvent.id)))


def block_of(session: Session, flag: WorkerFlag) -> WorkerBlock | None:
    """The block the flag led to, if any."""
    return session.get(WorkerBlock, flag.block_id) if flag.block_id is not None else None


def blocks_of(session: Session, flags: Sequence[WorkerFlag]) -> dict[int, WorkerBlock]:
    """The blocks these flags led to, by flag id (flags without one left out): one query for the lot."""
    wanted = sorted({f.block_id for f in flags if f.block_id is not None})
    if not wanted:
        return {}
    blocks = {b.id: b for b in session.scalars(select(WorkerBlock).where(WorkerBlock.id.in_(wanted)))}
    return {f.id: blocks[f.block_id] for f in flags if f.block_id is not None}


def _expect(session: Session, flag: WorkerFlag, state: FlagState, action: str) -> None:
    if flag.state != state:
        raise Conflict(f"Cannot {action} a flag that is {flag.state.value}.",
                       errors={"state": [f"is {flag.state.value}"]})


def block(session: Session, *, flag_id: int, actor: Actor | None, scope: str, reason: str, now: dt.datetime,
          expires_at: dt.datetime | None = None) -> WorkerFlag:
    """Block the flagged worker at once: from the flag's project, or from all work; until `expires_at` if given.
    Flushes: the unit of work commits, with the market's applying the block to the worker's answers in the same
    transaction. No actor: the system blocks (a project's auto-block rule)."""
    flag = get_flag(session, flag_id=flag_id, lock=True)
    _expect(session, flag, FlagState.OPEN, "block")
    if scope == "project" and flag.project_id is None:
        raise InvalidInput("This flag names no project; block from all work instead.",
                           errors={"scope": ["the flag has no project"]})
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("A block must end in the future.", errors={"expires_at": ["is not in the future"]})
    blocked = WorkerBlock(account_id=flag.account_id, project_id=flag.project_id if scope == "project" else None,
                          reason=reason, created_by_id=actor.id if actor else None, created_at=now,
                          expires_at=expires_at)
    session.add(blocked)
    session.flush()
    flag.block_id, flag.state, flag.updated_at = blocked.id, FlagState.BLOCKED, now
    until = f" until {expires_at.isoformat()}" if expires_at else ""
    record(session, flag, "blocked", actor, f"{scope}{until}: {reason}", now)
    session.flush()
    return flag


def unblock(session: Session, *, flag_id: int, actor: Actor, reason: str, now: dt.datetime) -> WorkerFlag:
    """Lift the flag's block; the flag goes back to open for review (dismiss it to close it). Flushes: the unit of
    work commits."""
    flag = get_flag(session, flag_id=flag_id, lock=True)
    _expect(session, flag, FlagState.BLOCKED, "unblock")
    held = block_of(session, flag)
    if held is not None and held.lifted_at is None:
        held.lifted_at = now
    flag.state, flag.updated_at = FlagState.OPEN, now
    record(session, flag, "unblocked", actor, reason, now)
    session.flush()
    return flag


def dismiss(session: Session, *, flag_id: int, actor: Actor, reason: str, now: dt.datetime) -> WorkerFlag:
    """Close an open flag without action."""
    flag = get_flag(session, flag_id=flag_id, lock=True)
    _expect(session, flag, FlagState.OPEN, "dismiss")
    flag.state, flag.updated_at = FlagState.DISMISSED, now
    record(session, flag, "dismissed", actor, reason, now)
    session.flush()
    return flag


def worker_blocks(session: Session, *, worker_id: int) -> list[WorkerBlock]:
    """Every block the worker has had (in force, lifted or expired), newest first."""
    return list(session.scalars(select(WorkerBlock).where(WorkerBlock.account_id == worker_id)
                                .order_by(WorkerBlock.id.desc())))


def blocks_in_force(session: Session, *, worker_ids: Sequence[int], now: dt.datetime) -> dict[int, list[WorkerBlock]]:
    """The blocks in force at `now` on these workers, by worker id: one query for the lot."""
    if not worker_ids:
        return {}
    found: dict[int, list[WorkerBlock]] = {}
    for b in session.scalars(select(WorkerBlock).where(WorkerBlock.account_id.in_(sorted(set(worker_ids))),
                                                       WorkerBlock.in_force(now)).order_by(WorkerBlock.id)):
        found.setdefault(b.account_id, []).append(b)
    return found
