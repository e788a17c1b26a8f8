"""Gold disputes: a worker contesting a gold item they were scored on. (Per-project worker figures are
workers/models.py's `WorkerStats`; the gold stream is qualification/models.py's `GoldStream`.)"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    ForeignKey,
    Index,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from base.db import Base, UTCDateTime, enum_column


class DisputeState(enum.StrEnum):
    OPEN = "open"
    CORRECTED = "corrected"  # ops fixed the gold answer; past answers were re-scored
    RETIRED = "retired"  # ops took the item out of gold; it counts toward nobody's accuracy
    REJECTED = "rejected"  # the gold answer stands


class GoldDispute(Base):
    """A worker contesting a gold item they were scored on."""

    __tablename__ = "gold_dispute"
    __table_args__ = (UniqueConstraint("assignment_id", "item_id"), Index("ix_gold_dispute_state", "state", "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"))
    note: Mapped[str] = mapped_column(Text)
    state: Mapped[DisputeState] = mapped_column(enum_column(DisputeState, "dispute_state"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolution: Mapped[str | None] = mapped_column(Text)
