"""The MTurk crowd against botocore's Stubber on a real boto3 client: the service model validates every request we
make (names, shapes, required parameters), and the responses are MTurk's shapes."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from decimal import Decimal

import boto3
import pytest
from botocore.stub import Stubber

from platforms.base import BurstOrder, ExternalSubmission, ExternalTask, PlatformError
from platforms.calls import RecordingLog
from platforms.mturk import (
    EXPIRE_NOW,
    FEES,
    SANDBOX_URL,
    SETTINGS,
    MTurk,
    external_question,
    hit_sizes,
    make_crowd,
    token,
)

NS = "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd}"
URL = "https://work.example/mturk?batch=7&kind=label"
EXPIRES = dt.datetime(2026, 1, 6, 9, 0, tzinfo=dt.UTC)
DUPLICATE = 'The idempotency token "{}" has already been processed. (1626172412406)'
REFUSED = "This operation can be called with a status of: Submitted (1537741087056)"
SUB = ExternalSubmission("3ASSIGN1", "3HIT0", "A1WORKER", "submitted", "Submitted")


def order(**changes) -> BurstOrder:
    values = dict(key="burst-12", url=URL, title="Label cats", description="Is it a cat?", keywords=("cats",),
                  reward_cents=5, currency="USD", hits=2, redundancy=3, tasks=7, assignment_seconds=600,
                  auto_approval_seconds=86400, lifetime_seconds=3600, estimated_seconds=30)
    return BurstOrder(**{**values, **changes})


@pytest.fixture
def stubbed():
    client = boto3.client("mturk", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield make_crowd({}, client=client), stub
        stub.assert_no_pending_responses()


@pytest.fixture
def log():
    return RecordingLog(sleep=lambda s: None)


def hit(hit_id: str, size: int, key: str) -> dict:
    return {"HITId": hit_id, "HITTypeId": "3TYPE", "MaxAssignments": size, "Expiration": EXPIRES,
            "RequesterAnnotation": key}


def expect_hit_type(stub, requirements=None) -> None:
    params = {"Title": "Label cats", "Description": "Is it a cat?", "Keywords": "labeling, cats", "Reward": "0.05",
              "AssignmentDurationInSeconds": 600, "AutoApprovalDelayInSeconds": 86400,
              "QualificationRequirements": requirements or [
                  {"QualificationTypeId": "000000000000000000L0", "Comparator": "GreaterThanOrEqualTo",
                   "IntegerValues": [95], "ActionsGuarded": "Accept"}]}
    stub.add_response("create_hit_type", {"HITTypeId": "3TYPE"}, params)


def expect_hit(stub, i: int, size: int, *, key: str = "burst-12") -> None:
    stub.add_response("create_hit_with_hit_type", {"HIT": hit(f"3HIT{i}", size, f"{key}-{i}")}, {
        "HITTypeId": "3TYPE", "MaxAssignments": size, "LifetimeInSeconds": 3600, "Question": external_question(URL),
        "RequesterAnnotation": f"{key}-{i}", "UniqueRequestToken": f"{key}-{i}"})


def test_the_platform_frames_in_mturks_worker_sites_one_task_per_assignment():
    assert set(MTurk.frame_origins) == {"https://worker.mturk.com", "https://www.mturk.com",
                                        "https://workersandbox.mturk.com"}
    assert MTurk.tasks_per_assignment == "one"


def test_fees_are_mturks_published_ones():
    assert FEES.reward_fee(100, 9) == 20 and FEES.reward_fee(100, 10) == 40
    assert FEES.bonus_fee(37) == 7 and FEES.bonus_fee(1) == 1


def test_settings_have_types_and_defaults():
    assert SETTINGS["MTURK_PRODUCTION"] == (0, int) and SETTINGS["MTURK_MIN_PERCENT_APPROVED"] == (95, int)
    crowd = make_crowd({}, client=object())
    assert (crowd.endpoint, crowd.sandbox) == (SANDBOX_URL, True)
    production = make_crowd({"MTURK_PRODUCTION": "1", "MTURK_MIN_PERCENT_APPROVED": 0}, client=object())
    assert (production.endpoint, production.sandbox, production.requirements) == (
        "https://mturk-requester.us-east-1.amazonaws.com", False, [])


def test_requirements_from_the_settings():
    crowd = make_crowd({"MTURK_MIN_PERCENT_APPROVED": 98, "MTURK_MIN_HITS_APPROVED": 500,
                        "MTURK_LOCALES": "US-NY, ca"}, client=object())
    assert crowd.requirements == [
        {"QualificationTypeId": "000000000000000000L0", "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [98], "ActionsGuarded": "Accept"},
        {"QualificationTypeId": "00000000000000000040", "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [500], "ActionsGuarded": "Accept"},
        {"QualificationTypeId": "00000000000000000071", "Comparator": "In",
         "LocaleValues": [{"Country": "US", "Subdivision": "NY"}, {"Country": "CA"}], "ActionsGuarded": "Accept"}]
    with pytest.raises(ValueError, match="MTURK_LOCALES"):
        make_crowd({"MTURK_LOCALES": "USA"}, client=object())


def test_the_default_client_makes_one_attempt_per_call():
    crowd = make_crowd({"MTURK_ENDPOINT_URL": "http://127.0.0.1:9", "MTURK_REGION": "us-east-1"})
    assert crowd.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert crowd.client.meta.config.retries["total_max_attempts"] == 1


def test_external_question_is_mturks_xml():
    root = ET.fromstring(external_question(URL, frame_height=600))
    assert root.tag == f"{NS}ExternalQuestion"
    assert [child.tag for child in root] == [f"{NS}ExternalURL", f"{NS}FrameHeight"]
    assert root[0].text == URL and root[1].text == "600"
    assert "batch=7&amp;kind=label" in external_question(URL)
    assert ET.fromstring(external_question(URL))[1].text == "0"
    with pytest.raises(ValueError, match="https"):
        external_question("http://work.example/mturk")


def test_hits_take_the_redundancy_each_and_split_orders_stay_under_ten():
    assert hit_sizes(order(tasks=7, redundancy=3)) == [3, 3, 1]
    assert hit_sizes(order(tasks=20, redundancy=10)) == [10, 10]
    assert hit_sizes(order(tasks=20, redundancy=10, split=True)) == [9, 9, 2]
    assert hit_sizes(order(tasks=5, redundancy=5, split=True)) == [5]


def test_long_keys_are_hashed_to_mturks_64_characters():
    assert token("k" * 64) == "k" * 64
    assert len(token("k" * 65)) == 64 and token("k" * 65) != token("k" * 66)


def test_publish_creates_a_hit_type_and_the_hits(stubbed, log):
    crowd, stub = stubbed
    expect_hit_type(stub)
    for i, size in enumerate([3, 3, 1]):
        expect_hit(stub, i, size)
    tasks = crowd.publish(order(), log)
    assert tasks == [ExternalTask(f"3HIT{i}", size, 5, group="3TYPE", key=f"burst-12-{i}", expires_at=EXPIRES)
                     for i, size in enumerate([3, 3, 1])]
    assert [(r.operation, r.key, r.attempts, r.outcome) for r in log.records] == [
        ("CreateHITType", None, 1, "ok")] + [("CreateHITWithHITType", f"burst-12-{i}", 1, "ok")
                                                   for i in range(3)]


def test_a_split_order_publishes_hits_of_at_most_nine(stubbed, log):
    crowd, stub = stubbed
    expect_hit_type(stub)
    for i, size in enumerate([9, 9, 2]):
        expect_hit(stub, i, size)
    tasks = crowd.publish(order(tasks=20, redundancy=10, split=True), log)
    assert [task.max_assignments for task in tasks] == [9, 9, 2]
    assert {FEES.reward_fee(5, task.max_assignments) for task in tasks} == {1}


def test_a_repeated_token_finds_the_hit_made_before(stubbed, log):
    crowd, stub = stubbed
    expect_hit_type(stub)
    expect_hit(stub, 0, 3)
    stub.add_client_error("create_hit_with_hit_type", "RequestError", DUPLICATE.format("burst-12-1"))
    # All pages of ListHITs are read once, at the first repeated token; HITs match by their RequesterAnnotation.
    stub.add_response("list_hits", {"HITs": [hit("3OTHER", 1, "other-0"), hit("3HIT2", 1, "burst-12-2")],
                                    "NextToken": "p2"}, {"MaxResults": 100})
    stub.add_response("list_hits", {"HITs": [hit("3HIT1", 3, "burst-12-1")]}, {"MaxResults": 100,
                                                                                "NextToken": "p2"})
    tasks = crowd.publish(order(), log)
    assert [(t.external_id, t.max_assignments, t.key) for t in tasks] == [
        ("3HIT0", 3, "burst-12-0"), ("3HIT1", 3, "burst-12-1"), ("3HIT2", 1, "burst-12-2")]
    # Once listed, a HIT already there is not asked for again (3HIT2: no third CreateHITWithHITType).
    assert [(r.operation, r.outcome) for r in log.records][-3:] == [
        ("CreateHITWithHITType", "ok"), ("ListHITs", "ok"), ("ListHITs", "ok")]


def test_a_repeated_token_without_a_listed_hit_is_an_error(stubbed, log):
    crowd, stub = stubbed
    expect_hit_type(stub)
    stub.add_client_error("create_hit_with_hit_type", "RequestError", DUPLICATE.format("burst-12-0"))
    stub.add_response("list_hits", {"HITs": []}, {"MaxResults": 100})
    with pytest.raises(PlatformError, match="HITNotFound"):
        crowd.publish(order(tasks=1), log)


def test_throttling_is_retried_and_recorded(stubbed, log):
    crowd, stub = stubbed
    stub.add_client_error("create_hit_type", "ThrottlingException", "Rate exceeded", http_status_code=400)
    expect_hit_type(stub)
    expect_hit(stub, 0, 1)
    crowd.publish(order(tasks=1), log)
    first = log.records[0]
    assert (first.operation, first.attempts, first.outcome) == ("CreateHITType", 2, "ok")
    assert first.errors == ["ThrottlingException: Rate exceeded"]


@pytest.mark.parametrize(("code", "message", "status"), [
    ("ServiceFault", "try later", 500), ("ServiceUnavailable", "try later", 503),
    ("RequestError", "Rate exceeded", 400), ("RequestError", "try later", 502), ("RequestError", "try later", 429)])
def test_service_faults_rate_limits_and_5xx_are_retried(stubbed, log, code, message, status):
    crowd, stub = stubbed
    stub.add_client_error("get_account_balance", code, message, http_status_code=status)
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    assert crowd.status(log)["available_balance"] == "10000.00"
    assert log.records[0].attempts == 2


def test_a_request_error_is_recorded_once_and_raised(stubbed, log):
    crowd, stub = stubbed
    stub.add_client_error("create_worker_block", "RequestError", "Worker A1 does not exist.", http_status_code=400)
    with pytest.raises(PlatformError) as raised:
        crowd.block(log, worker_ref="A1", reason="spam")
    assert (raised.value.code, raised.value.retryable, raised.value.status) == ("RequestError", False, 400)
    assert [(r.operation, r.attempts, r.outcome, r.target) for r in log.records] == [
        ("CreateWorkerBlock", 1, "error", "A1")]


def test_submissions_list_the_live_hits_and_the_expired_ones_mturk_calls_reviewable(stubbed, log):
    crowd, stub = stubbed
    later, before = dt.datetime.now(dt.UTC) + dt.timedelta(days=1), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    tasks = [ExternalTask("3HIT0", 3, 5, group="3TYPE", expires_at=later),
             ExternalTask("3HIT1", 3, 5, group="3TYPE", expires_at=before),  # expired, reviewable: listed
             ExternalTask("3HIT2", 3, 5, group="3TYPE", expires_at=before)]  # expired, work pending: not yet
    stub.add_response("list_reviewable_hits", {"HITs": [hit("3HIT1", 3, "burst-12-1")], "NextToken": "r2"},
                      {"HITTypeId": "3TYPE", "Status": "Reviewable", "MaxResults": 100})
    stub.add_response("list_reviewable_hits", {"HITs": [hit("3HIT9", 1, "burst-13-9")]},  # another burst's
                      {"HITTypeId": "3TYPE", "Status": "Reviewable", "MaxResults": 100, "NextToken": "r2"})
    statuses = ["Submitted", "Approved", "Rejected"]
    submitted = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)

    def assignment(aid: str, hit_id: str, status: str) -> dict:
        return {"AssignmentId": aid, "HITId": hit_id, "WorkerId": "A1WORKER", "AssignmentStatus": status,
                "SubmitTime": submitted}

    stub.add_response("list_assignments_for_hit", {"Assignments": [assignment("3A1", "3HIT0", "Submitted")],
                                                "NextToken": "a2"},
                      {"HITId": "3HIT0", "AssignmentStatuses": statuses, "MaxResults": 100})
    stub.add_response("list_assignments_for_hit", {"Assignments": [assignment("3A2", "3HIT0", "Approved")]},
                      {"HITId": "3HIT0", "AssignmentStatuses": statuses, "MaxResults": 100, "NextToken": "a2"})
    stub.add_response("list_assignments_for_hit", {"Assignments": [assignment("3A3", "3HIT1", "Rejected")]},
                      {"HITId": "3HIT1", "AssignmentStatuses": statuses, "MaxResults": 100})
    found = crowd.submissions(tasks, log)
    stub.assert_no_pending_responses()  # nothing asked of 3HIT2 or of the other burst's 3HIT9
    assert [(s.external_id, s.task_ref, s.status, s.raw_status) for s in found] == [
        ("3A1", "3HIT0", "submitted", "Submitted"), ("3A2", "3HIT0", "approved", "Approved"),
        ("3A3", "3HIT1", "rejected", "Rejected")]
    assert found[0].submitted_at == submitted and found[0].worker_ref == "A1WORKER"
    # Only live HITs: no reviewable listing at all.
    stub.add_response("list_assignments_for_hit", {"Assignments": []},
                      {"HITId": "3HIT0", "AssignmentStatuses": statuses, "MaxResults": 100})
    assert crowd.submissions(tasks[:1], log) == []


def test_approve_and_an_approval_made_before(stubbed, log):
    crowd, stub = stubbed
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGN1", "RequesterFeedback": "Thanks"})
    crowd.approve(SUB, log, feedback="Thanks")
    stub.add_client_error("approve_assignment", "RequestError", REFUSED)
    stub.add_response("get_assignment", {"Assignment": {"AssignmentId": "3ASSIGN1", "AssignmentStatus": "Approved"}},
                      {"AssignmentId": "3ASSIGN1"})
    crowd.approve(SUB, log)
    assert [(r.operation, r.outcome) for r in log.records] == [
        ("ApproveAssignment", "ok"), ("ApproveAssignment", "error"), ("GetAssignment", "ok")]


def test_approving_a_rejected_assignment_raises_the_refusal(stubbed, log):
    crowd, stub = stubbed
    stub.add_client_error("approve_assignment", "RequestError", REFUSED)
    stub.add_response("get_assignment", {"Assignment": {"AssignmentId": "3ASSIGN1", "AssignmentStatus": "Rejected"}},
                      {"AssignmentId": "3ASSIGN1"})
    with pytest.raises(PlatformError, match="status of: Submitted"):
        crowd.approve(SUB, log)


def test_an_unconfirmable_refusal_raises_the_refusal(stubbed, log):
    crowd, stub = stubbed
    stub.add_client_error("approve_assignment", "RequestError", "This operation can be called with a status of: null")
    stub.add_client_error("get_assignment", "RequestError", "Assignment 3ASSIGN1 does not exist.")
    with pytest.raises(PlatformError, match="status of: null"):
        crowd.approve(SUB, log)


def test_reject_needs_feedback_and_a_rejection_made_before_counts(stubbed, log):
    crowd, stub = stubbed
    for feedback in ("", "  ", "x" * 1025):
        with pytest.raises(ValueError):
            crowd.reject(SUB, log, feedback=feedback)
    stub.add_response("reject_assignment", {}, {"AssignmentId": "3ASSIGN1", "RequesterFeedback": "Wrong gold"})
    crowd.reject(SUB, log, feedback="Wrong gold")
    stub.add_client_error("reject_assignment", "RequestError", REFUSED)
    stub.add_response("get_assignment", {"Assignment": {"AssignmentId": "3ASSIGN1", "AssignmentStatus": "Rejected"}},
                      {"AssignmentId": "3ASSIGN1"})
    crowd.reject(SUB, log, feedback="Wrong gold")


def test_bonus_is_sent_once_per_key(stubbed, log):
    crowd, stub = stubbed
    params = {"WorkerId": "A1WORKER", "AssignmentId": "3ASSIGN1", "BonusAmount": "0.37", "Reason": "Top-up",
              "UniqueRequestToken": "bonus-1"}
    stub.add_response("send_bonus", {}, params)
    stub.add_client_error("send_bonus", "RequestError", DUPLICATE.format("bonus-1"), expected_params=params)
    long_key = "bonus-" + "9" * 80
    stub.add_response("send_bonus", {}, {**params, "BonusAmount": "12.00", "UniqueRequestToken": token(long_key)})
    for _ in range(2):
        crowd.bonus(log, submission=SUB, cents=37, reason="Top-up", key="bonus-1")
    crowd.bonus(log, submission=SUB, cents=1200, reason="Top-up", key=long_key)
    assert [(r.operation, r.key, r.outcome) for r in log.records] == [
        ("SendBonus", "bonus-1", "ok"), ("SendBonus", "bonus-1", "ok"), ("SendBonus", token(long_key), "ok")]
    for cents in (0, -37, Decimal("0.37"), 0.37, True):
        with pytest.raises((TypeError, ValueError)):
            crowd.bonus(log, submission=SUB, cents=cents, reason="Top-up", key="bonus-2")


def test_block_cancel_and_status(stubbed, log):
    crowd, stub = stubbed
    stub.add_response("create_worker_block", {}, {"WorkerId": "A1WORKER", "Reason": "Spam"})
    stub.add_response("update_expiration_for_hit", {}, {"HITId": "3HIT0", "ExpireAt": EXPIRE_NOW})
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00", "OnHoldBalance": "0.00"}, {})
    crowd.block(log, worker_ref="A1WORKER", reason="Spam")
    crowd.cancel(ExternalTask("3HIT0", 3, 5, key="burst-12-0"), log)
    assert crowd.status(log) == {"endpoint": SANDBOX_URL, "sandbox": True, "available_balance": "10000.00"}
    assert [(r.operation, r.target) for r in log.records] == [
        ("CreateWorkerBlock", "A1WORKER"), ("UpdateExpirationForHIT", "3HIT0"), ("GetAccountBalance", None)]
