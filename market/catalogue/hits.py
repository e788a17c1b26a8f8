"""HITs and their slots: items grouped into HITs in one statement per chunk, and a slot row per place to work."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Integer,
    Select,
    Update,
    bindparam,
    column,
    func,
    literal_column,
    null,
    select,
    true,
)
from sqlalchemy.orm import Session

from base.db import UTCDateTime
from market.catalogue.models import (
    Batch,
    GoldPool,
    Hit,
    HitSlot,
    Item,
    SlotState,
)

_HIT, _ITEM, _SLOT = Hit.__table__, Item.__table__, HitSlot.__table__


def _hit(item_count: Any, gold_rank: Any) -> dict[str, Any]:
    """A HIT row, column by column (what is the batch's, or the pool's, is a parameter)."""
    return {"batch_id": bindparam("b_batch_id", type_=Integer),
            "project_id": bindparam("b_project_id", type_=Integer),
            "max_assignments": bindparam("b_max_assignments", type_=Integer), "item_count": item_count,
            "is_gold": bindparam("b_is_gold", type_=Boolean),
            "gold_pool_id": bindparam("b_gold_pool_id", type_=Integer),
            "gold_rank": gold_rank, "created_at": bindparam("now", type_=UTCDateTime())}


def _grouping(item_id: Any, hit_id: Any, *, gold: bool) -> Update:
    """An item into its HIT. Gold items stay out of the batch (its item counts and progress): they belong to the
    project's gold pool."""
    values = {"hit_id": hit_id} if gold else {"hit_id": hit_id, "batch_id": bindparam("b_batch_id")}
    return _ITEM.update().where(_ITEM.c.id == item_id).values(values)


def insert_hits(session: Session, batch: Batch, groups: list[list[int]], now: dt.datetime,
                 pool: GoldPool | None = None) -> list[int]:
    """Insert a HIT per group of items (gold HITs into `pool`, ranked on from its last); returns their ids."""
    ranks: list[int | None] = [None] * len(groups)
    if pool is not None:
        last = session.scalar(select(func.max(Hit.gold_rank)).where(Hit.gold_pool_id == pool.id))
        ranks = [(0 if last is None else last + 1) + n for n in range(len(groups))]
    rows = {"b_batch_id": batch.id, "b_project_id": batch.project_id, "b_max_assignments": batch.assignments_per_item,
            "b_is_gold": pool is not None, "b_gold_pool_id": pool.id if pool is not None else None, "now": now}
    if session.get_bind().dialect.name == "postgresql":
        return _insert_hits_pg(session, rows, groups, ranks)
    hit_ids = session.execute(_INSERT_HIT, [{**rows, "b_item_count": len(group), "b_gold_rank": r}
                                            for r, group in zip(ranks, groups, strict=True)]).scalars().all()
    session.execute(_GROUP_ITEMS[pool is not None], [
        {"b_batch_id": batch.id, "b_item_id": iid, "b_hit_id": hid}
        for hid, group in zip(hit_ids, groups, strict=True) for iid in group])
    return list(hit_ids)


# SQLite: one executemany per step.
_INSERT_HIT = _HIT.insert().values(_hit(bindparam("b_item_count"), bindparam("b_gold_rank"))).returning(
    _HIT.c.id, sort_by_parameter_order=True)
_GROUP_ITEMS = {gold: _grouping(bindparam("b_item_id"), bindparam("b_hit_id"), gold=gold) for gold in (False, True)}

# PostgreSQL: HIT ids drawn from the sequence up front, then one INSERT and one UPDATE over unnested arrays. Row by
# row (an executemany of inserts, then of updates by key) publishing ran at about 2,000 items/s.
_NEW_HIT_IDS = select(func.nextval(func.pg_get_serial_sequence(literal_column("'hit'"), literal_column("'id'")))
                      ).select_from(func.generate_series(literal_column("1"), bindparam("n")))


def _unnest(*arrays: str) -> Any:
    """unnest(:a, :b, ...) AS u(a, b, ...), each parameter an integer array."""
    return func.unnest(*(bindparam(name, type_=ARRAY(Integer)) for name in arrays)).table_valued(
        *(column(name, Integer) for name in arrays)).render_derived(name="u")


_NEW_HITS = _unnest("ids", "counts", "ranks")
_INSERT_HITS_PG = _HIT.insert().from_select(
    ["id", *_hit(None, None)], select(_NEW_HITS.c.ids, *_hit(_NEW_HITS.c.counts, _NEW_HITS.c.ranks).values()))
_GROUPED = _unnest("items", "hits")
_GROUP_ITEMS_PG = {gold: _grouping(_GROUPED.c["items"], _GROUPED.c.hits, gold=gold) for gold in (False, True)}


def _insert_hits_pg(session: Session, rows: dict[str, Any], groups: list[list[int]],
                    ranks: list[int | None]) -> list[int]:
    hit_ids = list(session.scalars(_NEW_HIT_IDS, {"n": len(groups)}).all())
    session.execute(_INSERT_HITS_PG, {**rows, "ids": hit_ids, "counts": [len(g) for g in groups], "ranks": ranks})
    session.execute(_GROUP_ITEMS_PG[rows["b_is_gold"]], {
        "b_batch_id": rows["b_batch_id"], "items": [iid for group in groups for iid in group],
        "hits": [hid for hid, group in zip(hit_ids, groups, strict=True) for _ in group]})
    return hit_ids


def slot_numbers() -> Any:
    """0 .. :slots - 1, from a recursive CTE (which SQLite and PostgreSQL both have)."""
    n = select(literal_column("0").label("k")).cte("n", recursive=True)
    return n.union_all(select(n.c.k + literal_column("1")).where(n.c.k + literal_column("1") < bindparam("slots")))


def make_slots(source: Select) -> Any:
    """Slot rows (hit_id, batch_id, gold_pool_id, slot_no, neg_priority) from `source`, each free."""
    return _SLOT.insert().from_select(["hit_id", "batch_id", "gold_pool_id", "slot_no", "neg_priority", "state"],
                                      source.add_columns(literal_column(f"'{SlotState.FREE.value}'")))


# Every HIT of the batch gets max_assignments slots, in one set-based statement, carrying the HIT's highest item
# priority for the claim index: one grouping of the batch's items (gold items are in no batch), not a probe per
# slot.
_N = slot_numbers()
_TOP = (select(_ITEM.c.hit_id, func.max(_ITEM.c.priority).label("priority"))
        .where(_ITEM.c.batch_id == bindparam("batch_id")).group_by(_ITEM.c.hit_id).cte("top"))
_MAKE_SLOTS = make_slots(select(_TOP.c.hit_id, bindparam("batch_id", type_=Integer), null(), _N.c.k,
                                -_TOP.c.priority).select_from(_TOP).join(_N, true()))
