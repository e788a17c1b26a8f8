"""Qualification types and their tests through the API: define, take, score, grant, revoke; one behaviour per test."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from base.identity import Role
from qualification import service
from qualification.models import AttemptStatus, QualificationAttempt, QualificationGrant, QualificationType
from tests.factories import SENTIMENT, account, auth

PROBLEM = "application/problem+json"
TYPES = "/api/v1/qualifications"
TESTS = "/api/v1/qualification-tests"
ATTEMPTS = "/api/v1/qualification-attempts"
KNOWN = ["pos", "neg", "neu"]


def type_payload(**overrides):
    body = {"name": "Sentiment screener", "description": "Three reviews to label.", "label_schema": SENTIMENT,
            "questions": [{"data": {"text": f"review {n}"}, "answer": a} for n, a in enumerate(KNOWN)],
            "passing_score": 70, "test_duration_seconds": 600, "retry_delay_seconds": 3600, "max_attempts": 3}
    body.update(overrides)
    return body


@pytest.fixture
def market(client, session, clock):
    owner, owner_token = account(session, Role.REQUESTER, now=clock())
    workers = [account(session, Role.WORKER, now=clock()) for _ in range(2)]
    created = client.post(TYPES, json=type_payload(), headers=auth(owner_token))
    assert created.status_code == 201, created.get_json()
    return {"owner": owner, "owner_token": owner_token, "type": created.get_json(), "workers": workers}


def start(client, token, type_id):
    return client.post(f"{TESTS}/{type_id}/attempts", headers=auth(token))


def submit(client, token, attempt, values):
    answers = [{"question_id": q["id"], "answer": v} for q, v in zip(attempt["questions"], values, strict=True)]
    return client.post(f"{ATTEMPTS}/{attempt['id']}/submit", json={"answers": answers}, headers=auth(token))


def test_requester_defines_a_test_and_sees_its_known_answers(market):
    qtype = market["type"]
    assert qtype["passing_score"] == 70 and qtype["max_attempts"] == 3 and qtype["auto_grant"] is True
    assert [q["answer"] for q in qtype["questions"]] == KNOWN
    assert [q["position"] for q in qtype["questions"]] == [0, 1, 2]


def test_a_known_answer_that_does_not_fit_the_schema_is_422_and_creates_nothing(client, session, market):
    bad = type_payload(name="Other", questions=[{"data": {}, "answer": "pos"}, {"data": {}, "answer": "maybe"}])
    resp = client.post(TYPES, json=bad, headers=auth(market["owner_token"]))
    assert resp.status_code == 422 and resp.mimetype == PROBLEM
    assert list(resp.get_json()["errors"]["questions"]) == ["1"]
    assert session.scalar(select(QualificationType.id).where(QualificationType.name == "Other")) is None


def test_names_are_unique_per_requester(client, session, clock, market):
    again = client.post(TYPES, json=type_payload(), headers=auth(market["owner_token"]))
    assert again.status_code == 409
    _, other_token = account(session, Role.REQUESTER, now=clock())
    assert client.post(TYPES, json=type_payload(), headers=auth(other_token)).status_code == 201


@pytest.mark.parametrize("field,value", [("passing_score", 101), ("passing_score", -1), ("questions", []),
                                         ("test_duration_seconds", 0), ("max_attempts", 0), ("name", "")])
def test_bad_settings_are_422(client, market, field, value):
    resp = client.post(TYPES, json=type_payload(**{"name": "x", field: value}), headers=auth(market["owner_token"]))
    assert resp.status_code == 422 and field in resp.get_json()["errors"]


def test_types_are_private_to_their_requester_and_readable_by_ops(client, session, clock, market):
    type_id = market["type"]["id"]
    _, other_token = account(session, Role.REQUESTER, now=clock())
    _, ops_token = account(session, Role.OPS, now=clock())
    _, worker_token = market["workers"][0]
    assert client.get(f"{TYPES}/{type_id}", headers=auth(other_token)).status_code == 404
    assert client.get(TYPES, headers=auth(other_token)).get_json()["data"] == []
    assert client.get(f"{TYPES}/{type_id}", headers=auth(ops_token)).status_code == 200
    assert [t["id"] for t in client.get(TYPES, headers=auth(ops_token)).get_json()["data"]] == [type_id]
    assert client.get(f"{TYPES}/{type_id}", headers=auth(worker_token)).status_code == 403
    assert client.post(TYPES, json=type_payload(name="ops"), headers=auth(ops_token)).status_code == 403


def test_workers_see_tests_and_questions_but_never_the_known_answers(client, market):
    _, token = market["workers"][0]
    listed = client.get(TESTS, headers=auth(token)).get_json()["data"]
    assert [t["id"] for t in listed] == [market["type"]["id"]]
    assert listed[0]["question_count"] == 3 and listed[0]["attempts_left"] == 3 and listed[0]["held_value"] is None
    resp = start(client, token, market["type"]["id"])
    assert resp.status_code == 201
    attempt = resp.get_json()
    assert all(set(q) == {"id", "position", "data"} for q in attempt["questions"])
    assert attempt["answers"] is None and attempt["score"] is None and attempt["status"] == "started"
    assert "answer" not in str(listed) and "answer" not in str(attempt["questions"])


def test_starting_again_resumes_the_open_attempt_with_its_deadline(client, clock, market):
    _, token = market["workers"][0]
    first = start(client, token, market["type"]["id"]).get_json()
    clock.advance(seconds=100)
    again = start(client, token, market["type"]["id"])
    assert again.status_code == 200
    assert again.get_json()["id"] == first["id"] and again.get_json()["expires_at"] == first["expires_at"]
    deadline = dt.datetime.fromisoformat(first["expires_at"]) - dt.datetime.fromisoformat(first["started_at"])
    assert deadline == dt.timedelta(seconds=600)


def test_a_pass_grants_the_qualification_with_the_score_as_value(client, session, market):
    _, token = market["workers"][0]
    attempt = start(client, token, market["type"]["id"]).get_json()
    resp = submit(client, token, attempt, KNOWN)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["score"] == 100 and body["passed"] is True and body["status"] == "submitted"
    assert [a["answer"] for a in body["answers"]] == KNOWN
    grant = session.scalar(select(QualificationGrant).where(QualificationGrant.worker_id == market["workers"][0][0].id))
    assert grant.value == 100 and grant.source == "test" and grant.attempt_id == attempt["id"]
    listed = client.get(TESTS, headers=auth(token)).get_json()["data"][0]
    assert listed["held_value"] == 100 and listed["attempts_left"] == 2
    holders = client.get(f"{TYPES}/{market['type']['id']}/grants", headers=auth(market["owner_token"])).get_json()
    assert [(h["worker_id"], h["value"], h["best_score"], h["attempts"]) for h in holders["data"]] == [
        (market["workers"][0][0].id, 100, 100, 1)]


def test_below_the_passing_score_is_a_fail_and_grants_nothing(client, session, market):
    _, token = market["workers"][0]
    attempt = start(client, token, market["type"]["id"]).get_json()
    body = submit(client, token, attempt, ["pos", "neg", "pos"]).get_json()
    assert body["score"] == 67 and body["passed"] is False  # 2 of 3, rounded; 70 needed
    assert session.scalar(select(QualificationGrant.id)) is None


def test_without_auto_grant_a_pass_grants_nothing(client, session, market):
    resp = client.post(TYPES, json=type_payload(name="manual", auto_grant=False), headers=auth(market["owner_token"]))
    _, token = market["workers"][0]
    attempt = start(client, token, resp.get_json()["id"]).get_json()
    assert submit(client, token, attempt, KNOWN).get_json()["passed"] is True
    assert session.scalar(select(QualificationGrant.id)) is None


def test_a_retake_waits_for_the_retry_delay(client, clock, market):
    _, token = market["workers"][0]
    attempt = start(client, token, market["type"]["id"]).get_json()
    submit(client, token, attempt, ["neu", "neu", "neu"])
    early = start(client, token, market["type"]["id"])
    assert early.status_code == 409 and early.mimetype == PROBLEM and early.get_json()["reason"] == "retry_delay"
    available = dt.datetime.fromisoformat(early.get_json()["available_at"])
    assert available == clock() + dt.timedelta(seconds=3600)
    assert client.get(TESTS, headers=auth(token)).get_json()["data"][0]["available_at"] == early.get_json()[
        "available_at"]
    clock.advance(seconds=3600)
    retake = start(client, token, market["type"]["id"])
    assert retake.status_code == 201 and retake.get_json()["id"] != attempt["id"]


def test_a_retake_that_passes_sets_the_new_score(client, clock, session, market):
    worker, token = market["workers"][0]
    first = start(client, token, market["type"]["id"]).get_json()
    assert submit(client, token, first, ["pos", "neg", "pos"]).get_json()["passed"] is False
    clock.advance(seconds=3600)
    second = start(client, token, market["type"]["id"]).get_json()
    assert submit(client, token, second, KNOWN).get_json()["score"] == 100
    assert session.scalar(select(QualificationGrant.value).where(QualificationGrant.worker_id == worker.id)) == 100


def test_attempts_run_out_at_max_attempts(client, clock, market):
    resp = client.post(TYPES, json=type_payload(name="two", max_attempts=2, retry_delay_seconds=0),
                       headers=auth(market["owner_token"]))
    type_id = resp.get_json()["id"]
    _, token = market["workers"][0]
    for _ in range(2):
        submit(client, token, start(client, token, type_id).get_json(), ["neu", "neu", "neu"])
    out = start(client, token, type_id)
    assert out.status_code == 409 and out.get_json()["reason"] == "no_attempts_left"
    listed = next(t for t in client.get(TESTS, headers=auth(token)).get_json()["data"] if t["id"] == type_id)
    assert listed["attempts_left"] == 0 and listed["available_at"] is None


def test_a_submit_after_the_deadline_is_410_and_counts_as_an_attempt(client, clock, session, market):
    _, token = market["workers"][0]
    attempt = start(client, token, market["type"]["id"]).get_json()
    clock.advance(seconds=600)
    late = submit(client, token, attempt, KNOWN)
    assert late.status_code == 410 and late.get_json()["reason"] == "expired"
    stored = session.get(QualificationAttempt, attempt["id"])
    assert stored.status == AttemptStatus.EXPIRED and stored.score is None
    assert session.scalar(select(QualificationGrant.id)) is None
    listed = client.get(TESTS, headers=auth(token)).get_json()["data"][0]
    assert listed["attempts_used"] == 1 and dt.datetime.fromisoformat(listed["available_at"]) == (
        dt.datetime.fromisoformat(attempt["expires_at"]) + dt.timedelta(seconds=3600))


def test_an_abandoned_attempt_expires_when_the_worker_comes_back(client, clock, session, market):
    _, token = market["workers"][0]
    attempt = start(client, token, market["type"]["id"]).get_json()
    clock.advance(seconds=600 + 3600)
    again = start(client, token, market["type"]["id"])
    assert again.status_code == 201 and again.get_json()["id"] != attempt["id"]
    assert session.get(QualificationAttempt, attempt["id"]).status == AttemptStatus.EXPIRED


def test_invalid_answers_are_422_per_question_and_nothing_is_scored(client, session, market):
    _, token = market["workers"][0]
    attempt = start(client, token, market["type"]["id"]).get_json()
    q = [x["id"] for x in attempt["questions"]]
    body = {"answers": [{"question_id": q[0], "answer": "maybe"}, {"question_id": 999_999, "answer": "pos"},
                        {"question_id": q[1], "answer": "pos"}, {"question_id": q[1], "answer": "neg"}]}
    resp = client.post(f"{ATTEMPTS}/{attempt['id']}/submit", json=body, headers=auth(token))
    assert resp.status_code == 422 and resp.mimetype == PROBLEM
    assert set(resp.get_json()["errors"]["answers"]) == {str(q[0]), "999999", str(q[1]), str(q[2])}
    assert session.get(QualificationAttempt, attempt["id"]).status == AttemptStatus.STARTED


def test_submitting_again_replays_and_different_answers_conflict(client, market):
    _, token = market["workers"][0]
    attempt = start(client, token, market["type"]["id"]).get_json()
    first = submit(client, token, attempt, KNOWN).get_json()
    again = submit(client, token, attempt, KNOWN)
    assert again.status_code == 200 and again.get_json() == first
    assert submit(client, token, attempt, ["neu", "neu", "neu"]).status_code == 409


def test_another_workers_attempt_is_404(client, market):
    (_, mine), (_, theirs) = market["workers"]
    attempt = start(client, token := mine, market["type"]["id"]).get_json()
    assert client.get(f"{ATTEMPTS}/{attempt['id']}", headers=auth(theirs)).status_code == 404
    assert submit(client, theirs, attempt, KNOWN).status_code == 404
    assert client.get(f"{ATTEMPTS}/{attempt['id']}", headers=auth(token)).status_code == 200


def test_requester_and_ops_grant_and_revoke_by_hand_with_a_reason(client, session, clock, market):
    type_id, worker = market["type"]["id"], market["workers"][1][0]
    grants = f"{TYPES}/{type_id}/grants"
    no_reason = client.post(grants, json={"username": worker.username}, headers=auth(market["owner_token"]))
    assert no_reason.status_code == 422 and "reason" in no_reason.get_json()["errors"]
    given = client.post(grants, json={"username": worker.username, "value": 5, "reason": "veteran annotator"},
                        headers=auth(market["owner_token"]))
    assert given.status_code == 201
    assert given.get_json()["value"] == 5 and given.get_json()["source"] == "manual"
    assert given.get_json()["granted_by_id"] == market["owner"].id
    _, ops_token = account(session, Role.OPS, now=clock())
    revoked = client.post(f"{grants}/{worker.id}/revoke", json={"reason": "copied answers"}, headers=auth(ops_token))
    assert revoked.status_code == 200
    assert revoked.get_json()["revoked_at"] is not None and revoked.get_json()["revoke_reason"] == "copied answers"
    assert client.get(grants, headers=auth(market["owner_token"])).get_json()["data"] == []
    history = client.get(grants, query_string={"revoked": "true"}, headers=auth(market["owner_token"]))
    assert [h["reason"] for h in history.get_json()["data"]] == ["veteran annotator"]
    again = client.post(f"{grants}/{worker.id}/revoke", json={"reason": "twice"}, headers=auth(ops_token))
    assert again.status_code == 404


def test_grants_only_to_workers_and_only_on_your_own_types(client, session, clock, market):
    grants = f"{TYPES}/{market['type']['id']}/grants"
    _, other_token = account(session, Role.REQUESTER, now=clock())
    worker = market["workers"][0][0]
    body = {"username": worker.username, "reason": "x"}
    assert client.post(grants, json=body, headers=auth(other_token)).status_code == 404
    assert client.post(grants, json={"worker_id": market["owner"].id, "reason": "x"},
                       headers=auth(market["owner_token"])).status_code == 404
    assert client.post(grants, json=body, headers=auth(market["workers"][1][1])).status_code == 403


def test_one_open_attempt_and_one_live_grant_per_worker_are_database_rules(session, clock, market):
    worker = market["workers"][0][0]
    type_id = market["type"]["id"]
    session.add_all([QualificationAttempt(type_id=type_id, worker_id=worker.id, status=AttemptStatus.STARTED,
                                          started_at=clock(), expires_at=clock()) for _ in range(2)])
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    service.grant(session, type_id=type_id, account=market["owner"], username=worker.username, value=1, reason="a",
                  now=clock())
    session.add(QualificationGrant(type_id=type_id, worker_id=worker.id, value=2, source="manual", reason="b",
                                   granted_at=clock()))
    with pytest.raises(IntegrityError):
        session.flush()


@pytest.mark.parametrize("correct,total,expected", [(2, 3, 67), (1, 3, 33), (1, 2, 50), (0, 5, 0), (5, 5, 100),
                                                    (1, 8, 13), (7, 8, 88)])
def test_score_is_percent_rounded_half_up(correct, total, expected):
    assert service.score(correct, total) == expected


def test_text_answers_match_regardless_of_case_and_spacing(client, market):
    text_type = type_payload(name="spelling", label_schema={"type": "text", "max_length": 50},
                             questions=[{"data": {"q": "capital of France"}, "answer": "Paris"}], passing_score=100)
    type_id = client.post(TYPES, json=text_type, headers=auth(market["owner_token"])).get_json()["id"]
    _, token = market["workers"][0]
    attempt = start(client, token, type_id).get_json()
    assert submit(client, token, attempt, ["  paris "]).get_json()["passed"] is True
