"""Gold HITs: pooling gold items into gold pools and their slots, and the supply a batch can draw on. No flask here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Integer, bindparam, func, literal_column, null, select, true, update
from sqlalchemy.orm import Session

from market.catalogue.hits import insert_hits, make_slots, slot_numbers
from market.catalogue.models import (
    Batch,
    GoldPool,
    Hit,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from qualification.gold import gold_tasks_needed
from qualification.models import GoldStream


def _unpooled_gold(session: Session, project_id: int, limit: int | None = None) -> list[int]:
    stmt = select(Item.id).where(Item.project_id == project_id, Item.is_gold.is_(True), Item.hit_id.is_(None),
                                 Item.gold_retired_at.is_(None)).order_by(Item.id)
    return list(session.scalars(stmt if limit is None else stmt.limit(limit)))


def _short_hit(session: Session, batch: Batch) -> Hit | None:
    """The batch's one HIT with fewer items than the others (its last), if any."""
    return session.scalar(select(Hit).where(Hit.batch_id == batch.id, Hit.is_gold.is_(False),
                                            Hit.item_count < batch.items_per_hit))


def fill_short_hit(session: Session, project: Project, batch: Batch) -> None:
    """Fill the batch's last, short HIT up to full size with gold items not yet in a gold HIT. A short HIT would
    otherwise be certainly real (gold HITs are always full), and its gold answers are scored like any other.
    Without enough such gold it stays short and the batch's gold supply says so."""
    hit = _short_hit(session, batch) if project.gold_rate > 0 else None
    if hit is None:
        return
    gold = _unpooled_gold(session, project.id, batch.items_per_hit - hit.item_count)
    if len(gold) < batch.items_per_hit - hit.item_count:
        return
    session.execute(update(Item).where(Item.id.in_(gold)).values(hit_id=hit.id))
    hit.item_count = batch.items_per_hit


def _pool(session: Session, project_id: int, items_per_hit: int, redundancy: int, now: dt.datetime) -> GoldPool:
    """The project's gold pool of this shape, made on first use (callers hold the project's row lock)."""
    pool = session.scalar(select(GoldPool).where(GoldPool.project_id == project_id,
                                                 GoldPool.items_per_hit == items_per_hit,
                                                 GoldPool.assignments_per_item == redundancy))
    if pool is None:
        pool = GoldPool(project_id=project_id, items_per_hit=items_per_hit, assignments_per_item=redundancy,
                        created_at=now)
        session.add(pool)
        session.flush()
    return pool


def make_gold_hits(session: Session, project: Project, batch: Batch, now: dt.datetime) -> None:
    """Group the project's new gold items into gold HITs of this batch's shape (whole HITs only: a short one would
    stand out), each with the batch's redundancy in slots of the pool's queue, and tell the workers whose gold had
    run out that there is more. The caller holds the project's row lock, so concurrent imports and publishes
    group each gold item once and number the pool's HITs without gaps or repeats."""
    per = batch.items_per_hit
    ids = _unpooled_gold(session, project.id)
    groups = [ids[i:i + per] for i in range(0, len(ids) - len(ids) % per, per)]
    if not groups:
        return
    pool = _pool(session, project.id, per, batch.assignments_per_item, now)
    hit_ids = insert_hits(session, batch, groups, now, pool=pool)
    session.execute(_MAKE_GOLD_SLOTS, {"slots": pool.assignments_per_item, "pool_id": pool.id,
                                       "first": min(hit_ids), "last": max(hit_ids)})
    session.execute(update(GoldStream).where(GoldStream.project_id == project.id,
                                             GoldStream.exhausted_at.is_not(None)).values(exhausted_at=None))


def pool_new_gold(session: Session, project: Project, now: dt.datetime) -> None:
    """Gold imported after publishing joins the pool at once, in HITs of the newest batch's shape (the batches
    published before keep their own shape's gold). The caller holds the project's row lock
    (market/catalogue/imports.py)."""
    batch = session.scalar(select(Batch).where(Batch.project_id == project.id).order_by(Batch.id.desc()).limit(1))
    if batch is not None:
        make_gold_hits(session, project, batch, now)


@dataclass(frozen=True)
class GoldSupply:
    """What a batch needs of its project's gold pool, and what the pool holds for it."""

    rate: Decimal
    hits_needed: int  # gold HITs (each served to as many workers as a real HIT) for the batch's gold tasks
    items_needed: int
    hits_available: int  # gold HITs of the batch's shape, not retired
    items_available: int
    tasks_left: int  # gold tasks those HITs can still serve (slots not yet answered)
    items_waiting: int  # gold items not yet in a gold HIT (too few to fill one)
    workers_exhausted: int  # workers whose last gold turn found no gold for them
    short_hit: bool  # the batch's last HIT is short: with no gold of its size, a worker knows it is real

    def warning(self, items_per_hit: int) -> str | None:
        notes = []
        if self.hits_available < self.hits_needed:
            notes.append(
                f"At a gold rate of {self.rate}, this batch's workers meet about {self.hits_needed} gold HIT(s) of "
                f"{items_per_hit} item(s) ({self.items_needed} gold items), each used up like a real HIT; the pool "
                f"has {self.items_available}. When it runs out, gold turns serve real work and accuracy rests on "
                "agreement with the crowd; gold items imported now join the pool at once.")
        if self.short_hit:
            notes.append("The batch's last HIT holds fewer items than the others and there was no spare gold to "
                         "fill it: a worker who gets it can tell it is not gold.")
        return " ".join(notes) or None


@dataclass(frozen=True)
class ExhaustedPool:
    project_id: int
    title: str
    owner_id: int
    workers_exhausted: int
    gold_hits: int
    warning: str


def exhausted_gold_pools(session: Session) -> list[ExhaustedPool]:
    """Projects with workers whose last gold turn found no gold for them (for ops), most workers affected first."""
    counts = (select(GoldStream.project_id, func.count().label("n")).where(GoldStream.exhausted_at.is_not(None))
              .group_by(GoldStream.project_id).subquery())
    gold_hits = (select(func.count()).where(Hit.project_id == Project.id, Hit.is_gold.is_(True))
                 .scalar_subquery())
    rows = session.execute(select(Project.id, Project.title, Project.owner_id, counts.c.n, gold_hits)
                           .join(counts, counts.c.project_id == Project.id).order_by(counts.c.n.desc(), Project.id))
    return [ExhaustedPool(pid, title, owner, n, hits,
                          f"gold pool exhausted: {n} worker(s) found none of the {hits} gold HIT(s) left for them "
                          "and are checked by agreement alone until more gold comes") for pid, title, owner, n, hits
            in rows]


def gold_supply(session: Session, batch: Batch, project: Project) -> GoldSupply:
    """What the batch needs of its project's gold pool, and what the pool holds for it."""
    return gold_supply_many(session, [batch], project)[batch.id]


def gold_supply_many(session: Session, batches: Sequence[Batch], project: Project) -> dict[int, GoldSupply]:
    """`gold_supply` of each of the project's batches, by batch id: three queries for the lot, however many
    batches (the pools of every shape with their counts, the project's loose gold, the short HITs)."""
    if not batches:
        return {}
    ranked = (Hit.gold_pool_id == GoldPool.id) & Hit.gold_rank.is_not(None)  # a retired gold HIT has no rank
    hits = select(func.count()).select_from(Hit).where(ranked).scalar_subquery()
    slots = (select(func.count()).select_from(HitSlot).join(Hit, Hit.id == HitSlot.hit_id)
             .where(ranked, HitSlot.state != SlotState.DONE).scalar_subquery())
    pools = {(per, redundancy): (int(n or 0), int(left or 0)) for per, redundancy, n, left in session.execute(
        select(GoldPool.items_per_hit, GoldPool.assignments_per_item, hits, slots)
        .where(GoldPool.project_id == project.id))}
    waiting = select(func.count()).select_from(Item).where(
        Item.project_id == project.id, Item.is_gold.is_(True), Item.hit_id.is_(None), Item.gold_retired_at.is_(None))
    exhausted = select(func.count()).select_from(GoldStream).where(
        GoldStream.project_id == project.id, GoldStream.exhausted_at.is_not(None))
    loose, stuck = session.execute(select(waiting.scalar_subquery(), exhausted.scalar_subquery())).one()
    supply = {}
    for batch in batches:
        per = batch.items_per_hit
        hits_needed = gold_tasks_needed(batch.hit_count, project.gold_rate)
        available, left = pools.get((per, batch.assignments_per_item), (0, 0))
        supply[batch.id] = (hits_needed, available, left)
    short = _short_hits(session, [b for b in batches if project.gold_rate > 0 and supply[b.id][1] > 0])
    return {b.id: GoldSupply(project.gold_rate, needed, needed * b.items_per_hit, available,
                             available * b.items_per_hit, left, int(loose or 0), int(stuck or 0), b.id in short)
            for b in batches for needed, available, left in [supply[b.id]]}


def _short_hits(session: Session, batches: Sequence[Batch]) -> set[int]:
    """The batches (of these) whose last HIT is short; no query when none could matter."""
    if not batches:
        return set()
    return set(session.scalars(select(Hit.batch_id).join(Batch, Batch.id == Hit.batch_id).where(
        Hit.batch_id.in_([b.id for b in batches]), Hit.is_gold.is_(False), Hit.item_count < Batch.items_per_hit)
        .distinct()))


# The gold HITs just inserted (ids first..last of the pool) get the pool's redundancy in slots of its queue.
_N = slot_numbers()
_MAKE_GOLD_SLOTS = make_slots(
    select(Hit.id, null(), bindparam("pool_id", type_=Integer), _N.c.k, literal_column("0"))
    .select_from(Hit).join(_N, true())
    .where(Hit.gold_pool_id == bindparam("pool_id"), Hit.id.between(bindparam("first"), bindparam("last"))))


def has_gold(session: Session, project: Project) -> bool:
    """Whether gold tasks will be served in the project's batches: a gold rate and gold items to serve."""
    if project.gold_rate <= 0:
        return False
    return session.scalar(select(Item.id).where(Item.project_id == project.id, Item.is_gold.is_(True),
                                                Item.gold_retired_at.is_(None)).limit(1)) is not None
