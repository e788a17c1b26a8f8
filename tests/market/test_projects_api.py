"""Projects: creation with label schemas and settings, guideline versions, updates."""

from __future__ import annotations

import pytest

from base.identity import Role
from tests.factories import SENTIMENT, account, auth, items, project, project_payload


@pytest.fixture
def owner(session, clock):
    return account(session, Role.REQUESTER, now=clock())


def create(client, token, **overrides):
    return client.post("/api/v1/projects", json=project_payload(**overrides), headers=auth(token))


def test_create_project_with_defaults(client, owner):
    resp = create(client, owner[1])
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["owner_id"] == owner[0].id
    assert body["guideline_version"] == 1 and body["instructions"] == "Pick the sentiment."
    assert (body["reward_cents"], body["currency"], body["items_per_hit"], body["assignments_per_item"]) == \
        (12, "USD", 1, 3)
    assert body["gold_rate"] == 0.08
    assert body["label_schema"]["categories"][2]["example"] == "It is a chair."
    assert client.get(f"/api/v1/projects/{body['id']}", headers=auth(owner[1])).get_json() == body


@pytest.mark.parametrize("schema", [
    {"type": "multi_choice", "categories": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}],
     "min_choices": 1, "max_choices": 2},
    {"type": "rating", "min": 1, "max": 5, "min_label": "bad", "max_label": "good"},
    {"type": "text", "max_length": 280},
])
def test_other_answer_types(client, owner, schema):
    resp = create(client, owner[1], label_schema=schema)
    assert resp.status_code == 201
    assert resp.get_json()["label_schema"] == schema


@pytest.mark.parametrize(("overrides", "field"), [
    ({"reward_cents": -1}, "reward_cents"),
    ({"reward_cents": 1.5}, "reward_cents"),
    ({"reward_cents": "12"}, "reward_cents"),
    ({"currency": "usd"}, "currency"),
    ({"assignments_per_item": 0}, "assignments_per_item"),
    ({"assignments_per_item": 51}, "assignments_per_item"),
    ({"items_per_hit": 0}, "items_per_hit"),
    ({"gold_rate": 0.2}, "gold_rate"),
    ({"gold_rate": 0.04}, "gold_rate"),
    ({"gold_rate": 0.0555}, "gold_rate"),
    # More places than the column keeps are refused, not rounded (into range, some of them).
    ({"min_gold_accuracy": 0.4999}, "min_gold_accuracy"),
    ({"min_gold_accuracy": "1.004"}, "min_gold_accuracy"),
    ({"fast_answer_fraction": "-0.001"}, "fast_answer_fraction"),
    ({"action_confidence": "0.4996"}, "action_confidence"),
    ({"action_confidence": "0.9994"}, "action_confidence"),
    ({"gold_rate": "0.0999"}, "gold_rate"),
    ({"min_gold_accuracy": "0.9000000000000000000000000000001"}, "min_gold_accuracy"),
    ({"assignment_duration_seconds": 5}, "assignment_duration_seconds"),
    ({"lifetime_seconds": 10}, "lifetime_seconds"),
    ({"auto_approval_delay_seconds": -1}, "auto_approval_delay_seconds"),
    ({"title": ""}, "title"),
    ({"surprise": 1}, "surprise"),
    ({"label_schema": {"type": "single_choice", "categories": [{"key": "a", "name": "A"},
                                                               {"key": "a", "name": "B"}]}}, "label_schema"),
    ({"label_schema": {"type": "single_choice", "categories": [{"key": "a b", "name": "A"},
                                                               {"key": "c", "name": "B"}]}}, "label_schema"),
    ({"label_schema": {"type": "rating", "min": 5, "max": 1}}, "label_schema"),
    ({"label_schema": {"type": "text", "categories": SENTIMENT["categories"]}}, "label_schema"),
    ({"label_schema": {"type": "poll"}}, "label_schema"),
])
def test_invalid_settings_are_422_with_field_errors(client, owner, session, overrides, field):
    resp = create(client, owner[1], **overrides)
    assert resp.status_code == 422
    assert resp.mimetype == "application/problem+json"
    assert field in resp.get_json()["errors"]
    assert client.get("/api/v1/projects", headers=auth(owner[1])).get_json()["data"] == []


@pytest.mark.parametrize("rate", [0, 0.05, 0.1, 0.075])
def test_gold_rate_bounds(client, owner, rate):
    resp = create(client, owner[1], gold_rate=rate)
    assert resp.status_code == 201
    assert resp.get_json()["gold_rate"] == rate


def test_decimal_settings_are_stored_exactly_up_to_their_bounds(client, owner):
    """Trailing zeros are not places; the documented bounds are in range (0.999 was refused: it is more than the
    float 0.999 the range was written with)."""
    settings = {"gold_rate": "0.0500", "min_gold_accuracy": "1.00", "action_confidence": 0.999,
                "fast_answer_fraction": "0"}
    resp = create(client, owner[1], **settings)
    assert resp.status_code == 201, resp.get_json()
    stored = client.get(f"/api/v1/projects/{resp.get_json()['id']}", headers=auth(owner[1])).get_json()
    assert {k: stored[k] for k in settings} == {"gold_rate": 0.05, "min_gold_accuracy": 1.0,
                                                "action_confidence": 0.999, "fast_answer_fraction": 0.0}
    low = create(client, owner[1], title="low", action_confidence="0.5", flag_confidence="0.5", min_gold_accuracy=0)
    assert low.status_code == 201 and low.get_json()["action_confidence"] == 0.5
    # A worker is flagged before the action is taken: the flag level cannot pass the action's.
    above = create(client, owner[1], title="above", action_confidence="0.5")
    assert above.status_code == 422 and "flag_confidence" in above.get_json()["errors"]
    patched = client.patch(f"/api/v1/projects/{low.get_json()['id']}", json={"flag_confidence": "0.6"},
                           headers=auth(owner[1]))
    assert patched.status_code == 422 and "flag_confidence" in patched.get_json()["errors"]


def test_editing_instructions_creates_versions(client, owner):
    pid = create(client, owner[1]).get_json()["id"]
    url = f"/api/v1/projects/{pid}"
    assert client.patch(url, json={"instructions": "v2 text"}, headers=auth(owner[1])).get_json()[
        "guideline_version"] == 2
    # Same text again is not a new version; other settings do not version the guidelines.
    body = client.patch(url, json={"instructions": "v2 text", "reward_cents": 20}, headers=auth(owner[1])).get_json()
    assert (body["guideline_version"], body["reward_cents"]) == (2, 20)
    versions = client.get(f"{url}/guidelines", headers=auth(owner[1])).get_json()
    assert [(v["version"], v["instructions"]) for v in versions] == [(1, "Pick the sentiment."), (2, "v2 text")]
    assert client.get(f"{url}/guidelines/1", headers=auth(owner[1])).get_json()["instructions"] == \
        "Pick the sentiment."
    assert client.get(f"{url}/guidelines/9", headers=auth(owner[1])).status_code == 404


def test_label_schema_is_frozen_after_publishing(client, owner, session, clock):
    proj = project(session, owner[0], now=clock())
    new_schema = {"type": "rating", "min": 1, "max": 3}
    url = f"/api/v1/projects/{proj.id}"
    assert client.patch(url, json={"label_schema": new_schema}, headers=auth(owner[1])).status_code == 200
    items(session, proj, 2, now=clock())
    client.post(f"{url}/batches", json={}, headers=auth(owner[1]))
    resp = client.patch(url, json={"label_schema": SENTIMENT}, headers=auth(owner[1]))
    assert resp.status_code == 409 and "label_schema" in resp.get_json()["errors"]
    assert client.get(url, headers=auth(owner[1])).get_json()["label_schema"] == new_schema


def test_project_list_pages(client, owner):
    ids = [create(client, owner[1], title=f"p{i}").get_json()["id"] for i in range(3)]
    first = client.get("/api/v1/projects?limit=2", headers=auth(owner[1])).get_json()
    assert [p["id"] for p in first["data"]] == ids[:2]
    rest = client.get(f"/api/v1/projects?limit=2&after={first['next_after']}", headers=auth(owner[1])).get_json()
    assert [p["id"] for p in rest["data"]] == ids[2:] and rest["next_after"] is None
