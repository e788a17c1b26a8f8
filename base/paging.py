"""Keyset paging."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session


def keyset_page(session: Session, entity: Any, *, after: int | None, limit: int,
                equal: Iterable[tuple[Any, Any]] = ()) -> list[Any]:
    """One keyset page of `entity` by id: at most `limit` rows with an id above `after`, matching `column == value`
    for each (column, value) pair of `equal` whose value is given (None: that filter is off)."""
    stmt = select(entity).where(*(column == value for column, value in equal if value is not None))
    if after is not None:
        stmt = stmt.where(entity.id > after)
    return list(session.scalars(stmt.order_by(entity.id).limit(limit)))
