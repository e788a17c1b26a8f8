"""Who may call what: every endpoint of the URL map (API and pages) × six principals (anonymous, a worker, another
worker, a requester, another requester, ops), with real ids of rows the first worker and requester own.

Each route has an entry in RULES, so a new route fails `test_every_route_is_classified` until it is given one.
The /api/v1/projects tree is classified in tests/test_authorization.py (its own per-endpoint checks: 401, 403,
404 for another requester, the owner's reads and writes); here it is counted as covered there.

Expected classes: a principal outside the route's roles gets 401 (API, no token) or is sent to log in (pages,
anonymous) or 403; a principal of the right role but not the owner gets 404 on owned rows; the rest pass the
authorization (status < 500, none of 401/403, not sent to log in). Denied calls write nothing (DB snapshot)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Item
from platforms import burst as bursts
from platforms import registry
from qualification.service import create_type
from tests.browser import PASSWORD, with_password
from tests.factories import SENTIMENT, account, answer, auth, items, project
from tests.test_authorization import PREFIX, _snapshot

PRINCIPALS = ("anonymous", "worker", "other_worker", "requester", "other_requester", "ops")
ROLE_OF = {"worker": "W", "other_worker": "W", "requester": "R", "other_requester": "R", "ops": "O"}
OWNER = {"W": "worker", "R": "requester"}
# (rule, method) -> (roles, owned by): roles "P" public, else letters of W(orker) R(equester) O(ps); "owned by" W or
# R: the row in the path is the first worker's / requester's, so the other one of that role gets 404. "S": the
# path's token is the first worker's own (everyone else: 404).
API = {
    "/api/v1/assignments/<int:assignment_id>": {"GET": ("W", "W")},
    "/api/v1/assignments/<int:assignment_id>/disputes": {"POST": ("W", "W")},
    "/api/v1/assignments/<int:assignment_id>/return": {"POST": ("W", "W")},
    "/api/v1/assignments/<int:assignment_id>/submit": {"POST": ("W", "W")},
    "/api/v1/auth/token": {"POST": ("P", "")},
    "/api/v1/bursts/<int:burst_id>": {"GET": ("RO", "R")},
    "/api/v1/bursts/<int:burst_id>/calls": {"GET": ("RO", "R")},
    "/api/v1/bursts/<int:burst_id>/cancel": {"POST": ("R", "R")},
    "/api/v1/disputes": {"GET": ("W", "")},
    "/api/v1/ledger/accounts/<int:account_id>": {"GET": ("O", "")},
    "/api/v1/ledger/balance": {"GET": ("RW", "")},
    "/api/v1/ledger/export": {"GET": ("O", "")},
    "/api/v1/ledger/reconciliation": {"GET": ("O", "")},
    "/api/v1/ledger/requesters/<int:requester_id>/funding": {"POST": ("O", "")},
    "/api/v1/ledger/transactions": {"GET": ("O", "")},
    "/api/v1/ledger/transactions/<int:transaction_id>": {"GET": ("O", "")},
    "/api/v1/ledger/transactions/<int:transaction_id>/reverse": {"POST": ("O", "")},
    "/api/v1/me": {"GET": ("WRO", "")},
    "/api/v1/ops/disputes": {"GET": ("O", "")},
    "/api/v1/ops/disputes/<int:dispute_id>": {"GET": ("O", "")},
    **{f"/api/v1/ops/disputes/<int:dispute_id>/{a}": {"POST": ("O", "")} for a in ("correct", "reject", "retire")},
    "/api/v1/ops/flags": {"GET": ("O", ""), "POST": ("O", "")},
    "/api/v1/ops/flags/<int:flag_id>": {"GET": ("O", "")},
    **{f"/api/v1/ops/flags/<int:flag_id>/{a}": {"POST": ("O", "")} for a in ("block", "dismiss", "unblock")},
    "/api/v1/ops/gold-pools": {"GET": ("O", "")},
    "/api/v1/ops/reviews": {"POST": ("O", "")},
    "/api/v1/ops/workers/<int:worker_id>/quality": {"GET": ("O", "")},
    "/api/v1/payouts/batches": {"GET": ("O", ""), "POST": ("O", "")},
    "/api/v1/payouts/batches/<int:batch_id>": {"GET": ("O", "")},
    "/api/v1/payouts/batches/<int:batch_id>/approve": {"POST": ("O", "")},
    "/api/v1/payouts/batches/<int:batch_id>/export": {"GET": ("O", "")},
    "/api/v1/payouts/batches/<int:batch_id>/lines/<int:line_id>/failed": {"POST": ("O", "")},
    "/api/v1/payouts/batches/<int:batch_id>/lines/<int:line_id>/paid": {"POST": ("O", "")},
    "/api/v1/payouts/batches/<int:batch_id>/paid": {"POST": ("O", "")},
    "/api/v1/qualification-attempts/<int:attempt_id>": {"GET": ("W", "W")},
    "/api/v1/qualification-attempts/<int:attempt_id>/submit": {"POST": ("W", "W")},
    "/api/v1/qualification-tests": {"GET": ("W", "")},
    "/api/v1/qualification-tests/<int:type_id>/attempts": {"POST": ("W", "")},
    "/api/v1/qualifications": {"GET": ("RO", ""), "POST": ("R", "")},
    "/api/v1/qualifications/<int:type_id>": {"GET": ("RO", "R")},
    "/api/v1/qualifications/<int:type_id>/grants": {"GET": ("RO", "R"), "POST": ("RO", "R")},
    "/api/v1/qualifications/<int:type_id>/grants/<int:worker_id>/revoke": {"POST": ("RO", "R")},
    "/api/v1/reports/earnings": {"GET": ("W", "")},
    "/api/v1/reports/requesters/<int:requester_id>/spend": {"GET": ("O", "")},
    "/api/v1/reports/spend": {"GET": ("R", "")},
    "/api/v1/reports/workers/<int:worker_id>/earnings": {"GET": ("O", "")},
    "/api/v1/tokens": {"GET": ("WRO", ""), "POST": ("WRO", "")},
    "/api/v1/tokens/<int:token_id>": {"DELETE": ("WRO", "S")},
    "/api/v1/work/next": {"POST": ("W", "")},
    "/api/v1/work/reviewed": {"GET": ("W", "")},
    "/api/v1/workers": {"POST": ("P", "")},
    "/api/v1/workers/<int:worker_id>/identities": {"POST": ("O", "")},
}
PAGES = {
    **{path: {"GET": ("P", "")} for path in ("/", "/docs", "/healthz", "/openapi.json", "/login", "/signup",
                                             "/static/<path:filename>", "/reports/quality/<token>",
                                             "/work/external/<platform_name>",
                                             # loopback (a test client), an ops or the metrics token:
                                             # tests/test_observability.py checks the rest
                                             "/metrics")},
    "/login": {"GET": ("P", ""), "POST": ("P", "")}, "/signup": {"GET": ("P", ""), "POST": ("P", "")},
    "/logout": {"POST": ("P", "")},
    **{path: {"GET": ("O", "")} for path in ("/ops", "/ops/flags/<int:flag_id>", "/ops/payouts",
                                             "/ops/payouts/<int:batch_id>", "/ops/payouts/<int:batch_id>/export.csv",
                                             "/ops/projects", "/ops/projects/<int:project_id>",
                                             "/ops/workers/<int:worker_id>")},
    "/ops/payouts": {"GET": ("O", ""), "POST": ("O", "")},
    **{f"/ops/flags/<int:flag_id>/{a}": {"POST": ("O", "")} for a in ("block", "dismiss", "unblock")},
    **{f"/ops/payouts/<int:batch_id>/{a}": {"POST": ("O", "")}
       for a in ("approve", "paid", "lines/<int:line_id>/failed", "lines/<int:line_id>/paid")},
    "/requester": {"GET": ("R", "")},
    "/requester/projects/<int:project_id>": {"GET": ("R", "R")},
    "/requester/projects/<int:project_id>/quality": {"GET": ("R", "R")},
    "/requester/projects/<int:project_id>/batches/<int:batch_id>/approve": {"POST": ("R", "R")},
    **{path: {"GET": ("W", "")} for path in ("/work", "/work/earnings", "/work/qualifications", "/work/tasks")},
    "/work/qualifications/<int:type_id>": {"GET": ("W", ""), "POST": ("W", "")},
    "/work/qualifications/attempts/<int:attempt_id>": {"GET": ("W", "W"), "POST": ("W", "W")},
    **{f"/work/tasks/<int:assignment_id>/{a}": {"POST": ("W", "W")} for a in ("disputes", "return", "submit")},
    "/work/tasks/next": {"POST": ("W", "")},
}
RULES = {(rule, method): entry for table in (API, PAGES) for rule, methods in table.items()
         for method, entry in methods.items()}
_PARAM = re.compile(r"<(?:[^:<>]+:)?(\w+)>")


def _routes(app) -> set[tuple[str, str]]:
    return {(rule.rule, method) for rule in app.url_map.iter_rules()
            if not (rule.rule == PREFIX or rule.rule.startswith(PREFIX + "/"))
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}


def test_every_route_is_classified(app):
    routes = _routes(app)
    assert routes - set(RULES) == set(), "new routes: classify them in RULES"
    assert set(RULES) - routes == set(), "RULES lists routes that are gone"


@pytest.fixture
def world(app, session, clock) -> dict[str, Any]:
    now = clock()
    worker, worker_token = account(session, Role.WORKER, now=now)
    _, other_worker_token = account(session, Role.WORKER, now=now)
    requester, requester_token = account(session, Role.REQUESTER, now=now)
    other_requester, other_requester_token = account(session, Role.REQUESTER, now=now)
    ops, ops_token = account(session, Role.OPS, now=now)
    proj = project(session, requester, now=now)
    items(session, proj, 4, now=now)
    batch, _ = publish_batch(session, project_id=proj.id, account=requester, now=now)
    item = session.scalars(select(Item).where(Item.batch_id == batch.id).order_by(Item.id)).first()
    assignment = answer(session, item, worker, "pos", now=now).assignment_id
    qtype = create_type(session, owner=requester, now=now, data={
        "name": "Screener", "description": "", "label_schema": SENTIMENT, "passing_score": 50,
        "questions": [{"data": {"text": "good"}, "answer": "pos"}], "test_duration_seconds": 600,
        "retry_delay_seconds": 60, "max_attempts": None, "auto_grant": True})
    burst, _ = bursts.create(session, actor=requester, batch_id=batch.id, platform="mturk", platform_title="MTurk",
                             fees=registry.fees("mturk"), hits=1, split=False, key="matrix", now=now)
    session.commit()
    app.test_client().post(f"/api/v1/qualification-tests/{qtype.id}/attempts", headers=auth(worker_token))
    from qualification.models import QualificationAttempt
    from workers.models import ApiToken

    attempt = session.scalar(select(QualificationAttempt.id).where(QualificationAttempt.worker_id == worker.id))
    token_id = session.scalar(select(ApiToken.id).where(ApiToken.account_id == worker.id))
    assert attempt and token_id
    tokens = {"anonymous": None, "worker": worker_token, "other_worker": other_worker_token,
              "requester": requester_token, "other_requester": other_requester_token, "ops": ops_token}
    names = {p: with_password(app, session, a) for p, a in (("worker", worker), ("requester", requester),
                                                             ("ops", ops))}
    for p in ("other_worker", "other_requester"):
        acct = session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(tokens[p]))).account
        names[p] = with_password(app, session, acct)
    # Ids no row has stand for what the world does not build (flags, payouts, disputes, ledger rows): the routes
    # are ops-only, so only ops passes and then gets 404.
    params = {"assignment_id": assignment, "burst_id": burst.id, "type_id": qtype.id, "attempt_id": attempt,
              "token_id": token_id, "project_id": proj.id, "batch_id": batch.id, "worker_id": worker.id,
              "requester_id": requester.id, "account_id": 999999, "transaction_id": 999999, "dispute_id": 999999,
              "flag_id": 999999, "line_id": 999999, "filename": "base.css", "token": "not-a-report-token",
              "platform_name": "mturk"}
    return {"tokens": tokens, "names": names, "params": params}


def _hash(token: str) -> str:
    from workers.service import hash_token

    return hash_token(token)


def _url(rule: str, params: dict[str, Any]) -> str:
    return _PARAM.sub(lambda m: str(params[m.group(1)]), rule)


def expected(rule: str, method: str, principal: str) -> str:
    """"allowed", "401", "403", "404" or "login" for `principal` on the route."""
    roles, owned = RULES[(rule, method)]
    api = rule.startswith("/api/")
    if roles == "P":
        return "allowed"
    if principal == "anonymous":
        return "401" if api or method != "GET" and rule.startswith("/work/tasks") else "login"
    if ROLE_OF[principal] not in roles:
        return "403"
    if owned == "S" and principal != "worker" or owned in OWNER and principal == f"other_{OWNER[owned]}":
        return "404"
    return "allowed"


def _client(app, world, principal: str):
    client = app.test_client()
    if principal != "anonymous":
        html = client.get("/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        assert client.post("/login", data={"csrf_token": csrf, "username": world["names"][principal],
                                           "password": PASSWORD}).status_code == 302
    return client


def _call(client, rule: str, method: str, world, principal: str):
    url, headers, data = _url(rule, world["params"]), {}, None
    if rule.startswith("/api/"):
        token = world["tokens"][principal]
        headers = auth(token) if token else {}
        return client.open(url, method=method, headers=headers, json={} if method != "GET" else None)
    if method != "GET":  # the page's own CSRF token, so that what is judged is the principal, not the form
        page = client.get("/login" if principal == "anonymous" else "/").get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"|name="csrf-token" content="([^"]+)"', page)
        token = (match.group(1) or match.group(2)) if match else ""
        headers, data = {"X-CSRFToken": token}, {"csrf_token": token}
    return client.open(url, method=method, headers=headers, data=data)


def _judge(resp, want: str, label: str) -> None:
    status, location = resp.status_code, resp.headers.get("Location", "")
    if want == "login":
        assert status == 302 and "/login" in location, (label, status, location)
    elif want == "allowed":
        assert status < 500 and status not in (401, 403), (label, status, resp.get_data(as_text=True)[:300])
        assert not (status == 302 and "/login?next=" in location), (label, location)
    elif want == "404" and resp.request.method != "GET" and status == 422:
        pass  # the body is checked before the row is looked up: refused without a word about the row
    else:
        assert status == int(want), (label, status, resp.get_data(as_text=True)[:300])


MATRIX = sorted((rule, method) for (rule, method), (roles, _) in RULES.items() if roles != "P")


CHUNKS = 8  # the world is built once per chunk of routes (it costs more than the calls); xdist shares the chunks


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_each_principal_gets_what_the_table_says_and_denials_write_nothing(app, connection, world, chunk):
    """Every denial of the chunk's routes first, against one snapshot (a denial writes nothing, so the routes
    share the world); then the allowed principals' reads (their writes are the domain tests' subject)."""
    routes = MATRIX[chunk::CHUNKS]
    # Each principal signed in once, before the snapshot (a log-in writes its session token).
    pages = {p: _client(app, world, p) for p in PRINCIPALS}
    api = app.test_client()
    calls = [(rule, method, p, expected(rule, method, p)) for rule, method in routes for p in PRINCIPALS]
    before = _snapshot(connection)
    for rule, method, principal, want in calls:
        if want != "allowed":
            client = api if rule.startswith("/api/") else pages[principal]
            _judge(_call(client, rule, method, world, principal), want, f"{principal} {method} {rule}")
    assert _snapshot(connection) == before, f"a denied call wrote: {routes}"
    for rule, method, principal, want in calls:
        if want == "allowed" and method == "GET":
            client = api if rule.startswith("/api/") else pages[principal]
            _judge(_call(client, rule, method, world, principal), want, f"{principal} {method} {rule}")
