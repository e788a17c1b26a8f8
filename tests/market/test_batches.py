"""Publishing batches of HITs: selection, grouping, idempotency, state changes, progress."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue import batches
from market.catalogue.batches import publish_batch
from market.catalogue.models import Batch, Hit, Item
from tests.factories import account, answer, auth, items, lease, project


@pytest.fixture
def owner(session, clock):
    return account(session, Role.REQUESTER, now=clock())


@pytest.fixture
def proj(session, clock, owner):
    p = project(session, owner[0], now=clock(), items_per_hit=3, assignments_per_item=2)
    items(session, p, 7, now=clock(), gold=2)
    return p


def publish(client, proj, token, body=None, key=None):
    headers = auth(token) | ({"Idempotency-Key": key} if key else {})
    return client.post(f"/api/v1/projects/{proj.id}/batches", json=body or {}, headers=headers)


def test_publishing_groups_unpublished_non_gold_items_into_hits(client, session, proj, owner, clock):
    resp = publish(client, proj, owner[1], {"name": "first"})
    assert resp.status_code == 201
    batch = resp.get_json()
    assert (batch["name"], batch["status"], batch["item_count"], batch["hit_count"]) == ("first", "open", 7, 3)
    assert (batch["reward_cents"], batch["assignments_per_item"], batch["items_per_hit"]) == (12, 2, 3)
    sizes = session.execute(select(Item.hit_id, func.count()).where(Item.batch_id == batch["id"])
                            .group_by(Item.hit_id).order_by(Item.hit_id)).all()
    assert [n for _, n in sizes] == [3, 3, 1]
    # The short last HIT is filled up with the two spare gold items: every HIT holds 3 (a short one would be
    # certainly real); gold stays out of the batch's items.
    last = sizes[-1][0]
    assert session.get(Hit, last).item_count == 3
    assert session.scalars(select(Item.is_gold).where(Item.hit_id == last).order_by(Item.id)).all().count(True) == 2
    assert session.scalar(select(func.count()).select_from(Item).where(Item.is_gold, Item.batch_id.is_not(None))) == 0
    assert set(session.scalars(select(Hit.max_assignments).where(Hit.batch_id == batch["id"]))) == {2}
    # Nothing is left to publish now.
    again = publish(client, proj, owner[1])
    assert again.status_code == 422 and "item_ids" in again.get_json()["errors"]


def test_batches_keep_the_terms_they_were_published_with(client, session, proj, owner):
    first = publish(client, proj, owner[1], {"external_ids": ["it0"]}).get_json()
    client.patch(f"/api/v1/projects/{proj.id}", json={"reward_cents": 30, "assignments_per_item": 5},
                 headers=auth(owner[1]))
    second = publish(client, proj, owner[1]).get_json()
    assert (first["reward_cents"], first["assignments_per_item"]) == (12, 2)
    assert (second["reward_cents"], second["assignments_per_item"], second["item_count"]) == (30, 5, 6)


def test_publishing_chosen_items(client, session, proj, owner):
    ids = list(session.scalars(select(Item.id).where(Item.project_id == proj.id, Item.is_gold.is_(False))
                               .order_by(Item.id)))
    resp = publish(client, proj, owner[1], {"item_ids": ids[:2]})
    assert resp.status_code == 201 and resp.get_json()["item_count"] == 2
    gold_id = session.scalar(select(Item.id).where(Item.project_id == proj.id, Item.is_gold))
    resp = publish(client, proj, owner[1], {"item_ids": [ids[0], gold_id, 999999, ids[3]]})
    assert resp.status_code == 422
    errors = resp.get_json()["errors"]["item_ids"]
    assert set(errors) == {str(ids[0]), str(gold_id), "999999"}
    assert "published already" in errors[str(ids[0])][0] and "gold" in errors[str(gold_id)][0]
    # The failed request changed nothing: ids[3] is still unpublished.
    assert session.scalar(select(Item.hit_id).where(Item.id == ids[3])) is None
    resp = publish(client, proj, owner[1], {"external_ids": ["it3", "it4"]})
    assert resp.status_code == 201 and resp.get_json()["item_count"] == 2


def test_idempotency_key_returns_the_same_batch(client, session, proj, owner):
    first = publish(client, proj, owner[1], {"name": "b"}, key="abc")
    replay = publish(client, proj, owner[1], {"name": "b"}, key="abc")
    assert first.status_code == 201 and replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    assert session.scalar(select(func.count()).select_from(Batch).where(Batch.project_id == proj.id)) == 1
    conflict = publish(client, proj, owner[1], {"name": "other"}, key="abc")
    assert conflict.status_code == 409 and conflict.mimetype == "application/problem+json"
    assert session.scalar(select(func.count()).select_from(Batch).where(Batch.project_id == proj.id)) == 1


def test_idempotent_replay_survives_a_failed_first_attempt(client, proj, owner, session):
    failed = publish(client, proj, owner[1], {"item_ids": [123456]}, key="k1")
    assert failed.status_code == 422
    ok = publish(client, proj, owner[1], {"item_ids": [123456]}, key="k1")
    assert ok.status_code == 422  # a failed request stores nothing, so it is simply tried again


def test_pause_resume_cancel(client, proj, owner):
    bid = publish(client, proj, owner[1]).get_json()["id"]
    base = f"/api/v1/projects/{proj.id}/batches/{bid}"
    assert client.post(f"{base}/resume", headers=auth(owner[1])).status_code == 200  # already open: no-op
    assert client.post(f"{base}/pause", headers=auth(owner[1])).get_json()["status"] == "paused"
    assert client.post(f"{base}/pause", headers=auth(owner[1])).get_json()["status"] == "paused"
    assert client.post(f"{base}/resume", headers=auth(owner[1])).get_json()["status"] == "open"
    assert client.post(f"{base}/cancel", headers=auth(owner[1])).get_json()["status"] == "cancelled"
    resp = client.post(f"{base}/resume", headers=auth(owner[1]))
    assert resp.status_code == 409 and resp.mimetype == "application/problem+json"
    assert client.get(base, headers=auth(owner[1])).get_json()["status"] == "cancelled"


def test_batch_expires_with_the_clock(client, proj, owner, clock):
    bid = publish(client, proj, owner[1]).get_json()["id"]
    base = f"/api/v1/projects/{proj.id}/batches/{bid}"
    clock.advance(days=7, seconds=1)
    assert client.get(base, headers=auth(owner[1])).get_json()["status"] == "expired"
    assert client.post(f"{base}/pause", headers=auth(owner[1])).status_code == 409


def test_progress_counts_answers_items_and_assignments(client, session, clock, owner):
    proj = project(session, owner[0], now=clock(), assignments_per_item=2)
    items(session, proj, 3, now=clock())
    bid = publish(client, proj, owner[1]).get_json()["id"]
    w1, _ = account(session, Role.WORKER, now=clock())
    w2, _ = account(session, Role.WORKER, now=clock())
    w3, _ = account(session, Role.WORKER, now=clock())
    it = list(session.scalars(select(Item).where(Item.batch_id == bid).order_by(Item.id)))
    answer(session, it[0], w1, "pos", now=clock())
    answer(session, it[0], w2, "neg", now=clock())
    answer(session, it[1], w1, "pos", now=clock())
    lease(session, it[2].hit_id, proj.id, w3, now=clock(), seconds=60)
    lease(session, it[1].hit_id, proj.id, w2, now=clock(), seconds=3600)
    clock.advance(seconds=120)  # w3's lease has lapsed; nothing swept it
    body = client.get(f"/api/v1/projects/{proj.id}/batches/{bid}/progress", headers=auth(owner[1])).get_json()
    assert body["items_by_answer_count"] == [{"answers": 0, "items": 1}, {"answers": 1, "items": 1},
                                             {"answers": 2, "items": 1}]
    assert (body["answers"], body["items_complete"], body["status"]) == (3, 1, "open")
    assert body["fraction_complete"] == pytest.approx(1 / 3)
    assert body["assignments_by_status"]["submitted"] == 3
    assert body["assignments_by_status"]["leased"] == 1 and body["assignments_by_status"]["expired"] == 1
    answer(session, it[1], w3, "pos", now=clock())
    answer(session, it[2], w1, "neu", now=clock())
    answer(session, it[2], w2, "neu", now=clock())
    done = client.get(f"/api/v1/projects/{proj.id}/batches/{bid}", headers=auth(owner[1])).get_json()
    assert done["status"] == "complete"
    listed = client.get(f"/api/v1/projects/{proj.id}/batches", headers=auth(owner[1])).get_json()["data"]
    assert [(b["id"], b["status"]) for b in listed] == [(bid, "complete")]


def test_publishing_many_items_in_chunks(session, clock, owner, monkeypatch):
    monkeypatch.setattr(batches, "PUBLISH_CHUNK", 10)
    proj = project(session, owner[0], now=clock(), items_per_hit=4)
    items(session, proj, 45, now=clock())
    batch, created = publish_batch(session, project_id=proj.id, account=owner[0], now=clock())
    assert created and (batch.item_count, batch.hit_count) == (45, 12)
    per_hit = session.execute(select(func.count()).select_from(Item).where(Item.batch_id == batch.id)
                              .group_by(Item.hit_id)).scalars().all()
    assert sorted(per_hit) == [1] + [4] * 11
