"""Bad input, continued: JSON that parses but cannot be stored or served (NUL characters, unpaired surrogates,
numbers beyond a double, nesting too deep) in any free-form field, deeply nested bodies on every operation, ids no
row can have. Always a 4xx problem naming the place, never a 500, nothing written; on SQLite too, which would
store such values and serve them back as invalid JSON."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from base.identity import Role
from base.validation import MAX_DEPTH, JSONValueError, loads_strict
from edge.fields import JSON, JSONObject
from market.catalogue.batches import publish_batch
from market.catalogue.models import Item
from tests.factories import account, auth, jsonl, project
from tests.test_bad_input import _errors_at, _line_errors, _problem, _snapshot

TEXT = {"type": "text", "max_length": 1000}
# Raw JSON for one value each; "@" marks where it goes in a body.
UNSTORABLE = {"NUL": '"a\\u0000b"', "lone surrogate": '"\\udfff"', "1e400": "1e400", "-1e999": "-1e999",
              "NUL in a key": '{"k\\u0000": 1}', "surrogate in a key": '{"\\ud800": 1}',
              "too deep": "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)}
MARK = "@marker@"


def _with(body: Any, raw: str) -> str:
    """`body` as JSON text with the string MARK replaced by the raw JSON `raw`."""
    text = json.dumps(body)
    assert text.count(json.dumps(MARK)) == 1
    return text.replace(json.dumps(MARK), raw)


@dataclass
class World:
    owner: str
    worker: str
    ops: str
    worker_id: int
    project_id: int
    gold_id: int
    assignment_id: int
    public_item: int
    qualification_id: int
    attempt: dict[str, Any]


@pytest.fixture
def world(client, session: Session, clock) -> World:
    now = clock()
    owner, owner_token = account(session, Role.REQUESTER, now=now)
    worker, worker_token = account(session, Role.WORKER, now=now)
    _, ops_token = account(session, Role.OPS, now=now)
    proj = project(session, owner, now=now, label_schema=TEXT, gold_rate=Decimal(0), assignments_per_item=1)
    session.commit()
    imported = client.post(f"/api/v1/projects/{proj.id}/items", data=jsonl(
        [{"external_id": "a", "data": {"t": "x"}}, {"external_id": "g", "data": {"t": "y"}, "gold": "known"}]),
        headers={**auth(owner_token), "Content-Type": "application/x-ndjson"})
    assert imported.status_code == 201, imported.get_json()
    publish_batch(session, project_id=proj.id, account=owner, now=now)
    task = client.post("/api/v1/work/next", headers=auth(worker_token)).get_json()
    qual = client.post("/api/v1/qualifications", headers=auth(owner_token), json={
        "name": "Screener", "label_schema": TEXT, "questions": [{"data": {"t": "q"}, "answer": "a"}],
        "passing_score": 50})
    assert qual.status_code == 201, qual.get_json()
    attempt = client.post(f"/api/v1/qualification-tests/{qual.get_json()['id']}/attempts",
                          headers=auth(worker_token)).get_json()
    return World(owner_token, worker_token, ops_token, worker.id, proj.id,
                 session.scalar(select(Item.id).where(Item.project_id == proj.id, Item.is_gold)),
                 task["assignment_id"], task["items"][0]["id"], qual.get_json()["id"], attempt)


def _free_form_fields(w: World) -> list[tuple[str, str, str, Any, tuple[str, ...]]]:
    """(field, url, token, body with MARK where the value goes, path of the expected errors): every free-form
    JSON field a request sets."""
    answer = {"item_id": w.public_item, "answer": "fine"}
    submit = f"/api/v1/assignments/{w.assignment_id}/submit"
    question = {"data": {"t": "q"}, "answer": "a"}
    qualification = {"label_schema": TEXT, "passing_score": 50}
    attempt = f"/api/v1/qualification-attempts/{w.attempt['id']}/submit"
    question_id = w.attempt["questions"][0]["id"]
    return [
        ("answer", submit, w.worker, {"answers": [{**answer, "answer": MARK}]}, ("answers", "0", "answer")),
        ("client", submit, w.worker, {"answers": [answer], "client": {"ua": MARK}}, ("client", "ua")),
        ("flag evidence", "/api/v1/ops/flags", w.ops,
         {"worker_id": w.worker_id, "note": "n", "evidence": {"seen": MARK}}, ("evidence", "seen")),
        ("question data", "/api/v1/qualifications", w.owner,
         {**qualification, "name": "data", "questions": [{**question, "data": {"t": MARK}}]},
         ("questions", "0", "data", "t")),
        ("question answer", "/api/v1/qualifications", w.owner,
         {**qualification, "name": "answer", "questions": [{**question, "answer": MARK}]},
         ("questions", "0", "answer")),
        ("attempt answer", attempt, w.worker, {"answers": [{"question_id": question_id, "answer": MARK}]},
         ("answers", "0", "answer")),
        ("gold correction", f"/api/v1/projects/{w.project_id}/items/{w.gold_id}", w.owner,
         {"gold": MARK}, ("gold",)),
    ]


def test_unstorable_json_in_any_free_form_field_is_422_naming_it(client, connection, world, subtests):
    for field, url, token, body, path in _free_form_fields(world):
        method = "PATCH" if field == "gold correction" else "POST"
        for name, raw in UNSTORABLE.items():
            with subtests.test(msg=f"{field}: {name}"):
                before = _snapshot(connection)
                resp = client.open(url, method=method, data=_with(body, raw),
                                   headers={**auth(token), "Content-Type": "application/json"})
                # A bad key is reported at its object (the marked place), nesting too deep at the top-level field.
                _errors_at(_problem(resp, 422), *(path[:1] if name == "too deep" else path))
                assert _snapshot(connection) == before


def test_the_same_fields_take_storable_values(client, world):
    """The fixture's bodies are valid but for the marked value: each takes ordinary JSON there."""
    for field, url, token, body, _ in _free_form_fields(world):
        method = "PATCH" if field == "gold correction" else "POST"
        # The answer is the one the client case sends too: a second submit of the same answers is a replay.
        value = {"client": '{"nested": [1, 2.5, "\\ud83d\\ude00"]}', "flag evidence": "[1e300, -0.0]",
                 "question data": '"caf\\u00e9"', "answer": '"fine"'}.get(field, '"fine \\u263a"')
        resp = client.open(url, method=method, data=_with(body, value),
                           headers={**auth(token), "Content-Type": "application/json"})
        assert resp.status_code in (200, 201), f"{field}: {resp.get_data(as_text=True)}"


@pytest.mark.parametrize("name", list(UNSTORABLE))
@pytest.mark.parametrize("field", ["data", "gold"])
def test_jsonl_import_refuses_unstorable_values_in_data_and_gold(client, connection, world, name, field):
    record = {"external_id": "new", "data": {"t": "x"}, "gold": "known"}
    record[field] = {"t": MARK} if field == "data" else MARK
    before = _snapshot(connection)
    resp = client.post(f"/api/v1/projects/{world.project_id}/items", data=_with(record, UNSTORABLE[name]) + "\n",
                       headers={**auth(world.owner), "Content-Type": "application/x-ndjson"})
    errors = _line_errors(_problem(resp, 422))
    assert errors[0]["line"] == 1 and errors[0]["field"] == field, errors
    assert _snapshot(connection) == before


def test_csv_gold_and_column_names_with_a_nul_are_refused(client, connection, world):
    url = f"/api/v1/projects/{world.project_id}/items"
    headers = {**auth(world.owner), "Content-Type": "text/csv"}
    before = _snapshot(connection)
    errors = _line_errors(_problem(client.post(url, data=b"external_id,t,gold\nn,x,kno\x00wn\n", headers=headers)))
    assert (errors[0]["line"], errors[0]["field"]) == (2, "gold") and "NUL" in errors[0]["message"]
    errors = _line_errors(_problem(client.post(url, data=b"external_id,t\x00\nn,x\n", headers=headers)))
    assert errors[0]["line"] == 1 and "NUL" in errors[0]["message"]
    assert _snapshot(connection) == before


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 200_000])
def test_jsonl_lines_nested_too_deep_are_line_errors(client, connection, world, depth):
    lines = jsonl([{"external_id": "ok", "data": {}}]) + (
        '{"external_id": "deep", "data": {"t": ' + "[" * depth + "]" * depth + "}}\n").encode()
    before = _snapshot(connection)
    resp = client.post(f"/api/v1/projects/{world.project_id}/items", data=lines,
                       headers={**auth(world.owner), "Content-Type": "application/x-ndjson"})
    errors = _line_errors(_problem(resp, 422))
    assert errors[0]["line"] == 2 and "nested" in errors[0]["message"], errors
    assert _snapshot(connection) == before


# ---- every operation: a body nested too deep ------------------------------------------------------------


_PARAM = re.compile(r"<(?:[^:<>]+:)?(\w+)>")
_SPEC_PARAM = re.compile(r"{\w+}")


def _operations(app: Flask) -> list[tuple[str, str]]:
    """(method, URL) of every route that takes a body, ids set to the largest there can be (no row has them, so
    nothing is changed whatever the request does)."""
    return sorted({(method, _PARAM.sub(str(2**31 - 1), rule.rule)) for rule in app.url_map.iter_rules()
                   for method in (rule.methods or set()) - {"GET", "HEAD", "OPTIONS"}})


def test_every_operation_answers_a_deeply_nested_body_with_a_4xx(app, client, session, clock, connection, subtests):
    tokens = {role: account(session, role, now=clock())[1] for role in Role}
    operations = _operations(app)
    spec = client.get("/openapi.json").get_json()
    with_body = {(method.upper(), _SPEC_PARAM.sub(str(2**31 - 1), path))
                 for path, ops in spec["paths"].items() for method, op in ops.items()
                 if method != "parameters" and "application/json" in op.get("requestBody", {}).get("content", {})}
    assert with_body <= set(operations) and len(with_body) >= 23  # sign-up and login among them
    for depth in (MAX_DEPTH + 1, 200_000):
        body = "[" * depth + "]" * depth
        for method, url in operations:
            with subtests.test(msg=f"{method} {url} nested {depth}"):
                before = _snapshot(connection)
                statuses = []
                for token in (None, *tokens.values()):
                    resp = client.open(url, method=method, data=body, headers={
                        "Content-Type": "application/json", **(auth(token) if token else {})})
                    assert resp.status_code < 500, resp.get_data(as_text=True)[:300]
                    if resp.status_code >= 400 and (url.startswith("/api/") or url.startswith("/work/tasks/")):
                        _problem(resp)  # the API, and the work page's JSON endpoints (console/work.py)
                    elif resp.status_code >= 400:  # a page's form post (workers/views.py): refused for its
                        # missing CSRF token before the body is read, on an HTML error page
                        assert resp.status_code == 400 and resp.mimetype == "text/html", url
                    statuses.append(resp.status_code)
                if (method, url) in with_body:  # whoever may call it has the body refused
                    assert {400, 422} & set(statuses), statuses
                assert _snapshot(connection) == before


# ---- ids no row can have ------------------------------------------------------------------------------------


def test_a_dispute_naming_an_impossible_public_item_id_is_422(client, connection, world, subtests):
    """Most public ids (52 bits) map beyond the 32-bit id column: PostgreSQL refused the lookup with a 500."""
    ids = client.application.extensions["crowdmarket.item_ids"]
    impossible = [p for p in range(5) if ids.item_id(p) is None]
    assert 0 in impossible
    for public in impossible:
        with subtests.test(msg=str(public)):
            before = _snapshot(connection)
            resp = client.post(f"/api/v1/assignments/{world.assignment_id}/disputes", headers=auth(world.worker),
                               json={"item_id": public, "note": "wrong"})
            _errors_at(_problem(resp, 422), "item_id")
            assert _snapshot(connection) == before


def test_answers_naming_an_impossible_public_item_id_are_422(client, connection, world):
    before = _snapshot(connection)
    resp = client.post(f"/api/v1/assignments/{world.assignment_id}/submit", headers=auth(world.worker),
                       json={"answers": [{"item_id": world.public_item, "answer": "x"}, {"item_id": 0, "answer": "y"}]})
    assert _errors_at(_problem(resp, 422), "answers", "0")
    assert _snapshot(connection) == before


def test_public_ids_map_back_only_to_ids_the_database_can_hold(app):
    ids = app.extensions["crowdmarket.item_ids"]
    for item in (1, 2, 12345, 2**31 - 1):
        assert ids.item_id(ids.public(item)) == item
    assert ids.item_id(ids.public(2**31)) is None and ids.item_id(ids.public(0)) is None


# ---- the loader and the fields -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, path", [
    ('{"a": "x\\u0000"}', ("a",)), ('{"a": [1, {"b\\ud800": 2}]}', ("a", 1)), ('{"a": {"b": [1e400]}}', ("a", "b", 0)),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), (0,)), ("[" * 100_000 + "]" * 100_000, ()), ('"\\udc00"', ()),
])
def test_loads_strict_names_the_place(raw, path):
    with pytest.raises(JSONValueError) as caught:
        loads_strict(raw)
    assert caught.value.path == path


def test_loads_strict_keeps_what_can_be_stored():
    raw = '{"emoji": "\\ud83d\\ude00", "big": 1e308, "tiny": 1e-400, "int": 100000000000000000000000, "deep": ' \
          + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"  # the object is a level too
    doc = loads_strict(raw)
    assert doc["emoji"] == "\U0001f600" and doc["big"] == 1e308 and doc["int"] == 10**23


def test_loads_strict_lists_every_problem_as_field_errors():
    with pytest.raises(JSONValueError) as caught:
        loads_strict('{"title": "a\\u0000", "label_schema": {"categories": [{"name": "\\ud800"}]}, "n": 1e999}')
    assert caught.value.messages() == {
        "title": ["contains a NUL character (\\u0000)."], "n": [
            "is a number too large for a double (it would be stored as infinity)."],
        "label_schema": {"categories": {"0": {"name": ["contains an unpaired surrogate, which is not valid "
                                                       "Unicode."]}}}}


def test_json_fields_refuse_what_the_database_cannot_store_whatever_the_source():
    from marshmallow import Schema, ValidationError

    class Doc(Schema):
        value = JSON()
        meta = JSONObject()

    assert Doc().load({"value": [1, "x"], "meta": {"a": {"b": None}}}) == {"value": [1, "x"],
                                                                          "meta": {"a": {"b": None}}}
    for bad, errors in [({"value": "a\x00"}, {"value": ["contains a NUL character (\\u0000)."]}),
                        ({"meta": {"a": [float("inf")]}}, {"meta": {"a": {"0": [
                            "is a number too large for a double (it would be stored as infinity)."]}}}),
                        ({"meta": {1: "\ud800"}}, {"meta": {"1": [
                            "contains an unpaired surrogate, which is not valid Unicode."]}})]:
        with pytest.raises(ValidationError) as caught:
            Doc().load(bad)
        assert caught.value.messages == errors
