"""What a view needs of the request: its session and unit of work, the clock, Redis, public item ids. Blueprints
import these, never the factory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from base.public_ids import ItemIds
from base.uow import finish


def db_session(*, autocommit: bool = False) -> Session:
    """This request's (or CLI command's) session, opened on first use and closed at teardown. `autocommit` (on
    first use only): see `Database.autocommit_session`."""
    if "db_session" not in g:
        database = current_app.extensions["crowdmarket.db"]
        g.db_session = database.autocommit_session() if autocommit else database.session()
    return g.db_session


@contextmanager
def unit_of_work() -> Iterator[None]:
    """The unit of work (base/uow.py) of this request or CLI command, over its session if it opened one: commits
    when the block ends normally (or with a refusal raised `.keep_writes()`), rolls back otherwise. Lazy, because
    the session is: a view that never touches the database costs nothing, and the hot views' autocommit session
    (chosen at first use, `edge.auth.requires`) is the one it ends."""
    try:
        yield
    except BaseException as exc:
        if (session := g.get("db_session")) is not None:
            finish(session, exc)
        raise
    if (session := g.get("db_session")) is not None:
        finish(session, None)


class App(Flask):
    """The app class: every view runs in the request's unit of work, ended before its response is built, so a
    client told 2xx knows it is stored, and an error response (a problem, a 500) knows nothing was."""

    def dispatch_request(self) -> Any:
        with unit_of_work():
            return super().dispatch_request()


def clock() -> dt.datetime:
    now: Callable[[], dt.datetime] = current_app.extensions["crowdmarket.clock"]
    return now()


def redis_client() -> redis.Redis | None:
    return current_app.extensions["crowdmarket.redis"]


def item_ids() -> ItemIds:
    """The app's public item ids (workers see these, never the database's)."""
    ids: ItemIds = current_app.extensions["crowdmarket.item_ids"]
    return ids
