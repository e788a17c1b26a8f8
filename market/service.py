"""Projects, guideline versions, publishing batches of HITs, and progress. No flask here."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.db import keyset_page
from market.labels import AnswerError, narrowing, validate_answer
from market.models import (
    Answer,
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    GoldPool,
    GoldStream,
    GuidelineVersion,
    Hit,
    HitSlot,
    Item,
    Project,
    SlotState,
)
from market.problems import Conflict, IdempotencyConflict, InvalidInput, NotFound
from market.scoring import rescore_item
from qualification.gold import gold_tasks_needed
from qualification.service import check_requirements
from workers.models import Actor, Role

PUBLISH_CHUNK = 10_000
_MAX_LISTED_ERRORS = 100


# ---- access ---------------------------------------------------------------------------------------------

def get_project(session: Session, *, project_id: int, account: Actor, write: bool = False,
                lock: bool = False) -> Project:
    """The project if the account may see it (owner, or ops for reads); others get 404, never 403."""
    stmt = select(Project).where(Project.id == project_id)
    if lock:
        stmt = stmt.with_for_update()
    project = session.scalar(stmt)
    if project is None or not _can_access(project, account, write):
        raise NotFound(f"Project {project_id} not found.")
    return project


def _can_access(project: Project, account: Actor, write: bool) -> bool:
    if project.owner_id == account.id:
        return True
    return account.role == Role.OPS and not write


def list_projects(session: Session, *, account: Actor, after: int | None, limit: int) -> list[Project]:
    """Projects the account may see, by id."""
    owner = None if account.role == Role.OPS else account.id
    return keyset_page(session, Project, after=after, limit=limit, equal=((Project.owner_id, owner),))


# ---- projects and guidelines ----------------------------------------------------------------------------

_SETTINGS = ("reward_cents", "currency", "items_per_hit", "assignments_per_item", "assignment_duration_seconds",
             "lifetime_seconds", "auto_approval_delay_seconds", "gold_rate", "min_gold_accuracy", "min_judged_answers",
             "flag_confidence", "quality_action", "action_confidence", "accuracy_window", "fast_answer_fraction",
             "gold_feedback")


def _check_confidences(flag: Decimal, action: Decimal) -> None:
    if flag > action:
        raise InvalidInput("A worker is flagged before the action is taken: flag_confidence must not exceed "
                           "action_confidence.", errors={"flag_confidence": [f"exceeds action_confidence {action}"]})


def create_project(session: Session, *, owner: Actor, data: dict[str, Any], now: dt.datetime) -> Project:
    """Create a project with its first guideline version."""
    fields = {k: data[k] for k in _SETTINGS if k in data}
    requirements = check_requirements(session, owner_id=owner.id,
                                      requirements=data.get("qualification_requirements"))
    _check_confidences(fields.get("flag_confidence", Decimal("0.90")), fields.get("action_confidence", Decimal("0.99")))
    project = Project(owner_id=owner.id, title=data["title"], description=data.get("description", ""),
                      label_schema=data["label_schema"], guideline_version=1, created_at=now, updated_at=now,
                      qualification_requirements=requirements, **fields)
    session.add(project)
    session.flush()
    session.add(GuidelineVersion(project_id=project.id, version=1, instructions=data.get("instructions", ""),
                                 created_by_id=owner.id, created_at=now))
    session.commit()
    return project


def current_instructions(session: Session, project: Project) -> str:
    return session.scalar(select(GuidelineVersion.instructions).where(
        GuidelineVersion.project_id == project.id, GuidelineVersion.version == project.guideline_version)) or ""


def has_published(session: Session, project: Project) -> bool:
    return session.scalar(select(Batch.id).where(Batch.project_id == project.id).limit(1)) is not None


def update_project(session: Session, *, project: Project, account: Actor, data: dict[str, Any],
                   now: dt.datetime) -> Project:
    """Change settings; new instructions become a new guideline version. Published batches keep their terms. A new
    label schema must fit every gold answer and, once work is published, every answer the old one accepted (see
    `_orphaned`); gold answers are then re-scored under it and their workers judged again, in the same
    transaction."""
    schema_changed = "label_schema" in data and data["label_schema"] != project.label_schema
    if schema_changed:
        orphaned = _orphaned(session, project, data["label_schema"])
        if orphaned:
            session.rollback()
            raise Conflict("The new label schema does not fit answers the project holds; nothing was changed. "
                           "Keep their keys (add categories, reword names), correct the gold items first, or "
                           "create a new project.", errors=orphaned)
    _check_confidences(data.get("flag_confidence", project.flag_confidence),
                       data.get("action_confidence", project.action_confidence))
    for key in ("title", "description", "label_schema", *_SETTINGS):
        if key in data:
            setattr(project, key, data[key])
    if "qualification_requirements" in data:
        project.qualification_requirements = check_requirements(
            session, owner_id=project.owner_id, requirements=data["qualification_requirements"])
    if "instructions" in data and data["instructions"] != current_instructions(session, project):
        project.guideline_version += 1
        session.add(GuidelineVersion(project_id=project.id, version=project.guideline_version,
                                     instructions=data["instructions"], created_by_id=account.id, created_at=now))
    project.updated_at = now
    if schema_changed:
        session.flush()
        for item in session.scalars(select(Item).where(Item.project_id == project.id, Item.is_gold.is_(True))):
            rescore_item(session, item=item, now=now)
    session.commit()
    return project


def _orphaned(session: Session, project: Project, schema: dict[str, Any]) -> dict[str, list[str]]:
    """What a new label schema would orphan: once work is published, any answer the old schema accepts (workers
    hold tasks under it and answers are stored under it), and always any gold answer (workers answering the new
    schema's keys would be scored wrong against it forever). At most _MAX_LISTED_ERRORS gold items are named."""
    problems: dict[str, list[str]] = {}
    if has_published(session, project) and (why := narrowing(project.label_schema, schema)):
        problems["label_schema"] = [f"work is published: the schema may only widen, and this {why}"]
    gold = session.execute(select(Item.external_id, Item.gold_answer).where(
        Item.project_id == project.id, Item.is_gold.is_(True)).order_by(Item.id))
    for external_id, answer in gold:
        try:
            validate_answer(schema, answer)
        except AnswerError as exc:
            problems[f"gold:{external_id}"] = [f"the known answer {json.dumps(answer)} {exc}"]
            if len(problems) > _MAX_LISTED_ERRORS:
                break
    return problems


def list_guidelines(session: Session, *, project: Project) -> list[GuidelineVersion]:
    stmt = select(GuidelineVersion).where(GuidelineVersion.project_id == project.id)
    return list(session.scalars(stmt.order_by(GuidelineVersion.version)))


def get_guideline(session: Session, *, project: Project, version: int) -> GuidelineVersion:
    found = session.scalar(select(GuidelineVersion).where(
        GuidelineVersion.project_id == project.id, GuidelineVersion.version == version))
    if found is None:
        raise NotFound(f"Guideline version {version} not found.")
    return found


# ---- items ----------------------------------------------------------------------------------------------

def list_items(session: Session, *, project: Project, after: int | None, limit: int,
               gold: bool | None = None, batch_id: int | None = None) -> list[Item]:
    return keyset_page(session, Item, after=after, limit=limit, equal=(
        (Item.project_id, project.id), (Item.is_gold, gold), (Item.batch_id, batch_id)))


def get_item(session: Session, *, project: Project, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.project_id != project.id:
        raise NotFound(f"Item {item_id} not found.")
    return item


# ---- batches --------------------------------------------------------------------------------------------

def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def publish_batch(session: Session, *, project_id: int, account: Actor, now: dt.datetime, name: str = "",
                  item_ids: Sequence[int] | None = None, external_ids: Sequence[str] | None = None,
                  idempotency_key: str | None = None,
                  qualification_requirements: list[dict[str, Any]] | None = None) -> tuple[Batch, bool]:
    """Publish items as HITs; returns (batch, created). A repeated idempotency key returns the first batch.
    The batch takes the project's qualification requirements unless given its own ([]: none)."""
    request_print = fingerprint({"name": name, "item_ids": item_ids, "external_ids": external_ids,
                                 "qualification_requirements": qualification_requirements})
    # Lock the project row: concurrent publishes of one project queue up instead of racing for items.
    project = get_project(session, project_id=project_id, account=account, write=True, lock=True)
    if idempotency_key is not None:
        replay = _replay(session, project.id, idempotency_key, request_print)
        if replay is not None:
            return replay, False
    requirements = (project.qualification_requirements if qualification_requirements is None else
                    check_requirements(session, owner_id=project.owner_id, requirements=qualification_requirements))
    batch = Batch(project_id=project.id, name=name, status=BatchStatus.OPEN, created_by_id=account.id,
                  idempotency_key=idempotency_key, request_fingerprint=request_print,
                  reward_cents=project.reward_cents, currency=project.currency,
                  items_per_hit=project.items_per_hit, assignments_per_item=project.assignments_per_item,
                  assignment_duration_seconds=project.assignment_duration_seconds,
                  auto_approval_delay_seconds=project.auto_approval_delay_seconds, item_count=0, hit_count=0,
                  qualification_requirements=requirements,
                  created_at=now, status_changed_at=now,
                  expires_at=now + dt.timedelta(seconds=project.lifetime_seconds))
    session.add(batch)
    try:
        session.flush()
    except IntegrityError:  # the same key won a race in another transaction
        session.rollback()
        replay = _replay(session, project_id, idempotency_key or "", request_print)
        if replay is None:
            raise
        return replay, False
    if item_ids is not None or external_ids is not None:
        chunks = _chosen_item_chunks(session, project, item_ids, external_ids)
    else:
        chunks = _unpublished_item_chunks(session, project)
    for ids in chunks:
        _make_hits(session, batch, ids, now)
    if batch.item_count == 0:
        session.rollback()
        raise InvalidInput("There are no unpublished items to publish; import items first.",
                           errors={"item_ids": ["no unpublished, non-gold items selected"]})
    _fill_short_hit(session, project, batch)
    _make_slots(session, batch)
    _make_gold_hits(session, project, batch, now)
    session.commit()
    return batch, True


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
        if len(problems) >= _MAX_LISTED_ERRORS:
            break
    if problems:
        raise InvalidInput(f"{len(problems)} chosen item(s) cannot be published.", errors={field_name: problems})
    ids = [found[key][0] for key in wanted]
    chunk = PUBLISH_CHUNK - PUBLISH_CHUNK % project.items_per_hit  # whole HITs per chunk: only the last may be short
    for start in range(0, len(ids), chunk):
        yield ids[start:start + chunk]


def _insert_hits(session: Session, batch: Batch, groups: list[list[int]], now: dt.datetime,
                 pool: GoldPool | None = None) -> list[int]:
    """Insert a HIT per group of items (gold HITs into `pool`, ranked on from its last); returns their ids."""
    ranks: list[int | None] = [None] * len(groups)
    if pool is not None:
        last = session.scalar(select(func.max(Hit.gold_rank)).where(Hit.gold_pool_id == pool.id))
        ranks = [(0 if last is None else last + 1) + n for n in range(len(groups))]
    rows = {"batch_id": batch.id, "project_id": batch.project_id, "max_assignments": batch.assignments_per_item,
            "is_gold": pool is not None, "gold_pool_id": pool.id if pool is not None else None, "now": now}
    if session.get_bind().dialect.name == "postgresql":
        return _insert_hits_pg(session, rows, groups, ranks)
    hit_ids = session.scalars(
        insert(Hit).returning(Hit.id, sort_by_parameter_order=True),
        [{"batch_id": batch.id, "project_id": batch.project_id, "max_assignments": batch.assignments_per_item,
          "item_count": len(group), "is_gold": rows["is_gold"], "gold_pool_id": rows["gold_pool_id"],
          "gold_rank": r, "created_at": now} for r, group in zip(ranks, groups, strict=True)]).all()
    # Gold items stay out of the batch (its item counts and progress): they belong to the project's gold pool.
    session.execute(update(Item), [{"id": iid, "hit_id": hid, **({} if pool else {"batch_id": batch.id})}
                                   for hid, group in zip(hit_ids, groups, strict=True) for iid in group])
    return list(hit_ids)


# PostgreSQL: HIT ids drawn from the sequence up front, then one INSERT and one UPDATE over unnested arrays. Row by
# row (an executemany of inserts, then of updates by key) publishing ran at about 2,000 items/s.
_NEW_HIT_IDS = text("SELECT nextval(pg_get_serial_sequence('hit', 'id')) FROM generate_series(1, :n)")
_INSERT_HITS_PG = text("""
    INSERT INTO hit (id, batch_id, project_id, max_assignments, item_count, is_gold, gold_pool_id, gold_rank,
                     created_at)
    SELECT u.id, :batch_id, :project_id, :max_assignments, u.item_count, :is_gold, :gold_pool_id, u.gold_rank, :now
    FROM unnest(CAST(:ids AS integer[]), CAST(:counts AS integer[]), CAST(:ranks AS integer[]))
         AS u(id, item_count, gold_rank)""")
_GROUP_ITEMS_PG = """
    UPDATE item SET hit_id = u.hit_id{batch}
    FROM unnest(CAST(:items AS integer[]), CAST(:hits AS integer[])) AS u(item_id, hit_id) WHERE item.id = u.item_id"""
_GROUP_ITEMS = text(_GROUP_ITEMS_PG.format(batch=", batch_id = :batch_id"))
_GROUP_GOLD_ITEMS = text(_GROUP_ITEMS_PG.format(batch=""))


def _insert_hits_pg(session: Session, rows: dict[str, Any], groups: list[list[int]],
                    ranks: list[int | None]) -> list[int]:
    hit_ids = list(session.scalars(_NEW_HIT_IDS, {"n": len(groups)}).all())
    session.execute(_INSERT_HITS_PG, {**rows, "ids": hit_ids, "counts": [len(g) for g in groups], "ranks": ranks})
    session.execute(_GROUP_GOLD_ITEMS if rows["is_gold"] else _GROUP_ITEMS, {
        "batch_id": rows["batch_id"], "items": [iid for group in groups for iid in group],
        "hits": [hid for hid, group in zip(hit_ids, groups, strict=True) for _ in group]})
    return hit_ids


def _make_hits(session: Session, batch: Batch, item_ids: list[int], now: dt.datetime) -> None:
    per = batch.items_per_hit
    groups = [item_ids[i:i + per] for i in range(0, len(item_ids), per)]
    _insert_hits(session, batch, groups, now)
    batch.item_count += len(item_ids)
    batch.hit_count += len(groups)


def _unpooled_gold(session: Session, project_id: int, limit: int | None = None) -> list[int]:
    stmt = select(Item.id).where(Item.project_id == project_id, Item.is_gold.is_(True), Item.hit_id.is_(None),
                                 Item.gold_retired_at.is_(None)).order_by(Item.id)
    return list(session.scalars(stmt if limit is None else stmt.limit(limit)))


def _short_hit(session: Session, batch: Batch) -> Hit | None:
    """The batch's one HIT with fewer items than the others (its last), if any."""
    return session.scalar(select(Hit).where(Hit.batch_id == batch.id, Hit.is_gold.is_(False),
                                            Hit.item_count < batch.items_per_hit))


def _fill_short_hit(session: Session, project: Project, batch: Batch) -> None:
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


def _make_gold_hits(session: Session, project: Project, batch: Batch, now: dt.datetime) -> None:
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
    hit_ids = _insert_hits(session, batch, groups, now, pool=pool)
    session.execute(_MAKE_GOLD_SLOTS, {"slots": pool.assignments_per_item, "pool_id": pool.id,
                                       "first": min(hit_ids), "last": max(hit_ids)})
    session.execute(update(GoldStream).where(GoldStream.project_id == project.id,
                                             GoldStream.exhausted_at.is_not(None)).values(exhausted_at=None))


def pool_new_gold(session: Session, project: Project, now: dt.datetime) -> None:
    """Gold imported after publishing joins the pool at once, in HITs of the newest batch's shape (the batches
    published before keep their own shape's gold). The caller holds the project's row lock (market/imports.py)."""
    batch = session.scalar(select(Batch).where(Batch.project_id == project.id).order_by(Batch.id.desc()).limit(1))
    if batch is not None:
        _make_gold_hits(session, project, batch, now)


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
    hits_needed = gold_tasks_needed(batch.hit_count, project.gold_rate)
    pool = (select(GoldPool.id).where(GoldPool.project_id == project.id, GoldPool.items_per_hit == batch.items_per_hit,
                                      GoldPool.assignments_per_item == batch.assignments_per_item).scalar_subquery())
    ranked = (Hit.gold_pool_id == pool) & Hit.gold_rank.is_not(None)  # a retired gold HIT has no rank
    hits_available = session.scalar(select(func.count()).select_from(Hit).where(ranked)) or 0
    tasks_left = session.scalar(select(func.count()).select_from(HitSlot).join(Hit, Hit.id == HitSlot.hit_id)
                                .where(ranked, HitSlot.state != SlotState.DONE)) or 0
    waiting = session.scalar(select(func.count()).select_from(Item).where(
        Item.project_id == project.id, Item.is_gold.is_(True), Item.hit_id.is_(None),
        Item.gold_retired_at.is_(None))) or 0
    exhausted = session.scalar(select(func.count()).select_from(GoldStream).where(
        GoldStream.project_id == project.id, GoldStream.exhausted_at.is_not(None))) or 0
    short = project.gold_rate > 0 and hits_available > 0 and _short_hit(session, batch) is not None
    per = batch.items_per_hit
    return GoldSupply(project.gold_rate, hits_needed, hits_needed * per, hits_available, hits_available * per,
                      tasks_left, waiting, exhausted, short)


# Every HIT of the batch gets max_assignments slots, in one set-based statement (numbers from a recursive CTE,
# which SQLite and PostgreSQL both have), carrying the HIT's highest item priority for the claim index: one
# grouping of the batch's items (gold items are in no batch), not a probe per slot.
_MAKE_SLOTS = text("""
    WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k + 1 < :slots),
    top AS (SELECT i.hit_id, max(i.priority) AS priority FROM item i WHERE i.batch_id = :batch_id GROUP BY i.hit_id)
    INSERT INTO hit_slot (hit_id, batch_id, slot_no, neg_priority, state)
    SELECT top.hit_id, :batch_id, n.k, -top.priority, 'free'
    FROM top CROSS JOIN n
""")


def _make_slots(session: Session, batch: Batch) -> None:
    session.execute(_MAKE_SLOTS, {"slots": batch.assignments_per_item, "batch_id": batch.id})


# The gold HITs just inserted (ids first..last of the pool) get the pool's redundancy in slots of its queue.
_MAKE_GOLD_SLOTS = text("""
    WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k + 1 < :slots)
    INSERT INTO hit_slot (hit_id, gold_pool_id, slot_no, neg_priority, state)
    SELECT h.id, :pool_id, n.k, 0, 'free' FROM hit h CROSS JOIN n
    WHERE h.gold_pool_id = :pool_id AND h.id BETWEEN :first AND :last
""")


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
    session.commit()
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
    per_item = (select(Item.id, func.count(Answer.id).label("n"))
                .outerjoin(Answer, (Answer.item_id == Item.id) & Answer.excluded_at.is_(None))
                .where(Item.batch_id == batch.id).group_by(Item.id).subquery())
    progress = Progress(items=batch.item_count, hits=batch.hit_count,
                        assignments_per_item=batch.assignments_per_item)
    for n, count in session.execute(select(per_item.c.n, func.count()).group_by(per_item.c.n)):
        progress.items_by_answer_count[int(n)] = int(count)
        progress.answers += int(n) * int(count)
        if n >= batch.assignments_per_item:
            progress.items_complete += int(count)
    progress.assignments_by_status = {s.value: 0 for s in AssignmentStatus}
    lapsed = Assignment.expires_at <= now
    rows = session.execute(select(Assignment.status, lapsed, func.count())
                           .where(Assignment.batch_id == batch.id, Assignment.is_gold.is_(False))
                           .group_by(Assignment.status, lapsed))
    for status, is_lapsed, count in rows:
        # A lease past its expiry is expired whether or not anything has swept it yet.
        key = AssignmentStatus.EXPIRED if status == AssignmentStatus.LEASED and is_lapsed else status
        progress.assignments_by_status[key.value] += int(count)
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
                elif len(missing) < _MAX_LISTED_ERRORS:
                    missing[str(key)] = ["no such item in this project"]
    if missing:
        raise InvalidInput(f"{len(missing)} item(s) not found; nothing was changed.", errors={"items": missing})
    session.execute(update(Item), [{"id": iid, "priority": p} for iid, p in found.items()])
    hit_ids = list(session.scalars(select(Item.hit_id).where(Item.id.in_(list(found)), Item.hit_id.is_not(None))
                                   .distinct())) if len(found) <= PUBLISH_CHUNK else None
    _refresh_slot_priorities(session, project, hit_ids)
    session.commit()
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
