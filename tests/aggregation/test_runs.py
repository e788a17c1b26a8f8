"""Aggregation runs through the API: queued as a job (RQ when Redis is configured, inline otherwise), stored,
read, exported; inputs exclude blocked workers' answers; gold reported apart."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import func, select, update

from aggregation import service as agg
from aggregation.engine import aggregate
from aggregation.jobs import execute_run
from aggregation.methods import Prior
from aggregation.models import AggregatedLabel, AggregationRun
from base.identity import Role
from edge import jobs
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Answer, AssignmentStatus, Item
from tests.conftest import REDIS_URL
from tests.factories import account, answer, auth, items, jsonl, project
from workers.models import Account

# Five items, five workers (w0..w4); w4 is blocked and answers "neu" everywhere.
VOTES = {
    "it0": ["pos", "pos", "pos", "neg"],  # pos 3/4
    "it1": ["neg", "neg", "pos", "neg"],  # neg 3/4
    "it2": ["neu", "neu", "neu", "neu"],  # neu 4/4
    "it3": ["pos", "neg", "pos", "pos"],  # pos 3/4
    "it4": ["neg", "neg", "neg", "pos"],  # neg 3/4
}
GOLD = {"it-gold0": ["pos", "pos", "pos", "neg"], "it-gold1": ["pos", "neg", "neg", "neg"]}  # known: pos, pos


@pytest.fixture
def crowd(session, clock):
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    items(session, proj, 5, now=clock(), gold=2)
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    workers = [account(session, Role.WORKER, now=clock())[0] for _ in range(5)]
    by_ext = {i.external_id: i for i in session.scalars(select(Item).where(Item.project_id == proj.id))}
    for ext, votes in {**VOTES, **GOLD}.items():
        for worker, value in zip(workers, [*votes, "neu"], strict=True):
            clock.advance(seconds=5)
            answer(session, by_ext[ext], worker, value, now=clock())
    blocked = workers[4]
    session.execute(update(Answer).where(Answer.worker_id == blocked.id).values(excluded_at=clock()))
    session.commit()
    return proj, token, workers, by_ext


def finish(app) -> None:
    """Run whatever the API queued (with Redis: a burst worker; without, jobs already ran inline)."""
    if app.config["REDIS_URL"]:
        jobs.work(app, burst=True)


def start(client, app, proj, token, **body):
    resp = client.post(f"/api/v1/projects/{proj.id}/aggregations", json=body, headers=auth(token))
    assert resp.status_code == 202, resp.get_json()
    finish(app)
    run = client.get(resp.headers["Location"], headers=auth(token)).get_json()
    return resp, run


def labels(client, proj, token, run_id, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    data = client.get(f"/api/v1/projects/{proj.id}/aggregations/{run_id}/labels?{q}", headers=auth(token))
    assert data.status_code == 200, data.get_json()
    return {row["external_id"]: row for row in data.get_json()["data"]}


def test_majority_vote_run_by_hand_excludes_blocked_workers_and_reports_gold_apart(client, app, crowd):
    proj, token, workers, _ = crowd
    resp, run = start(client, app, proj, token, method="mv")
    assert run["status"] == "succeeded" and run["method"] == "mv" and run["error"] is None
    assert run["classes"] == ["pos", "neg", "neu"]
    # The blocked worker's 7 answers are not inputs: 7 items x 4 workers.
    assert run["answers"] == 28 and run["items"] == 7 and run["workers"] == 4 and run["gold_items"] == 2
    assert run["gold_accuracy"] == pytest.approx(0.5)  # gold0 right (pos 3/4), gold1 wrong (neg 3/4)
    assert run["params"]["seed"] == 0 and run["started_at"] and run["finished_at"] and run["seconds"] >= 0
    real = labels(client, proj, token, run["id"], gold="false")
    assert {k: (v["label"], v["confidence"]) for k, v in real.items()} == {
        "it0": ("pos", 0.75), "it1": ("neg", 0.75), "it2": ("neu", 1.0), "it3": ("pos", 0.75), "it4": ("neg", 0.75)}
    assert all(v["answers"] == 4 and not v["is_gold"] and not v["tie"] for v in real.values())
    gold = labels(client, proj, token, run["id"], gold="true")
    assert set(gold) == {"it-gold0", "it-gold1"} and all(v["is_gold"] for v in gold.values())
    listed = client.get(f"/api/v1/projects/{proj.id}/aggregations", headers=auth(token)).get_json()
    assert [r["id"] for r in listed["data"]] == [run["id"]]


def test_gold_anchored_dawid_skene_keeps_known_answers(client, app, crowd):
    proj, token, *_ = crowd
    _, run = start(client, app, proj, token, method="ds-gold", max_iter=50)
    assert run["status"] == "succeeded" and run["gold_accuracy"] is None and run["iterations"] >= 1
    assert len(run["priors"]) == 3 and sum(run["priors"]) == pytest.approx(1, abs=1e-5)
    gold = labels(client, proj, token, run["id"], gold="true")
    assert {k: (v["label"], v["confidence"]) for k, v in gold.items()} == {"it-gold0": ("pos", 1.0),
                                                                          "it-gold1": ("pos", 1.0)}
    workers = client.get(f"/api/v1/projects/{proj.id}/aggregations/{run['id']}/workers",
                         headers=auth(token)).get_json()["data"]
    assert len(workers) == 4 and all(len(w["confusion"]) == 3 and len(w["confusion"][0]) == 3 for w in workers)
    assert all(sum(row) == pytest.approx(1, abs=1e-4) for w in workers for row in w["confusion"])
    assert all(0 <= w["accuracy"] <= 1 and w["answers"] == 7 for w in workers)


def test_weighted_vote_labels_the_clear_items(client, app, crowd):
    proj, token, *_ = crowd
    _, run = start(client, app, proj, token, method="wmv")
    real = labels(client, proj, token, run["id"], gold="false")
    assert {k: v["label"] for k, v in real.items()} == {"it0": "pos", "it1": "neg", "it2": "neu", "it3": "pos",
                                                       "it4": "neg"}
    assert all(0 < v["confidence"] <= 1 for v in real.values())


PRIOR = {"prior_correct": 3.0, "prior_wrong": 0.5, "prior_classes": 2.0}


@pytest.mark.parametrize(("method", "params"), [("mv", {}), ("wmv", {}), ("ds", {}), ("ds-gold", {}), ("onecoin", {}),
                                                ("ds", {**PRIOR, "tol": 1e-3, "posterior_tol": 0.0}),
                                                ("onecoin", PRIOR)])
def test_stored_labels_are_the_engines_on_the_same_inputs(client, app, crowd, session, method, params):
    proj, token, *_ = crowd
    _, run = start(client, app, proj, token, method=method, **params)
    inputs = agg.load_inputs(session, proj, agg.classes_of(proj))
    options = {**agg.DEFAULT_PARAMS, **params}
    prior = Prior(options["prior_correct"], options["prior_wrong"], options["prior_classes"])
    direct = aggregate(method, inputs.items, inputs.workers, inputs.labels, n_items=inputs.item_ids.size,
                       n_workers=inputs.worker_ids.size, n_classes=3, gold_items=inputs.gold_items,
                       gold_labels=inputs.gold_labels, tol=options["tol"], posterior_tol=options["posterior_tol"],
                       prior=prior)
    assert run["params"] == options
    assert (run["stop_reason"], run["log_likelihood"]) == (direct.result.stop_reason, pytest.approx(
        direct.result.log_likelihood) if direct.result.log_likelihood is not None else None)
    stored = {r.item_id: (r.label, r.confidence) for r in session.scalars(
        select(AggregatedLabel).where(AggregatedLabel.run_id == run["id"]))}
    assert stored == {int(i): (int(lab), pytest.approx(float(c), abs=1e-9)) for i, lab, c in zip(
        inputs.item_ids, direct.result.labels, direct.result.confidence, strict=True)}
    assert stored[min(stored)] is not None and run["iterations"] == direct.result.iterations


def test_export_csv_and_jsonl_hold_the_items_to_label(client, app, crowd):
    proj, token, *_ = crowd
    _, run = start(client, app, proj, token, method="mv")
    base = f"/api/v1/projects/{proj.id}/aggregations/{run['id']}/export"
    resp = client.get(f"{base}?format=csv", headers=auth(token))
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert list(rows[0]) == ["external_id", "label", "confidence", "answers", "method"]
    assert {r["external_id"]: (r["label"], float(r["confidence"]), int(r["answers"]), r["method"]) for r in rows} \
        == {"it0": ("pos", 0.75, 4, "mv"), "it1": ("neg", 0.75, 4, "mv"), "it2": ("neu", 1.0, 4, "mv"),
            "it3": ("pos", 0.75, 4, "mv"), "it4": ("neg", 0.75, 4, "mv")}
    lines = client.get(f"{base}?format=jsonl", headers=auth(token)).get_data(as_text=True).splitlines()
    assert sorted(json.loads(line)["external_id"] for line in lines) == ["it0", "it1", "it2", "it3", "it4"]
    gold = client.get(f"{base}?format=jsonl&gold=true", headers=auth(token)).get_data(as_text=True).splitlines()
    assert sorted(json.loads(line)["external_id"] for line in gold) == ["it-gold0", "it-gold1"]
    # The export ended its session: a write goes through at once (SQLite would wait on a held lock).
    assert client.post(f"/api/v1/projects/{proj.id}/aggregations", json={"method": "mv"},
                       headers=auth(token)).status_code == 202


def test_csv_label_export_escapes_external_ids_that_spreadsheets_would_run(client, app, session, clock):
    """OWASP's "CSV Injection": the requester's own external ids, sent on to whoever opens the labels."""
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), label_schema={"type": "rating", "min": -2, "max": 2})
    ids = ["=HYPERLINK(\"http://example.com\")", "@cmd", "-1", "+2", "plain"]
    import_items(session, project=proj, stream=io.BytesIO(jsonl([{"external_id": e, "data": {}} for e in ids])),
                 fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker, _ = account(session, Role.WORKER, now=clock())
    for item in session.scalars(select(Item).where(Item.project_id == proj.id)):
        answer(session, item, worker, -2, now=clock())
    _, run = start(client, app, proj, token, method="mv")
    base = f"/api/v1/projects/{proj.id}/aggregations/{run['id']}/export"
    rows = list(csv.DictReader(io.StringIO(client.get(f"{base}?format=csv", headers=auth(token)).get_data(
        as_text=True))))
    assert sorted((r["external_id"], r["label"], r["confidence"]) for r in rows) == sorted(
        [("'=HYPERLINK(\"http://example.com\")", "-2", "1.0"), ("'@cmd", "-2", "1.0"), ("-1", "-2", "1.0"),
         ("+2", "-2", "1.0"), ("plain", "-2", "1.0")])
    lines = client.get(f"{base}?format=jsonl", headers=auth(token)).get_data(as_text=True).splitlines()
    assert sorted(json.loads(line)["external_id"] for line in lines) == sorted(ids)


def test_idempotency_key_replays_the_same_run(client, app, crowd, session):
    proj, token, *_ = crowd
    headers = {**auth(token), "Idempotency-Key": "agg-1"}
    first = client.post(f"/api/v1/projects/{proj.id}/aggregations", json={"method": "ds"}, headers=headers)
    again = client.post(f"/api/v1/projects/{proj.id}/aggregations", json={"method": "ds"}, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json()["id"] == first.get_json()["id"]
    assert session.scalar(select(func.count()).select_from(AggregationRun)
                          .where(AggregationRun.project_id == proj.id)) == 1


def test_a_run_executes_once(client, app, crowd, session, clock):
    proj, token, *_ = crowd
    _, run = start(client, app, proj, token, method="mv")
    execute_run(session, run["id"], clock=clock)  # a job delivered twice
    count = session.scalar(select(func.count()).select_from(AggregatedLabel)
                           .where(AggregatedLabel.run_id == run["id"]))
    assert count == 7


def test_failed_run_says_why_and_has_no_results(client, app, session, clock):
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    items(session, proj, 2, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker = account(session, Role.WORKER, now=clock())[0]
    answer(session, session.scalars(select(Item).where(Item.project_id == proj.id)).first(), worker, "pos",
           now=clock())
    _, run = start(client, app, proj, token, method="ds-gold")
    assert run["status"] == "failed" and "gold" in run["error"]
    resp = client.get(f"/api/v1/projects/{proj.id}/aggregations/{run['id']}/labels", headers=auth(token))
    assert resp.status_code == 422 and resp.mimetype == "application/problem+json"
    assert client.get(f"/api/v1/projects/{proj.id}/aggregations/{run['id']}/export",
                      headers=auth(token)).status_code == 422


def test_bad_requests_change_nothing(client, crowd, session, clock):
    proj, token, workers, _ = crowd
    url = f"/api/v1/projects/{proj.id}/aggregations"
    for body in ({"method": "glad"}, {}, {"method": "ds", "max_iter": 0}, {"method": "ds", "tol": "x"},
                 {"method": "ds", "posterior_tol": -1}, {"method": "ds", "prior_wrong": 0},
                 {"method": "ds", "prior_correct": -0.5}, {"method": "ds", "prior_classes": 1e6},
                 {"method": "ds", "smoothing": 0.01}, {"method": "ds", "duplicates": "first"}):
        resp = client.post(url, json=body, headers=auth(token))
        assert resp.status_code == 422 and resp.mimetype == "application/problem+json", body
        assert resp.get_json()["errors"]
    text_project = project(session, session.get(Account, proj.owner_id), now=clock(), label_schema={"type": "text"})
    resp = client.post(f"/api/v1/projects/{text_project.id}/aggregations", json={"method": "mv"}, headers=auth(token))
    assert resp.status_code == 422 and "single_choice" in resp.get_json()["detail"]
    assert session.scalar(select(func.count()).select_from(AggregationRun)) == 0


def test_only_the_owner_runs_and_reads(client, app, crowd, session, clock):
    proj, token, *_ = crowd
    _, run = start(client, app, proj, token, method="mv")
    _, other = account(session, Role.REQUESTER, now=clock())
    _, worker = account(session, Role.WORKER, now=clock())
    _, ops = account(session, Role.OPS, now=clock())
    base = f"/api/v1/projects/{proj.id}/aggregations"
    assert client.get(f"{base}/{run['id']}", headers=auth(other)).status_code == 404
    assert client.post(base, json={"method": "mv"}, headers=auth(other)).status_code == 404
    assert client.get(f"{base}/{run['id']}/labels", headers=auth(worker)).status_code == 403
    assert client.get(f"{base}/{run['id']}", headers=auth(ops)).status_code == 200
    assert client.post(base, json={"method": "mv"}, headers=auth(ops)).status_code == 403


@pytest.mark.skipif(not REDIS_URL, reason="the queue exists only with Redis (CROWDMARKET_REDIS_URL); CI sets it")
def test_with_redis_a_run_waits_in_the_queue_for_a_worker(client, app, crowd):
    proj, token, *_ = crowd
    resp = client.post(f"/api/v1/projects/{proj.id}/aggregations", json={"method": "mv"}, headers=auth(token))
    assert resp.status_code == 202 and resp.get_json()["status"] == "queued"
    assert client.get(resp.headers["Location"], headers=auth(token)).get_json()["status"] == "queued"
    jobs.work(app, burst=True)
    assert client.get(resp.headers["Location"], headers=auth(token)).get_json()["status"] == "succeeded"


def test_rating_projects_aggregate_their_values(client, app, session, clock):
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), label_schema={"type": "rating", "min": 1, "max": 5})
    items(session, proj, 2, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    workers = [account(session, Role.WORKER, now=clock())[0] for _ in range(3)]
    by_ext = {i.external_id: i for i in session.scalars(select(Item).where(Item.project_id == proj.id))}
    for ext, values in {"it0": [4, 4, 2], "it1": [1, 5, 5]}.items():
        for worker, value in zip(workers, values, strict=True):
            answer(session, by_ext[ext], worker, value, now=clock())
    _, run = start(client, app, proj, token, method="mv")
    assert run["classes"] == [1, 2, 3, 4, 5]
    assert {k: (v["label"], v["confidence"]) for k, v in labels(client, proj, token, run["id"]).items()} == {
        "it0": (4, pytest.approx(2 / 3)), "it1": (5, pytest.approx(2 / 3))}


def test_dawid_skene_runs_record_why_they_stopped(client, app, crowd):
    proj, token, *_ = crowd
    _, converged = start(client, app, proj, token, method="ds")
    assert converged["stop_reason"] == "converged" and converged["iterations"] < 100
    assert converged["log_likelihood"] < 0
    _, cut = start(client, app, proj, token, method="ds", max_iter=1)
    assert (cut["iterations"], cut["stop_reason"]) == (1, "max_iter")
    _, vote = start(client, app, proj, token, method="mv")
    assert vote["stop_reason"] is None and vote["log_likelihood"] is None


def test_repeated_answers_fail_the_run_instead_of_counting_twice(client, app, crowd, session, clock):
    """The service stores one answer per worker and item (see the next test), so a run has no choice of which
    repeat to keep. Should the database ever hold repeats, a run refuses them, naming how many, rather than count
    a worker twice. Made here as the service never would: an answer on a returned assignment of the same HIT."""
    proj, token, workers, by_ext = crowd
    for ext in ("it0", "it1"):
        answer(session, by_ext[ext], workers[0], "neu", now=clock(), status=AssignmentStatus.RETURNED)
    _, run = start(client, app, proj, token, method="ds")
    assert run["status"] == "failed" and run["error"].startswith("2 answer(s) repeat a worker's earlier answer")
    assert session.scalar(select(func.count()).select_from(AggregatedLabel)
                          .where(AggregatedLabel.run_id == run["id"])) == 0
    # The quality report, which reads the same answers, still answers.
    assert client.get(f"/api/v1/projects/{proj.id}/quality-report", headers=auth(token)).status_code == 200


def test_no_path_through_the_service_repeats_an_answer(client, app, session, clock):
    """Why runs take no `duplicates` choice: whatever a worker does (return a task, let a lease lapse, be blocked
    while others take the reopened slots, be unblocked and keep working), each worker ends with at most one
    answer per item, and a run counts every stored answer once."""
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=1, assignments_per_item=2, gold_rate=0)
    items(session, proj, 4, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    (bob, bob_token), *others = [account(session, Role.WORKER, now=clock()) for _ in range(3)]
    _, ops = account(session, Role.OPS, now=clock())

    def lease(worker_token):
        resp = client.post("/api/v1/work/next", query_string={"project_id": proj.id}, headers=auth(worker_token))
        return resp.get_json() if resp.status_code == 200 else None

    def answer_task(worker_token, task):
        body = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]}
        assert client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=body,
                           headers=auth(worker_token)).status_code == 200

    task = lease(bob_token)
    client.post(f"/api/v1/assignments/{task['assignment_id']}/return", headers=auth(bob_token))
    answer_task(bob_token, lease(bob_token))  # the returned HIT may come straight back
    lapsed = lease(bob_token)
    clock.advance(minutes=20)  # the lease lapses; a late return ends it (issue #11 point 3 is about the rest)
    client.post(f"/api/v1/assignments/{lapsed['assignment_id']}/return", headers=auth(bob_token))
    answer_task(bob_token, lease(bob_token))
    flag = client.post("/api/v1/ops/flags", json={"worker_id": bob.id, "project_id": proj.id, "note": "check"},
                       headers=auth(ops)).get_json()["id"]
    client.post(f"/api/v1/ops/flags/{flag}/block", json={"scope": "project", "reason": "r"}, headers=auth(ops))
    for _, other_token in others:  # the reopened slots go to others
        while (task := lease(other_token)) is not None:
            answer_task(other_token, task)
    client.post(f"/api/v1/ops/flags/{flag}/unblock", json={"reason": "r"}, headers=auth(ops))
    while (task := lease(bob_token)) is not None:
        answer_task(bob_token, task)
    pairs = session.execute(select(Answer.worker_id, Answer.item_id).where(Answer.project_id == proj.id)).all()
    assert len(pairs) == len(set(pairs)) and sum(worker == bob.id for worker, _ in pairs) >= 2
    _, run = start(client, app, proj, token, method="ds")
    assert run["status"] == "succeeded" and run["answers"] == len(pairs)
