"""What ties a platform's work to ours: a burst (part of a batch sent to a platform), the platform's tasks made
for it (MTurk HITs, a Prolific study), its assignments tied to ours, the mirrored blocks, and the job log of every
call made to the platform."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from base.clock import utcnow
from base.db import Base, JSONDoc, UTCDateTime, enum_column


class BurstStatus(enum.StrEnum):
    PUBLISHING = "publishing"  # our side is ready; the platform's tasks are being made (a failure stays here)
    OPEN = "open"  # out there
    CANCELLING = "cancelling"  # cancelled here; the platform's tasks are being ended
    CLOSED = "closed"  # ended there; unused places back in the parent batch


class PlatformBatch(Base):
    """A burst: `hits` HITs of `parent_batch_id` whose free places moved to a batch of their own (`batch_id`, with
    the platform's fee terms, served only to that platform's workers) and were published on the platform."""

    __tablename__ = "platform_batch"
    __table_args__ = (UniqueConstraint("parent_batch_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), unique=True)
    parent_batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    status: Mapped[BurstStatus] = mapped_column(enum_column(BurstStatus, "burst_status"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    hits: Mapped[int] = mapped_column(Integer)
    slots: Mapped[int] = mapped_column(Integer)  # real places moved from the parent
    tasks: Mapped[int] = mapped_column(Integer)  # platform places published: slots + gold served among them
    redundancy: Mapped[int] = mapped_column(Integer)
    split: Mapped[bool] = mapped_column(Boolean, default=False)
    completion_code: Mapped[str | None] = mapped_column(String(64))
    estimate: Mapped[dict[str, Any]] = mapped_column(JSONDoc)  # the cost estimate the burst was made under
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PlatformTask(Base):
    """One task the platform made for a burst (an MTurk HIT, a Prolific study)."""

    __tablename__ = "platform_task"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform_batch_id: Mapped[int] = mapped_column(ForeignKey("platform_batch.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    group_id: Mapped[str | None] = mapped_column(String(255))  # MTurk's HITTypeId
    token: Mapped[str | None] = mapped_column(String(255))
    max_assignments: Mapped[int] = mapped_column(Integer)
    reward_cents: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # expired / stopped by us


class PlatformAssignment(Base):
    """One of our assignments done as (part of) a platform assignment: an MTurk assignmentId is one task of ours
    (seq 0), a Prolific session several (seq 0, 1, ...). A reload of the platform's page finds the same task; the
    sync checks who submitted it and mirrors our review there."""

    __tablename__ = "platform_assignment"
    __table_args__ = (UniqueConstraint("platform", "external_id", "seq"),
                      Index("ix_platform_assignment_burst", "platform_batch_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    external_task_id: Mapped[str | None] = mapped_column(String(255))  # MTurk's hitId
    external_worker_id: Mapped[str] = mapped_column(String(255))
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"), unique=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    platform_batch_id: Mapped[int | None] = mapped_column(ForeignKey("platform_batch.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlatformSubmission(Base):
    """A submission as the platform lists it, and what the sync did about it: our review mirrored
    ("approved" / "rejected"), the top-up sent as a bonus, or why it was refused (`problem`: no work of ours
    recorded for it, or submitted by another worker id than the one who did our task)."""

    __tablename__ = "platform_submission"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform_batch_id: Mapped[int] = mapped_column(ForeignKey("platform_batch.id", ondelete="CASCADE"),
                                                   index=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    external_task_id: Mapped[str] = mapped_column(String(255))
    external_worker_id: Mapped[str] = mapped_column(String(255))
    external_status: Mapped[str] = mapped_column(String(32))
    mirrored: Mapped[str | None] = mapped_column(String(16))
    bonus_cents: Mapped[int] = mapped_column(Integer, default=0)
    problem: Mapped[str | None] = mapped_column(Text)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    mirrored_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PlatformBlock(Base):
    """A block of ours mirrored on the platform (once per worker and platform)."""

    __tablename__ = "platform_block"
    __table_args__ = (UniqueConstraint("platform", "external_worker_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_worker_id: Mapped[str] = mapped_column(String(255))
    block_id: Mapped[int] = mapped_column(ForeignKey("worker_block.id", ondelete="CASCADE"))
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlatformCall(Base):
    """The job log: one call to a platform, with our idempotency key, its outcome and each retry. A run of
    successful, unretried listing calls of one operation in one job (a sync reading every HIT's assignments) is
    one row of `calls` calls, from `target` to `last_target`: a sync every few minutes of a large burst would
    otherwise write thousands of rows that say nothing each."""

    __tablename__ = "platform_call"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform_batch_id: Mapped[int | None] = mapped_column(ForeignKey("platform_batch.id", ondelete="CASCADE"),
                                                          index=True)
    platform: Mapped[str] = mapped_column(String(32))
    job: Mapped[str] = mapped_column(String(32))  # publish | sync | cancel | status
    operation: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    target: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    retried_errors: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    ms: Mapped[int] = mapped_column(Integer)
    calls: Mapped[int] = mapped_column(Integer, default=1)
    last_target: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
