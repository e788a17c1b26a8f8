"""Fixtures: a real database (SQLite by default, PostgreSQL when CROWDMARKET_DATABASE_URL is set), migrated
once per run; each test runs inside an outer transaction that is rolled back, so tests never see each other."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
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
    """An app as tests build it: the test key, this run's Redis (unless overridden), and a job queue and
    rate-limit namespace of its own, so jobs and counts another test left never meet this one."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    return create_app({"TESTING": True, "SECRET_KEY": TEST_SECRET_KEY, "REDIS_URL": REDIS_URL,
                       "JOB_QUEUE": name, "LIMIT_NAMESPACE": f"limits-{name}", **(overrides or {})})


def clear_redis(app: Flask) -> None:
    """Remove what the app wrote to Redis that would outlive it: its queue with its jobs and registries (RQ gives
    those no expiry) and its rate-limit counts (they expire, but need not wait)."""
    if not app.config.get("REDIS_URL"):
        return
    client = redis.Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=1)
    try:
        queue = Queue(app.config["JOB_QUEUE"], connection=client)
        registries = [queue.started_job_registry, queue.finished_job_registry, queue.failed_job_registry,
                      queue.deferred_job_registry, queue.scheduled_job_registry, queue.canceled_job_registry]
        job_ids = {*queue.get_job_ids(), *(i for r in registries for i in r.get_job_ids(cleanup=False))}
        queue.delete(delete_jobs=True)
        keys = [*(f"rq:job:{i}" for i in job_ids), *(f"rq:results:{i}" for i in job_ids), *(r.key for r in registries),
                *client.scan_iter(f"{app.config['LIMIT_NAMESPACE']}:*")]
        if keys:
            client.delete(*keys)
    except redis.ConnectionError:
        pass  # a test of Redis being down
    finally:
        client.close()


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


@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database beside the configured one, dropped afterwards; its URL."""
    assert DATABASE_URL
    admin = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return DATABASE_URL or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A brand-new database on the backend under test."""
    if not DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with scratch_database(f"cm_empty_{uuid.uuid4().hex[:8]}") as url:
        yield url


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
def app(database: Database, clock: FakeClock) -> Iterator[Flask]:
    made = make_app({"DATABASE": database, "CLOCK": clock})
    yield made
    clear_redis(made)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def redis_url() -> str | None:
    return REDIS_URL
