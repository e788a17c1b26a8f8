"""Accounts (requesters, ops staff, crowd workers) and their API tokens."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
    or_,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from base.clock import utcnow
from base.db import Base, JSONDoc, UTCDateTime, enum_column
from base.identity import Role


class Account(Base):
    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"))
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    # Shown as typed; unique ignoring case through username_key, the lower-cased username (usernames are ASCII).
    # The exact-case constraint of 0001 is implied by that one, and kept (see migration acc1).
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    username_key: Mapped[str | None] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="account", lazy="raise")

    __table_args__ = (CheckConstraint("email IS NOT NULL OR username IS NOT NULL", name="has_login"),
                      Index("uq_account_username_key", "username_key", unique=True))

    @validates("username")
    def _set_username_key(self, _key: str, username: str | None) -> str | None:
        self.username_key = None if username is None else username_key(username)
        return username


def username_key(username: str) -> str:
    """A username as it is unique: ignoring case."""
    return username.lower()


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    # sha256 of the whole token: tokens carry 256 random bits, so a fast hash is enough (unlike passwords).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # None: until revoked
    # Issued by a login (or sign-up): an account keeps only its newest few of these.
    login: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    account: Mapped[Account] = relationship(back_populates="tokens", lazy="joined")


class ExternalIdentity(Base):
    """A worker's id on another platform (e.g. an MTurk WorkerId), mapped to one account."""

    __tablename__ = "external_identity"
    __table_args__ = (UniqueConstraint("platform", "external_id"), UniqueConstraint("account_id", "platform"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerBlock(Base):
    """A block on a worker: from one project, or from all work when project_id is NULL."""

    __tablename__ = "worker_block"
    __table_args__ = (Index("ix_worker_block_account_active", "account_id", "lifted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lifted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @classmethod
    def in_force(cls, now: Any) -> ColumnElement[bool]:
        """SQL: the block is in force at `now` (a value or a bound parameter): not lifted, not past its expiry."""
        return and_(cls.lifted_at.is_(None), or_(cls.expires_at.is_(None), cls.expires_at > now))


class FlagReason(enum.StrEnum):
    # The accuracy judgement (qualification/judgement.py), named by the evidence that decided it: the gold answers
    # alone, or the gold answers together with agreement with the crowd.
    GOLD_BELOW_THRESHOLD = "GOLD_BELOW_THRESHOLD"
    LOW_AGREEMENT = "LOW_AGREEMENT"
    # Patterns, flagged for review and never acted on automatically.
    FAST_ANSWERS = "FAST_ANSWERS"
    SAME_LABEL = "SAME_LABEL"
    FREQUENT_RETURNS = "FREQUENT_RETURNS"
    GOLD_CONTESTED = "GOLD_CONTESTED"
    MANUAL = "MANUAL"


class FlagState(enum.StrEnum):
    OPEN = "open"
    BLOCKED = "blocked"
    DISMISSED = "dismissed"


class WorkerFlag(Base):
    """A worker put up for ops review, with the evidence; ops block (through a WorkerBlock), unblock or dismiss."""

    __tablename__ = "worker_flag"
    __table_args__ = (Index("ix_worker_flag_state", "state", "id"), Index("ix_worker_flag_worker", "account_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    reason: Mapped[FlagReason] = mapped_column(enum_column(FlagReason, "flag_reason"))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)  # metric, threshold, n, window
    state: Mapped[FlagState] = mapped_column(enum_column(FlagState, "flag_state"))
    block_id: Mapped[int | None] = mapped_column(ForeignKey("worker_block.id"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))  # None: raised by the system
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class WorkerFlagEvent(Base):
    """The audit trail of a flag: who did what to it, when, and why."""

    __tablename__ = "worker_flag_event"
    __table_args__ = (Index("ix_worker_flag_event_flag", "flag_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("worker_flag.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(20))  # opened, blocked, applied, unblocked, restored, dismissed
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class WorkerStats(Base):
    """A worker's quality in one project, recomputed from their answers after each submit (so a lost update is
    mended by the next one); overall figures are sums over projects. The model figures are the posterior of the
    worker's accuracy given their gold answers and their agreement with the crowd (qualification/judgement.py)."""

    __tablename__ = "worker_stats"
    __table_args__ = (Index("ix_worker_stats_project", "project_id", "worker_id"),)

    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    gold_seen: Mapped[int] = mapped_column(Integer, default=0)
    gold_correct: Mapped[int] = mapped_column(Integer, default=0)
    rolling_seen: Mapped[int] = mapped_column(Integer, default=0)
    rolling_correct: Mapped[int] = mapped_column(Integer, default=0)
    tasks: Mapped[int] = mapped_column(Integer, default=0)
    median_ms: Mapped[int | None] = mapped_column(Integer)
    fast_answers: Mapped[int] = mapped_column(Integer, default=0)
    # Answers compared with the other workers' majority on items with enough answers, and how many agreed.
    agreement_counted: Mapped[int] = mapped_column(Integer, default=0)
    agreement_agreed: Mapped[int] = mapped_column(Integer, default=0)
    # The posterior mean and 90% credible interval of the worker's accuracy, the probability that it is below the
    # project's minimum, and how many answers (gold, and compared with the crowd) it rests on.
    model_accuracy: Mapped[float | None] = mapped_column(Float)
    model_low: Mapped[float | None] = mapped_column(Float)
    model_high: Mapped[float | None] = mapped_column(Float)
    p_below: Mapped[float | None] = mapped_column(Float)
    judged_answers: Mapped[int] = mapped_column(Integer, default=0)
    # Tasks leased in the project, and how many of them the worker gave back (returned or let lapse).
    leases: Mapped[int] = mapped_column(Integer, default=0)
    given_back: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
