"""Reports, hand-computed: a worker's earnings by day and project (rewards, bonuses, hours, effective rate rounded
half up once) and a requester's spend by project and batch (rewards, bonuses, fees, holds), as JSON and CSV."""

from __future__ import annotations

import csv
import io

import pytest

from base.identity import Role
from payments.books import balances
from payments.books.reports import requester_spend, worker_earnings
from tests import books_support as books
from tests import factories
from tests.factories import auth, in_uow


@pytest.fixture
def world(session, clock):
    owner, owner_token = books.requester(session, clock(), cents=10_000)
    alpha = books.batch(session, owner, clock(), hold_cents=2000, title="Alpha")
    beta = books.batch(session, owner, clock(), hold_cents=1000, title="Beta")
    worker, worker_token = factories.account(session, Role.WORKER, now=clock())
    ops, ops_token = factories.account(session, Role.OPS, now=clock())
    # Day 1 (2026-01-05): two Alpha assignments of 70 s and 90 s at 10¢ (+2¢ fee), a 15¢ top-up (+3¢ fee).
    first = books.pay(session, alpha, books.assignment(session, alpha, worker, clock(), duration_ms=70_000, n=0),
                      reward=10, fee=2, now=clock())
    books.pay(session, alpha, books.assignment(session, alpha, worker, clock(), duration_ms=90_000, n=1),
              reward=10, fee=2, now=clock())
    books.bonus(session, alpha, worker.id, cents=15, fee=3, now=clock())
    # Day 2: a Beta assignment of 30 s at 25¢; and the first Alpha reward reversed (on day 2).
    clock.advance(days=1)
    books.pay(session, beta, books.assignment(session, beta, worker, clock(), duration_ms=30_000, n=0),
              reward=25, fee=0, now=clock())
    in_uow(balances.reverse, session, transaction_id=first, reason="mistake", now=clock(), actor_id=ops.id)
    session.commit()
    return {"owner": owner, "owner_token": owner_token, "worker": worker, "worker_token": worker_token,
            "ops_token": ops_token, "alpha": alpha, "beta": beta}


def test_worker_earnings_by_day_and_project(session, world):
    rows = worker_earnings(session, worker_id=world["worker"].id)["data"]
    got = [(r["day"], r["project_title"], r["rewards"], r["bonuses"], r["assignments"], r["duration_ms"], r["hours"],
            r["hourly_rate_cents"]) for r in rows]
    assert got == [
        # (10 + 10 + 15)¢ for 160 s = 787.5¢/h, rounded half up once: 788.
        ("2026-01-05", "Alpha", 20, 15, 2, 160_000, "0.0444", 788),
        # The reversal, on the day it was posted; no time worked: no rate.
        ("2026-01-06", "Alpha", -10, 0, 0, 0, "0.0000", None),
        ("2026-01-06", "Beta", 25, 0, 1, 30_000, "0.0083", 3000),
    ]


def test_requester_spend_by_project_and_batch(session, world):
    rows = requester_spend(session, requester_id=world["owner"].id)["data"]
    got = [(r["project_title"], r["batch_id"], r["rewards"], r["bonuses"], r["fees"], r["total"], r["held"],
            r["posted"], r["released"], r["remaining"]) for r in rows]
    assert got == [
        # 20 - 10 reversed; fees 2 + 2 + 3 - 2; the reversal gave the hold its 12¢ back.
        ("Alpha", world["alpha"].id, 10, 15, 5, 30, 2000, 30, 0, 1970),
        ("Beta", world["beta"].id, 25, 0, 0, 25, 1000, 25, 0, 975),
    ]


def test_reports_over_the_api_as_json_and_csv(client, session, clock, world):
    mine = client.get("/api/v1/reports/earnings", headers=auth(world["worker_token"]))
    assert mine.status_code == 200
    first = mine.get_json()["data"][0]
    assert first["rewards"] == {"cents": 20, "currency": "USD"}
    assert first["hourly_rate"] == {"cents": 788, "currency": "USD"}
    as_csv = client.get("/api/v1/reports/earnings?format=csv", headers=auth(world["worker_token"]))
    assert as_csv.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
    assert [(r["day"], r["project_title"], r["rewards"], r["hourly_rate_cents"]) for r in rows] == [
        ("2026-01-05", "Alpha", "20", "788"), ("2026-01-06", "Alpha", "-10", ""), ("2026-01-06", "Beta", "25", "3000")]
    accepted = client.get("/api/v1/reports/spend", headers={**auth(world["owner_token"]), "Accept": "text/csv"})
    assert accepted.mimetype == "text/csv"
    spend = list(csv.DictReader(io.StringIO(accepted.get_data(as_text=True))))
    assert [(r["project_title"], r["fees"], r["remaining"]) for r in spend] == [("Alpha", "5", "1970"),
                                                                                ("Beta", "0", "975")]
    ops = auth(world["ops_token"])
    by_ops = client.get(f"/api/v1/reports/workers/{world['worker'].id}/earnings", headers=ops).get_json()
    assert by_ops == mine.get_json()
    spend_json = client.get(f"/api/v1/reports/requesters/{world['owner'].id}/spend", headers=ops).get_json()
    assert spend_json["data"][0]["total"] == {"cents": 30, "currency": "USD"}


def test_reports_are_for_their_own_audience(client, session, clock, world):
    other, other_token = factories.account(session, Role.REQUESTER, now=clock(), funded=False)
    assert client.get("/api/v1/reports/spend", headers=auth(other_token)).get_json()["data"] == []
    assert client.get("/api/v1/reports/earnings", headers=auth(world["owner_token"])).status_code == 403
    assert client.get("/api/v1/reports/spend", headers=auth(world["worker_token"])).status_code == 403
    assert client.get("/api/v1/reports/earnings").status_code == 401
    for url in (f"/api/v1/reports/workers/{world['worker'].id}/earnings",
                f"/api/v1/reports/requesters/{world['owner'].id}/spend"):
        assert client.get(url, headers=auth(world["worker_token"])).status_code == 403
        assert client.get(url, headers=auth(other_token)).status_code == 403
    ops = auth(world["ops_token"])
    assert client.get(f"/api/v1/reports/workers/{world['owner'].id}/earnings", headers=ops).status_code == 404
    assert client.get(f"/api/v1/reports/requesters/{world['worker'].id}/spend", headers=ops).status_code == 404
