"""Qualification types (a requester's test with known answers), workers' attempts at them, and grants."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from base.clock import utcnow
from base.db import Base, JSONDoc, UTCDateTime, enum_column


class AttemptStatus(enum.StrEnum):
    STARTED = "started"
    SUBMITTED = "submitted"
    EXPIRED = "expired"


class GrantSource(enum.StrEnum):
    TEST = "test"  # passed the type's test (auto-grant)
    MANUAL = "manual"  # granted by its requester or by ops, with a reason


class QualificationType(Base):
    """What MTurk calls a qualification type: a name workers can hold with an integer value, and the test that
    grants it (questions with known answers, a passing score out of 100)."""

    __tablename__ = "qualification_type"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        CheckConstraint("passing_score BETWEEN 0 AND 100", name="passing_score_range"),
        CheckConstraint("test_duration_seconds > 0", name="test_duration_positive"),
        CheckConstraint("retry_delay_seconds >= 0", name="retry_delay_nonnegative"),
        CheckConstraint("max_attempts IS NULL OR max_attempts >= 1", name="max_attempts_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    label_schema: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    passing_score: Mapped[int] = mapped_column(Integer)
    test_duration_seconds: Mapped[int] = mapped_column(Integer)
    retry_delay_seconds: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int | None] = mapped_column(Integer)  # None: no limit
    auto_grant: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class QualificationQuestion(Base):
    """One test question: what the worker sees (`data`, shaped like an item's) and its known answer."""

    __tablename__ = "qualification_question"
    __table_args__ = (UniqueConstraint("type_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("qualification_type.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    answer: Mapped[Any] = mapped_column(JSONDoc)


class QualificationAttempt(Base):
    """A worker's attempt at a test: started, then submitted (scored) or expired. At most one open per test."""

    __tablename__ = "qualification_attempt"
    __table_args__ = (
        CheckConstraint("score IS NULL OR score BETWEEN 0 AND 100", name="score_range"),
        Index("uq_qualification_attempt_open", "type_id", "worker_id", unique=True,
              postgresql_where=text("status = 'started'"), sqlite_where=text("status = 'started'")),
        Index("ix_qualification_attempt_worker", "worker_id", "type_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("qualification_type.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    status: Mapped[AttemptStatus] = mapped_column(enum_column(AttemptStatus, "attempt_status"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    answers: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)  # question id (as text) -> answer
    score: Mapped[int | None] = mapped_column(Integer)
    passed: Mapped[bool | None] = mapped_column(Boolean)

    def finished_at(self) -> dt.datetime:
        """When the attempt ended (the retry delay counts from here); an open one ends at its expiry."""
        return self.submitted_at or self.expires_at


class QualificationGrant(Base):
    """A worker holding a qualification with a value. Revoking keeps the row (the audit trail); at most one live
    grant per worker and type."""

    __tablename__ = "qualification_grant"
    __table_args__ = (
        Index("uq_qualification_grant_live", "type_id", "worker_id", unique=True,
              postgresql_where=text("revoked_at IS NULL"), sqlite_where=text("revoked_at IS NULL")),
        Index("ix_qualification_grant_worker", "worker_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("qualification_type.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    value: Mapped[int] = mapped_column(Integer)
    source: Mapped[GrantSource] = mapped_column(enum_column(GrantSource, "grant_source"))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("qualification_attempt.id"))
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    revoke_reason: Mapped[str | None] = mapped_column(Text)


class GoldStream(Base):
    """A worker's injection stream in one project: tasks submitted on the schedule and gold among them
    (qualification/gold.py turns these into the next task's odds), and since when a gold turn has found no gold."""

    __tablename__ = "gold_stream"
    __table_args__ = (Index("ix_gold_stream_exhausted", "project_id", postgresql_where=text("exhausted_at IS NOT NULL"),
                            sqlite_where=text("exhausted_at IS NOT NULL")),)

    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    tasks: Mapped[int] = mapped_column(Integer, default=0)
    golds: Mapped[int] = mapped_column(Integer, default=0)
    # Set when a gold turn found no gold HIT for the worker; cleared when one does, or new gold is published.
    exhausted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
