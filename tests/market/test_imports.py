"""Item import: formats, gold, atomicity, idempotent re-import, error reporting, the HTTP and CLI edges."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from base.errors import InvalidInput
from base.identity import Role
from base.uow import UnitOfWork
from market.catalogue.imports import CHUNK, import_items
from market.catalogue.models import Item
from tests.factories import account, auth, jsonl, project


@pytest.fixture
def owner(session, clock):
    return account(session, Role.REQUESTER, now=clock())


@pytest.fixture
def proj(session, clock, owner):
    return project(session, owner[0], now=clock())


def count(session, proj, gold=None):
    stmt = select(func.count()).select_from(Item).where(Item.project_id == proj.id)
    if gold is not None:
        stmt = stmt.where(Item.is_gold.is_(gold))
    return session.scalar(stmt)


def run(session, proj, clock, data: bytes, fmt="jsonl"):
    return import_items(session, project=proj, stream=io.BytesIO(data), fmt=fmt, now=clock())


def test_jsonl_import_with_gold_and_priority(session, proj, clock):
    result = run(session, proj, clock, jsonl([
        {"external_id": "a", "data": {"text": "fine"}},
        {"external_id": 7, "data": {"text": "numeric id"}, "priority": 5},
        {"external_id": "g", "data": {"text": "awful"}, "gold": "neg", "explanation": "says awful"},
    ]))
    assert (result.lines, result.created, result.skipped, result.gold) == (3, 3, 0, 1)
    gold = session.scalar(select(Item).where(Item.external_id == "g"))
    assert gold.is_gold and gold.gold_answer == "neg" and gold.gold_explanation == "says awful"
    assert session.scalar(select(Item.priority).where(Item.external_id == "7")) == 5
    plain = session.scalar(select(Item).where(Item.external_id == "a"))
    assert plain.gold_answer is None and not plain.is_gold


def test_reimporting_the_same_file_adds_nothing(session, proj, clock):
    data = jsonl([{"external_id": f"x{i}", "data": {}} for i in range(10)])
    assert run(session, proj, clock, data).created == 10
    again = run(session, proj, clock, data)
    assert (again.created, again.skipped) == (0, 10)
    assert count(session, proj) == 10


def test_duplicate_ids_within_a_file_keep_the_first(session, proj, clock):
    result = run(session, proj, clock, jsonl([{"external_id": "d", "data": {"v": 1}},
                                              {"external_id": "d", "data": {"v": 2}}]))
    assert (result.created, result.skipped) == (1, 1)
    assert session.scalar(select(Item.data).where(Item.external_id == "d")) == {"v": 1}


def test_one_bad_line_after_many_chunks_imports_nothing(session, proj, clock):
    records = [{"external_id": f"ok{i}", "data": {"i": i}} for i in range(CHUNK * 2 + 5)]
    body = jsonl(records) + b'{"external_id": "bad", "data": "not an object"}\n'
    with pytest.raises(InvalidInput) as exc, UnitOfWork(session):  # as the edge runs it: the refusal rolls back
        run(session, proj, clock, body)
    assert exc.value.errors == [{"line": CHUNK * 2 + 6, "field": "data", "message": "data must be a JSON object"}]
    assert count(session, proj) == 0


def test_errors_list_the_first_100_lines_and_count_all(session, proj, clock):
    body = b"".join(b"not json\n" for _ in range(150))
    with pytest.raises(InvalidInput) as exc:
        run(session, proj, clock, body)
    assert len(exc.value.errors) == 100
    assert exc.value.extra["error_count"] == 150
    assert [e["line"] for e in exc.value.errors[:3]] == [1, 2, 3]


@pytest.mark.parametrize(("line", "field", "fragment"), [
    ({"data": {}}, "external_id", "external_id is required"),
    ({"external_id": "", "data": {}}, "external_id", "non-empty"),
    ({"external_id": "a" * 256, "data": {}}, "external_id", "255"),
    ({"external_id": "a"}, "data", "JSON object"),
    ({"external_id": "a", "data": {}, "gold": "maybe"}, "gold", "unknown label key 'maybe'"),
    ({"external_id": "a", "data": {}, "gold": 3}, "gold", "category key"),
    ({"external_id": "a", "data": {}, "explanation": "why"}, "explanation", "only allowed on gold"),
    ({"external_id": "a", "data": {}, "priority": 1.5}, "priority", "whole number"),
    ({"external_id": "a", "data": {}, "colour": "red"}, "colour", "unknown field"),
])
def test_bad_jsonl_lines_are_reported_with_field(session, proj, clock, line, field, fragment):
    with pytest.raises(InvalidInput) as exc:
        run(session, proj, clock, jsonl([{"external_id": "fine", "data": {}}, line]))
    (error,) = exc.value.errors
    assert error["line"] == 2 and error["field"] == field and fragment in error["message"]
    assert count(session, proj) == 0


def test_csv_columns_become_data_and_reserved_columns_are_understood(session, proj, clock):
    body = ("\ufeffexternal_id,text,lang,gold,explanation,priority\n"
            "r1,\"Great, really\",en,,,\n"
            "r2,Terrible,en,neg,plainly bad,3\n").encode()
    result = run(session, proj, clock, body, fmt="csv")
    assert (result.created, result.gold) == (2, 1)
    r1 = session.scalar(select(Item).where(Item.external_id == "r1"))
    assert r1.data == {"text": "Great, really", "lang": "en"} and not r1.is_gold
    r2 = session.scalar(select(Item).where(Item.external_id == "r2"))
    assert (r2.gold_answer, r2.gold_explanation, r2.priority) == ("neg", "plainly bad", 3)


def test_csv_errors(session, proj, clock):
    with pytest.raises(InvalidInput) as exc:
        run(session, proj, clock, b"text\nhello\n", fmt="csv")
    assert exc.value.errors[0]["field"] == "external_id"
    with pytest.raises(InvalidInput) as exc:
        run(session, proj, clock, b"external_id,text\na,1\nb,2,3\nc\n", fmt="csv")
    assert [e["line"] for e in exc.value.errors] == [3, 4]
    assert count(session, proj) == 0


@pytest.mark.parametrize(("data", "line", "fragment"), [
    (b'external_id,text\na,"open quote\nb,two\nc,three\n', 2, "never closed"),
    (b'external_id,text\na,one\nb,two\nc,"open\nd,four\n', 4, "never closed"),
    (b'external_id,"text\na,b\n', 1, "never closed"),
    (b'external_id,text\na,ok\nb,"x"y\nc,z\n', 3, "broken CSV"),
], ids=["open on the first row", "open further down", "open in the header", "text after a closing quote"])
def test_a_csv_quote_left_open_or_misplaced_is_an_error_at_its_line(session, proj, clock, data, line, fragment):
    """A quote left open took the rest of the file into one item's field, and the import answered 201."""
    with pytest.raises(InvalidInput) as exc:
        run(session, proj, clock, data, fmt="csv")
    assert exc.value.errors[0]["line"] == line and fragment in exc.value.errors[0]["message"], exc.value.errors
    assert count(session, proj) == 0


def test_quoted_csv_fields_may_span_lines(session, proj, clock):
    result = run(session, proj, clock, b'external_id,text\na,"two\nlines, one ""field"""\nb,x\n', fmt="csv")
    assert result.created == 2
    data = dict(session.execute(select(Item.external_id, Item.data).where(Item.project_id == proj.id)).all())
    assert data == {"a": {"text": 'two\nlines, one "field"'}, "b": {"text": "x"}}


def test_multi_choice_and_rating_gold_from_csv(session, clock, owner):
    multi = project(session, owner[0], now=clock(), label_schema={
        "type": "multi_choice", "categories": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"},
                                               {"key": "c", "name": "C"}]})
    run(session, multi, clock, b"external_id,gold\nm1,c|a\n", fmt="csv")
    assert session.scalar(select(Item.gold_answer).where(Item.project_id == multi.id)) == ["a", "c"]
    rating = project(session, owner[0], now=clock(), label_schema={"type": "rating", "min": 1, "max": 5})
    run(session, rating, clock, b"external_id,gold\nr1,4\n", fmt="csv")
    assert session.scalar(select(Item.gold_answer).where(Item.project_id == rating.id)) == 4
    with pytest.raises(InvalidInput):
        run(session, rating, clock, b"external_id,gold\nr2,9\n", fmt="csv")


def test_invalid_utf8_and_empty_files(session, proj, clock):
    with pytest.raises(InvalidInput) as exc:
        run(session, proj, clock, b'{"external_id": "a", "data": {}}\n'
                                  b'{"external_id": "b", "data": {"t": "\xff\xfe"}}\n')
    assert exc.value.errors[0]["line"] == 2 and "UTF-8" in exc.value.errors[0]["message"]
    with pytest.raises(InvalidInput, match="no items"):
        run(session, proj, clock, b"\n\n")
    assert count(session, proj) == 0


def test_http_import_raw_body_and_multipart(client, session, proj, owner):
    body = jsonl([{"external_id": "h1", "data": {}}, {"external_id": "h2", "data": {}}])
    resp = client.post(f"/api/v1/projects/{proj.id}/items", data=body, headers=auth(owner[1]),
                       content_type="application/x-ndjson")
    assert resp.status_code == 201
    assert resp.get_json() == {"lines": 2, "created": 2, "skipped": 0, "gold": 0}
    resp = client.post(f"/api/v1/projects/{proj.id}/items", headers=auth(owner[1]),
                       data={"file": (io.BytesIO(b"external_id,text\nh3,x\nh1,y\n"), "more.csv")})
    assert resp.status_code == 201
    assert resp.get_json()["created"] == 1 and resp.get_json()["skipped"] == 1
    resp = client.post(f"/api/v1/projects/{proj.id}/items", data=body, headers=auth(owner[1]),
                       content_type="application/x-ndjson")
    assert resp.status_code == 200 and resp.get_json()["created"] == 0


def test_http_import_errors_are_problems(client, session, proj, owner):
    resp = client.post(f"/api/v1/projects/{proj.id}/items", data=b'{"external_id": "a", "data": {}}\n{oops\n',
                       headers=auth(owner[1]), content_type="application/x-ndjson")
    assert resp.status_code == 422
    assert resp.mimetype == "application/problem+json"
    problem = resp.get_json()
    assert problem["error_count"] == 1 and problem["errors"][0]["line"] == 2
    resp = client.post(f"/api/v1/projects/{proj.id}/items", data=b"x", headers=auth(owner[1]),
                       content_type="application/octet-stream")
    assert resp.status_code == 422 and "format" in resp.get_json()["errors"]
    resp = client.post(f"/api/v1/projects/{proj.id}/items", headers=auth(owner[1]),
                       data={"other": (io.BytesIO(b"external_id\nq\n"), "x.csv")})
    assert resp.status_code == 422 and "file" in resp.get_json()["errors"]
    assert count(session, proj) == 0


def test_http_import_over_the_limit_is_413_and_imports_nothing(app, session, proj, owner):
    app.config["MAX_IMPORT_BYTES"] = 500
    body = jsonl([{"external_id": f"z{i}", "data": {"text": "x" * 20}} for i in range(40)])
    resp = app.test_client().post(f"/api/v1/projects/{proj.id}/items?format=jsonl", data=body,
                                  headers=auth(owner[1]))
    assert resp.status_code == 413
    assert resp.mimetype == "application/problem+json"
    assert count(session, proj) == 0


def test_import_larger_than_the_json_limit_is_accepted(app, session, proj, owner):
    app.config["MAX_REQUEST_BYTES"] = app.config["MAX_CONTENT_LENGTH"] = 1000
    records = [{"external_id": f"big{i}", "data": {"text": "y" * 50}} for i in range(CHUNK + 10)]
    resp = app.test_client().post(f"/api/v1/projects/{proj.id}/items", data=jsonl(records),
                                  headers=auth(owner[1]), content_type="application/x-ndjson")
    assert resp.status_code == 201, resp.get_json()
    assert count(session, proj) == CHUNK + 10


def test_listing_items_shows_gold_to_the_requester(client, session, proj, owner, clock):
    run(session, proj, clock, jsonl([{"external_id": "p", "data": {"t": 1}},
                                     {"external_id": "g", "data": {"t": 2}, "gold": "pos"}]))
    resp = client.get(f"/api/v1/projects/{proj.id}/items?limit=1", headers=auth(owner[1]))
    page = resp.get_json()
    assert len(page["data"]) == 1 and page["next_after"] == page["data"][0]["id"]
    resp = client.get(f"/api/v1/projects/{proj.id}/items?after={page['next_after']}", headers=auth(owner[1]))
    assert [i["external_id"] for i in resp.get_json()["data"]] == ["g"]
    gold = client.get(f"/api/v1/projects/{proj.id}/items?gold=true", headers=auth(owner[1])).get_json()
    assert [(i["external_id"], i["gold"]) for i in gold["data"]] == [("g", "pos")]
    item_id = gold["data"][0]["id"]
    one = client.get(f"/api/v1/projects/{proj.id}/items/{item_id}", headers=auth(owner[1])).get_json()
    assert one["is_gold"] and json.dumps(one["data"]) == '{"t": 2}'
