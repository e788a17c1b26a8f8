"""Fair wage at the edge: the floor at publish (422), too little money (402, nothing published), replays, cancel
releasing the hold, the batch's pay statement, and the hourly rate a worker's task shows."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.models import Batch, Hit, Item
from payments import ledger
from payments.models import Hold, HoldState
from shell.config import ConfigError, check_config, load_config
from tests import factories
from tests.factories import auth
from tests.wage_setup import approve, hits, work


def _project(client, token, **settings):
    body = factories.project_payload(**{"reward_cents": 10, "estimated_seconds": 40, "assignments_per_item": 1,
                                        **settings})
    resp = client.post("/api/v1/projects", json=body, headers=auth(token))
    assert resp.status_code == 201, resp.get_json()
    project_id = resp.get_json()["id"]
    records = [{"external_id": f"i{n}", "data": {"text": str(n)}} for n in range(10)]
    resp = client.post(f"/api/v1/projects/{project_id}/items", data=factories.jsonl(records),
                       headers=auth(token) | {"Content-Type": "application/x-ndjson"})
    assert resp.status_code == 201
    return project_id


def _publish(client, token, project_id, key=None):
    headers = auth(token) | ({"Idempotency-Key": key} if key else {})
    return client.post(f"/api/v1/projects/{project_id}/batches", json={}, headers=headers)


@pytest.fixture
def owner(session, clock):
    return factories.account(session, Role.REQUESTER, now=clock())


def test_project_pay_settings_are_read_and_written_strictly(client, owner):
    project_id = _project(client, owner[1], target_wage_cents_per_hour=1800, auto_top_up=False)
    body = client.get(f"/api/v1/projects/{project_id}", headers=auth(owner[1])).get_json()
    assert (body["estimated_seconds"], body["target_wage_cents_per_hour"], body["auto_top_up"],
            body["reject_gold_misses"]) == (40, 1800, False, False)
    for bad in ({"estimated_seconds": 40.5}, {"estimated_seconds": 0}, {"target_wage_cents_per_hour": 15.0},
                {"target_wage_cents_per_hour": "1500"}):
        resp = client.patch(f"/api/v1/projects/{project_id}", json=bad, headers=auth(owner[1]))
        assert resp.status_code == 422 and set(bad) <= set(resp.get_json()["errors"])


def test_publishing_below_the_floor_is_refused_and_at_the_floor_accepted(client, session, owner):
    # 10c for 46 s is 782.6 cents per hour, below $8.00/h; for 45 s exactly 800.
    below = _project(client, owner[1], estimated_seconds=46)
    resp = _publish(client, owner[1], below)
    assert resp.status_code == 422 and "reward_cents" in resp.get_json()["errors"]
    assert session.scalar(select(func.count()).select_from(Batch).where(Batch.project_id == below)) == 0
    at = _project(client, owner[1], estimated_seconds=45)
    resp = _publish(client, owner[1], at)
    assert resp.status_code == 201
    assert resp.get_json()["wage_floor_cents_per_hour"] == 800 and resp.get_json()["estimated_seconds"] == 45


def test_paid_work_without_an_estimate_is_refused(client, owner):
    resp = client.post("/api/v1/projects", json={k: v for k, v in factories.project_payload().items()
                                                 if k != "estimated_seconds"}, headers=auth(owner[1]))
    project_id = resp.get_json()["id"]
    client.post(f"/api/v1/projects/{project_id}/items", data=factories.jsonl([{"external_id": "a", "data": {}}]),
                headers=auth(owner[1]) | {"Content-Type": "application/x-ndjson"})
    resp = _publish(client, owner[1], project_id)
    assert resp.status_code == 422 and "estimated_seconds" in resp.get_json()["errors"]


def test_the_configured_floor_and_fee_rate_reach_the_batch(app, client, owner):
    app.config.update(WAGE_FLOOR_CENTS_PER_HOUR=1000, PLATFORM_FEE_RATE=Decimal("0.05"))
    project_id = _project(client, owner[1])  # 10c / 40 s = 900 cents per hour
    assert _publish(client, owner[1], project_id).status_code == 422
    client.patch(f"/api/v1/projects/{project_id}", json={"estimated_seconds": 36}, headers=auth(owner[1]))
    body = _publish(client, owner[1], project_id).get_json()
    assert body["wage_floor_cents_per_hour"] == 1000 and body["fee_model"] == "platform"


def test_too_little_money_is_402_with_the_shortfall_and_publishes_nothing(client, session, clock):
    poor, token = factories.account(session, Role.REQUESTER, now=clock(), funded=False)
    factories.fund(session, poor, 200, now=clock())
    session.commit()
    project_id = _project(client, token)  # holds 10 x 25c = 250c
    resp = _publish(client, token, project_id)
    assert resp.status_code == 402 and resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["shortfall"] == {"cents": 50, "currency": "USD"} and body["required"]["cents"] == 250
    assert session.scalar(select(func.count()).select_from(Batch).where(Batch.project_id == project_id)) == 0
    assert session.scalar(select(func.count()).select_from(Hit).where(Hit.project_id == project_id)) == 0
    assert session.scalar(select(func.count()).select_from(Hold)) == 0
    assert session.scalar(select(func.count()).select_from(Item).where(Item.project_id == project_id,
                                                                       Item.hit_id.is_not(None))) == 0
    assert ledger.balance(session, ledger.available(poor.id, "USD")) == 200
    factories.fund(session, poor, 50, now=clock())
    session.commit()
    assert _publish(client, token, project_id).status_code == 201  # exactly enough now
    assert ledger.balance(session, ledger.available(poor.id, "USD")) == 0
    assert ledger.check_books(session) == []


def test_a_replayed_publish_places_no_second_hold(client, session, owner):
    project_id = _project(client, owner[1])
    first = _publish(client, owner[1], project_id, key="k1")
    again = _publish(client, owner[1], project_id, key="k1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert session.scalar(select(func.count()).select_from(Hold)) == 1
    assert ledger.balance(session, ledger.available(owner[0].id, "USD")) == factories.REQUESTER_FUNDS_CENTS - 250


def test_cancel_releases_the_unused_hold_at_once(client, session, owner, clock):
    project_id = _project(client, owner[1])
    batch_id = _publish(client, owner[1], project_id).get_json()["id"]
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    done = hits(session, batch_id)
    approve(session, [work(session, done[0], worker.id, seconds=30, now=clock())], now=clock())
    work(session, done[1], worker.id, seconds=30, now=clock())  # submitted, awaiting review
    session.commit()
    resp = client.post(f"/api/v1/projects/{project_id}/batches/{batch_id}/cancel", headers=auth(owner[1]))
    assert resp.status_code == 200
    hold = session.scalar(select(Hold).where(Hold.batch_id == batch_id))
    session.refresh(hold)
    # Held 250; 10 paid; kept: 25 for the submitted one, 15 headroom for the approved one's top-up.
    assert (hold.state, hold.posted, hold.released, ledger.remaining(hold)) == (HoldState.OPEN, 10, 200, 40)
    again = client.post(f"/api/v1/projects/{project_id}/batches/{batch_id}/cancel", headers=auth(owner[1]))
    assert again.status_code == 200
    session.refresh(hold)
    assert hold.released == 200  # nothing twice
    assert ledger.check_books(session) == []


def test_the_pay_statement_warns_below_target_and_below_the_floor(client, session, owner, clock):
    project_id = _project(client, owner[1])
    batch_id = _publish(client, owner[1], project_id).get_json()["id"]
    url = f"/api/v1/projects/{project_id}/batches/{batch_id}/pay"
    body = client.get(url, headers=auth(owner[1])).get_json()
    assert body["effective_hourly_rate"] == {"cents": 900, "currency": "USD", "basis": "estimated"}
    assert [w["code"] for w in body["warnings"]] == ["below_target"]
    assert body["hold"]["held"] == {"cents": 250, "currency": "USD"} and body["hold"]["state"] == "open"
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    for hit in hits(session, batch_id):
        work(session, hit, worker.id, seconds=60, now=clock())  # 10c a minute: $6.00/h
    session.commit()
    body = client.get(url, headers=auth(owner[1])).get_json()
    assert body["measured_seconds"] == 60 and body["estimated_seconds"] == 40
    assert body["effective_hourly_rate"] == {"cents": 600, "currency": "USD", "basis": "measured"}
    assert [w["code"] for w in body["warnings"]] == ["below_target", "below_floor"]
    assert "cannot be turned off" in body["warnings"][1]["message"]
    assert (body["target_wage"]["cents"], body["wage_floor"]["cents"], body["top_ups_paid"]["cents"]) == (1500, 800, 0)
    stranger = factories.account(session, Role.REQUESTER, now=clock())[1]
    assert client.get(url, headers=auth(stranger)).status_code == 404


def test_batch_json_carries_pay_warnings(client, owner):
    project_id = _project(client, owner[1], reward_cents=30)  # 30c / 40 s = $27.00/h
    body = _publish(client, owner[1], project_id).get_json()
    assert body["pay_warnings"] == []
    project_id = _project(client, owner[1])
    assert _publish(client, owner[1], project_id).get_json()["pay_warnings"] == ["below_target"]


def test_a_task_shows_its_expected_hourly_rate(client, session, owner, clock):
    project_id = _project(client, owner[1])
    batch_id = _publish(client, owner[1], project_id).get_json()["id"]
    _, token = factories.account(session, Role.WORKER, now=clock())
    task = client.post("/api/v1/work/next", headers=auth(token)).get_json()
    assert task["hourly_rate"] == {"cents": 900, "currency": "USD", "basis": "estimated"}
    session.get(Batch, batch_id).measured_seconds = Decimal("48.000")
    session.commit()
    task = client.get(f"/api/v1/assignments/{task['assignment_id']}", headers=auth(token)).get_json()
    assert task["hourly_rate"] == {"cents": 750, "currency": "USD", "basis": "measured"}


def test_pay_settings_come_from_the_environment_and_are_checked(tmp_path):
    config = load_config(str(tmp_path), {"CROWDMARKET_WAGE_FLOOR_CENTS_PER_HOUR": "1200",
                                         "CROWDMARKET_PLATFORM_FEE_RATE": "0.05"})
    assert (config["WAGE_FLOOR_CENTS_PER_HOUR"], config["PLATFORM_FEE_RATE"]) == (1200, Decimal("0.05"))
    assert load_config(str(tmp_path), {})["PLATFORM_FEE_RATE"] == Decimal(0)
    with pytest.raises(ConfigError):
        load_config(str(tmp_path), {"CROWDMARKET_PLATFORM_FEE_RATE": "five percent"})
    base = {"SECRET_KEY": "x" * 40, "MAX_REQUEST_BYTES": 1, "MAX_IMPORT_BYTES": 1, "PROXY_HOPS": 0,
            "EVALUATION": "auto", "PASSWORD_HASH": config["PASSWORD_HASH"], "ENV": "development"}
    for bad in ({"PLATFORM_FEE_RATE": Decimal(1)}, {"PLATFORM_FEE_RATE": Decimal("NaN")},
                {"PLATFORM_FEE_RATE": Decimal("0.00001")}, {"PLATFORM_FEE_RATE": 0.05},
                {"WAGE_FLOOR_CENTS_PER_HOUR": -1}):
        with pytest.raises(ConfigError):
            check_config({**base, "WAGE_FLOOR_CENTS_PER_HOUR": 800, "PLATFORM_FEE_RATE": Decimal(0), **bad})
    check_config({**base, "WAGE_FLOOR_CENTS_PER_HOUR": 800, "PLATFORM_FEE_RATE": Decimal("0.2")})
