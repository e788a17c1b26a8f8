"""Next-task is limited per worker account (CROWDMARKET_RATELIMIT_NEXT), on the API and the work page alike; the
counts live in flask-limiter's storage: Redis when configured (shared by every process), memory otherwise, and
Redis being down lets requests through (logged)."""

from __future__ import annotations

import logging
import re

import pytest
from flask import Flask

from base.identity import Role
from edge import limits
from market.catalogue.batches import publish_batch
from shell.config import ConfigError
from tests.browser import PASSWORD, with_password
from tests.conftest import REDIS_URL, clear_redis, make_app, unique_name
from tests.factories import account, auth, items, project

NEXT = "/api/v1/work/next"
PAGE_NEXT = "/work/tasks/next"


@pytest.fixture
def work(session, clock):
    """A published project with plenty of tasks."""
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    items(session, proj, 10, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    session.commit()
    return proj


def _refused(resp) -> int:
    assert resp.status_code == 429, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == 429 and body["title"] and "next-task" in body["detail"]
    wait = int(resp.headers["Retry-After"])
    assert 1 <= wait <= 60
    return wait


def test_next_is_limited_per_worker_account_with_retry_after(app, client, session, clock, work):
    app.config["RATELIMIT_NEXT"] = "3/minute"
    _, first = account(session, Role.WORKER, now=clock())
    _, second = account(session, Role.WORKER, now=clock())
    for _ in range(3):  # the held task is handed back: the same lease, each one counted
        assert client.post(NEXT, headers=auth(first)).status_code == 200
    _refused(client.post(NEXT, headers=auth(first)))
    # Per account, not global: another worker from the same address is not held back.
    assert client.post(NEXT, headers=auth(second)).status_code == 200


def test_the_work_page_and_the_api_share_one_count(app, client, session, clock, work):
    app.config["RATELIMIT_NEXT"] = "2/minute"
    worker, token = account(session, Role.WORKER, now=clock())
    name = with_password(app, session, worker)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    assert client.post("/login", data={"csrf_token": csrf, "username": name, "password": PASSWORD}).status_code == 302
    page_csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/work/tasks").get_data(as_text=True))
    headers = {"X-CSRFToken": page_csrf.group(1)} if page_csrf else {}
    assert client.post(PAGE_NEXT, headers=headers).status_code == 200
    assert client.post(NEXT, headers=auth(token)).status_code == 200
    page = client.post(PAGE_NEXT, headers=headers)
    assert page.status_code == 429 and 1 <= int(page.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("off", ["", "0", "off"])
def test_the_limit_can_be_turned_off(app, client, session, clock, work, off):
    app.config["RATELIMIT_NEXT"] = off
    _, token = account(session, Role.WORKER, now=clock())
    assert all(client.post(NEXT, headers=auth(token)).status_code == 200 for _ in range(5))


@pytest.mark.parametrize(("value", "limited"), [("off", False), ("0", False), ("", True), ("5/minute", True)])
def test_the_environment_turns_it_off_by_name_not_by_an_empty_value(tmp_path, value, limited):
    """As every setting, an empty variable means the default (120/minute): `off` or `0` turns the limit off."""
    from edge.limits import parse_rule
    from shell.config import load_config

    config = load_config(str(tmp_path), {"CROWDMARKET_RATELIMIT_NEXT": value})
    assert (parse_rule(config["RATELIMIT_NEXT"]) is not None) == limited


def test_the_default_lets_a_fast_honest_worker_through(app):
    """A next every 0.5 s for a minute (120) passes the default; the 121st within the minute does not."""
    from shell.config import _SETTINGS

    app.config["RATELIMIT_NEXT"] = _SETTINGS["RATELIMIT_NEXT"][0]
    with app.test_request_context():
        for _ in range(120):
            limits.next_task(424242)
        with pytest.raises(limits.TooManyRequests):
            limits.next_task(424242)


def test_a_bad_rule_is_refused_at_start():
    with pytest.raises(ConfigError, match="RATELIMIT_NEXT"):
        make_app({"RATELIMIT_NEXT": "lots", "REDIS_URL": None})


def _two_processes(url: str | None) -> tuple[Flask, Flask]:
    namespace = f"limits-{unique_name()}"
    return tuple(make_app({"REDIS_URL": url, "LIMIT_NAMESPACE": namespace, "RATELIMIT_NEXT": "2/minute"})
                 for _ in range(2))  # type: ignore[return-value]


def _counted(app: Flask, account_id: int) -> bool:
    with app.test_request_context():
        try:
            limits.next_task(account_id)
        except limits.TooManyRequests:
            return False
    return True


def test_redis_shares_the_count_between_processes_memory_does_not():
    memory = _two_processes(None)
    assert [_counted(a, 7) for a in (*memory, *memory)] == [True, True, True, True]  # two each, by itself
    if not REDIS_URL:
        pytest.skip("needs Redis (CROWDMARKET_REDIS_URL); CI's second run sets it")
    shared = _two_processes(REDIS_URL)
    try:
        assert type(shared[0].extensions[limits.EXTENSION].storage).__name__ == "RedisStorage"
        assert [_counted(a, 7) for a in (*shared, *shared)] == [True, True, False, False]
        assert _counted(shared[1], 8)  # per account
    finally:
        clear_redis(shared[0])


def test_redis_down_lets_next_through_and_logs_it(caplog):
    app = make_app({"REDIS_URL": "redis://127.0.0.1:9/0", "RATELIMIT_NEXT": "1/minute"})
    with caplog.at_level(logging.WARNING, logger="edge.limits"):
        assert [_counted(app, 7) for _ in range(3)] == [True, True, True]
    assert "rate limit next not enforced" in caplog.text


def test_sign_ups_use_the_same_storage(app, client):
    for i in range(limits.SIGNUP_PER_ADDRESS[0]):
        assert client.post("/api/v1/workers", json={"username": f"rl{i}", "password": PASSWORD},
                           environ_base={"REMOTE_ADDR": "10.77.0.1"}).status_code == 201
    refused = client.post("/api/v1/workers", json={"username": "rlmore", "password": PASSWORD},
                          environ_base={"REMOTE_ADDR": "10.77.0.1"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 3500
