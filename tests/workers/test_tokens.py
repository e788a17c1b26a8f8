"""Accounts and API tokens: hashed at rest, revocable, and the /me and /tokens endpoints."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from base.errors import Conflict
from base.identity import Role
from tests.factories import account, auth
from workers import service
from workers.models import Account, ApiToken


def test_tokens_are_stored_hashed(session, clock):
    acct, token = account(session, Role.REQUESTER, now=clock())
    stored = session.scalar(select(ApiToken).where(ApiToken.account_id == acct.id))
    assert token not in (stored.token_hash, stored.prefix) and stored.token_hash == service.hash_token(token)
    assert token.startswith(stored.prefix) and len(token) > 40


def test_authenticate_and_revoke(session, clock):
    acct, token = account(session, Role.REQUESTER, now=clock())
    assert service.authenticate(session, token, now=clock()).id == acct.id
    assert service.authenticate(session, token + "x", now=clock()) is None
    assert service.authenticate(session, "Basic nope", now=clock()) is None
    tok = service.list_tokens(session, account_id=acct.id)[0]
    service.revoke_token(session, account_id=acct.id, token_id=tok.id, now=clock())
    assert service.authenticate(session, token, now=clock()) is None


def test_disabled_accounts_cannot_authenticate(session, clock, client):
    acct, token = account(session, Role.REQUESTER, now=clock())
    session.get(Account, acct.id).is_active = False
    session.commit()
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 401


def test_last_used_is_recorded_coarsely(session, clock):
    acct, token = account(session, Role.REQUESTER, now=clock())
    service.authenticate(session, token, now=clock())
    first = service.list_tokens(session, account_id=acct.id)[0].last_used_at
    assert first == clock()
    clock.advance(minutes=1)
    service.authenticate(session, token, now=clock())
    assert service.list_tokens(session, account_id=acct.id)[0].last_used_at == first
    clock.advance(minutes=10)
    service.authenticate(session, token, now=clock())
    assert service.list_tokens(session, account_id=acct.id)[0].last_used_at == clock()


def test_duplicate_email_is_a_conflict(session, clock):
    service.create_account(session, role=Role.OPS, email="Ops@Example.com", now=clock())
    session.commit()
    with pytest.raises(Conflict):
        service.create_account(session, role=Role.OPS, email="ops@example.com", now=clock())


def test_me_and_token_lifecycle_over_http(client, session, clock):
    acct, token = account(session, Role.REQUESTER, now=clock())
    me = client.get("/api/v1/me", headers=auth(token)).get_json()
    assert (me["id"], me["role"], me["email"]) == (acct.id, "requester", acct.email)
    created = client.post("/api/v1/tokens", json={"name": "ci"}, headers=auth(token))
    assert created.status_code == 201
    new = created.get_json()
    assert new["token"].startswith(new["prefix"]) and new["name"] == "ci"
    listed = client.get("/api/v1/tokens", headers=auth(new["token"])).get_json()
    assert len(listed) == 2 and all("token" not in t and "token_hash" not in t for t in listed)
    revoked = client.delete(f"/api/v1/tokens/{new['id']}", headers=auth(token))
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"] is not None
    resp = client.get("/api/v1/me", headers=auth(new["token"]))
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 200
