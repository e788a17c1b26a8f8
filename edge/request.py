"""What a view needs of the request: its session, the clock, Redis, public item ids. Blueprints import these,
never the factory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import redis
from flask import current_app, g
from sqlalchemy.orm import Session

from base.public_ids import ItemIds


def db_session(*, autocommit: bool = False) -> Session:
    """This request's (or CLI command's) session, opened on first use and closed at teardown. `autocommit` (on
    first use only): see `Database.autocommit_session`."""
    if "db_session" not in g:
        database = current_app.extensions["crowdmarket.db"]
        g.db_session = database.autocommit_session() if autocommit else database.session()
    return g.db_session


def clock() -> dt.datetime:
    now: Callable[[], dt.datetime] = current_app.extensions["crowdmarket.clock"]
    return now()


def redis_client() -> redis.Redis | None:
    return current_app.extensions["crowdmarket.redis"]


def item_ids() -> ItemIds:
    """The app's public item ids (workers see these, never the database's)."""
    ids: ItemIds = current_app.extensions["crowdmarket.item_ids"]
    return ids
