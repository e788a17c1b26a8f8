"""Observability: /metrics (format, request and domain counters, queue depth, who may scrape it, aggregation
across gunicorn's workers), request ids on every response, and JSON log lines."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from base.identity import Role
from base.uow import savepoint
from edge import jobs, telemetry
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment
from market.engine import submit as engine_submit
from market.engine.next_task import next_assignment
from tests.factories import TEST_GOLD_KEY, account, auth, fund, items, project

REQUESTS = "crowdmarket_http_requests_total"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition by (name, labels); parsing it is the format's test."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client, **kwargs) -> dict[tuple[str, frozenset], float]:
    resp = client.get("/metrics", **kwargs)
    assert resp.status_code == 200, resp.status_code
    assert resp.mimetype == "text/plain" and resp.headers["Cache-Control"] == "no-store"
    return samples(resp.get_data(as_text=True))


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def gold_work(session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), gold_rate=Decimal("0.10"))
    items(session, proj, 200, now=clock(), gold=40)
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    session.commit()
    return proj


def test_claims_submits_and_gold_are_counted_once_committed(app, client, session, clock, gold_work):
    before = scrape(client)
    worker, token = account(session, Role.WORKER, now=clock())
    # Through the API once (the request metrics' route), then through the engine until a gold task came.
    task = client.post("/api/v1/work/next", headers=auth(token)).get_json()
    body = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]}
    assert client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=body,
                       headers=auth(token)).status_code == 200
    claims, golds = 1, int(session.get(Assignment, task["assignment_id"]).is_gold)
    while not golds and claims < 300:  # gold at 10%: 300 tasks without one would take odds of 1e-14
        leased = next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=clock())
        engine_submit.submit(session, worker=worker, assignment_id=leased.id, now=clock(),
                             answers=[{"item_id": i["id"], "answer": "pos"} for i in leased.items])
        session.commit()
        claims += 1
        golds += session.get(Assignment, leased.id).is_gold
    # A lease that is rolled back was never served: not counted.
    next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=clock())
    session.rollback()
    after = scrape(client)
    assert golds == 1
    for name, delta in (("crowdmarket_claims_total", claims), ("crowdmarket_submits_total", claims),
                        ("crowdmarket_gold_served_total", golds)):
        assert value(after, name) - value(before, name) == delta, name
    submit_route = {"endpoint": "/api/v1/assignments/<int:assignment_id>/submit", "method": "POST"}
    assert value(after, REQUESTS, **submit_route, status="2xx") - value(before, REQUESTS, **submit_route,
                                                                          status="2xx") == 1
    buckets = [k for k in after if k[0] == "crowdmarket_http_request_duration_seconds_bucket"
               and ("endpoint", submit_route["endpoint"]) in k[1]]
    assert len(buckets) >= 10 and value(after, "crowdmarket_http_request_duration_seconds_count",
                                        **submit_route) >= 1


def test_flags_and_ledger_postings_are_counted_by_kind_and_reason(app, client, session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    ops, ops_token = account(session, Role.OPS, now=clock())
    worker, _ = account(session, Role.WORKER, now=clock())
    before = scrape(client)
    assert client.post("/api/v1/ops/flags", json={"worker_id": worker.id, "note": "odd"},
                       headers=auth(ops_token)).status_code == 201
    fund(session, owner, 500, now=clock())
    session.commit()
    fund(session, owner, 700, now=clock())
    session.rollback()  # never posted
    with pytest.raises(RuntimeError), savepoint(session):  # undone by its savepoint, the rest kept
        fund(session, owner, 900, now=clock())
        raise RuntimeError("undo")
    fund(session, owner, 300, now=clock())
    session.commit()
    after = scrape(client)
    flagged = ("crowdmarket_flags_raised_total", "MANUAL")
    assert value(after, flagged[0], reason=flagged[1]) - value(before, flagged[0], reason=flagged[1]) == 1
    posted = "crowdmarket_ledger_postings_total"
    assert value(after, posted, kind="funding") - value(before, posted, kind="funding") == 2


def test_unknown_paths_and_methods_add_no_series(client):
    client.get("/no/such/page/12345")
    client.open("/healthz", method="BREW")
    found = scrape(client)
    labels = {dict(k[1]).get("endpoint") for k in found if k[0] == REQUESTS}
    assert telemetry.UNMATCHED in labels and not any("12345" in (e or "") for e in labels)
    assert not any(dict(k[1]).get("method") == "BREW" for k in found if k[0] == REQUESTS)


def test_queue_depth_is_read_at_scrape_time(app, client):
    queue = jobs.queue(app)
    if queue is None:
        assert value(scrape(client), "crowdmarket_job_queue_depth") == 0
        return
    queue.enqueue(len, "abc")
    queue.enqueue(len, "de")
    assert value(scrape(client), "crowdmarket_job_queue_depth") == 2  # clear_redis removes them


def test_metrics_are_not_public(app, client, session, clock):
    _, ops_token = account(session, Role.OPS, now=clock())
    _, requester_token = account(session, Role.REQUESTER, now=clock())
    remote = {"environ_base": {"REMOTE_ADDR": "203.0.113.7"}}
    assert client.get("/metrics", **remote).status_code == 404
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 404  # relayed
    assert client.get("/metrics", headers=auth(requester_token), **remote).status_code == 404
    assert client.get("/metrics", headers=auth("not-a-token"), **remote).status_code == 404
    scrape(client, headers=auth(ops_token), **remote)
    app.config["METRICS_TOKEN"] = "scraper-token-0123456789"
    scrape(client, headers=auth("scraper-token-0123456789"), **remote)
    assert client.get("/metrics", headers=auth("scraper-token-0123456780"), **remote).status_code == 404
    scrape(client)  # loopback, no proxy


def test_every_response_carries_a_request_id_kept_when_sane(client):
    ids = set()
    for path in ("/healthz", "/no/such/page", "/api/v1/no/such", "/login", "/metrics"):
        rid = client.get(path).headers["X-Request-ID"]
        assert len(rid) == 32 and rid not in ids, path
        ids.add(rid)
    kept = "edge-7f3a:9b21.c0/req=1"
    assert client.get("/api/v1/work/next", headers={"X-Request-ID": kept}).headers["X-Request-ID"] == kept
    for bad in ("x" * 129, "two words", "semi;colon", "é", ""):
        rid = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert rid != bad and len(rid) == 32


def test_a_request_logs_one_json_line_with_its_id(app, client, session, clock, caplog):
    worker, token = account(session, Role.WORKER, now=clock())
    with caplog.at_level(logging.INFO, logger="crowdmarket.request"):
        resp = client.get("/api/v1/assignments/999999", headers={**auth(token), "X-Request-ID": "abc-123"})
    [record] = [r for r in caplog.records if r.name == "crowdmarket.request"]
    line = json.loads(telemetry.json_formatter().format(record))
    assert resp.headers["X-Request-ID"] == line["request_id"] == "abc-123"
    assert (line["level"], line["method"], line["path"], line["endpoint"], line["status"], line["account_id"]) == (
        "INFO", "GET", "/api/v1/assignments/999999", "/api/v1/assignments/<int:assignment_id>", resp.status_code,
        worker.id)
    assert line["duration_ms"] >= 0 and line["time"].endswith("+00:00") and line["pid"] == os.getpid()


def test_a_500_problem_or_page_names_its_request_id():
    from tests.conftest import make_app

    app = make_app()

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("boom")

    @app.get("/boom")
    def boom_page():
        raise RuntimeError("boom")

    resp = app.test_client().get("/api/v1/boom", headers={"X-Request-ID": "report-me-42"})
    assert resp.status_code == 500 and resp.get_json()["request_id"] == "report-me-42"
    assert resp.headers["X-Request-ID"] == "report-me-42"
    page = app.test_client().get("/boom", headers={"X-Request-ID": "report-me-43"})
    assert page.status_code == 500 and "<code>report-me-43</code>" in page.get_data(as_text=True)


def test_gunicorn_workers_counts_add_up_and_log_json(tmp_path):
    """`crowdmarket run --workers 2`: requests served by both workers are all in one scrape, and every line the
    server writes is a JSON object."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("CROWDMARKET_REDIS_URL", "PROMETHEUS_MULTIPROC_DIR",
                                                           "CROWDMARKET_LOG_FORMAT")}
    env.update(CROWDMARKET_DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}", CROWDMARKET_INSTANCE_PATH=str(tmp_path))
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([Path(sys.executable).with_name("crowdmarket"), "run", "--port", str(port),
                                   "--workers", "2", "--threads", "1"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    served = 0
    try:
        deadline = time.monotonic() + 60  # a busy machine: the app's import alone took 15 s once
        while not served:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)
                served += 1
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        pids: set[int] = set()
        while len(pids) < 2 and served < 200:
            urllib.request.urlopen(f"{url}/healthz", timeout=5)
            served += 1
            time.sleep(0.005)
            pids = {line["pid"] for line in map(json.loads, log.read_text().splitlines())
                    if line.get("logger") == "crowdmarket.request"}
        assert len(pids) == 2, "one worker served every request"
        found = samples(urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode())
        assert value(found, REQUESTS, endpoint="/healthz", method="GET", status="2xx") == served
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = log.read_text().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines), lines[:5]
    assert any("Booting worker" in json.loads(line)["message"] for line in lines)
