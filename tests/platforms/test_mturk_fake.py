"""The MTurk crowd through real boto3 (its signing, JSON 1.1 protocol and error parsing) against the fake MTurk
endpoint on 127.0.0.1: a burst's whole life, retried publishes making nothing twice, throttling retried."""

from __future__ import annotations

import dataclasses

import pytest

from platforms.base import BurstOrder, ExternalSubmission, PlatformError
from platforms.calls import RecordingLog
from platforms.mturk import external_question, make_crowd
from tests.platforms.fake_mturk import FakeMTurk

URL = "https://work.example/mturk?batch=7&kind=label"


@pytest.fixture
def crowd(fake_mturk, monkeypatch):
    # boto3's standard credential chain, from the environment: nothing of ours holds AWS keys.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return make_crowd({"MTURK_ENDPOINT_URL": fake_mturk.url, "MTURK_LOCALES": "US"})


@pytest.fixture
def log():
    return RecordingLog(sleep=lambda s: None)


def order(**changes) -> BurstOrder:
    values = dict(key="burst-12", url=URL, title="Label cats", description="Is it a cat?", keywords=("cats",),
                  reward_cents=5, currency="USD", hits=1, redundancy=2, tasks=3, assignment_seconds=600,
                  auto_approval_seconds=86400, lifetime_seconds=3600, estimated_seconds=30)
    return BurstOrder(**{**values, **changes})


def test_a_burst_from_publish_to_cancel(crowd, fake_mturk, log):
    tasks = crowd.publish(order(), log)
    assert [task.max_assignments for task in tasks] == [2, 1]
    hit = fake_mturk.hits[tasks[0].external_id]
    assert hit.question == external_question(URL) and hit.annotation == "burst-12-0"
    kind = fake_mturk.hit_types[tasks[0].group]
    assert (kind["Reward"], kind["Keywords"]) == ("0.05", "labeling, cats")
    assert [r["QualificationTypeId"] for r in kind["QualificationRequirements"]] == [
        "000000000000000000L0", "00000000000000000071"]
    assert tasks[0].expires_at is not None and tasks[0].expires_at.tzinfo is not None

    done = fake_mturk.accept(tasks[0].external_id, "A1WORKER")
    fake_mturk.submit(done)
    fake_mturk.accept(tasks[0].external_id, "A2WORKER")  # accepted, still working: not listed
    [submission] = crowd.submissions(tasks, log)
    assert (submission.external_id, submission.task_ref, submission.worker_ref, submission.status) == (
        done, tasks[0].external_id, "A1WORKER", "submitted")
    assert submission.submitted_at is not None

    for _ in range(2):  # the second is refused by MTurk as approved already: confirmed, a success
        crowd.approve(submission, log, feedback="Thanks")
    assert fake_mturk.assignments[done].status == "Approved"
    assert [r.operation for r in log.records][-3:] == ["ApproveAssignment", "ApproveAssignment", "GetAssignment"]

    for _ in range(2):
        crowd.bonus(log, submission=submission, cents=37, reason="Fair-pay top-up", key="bonus-burst-12-1")
    assert fake_mturk.bonuses == [{"WorkerId": "A1WORKER", "AssignmentId": done, "BonusAmount": "0.37",
                                   "Reason": "Fair-pay top-up", "UniqueRequestToken": "bonus-burst-12-1"}]

    crowd.block(log, worker_ref="A3SPAMMER", reason="Copied answers")
    assert fake_mturk.blocks == {"A3SPAMMER": "Copied answers"}

    crowd.cancel(tasks[1], log)
    assert fake_mturk.hits[tasks[1].external_id].expired()
    assert fake_mturk.expirations == [(tasks[1].external_id, 0)]
    with pytest.raises(ValueError, match="no more workers"):
        fake_mturk.accept(tasks[1].external_id, "A4WORKER")

    assert crowd.status(log) == {"endpoint": fake_mturk.url, "sandbox": True, "available_balance": "10000.00"}
    assert all(record.outcome == "ok" for record in log.records if record.operation != "ApproveAssignment")


def test_rejected_work_and_a_reviewable_hit_of_the_group(crowd, fake_mturk, log):
    [task] = crowd.publish(order(tasks=1), log)
    assignment = fake_mturk.accept(task.external_id, "A1WORKER")
    fake_mturk.submit(assignment)
    [submission] = crowd.submissions([task], log)
    for _ in range(2):
        crowd.reject(submission, log, feedback="The gold answers were wrong")
    assert fake_mturk.assignments[assignment].status == "Rejected"
    assert [s.status for s in crowd.submissions([task], log)] == ["rejected"]
    # Expired, and with all its answers, MTurk lists it as reviewable under its HIT type: that is what says
    # an expired HIT's assignments are worth listing.
    crowd.cancel(task, log)
    ended = dataclasses.replace(task, ended=True)
    assert [s.status for s in crowd.submissions([ended], log)] == ["rejected"]
    assert ("ListReviewableHITs", {"HITTypeId": task.group, "Status": "Reviewable", "MaxResults": 100}) in (
        fake_mturk.requests)


def test_a_retried_publish_makes_no_second_hit(crowd, fake_mturk, log):
    first = crowd.publish(order(), log)
    again = crowd.publish(order(), log)
    assert again == first and len(fake_mturk.hits) == 2
    # The first token comes back "already processed": ListHITs, read once, finds both HITs, so the second is
    # not asked for again.
    assert [op for op, _ in fake_mturk.requests].count("CreateHITWithHITType") == 3
    assert [op for op, _ in fake_mturk.requests].count("ListHITs") == 1


def test_a_late_retry_finds_its_hits_though_mturk_forgot_the_tokens(crowd, fake_mturk, log):
    first = crowd.publish(order(), log)
    fake_mturk._tokens.clear()  # MTurk keeps a UniqueRequestToken for 24 hours only
    again = crowd.publish(order(retry=True), log)
    assert again == first and len(fake_mturk.hits) == 2  # found by annotation before making any
    assert [op for op, _ in fake_mturk.requests].count("CreateHITWithHITType") == 2
    without = crowd.publish(order(), log)  # what the retry flag prevents: the token alone no longer guards
    assert len(fake_mturk.hits) == 4 and without != first


def test_a_hit_is_found_across_pages_of_listhits(crowd, fake_mturk, log):
    crowd.publish(order(key="other", tasks=250, redundancy=1), log)  # 250 HITs: three pages of 100
    first = crowd.publish(order(key="late", tasks=1), log)
    assert crowd.publish(order(key="late", tasks=1), log) == first
    listed = [params for op, params in fake_mturk.requests if op == "ListHITs"]
    assert [params.get("NextToken") for params in listed] == [None, "100", "200"]


def test_a_throttled_call_is_retried_and_recorded(crowd, fake_mturk, log):
    fake_mturk.fail_next("CreateHITWithHITType", times=2)
    fake_mturk.fail_next("GetAccountBalance", code="ServiceUnavailable", status=503)
    [task] = crowd.publish(order(tasks=1), log)
    assert len(fake_mturk.hits) == 1 and task.external_id in fake_mturk.hits
    created = [r for r in log.records if r.operation == "CreateHITWithHITType"]
    assert [(r.attempts, r.outcome) for r in created] == [(3, "ok")]
    assert created[0].errors == ["ThrottlingException: Rate exceeded"] * 2
    # boto3 itself made one attempt each time: every retry is the call log's, and recorded.
    assert [op for op, _ in fake_mturk.requests].count("CreateHITWithHITType") == 3
    crowd.status(log)
    assert log.records[-1].attempts == 2


def test_a_request_error_is_raised_not_retried(crowd, fake_mturk, log):
    [task] = crowd.publish(order(tasks=1), log)
    assignment = fake_mturk.accept(task.external_id, "A1WORKER")  # accepted, not submitted
    assert crowd.submissions([task], log) == []
    working = ExternalSubmission(assignment, task.external_id, "A1WORKER", "other", "Accepted")
    with pytest.raises(PlatformError) as raised:
        crowd.approve(working, log)
    assert raised.value.code == "RequestError" and not raised.value.retryable
    assert [(r.operation, r.attempts, r.outcome) for r in log.records][-2:] == [
        ("ApproveAssignment", 1, "error"), ("GetAssignment", 1, "error")]
    assert fake_mturk.assignments[assignment].status == "Accepted"


def test_a_connection_error_is_retried_then_raised(crowd, log):
    with FakeMTurk() as gone:
        url = gone.url
    # Nothing listens there any more: every attempt is refused at once.
    down = make_crowd({"MTURK_ENDPOINT_URL": url})
    with pytest.raises(PlatformError) as raised:
        down.status(log)
    assert (raised.value.code, raised.value.retryable) == ("EndpointConnectionError", True)
    assert (log.records[-1].attempts, log.records[-1].outcome) == (5, "error")
