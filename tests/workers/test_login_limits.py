"""Failed logins are limited per (address, username), per username and per address, counted before the password
is checked; sign-ups per address. Redis shares the counts, memory stands in."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import delete
from werkzeug.security import generate_password_hash

from base.db import Database, make_engine
from base.identity import Role
from edge.limits import SIGNUP_PER_ADDRESS
from edge.ratelimit import LOGIN_PER_ADDRESS, LOGIN_PER_PAIR, LOGIN_PER_USER, Limiter
from tests.conftest import REDIS_URL, TEST_PASSWORD_HASH, clear_redis, make_app
from workers.models import Account, ApiToken
from workers.service import create_account

PASSWORD = "correct horse battery"
WRONG = "wrong password!"


@pytest.fixture
def http(database, clock):
    """The app on this process's memory limiter (Redis TTLs would not follow the test's clock)."""
    return make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None}).test_client()


def sign_up(http, address="10.9.0.1", name=None) -> str:
    name = name or f"w{uuid.uuid4().hex[:10]}"
    resp = http.post("/api/v1/workers", json={"username": name, "password": PASSWORD},
                     environ_base={"REMOTE_ADDR": address})
    assert resp.status_code == 201, resp.get_json()
    return name


def log_in(http, name, password, address="10.0.0.1", **headers):
    return http.post("/api/v1/auth/token", json={"username": name, "password": password},
                     environ_base={"REMOTE_ADDR": address}, headers=headers)


def test_too_many_failures_lock_the_username_from_that_address_until_the_window_ends(http, clock):
    name = sign_up(http)
    for _ in range(LOGIN_PER_PAIR[0]):
        assert log_in(http, name, WRONG).status_code == 401
    locked = log_in(http, name, PASSWORD)  # the right password, too late
    assert locked.status_code == 429 and locked.mimetype == "application/problem+json"
    assert int(locked.headers["Retry-After"]) == locked.get_json()["retry_after"] == LOGIN_PER_PAIR[1]
    clock.advance(seconds=LOGIN_PER_PAIR[1])
    assert log_in(http, name, PASSWORD).status_code == 201


def test_ten_guesses_from_one_address_do_not_lock_the_worker_out_elsewhere(http):
    name = sign_up(http)
    for _ in range(LOGIN_PER_PAIR[0]):
        log_in(http, name, WRONG, address="10.0.0.66")
    assert log_in(http, name, PASSWORD, address="10.0.0.66").status_code == 429
    assert log_in(http, name, PASSWORD, address="10.0.0.2").status_code == 201


def test_the_looser_per_username_limit_holds_against_many_addresses(http):
    name = sign_up(http)
    addresses = [f"10.1.0.{n}" for n in range(LOGIN_PER_USER[0] // LOGIN_PER_PAIR[0])]
    for address in addresses:
        for _ in range(LOGIN_PER_PAIR[0]):
            assert log_in(http, name, WRONG, address=address).status_code == 401
    assert log_in(http, name, PASSWORD, address="10.2.0.1").status_code == 429
    assert log_in(http, sign_up(http), PASSWORD, address="10.2.0.1").status_code == 201


def test_a_successful_login_clears_the_failures_from_its_address(http):
    name = sign_up(http)
    for _ in range(LOGIN_PER_PAIR[0] - 1):
        log_in(http, name, WRONG)
    assert log_in(http, name, PASSWORD).status_code == 201
    for _ in range(LOGIN_PER_PAIR[0] - 1):
        assert log_in(http, name, WRONG).status_code == 401
    assert log_in(http, name, PASSWORD).status_code == 201


def test_one_usernames_failures_do_not_lock_another(http):
    guessed, other = sign_up(http), sign_up(http)
    for _ in range(LOGIN_PER_PAIR[0]):
        log_in(http, guessed, WRONG, address="10.0.0.3")
    assert log_in(http, guessed, PASSWORD, address="10.0.0.3").status_code == 429
    assert log_in(http, other, PASSWORD, address="10.0.0.3").status_code == 201


def test_the_per_address_limit_counts_failures_across_usernames(http):
    for n in range(LOGIN_PER_ADDRESS[0]):
        assert log_in(http, f"nobody{n}", WRONG, address="10.3.0.1").status_code == 401
    assert log_in(http, sign_up(http), PASSWORD, address="10.3.0.1").status_code == 429


def test_a_refused_login_is_not_counted_against_the_username(http):
    """A request the address limit refuses never reaches the password check, so it is no guess at the username."""
    name = sign_up(http)
    for n in range(LOGIN_PER_ADDRESS[0]):
        log_in(http, f"nobody{n}", WRONG, address="10.4.0.1")
    for _ in range(LOGIN_PER_USER[0] + 1):
        assert log_in(http, name, WRONG, address="10.4.0.1").status_code == 429
    assert log_in(http, name, PASSWORD, address="10.4.0.2").status_code == 201


# ---- the client address behind proxies ------------------------------------------------------------------


def test_without_proxy_hops_a_forwarded_address_is_not_believed(http):
    name = sign_up(http)
    for n in range(LOGIN_PER_PAIR[0]):
        log_in(http, name, WRONG, **{"X-Forwarded-For": f"192.0.2.{n}"})
    assert log_in(http, name, PASSWORD, **{"X-Forwarded-For": "192.0.2.200"}).status_code == 429


def test_with_proxy_hops_each_client_behind_the_proxy_has_its_own_count(database, clock):
    http = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None, "PROXY_HOPS": 1}).test_client()
    name = sign_up(http)
    proxy = "10.0.0.1"
    for _ in range(LOGIN_PER_PAIR[0]):
        # The client put a forged address first; the proxy appended the real one, which is what counts.
        assert log_in(http, name, WRONG, proxy, **{"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}).status_code == 401
    assert log_in(http, name, PASSWORD, proxy, **{"X-Forwarded-For": "203.0.113.10, 198.51.100.7"}).status_code == 429
    assert log_in(http, name, PASSWORD, proxy, **{"X-Forwarded-For": "198.51.100.8"}).status_code == 201


# ---- sign-ups ---------------------------------------------------------------------------------------------


def test_sign_ups_are_limited_per_address(http, session):
    for _ in range(SIGNUP_PER_ADDRESS[0]):
        sign_up(http, address="10.5.0.1")
    refused = http.post("/api/v1/workers", json={"username": "one-too-many", "password": PASSWORD},
                        environ_base={"REMOTE_ADDR": "10.5.0.1"})
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert SIGNUP_PER_ADDRESS[1] - 5 <= int(refused.headers["Retry-After"]) <= SIGNUP_PER_ADDRESS[1]
    assert session.query(Account).filter(Account.username == "one-too-many").count() == 0
    sign_up(http, address="10.5.0.2")


# ---- parallel guesses: counted before they are checked -------------------------------------------------------


@pytest.fixture
def committed(engine, database_url: str) -> Iterator[tuple[Database, str]]:
    """A worker account in a committed database, so that threads on their own connections see it."""
    db = Database(make_engine(database_url, pool_size=50))
    name = f"race-{uuid.uuid4().hex[:8]}"
    with db.session_scope() as s:
        account = create_account(s, role=Role.WORKER, username=name, now=dt.datetime.now(dt.UTC))
        account.password_hash = generate_password_hash(PASSWORD, method=TEST_PASSWORD_HASH)
        s.commit()
        account_id = account.id
    yield db, name
    with db.session_scope() as s:
        s.execute(delete(ApiToken).where(ApiToken.account_id == account_id))
        s.execute(delete(Account).where(Account.id == account_id))
        s.commit()
    db.dispose()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_parallel_wrong_guesses_get_no_more_than_the_limit_through(store, committed):
    if store == "redis" and not REDIS_URL:
        pytest.skip("needs Redis (CROWDMARKET_REDIS_URL); CI's second run sets it")
    db, name = committed
    # A real scrypt cost, so that the guesses overlap while their passwords are checked.
    app = make_app({"DATABASE": db, "REDIS_URL": REDIS_URL if store == "redis" else None,
                    "PASSWORD_HASH": "scrypt:4096:8:1"})
    guesses = 48
    barrier, statuses, lock = threading.Barrier(guesses), [], threading.Lock()

    def guess() -> None:
        http = app.test_client()
        barrier.wait()
        status = log_in(http, name, WRONG, address="10.6.0.1").status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=guess) for _ in range(guesses)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        clear_redis(app)
    assert sorted(statuses) == [401] * LOGIN_PER_PAIR[0] + [429] * (guesses - LOGIN_PER_PAIR[0])


# ---- the limiter itself -----------------------------------------------------------------------------------


def _limiters(redis_url: str | None) -> list[Limiter]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    made = [Limiter(name, limit=3, window=60, client=None)]
    if redis_url:
        made.append(Limiter(name, limit=3, window=60, client=redis.Redis.from_url(redis_url)))
    return made


def test_limiter_counts_to_its_limit_releases_and_resets(redis_url):
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for limiter in _limiters(redis_url):
        for _ in range(3):
            assert limiter.acquire("k", now) is None
        wait = limiter.acquire("k", now)
        assert wait is not None and 1 <= wait <= 60, limiter.client
        limiter.release("k")
        assert limiter.acquire("other", now) is None
        limiter.release("k")
        assert limiter.acquire("k", now) is None  # three counted again: the fourth attempt and one released
        assert limiter.acquire("k", now) is not None
        limiter.reset("k")
        assert limiter.acquire("k", now) is None
        limiter.reset("k"), limiter.reset("other")


def test_releasing_a_key_that_expired_creates_nothing(redis_url):
    if not redis_url:
        pytest.skip("needs Redis (CROWDMARKET_REDIS_URL)")
    limiter = _limiters(redis_url)[1]
    limiter.release("gone")
    assert limiter.client.exists(limiter.prefix + "gone") == 0
    limiter.acquire("here", dt.datetime.now(dt.UTC))
    assert 0 < limiter.client.ttl(limiter.prefix + "here") <= 60
    limiter.reset("here")


def test_limiter_window_ends_in_memory():
    limiter, now = Limiter("mem", limit=1, window=60, client=None), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert limiter.acquire("k", now) is None
    assert limiter.acquire("k", now + dt.timedelta(seconds=59)) == 1
    assert limiter.acquire("k", now + dt.timedelta(seconds=60)) is None


def test_the_memory_limiter_forgets_ended_windows():
    limiter, now = Limiter("mem", limit=1, window=60, client=None), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for n in range(15_000):
        limiter.acquire(f"user{n}", now)
    later = now + dt.timedelta(minutes=2)
    for n in range(10_000):
        limiter.acquire(f"other{n}", later)
    assert len(limiter._memory) < 15_000


def test_with_redis_down_logins_and_sign_ups_are_not_limited_and_still_work(database, clock):
    http = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": "redis://127.0.0.1:1/0"}).test_client()
    name = sign_up(http)
    for _ in range(LOGIN_PER_PAIR[0] + 1):
        assert log_in(http, name, WRONG).status_code == 401
    assert log_in(http, name, PASSWORD).status_code == 201
