"""The app under real faults: the database unreachable or restarted under it, Redis gone. Clients see only
retryable errors (503 with Retry-After, never a 500), nothing half-written, and the API keeps serving without
Redis (jobs then run inline). The same faults under load, on two instances, are benchmarks/load.py's."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import JobStatus
from sqlalchemy import create_engine, event, func, select, text

from base.db import Base, Database
from base.identity import Role
from edge.jobs import QUEUE
from edge.web import SESSION_TOKEN
from market.catalogue.models import Item
from payments.jobs import run_cycle
from tests.conftest import DATABASE_URL, make_app
from tests.factories import account, auth, jsonl, project_payload

DEAD_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"


def _unreachable(tmp_path) -> Database:
    if DATABASE_URL:
        return Database.from_url(DEAD_PG)
    return Database.from_url(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")


def _assert_retryable(resp, mimetype: str) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.mimetype == mimetype
    assert int(resp.headers["Retry-After"]) >= 1
    assert "Traceback" not in resp.get_data(as_text=True)


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/api/v1/work/next"), ("get", "/api/v1/projects"), ("post", "/api/v1/assignments/1/submit"),
    ("post", "/api/v1/workers"), ("post", "/api/v1/auth/token"),
])
def test_an_unreachable_database_is_a_retryable_problem(tmp_path, clock, method, path):
    app = make_app({"DATABASE": _unreachable(tmp_path), "CLOCK": clock, "REDIS_URL": None})
    resp = getattr(app.test_client(), method)(path, headers=auth("cm_x" * 10),
                                              json={"username": "ada", "password": "correct horse battery"})
    _assert_retryable(resp, "application/problem+json")
    assert resp.get_json()["status"] == 503


@pytest.mark.parametrize("path", ["/work", "/work/tasks", "/ops", "/ops/payouts", "/requester"])
def test_an_unreachable_database_is_a_retryable_page(tmp_path, clock, path):
    """A signed-in page (its session's token is looked up first) answers an HTML 503 page."""
    app = make_app({"DATABASE": _unreachable(tmp_path), "CLOCK": clock, "REDIS_URL": None})
    http = app.test_client()
    with http.session_transaction() as cookie:
        cookie[SESSION_TOKEN] = "cm_" + "x" * 40
    _assert_retryable(http.get(path), "text/html")


def test_healthz_with_the_database_down_is_a_503_to_retry(tmp_path, clock):
    app = make_app({"DATABASE": _unreachable(tmp_path), "CLOCK": clock, "REDIS_URL": None})
    resp = app.test_client().get("/healthz")
    assert (resp.status_code, resp.get_json()["status"]) == (503, "down")
    assert int(resp.headers["Retry-After"]) >= 1


def test_every_operation_documents_the_retryable_503(client):
    spec = client.get("/openapi.json").get_json()
    operations = [op for item in spec["paths"].values() for op in item.values() if isinstance(op, dict)]
    assert operations and all("503" in op["responses"] for op in operations)


def test_without_redis_the_api_serves_and_queued_jobs_run_inline(database, session, clock):
    """Redis down (a port nothing listens on): the submit is stored, the aggregation run that would be queued
    runs in the request, /healthz says degraded."""
    app = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": "redis://127.0.0.1:1/0"})
    http = app.test_client()
    (_, req_token), (_, wrk_token) = (account(session, r, now=clock()) for r in (Role.REQUESTER, Role.WORKER))
    session.commit()
    req, wrk = auth(req_token), auth(wrk_token)
    proj = http.post("/api/v1/projects", headers=req, json=project_payload(assignments_per_item=1)).get_json()
    p = f"/api/v1/projects/{proj['id']}"
    records = [{"external_id": f"r{i}", "data": {"text": f"item {i}"}} for i in range(4)]
    assert http.post(f"{p}/items", headers=req, data=jsonl(records),
                     content_type="application/x-ndjson").status_code == 201
    assert http.post(f"{p}/batches", headers=req, json={}).status_code == 201
    task = http.post("/api/v1/work/next", headers=wrk).get_json()
    answers = [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]
    resp = http.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=wrk, json={"answers": answers})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    # A client that lost the first answer (a worker killed mid-response) sends it again: the same result.
    again = http.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=wrk, json={"answers": answers})
    assert (again.status_code, again.get_json()) == (200, resp.get_json())
    run = http.post(f"{p}/aggregations", headers=req, json={"method": "mv"})
    assert run.status_code == 202
    assert http.get(f"{p}/aggregations/{run.get_json()['id']}", headers=req).get_json()["status"] == "succeeded"
    assert http.get("/healthz").get_json()["status"] == "degraded"


@pytest.mark.skipif(not DATABASE_URL, reason="PostgreSQL's own restart: the SQLite runs have none")
def test_a_restarted_postgresql_costs_at_most_one_retryable_answer(empty_database_url, clock):
    """Every backend the app holds is terminated (what a PostgreSQL restart does to its pool): each request then
    either succeeds (a fresh connection) or is a 503 to retry; none is a 500, and a retry succeeds."""
    database = Database.from_url(empty_database_url)
    Base.metadata.create_all(database.engine)
    try:
        app = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None})
        http = app.test_client()
        with database.session() as session:
            (_, req_token), (_, wrk_token) = (account(session, r, now=clock())
                                              for r in (Role.REQUESTER, Role.WORKER))
            session.commit()
        req, wrk = auth(req_token), auth(wrk_token)
        proj = http.post("/api/v1/projects", headers=req, json=project_payload(assignments_per_item=1)).get_json()
        p = f"/api/v1/projects/{proj['id']}"
        records = [{"external_id": f"r{i}", "data": {"text": f"item {i}"}} for i in range(6)]
        http.post(f"{p}/items", headers=req, data=jsonl(records), content_type="application/x-ndjson")
        assert http.post(f"{p}/batches", headers=req, json={}).status_code == 201
        name = database.engine.url.database
        for call in (lambda: http.post("/api/v1/work/next", headers=wrk),
                     lambda: http.get(p, headers=req),
                     lambda: http.post(f"{p}/items", headers=req, content_type="application/x-ndjson",
                                       data=jsonl([{"external_id": "late", "data": {"text": "late"}}]))):
            with Database.from_url(DATABASE_URL).engine.connect() as admin:
                killed = admin.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).scalar()
                admin.commit()
            assert killed >= 1
            resp = call()
            if resp.status_code == 503:
                assert resp.headers["Retry-After"]
                resp = call()
            assert resp.status_code < 500, resp.get_data(as_text=True)
        with database.session() as session:
            assert session.scalars(select(Item.external_id).where(Item.external_id == "late")).all() == ["late"]
    finally:
        database.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary to stop and start")
def test_the_job_worker_waits_out_a_redis_outage_and_runs_the_jobs_queued_after(tmp_path):
    """`crowdmarket jobs work` started while its Redis (the test's own) is down, as after a Redis restart: it says
    so and waits instead of exiting, and once Redis is up it runs a job queued there. (An outage while it waits on
    the queue RQ retries itself; one elsewhere in its loop raised out of it: benchmarks/load.py met both.)"""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "CROWDMARKET_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
           "CROWDMARKET_INSTANCE_PATH": str(tmp_path), "CROWDMARKET_REDIS_URL": url, "CROWDMARKET_LOG_FORMAT": "text"}
    binary = Path(sys.executable).with_name("crowdmarket")
    subprocess.run([binary, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([binary, "jobs", "work"], env=env, stdout=out, stderr=subprocess.STDOUT)
    store = None
    try:
        for _ in range(300):
            if "Redis unavailable" in log.read_text():
                break
            assert worker.poll() is None, log.read_text()
            time.sleep(0.1)
        else:
            raise AssertionError(f"the worker never said Redis is down:\n{log.read_text()}")
        store = _redis_server(port)
        job = Queue(QUEUE, connection=redis.Redis.from_url(url)).enqueue(run_cycle)
        for _ in range(200):
            if job.get_status(refresh=True) == JobStatus.FINISHED:
                break
            assert worker.poll() is None, log.read_text()
            time.sleep(0.1)
        else:
            raise AssertionError(f"the job never ran ({job.get_status()}):\n{log.read_text()}")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if store is not None:
            store.terminate()
            store.wait(timeout=10)


def _market(database: Database, clock) -> tuple[object, dict[str, str], str]:
    """An app on `database` (a fresh one, schema made) with a requester's project holding six items."""
    Base.metadata.create_all(database.engine)
    app = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None})
    http = app.test_client()
    with database.session() as session:
        _, token = account(session, Role.REQUESTER, now=clock())
        session.commit()
    req = auth(token)
    proj = http.post("/api/v1/projects", headers=req, json=project_payload(assignments_per_item=1)).get_json()
    p = f"/api/v1/projects/{proj['id']}"
    records = [{"external_id": f"r{i}", "data": {"text": f"item {i}"}} for i in range(6)]
    assert http.post(f"{p}/items", headers=req, data=jsonl(records),
                     content_type="application/x-ndjson").status_code == 201
    return http, req, p


def _counts(database: Database) -> dict[str, int]:
    with database.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in Base.metadata.sorted_tables}


def test_a_locked_database_is_a_retryable_problem(empty_database_url, clock):
    """Another process holds the database (SQLite: an exclusive lock on the file; PostgreSQL: an exclusive lock
    on the project table) past the app's lock wait: 'database is locked' / lock_not_available is a 503 to retry,
    and once the lock is gone the same request succeeds."""
    database = Database.from_url(empty_database_url)
    try:
        http, req, p = _market(database, clock)

        # The app's own wait for a lock, shortened from 30 s so the test does not sit through it.
        @event.listens_for(database.engine, "connect")
        def _short_wait(dbapi_conn, _record):
            if DATABASE_URL:
                dbapi_conn.execute("SET lock_timeout = 200")
                dbapi_conn.commit()
            else:
                dbapi_conn.execute("PRAGMA busy_timeout=200")

        database.engine.dispose()
        if DATABASE_URL:
            holder = Database.from_url(empty_database_url).engine
            lock = "LOCK TABLE project IN ACCESS EXCLUSIVE MODE"
        else:
            holder = create_engine(empty_database_url, isolation_level="AUTOCOMMIT")
            lock = "BEGIN EXCLUSIVE"
        with holder.connect() as conn:
            if DATABASE_URL:
                conn.begin()
            conn.exec_driver_sql(lock)
            resp = http.post("/api/v1/projects", headers=req, json=project_payload())
            _assert_retryable(resp, "application/problem+json")
            conn.rollback()  # the lock released (SQLite: pysqlite's rollback ends the BEGIN EXCLUSIVE too)
        holder.dispose()
        assert http.post("/api/v1/projects", headers=req, json=project_payload()).status_code == 201
    finally:
        database.dispose()


def test_a_transaction_cut_midway_writes_nothing(empty_database_url, clock):
    """Publishing a batch (several writes in one transaction) loses its database after its first write
    (PostgreSQL: the backend terminated, as a restart does; SQLite: the file turned read-only): a 503 to retry,
    no row changed anywhere, and the retry publishes the batch."""
    database = Database.from_url(empty_database_url)
    try:
        http, req, p = _market(database, clock)
        before = _counts(database)
        writes = []

        def _cut(conn, cursor, statement, *_args):
            if not statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                return
            writes.append(statement)
            if len(writes) != 2:
                return
            if DATABASE_URL:
                pid = cursor.connection.info.backend_pid
                with Database.from_url(DATABASE_URL).engine.connect() as admin:
                    assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
                    admin.commit()
            else:
                cursor.connection.execute("PRAGMA query_only=1")

        for engine in database.engines():
            event.listen(engine, "before_cursor_execute", _cut)
        resp = http.post(f"{p}/batches", headers=req, json={})
        _assert_retryable(resp, "application/problem+json")
        assert len(writes) >= 2  # the cut came after a write, not before the first
        for engine in database.engines():
            event.remove(engine, "before_cursor_execute", _cut)
            engine.dispose()  # SQLite: the read-only connection goes with its pool
        assert _counts(database) == before
        assert http.post(f"{p}/batches", headers=req, json={}).status_code == 201
        assert _counts(database) != before
    finally:
        database.dispose()


def test_a_killed_server_worker_is_replaced_and_the_next_requests_succeed(tmp_path):
    """`crowdmarket run`'s one worker killed outright (SIGKILL, as the OOM killer does): gunicorn's master starts
    another, and requests, held on the master's listening socket meanwhile, are answered."""
    port = _free_port()
    env = {**os.environ, "CROWDMARKET_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
           "CROWDMARKET_INSTANCE_PATH": str(tmp_path)}
    env.pop("CROWDMARKET_REDIS_URL", None)
    binary = Path(sys.executable).with_name("crowdmarket")
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}/healthz"  # needs no schema: no migration to wait for

    def worker_pid() -> int:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert len(children) == 1, log.read_text()
        return int(children[0])

    with log.open("w") as out:
        server = subprocess.Popen([binary, "run", "--port", str(port), "--workers", "1"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.1)
        else:
            raise AssertionError(f"no answer from crowdmarket run:\n{log.read_text()}")
        first = worker_pid()
        os.kill(first, signal.SIGKILL)
        started = time.monotonic()
        # The very next request waits in the listen backlog for the new worker: no retry needed.
        assert urllib.request.urlopen(url, timeout=10).status == 200
        assert time.monotonic() - started < 5
        assert worker_pid() != first
        assert all(urllib.request.urlopen(url, timeout=5).status == 200 for _ in range(3))
    finally:
        # Killed, not stopped: a graceful stop is test_cli's, and takes seconds here for nothing.
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        for pid in [server.pid, *map(int, children.read_text().split())] if server.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        server.wait(timeout=10)
    assert log.read_text().count("Booting worker") == 2
