"""Fixtures: a real database (SQLite by default, PostgreSQL when CROWDMARKET_DATABASE_URL is set), migrated
once per run; each test runs inside an outer transaction that is rolled back, so tests never see each other.

Under pytest-xdist (`make test` runs `pytest -n auto`) each worker process has a database of its own: a SQLite
file in its own temporary directory, or a PostgreSQL database created from the configured URL (named after it,
with the worker's id) and dropped at the end. Hypothesis runs the `dev` profile, or `$HYPOTHESIS_PROFILE`
(`make test` chooses `ci`: derandomized, so CI never fails on an example a previous run did not meet)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from rq import Queue
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from base.db import Base, Database, make_engine, scratch_database
from edge.ratelimit import LoginLimits
from shell.app import create_app, subscribe
from shell.cli import alembic_config
from shell.config import TEST_SECRET_KEY
from shell.registry import metadata

metadata()  # every table on Base.metadata, whichever test file runs alone

DATABASE_URL = os.environ.get("CROWDMARKET_DATABASE_URL")
REDIS_URL = os.environ.get("CROWDMARKET_REDIS_URL")
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
# A cheap scrypt (about 1 ms): tests sign up and log in about a hundred times, and werkzeug's default costs
# 0.2-0.5 s a hash on this machine. Smaller N is refused by OpenSSL's memory check as werkzeug sizes it.
TEST_PASSWORD_HASH = "scrypt:256:8:1"
RUN_VAR = "CROWDMARKET_TEST_RUN"  # one id per run, shared with xdist's workers: names its Redis keys

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist): workers inherit it
        os.environ[RUN_VAR] = uuid.uuid4().hex[:12]
    # An instance folder of this process's own, so no test writes into the repository's instance/ (the
    # developer's database and secret key), whatever app it builds.
    config._crowdmarket_instance = tempfile.mkdtemp(prefix="crowdmarket-instance-")  # type: ignore[attr-defined]
    os.environ["CROWDMARKET_INSTANCE_PATH"] = config._crowdmarket_instance  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(getattr(config, "_crowdmarket_instance", ""), ignore_errors=True)


def unique_name() -> str:
    """A name no other test's app uses, for its job queue and rate-limit keys; it carries the run's id."""
    return f"test-{os.environ.get(RUN_VAR, 'norun')}-{uuid.uuid4().hex[:12]}"


class ClosingClient(FlaskClient):
    """The test client, closing each response once it is read, as a WSGI server does once it has sent it: what the
    app runs after the response (judging workers, market/quality/evaluation.py) has run when the call returns."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        response.get_data()
        response.close()
        return response


def make_app(overrides: dict[str, Any] | None = None) -> Flask:
    """An app as tests build it: the test key, cheap password hashes, this run's Redis (unless overridden), a job
    queue and rate-limit namespace of its own, so jobs and counts another test left never meet this one, and a
    test client that closes responses as a server does."""
    name = unique_name()
    # Workers are judged in process, right after each response, so a test sees the judgement when its request
    # returns; tests/market/test_evaluation.py runs the queued way on Redis.
    app = create_app({"TESTING": True, "SECRET_KEY": TEST_SECRET_KEY, "PASSWORD_HASH": TEST_PASSWORD_HASH,
                      "REDIS_URL": REDIS_URL, "JOB_QUEUE": name, "LIMIT_NAMESPACE": f"limits-{name}",
                      "EVALUATION": "inline",
                      # Tests take hundreds of tasks a (fake) minute per worker; tests/test_rate_limits.py sets it.
                      "RATELIMIT_NEXT": "",
                      # The platforms: never the internet (a port nothing listens on), unless a test points them
                      # at its fake endpoint; no waiting between retries.
                      "PUBLIC_BASE_URL": "https://crowdmarket.test", "MTURK_ENDPOINT_URL": "http://127.0.0.1:9",
                      "PROLIFIC_API_URL": "http://127.0.0.1:9", **(overrides or {})})
    app.extensions["crowdmarket.platform_sleep"] = lambda seconds: None
    app.test_client_class = ClosingClient
    return app


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
                *client.scan_iter(f"{app.config['LIMIT_NAMESPACE']}:*"),
                *client.scan_iter(f"{app.config['JOB_QUEUE']}:evaluate:*")]
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


def keys_without_ttl(client: redis.Redis, marker: str) -> list[str]:
    """Redis keys that would stay for ever and belong to apps whose names hold `marker` (the run's id, or one
    app's name): keys naming it, jobs queued on such a queue, and such queues still listed in `rq:queues`."""
    found = []
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        if client.ttl(raw) != -1:
            continue
        if marker in key or (key.startswith("rq:job:") and marker in (client.hget(raw, "origin") or b"").decode()):
            found.append(key)
    found += [f"rq:queues member {m.decode()}" for m in client.smembers("rq:queues") if marker in m.decode()]
    return sorted(found)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run leaves no Redis key without an expiry (checked once, by the controller when xdist runs)."""
    if not REDIS_URL or hasattr(session.config, "workerinput"):
        return
    client = redis.Redis.from_url(REDIS_URL)
    leftovers = keys_without_ttl(client, os.environ[RUN_VAR])
    client.close()
    if leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"Redis keys without an expiry left by this run: {', '.join(leftovers[:20])}",
                                red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not DATABASE_URL:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"  # a directory per worker already
    elif not worker:
        yield DATABASE_URL
    else:
        with scratch_database(DATABASE_URL, f"{make_url(DATABASE_URL).database}_{worker}") as url:
            yield url


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A brand-new database on the backend under test."""
    if not DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with scratch_database(DATABASE_URL, f"cm_empty_{uuid.uuid4().hex[:8]}") as url:
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


@pytest.fixture(scope="session")
def shared_app(engine: Engine) -> Flask:
    """The app the `app` fixture lends each test. Building an app costs 0.2-0.5 s here (flask-smorest documents
    every view as it registers it): one per test was a third of the run's time."""
    return make_app({"DATABASE": Database(engine)})


@pytest.fixture
def app(shared_app: Flask, database: Database, clock: FakeClock) -> Iterator[Flask]:
    """The app, bound to this test's database, clock, job queue and rate-limit counts, and its config restored
    after the test (which may change it). A test that adds routes or hooks builds its own with `make_app`: Flask
    refuses them once an app has served a request."""
    app, saved, name = shared_app, dict(shared_app.config), unique_name()
    app.config.update(DATABASE=database, CLOCK=clock, JOB_QUEUE=name, LIMIT_NAMESPACE=f"limits-{name}")
    app.extensions.update({"crowdmarket.db": database, "crowdmarket.clock": clock, "crowdmarket.login_limits":
                           LoginLimits(app.extensions["crowdmarket.redis"], namespace=f"limits-{name}")})
    app.extensions.pop("crowdmarket.jobs", None)  # the queue is built on first use, under this test's name
    subscribe(database.events)
    yield app
    clear_redis(app)
    app.config.clear()
    app.config.update(saved)
    app.extensions.pop("crowdmarket.jobs", None)


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
    from tests.browser import watched

    page = browser.new_page()
    problems = watched(page, live_server)
    yield page, problems
    page.close()
