"""Unknown fields, wrong types, unknown label keys, negative or fractional money, oversized bodies, broken CSV/JSON
-> 4xx problem+json with field errors; never a 500, never a partial write."""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from base.db import Base
from base.identity import Role
from edge.fields import LabelSchemaSchema
from market.catalogue.batches import publish_batch
from market.catalogue.models import Item, Project
from market.catalogue.schemas import ProjectCreateSchema
from tests.conftest import make_app
from tests.factories import account, auth, items, jsonl, project, project_payload
from workers.models import ApiToken

PROBLEM = "application/problem+json"
PROJECTS = "/api/v1/projects"
JSONL = "application/x-ndjson"


# ---- helpers --------------------------------------------------------------------------------------------


def _problem(resp, status: int | None = None) -> dict[str, Any]:
    """The response is a 4xx application/problem+json (with exactly `status` if given); its body."""
    text = resp.get_data(as_text=True)
    assert 400 <= resp.status_code < 500, f"{resp.status_code}: {text[:500]}"
    if status is not None:
        assert resp.status_code == status, text[:500]
    assert resp.mimetype == PROBLEM, text[:500]
    body = resp.get_json()
    assert body["status"] == resp.status_code and body["title"]
    return body


def _errors_at(body: dict[str, Any], *path: str) -> Any:
    """The field errors at `path` under the problem's `errors` (e.g. "label_schema", "type")."""
    node = body.get("errors")
    for key in path:
        assert isinstance(node, dict) and key in node, f"no field errors at {path}: {body.get('errors')}"
        node = node[key]
    assert node, f"empty errors at {path}"
    return node


def _line_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for err in errors:
        assert isinstance(err["line"], int) and err["line"] >= 1 and err["message"], err
    return errors


def _snapshot(connection: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, bar a token's last-use time (any authenticated request may refresh it)."""
    state = {}
    for table in Base.metadata.sorted_tables:
        cols = [c for c in table.columns if not (table.name == ApiToken.__tablename__ and c.name == "last_used_at")]
        state[table.name] = [tuple(r) for r in connection.execute(select(*cols).order_by(*table.primary_key.columns))]
    return state


def _count(connection: Connection, model: type, project_id: int) -> int:
    return connection.execute(select(func.count()).select_from(model).where(model.project_id == project_id)).scalar()


@dataclass
class Ctx:
    headers: dict[str, str]
    project: Project
    plain: list[int]  # unpublished, non-gold item ids
    gold: int
    published: int
    batch: int

    @property
    def url(self) -> str:
        return f"{PROJECTS}/{self.project.id}"


@pytest.fixture
def ctx(session: Session, clock) -> Ctx:
    now = clock()
    owner, token = account(session, Role.REQUESTER, now=now)
    proj = project(session, owner, now=now)
    items(session, proj, 4, now=now, gold=1)
    rows = session.execute(select(Item.id, Item.is_gold).where(Item.project_id == proj.id).order_by(Item.id)).all()
    plain = [i for i, g in rows if not g]
    gold = next(i for i, g in rows if g)
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=now, item_ids=plain[:1])
    session.commit()
    return Ctx(headers=auth(token), project=proj, plain=plain[1:], gold=gold, published=plain[0], batch=batch.id)


# ---- POST /api/v1/projects ------------------------------------------------------------------------------


def _label(**overrides: Any) -> dict[str, Any]:
    return {**copy.deepcopy(project_payload()["label_schema"]), **overrides}


CREATE_CASES = [
    ("unknown field", project_payload(colour="red"), ("colour",)),
    ("unknown label_schema field", project_payload(label_schema=_label(colour="red")), ("label_schema", "colour")),
    ("title missing", {k: v for k, v in project_payload().items() if k != "title"}, ("title",)),
    ("title wrong type", project_payload(title=123), ("title",)),
    ("title null", project_payload(title=None), ("title",)),
    ("title empty", project_payload(title=""), ("title",)),
    ("title too long", project_payload(title="x" * 201), ("title",)),
    ("label_schema missing", {k: v for k, v in project_payload().items() if k != "label_schema"}, ("label_schema",)),
    ("label_schema not an object", project_payload(label_schema=["pos", "neg"]), ("label_schema",)),
    ("unknown answer type", project_payload(label_schema=_label(type="ranking")), ("label_schema", "type")),
    ("duplicate category keys", project_payload(label_schema=_label(categories=[
        {"key": "a", "name": "A"}, {"key": "a", "name": "B"}])), ("label_schema", "categories")),
    ("bad category key", project_payload(label_schema=_label(categories=[
        {"key": "no spaces!", "name": "A"}, {"key": "b", "name": "B"}])), ("label_schema", "categories")),
    ("one category", project_payload(label_schema=_label(categories=[{"key": "a", "name": "A"}])),
     ("label_schema", "categories")),
    ("categories on a rating", project_payload(label_schema={"type": "rating", "min": 1, "max": 5,
                                                             "categories": _label()["categories"]}),
     ("label_schema", "categories")),
    ("rating min >= max", project_payload(label_schema={"type": "rating", "min": 5, "max": 5}),
     ("label_schema", "max")),
    ("rating fractional bound", project_payload(label_schema={"type": "rating", "min": 1, "max": 4.5}),
     ("label_schema", "max")),
    ("multi_choice max > categories", project_payload(label_schema={**_label(type="multi_choice"), "max_choices": 9}),
     ("label_schema", "max_choices")),
    ("reward_cents missing", {k: v for k, v in project_payload().items() if k != "reward_cents"}, ("reward_cents",)),
    ("negative reward", project_payload(reward_cents=-1), ("reward_cents",)),
    ("fractional reward", project_payload(reward_cents=12.5), ("reward_cents",)),
    ("integral float reward", project_payload(reward_cents=12.0), ("reward_cents",)),
    ("reward as a string", project_payload(reward_cents="12"), ("reward_cents",)),
    ("reward as a boolean", project_payload(reward_cents=True), ("reward_cents",)),
    ("huge reward", project_payload(reward_cents=10**30), ("reward_cents",)),
    ("gold_rate out of range", project_payload(gold_rate=0.5), ("gold_rate",)),
    ("gold_rate negative", project_payload(gold_rate=-0.05), ("gold_rate",)),
    ("gold_rate too precise", project_payload(gold_rate="0.0555"), ("gold_rate",)),
    ("gold_rate not a number", project_payload(gold_rate="lots"), ("gold_rate",)),
    ("lowercase currency", project_payload(currency="usd"), ("currency",)),
    ("currency with a trailing newline", project_payload(currency="USD\n"), ("currency",)),
    ("items_per_hit zero", project_payload(items_per_hit=0), ("items_per_hit",)),
    ("redundancy too high", project_payload(assignments_per_item=51), ("assignments_per_item",)),
    ("lease too short", project_payload(assignment_duration_seconds=10), ("assignment_duration_seconds",)),
    ("negative approval delay", project_payload(auto_approval_delay_seconds=-1), ("auto_approval_delay_seconds",)),
    ("lone surrogate in the title", project_payload(title="caf\ud800"), ("title",)),
    ("lone surrogate in a category name", project_payload(label_schema=_label(categories=[
        {"key": "a", "name": "\udfff"}, {"key": "b", "name": "B"}])), ("label_schema",)),
]


def test_create_project_rejects_bad_fields(client, connection, ctx, subtests):
    for name, body, path in CREATE_CASES:
        with subtests.test(msg=name):
            before = _snapshot(connection)
            _errors_at(_problem(client.post(PROJECTS, json=body, headers=ctx.headers), 422), *path)
            assert _snapshot(connection) == before


def test_create_project_rejects_broken_or_non_object_json(client, connection, ctx, subtests):
    for raw in ['{"title": "x",', "not json", "", '{"title": "x"}}', '{"reward_cents": NaN}', '{"gold_rate": Infinity}',
                "[]", "42", '"a string"', "null"]:
        with subtests.test(msg=repr(raw)):
            before = _snapshot(connection)
            _problem(client.post(PROJECTS, data=raw, headers={**ctx.headers, "Content-Type": "application/json"}))
            assert _snapshot(connection) == before


def test_create_project_reports_every_bad_field_at_once(client, ctx):
    body = project_payload(title="", reward_cents=-5, currency="dollars", extra=1)
    errors = _problem(client.post(PROJECTS, json=body, headers=ctx.headers), 422)["errors"]
    assert {"title", "reward_cents", "currency", "extra"} <= set(errors)


@pytest.mark.parametrize("text", ["nul\x00byte", "\x00"])
def test_create_project_with_a_nul_character_is_stored_or_refused_never_500(client, connection, ctx, text):
    before = _snapshot(connection)
    resp = client.post(PROJECTS, json=project_payload(title=text, instructions=text), headers=ctx.headers)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code == 201:
        got = client.get(f"{PROJECTS}/{resp.get_json()['id']}", headers=ctx.headers).get_json()
        assert got["title"] == text and got["instructions"] == text
    else:
        _errors_at(_problem(resp, 422), "title")
        assert _snapshot(connection) == before


# ---- PATCH /api/v1/projects/{id} ------------------------------------------------------------------------


PATCH_CASES = [
    ("unknown field", {"owner_id": 1}, ("owner_id",)),
    ("title wrong type", {"title": ["x"]}, ("title",)),
    ("title null", {"title": None}, ("title",)),
    ("title empty", {"title": ""}, ("title",)),
    ("negative reward", {"reward_cents": -5}, ("reward_cents",)),
    ("fractional reward", {"reward_cents": 1.5}, ("reward_cents",)),
    ("gold_rate too precise", {"gold_rate": "0.0501"}, ("gold_rate",)),
    ("gold_rate NaN as string", {"gold_rate": "NaN"}, ("gold_rate",)),
    ("bad label_schema", {"label_schema": {"type": "text", "max_length": 0}}, ("label_schema", "max_length")),
    ("valid title with a bad reward", {"title": "New title", "reward_cents": -1}, ("reward_cents",)),
    ("valid instructions with an unknown field", {"instructions": "v2", "bogus": True}, ("bogus",)),
    ("instructions wrong type", {"instructions": 7}, ("instructions",)),
    ("currency with a trailing newline", {"currency": "EUR\n"}, ("currency",)),
]


def test_patch_project_rejects_bad_fields_and_changes_nothing(client, connection, ctx, subtests):
    for name, body, path in PATCH_CASES:
        with subtests.test(msg=name):
            before = _snapshot(connection)
            _errors_at(_problem(client.patch(ctx.url, json=body, headers=ctx.headers), 422), *path)
            assert _snapshot(connection) == before


def test_patch_project_rejects_broken_or_non_object_json(client, connection, ctx, subtests):
    for raw in ['{"title": ', "[1, 2]", "true", '{"reward_cents": -Infinity}']:
        with subtests.test(msg=repr(raw)):
            before = _snapshot(connection)
            _problem(client.patch(ctx.url, data=raw, headers={**ctx.headers, "Content-Type": "application/json"}))
            assert _snapshot(connection) == before


def test_patch_cannot_change_the_label_schema_after_publishing(client, connection, ctx):
    before = _snapshot(connection)
    body = {"title": "Renamed", "instructions": "New rules", "label_schema": {"type": "text"}}
    problem = _problem(client.patch(ctx.url, json=body, headers=ctx.headers), 409)
    _errors_at(problem, "label_schema")
    assert _snapshot(connection) == before  # neither the title nor a new guideline version


def test_patch_with_a_nul_character_is_stored_or_refused_never_500(client, connection, ctx):
    before = _snapshot(connection)
    resp = client.patch(ctx.url, json={"instructions": "a\x00b"}, headers=ctx.headers)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code == 200:
        assert resp.get_json()["instructions"] == "a\x00b"
    else:
        _errors_at(_problem(resp, 422), "instructions")
        assert _snapshot(connection) == before


# ---- POST /api/v1/projects/{id}/items -------------------------------------------------------------------


def _import(client, ctx: Ctx, data: bytes, content_type: str = JSONL, query: str = ""):
    return client.post(f"{ctx.url}/items{query}", data=data, headers={**ctx.headers, "Content-Type": content_type})


def _ok(n: int, prefix: str = "ok") -> bytes:
    return jsonl([{"external_id": f"{prefix}{i}", "data": {"text": f"t{i}"}} for i in range(n)])


def _ok_csv(n: int, prefix: str = "ok") -> bytes:
    return b"external_id,text,gold\n" + "".join(f"{prefix}{i},t{i},\n" for i in range(n)).encode()


JSONL_CASES = [
    ("broken JSON", _ok(2) + b'{"external_id": "x", "data": {\n', 3, None),
    ("trailing garbage", _ok(1) + b'{"external_id": "x", "data": {}} extra\n', 2, None),
    ("not an object", _ok(1) + b'["x", {"text": "t"}]\n', 2, None),
    ("a bare string", b'"x"\n', 1, None),
    ("unknown field", _ok(2) + b'{"external_id": "x", "data": {}, "label": "pos"}\n', 3, "label"),
    ("gold with an unknown label key", _ok(1) + b'{"external_id": "x", "data": {}, "gold": "meh"}\n', 2, "gold"),
    ("gold of the wrong type", _ok(1) + b'{"external_id": "x", "data": {}, "gold": ["pos"]}\n', 2, "gold"),
    ("explanation without gold", b'{"external_id": "x", "data": {}, "explanation": "why"}\n', 1, "explanation"),
    ("missing external_id", _ok(1) + b'{"data": {"text": "t"}}\n', 2, "external_id"),
    ("empty external_id", b'{"external_id": "  ", "data": {}}\n', 1, "external_id"),
    ("external_id too long", jsonl([{"external_id": "x" * 256, "data": {}}]), 1, "external_id"),
    ("external_id a float", b'{"external_id": 1.5, "data": {}}\n', 1, "external_id"),
    ("data not an object", b'{"external_id": "x", "data": "text"}\n', 1, "data"),
    ("fractional priority", b'{"external_id": "x", "data": {}, "priority": 1.5}\n', 1, "priority"),
    ("boolean priority", b'{"external_id": "x", "data": {}, "priority": true}\n', 1, "priority"),
    ("huge priority", b'{"external_id": "x", "data": {}, "priority": 100000000000000000000}\n', 1, "priority"),
    ("NaN is not JSON", _ok(1, "nan") + b'{"external_id": "nan", "data": {"score": NaN}}\n', 2, None),
    ("Infinity is not JSON", b'{"external_id": "inf", "data": {"score": -Infinity}}\n', 1, None),
    ("invalid UTF-8 bytes", _ok(2) + b'{"external_id": "x", "data": {"text": "caf\xe9"}}\n' + _ok(1, "z"), 3, None),
]


def _check_line_error(resp, connection: Connection, before: dict[str, Any], line: int, field: str | None) -> None:
    errors = _line_errors(_problem(resp, 422))
    assert _snapshot(connection) == before
    assert errors[0]["line"] == line, errors
    if field is not None:
        assert errors[0]["field"] == field, errors


def test_jsonl_import_rejects_bad_lines_with_line_numbers(client, connection, ctx, subtests):
    for name, data, line, field in JSONL_CASES:
        with subtests.test(msg=name):
            before = _snapshot(connection)
            _check_line_error(_import(client, ctx, data), connection, before, line, field)


CSV_CASES = [
    ("too few columns", _ok_csv(1) + b"x,only-two\n", 3, None),
    ("too many columns", _ok_csv(2) + b"x,t,,surplus\n", 4, None),
    ("no external_id column", b"id,text\n1,t\n", 1, "external_id"),
    ("duplicate header", b"external_id,text,text\nx,a,b\n", 1, None),
    ("empty header name", b"external_id,,text\nx,a,b\n", 1, None),
    ("gold with an unknown label key", _ok_csv(1) + b"x,t,meh\n", 3, "gold"),
    ("empty external_id", _ok_csv(1) + b" ,t,\n", 3, "external_id"),
    ("priority not a number", b"external_id,text,priority\nx,t,high\n", 2, "priority"),
    ("invalid UTF-8 bytes", _ok_csv(2) + b"x,caf\xe9,\n" + _ok_csv(1, "z").split(b"\n", 1)[1], 4, None),
    ("a quote left open", _ok_csv(2) + b'x,"never closed,\n' + _ok_csv(3, "z").split(b"\n", 1)[1], 4, None),
]


def test_csv_import_rejects_bad_rows_with_line_numbers(client, connection, ctx, subtests):
    for name, data, line, field in CSV_CASES:
        with subtests.test(msg=name):
            before = _snapshot(connection)
            _check_line_error(_import(client, ctx, data, "text/csv"), connection, before, line, field)


def test_an_empty_import_is_422(client, connection, ctx, subtests):
    for name, data, content_type in [("empty jsonl", b"", JSONL), ("blank jsonl", b"\n  \n\n", JSONL),
                                     ("empty csv", b"", "text/csv"), ("header only", b"external_id,text\n", "text/csv"),
                                     ("just a BOM", b"\xef\xbb\xbf", JSONL)]:
        with subtests.test(msg=name):
            before = _snapshot(connection)
            _line_errors(_problem(_import(client, ctx, data, content_type), 422))
            assert _snapshot(connection) == before


def test_every_bad_line_is_listed(client, connection, ctx):
    data = _ok(1) + b"{\n" + _ok(1, "b") + b'{"external_id": "g", "data": {}, "gold": "meh"}\n[]\n'
    body = _problem(_import(client, ctx, data), 422)
    assert [(e["line"], e["field"]) for e in _line_errors(body)] == [(2, None), (4, "gold"), (5, None)]
    assert body["error_count"] == 3


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("bad", ["invalid row", "invalid UTF-8"])
def test_a_late_bad_line_rolls_back_the_chunks_already_written(client, connection, ctx, fmt, bad):
    """More than one insert chunk (2,000 rows) is valid before the bad line: none of it may stay."""
    n = 2_500
    items_before = _count(connection, Item, ctx.project.id)
    if fmt == "jsonl":
        tail = b'{"external_id": "bad", "data": {}, "gold": "meh"}\n' if bad == "invalid row" \
            else b'{"external_id": "bad", "data": {"t": "\xff"}}\n'
        resp = _import(client, ctx, _ok(n) + tail + _ok(3, "after"))
    else:
        tail = b"bad,t,meh\n" if bad == "invalid row" else b"bad,\xff,\n"
        resp = _import(client, ctx, _ok_csv(n) + tail, "text/csv")
    errors = _line_errors(_problem(resp, 422))
    assert _count(connection, Item, ctx.project.id) == items_before
    assert errors[0]["line"] == (n + 1 if fmt == "jsonl" else n + 2), errors
    # ...and the same file without the bad line imports in full.
    good = _import(client, ctx, _ok(n) if fmt == "jsonl" else _ok_csv(n), JSONL if fmt == "jsonl" else "text/csv")
    assert good.status_code == 201 and good.get_json()["created"] == n


@pytest.mark.parametrize("data", [_ok(1) + b'{"external_id": "nul", "data": {"text": "a\\u0000b"}}\n',
                                  b'{"external_id": "nul\\u0000id", "data": {}}\n',
                                  b'{"external_id": "k", "data": {"a\\u0000": 1}}\n'],
                         ids=["in a value", "in the external_id", "in a key"])
def test_jsonl_nul_characters_are_refused(client, connection, ctx, data):
    before = _snapshot(connection)
    errors = _line_errors(_problem(_import(client, ctx, data), 422))
    assert "NUL" in errors[0]["message"]
    assert _snapshot(connection) == before


def test_csv_nul_characters_are_refused(client, connection, ctx):
    before = _snapshot(connection)
    errors = _line_errors(_problem(_import(client, ctx, b"external_id,text\nnul,a\x00b\n", "text/csv"), 422))
    assert errors[0]["line"] == 2 and "NUL" in errors[0]["message"]
    assert _snapshot(connection) == before


def test_jsonl_lone_surrogate_escape_is_a_line_error(client, connection, ctx):
    before = _snapshot(connection)
    errors = _line_errors(_problem(_import(client, ctx, _ok(1) + b'{"external_id": "\\ud800", "data": {}}\n'), 422))
    assert errors[0]["line"] == 2
    assert _snapshot(connection) == before


def test_import_format_and_upload_errors_name_the_field(client, connection, ctx):
    before = _snapshot(connection)
    _errors_at(_problem(_import(client, ctx, _ok(1), "text/plain"), 422), "format")
    _errors_at(_problem(_import(client, ctx, _ok(1), JSONL, "?format=xml"), 422), "format")
    resp = client.post(f"{ctx.url}/items", data={"other": (io.BytesIO(_ok(1)), "x.jsonl")}, headers=ctx.headers,
                       content_type="multipart/form-data")
    _errors_at(_problem(resp, 422), "file")
    resp = client.post(f"{ctx.url}/items", data={"file": (io.BytesIO(_ok(1)), "items.txt")}, headers=ctx.headers,
                       content_type="multipart/form-data")
    _errors_at(_problem(resp, 422), "format")
    resp = client.post(f"{ctx.url}/items", data={"file": (io.BytesIO(b"{broken\n"), "items.jsonl")},
                       headers=ctx.headers, content_type="multipart/form-data")
    assert _line_errors(_problem(resp, 422))[0]["line"] == 1
    assert _snapshot(connection) == before


# ---- oversized bodies -----------------------------------------------------------------------------------


def test_oversized_bodies_are_413_and_write_nothing(database, clock, connection, ctx):
    small = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None, "MAX_REQUEST_BYTES": 2_000,
                      "MAX_IMPORT_BYTES": 5_000}).test_client()
    before = _snapshot(connection)
    big = "x" * 3_000
    for resp in (small.post(PROJECTS, json=project_payload(description=big), headers=ctx.headers),
                 small.patch(ctx.url, json={"description": big}, headers=ctx.headers),
                 small.post(f"{ctx.url}/batches", json={"name": "n", "external_ids": [big]}, headers=ctx.headers),
                 small.post(f"{ctx.url}/items", data=_ok(200), headers={**ctx.headers, "Content-Type": JSONL}),
                 small.post(f"{ctx.url}/items", data={"file": (io.BytesIO(_ok(200)), "big.jsonl")},
                            headers=ctx.headers, content_type="multipart/form-data")):
        _problem(resp, 413)
    assert _snapshot(connection) == before
    # Imports have their own, larger limit than JSON bodies.
    ok = small.post(f"{ctx.url}/items", data=_ok(60), headers={**ctx.headers, "Content-Type": JSONL})
    assert len(_ok(60)) > 2_000 and ok.status_code == 201


def _chunked(client, url: str, body: bytes, headers: dict[str, str], *, terminated: bool = True):
    """A body without Content-Length, as a server hands on a chunked one: gunicorn and werkzeug's server decode it
    and set wsgi.input_terminated (a server that does not leave the stream unframed)."""
    return client.post(url, input_stream=io.BytesIO(body), environ_overrides={"wsgi.input_terminated": True}
                       if terminated else {}, headers={**headers, "Content-Type": "application/json",
                                                       "Transfer-Encoding": "chunked"})


def test_chunked_bodies_over_the_limit_are_413_not_read_cut_short(database, clock, connection, ctx):
    """werkzeug stops reading a body without Content-Length at the limit without an error: a valid object padded
    past the limit was created from its first 2,000 bytes."""
    small = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None, "MAX_REQUEST_BYTES": 2_000})
    client, body = small.test_client(), json.dumps(project_payload()).encode()
    before = _snapshot(connection)
    for oversized in (body + b" " * 3_000, json.dumps(project_payload(description="x" * 3_000)).encode()):
        _problem(_chunked(client, PROJECTS, oversized, ctx.headers), 413)
    assert _snapshot(connection) == before
    at_limit = body[:-1] + b" " * (2_000 - len(body)) + b"}"  # exactly the limit, as with a Content-Length
    assert len(at_limit) == 2_000
    assert _chunked(client, PROJECTS, at_limit, ctx.headers).status_code == 201


def test_a_chunked_body_the_server_cannot_frame_is_411_not_an_empty_body(client, connection, ctx):
    """Without wsgi.input_terminated werkzeug hands the app an empty stream: the body was read as {}, and an empty
    batch request publishes every unpublished item."""
    before = _snapshot(connection)
    resp = _chunked(client, f"{ctx.url}/batches", json.dumps({"item_ids": ctx.plain[:1]}).encode(), ctx.headers,
                    terminated=False)
    _problem(resp, 411)
    assert _snapshot(connection) == before


def test_chunked_bodies_through_a_real_server(database, clock, connection):
    """werkzeug's own server decodes Transfer-Encoding: chunked (as gunicorn does); the limit holds there too."""
    import http.client
    import threading

    from werkzeug.serving import make_server

    small = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None, "MAX_REQUEST_BYTES": 2_000})
    server = make_server("127.0.0.1", 0, small)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def send(body: bytes) -> tuple[int, str, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        try:
            conn.request("POST", "/api/v1/auth/token", body=iter([body[:1000], body[1000:]]), encode_chunked=True,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type"), json.loads(resp.read())
        finally:
            conn.close()

    try:
        before = _snapshot(connection)
        login = {"username": "u" * 321, "password": "p"}  # refused by the schema, before any query
        status, mimetype, body = send(json.dumps(login).encode() + b" " * 2_500)
        assert (status, mimetype, body["status"]) == (413, PROBLEM, 413)
        status, mimetype, body = send(json.dumps({**login, "password": "p" * 1_500}).encode())
        assert (status, mimetype) == (422, PROBLEM) and "username" in body["errors"]  # read whole, under the limit
        assert _snapshot(connection) == before
    finally:
        server.shutdown()
        thread.join()


# ---- POST /api/v1/projects/{id}/batches -----------------------------------------------------------------


def _publish(client, ctx: Ctx, body: Any, headers: dict[str, str] | None = None):
    return client.post(f"{ctx.url}/batches", json=body, headers={**ctx.headers, **(headers or {})})


def test_batch_with_unknown_gold_or_published_ids_names_each_and_publishes_nothing(client, connection, ctx):
    before = _snapshot(connection)
    body = {"item_ids": [ctx.plain[0], 99_999_999, ctx.gold, ctx.published]}
    errors = _errors_at(_problem(_publish(client, ctx, body), 422), "item_ids")
    assert set(errors) == {"99999999", str(ctx.gold), str(ctx.published)}
    assert _snapshot(connection) == before  # the one valid id was not published either


def test_batch_with_unknown_external_ids(client, connection, ctx):
    before = _snapshot(connection)
    errors = _errors_at(_problem(_publish(client, ctx, {"external_ids": ["it1", "nope"]}), 422), "external_ids")
    assert set(errors) == {"nope"}
    assert _snapshot(connection) == before


def test_batch_with_another_projects_item_ids(client, session, clock, connection, ctx):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    other = project(session, owner, now=clock())
    items(session, other, 1, now=clock(), prefix="theirs")
    theirs = session.scalar(select(Item.id).where(Item.project_id == other.id))
    session.commit()
    before = _snapshot(connection)
    _errors_at(_problem(_publish(client, ctx, {"item_ids": [theirs]}), 422), "item_ids", str(theirs))
    assert _snapshot(connection) == before


BATCH_CASES = [
    ("both selectors", {"item_ids": [1], "external_ids": ["it1"]}, ("external_ids",)),
    ("unknown field", {"items": [1]}, ("items",)),
    ("item_ids a string", {"item_ids": "1,2"}, ("item_ids",)),
    ("item_ids an object", {"item_ids": {"1": True}}, ("item_ids",)),
    ("item_ids of strings", {"item_ids": ["1"]}, ("item_ids", "0")),
    ("item_ids of floats", {"item_ids": [1.5]}, ("item_ids", "0")),
    ("item_ids of booleans", {"item_ids": [True]}, ("item_ids", "0")),
    ("item_ids null", {"item_ids": None}, ("item_ids",)),
    ("item_ids empty", {"item_ids": []}, ("item_ids",)),
    ("external_ids of numbers", {"external_ids": [1]}, ("external_ids", "0")),
    ("external_id empty", {"external_ids": [""]}, ("external_ids", "0")),
    ("external_ids empty", {"external_ids": []}, ("external_ids",)),
    ("name a number", {"name": 5}, ("name",)),
    ("name too long", {"name": "n" * 201}, ("name",)),
    ("body a list", [1, 2], ("_schema",)),
    ("item id beyond 32 bits", {"item_ids": [2**31]}, ("item_ids",)),
    ("item id beyond 64 bits", {"item_ids": [2**64]}, ("item_ids",)),
    ("item id beyond 100 bits", {"item_ids": [10**30]}, ("item_ids",)),
]


def test_batch_rejects_bad_fields(client, connection, ctx, subtests):
    for name, body, path in BATCH_CASES:
        with subtests.test(msg=name):
            before = _snapshot(connection)
            _errors_at(_problem(_publish(client, ctx, body), 422), *path)
            assert _snapshot(connection) == before


def test_batch_rejects_a_bad_idempotency_key_or_broken_json(client, connection, ctx, subtests):
    for key in ("", "k" * 256, "a\x00b"):
        with subtests.test(msg=f"Idempotency-Key {key[:5]!r} of {len(key)} characters"):
            before = _snapshot(connection)
            _errors_at(_problem(_publish(client, ctx, {}, {"Idempotency-Key": key}), 422), "Idempotency-Key")
            assert _snapshot(connection) == before
    for raw in ['{"item_ids": [', "item_ids=1", '{"item_ids": [NaN]}']:
        with subtests.test(msg=repr(raw)):
            before = _snapshot(connection)
            _problem(client.post(f"{ctx.url}/batches", data=raw,
                                 headers={**ctx.headers, "Content-Type": "application/json"}))
            assert _snapshot(connection) == before


def test_batch_body_that_is_not_json_is_refused_not_ignored(client, connection, ctx, subtests):
    """A body the API cannot read must not count as {} -- which means 'publish every unpublished item'."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        with subtests.test(msg=content_type):
            fresh = _import(client, ctx, _ok(1, f"fresh-{content_type}-"))  # so "publish everything" has work
            assert fresh.status_code == 201
            before = _snapshot(connection)
            raw = json.dumps({"item_ids": [ctx.plain[0]]})
            _problem(client.post(f"{ctx.url}/batches", data=raw,
                                 headers={**ctx.headers, "Content-Type": content_type}))
            assert _snapshot(connection) == before


# ---- query and path parameters --------------------------------------------------------------------------


QUERY_CASES = [
    ("", "limit=0", "limit"), ("", "limit=-1", "limit"), ("", "limit=abc", "limit"), ("", "limit=1001", "limit"),
    ("", "limit=1.5", "limit"), ("", "after=abc", "after"), ("/items", "gold=maybe", "gold"),
    ("/items", "batch_id=x", "batch_id"), ("/items", "limit=0", "limit"), ("/answers", "worker_id=1e3", "worker_id"),
    ("/answers/export", "format=xml", "format"), ("/answers/export", "batch_id=", "batch_id"),
]


def test_bad_query_parameters_are_422_with_the_field(client, ctx, subtests):
    for sub, query, field in QUERY_CASES:
        url = f"{PROJECTS}?{query}" if not sub else f"{ctx.url}{sub}?{query}"
        with subtests.test(msg=url):
            _errors_at(_problem(client.get(url, headers=ctx.headers), 422), field)


def test_out_of_range_integers_in_the_query_are_never_500(client, ctx, subtests):
    for url in (f"{PROJECTS}?after={10**30}", f"{PROJECTS}?after={2**31}", f"{ctx.url}/items?batch_id={2**63}",
                f"{ctx.url}/answers?item_id={-(2**64)}", f"{ctx.url}/answers?worker_id={2**31}"):
        with subtests.test(msg=url):
            resp = client.get(url, headers=ctx.headers)
            assert resp.status_code < 500, resp.get_data(as_text=True)
            if resp.status_code >= 400:
                _problem(resp, 422)


def test_out_of_range_ids_in_the_path_are_404(client, ctx, subtests):
    for big in (2**31, 2**63, 10**30):
        for url in (f"{PROJECTS}/{big}", f"{ctx.url}/batches/{big}", f"{ctx.url}/items/{big}",
                    f"{ctx.url}/guidelines/{big}"):
            with subtests.test(msg=url):
                _problem(client.get(url, headers=ctx.headers), 404)


# ---- properties: arbitrary JSON never makes a 500 ------------------------------------------------------


PROJECT_FIELDS = sorted(ProjectCreateSchema().fields)
LABEL_FIELDS = sorted(LabelSchemaSchema().fields)
CATEGORY_FIELDS = ["key", "name", "description", "example"]
TEXT_FIELDS = ["title", "description", "instructions", "currency"]

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
edge_values = st.sampled_from([0, -1, 1, 30, 60, 2**31, 2**63, -(2**63) - 1, 10**30, 0.5, 12.0, 1e308, "", " ",
                               "USD", "usd", "USD\n", "0.05", "0.0501", "NaN", "x" * 201, [], {}, None, True])
values = json_values | edge_values
any_text = st.text(max_size=30) | st.sampled_from(["\x00", "nul \x00 inside", "\u200b", "\ufeff", "USD\n", "\r\n"])


@st.composite
def mutated_payloads(draw: st.DrawFn, keep: float = 1.0) -> dict[str, Any]:
    """A valid project payload with one to three fields set to arbitrary values, deleted or added."""
    body = copy.deepcopy(project_payload())
    if keep < 1.0:
        body = {k: v for k, v in body.items() if draw(st.booleans())}
    for _ in range(draw(st.integers(1, 3))):
        label = body.get("label_schema")
        where = draw(st.sampled_from(["project", "label_schema", "category", "text"]))
        if where == "text":  # any text at all in a free-text field (or a category's name) must be stored or refused
            if isinstance(label, dict) and isinstance(label.get("categories"), list) and label["categories"] \
                    and isinstance(label["categories"][0], dict) and draw(st.booleans()):
                label["categories"][0]["name"] = draw(any_text.filter(bool))
            else:
                body[draw(st.sampled_from(TEXT_FIELDS))] = draw(any_text)
            continue
        if where == "category" and isinstance(label, dict) and isinstance(label.get("categories"), list) \
                and label["categories"] and isinstance(label["categories"][0], dict):
            target, names = draw(st.sampled_from(label["categories"])), CATEGORY_FIELDS
        elif where == "label_schema" and isinstance(label, dict):
            target, names = label, LABEL_FIELDS
        else:
            target, names = body, PROJECT_FIELDS
        key = draw(st.sampled_from(names) | st.text(min_size=1, max_size=8))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(values)
    return body


PROPERTY_SETTINGS = settings(max_examples=80, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_response(resp, connection: Connection, before: dict[str, Any]) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code >= 400:
        body = _problem(resp)
        assert isinstance(body["status"], int) and isinstance(body["title"], str)
        assert _snapshot(connection) == before, "a rejected request wrote to the database"


@PROPERTY_SETTINGS
@given(body=json_values | mutated_payloads())
def test_property_create_project_never_500(client, connection, ctx, body):
    before = _snapshot(connection)
    _check_response(client.post(PROJECTS, json=body, headers=ctx.headers), connection, before)


@PROPERTY_SETTINGS
@given(body=json_values | mutated_payloads(keep=0.5) | st.dictionaries(st.sampled_from(PROJECT_FIELDS), values))
def test_property_patch_project_never_500(client, connection, ctx, body):
    before = _snapshot(connection)
    _check_response(client.patch(ctx.url, json=body, headers=ctx.headers), connection, before)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_property_publish_batch_never_500(client, connection, ctx, data):
    known = [*ctx.plain, ctx.gold, ctx.published]
    ids = st.sampled_from(known) | st.integers() | st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30])
    external = st.sampled_from(["it0", "it1", "it2", "it3", "it-gold0"]) | st.text(max_size=10)
    selectors = st.fixed_dictionaries({"item_ids": st.lists(ids, min_size=1, max_size=5)},
                                      optional={"name": any_text}) \
        | st.fixed_dictionaries({"external_ids": st.lists(external, min_size=1, max_size=5)},
                                optional={"name": any_text})
    anything = st.fixed_dictionaries({}, optional={"name": st.text(max_size=210) | values,
                                                   "item_ids": st.lists(ids, max_size=5) | values,
                                                   "external_ids": st.lists(external, max_size=5) | values,
                                                   "colour": values})
    body = data.draw(json_values | selectors | anything, label="body")
    before = _snapshot(connection)
    resp = client.post(f"{ctx.url}/batches", json=body, headers=ctx.headers)
    _check_response(resp, connection, before)
    if resp.status_code == 201:  # a real publish: exactly its items, never gold
        batch_id = resp.get_json()["id"]
        published = connection.execute(select(Item.is_gold).where(Item.batch_id == batch_id)).scalars().all()
        assert len(published) == resp.get_json()["item_count"] > 0 and not any(published)
