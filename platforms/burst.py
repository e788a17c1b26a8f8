"""A burst: part of a batch sent to another crowd. No flask here.

The burst takes `hits` of the batch's HITs that still have free places (most free places first) and moves those
places onto a batch of its own: same project, pay, shape and qualification requirements, the platform's fee
terms, served only to that platform's workers through its task page (`market/engine/next_task.py`). So an item
sent out is never also offered locally beyond its redundancy: its places are in one queue at a time. What the
platform leaves unused goes back to the parent batch when the burst closes. Payments moves the places' share of
the holds (`PlacesMoved`) and holds the burst's own maximum cost under the platform's fees (`BatchPublished`), in
this transaction: too little money (402) bursts nothing.

Gold is served among a burst's tasks exactly as to local workers (the burst has the parent's shape, so the
project's gold pool serves it), so the platform is asked for the real places plus the gold tasks that come with
them. Our qualification tests are enforced on our work page, not mapped to the platform's own: see the README.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base import events
from base.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound
from base.events import BatchPublished, BatchStatusChanged, PlacesMoved
from base.identity import Actor
from base.money import FeeModel
from base.uow import savepoint
from market.catalogue.gold import has_gold
from market.catalogue.models import Batch, BatchStatus, HitSlot, Item, Project, SlotState
from market.catalogue.projects import get_project
from payments.wage.costs import assignment_cost
from platforms.base import BurstOrder, ExternalTask
from platforms.models import BurstStatus, PlatformBatch, PlatformTask
from qualification.gold import gold_tasks_needed

MAX_HITS = 10_000
# The platform approves by itself a day after our own auto-approval would, so our decision (and a rejection's
# feedback) reaches it first even when the sync runs late; 30 days is MTurk's longest delay.
REVIEW_MARGIN_SECONDS = 86_400
MAX_AUTO_APPROVAL_SECONDS = 30 * 86_400


@dataclass(frozen=True)
class Estimate:
    """What a burst would send and cost, before anything is made."""

    platform: str
    hits: int
    places: int  # real places moved from the batch
    gold_tasks: int
    tasks: int  # places + gold: what the platform is asked for
    redundancy: int  # answers per item, at most
    per_platform_task: int  # assignments per platform task (MTurk HIT's MaxAssignments)
    split: bool
    fee_rate: str  # on rewards, as it applies to this burst
    bonus_fee_rate: str
    per_task_cents: int  # reward + fee
    total_cents: int  # the hold: every task's reward, fee and top-up headroom with its fee
    currency: str
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def fee_terms(fees: FeeModel, *, redundancy: int, split: bool) -> tuple[FeeModel, int]:
    """The fee terms as they apply to a burst, and the assignments per platform task: split keeps each under the
    large-task threshold; otherwise a task of `redundancy` assignments pays the large-task rate at or above it."""
    size = redundancy
    if split and fees.large_hit_assignments:
        size = min(size, fees.large_hit_assignments - 1)
    large = bool(fees.large_hit_assignments) and size >= fees.large_hit_assignments
    # Stored so that every assignment of the burst pays what its platform task pays (threshold 1: all of them).
    return FeeModel(fees.name, rate=fees.rate, large_hit_rate=fees.large_hit_rate if large else Decimal(0),
                    large_hit_assignments=1 if large else 0, minimum_cents=fees.minimum_cents), max(1, size)


def _chosen(session: Session, batch: Batch, hits: int) -> list[tuple[int, int]]:
    """(hit id, free places) of the batch's HITs with the most free places, up to `hits`."""
    free = func.count(HitSlot.id)
    return [(h, int(n)) for h, n in session.execute(
        select(HitSlot.hit_id, free).where(HitSlot.batch_id == batch.id, HitSlot.state == SlotState.FREE)
        .group_by(HitSlot.hit_id).order_by(free.desc(), HitSlot.hit_id).limit(hits))]


def _check(batch: Batch, hits: int) -> None:
    if batch.parent_id is not None:
        raise InvalidInput("This batch is a burst already; burst its parent batch.", errors={"batch": ["a burst"]})
    if batch.status != BatchStatus.OPEN:
        raise Conflict(f"Batch {batch.id} is {batch.status.value}: only an open batch can be burst.")
    if not 1 <= hits <= MAX_HITS:
        raise InvalidInput(f"hits must be between 1 and {MAX_HITS}.", errors={"hits": ["out of range"]})


def estimate(session: Session, *, batch: Batch, project: Project, platform: str, platform_title: str,
             fees: FeeModel, hits: int, split: bool) -> Estimate:
    """What bursting `hits` HITs of the batch to the platform would send and cost (nothing is changed)."""
    _check(batch, hits)
    chosen = _chosen(session, batch, hits)
    if not chosen:
        raise Conflict("No HIT of this batch has a free place left to send.")
    return _estimate(session, batch, project, platform, platform_title, fees, chosen, split)


def _estimate(session: Session, batch: Batch, project: Project, platform: str, title: str, fees: FeeModel,
              chosen: list[tuple[int, int]], split: bool) -> Estimate:
    places = sum(n for _, n in chosen)
    redundancy = max(n for _, n in chosen)
    rate = Decimal(project.gold_rate) if has_gold(session, project) else Decimal(0)
    gold = gold_tasks_needed(places, rate)
    terms, size = fee_terms(fees, redundancy=redundancy, split=split)
    warnings = []
    if fees.large_hit_assignments and redundancy >= fees.large_hit_assignments and not split:
        warnings.append(
            f"{redundancy} assignments per {title} task: at {fees.large_hit_assignments} or more, {title} charges "
            f"{percent(fees.rate + fees.large_hit_rate)} instead of {percent(fees.rate)} on rewards. Burst with "
            f"split to publish tasks of at most {fees.large_hit_assignments - 1} assignments each.")
    cost = assignment_cost(_burst_batch(batch, terms, platform, hits=len(chosen), now=batch.created_at))
    per_task, total = cost.reward_total, (places + gold) * cost.total
    return Estimate(platform, len(chosen), places, gold, places + gold, redundancy, size, split,
                    str(terms.rate + terms.large_hit_rate), str(terms.rate), per_task, total, batch.currency,
                    warnings)


def percent(rate: Decimal | str) -> str:
    """A fee rate as people write it."""
    rate = Decimal(rate)
    # Decimal's own "g" keeps the rate's trailing zeros ("40.00%"): normalised, 0.40 reads "40%", 0.428 "42.8%".
    return f"{(rate * 100).normalize():f}%"


def _burst_batch(parent: Batch, terms: FeeModel, platform: str, *, hits: int, now: dt.datetime) -> Batch:
    """The burst's own batch: the parent's terms and shape, the platform's fees (not yet added to the session)."""
    return Batch(project_id=parent.project_id, name=f"{parent.name or f'batch {parent.id}'} on {platform}"[:200],
                 status=BatchStatus.OPEN, created_by_id=parent.created_by_id, idempotency_key=None,
                 request_fingerprint=parent.request_fingerprint, reward_cents=parent.reward_cents,
                 currency=parent.currency, items_per_hit=parent.items_per_hit,
                 assignments_per_item=parent.assignments_per_item,
                 assignment_duration_seconds=parent.assignment_duration_seconds,
                 auto_approval_delay_seconds=parent.auto_approval_delay_seconds,
                 qualification_requirements=parent.qualification_requirements, item_count=0, hit_count=hits,
                 estimated_seconds=parent.estimated_seconds,
                 target_wage_cents_per_hour=parent.target_wage_cents_per_hour,
                 wage_floor_cents_per_hour=parent.wage_floor_cents_per_hour, auto_top_up=parent.auto_top_up,
                 fee_model=terms.name, fee_rate=terms.rate, fee_large_hit_rate=terms.large_hit_rate,
                 fee_large_hit_assignments=terms.large_hit_assignments, fee_minimum_cents=terms.minimum_cents,
                 measured_seconds=parent.measured_seconds, parent_id=parent.id, platform=platform,
                 created_at=now, status_changed_at=now, expires_at=parent.expires_at)


def _fingerprint(platform: str, hits: int, split: bool) -> str:
    return hashlib.sha256(json.dumps({"platform": platform, "hits": hits, "split": split}).encode()).hexdigest()


def create(session: Session, *, actor: Actor, batch_id: int, platform: str, platform_title: str, fees: FeeModel,
           hits: int, split: bool, key: str, now: dt.datetime) -> tuple[PlatformBatch, bool]:
    """Make the burst on our side (its batch, the places moved, the holds); returns (burst, created). The same
    key again returns the first burst (a different request under it: 409). Publishing on the platform is the
    next step (platforms/service.py), after this commits."""
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"Batch {batch_id} not found.")
    project = get_project(session, project_id=batch.project_id, account=actor, write=True, lock=True)
    request_print = _fingerprint(platform, hits, split)
    replay = _replay(session, batch.id, key, request_print)
    if replay is not None:
        return replay, False
    _check(batch, hits)
    chosen = _chosen(session, batch, hits)
    if not chosen:
        raise Conflict("No HIT of this batch has a free place left to send.")
    shown = _estimate(session, batch, project, platform, platform_title, fees, chosen, split)
    terms, _ = fee_terms(fees, redundancy=shown.redundancy, split=split)
    child = _burst_batch(batch, terms, platform, hits=len(chosen), now=now)
    hit_ids = [h for h, _ in chosen]
    child.item_count = session.scalar(select(func.count(Item.id)).where(Item.hit_id.in_(hit_ids))) or 0
    burst = PlatformBatch(platform=platform, parent_batch_id=batch.id, project_id=batch.project_id,
                          status=BurstStatus.PUBLISHING, idempotency_key=key, request_fingerprint=request_print,
                          created_by_id=actor.id, hits=len(chosen), slots=shown.places, tasks=shown.tasks,
                          redundancy=shown.redundancy, split=split, completion_code=secrets.token_hex(4).upper(),
                          estimate=shown.as_json(), created_at=now)
    try:
        with savepoint(session):
            session.add(child)
            session.flush()
            burst.batch_id = child.id
            session.add(burst)
            session.flush()
    except IntegrityError:  # the same key won a race
        replay = _replay(session, batch.id, key, request_print)
        if replay is None:
            raise
        return replay, False
    moved = session.execute(update(HitSlot).where(HitSlot.batch_id == batch.id, HitSlot.hit_id.in_(hit_ids),
                                                  HitSlot.state == SlotState.FREE)
                            .values(batch_id=child.id).execution_options(synchronize_session=False)).rowcount
    if moved != shown.places:  # a claim took one meanwhile
        raise Conflict("The batch changed while bursting; try again.")
    events.publish(session, PlacesMoved(from_batch_id=batch.id, to_batch_id=child.id, places=moved,
                                        key=f"burst:{burst.id}", at=now))
    events.publish(session, BatchPublished(batch_id=child.id, project_id=project.id, requester_id=project.owner_id,
                                           at=now))
    return burst, True


def _replay(session: Session, batch_id: int, key: str, request_print: str) -> PlatformBatch | None:
    burst = session.scalar(select(PlatformBatch).where(PlatformBatch.parent_batch_id == batch_id,
                                                       PlatformBatch.idempotency_key == key))
    if burst is not None and burst.request_fingerprint != request_print:
        raise IdempotencyConflict()
    return burst


def order(session: Session, burst: PlatformBatch, *, url: str, keywords: tuple[str, ...], now: dt.datetime,
          retry: bool = False) -> BurstOrder:
    """What the platform is asked for. The lease is the assignment duration; the platform's task lives until the
    batch expires (an hour at least); one task's time is the measured median, else the requester's estimate."""
    batch = session.get(Batch, burst.batch_id)
    project = session.get(Project, burst.project_id)
    assert batch is not None and project is not None
    seconds = int(batch.measured_seconds or batch.estimated_seconds or batch.assignment_duration_seconds)
    return BurstOrder(
        key=f"crowdmarket-burst-{burst.id}", url=url, title=project.title[:128],
        description=(project.description or project.title)[:2000], keywords=keywords,
        reward_cents=batch.reward_cents, currency=batch.currency, hits=burst.hits, redundancy=burst.redundancy,
        tasks=burst.tasks, assignment_seconds=batch.assignment_duration_seconds,
        auto_approval_seconds=min(MAX_AUTO_APPROVAL_SECONDS, batch.auto_approval_delay_seconds + REVIEW_MARGIN_SECONDS),
        lifetime_seconds=max(3600, int((batch.expires_at - now).total_seconds())), estimated_seconds=seconds,
        split=burst.split, completion_code=burst.completion_code, retry=retry)


def published(session: Session, burst: PlatformBatch, tasks: list[ExternalTask], *, now: dt.datetime) -> None:
    """Record what the platform made (a retried publish records each task once)."""
    known = set(session.scalars(select(PlatformTask.external_id).where(PlatformTask.platform_batch_id == burst.id)))
    for task in tasks:
        if task.external_id not in known:
            session.add(PlatformTask(platform_batch_id=burst.id, platform=burst.platform,
                                     external_id=task.external_id, group_id=task.group, token=task.key,
                                     max_assignments=task.max_assignments, reward_cents=task.reward_cents,
                                     expires_at=task.expires_at))
    if burst.status == BurstStatus.PUBLISHING:
        burst.status, burst.published_at, burst.last_error = BurstStatus.OPEN, now, None
    session.flush()


def give_back(session: Session, burst: PlatformBatch, *, now: dt.datetime, status: BatchStatus) -> int:
    """Close the burst's batch (cancelled, expired or complete) and move its unused places back to the parent
    with their share of the holds; returns the places given back. Closing happens once; places whose leases lapse
    later come back on later syncs (`reclaim`)."""
    if burst.status == BurstStatus.CLOSED:
        return reclaim(session, burst, now=now)
    batch = session.get(Batch, burst.batch_id, with_for_update=True)
    assert batch is not None
    if batch.status == BatchStatus.OPEN:
        batch.status, batch.status_changed_at = status, now
        session.flush()
    burst.status, burst.closed_at = BurstStatus.CLOSED, now
    back = reclaim(session, burst, now=now)
    events.publish(session, BatchStatusChanged(batch_id=batch.id, project_id=batch.project_id,
                                               status=batch.status.value, at=now))
    session.flush()
    return back


def reclaim(session: Session, burst: PlatformBatch, *, now: dt.datetime) -> int:
    """Move a closed burst's unused places to the parent: free ones, and leased ones whose lease lapsed (the
    parent's claims take those over as they would their own)."""
    assert burst.status == BurstStatus.CLOSED
    unused = (HitSlot.state == SlotState.FREE) | ((HitSlot.state == SlotState.LEASED)
                                                  & (HitSlot.lease_expires_at <= now))
    back = session.execute(update(HitSlot).where(HitSlot.batch_id == burst.batch_id, unused)
                           .values(batch_id=burst.parent_batch_id)
                           .execution_options(synchronize_session=False)).rowcount
    if back:
        events.publish(session, PlacesMoved(from_batch_id=burst.batch_id, to_batch_id=burst.parent_batch_id,
                                            places=back, key=f"burst:{burst.id}:back:{now.isoformat()}", at=now))
    return back


def places_left(session: Session, burst: PlatformBatch) -> int:
    """Places of the burst not yet answered (free or leased)."""
    return session.scalar(select(func.count(HitSlot.id)).where(HitSlot.batch_id == burst.batch_id,
                                                               HitSlot.state != SlotState.DONE)) or 0


def cancel(session: Session, burst: PlatformBatch, *, now: dt.datetime) -> None:
    """Cancel here: the burst's batch takes no new leases from now on; the sync ends the platform's tasks and
    gives the unused places back. Idempotent."""
    if burst.status not in (BurstStatus.PUBLISHING, BurstStatus.OPEN):
        return
    burst.status = BurstStatus.CANCELLING
    batch = session.get(Batch, burst.batch_id, with_for_update=True)
    if batch is not None and batch.status == BatchStatus.OPEN:
        batch.status, batch.status_changed_at = BatchStatus.CANCELLED, now
    session.flush()
