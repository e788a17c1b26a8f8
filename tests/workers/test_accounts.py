"""Usernames unique ignoring case (and the migration that made them so), password hash cost, token expiry, the
bound on login tokens, and grants that cannot be used to probe for worker accounts."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from base.db import make_engine
from base.identity import DEFAULT_PASSWORD_HASH, Role
from market.catalogue.models import Project
from qualification import service as qualifications
from shell.app import create_app
from shell.cli import alembic_config, cli
from shell.config import TEST_SECRET_KEY, ConfigError, load_config
from tests.conftest import TEST_PASSWORD_HASH
from tests.factories import account, auth, items, lease, project
from workers import service
from workers.models import Account, ApiToken

PASSWORD = "correct horse battery"
NOW = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def sign_up(client, username, password=PASSWORD):
    return client.post("/api/v1/workers", json={"username": username, "password": password})


def log_in(client, username, password=PASSWORD):
    return client.post("/api/v1/auth/token", json={"username": username, "password": password})


# ---- usernames --------------------------------------------------------------------------------------------


def test_usernames_are_unique_ignoring_case_and_log_in_in_any_case(client):
    created = sign_up(client, "Ada.Lovelace")
    assert created.status_code == 201
    clash = sign_up(client, "ada.lovelace")
    assert clash.status_code == 409 and clash.mimetype == "application/problem+json"
    login = log_in(client, "ADA.LOVELACE")
    assert login.status_code == 201 and login.get_json()["username"] == "Ada.Lovelace"  # kept as typed
    assert login.get_json()["account_id"] == created.get_json()["account_id"]


def test_the_database_refuses_a_username_that_differs_only_in_case(session, clock):
    service.create_account(session, role=Role.WORKER, username="Grace", now=clock())
    session.commit()
    with pytest.raises(IntegrityError):
        session.execute(insert(Account).values(role=Role.WORKER, username="GRACE", username_key="grace",
                                               created_at=clock()))


def test_the_migration_renames_later_accounts_whose_usernames_differ_only_in_case(empty_database_url):
    cfg = alembic_config(empty_database_url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "0009")
    engine = make_engine(empty_database_url)
    names = ["Ada", "ada", "ADA", "ada-2", "bob", "x" * 64, "X" * 64]
    with engine.begin() as conn:
        for name in names:
            conn.execute(text("INSERT INTO account (role, username, display_name, is_active, created_at) "
                              "VALUES ('worker', :n, '', :t, :now)"), {"n": name, "t": True, "now": NOW})
        conn.execute(text("INSERT INTO api_token (account_id, token_hash, prefix, name, created_at) "
                          "VALUES (2, 'h', 'cm_', 'login', :now)"), {"now": NOW})
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, username, username_key FROM account ORDER BY id")).all()
        token_login = conn.execute(text("SELECT login FROM api_token")).scalar_one()
    engine.dispose()
    # The oldest keeps its name; "ada" (2) would become "ada-2", which is taken, so it gets another suffix.
    assert [r.username for r in rows] == ["Ada", "ada-2-1", "ADA-3", "ada-2", "bob", "x" * 64, "X" * 62 + "-7"]
    assert [r.username_key for r in rows] == [r.username.lower() for r in rows]
    assert token_login  # the earlier login's token is marked as one


# ---- password hashes --------------------------------------------------------------------------------------


def test_tests_hash_cheaply_and_production_keeps_the_strong_default(client, session, database, clock):
    assert load_config("/nowhere", environ={})["PASSWORD_HASH"] == DEFAULT_PASSWORD_HASH == "scrypt:32768:8:1"
    sign_up(client, "cheap")
    assert session.scalar(select(Account.password_hash).where(Account.username == "cheap")).startswith(
        TEST_PASSWORD_HASH + "$")
    # An app configured as production is, without PASSWORD_HASH: werkzeug's full-cost scrypt.
    strong = create_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None, "ENV": "production",
                         "SECRET_KEY": "s" * 40}).test_client()
    assert sign_up(strong, "strong").status_code == 201
    assert session.scalar(select(Account.password_hash).where(Account.username == "strong")).startswith(
        "scrypt:32768:8:1$")
    assert log_in(strong, "strong").status_code == 201


@pytest.mark.parametrize("method", [TEST_PASSWORD_HASH, "scrypt:16384:8:1", "pbkdf2:sha256:1000"])
def test_production_refuses_a_cheaper_password_hash(database, method):
    with pytest.raises(ConfigError, match="weaker"):
        create_app({"DATABASE": database, "ENV": "production", "SECRET_KEY": "s" * 40, "PASSWORD_HASH": method})


@pytest.mark.parametrize("method", ["md5", "scrypt:16:1:1", "scrypt:lots"])
def test_a_password_hash_that_cannot_work_is_refused_at_start(database, method):
    with pytest.raises(ConfigError, match="PASSWORD_HASH"):
        create_app({"DATABASE": database, "TESTING": True, "SECRET_KEY": TEST_SECRET_KEY, "PASSWORD_HASH": method})


# ---- tokens -----------------------------------------------------------------------------------------------


def test_a_token_with_an_expiry_stops_working_then(client, session, clock):
    acct, token = account(session, Role.REQUESTER, now=clock())
    later = clock() + dt.timedelta(days=2)
    created = client.post("/api/v1/tokens", json={"name": "ci", "expires_at": later.isoformat()}, headers=auth(token))
    assert created.status_code == 201 and dt.datetime.fromisoformat(created.get_json()["expires_at"]) == later
    expiring = created.get_json()["token"]
    listed = {t["name"]: t for t in client.get("/api/v1/tokens", headers=auth(token)).get_json()}
    assert listed["ci"]["expires_at"] is not None and listed["ci"]["login"] is False
    assert client.get("/api/v1/me", headers=auth(expiring)).status_code == 200
    clock.advance(days=2)
    assert client.get("/api/v1/me", headers=auth(expiring)).status_code == 401
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 200  # no expiry: until revoked


def test_a_token_cannot_be_made_already_expired(client, session, clock):
    _, token = account(session, Role.REQUESTER, now=clock())
    before = session.scalar(select(func.count()).select_from(ApiToken))
    resp = client.post("/api/v1/tokens", json={"expires_at": clock().isoformat()}, headers=auth(token))
    assert resp.status_code == 422 and "expires_at" in resp.get_json()["errors"]
    assert client.post("/api/v1/tokens", json={"expires_at": "soon"}, headers=auth(token)).status_code == 422
    assert session.scalar(select(func.count()).select_from(ApiToken)) == before


def test_tokens_create_sets_an_expiry_from_the_cli(app, client, session, clock):
    runner = app.test_cli_runner()

    def invoke(*args):
        return runner.invoke(cli, list(args), obj=lambda: app)

    first = invoke("users", "create", "--role", "requester", "--email", "eve@example.com").stdout.strip()
    week = invoke("tokens", "create", "--email", "eve@example.com", "--name", "week", "--expires-in", "7")
    until = invoke("tokens", "create", "--email", "eve@example.com", "--name", "until",
                   "--expires-at", "2026-03-01T12:00:00")
    assert week.exit_code == until.exit_code == 0, week.output + until.output
    listed = {t["name"]: t for t in client.get("/api/v1/tokens", headers=auth(first)).get_json()}
    assert dt.datetime.fromisoformat(listed["week"]["expires_at"]) == clock() + dt.timedelta(days=7)
    assert dt.datetime.fromisoformat(listed["until"]["expires_at"]) == dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert listed["created by CLI"]["expires_at"] is None
    past = invoke("tokens", "create", "--email", "eve@example.com", "--expires-at", "2020-01-01")
    both = invoke("tokens", "create", "--email", "eve@example.com", "--expires-in", "1", "--expires-at", "2030-01-01")
    assert past.exit_code == 1 and "future" in past.output
    assert both.exit_code == 2


def test_logins_keep_only_the_newest_login_tokens(client, session):
    first = sign_up(client, "often").get_json()
    other = client.post("/api/v1/tokens", json={"name": "script"}, headers=auth(first["token"])).get_json()["token"]
    logins = [log_in(client, "often").get_json()["token"] for _ in range(service.LOGIN_TOKENS_KEPT + 3)]
    kept = session.scalars(select(ApiToken).where(ApiToken.account_id == first["account_id"],
                                                  ApiToken.login.is_(True))).all()
    assert len(kept) == service.LOGIN_TOKENS_KEPT
    for token in logins[-service.LOGIN_TOKENS_KEPT:] + [other]:
        assert client.get("/api/v1/me", headers=auth(token)).status_code == 200
    for token in [first["token"], *logins[:3]]:  # the sign-up token and the oldest logins are gone
        assert client.get("/api/v1/me", headers=auth(token)).status_code == 401


# ---- grants: no probing for worker accounts ---------------------------------------------------------------


QUALIFICATIONS = "/api/v1/qualifications"


@pytest.fixture
def granting(client, session, clock):
    owner, token = account(session, Role.REQUESTER, now=clock())
    qtype = client.post(QUALIFICATIONS, headers=auth(token), json={
        "name": "Trusted", "label_schema": {"type": "text", "max_length": 10},
        "questions": [{"data": {}, "answer": "x"}], "passing_score": 100, "test_duration_seconds": 600,
        "retry_delay_seconds": 0}).get_json()
    return owner, token, f"{QUALIFICATIONS}/{qtype['id']}/grants"


def test_a_requester_grants_by_id_only_to_workers_who_worked_for_them(client, session, clock, granting):
    owner, token, grants = granting
    stranger, _ = account(session, Role.WORKER, now=clock())
    mine, _ = account(session, Role.WORKER, now=clock())
    proj = project(session, owner, now=clock())
    items(session, proj, 1, now=clock())
    from market.catalogue.batches import publish_batch

    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    hit_id = session.scalar(text("SELECT id FROM hit WHERE project_id = :p"), {"p": proj.id})
    lease(session, hit_id, proj.id, mine, now=clock())
    strangers = client.post(grants, json={"worker_id": stranger.id, "reason": "r"}, headers=auth(token))
    nobody = client.post(grants, json={"worker_id": 2**31 - 1, "reason": "r"}, headers=auth(token))
    assert strangers.status_code == nobody.status_code == 404
    # One answer for "no such worker" and "not your worker", bar the id the caller sent.
    assert strangers.get_json()["detail"].replace(str(stranger.id), "N") == nobody.get_json()["detail"].replace(
        str(2**31 - 1), "N")
    assert client.post(grants, json={"worker_id": mine.id, "reason": "r"}, headers=auth(token)).status_code == 201
    assert session.get(Project, proj.id).owner_id == owner.id


def test_a_requester_grants_by_the_username_a_worker_gave_and_ops_by_any_id(client, session, clock, granting):
    _, token, grants = granting
    worker, _ = account(session, Role.WORKER, now=clock())
    _, ops = account(session, Role.OPS, now=clock())
    by_name = client.post(grants, json={"username": worker.username.upper(), "reason": "r"}, headers=auth(token))
    assert by_name.status_code == 201 and by_name.get_json()["worker_id"] == worker.id
    assert client.post(grants, json={"username": "no-such-worker", "reason": "r"},
                       headers=auth(token)).status_code == 404
    other, _ = account(session, Role.WORKER, now=clock())
    assert client.post(grants, json={"worker_id": other.id, "reason": "r"}, headers=auth(ops)).status_code == 201
    both = client.post(grants, json={"worker_id": other.id, "username": worker.username, "reason": "r"},
                       headers=auth(token))
    neither = client.post(grants, json={"reason": "r"}, headers=auth(token))
    assert both.status_code == neither.status_code == 422 and "worker_id" in both.get_json()["errors"]


def test_a_worker_who_took_your_test_may_be_granted_by_id(session, clock, granting):
    owner, _, grants = granting
    worker, _ = account(session, Role.WORKER, now=clock())
    type_id = int(grants.split("/")[-2])
    qualifications.start_attempt(session, worker=worker, type_id=type_id, now=clock())
    granted = qualifications.grant(session, type_id=type_id, account=owner, worker_id=worker.id, value=1,
                                   reason="r", now=clock())
    assert granted.worker_id == worker.id
