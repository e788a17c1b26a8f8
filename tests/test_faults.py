"""The app under real faults: the database unreachable or restarted under it, Redis gone. Clients see only
retryable errors (503 with Retry-After, never a 500), nothing half-written, and the API keeps serving without
Redis (jobs then run inline). The same faults under load, on two instances, are benchmarks/load.py's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import JobStatus
from sqlalchemy import select, text

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
def test_the_job_worker_outlives_a_redis_restart_and_runs_the_jobs_queued_after(tmp_path):
    """A Redis of the test's own, stopped under `crowdmarket jobs work` and started again: the worker waits it
    out and runs a job queued afterwards."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "CROWDMARKET_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
           "CROWDMARKET_INSTANCE_PATH": str(tmp_path), "CROWDMARKET_REDIS_URL": url, "CROWDMARKET_LOG_FORMAT": "text"}
    binary = Path(sys.executable).with_name("crowdmarket")
    subprocess.run([binary, "db", "upgrade"], env=env, check=True, capture_output=True)
    store = _redis_server(port)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([binary, "jobs", "work"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(2)  # the worker registered and waits on the queue
        store.terminate()
        store.wait(timeout=10)
        for _ in range(100):
            if "Redis unavailable" in log.read_text():
                break
            assert worker.poll() is None, log.read_text()
            time.sleep(0.1)
        else:
            raise AssertionError(f"the worker never noticed:\n{log.read_text()}")
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
        store.terminate()
        store.wait(timeout=10)
