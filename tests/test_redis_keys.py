"""Redis keys that tests make expire or are removed: rate-limit counts carry a TTL from their first write, and a
test app's job queue, its jobs and RQ's registries (which RQ never expires) are removed when the test ends. The
whole run is checked too: tests/conftest.py's pytest_sessionfinish fails it if any key of the run has no TTL."""

from __future__ import annotations

import pytest
import redis

from edge import jobs
from tests.conftest import REDIS_URL, clear_redis, keys_without_ttl, make_app
from tests.factories import answered_project, auth

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs Redis (CROWDMARKET_REDIS_URL); CI's second run sets it")


def test_a_test_app_leaves_no_redis_key_without_an_expiry(database, session, clock):
    app = make_app({"DATABASE": database, "CLOCK": clock})
    http, client = app.test_client(), redis.Redis.from_url(REDIS_URL)
    try:
        assert http.post("/api/v1/workers", json={"username": "keys", "password": "x" * 12}).status_code == 201
        assert http.post("/api/v1/auth/token", json={"username": "keys", "password": "y" * 12}).status_code == 401
        proj, token = answered_project(session, now=clock())
        queued = http.post(f"/api/v1/projects/{proj.id}/aggregations", json={"method": "mv"}, headers=auth(token))
        assert queued.get_json()["status"] == "queued"
        http.post(f"/api/v1/projects/{proj.id}/aggregations", json={"method": "ds"}, headers=auth(token))
        jobs.work(app, burst=True)
        name = app.config["JOB_QUEUE"]
        assert client.keys(f"{app.config['LIMIT_NAMESPACE']}:*") and not keys_without_ttl(
            client, app.config["LIMIT_NAMESPACE"])  # rate-limit counts expire by themselves
        assert keys_without_ttl(client, name)  # RQ's: the finished-job registry and the rq:queues entry
    finally:
        clear_redis(app)
    assert keys_without_ttl(client, name) == []
    assert client.keys(f"{app.config['LIMIT_NAMESPACE']}:*") == []
    client.close()
