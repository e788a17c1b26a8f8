"""Fixtures: a real database (SQLite by default, PostgreSQL when CROWDMARKET_DATABASE_URL is set), migrated
once per run; each test runs inside an outer transaction that is rolled back, so tests never see each other."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

import aggregation.models  # noqa: F401 - every table on the metadata, whichever test file runs alone
import market.models  # noqa: F401
import qualification.models  # noqa: F401
import workers.models  # noqa: F401
from market.app import create_app
from market.cli import alembic_config
from market.db import Base, Database, make_engine

DATABASE_URL = os.environ.get("CROWDMARKET_DATABASE_URL")
REDIS_URL = os.environ.get("CROWDMARKET_REDIS_URL")
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs: float) -> dt.datetime:
        self.now += dt.timedelta(**kwargs)
        return self.now


def reset_schema(engine: Engine) -> None:
    """Drop everything the models or Alembic made, so the run starts from an empty database."""
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return DATABASE_URL or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    reset_schema(engine)
    cfg = alembic_config(database_url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture
def database(engine: Engine, connection: Connection) -> Database:
    return Database(engine, bind=connection)


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    s = database.session()
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class ClosingClient(FlaskClient):
    """The test client, closing each response once it is read, as a WSGI server does once it has sent it: what the
    app runs after the response (judging workers, market/evaluation.py) has run when the call returns."""

    def open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        response = super().open(*args, **kwargs)
        response.get_data()
        response.close()
        return response


@pytest.fixture
def app(database: Database, clock: FakeClock) -> Flask:
    # A queue of its own per test: jobs another test left behind never run against this one's data.
    app = create_app({"DATABASE": database, "CLOCK": clock, "TESTING": True, "REDIS_URL": REDIS_URL,
                      "JOB_QUEUE": f"test-{uuid.uuid4().hex}"})
    app.test_client_class = ClosingClient
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def redis_url() -> str | None:
    return REDIS_URL
