"""Security properties across the app: no gold leak to workers, secrets hashed at rest, CSRF on every form post,
and page sessions that neither carry a planted session nor outlive log-out."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import String, Text, select

from base.db import Base
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from tests.browser import PASSWORD, with_password
from tests.factories import account, auth, jsonl, project
from tests.test_authorization import _snapshot

GOLD_ANSWER = "zebra quokka gold answer 7731"
GOLD_EXPLANATION = "Because the narwhal explanation 5520 says so"
OTHER_ANSWER = "another workers answer axolotl 9043"
# Requester-only fields of a task: its gold flag and answers, the requester's notes on items.
FORBIDDEN_KEYS = re.compile(r"gold|explanation|correct|is_gold|owner", re.IGNORECASE)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"|name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1) or match.group(2)


def _log_in(client, name: str, password: str = PASSWORD):
    token = _csrf(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "username": name, "password": password})


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


# ---- no gold leak -------------------------------------------------------------------------------------------


@pytest.fixture
def gold_world(app, session, clock):
    """A free-text project whose gold answers and explanations are distinctive strings, one worker's answers
    already in, and a second worker who takes every task."""
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), label_schema={"type": "text", "max_length": 200},
                   assignments_per_item=3, gold_rate=0.1)
    # Enough real tasks that a 10% gold stream serves gold whatever the worker's schedule draws (6 were not:
    # some schedules start with more than 6 real tasks).
    records = [{"external_id": f"t{i}", "data": {"text": f"plain {i}"}} for i in range(40)]
    records += [{"external_id": f"g{i}", "data": {"text": f"looks plain {i}"}, "gold": f"{GOLD_ANSWER} {i}",
                 "explanation": GOLD_EXPLANATION} for i in range(3)]
    import io

    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    session.commit()
    first, first_token = account(session, Role.WORKER, now=clock())
    second, second_token = account(session, Role.WORKER, now=clock())
    return {"first": first_token, "second": second, "second_token": second_token}


def _answer_all(client, token: str, text: str, seen: list[tuple[str, Any]]) -> int:
    """Take and answer tasks until none is left; records each payload a worker sees before answering."""
    done = 0
    while (resp := client.post("/api/v1/work/next", headers=auth(token))).status_code == 200:
        task = resp.get_json()
        seen.append(("next", task))
        again = client.get(f"/api/v1/assignments/{task['assignment_id']}", headers=auth(token))
        seen.append(("assignment", again.get_json()))
        body = {"answers": [{"item_id": i["id"], "answer": f"{text} {i['id']}"} for i in task["items"]]}
        assert client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=body,
                           headers=auth(token)).status_code == 200
        done += 1
    assert resp.status_code == 404, resp.get_data(as_text=True)
    return done


def test_no_worker_payload_or_page_shows_gold_or_other_workers_answers(app, client, session, gold_world):
    seen: list[tuple[str, Any]] = []
    _answer_all(client, gold_world["first"], OTHER_ANSWER, [])
    assert _answer_all(client, gold_world["second_token"], "mine", seen) >= 3
    gold_served = sum(1 for kind, task in seen if kind == "next"
                      for item in task["items"] if item["data"]["text"].startswith("looks plain"))
    assert gold_served, "the sweep never met a gold task"
    name = with_password(app, session, gold_world["second"])
    assert _log_in(client, name).status_code == 302
    for url in ("/work", "/work/tasks", "/work/earnings", "/work/qualifications"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        seen.append((url, resp.get_data(as_text=True)))
    for kind, payload in seen:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        for secret in (GOLD_ANSWER, GOLD_EXPLANATION, OTHER_ANSWER):
            assert secret not in text, (kind, secret)
        if not isinstance(payload, str):
            assert not [k for k in _keys(payload) if FORBIDDEN_KEYS.search(k)], kind
        else:
            assert "gold" not in text.lower(), kind


# ---- secrets at rest ----------------------------------------------------------------------------------------


def _text_cells(connection) -> list[str]:
    cells = []
    for table in Base.metadata.sorted_tables:
        cols = [c for c in table.columns if isinstance(c.type, String | Text) or c.type.__class__.__name__ == "JSON"]
        if cols:
            cells += [str(v) for row in connection.execute(select(*cols)) for v in row if v is not None]
    return cells


def test_tokens_and_passwords_are_never_stored_in_plaintext(client, connection):
    password = "plaintext-password-canary-31337"
    signed = client.post("/api/v1/workers", json={"username": "canary", "password": password})
    assert signed.status_code == 201
    logged = client.post("/api/v1/auth/token", json={"username": "canary", "password": password})
    made = client.post("/api/v1/tokens", json={"name": "ci"}, headers=auth(logged.get_json()["token"]))
    tokens = [signed.get_json()["token"], logged.get_json()["token"], made.get_json()["token"]]
    cells = _text_cells(connection)
    assert cells, "the scan read nothing"
    for secret in (password, *tokens):
        assert not [c for c in cells if secret in c], "a secret is stored in plaintext"
    # What is kept: a sha256 of each token (looked up by its hash, so no comparison of secrets runs in Python),
    # and a salted scrypt hash of the password.
    import hashlib

    from workers.models import Account, ApiToken

    hashes = set(connection.execute(select(ApiToken.token_hash)).scalars())
    assert {hashlib.sha256(t.encode()).hexdigest() for t in tokens} <= hashes
    stored = connection.execute(select(Account.password_hash).where(Account.username == "canary")).scalar_one()
    assert stored.startswith("scrypt:")


# ---- CSRF on every form post --------------------------------------------------------------------------------


def _form_posts(app) -> list[str]:
    return sorted({re.sub(r"<(?:[^:<>]+:)?\w+>", "1", rule.rule) for rule in app.url_map.iter_rules()
                   if not rule.rule.startswith("/api/") and "POST" in (rule.methods or set())})


def test_every_form_post_without_its_csrf_token_is_refused_and_writes_nothing(app, client, session, clock,
                                                                               connection):
    posts = _form_posts(app)
    assert "/login" in posts and "/logout" in posts and len(posts) > 10
    staff, _ = account(session, Role.OPS, now=clock())
    assert _log_in(client, with_password(app, session, staff)).status_code == 302  # a live session to ride on
    before = _snapshot(connection)
    for url in posts:
        for data in ({}, {"csrf_token": "forged"}):
            resp = client.post(url, data=data)
            assert resp.status_code == 400, url
            if url.startswith("/work/tasks/"):  # the work page's script posts: its refusal is a problem
                assert resp.mimetype == "application/problem+json", url
            else:
                assert resp.mimetype == "text/html" and "Form refused" in resp.get_data(as_text=True), url
    assert _snapshot(connection) == before
    assert client.get("/ops").status_code == 200  # still signed in: nothing logged out either


# ---- page sessions ------------------------------------------------------------------------------------------


def _session_cookie(client) -> str | None:
    cookie = client.get_cookie(client.application.config["SESSION_COOKIE_NAME"])
    return cookie.value if cookie else None


def test_log_in_starts_a_new_session_not_a_planted_one(app, client, session, clock):
    worker, _ = account(session, Role.WORKER, now=clock())
    name = with_password(app, session, worker)
    client.get("/login")
    with client.session_transaction() as planted:
        planted["attacker"] = "planted"
        planted["csrf_token"] = "attacker-known-csrf-secret"
    before = _session_cookie(client)
    assert before
    assert _log_in(client, name).status_code == 302
    assert _session_cookie(client) != before
    with client.session_transaction() as now_held:
        assert "attacker" not in now_held
        assert now_held.get("csrf_token") != "attacker-known-csrf-secret"


def test_a_cookie_copied_before_log_out_no_longer_signs_in(app, client, session, clock):
    worker, _ = account(session, Role.WORKER, now=clock())
    name = with_password(app, session, worker)
    assert _log_in(client, name).status_code == 302
    assert client.get("/work").status_code == 200
    stolen = _session_cookie(client)
    assert stolen
    token = _csrf(client.get("/work").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/work").status_code == 302  # this browser is signed out
    replay = app.test_client()
    replay.set_cookie(app.config["SESSION_COOKIE_NAME"], stolen)
    resp = replay.get("/work")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert replay.post("/work/tasks/next").status_code == 400  # and its old CSRF secret opens no form
