"""Fixtures: a real database (SQLite by default, PostgreSQL when CROWDMARKET_DATABASE_URL is set), migrated
once per run; each test runs inside an outer transaction that is rolled back, so tests never see each other."""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

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


@pytest.fixture
def app(database: Database, clock: FakeClock) -> Flask:
    # A queue of its own per test: jobs another test left behind never run against this one's data.
    return create_app({"DATABASE": database, "CLOCK": clock, "TESTING": True, "REDIS_URL": REDIS_URL,
                       "JOB_QUEUE": f"test-{uuid.uuid4().hex}"})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def redis_url() -> str | None:
    return REDIS_URL


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The test app served on a local port (one thread: it shares the test's database connection)."""
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server: str) -> Iterator[tuple[object, list[str]]]:
    """A Chromium page that reaches only the live server, and what went wrong on it: console errors and warnings
    (CSP violations among them), uncaught script errors, and requests to other hosts (aborted: pages must work
    offline)."""
    page = browser.new_page()
    problems: list[str] = []
    local = urlsplit(live_server).netloc

    def route(r) -> None:
        url = urlsplit(r.request.url)
        if url.scheme in ("data", "blob") or url.netloc == local:
            r.continue_()
        else:
            problems.append(f"request to another host: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    yield page, problems
    page.close()
