"""The market's tables: projects (labeling jobs), guideline versions, items, batches, HITs and their slots, gold
pools, and the assignments and answers of the work done on them. They live in the lowest room because every room
reads them (progress and exports read answers); the rules that write them live in the rooms above (the engine
writes assignments and answers)."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from base.clock import utcnow
from base.db import Base, JSONDoc, UTCDateTime, enum_column


class BatchStatus(enum.StrEnum):
    OPEN = "open"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    COMPLETE = "complete"


class AssignmentStatus(enum.StrEnum):
    LEASED = "leased"
    SUBMITTED = "submitted"
    RETURNED = "returned"
    EXPIRED = "expired"
    APPROVED = "approved"
    REJECTED = "rejected"


class QualityAction(enum.StrEnum):
    FLAG = "flag"  # put the worker up for ops review
    BLOCK = "block"  # block them from the project at once (and flag, so ops see it)


class SlotState(enum.StrEnum):
    FREE = "free"
    LEASED = "leased"
    DONE = "done"


class Project(Base):
    __tablename__ = "project"
    __table_args__ = (
        CheckConstraint("reward_cents >= 0", name="reward_nonnegative"),
        CheckConstraint("items_per_hit BETWEEN 1 AND 100", name="items_per_hit_range"),
        CheckConstraint("assignments_per_item BETWEEN 1 AND 50", name="redundancy_range"),
        CheckConstraint("assignment_duration_seconds > 0", name="lease_positive"),
        CheckConstraint("lifetime_seconds > 0", name="lifetime_positive"),
        CheckConstraint("auto_approval_delay_seconds >= 0", name="approval_delay_nonnegative"),
        CheckConstraint("gold_rate = 0 OR (gold_rate >= 0.05 AND gold_rate <= 0.10)", name="gold_rate_range"),
        CheckConstraint("guideline_version >= 1", name="guideline_version_positive"),
        CheckConstraint("min_gold_accuracy BETWEEN 0 AND 1", name="min_gold_accuracy_range"),
        CheckConstraint("min_judged_answers >= 1", name="min_judged_answers_positive"),
        CheckConstraint("accuracy_window >= 1", name="accuracy_window_positive"),
        CheckConstraint("action_confidence >= 0.5 AND action_confidence < 1", name="action_confidence_range"),
        CheckConstraint("flag_confidence >= 0.5 AND flag_confidence <= action_confidence",
                        name="flag_confidence_range"),
        CheckConstraint("fast_answer_fraction BETWEEN 0 AND 1", name="fast_answer_fraction_range"),
        CheckConstraint("target_wage_cents_per_hour >= 0", name="target_wage_nonnegative"),
        CheckConstraint("estimated_seconds IS NULL OR estimated_seconds > 0", name="estimate_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    label_schema: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    reward_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    items_per_hit: Mapped[int] = mapped_column(Integer, default=1)
    assignments_per_item: Mapped[int] = mapped_column(Integer, default=3)
    assignment_duration_seconds: Mapped[int] = mapped_column(Integer, default=600)
    lifetime_seconds: Mapped[int] = mapped_column(Integer, default=7 * 86400)
    auto_approval_delay_seconds: Mapped[int] = mapped_column(Integer, default=3 * 86400)
    gold_rate: Mapped[Decimal] = mapped_column(Numeric(4, 3), default=Decimal("0.08"))
    # Quality rules (see qualification/judgement.py): once a worker has min_judged_answers answers whose truth is
    # known (gold) or estimated by the crowd, they are flagged when the posterior probability that their accuracy
    # is below min_gold_accuracy passes flag_confidence, and quality_action is taken past action_confidence.
    min_gold_accuracy: Mapped[Decimal] = mapped_column(Numeric(3, 2), default=Decimal("0.90"))
    min_judged_answers: Mapped[int] = mapped_column(Integer, default=10)
    quality_action: Mapped[QualityAction] = mapped_column(enum_column(QualityAction, "quality_action"),
                                                          default=QualityAction.FLAG)
    flag_confidence: Mapped[Decimal] = mapped_column(Numeric(4, 3), default=Decimal("0.90"))
    action_confidence: Mapped[Decimal] = mapped_column(Numeric(4, 3), default=Decimal("0.99"))
    accuracy_window: Mapped[int] = mapped_column(Integer, default=20)
    fast_answer_fraction: Mapped[Decimal] = mapped_column(Numeric(3, 2), default=Decimal("0.25"))
    # Show a worker the correct answer and its explanation right after they miss a gold item.
    gold_feedback: Mapped[bool] = mapped_column(Boolean, default=False)
    # Copied onto each batch at publish; NULL: anyone may work.
    qualification_requirements: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    guideline_version: Mapped[int] = mapped_column(Integer, default=1)
    # Pay (payments/wage/): the requester's estimate of a HIT's working time, checked against the wage floor at
    # publish; the hourly wage that measured times are topped up to (auto_top_up off: only up to the floor).
    estimated_seconds: Mapped[int | None] = mapped_column(Integer)
    target_wage_cents_per_hour: Mapped[int] = mapped_column(Integer, default=1500)
    auto_top_up: Mapped[bool] = mapped_column(Boolean, default=True)
    # Opt-in: the auto-approval job rejects a submitted assignment that missed a gold item (feedback says so).
    reject_gold_misses: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GuidelineVersion(Base):
    """One immutable version of a project's instructions; answers record the version they were made under."""

    __tablename__ = "guideline_version"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    instructions: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Item(Base):
    """A unit of work. Gold items carry a known answer; they are grouped into the gold HITs of a gold pool (served
    into workers' streams in place of real work) or fill up the last, short HIT of a batch. Gold items are in no
    batch: they never count toward a batch's items or progress."""

    __tablename__ = "item"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        CheckConstraint("(is_gold AND gold_answer IS NOT NULL) OR (NOT is_gold AND gold_answer IS NULL)",
                        name="gold_has_answer"),
        Index("ix_item_project_unpublished", "project_id", "is_gold", "hit_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_answer: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
    gold_explanation: Mapped[str | None] = mapped_column(Text)
    # A retired gold item is never served again and no answer to it counts toward anyone's accuracy.
    gold_retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id"), index=True)
    hit_id: Mapped[int | None] = mapped_column(ForeignKey("hit.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Batch(Base):
    """A publication of items as HITs. Pay and redundancy are copied from the project when it is published."""

    __tablename__ = "batch"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key"),
        # Every request for work lists the open batches; closed ones pile up and are never read by it.
        Index("ix_batch_open", "expires_at", postgresql_where=text("status = 'open'"),
              sqlite_where=text("status = 'open'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[BatchStatus] = mapped_column(enum_column(BatchStatus, "batch_status"))
    created_by_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    reward_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    items_per_hit: Mapped[int] = mapped_column(Integer)
    assignments_per_item: Mapped[int] = mapped_column(Integer)
    assignment_duration_seconds: Mapped[int] = mapped_column(Integer)
    auto_approval_delay_seconds: Mapped[int] = mapped_column(Integer)
    # Snapshot of the project's (or the publisher's own); NULL: anyone may work on it.
    qualification_requirements: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    item_count: Mapped[int] = mapped_column(Integer)
    hit_count: Mapped[int] = mapped_column(Integer)
    # Pay terms copied at publish (payments/wage/, base/money.py): the fee terms as they apply to this batch (our
    # rate, or the platform's for a burst: base.money.FeeModel's fields), the wage target and floor, the
    # requester's time estimate.
    estimated_seconds: Mapped[int | None] = mapped_column(Integer)
    target_wage_cents_per_hour: Mapped[int] = mapped_column(Integer, default=1500)
    wage_floor_cents_per_hour: Mapped[int] = mapped_column(Integer, default=800)
    auto_top_up: Mapped[bool] = mapped_column(Boolean, default=True)
    fee_model: Mapped[str] = mapped_column(String(20), default="platform")
    fee_rate: Mapped[Decimal] = mapped_column(Numeric(5, 4), default=Decimal(0))
    fee_large_hit_rate: Mapped[Decimal] = mapped_column(Numeric(5, 4), default=Decimal(0))
    fee_large_hit_assignments: Mapped[int] = mapped_column(Integer, default=0)
    fee_minimum_cents: Mapped[int] = mapped_column(Integer, default=0)
    # A burst (platforms/burst.py): the batch whose HITs' places it took, and the platform that serves it. Such a
    # batch is served only to that platform's workers, through its task page.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    platform: Mapped[str | None] = mapped_column(String(32))
    # The measured working time of a HIT (the median of per-HIT medians, once 10 submissions exist), kept fresh by
    # the payments cycle so that a task shows its measured hourly rate without computing it.
    measured_seconds: Mapped[Decimal | None] = mapped_column(Numeric(10, 3))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class GoldPool(Base):
    """A project's gold HITs of one shape (items per HIT, assignments per item). Its HITs serve every batch of that
    shape, in place of the batch's real work, and are used up like real HITs: each has `assignments_per_item`
    slots, so no gold item is ever seen by more workers than a real item of the same batches."""

    __tablename__ = "gold_pool"
    __table_args__ = (UniqueConstraint("project_id", "items_per_hit", "assignments_per_item"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    items_per_hit: Mapped[int] = mapped_column(Integer)
    assignments_per_item: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Hit(Base):
    """A group of `items_per_hit` items, each to be answered by `max_assignments` different workers. A gold HIT
    (all of its items gold) belongs to a gold pool and is served as an injected task of any batch of the pool's
    shape; its slots belong to the pool, not to a batch."""

    __tablename__ = "hit"
    __table_args__ = (Index("ix_hit_gold_pool", "gold_pool_id", "gold_rank", postgresql_where=text("is_gold"),
                            sqlite_where=text("is_gold")),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    max_assignments: Mapped[int] = mapped_column(Integer)
    item_count: Mapped[int] = mapped_column(Integer)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_pool_id: Mapped[int | None] = mapped_column(ForeignKey("gold_pool.id", ondelete="CASCADE"))
    # A gold HIT's number in its pool: 0, 1, 2, ... NULL for other HITs, and for a gold HIT with a retired item:
    # no longer served.
    gold_rank: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class HitSlot(Base):
    """One of a HIT's `max_assignments` places, in the queue of its batch (a real HIT) or of its gold pool (a gold
    HIT). A lease past `lease_expires_at` frees its slot by itself: a claim takes lapsed slots first, so
    correctness never waits for a sweeper. Among free slots, the lowest slot number goes first, which fills every
    HIT's first answer before any HIT's second: breadth-first without counters."""

    __tablename__ = "hit_slot"
    __table_args__ = (
        UniqueConstraint("hit_id", "slot_no"),
        # Free slots in serving order. Leased slots are not in it: a claim never walks past live leases, however
        # many workers hold one.
        Index("ix_hit_slot_free", "batch_id", "neg_priority", "slot_no", "id",
              postgresql_where=text("state = 'free'"), sqlite_where=text("state = 'free'")),
        # Leased slots by lease end: the lapsed ones are found without a scan. (The predicate is not the state, so
        # that no lookup of one slot by its state is ever planned as a walk through every live lease.)
        Index("ix_hit_slot_lease_end", "batch_id", "lease_expires_at",
              postgresql_where=text("lease_expires_at IS NOT NULL"),
              sqlite_where=text("lease_expires_at IS NOT NULL")),
        # Submit and return find (and lock) the slot of an assignment; without it each would scan every slot.
        Index("ix_hit_slot_assignment_id", "assignment_id", postgresql_where=text("assignment_id IS NOT NULL"),
              sqlite_where=text("assignment_id IS NOT NULL")),
        CheckConstraint("(state = 'free') = (assignment_id IS NULL)", name="lease_matches_state"),
        CheckConstraint("(batch_id IS NULL) <> (gold_pool_id IS NULL)", name="one_queue"),
        # The gold pool's queue: the same two orders as a batch's.
        Index("ix_hit_slot_gold_free", "gold_pool_id", "neg_priority", "slot_no", "id",
              postgresql_where=text("state = 'free'"), sqlite_where=text("state = 'free'")),
        Index("ix_hit_slot_gold_lease_end", "gold_pool_id", "lease_expires_at",
              postgresql_where=text("lease_expires_at IS NOT NULL"),
              sqlite_where=text("lease_expires_at IS NOT NULL")),
        Index("ix_hit_slot_reopened_by", "reopened_by_block_id",
              postgresql_where=text("reopened_by_block_id IS NOT NULL"),
              sqlite_where=text("reopened_by_block_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    hit_id: Mapped[int] = mapped_column(ForeignKey("hit.id", ondelete="CASCADE"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    gold_pool_id: Mapped[int | None] = mapped_column(ForeignKey("gold_pool.id", ondelete="CASCADE"))
    slot_no: Mapped[int] = mapped_column(Integer)
    # The negated highest item priority of the HIT: the claim index ascends, so high priority comes first.
    neg_priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[SlotState] = mapped_column(enum_column(SlotState, "slot_state"), default=SlotState.FREE)
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignment.id"))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A slot added when a block excluded an answer to this HIT (restoring its redundancy); a lifted block takes
    # back those still free.
    reopened_by_block_id: Mapped[int | None] = mapped_column(ForeignKey("worker_block.id"))


# A worker holds or has done a HIT at most once (returned and expired assignments do not count).
_ACTIVE = "status IN ('leased', 'submitted', 'approved', 'rejected')"

_LEASED = "status = 'leased'"


class Assignment(Base):
    """One worker's lease on one HIT."""

    __tablename__ = "assignment"
    __table_args__ = (
        Index("ix_assignment_hit_status", "hit_id", "status"),
        Index("uq_assignment_hit_worker_active", "hit_id", "worker_id", unique=True,
              postgresql_where=text(_ACTIVE), sqlite_where=text(_ACTIVE)),
        Index("ix_assignment_worker_status", "worker_id", "status"),
        # One live task per worker: the database, not a lock, settles a worker's racing requests for work.
        Index("uq_assignment_worker_leased", "worker_id", unique=True, postgresql_where=text(_LEASED),
              sqlite_where=text(_LEASED)),
        # Every assignment of a worker on a HIT, whatever its state: a claim passes over HITs the worker returned
        # or let lapse while it finds anything else.
        Index("ix_assignment_hit_worker", "hit_id", "worker_id"),
        # Submitted work waiting for review, oldest first: what auto-approval and bulk reviews walk.
        Index("ix_assignment_awaiting_review", "batch_id", "submitted_at",
              postgresql_where=text("status = 'submitted'"), sqlite_where=text("status = 'submitted'")),
        CheckConstraint("status <> 'rejected' OR review_feedback IS NOT NULL", name="rejection_has_feedback"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    hit_id: Mapped[int] = mapped_column(ForeignKey("hit.id", ondelete="CASCADE"))
    # The batch it was served from, whose terms (reward, lease) it carries; for a gold task, not its HIT's.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    # Never shown to the worker (see market/work_schemas.py).
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[AssignmentStatus] = mapped_column(enum_column(AssignmentStatus, "assignment_status"))
    guideline_version: Mapped[int] = mapped_column(Integer)
    leased_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    returned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Server-measured: lease start to submit or return.
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    client_meta: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    # The position in the worker's gold stream this task was drawn for (qualification/gold.py); its submit moves the
    # stream on. NULL: served off the schedule (no gold to inject), so it moves nothing. A returned or lapsed task
    # gives its position back: the next task is drawn for the same position, gold or not alike.
    stream_position: Mapped[int | None] = mapped_column(Integer)
    # Review (payments/review/): when and by whom (NULL: the auto-approval job), and the feedback the worker
    # sees on a rejection. A reversed rejection is approved, and keeps its reversal time.
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    review_feedback: Mapped[str | None] = mapped_column(Text)
    rejection_reversed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Answer(Base):
    """One worker's answer to one item, with its provenance."""

    __tablename__ = "answer"
    __table_args__ = (
        UniqueConstraint("assignment_id", "item_id"),
        Index("ix_answer_project_id", "project_id", "id"),
        Index("ix_answer_excluded_by", "excluded_by_block_id",
              postgresql_where=text("excluded_by_block_id IS NOT NULL"),
              sqlite_where=text("excluded_by_block_id IS NOT NULL")),
        CheckConstraint("duration_ms >= 0", name="duration_nonnegative"),
        # A worker's scored gold answers, newest last: their accuracy is recomputed from these.
        Index("ix_answer_gold_worker", "worker_id", "project_id", "id",
              postgresql_where=text("gold_correct IS NOT NULL"), sqlite_where=text("gold_correct IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), index=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    value: Mapped[Any] = mapped_column(JSONDoc)
    guideline_version: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    duration_ms: Mapped[int] = mapped_column(Integer)
    client_meta: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    # Set while a block on the worker excludes this answer (kept, never deleted; lifting the block restores it).
    excluded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    excluded_by_block_id: Mapped[int | None] = mapped_column(ForeignKey("worker_block.id"))
    # For an answer to a gold item: whether it matched the known answer (re-scored when ops correct the item).
    gold_correct: Mapped[bool | None] = mapped_column(Boolean)
