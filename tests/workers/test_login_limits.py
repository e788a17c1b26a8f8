"""Failed logins are limited per username and per client address; Redis shares the counts, memory stands in."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import redis

from market.ratelimit import LOGIN_PER_USER, Limiter
from tests.conftest import make_app

PASSWORD = "correct horse battery"


@pytest.fixture
def http(database, clock):
    """The app on this process's memory limiter (Redis TTLs would not follow the test's clock)."""
    return make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None}).test_client()


def sign_up(http) -> str:
    name = f"w{uuid.uuid4().hex[:10]}"
    assert http.post("/api/v1/workers", json={"username": name, "password": PASSWORD}).status_code == 201
    return name


def log_in(http, name, password, address="10.0.0.1"):
    return http.post("/api/v1/auth/token", json={"username": name, "password": password},
                     environ_base={"REMOTE_ADDR": address})


def test_too_many_failures_lock_the_username_until_the_window_ends(http, clock):
    name = sign_up(http)
    for _ in range(LOGIN_PER_USER[0]):
        assert log_in(http, name, "wrong password!").status_code == 401
    locked = log_in(http, name, PASSWORD, address="10.0.0.2")  # the right password, from elsewhere, too late
    assert locked.status_code == 429 and locked.mimetype == "application/problem+json"
    assert int(locked.headers["Retry-After"]) == locked.get_json()["retry_after"] == LOGIN_PER_USER[1]
    clock.advance(seconds=LOGIN_PER_USER[1])
    assert log_in(http, name, PASSWORD).status_code == 201


def test_a_successful_login_clears_the_usernames_failures(http):
    name = sign_up(http)
    for _ in range(LOGIN_PER_USER[0] - 1):
        log_in(http, name, "wrong password!")
    assert log_in(http, name, PASSWORD).status_code == 201
    for _ in range(LOGIN_PER_USER[0] - 1):
        assert log_in(http, name, "wrong password!").status_code == 401
    assert log_in(http, name, PASSWORD).status_code == 201


def test_one_usernames_failures_do_not_lock_another(http):
    guessed, other = sign_up(http), sign_up(http)
    for _ in range(LOGIN_PER_USER[0]):
        log_in(http, guessed, "wrong password!", address="10.0.0.3")
    assert log_in(http, guessed, PASSWORD, address="10.0.0.3").status_code == 429
    assert log_in(http, other, PASSWORD, address="10.0.0.3").status_code == 201


def _limiters(redis_url: str | None) -> list[Limiter]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    made = [Limiter(name, limit=3, window=60, client=None)]
    if redis_url:
        made.append(Limiter(name, limit=3, window=60, client=redis.Redis.from_url(redis_url)))
    return made


def test_limiter_counts_to_its_limit_and_resets(redis_url):
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for limiter in _limiters(redis_url):
        for _ in range(3):
            assert limiter.retry_after("k", now) is None
            limiter.hit("k", now)
        wait = limiter.retry_after("k", now)
        assert wait is not None and 1 <= wait <= 60, limiter.client
        assert limiter.retry_after("other", now) is None
        limiter.reset("k")
        assert limiter.retry_after("k", now) is None


def test_limiter_window_ends_in_memory():
    limiter, now = Limiter("mem", limit=1, window=60, client=None), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    limiter.hit("k", now)
    assert limiter.retry_after("k", now + dt.timedelta(seconds=59)) == 1
    assert limiter.retry_after("k", now + dt.timedelta(seconds=60)) is None


def test_with_redis_down_logins_are_not_limited_and_still_work(database, clock):
    http = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": "redis://127.0.0.1:1/0"}).test_client()
    name = sign_up(http)
    for _ in range(LOGIN_PER_USER[0] + 1):
        assert log_in(http, name, "wrong password!").status_code == 401
    assert log_in(http, name, PASSWORD).status_code == 201
