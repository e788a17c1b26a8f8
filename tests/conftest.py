"""Fixtures: a real database (SQLite by default, PostgreSQL when CROWDMARKET_DATABASE_URL is set), migrated
once per run; each test runs inside an outer transaction that is rolled back, so tests never see each other."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

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
from market.config import TEST_SECRET_KEY
from market.db import Base, Database, make_engine

DATABASE_URL = os.environ.get("CROWDMARKET_DATABASE_URL")
REDIS_URL = os.environ.get("CROWDMARKET_REDIS_URL")
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def pytest_configure(config: pytest.Config) -> None:
    # An instance folder of this process's own, so no test writes into the repository's instance/ (the
    # developer's database and secret key), whatever app it builds.
    config._crowdmarket_instance = tempfile.mkdtemp(prefix="crowdmarket-instance-")  # type: ignore[attr-defined]
    os.environ["CROWDMARKET_INSTANCE_PATH"] = config._crowdmarket_instance  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(getattr(config, "_crowdmarket_instance", ""), ignore_errors=True)


def make_app(overrides: dict[str, Any] | None = None) -> Flask:
    """An app as tests build it: the test key, this run's Redis (unless overridden), and a job queue of its own, so
    jobs another test left behind never run against this one's data."""
    return create_app({"TESTING": True, "SECRET_KEY": TEST_SECRET_KEY, "REDIS_URL": REDIS_URL,
                       "JOB_QUEUE": f"test-{uuid.uuid4().hex}", **(overrides or {})})


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


@pytest.fixture
def app(database: Database, clock: FakeClock) -> Flask:
    return make_app({"DATABASE": database, "CLOCK": clock})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def redis_url() -> str | None:
    return REDIS_URL
