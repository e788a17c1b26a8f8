"""One transaction owner (base/uow.py): where `.commit(` and `.rollback(` may appear, and what the unit of work
does through the HTTP API: a refusal leaves nothing behind, a refusal raised `.keep_writes()` keeps its
bookkeeping, the race-handling savepoints still work, and the hot paths' autocommit sessions pay no round trip."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from base.db import Database
from base.errors import Conflict, Gone
from base.identity import Role
from base.uow import UnitOfWork, autocommit, savepoint
from market.catalogue.batches import publish_batch
from market.catalogue.models import Assignment, AssignmentStatus, Batch, Item
from tests.conftest import DATABASE_URL
from tests.factories import account, auth, items, jsonl, project
from workers import service as accounts
from workers.models import Account

ROOT = Path(__file__).resolve().parent.parent
# Application code: every package the app is made of (tests, benchmarks and migrations are scripts around it).
PACKAGES = ("aggregation", "base", "edge", "market", "payments", "qualification", "shell", "workers")
# The one place a transaction ends. Nothing else: the CLI, the jobs and the edge open a `UnitOfWork`.
ALLOWED = {"base/uow.py"}


def _ending_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("commit", "rollback")]


def test_only_the_unit_of_work_commits_or_rolls_back():
    found = [call for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             if str(path.relative_to(ROOT)) not in ALLOWED for call in _ending_calls(path)]
    assert found == [], "services flush, the unit of work (base/uow.py) commits: " + ", ".join(found)
    assert _ending_calls(ROOT / "base/uow.py"), "the scan finds the calls it looks for"


# ---- through the HTTP API -----------------------------------------------------------------------------------


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_an_import_with_a_bad_row_late_stores_nothing(client, session, clock):
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    session.commit()
    # Thousands of good rows first: the import has flushed them in chunks before it meets the bad one.
    rows = [{"external_id": f"ok{i}", "data": {"text": "fine"}} for i in range(2500)] + [{"data": {"text": "no id"}}]
    resp = client.post(f"/api/v1/projects/{proj.id}/items", data=jsonl(rows), headers=auth(token),
                       content_type="application/x-ndjson")
    assert resp.status_code == 422, resp.get_json()
    assert _count(session, Item) == 0


def test_a_publish_that_fails_late_leaves_no_batch(client, session, clock):
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    session.commit()
    # No items: the batch row is inserted (and flushed) before the publish finds nothing to put in it.
    resp = client.post(f"/api/v1/projects/{proj.id}/batches", json={"name": "empty"}, headers=auth(token))
    assert resp.status_code == 422, resp.get_json()
    assert _count(session, Batch) == 0


def test_a_lapsed_lease_refused_with_gone_stays_expired(client, session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), assignments_per_item=1)
    items(session, proj, 1, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    _, token = account(session, Role.WORKER, now=clock())
    task = client.post("/api/v1/work/next", headers=auth(token)).get_json()
    clock.advance(seconds=601)
    late = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=auth(token),
                       json={"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]})
    assert late.status_code == 410 and late.get_json()["reason"] == "expired"
    session.expire_all()
    assert session.get(Assignment, task["assignment_id"]).status == AssignmentStatus.EXPIRED


def test_two_sign_ups_with_one_username(client, session):
    body = {"username": "racer", "password": "correct horse battery"}
    assert client.post("/api/v1/workers", json=body).status_code == 201
    again = client.post("/api/v1/workers", json={**body, "username": "RACER"})
    assert again.status_code == 409
    assert session.scalars(select(Account.username).where(Account.role == Role.WORKER)).all() == ["racer"]


# ---- the unit of work itself ------------------------------------------------------------------------------


def test_the_unit_of_work_commits_kept_refusals_only(database, clock):
    with database.session() as session:
        with pytest.raises(Conflict), UnitOfWork(session):
            accounts.create_account(session, role=Role.OPS, email="dropped@example.com", now=clock())
            raise Conflict("refused")
        with pytest.raises(Gone), UnitOfWork(session):
            accounts.create_account(session, role=Role.OPS, email="kept@example.com", now=clock())
            raise Gone("refused, keeping what came before").keep_writes()
        emails = session.scalars(select(Account.email).where(Account.role == Role.OPS)).all()
    assert emails == ["kept@example.com"]


def test_a_lost_insert_race_keeps_the_unit_of_work_usable(database, clock):
    with database.session() as session, UnitOfWork(session):
        first = accounts.create_account(session, role=Role.WORKER, username="twice", now=clock())
        with pytest.raises(Conflict):  # the savepoint undoes the failed insert alone
            accounts.create_account(session, role=Role.WORKER, username="TWICE", now=clock())
        accounts.issue_token(session, account=first, now=clock())
    with database.session() as session:
        assert session.scalars(select(Account.username).where(Account.role == Role.WORKER)).all() == ["twice"]


@pytest.mark.skipif(not (DATABASE_URL or "").startswith("postgresql"), reason="the autocommit pool is PostgreSQL's")
def test_autocommit_sessions_pay_no_round_trip_for_the_unit_of_work(engine):
    """On the hot paths' pool a unit of work (and a savepoint) sends nothing: no BEGIN, COMMIT, SAVEPOINT or
    ROLLBACK reaches the server; only the statements themselves."""
    database = Database(engine)  # not bound to a test transaction: its autocommit pool is real
    try:
        sent: list[str] = []
        session = database.autocommit_session()
        assert autocommit(session)
        pool = session.get_bind()
        event.listen(pool, "before_cursor_execute", lambda _c, _cur, statement, *_a: sent.append(statement))
        with session, UnitOfWork(session):
            session.execute(text("SELECT 1"))
            with pytest.raises(ZeroDivisionError), savepoint(session):
                session.execute(text("SELECT 2"))
                raise ZeroDivisionError
            session.execute(text("SELECT 3"))
            raw = session.connection().connection.driver_connection
        assert sent == ["SELECT 1", "SELECT 2", "SELECT 3"]
        # The driver was never inside a transaction: its commit and rollback had nothing to send.
        assert raw.info.transaction_status.name == "IDLE"
    finally:
        database.dispose()
