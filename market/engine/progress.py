"""What a worker's own work so far says, for the work page: the guideline version they last answered under in a
project, and how many answers they gave since a moment (UTC midnight: "answers today"). No flask here."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.catalogue.models import Answer, Assignment
from market.engine.next_task import DONE


def last_answered_guideline_version(session: Session, *, worker_id: int, project_id: int) -> int | None:
    """The guideline version of the worker's latest answered (submitted or reviewed) assignment in the project;
    None before their first."""
    return session.scalar(
        select(Assignment.guideline_version)
        .where(Assignment.worker_id == worker_id, Assignment.project_id == project_id, Assignment.status.in_(DONE),
               Assignment.submitted_at.is_not(None))
        .order_by(Assignment.submitted_at.desc(), Assignment.id.desc()).limit(1))


def answers_since(session: Session, *, worker_id: int, since: dt.datetime) -> int:
    """How many answers the worker gave from `since` on (every project)."""
    return session.scalar(select(func.count()).select_from(Answer)
                          .where(Answer.worker_id == worker_id, Answer.submitted_at >= since)) or 0


def utc_midnight(now: dt.datetime) -> dt.datetime:
    """The start of `now`'s UTC day."""
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
