"""Batches: publishing items as HITs with their slots, batch states, progress and priorities. No flask here."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base import events
from base.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound
from base.events import BatchPublished, BatchStatusChanged
from base.identity import Actor
from base.money import Money, hourly_rate, platform_fee
from base.uow import savepoint
from market.catalogue.gold import fill_short_hit, make_gold_hits
from market.catalogue.hits import _MAKE_SLOTS, insert_hits
from market.catalogue.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from market.catalogue.projects import MAX_LISTED_ERRORS, get_project
from qualification.service import check_requirements

PUBLISH_CHUNK = 10_000
# The platform's defaults (shell/config.py: WAGE_FLOOR_CENTS_PER_HOUR, PLATFORM_FEE_RATE); the edge passes the
# configured values.
DEFAULT_WAGE_FLOOR_CENTS_PER_HOUR = 800


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def publish_batch(session: Session, *, project_id: int, account: Actor, now: dt.datetime, name: str = "",
                  item_ids: Sequence[int] | None = None, external_ids: Sequence[str] | None = None,
                  idempotency_key: str | None = None,
                  qualification_requirements: list[dict[str, Any]] | None = None,
                  wage_floor_cents_per_hour: int = DEFAULT_WAGE_FLOOR_CENTS_PER_HOUR,
                  platform_fee_rate: Decimal = Decimal(0)) -> tuple[Batch, bool]:
    """Publish items as HITs; returns (batch, created). A repeated idempotency key returns the first batch.
    The batch takes the project's qualification requirements unless given its own ([]: none), and its pay terms:
    paid work needs the requester's time estimate, and reward / estimate must reach the wage floor (422). The new
    batch is announced (`BatchPublished`): payments holds its maximum cost in the same transaction, or refuses
    (402) and nothing is published."""
    request_print = fingerprint({"name": name, "item_ids": item_ids, "external_ids": external_ids,
                                 "qualification_requirements": qualification_requirements})
    # Lock the project row: concurrent publishes of one project queue up instead of racing for items.
    project = get_project(session, project_id=project_id, account=account, write=True, lock=True)
    if idempotency_key is not None:
        replay = _replay(session, project.id, idempotency_key, request_print)
        if replay is not None:
            return replay, False
    fee = platform_fee(platform_fee_rate)
    _check_wage_floor(project, wage_floor_cents_per_hour)
    requirements = (project.qualification_requirements if qualification_requirements is None else
                    check_requirements(session, owner_id=project.owner_id, requirements=qualification_requirements))
    batch = Batch(project_id=project.id, name=name, status=BatchStatus.OPEN, created_by_id=account.id,
                  idempotency_key=idempotency_key, request_fingerprint=request_print,
                  reward_cents=project.reward_cents, currency=project.currency,
                  items_per_hit=project.items_per_hit, assignments_per_item=project.assignments_per_item,
                  assignment_duration_seconds=project.assignment_duration_seconds,
                  auto_approval_delay_seconds=project.auto_approval_delay_seconds, item_count=0, hit_count=0,
                  qualification_requirements=requirements,
                  estimated_seconds=project.estimated_seconds,
                  target_wage_cents_per_hour=project.target_wage_cents_per_hour,
                  wage_floor_cents_per_hour=wage_floor_cents_per_hour, auto_top_up=project.auto_top_up,
                  fee_model=fee.name, fee_rate=fee.rate,
                  created_at=now, status_changed_at=now,
                  expires_at=now + dt.timedelta(seconds=project.lifetime_seconds))
    try:
        with savepoint(session):
            session.add(batch)
            session.flush()
    except IntegrityError:  # the same key won a race in another transaction
        replay = _replay(session, project_id, idempotency_key or "", request_print)
        if replay is None:
            raise
        return replay, False
    if item_ids is not None or external_ids is not None:
        chunks = _chosen_item_chunks(session, project, item_ids, external_ids)
    else:
        chunks = _unpublished_item_chunks(session, project)
    for ids in chunks:
        make_hits(session, batch, ids, now)
    if batch.item_count == 0:
        raise InvalidInput("There are no unpublished items to publish; import items first.",
                           errors={"item_ids": ["no unpublished, non-gold items selected"]})
    fill_short_hit(session, project, batch)
    make_slots(session, batch)
    make_gold_hits(session, project, batch, now)
    session.flush()
    events.publish(session, BatchPublished(batch_id=batch.id, project_id=project.id, requester_id=project.owner_id,
                                           at=now))
    return batch, True


def _check_wage_floor(project: Project, floor_cents_per_hour: int) -> None:
    """Paid work must say how long it takes, and pay at least the floor for that time (unpaid work, reward 0, is
    the requester's own team labeling: no wage applies)."""
    if project.reward_cents == 0:
        return
    if project.estimated_seconds is None:
        raise InvalidInput("Paid work needs your estimate of a HIT's working time to be published: set the "
                           "project's estimated_seconds.",
                           errors={"estimated_seconds": ["required to publish paid work"]})
    rate = hourly_rate(project.reward_cents, project.estimated_seconds)
    assert rate is not None  # the estimate is positive (schema and CHECK)
    if rate < floor_cents_per_hour:
        floor = Money(floor_cents_per_hour, project.currency)
        earns = f"{project.reward_cents} cents for {project.estimated_seconds} s is {rate.quantize(Decimal('0.01'))}"
        raise InvalidInput(f"The reward is below the platform's wage floor of {floor}/h: {earns} cents per hour. "
                           "Raise reward_cents or correct estimated_seconds.",
                           errors={"reward_cents": [f"below the wage floor of {floor_cents_per_hour} cents per hour "
                                                    f"for {project.estimated_seconds} s"]},
                           wage_floor={"cents": floor_cents_per_hour, "currency": project.currency})


def _replay(session: Session, project_id: int, key: str, request_print: str) -> Batch | None:
    batch = session.scalar(select(Batch).where(Batch.project_id == project_id, Batch.idempotency_key == key))
    if batch is not None and batch.request_fingerprint != request_print:
        raise IdempotencyConflict()
    return batch


def _unpublished_item_chunks(session: Session, project: Project):
    chunk = PUBLISH_CHUNK - PUBLISH_CHUNK % project.items_per_hit
    while True:
        # Each pass publishes what it read, so the next pass starts from the remaining unpublished items.
        ids = list(session.scalars(select(Item.id).where(
            Item.project_id == project.id, Item.is_gold.is_(False), Item.hit_id.is_(None))
            .order_by(Item.id).limit(chunk)))
        if not ids:
            return
        yield ids


def _chosen_item_chunks(session: Session, project: Project, item_ids: Sequence[int] | None,
                        external_ids: Sequence[str] | None):
    key_col = Item.id if item_ids is not None else Item.external_id
    wanted = list(dict.fromkeys(item_ids if item_ids is not None else external_ids or []))
    field_name = "item_ids" if item_ids is not None else "external_ids"
    if not wanted:
        raise InvalidInput("No items chosen.", errors={field_name: ["must not be empty"]})
    found: dict[Any, tuple[int, bool, int | None]] = {}
    for start in range(0, len(wanted), PUBLISH_CHUNK):
        part = wanted[start:start + PUBLISH_CHUNK]
        rows = session.execute(select(key_col, Item.id, Item.is_gold, Item.hit_id).where(
            Item.project_id == project.id, key_col.in_(part)))
        found.update({key: (iid, gold, hit) for key, iid, gold, hit in rows})
    problems: dict[str, list[str]] = {}
    for key in wanted:
        if key not in found:
            problems[str(key)] = ["no such item in this project"]
        elif found[key][1]:
            problems[str(key)] = ["is a gold item; gold is injected into workers' streams, not published"]
        elif found[key][2] is not None:
            problems[str(key)] = ["is published already"]
        if len(problems) >= MAX_LISTED_ERRORS:
            break
    if problems:
        raise InvalidInput(f"{len(problems)} chosen item(s) cannot be published.", errors={field_name: problems})
    ids = [found[key][0] for key in wanted]
    chunk = PUBLISH_CHUNK - PUBLISH_CHUNK % project.items_per_hit  # whole HITs per chunk: only the last may be short
    for start in range(0, len(ids), chunk):
        yield ids[start:start + chunk]


def make_hits(session: Session, batch: Batch, item_ids: list[int], now: dt.datetime) -> None:
    per = batch.items_per_hit
    groups = [item_ids[i:i + per] for i in range(0, len(item_ids), per)]
    insert_hits(session, batch, groups, now)
    batch.item_count += len(item_ids)
    batch.hit_count += len(groups)


def make_slots(session: Session, batch: Batch) -> None:
    session.execute(_MAKE_SLOTS, {"slots": batch.assignments_per_item, "batch_id": batch.id})


def get_batch(session: Session, *, project: Project, batch_id: int) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None or batch.project_id != project.id:
        raise NotFound(f"Batch {batch_id} not found.")
    return batch


def list_batches(session: Session, *, project: Project) -> list[Batch]:
    return list(session.scalars(select(Batch).where(Batch.project_id == project.id).order_by(Batch.id)))


def effective_status(batch: Batch, *, now: dt.datetime, complete: bool) -> BatchStatus:
    """Expiry and completion follow from the clock and the answers, so no sweeper is needed to see them."""
    if batch.status in (BatchStatus.OPEN, BatchStatus.PAUSED):
        if complete:
            return BatchStatus.COMPLETE
        if now >= batch.expires_at:
            return BatchStatus.EXPIRED
    return batch.status


_TRANSITIONS = {
    "pause": ({BatchStatus.OPEN}, BatchStatus.PAUSED),
    "resume": ({BatchStatus.PAUSED}, BatchStatus.OPEN),
    "cancel": ({BatchStatus.OPEN, BatchStatus.PAUSED}, BatchStatus.CANCELLED),
}


def change_batch_status(session: Session, *, project: Project, batch_id: int, action: str,
                        now: dt.datetime) -> Batch:
    """Pause, resume or cancel a batch; repeating the action that got it to its state is a no-op."""
    allowed, target = _TRANSITIONS[action]
    batch = session.scalar(select(Batch).where(Batch.id == batch_id).with_for_update())
    if batch is None or batch.project_id != project.id:
        raise NotFound(f"Batch {batch_id} not found.")
    current = effective_status(batch, now=now, complete=batch_progress(session, batch, now=now).complete)
    if current == target:
        return batch
    if current not in allowed:
        raise Conflict(f"Cannot {action} a batch that is {current.value}.",
                       errors={"status": [f"is {current.value}"]})
    batch.status = target
    batch.status_changed_at = now
    session.flush()
    events.publish(session, BatchStatusChanged(batch_id=batch.id, project_id=batch.project_id, status=target.value,
                                               at=now))
    return batch


@dataclass
class Progress:
    items: int
    hits: int
    assignments_per_item: int
    answers: int = 0
    items_complete: int = 0
    items_by_answer_count: dict[int, int] = field(default_factory=dict)
    assignments_by_status: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.items > 0 and self.items_complete == self.items


def batch_progress(session: Session, batch: Batch, *, now: dt.datetime) -> Progress:
    """Items by number of answers, completed items and assignments by state, from the answers themselves."""
    return batch_progress_many(session, [batch], now=now)[batch.id]


def batch_progress_many(session: Session, batches: Sequence[Batch], *, now: dt.datetime) -> dict[int, Progress]:
    """`batch_progress` of each batch, by batch id: two grouped queries for the lot, however many batches (a list
    of batches costs what one batch costs)."""
    progress = {b.id: Progress(items=b.item_count, hits=b.hit_count, assignments_per_item=b.assignments_per_item,
                               assignments_by_status={s.value: 0 for s in AssignmentStatus}) for b in batches}
    if not progress:
        return progress
    ids, needed = list(progress), {b.id: b.assignments_per_item for b in batches}
    per_item = (select(Item.batch_id, Item.id, func.count(Answer.id).label("n"))
                .outerjoin(Answer, (Answer.item_id == Item.id) & Answer.excluded_at.is_(None))
                .where(Item.batch_id.in_(ids)).group_by(Item.batch_id, Item.id).subquery())
    for batch_id, n, count in session.execute(select(per_item.c.batch_id, per_item.c.n, func.count())
                                              .group_by(per_item.c.batch_id, per_item.c.n)):
        p = progress[batch_id]
        p.items_by_answer_count[int(n)] = int(count)
        p.answers += int(n) * int(count)
        if n >= needed[batch_id]:
            p.items_complete += int(count)
    lapsed = Assignment.expires_at <= now
    rows = session.execute(select(Assignment.batch_id, Assignment.status, lapsed, func.count())
                           .where(Assignment.batch_id.in_(ids), Assignment.is_gold.is_(False))
                           .group_by(Assignment.batch_id, Assignment.status, lapsed))
    for batch_id, status, is_lapsed, count in rows:
        # A lease past its expiry is expired whether or not anything has swept it yet.
        key = AssignmentStatus.EXPIRED if status == AssignmentStatus.LEASED and is_lapsed else status
        progress[batch_id].assignments_by_status[key.value] += int(count)
    return progress


def set_priorities(session: Session, *, project: Project, entries: Sequence[dict[str, Any]]) -> int:
    """Set item priorities in bulk (by item_id or external_id); open HITs are served highest priority first."""
    by_id = {e["item_id"]: e["priority"] for e in entries if "item_id" in e}
    by_ext = {e["external_id"]: e["priority"] for e in entries if "external_id" in e}
    found: dict[int, int] = {}
    missing: dict[str, list[str]] = {}
    for keys, column in ((by_id, Item.id), (by_ext, Item.external_id)):
        wanted = list(keys)
        for start in range(0, len(wanted), PUBLISH_CHUNK):
            part = wanted[start:start + PUBLISH_CHUNK]
            rows = session.execute(select(column, Item.id).where(Item.project_id == project.id, column.in_(part)))
            hits = {key: iid for key, iid in rows}
            for key in part:
                if key in hits:
                    found[hits[key]] = keys[key]
                elif len(missing) < MAX_LISTED_ERRORS:
                    missing[str(key)] = ["no such item in this project"]
    if missing:
        raise InvalidInput(f"{len(missing)} item(s) not found; nothing was changed.", errors={"items": missing})
    session.execute(update(Item), [{"id": iid, "priority": p} for iid, p in found.items()])
    hit_ids = list(session.scalars(select(Item.hit_id).where(Item.id.in_(list(found)), Item.hit_id.is_not(None))
                                   .distinct())) if len(found) <= PUBLISH_CHUNK else None
    _refresh_slot_priorities(session, project, hit_ids)
    session.flush()
    return len(found)


def _refresh_slot_priorities(session: Session, project: Project, hit_ids: list[int] | None) -> None:
    # A HIT is served by its highest item priority; done slots are never served, so they are left alone.
    stmt = text("""
        UPDATE hit_slot SET neg_priority = -(SELECT max(i.priority) FROM item i WHERE i.hit_id = hit_slot.hit_id)
        WHERE state <> 'done' AND hit_id IN (SELECT h.id FROM hit h WHERE h.project_id = :project_id)
    """)
    if hit_ids is None:
        session.execute(stmt, {"project_id": project.id})
        return
    for start in range(0, len(hit_ids), 1000):
        part = hit_ids[start:start + 1000]
        session.execute(update(HitSlot).where(HitSlot.hit_id.in_(part), HitSlot.state != SlotState.DONE)
                        .values(neg_priority=-select(func.max(Item.priority)).where(Item.hit_id == HitSlot.hit_id)
                                .scalar_subquery()))
