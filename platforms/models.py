"""What ties a platform's piece of work to ours."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from base.clock import utcnow
from base.db import Base, UTCDateTime


class PlatformAssignment(Base):
    """One platform assignment (an MTurk assignmentId) is one of our assignments, taken by the worker it arrived
    as: a reload of the platform's frame finds the same task, and the sync can check who submitted it."""

    __tablename__ = "platform_assignment"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    external_task_id: Mapped[str | None] = mapped_column(String(255))  # MTurk's hitId
    external_worker_id: Mapped[str] = mapped_column(String(255))
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"), unique=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
