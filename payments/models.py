"""The books: accounts, immutable transactions and their entries, escrow holds, per-assignment pay, payouts.

Double entry: every transaction's entries sum to zero in its one currency; an account's balance is the sum of its
entries, kept on the account row in the same database transaction so that limits are checked at write time
(TigerBeetle's "debits must not exceed credits"): the CHECK `nonnegative_balance` refuses a write that would take
a requester's available money, an escrow, a hold or a worker's payable below zero, whatever the code above it
does, and under concurrency (the row is locked by the update). Entries and transactions are never updated or
deleted (the migration adds triggers that refuse it); a correction is a reversing transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from base.clock import utcnow
from base.db import Base, JSONDoc, UTCDateTime, enum_column


class AccountKind(enum.StrEnum):
    REQUESTER_AVAILABLE = "requester_available"  # funded, not yet committed
    REQUESTER_ESCROW = "requester_escrow"  # held for published batches (the sum of the requester's open holds)
    WORKER_PAYABLE = "worker_payable"  # earned, not yet paid out
    WORKER_PAID_OUT = "worker_paid_out"  # paid out to the worker, all time
    PLATFORM_FEES = "platform_fees"  # our fees (and the fees an external crowd charges, per platform)
    PLATFORM_FUNDING = "platform_funding"  # money that came in from outside (its balance is minus all funding)
    EXTERNAL_PLATFORM = "external_platform"  # paid to another crowd (MTurk, Prolific) for its workers


# Accounts whose balance may never go below zero.
NONNEGATIVE = {AccountKind.REQUESTER_AVAILABLE, AccountKind.REQUESTER_ESCROW, AccountKind.WORKER_PAYABLE,
               AccountKind.WORKER_PAID_OUT, AccountKind.PLATFORM_FEES, AccountKind.EXTERNAL_PLATFORM}


class TransactionKind(enum.StrEnum):
    FUNDING = "funding"  # ops credit a requester
    HOLD = "hold"  # available -> escrow for a batch
    RELEASE = "release"  # escrow -> available: the unused part of a hold
    REWARD = "reward"  # escrow -> worker payable (+ fee) for an approved assignment
    BONUS = "bonus"  # a fair-wage top-up (or a requester's bonus): escrow -> worker payable (+ fee)
    PAYOUT = "payout"  # worker payable -> paid out
    REVERSAL = "reversal"  # the exact negation of an earlier transaction


class LedgerAccount(Base):
    __tablename__ = "ledger_account"
    __table_args__ = (
        CheckConstraint("NOT nonnegative OR balance >= 0", name="nonnegative_balance"),
        Index("ix_ledger_account_owner", "owner_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # "requester:12:available:USD", "worker:7:payable:USD", "platform:fees:USD", "external:mturk:USD".
    code: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[AccountKind] = mapped_column(enum_column(AccountKind, "ledger_account_kind"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    platform: Mapped[str | None] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    nonnegative: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerTransaction(Base):
    """One balanced movement of money. Its idempotency key is unique: a retried operation finds it and does
    nothing twice."""

    __tablename__ = "ledger_transaction"
    __table_args__ = (
        Index("ix_ledger_transaction_worker", "worker_id", "created_at"),
        Index("ix_ledger_transaction_requester", "requester_id", "created_at"),
        Index("ix_ledger_transaction_batch", "batch_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[TransactionKind] = mapped_column(enum_column(TransactionKind, "ledger_transaction_kind"))
    currency: Mapped[str] = mapped_column(String(3))
    # At most one reversal per transaction.
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transaction.id"), unique=True)
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    project_id: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[int | None] = mapped_column(Integer)
    assignment_id: Mapped[int | None] = mapped_column(Integer, index=True)
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("hold.id"))
    payout_id: Mapped[int | None] = mapped_column(Integer)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    # What the worker (or requester) is told this money is for ("Fair-wage top-up: ...").
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerEntry(Base):
    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_nonzero"),
        Index("ix_ledger_entry_account", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transaction.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_account.id"))
    # Signed cents: the entries of a transaction sum to zero.
    amount: Mapped[int] = mapped_column(BigInteger)


class HoldState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Hold(Base):
    """A two-phase reserve of a requester's money for one batch (TigerBeetle's pending transfer): placed
    (available -> escrow), drawn on by approvals and top-ups (posted, partly or fully), its unused part released,
    and closed at most once. remaining = held - posted - released, never below zero."""

    __tablename__ = "hold"
    __table_args__ = (
        CheckConstraint("held >= 0 AND posted >= 0 AND released >= 0", name="hold_amounts_nonnegative"),
        CheckConstraint("held - posted - released >= 0", name="hold_not_overdrawn"),
        Index("ix_hold_open", "requester_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[HoldState] = mapped_column(enum_column(HoldState, "hold_state"), default=HoldState.OPEN)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    posted: Mapped[int] = mapped_column(BigInteger, default=0)
    released: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the hold was sized for at publish (the batch's maximum cost), for the requester's statement.
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AssignmentPay(Base):
    """What one assignment earned: its reward (once: the primary key) and its top-up (once)."""

    __tablename__ = "assignment_pay"

    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"), primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"), index=True)
    project_id: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reward_cents: Mapped[int] = mapped_column(Integer)
    # NULL for a reward of 0 (nothing moved).
    reward_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transaction.id"))
    top_up_cents: Mapped[int | None] = mapped_column(Integer)
    top_up_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transaction.id"))
    # Server-measured time of the work (the assignment's), for earnings reports and realized rates.
    duration_ms: Mapped[int] = mapped_column(Integer)
    approved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class PayoutBatchStatus(enum.StrEnum):
    DRAFT = "draft"  # amounts computed, nothing moved
    APPROVED = "approved"  # money moved payable -> paid out; waiting for the provider's confirmation
    PAID = "paid"  # every line marked paid (or failed and reversed)
    CANCELLED = "cancelled"


class PayoutLineStatus(enum.StrEnum):
    PENDING = "pending"
    HELD = "held"  # held back (an open flag on the worker, ...): `hold_reason` says why
    APPROVED = "approved"
    PAID = "paid"
    FAILED = "failed"  # the provider could not pay: the payout transaction was reversed


class PayoutBatch(Base):
    __tablename__ = "payout_batch"
    __table_args__ = (CheckConstraint("minimum_cents >= 0", name="payout_minimum_nonnegative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    minimum_cents: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(40), default="manual")
    status: Mapped[PayoutBatchStatus] = mapped_column(enum_column(PayoutBatchStatus, "payout_batch_status"))
    created_by_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PayoutLine(Base):
    __tablename__ = "payout_line"
    __table_args__ = (
        UniqueConstraint("payout_batch_id", "worker_id"),
        CheckConstraint("amount_cents > 0", name="payout_amount_positive"),
        Index("ix_payout_line_worker", "worker_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payout_batch_id: Mapped[int] = mapped_column(ForeignKey("payout_batch.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    currency: Mapped[str] = mapped_column(String(3))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[PayoutLineStatus] = mapped_column(enum_column(PayoutLineStatus, "payout_line_status"))
    hold_reason: Mapped[str | None] = mapped_column(Text)
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transaction.id"))
    external_reference: Mapped[str | None] = mapped_column(String(200))
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
