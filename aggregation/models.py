"""Aggregation runs: what was asked (method, parameters), when it ran, and what it produced per item and worker."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
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


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AggregationRun(Base):
    """One aggregation of a project's answers. Its inputs are fixed when it starts (answers not excluded by a
    block, at that moment); `classes` maps the stored label indices back to the label schema's values."""

    __tablename__ = "aggregation_run"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key"),
        Index("ix_aggregation_run_project", "project_id", "id"),
        CheckConstraint("method IN ('mv', 'wmv', 'ds', 'ds-gold', 'onecoin')", name="method_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    method: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    status: Mapped[RunStatus] = mapped_column(enum_column(RunStatus, "run_status"), default=RunStatus.QUEUED)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Filled when the run succeeds.
    classes: Mapped[list[Any] | None] = mapped_column(JSONDoc)
    answers: Mapped[int | None] = mapped_column(Integer)
    items: Mapped[int | None] = mapped_column(Integer)
    workers: Mapped[int | None] = mapped_column(Integer)
    gold_items: Mapped[int | None] = mapped_column(Integer)
    # Share of gold items whose aggregated label matches the known answer (null for ds-gold: they are anchors).
    gold_accuracy: Mapped[float | None] = mapped_column(Float)
    iterations: Mapped[int | None] = mapped_column(Integer)
    # Dawid–Skene: why EM stopped ("converged" or "max_iter") and its objective then (log-likelihood with the
    # prior's log density, per answer). Null for the other methods.
    stop_reason: Mapped[str | None] = mapped_column(String(16))
    log_likelihood: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    priors: Mapped[list[float] | None] = mapped_column(JSONDoc)


class AggregatedLabel(Base):
    """One item's label from one run. `label` indexes the run's `classes`."""

    __tablename__ = "aggregated_label"

    run_id: Mapped[int] = mapped_column(ForeignKey("aggregation_run.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    answers: Mapped[int] = mapped_column(Integer)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    tie: Mapped[bool] = mapped_column(Boolean, default=False)


class AggregationWorker(Base):
    """One worker's estimates from one run: accuracy (Dawid–Skene's, or agreement with the run's labels) and,
    for Dawid–Skene, the confusion matrix (true class x given label, rows sum to 1)."""

    __tablename__ = "aggregation_worker"

    run_id: Mapped[int] = mapped_column(ForeignKey("aggregation_run.id", ondelete="CASCADE"), primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id"), primary_key=True)
    answers: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    confusion: Mapped[list[list[float]] | None] = mapped_column(JSONDoc)
