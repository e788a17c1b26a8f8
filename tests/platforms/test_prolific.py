"""Prolific through real HTTP to a fake of its API: one study per burst, found again on a retry; submissions
mirrored; reviews, bonuses and blocks sent once; every call recorded, throttling retried, refusals raised; and
the arrival and completion of a participant read strictly."""

from __future__ import annotations

import socket
from dataclasses import replace
from decimal import Decimal

import pytest
import requests

from base.errors import InvalidInput
from platforms.base import Arrival, BurstOrder, Completion, ExternalSubmission, ExternalTask, PlatformError
from platforms.calls import RecordingLog
from platforms.prolific import FEES, SETTINGS, Prolific, ProlificCrowd, make_crowd
from tests.platforms.fake_prolific import FakeProlific, new_id

PID, STUDY, SESSION = "60ffe5c8371090c7041d43f8", "61a0b3c2d4e5f60718293a4b", "62b1c4d3e5f6071829304b5c"
FEEDBACK = "Several of your answers disagree with the checked answers of the gold items served among the tasks, " \
           "so this submission cannot be accepted."
ORDER = BurstOrder(key="burst-7-k3y", url="https://crowd.example/work/batches/7?ref=signed.abc", title="Label images",
                   description="Say what each image shows.", keywords=("images",), reward_cents=5, currency="USD",
                   hits=10, redundancy=3, tasks=32, assignment_seconds=600, auto_approval_seconds=86400,
                   lifetime_seconds=604800, estimated_seconds=40, completion_code="C1A2B3C4")


def log() -> RecordingLog:
    return RecordingLog(sleep=lambda s: None)


def crowd(fake: FakeProlific, **config: object) -> ProlificCrowd:
    return make_crowd({"PROLIFIC_TOKEN": fake.token, "PROLIFIC_API_URL": fake.url, **config})


def test_a_burst_is_one_published_study_paying_at_least_the_minimum_hourly_rate(fake_prolific):
    calls = log()
    [task] = crowd(fake_prolific).publish(ORDER, calls)

    study = fake_prolific.studies[task.external_id]
    # 32 tasks over 3 places: 11 each, 11 x 40 s = 7.33 min -> 8 min; 11 x 5c = 55c is under $8.00/h over
    # 8 min = 106.67c, so the minimum (rounded up) applies.
    assert (study["total_available_places"], study["estimated_completion_time"], study["reward"]) == (3, 8, 107)
    assert task == ExternalTask(task.external_id, 3, 107, key=ORDER.key)
    assert study["external_study_url"] == (
        "https://crowd.example/work/batches/7?ref=signed.abc"
        "&PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}")
    assert (study["name"], study["description"], study["internal_name"]) == (
        "Label images", "Say what each image shows.", "burst-7-k3y")
    assert study["prolific_id_option"] == "url_parameters"
    assert study["completion_codes"] == [{"code": "C1A2B3C4", "code_type": "COMPLETED",
                                          "actions": [{"action": "MANUALLY_REVIEW"}]}]
    assert "filters" not in study
    assert study["status"] == "ACTIVE"
    assert [r.operation for r in calls.records] == ["list_studies", "create_study", "publish_study"]
    assert {r.headers["Authorization"] for r in fake_prolific.requests} == {f"Token {fake_prolific.token}"}
    [create] = fake_prolific.sent_to("POST", "/api/v1/studies/")
    assert create.headers["Content-Type"] == "application/json"


def test_the_reward_is_the_tasks_pay_when_that_is_above_the_minimum(fake_prolific):
    [task] = crowd(fake_prolific).publish(replace(ORDER, reward_cents=12), log())
    # 11 x 12c = 132c over 8 minutes is $9.90/h, above the minimum.
    assert task.reward_cents == fake_prolific.studies[task.external_id]["reward"] == 132


def test_the_minimum_follows_the_setting(fake_prolific):
    [task] = crowd(fake_prolific, PROLIFIC_MIN_HOURLY_CENTS=600).publish(ORDER, log())
    assert task.reward_cents == 80  # 600c/h over 8 minutes


def test_a_configured_block_group_is_excluded_from_the_study(fake_prolific):
    group = fake_prolific.add_group()
    [task] = crowd(fake_prolific, PROLIFIC_BLOCK_GROUP_ID=group).publish(ORDER, log())
    assert fake_prolific.studies[task.external_id]["filters"] == [
        {"filter_id": "participant_group_blocklist", "selected_values": [group]}]


def test_publishing_again_with_the_same_key_reuses_the_study_through_every_page(fake_prolific):
    fake_prolific.page_size = 2
    prolific = crowd(fake_prolific)
    for n in range(5):
        prolific.publish(replace(ORDER, key=f"other-{n}"), log())
    [first] = prolific.publish(ORDER, log())  # the 6th study: on the 3rd page of the listing

    calls = log()
    [again] = prolific.publish(ORDER, calls)

    assert again == first
    assert len(fake_prolific.studies) == 6
    assert [r.operation for r in calls.records] == ["list_studies"] * 3
    assert len(fake_prolific.sent("POST", "/transition/")) == 6


def test_a_study_found_unpublished_is_published_not_made_again(fake_prolific):
    prolific = crowd(fake_prolific)
    fake_prolific.fail_next("/transition/", status=503, times=5)
    with pytest.raises(PlatformError):
        prolific.publish(ORDER, log())
    [study] = fake_prolific.studies.values()
    assert study["status"] == "UNPUBLISHED"

    [task] = prolific.publish(ORDER, log())
    assert task.external_id == study["id"] and study["status"] == "ACTIVE"
    assert len(fake_prolific.sent_to("POST", "/api/v1/studies/")) == 1


def test_a_create_whose_answer_was_lost_is_found_on_the_retry(fake_prolific):
    fake_prolific.fail_next("/api/v1/studies/", status=502, method="POST", after=True)
    calls = log()
    [task] = crowd(fake_prolific).publish(ORDER, calls)

    assert list(fake_prolific.studies) == [task.external_id]
    create = next(r for r in calls.records if r.operation == "create_study")
    assert (create.attempts, create.outcome, create.key) == (2, "ok", ORDER.key)


def test_publishing_a_study_already_published_counts_as_done(fake_prolific):
    # PUBLISH acted on, its answer lost: the retry is refused (already ACTIVE), and a read confirms it.
    fake_prolific.fail_next("/transition/", status=500, after=True)
    calls = log()
    [task] = crowd(fake_prolific).publish(ORDER, calls)
    assert fake_prolific.studies[task.external_id]["status"] == "ACTIVE"
    assert [(r.operation, r.outcome) for r in calls.records][-2:] == [("publish_study", "error"),
                                                                      ("get_study", "ok")]


def test_an_order_without_a_completion_code_is_refused(fake_prolific):
    with pytest.raises(ValueError):
        crowd(fake_prolific).publish(replace(ORDER, completion_code=None), log())
    assert not fake_prolific.requests


@pytest.fixture
def study(fake_prolific) -> ExternalTask:
    [task] = crowd(fake_prolific).publish(ORDER, log())
    return task


def test_submissions_are_listed_through_every_page(fake_prolific, study):
    fake_prolific.page_size = 1
    waiting = fake_prolific.add_submission(study.external_id, PID, session_id=SESSION)
    returned = fake_prolific.add_submission(study.external_id, new_id())
    fake_prolific.submissions[returned]["status"] = "RETURNED"
    fake_prolific.submissions[returned]["completed_at"] = None
    other_study = crowd(fake_prolific).publish(replace(ORDER, key="other"), log())[0]
    fake_prolific.add_submission(other_study.external_id, new_id())

    calls = log()
    found = crowd(fake_prolific).submissions([study], calls)

    assert [(s.external_id, s.task_ref, s.status, s.raw_status) for s in found] == [
        (SESSION, study.external_id, "submitted", "AWAITING REVIEW"),
        (returned, study.external_id, "other", "RETURNED")]
    assert waiting == SESSION and found[0].worker_ref == PID
    assert found[0].submitted_at is not None and found[0].submitted_at.utcoffset().total_seconds() == 0
    assert found[1].submitted_at is None
    assert [r.operation for r in calls.records] == ["list_submissions"] * 2


def submission_of(fake: FakeProlific, study: ExternalTask, participant: str = PID) -> ExternalSubmission:
    submission_id = fake.add_submission(study.external_id, participant)
    [found] = [s for s in crowd(fake).submissions([study], log()) if s.external_id == submission_id]
    return found


def test_approving_twice_succeeds_once_the_second_is_confirmed(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    prolific = crowd(fake_prolific)
    prolific.approve(submission, log())
    calls = log()
    prolific.approve(submission, calls)

    assert fake_prolific.submissions[submission.external_id]["status"] == "APPROVED"
    assert [(r.operation, r.outcome) for r in calls.records] == [("approve", "error"), ("get_submission", "ok")]
    assert [r.body for r in fake_prolific.sent("POST", f"{submission.external_id}/transition/")] == [
        {"action": "APPROVE"}] * 2


def test_approving_a_rejected_submission_is_an_error(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    prolific = crowd(fake_prolific)
    prolific.reject(submission, log(), feedback=FEEDBACK)
    with pytest.raises(PlatformError) as refused:
        prolific.approve(submission, log())
    assert refused.value.status == 400


def test_a_rejection_carries_its_message_and_category(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    prolific = crowd(fake_prolific)
    prolific.reject(submission, log(), feedback=FEEDBACK)
    prolific.reject(submission, log(), feedback=FEEDBACK)  # already rejected: success

    row = fake_prolific.submissions[submission.external_id]
    assert row["status"] == "REJECTED"
    assert row["rejection"] == {"message": FEEDBACK, "category": "OTHER"}


def test_a_short_rejection_message_is_sent_with_where_it_came_from(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    crowd(fake_prolific).reject(submission, log(), feedback="Wrong.")
    row = fake_prolific.submissions[submission.external_id]
    assert row["status"] == "REJECTED" and row["rejection"]["message"].startswith("Wrong. (This is the requester")
    assert len(row["rejection"]["message"]) >= 100  # Prolific's minimum


def test_a_bonus_is_set_up_then_paid_once_per_key(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    prolific = crowd(fake_prolific)
    calls = log()
    prolific.bonus(calls, submission=submission, cents=150, reason="Careful work", key="bonus-1")

    [bulk] = fake_prolific.bonuses.values()
    [setup] = fake_prolific.sent("POST", "/api/v1/submissions/bonus-payments/")
    assert setup.body == {"study_id": study.external_id, "csv_bonuses": f"{submission.external_id},1.50\n"}
    assert (bulk["amount"], bulk["paid"]) == (150, 1)
    assert fake_prolific.submissions[submission.external_id]["bonus_payments"] == [150.0]
    assert [(r.operation, r.key) for r in calls.records] == [
        ("get_submission", "bonus-1"), ("set_up_bonus", "bonus-1"), ("pay_bonus", "bonus-1")]

    prolific.bonus(log(), submission=submission, cents=150, reason="Careful work", key="bonus-1")
    assert bulk["paid"] == 1 and len(fake_prolific.bonuses) == 1


def test_small_bonuses_are_decimal_strings(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    crowd(fake_prolific).bonus(log(), submission=submission, cents=5, reason="", key="bonus-5")
    [setup] = fake_prolific.sent("POST", "/bonus-payments/")
    assert setup.body["csv_bonuses"] == f"{submission.external_id},0.05\n"


def test_a_pay_that_may_have_gone_through_is_not_retried(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    fake_prolific.fail_next("/pay/", status=502)
    calls = log()
    with pytest.raises(PlatformError) as unconfirmed:
        crowd(fake_prolific).bonus(calls, submission=submission, cents=150, reason="", key="bonus-1")
    assert (unconfirmed.value.code, unconfirmed.value.retryable, unconfirmed.value.status) == (
        "bonus_unconfirmed", False, 502)
    assert (calls.records[-1].operation, calls.records[-1].attempts) == ("pay_bonus", 1)
    assert len(fake_prolific.sent("POST", "/pay/")) == 1


def test_a_throttled_pay_is_retried(fake_prolific, study):
    submission = submission_of(fake_prolific, study)
    fake_prolific.fail_next("/pay/", status=429)
    calls = log()
    crowd(fake_prolific).bonus(calls, submission=submission, cents=150, reason="", key="bonus-1")
    assert (calls.records[-1].operation, calls.records[-1].attempts) == ("pay_bonus", 2)
    [bulk] = fake_prolific.bonuses.values()
    assert bulk["paid"] == 1


def test_a_block_adds_the_participant_to_the_configured_group(fake_prolific):
    group = fake_prolific.add_group()
    prolific = crowd(fake_prolific, PROLIFIC_BLOCK_GROUP_ID=group)
    prolific.block(log(), worker_ref=PID, reason="Spam")
    prolific.block(log(), worker_ref=PID, reason="Spam")
    assert fake_prolific.groups[group] == [PID]
    assert fake_prolific.sent("POST", "/participant-groups/")[0].body == {"participant_ids": [PID]}


def test_a_block_without_a_group_is_recorded_not_retried(fake_prolific):
    calls = log()
    with pytest.raises(PlatformError) as refused:
        crowd(fake_prolific).block(calls, worker_ref=PID, reason="Spam")
    assert (refused.value.code, refused.value.retryable) == ("not_configured", False)
    assert [(r.operation, r.attempts, r.outcome) for r in calls.records] == [("block", 1, "error")]
    assert not fake_prolific.requests


def test_cancel_stops_the_study_and_again_is_success(fake_prolific, study):
    prolific = crowd(fake_prolific)
    prolific.cancel(study, log())
    assert fake_prolific.studies[study.external_id]["status"] == "AWAITING REVIEW"
    assert fake_prolific.sent("POST", "/transition/")[-1].body == {"action": "STOP"}
    calls = log()
    prolific.cancel(study, calls)
    assert [(r.operation, r.outcome) for r in calls.records] == [("stop_study", "error"), ("get_study", "ok")]


def test_status_names_the_account_and_endpoint(fake_prolific):
    facts = crowd(fake_prolific).status(log())
    assert facts["endpoint"] == fake_prolific.url
    assert (facts["user"], facts["currency"], facts["balance_cents"], facts["available_balance_cents"]) == (
        fake_prolific.me["id"], "USD", 125000, 100000)
    assert fake_prolific.sent("GET", "/api/v1/users/me/")


def test_throttling_is_retried_and_each_attempt_recorded(fake_prolific):
    fake_prolific.fail_next("/users/me/", status=429)
    calls = log()
    crowd(fake_prolific).status(calls)
    [record] = calls.records
    assert (record.attempts, record.outcome) == (2, "ok")
    assert record.errors[0].startswith("throttled")
    assert len(fake_prolific.sent("GET", "/users/me/")) == 2


def test_a_refusal_is_recorded_and_raised_with_prolifics_error(fake_prolific):
    fake_prolific.fail_next("/api/v1/studies/", status=400)
    calls = log()
    with pytest.raises(PlatformError) as refused:
        crowd(fake_prolific).publish(ORDER, calls)
    assert (refused.value.code, refused.value.status, refused.value.retryable) == ("140400", 400, False)
    assert "Injected failure" in refused.value.message
    [record] = calls.records
    assert (record.operation, record.attempts, record.outcome) == ("list_studies", 1, "error")


def test_a_wrong_token_is_refused(fake_prolific):
    with pytest.raises(PlatformError) as refused:
        make_crowd({"PROLIFIC_TOKEN": "stolen", "PROLIFIC_API_URL": fake_prolific.url}).status(log())
    assert (refused.value.status, refused.value.retryable) == (401, False)


def test_no_token_means_not_configured(fake_prolific):
    with pytest.raises(PlatformError) as refused:
        make_crowd({"PROLIFIC_API_URL": fake_prolific.url}).status(log())
    assert refused.value.code == "not_configured"
    assert not fake_prolific.requests


def test_a_next_page_elsewhere_is_not_followed(fake_prolific):
    class Elsewhere(requests.Session):
        def request(self, method, url, **kwargs):  # type: ignore[override]
            response = super().request(method, url, **kwargs)
            response._content = b'{"results": [], "_links": {"next": {"href": "https://evil.example/steal"}}}'
            return response

    with pytest.raises(PlatformError) as refused:
        make_crowd({"PROLIFIC_TOKEN": fake_prolific.token, "PROLIFIC_API_URL": fake_prolific.url},
                   session=Elsewhere()).publish(ORDER, log())
    assert refused.value.code == "bad_link"


def test_connection_failures_are_retryable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    calls = RecordingLog(sleep=lambda s: None, attempts=2)
    with pytest.raises(PlatformError) as failed:
        make_crowd({"PROLIFIC_TOKEN": "t", "PROLIFIC_API_URL": f"http://127.0.0.1:{closed}"}).status(calls)
    assert (failed.value.code, failed.value.retryable) == ("no_connection", True)
    assert calls.records[0].attempts == 2


def test_settings_and_fees():
    assert SETTINGS["PROLIFIC_API_URL"] == ("https://api.prolific.com", str)
    assert SETTINGS["PROLIFIC_TOKEN"] == ("", str)
    assert SETTINGS["PROLIFIC_MIN_HOURLY_CENTS"] == (800, int)
    assert FEES.rate == Decimal("0.428")
    assert (FEES.reward_fee(1000, 3), FEES.bonus_fee(150)) == (428, 64)


def test_arrivals_are_read_strictly():
    prolific = Prolific()
    arrived = prolific.arrival({"PROLIFIC_PID": PID, "STUDY_ID": STUDY, "SESSION_ID": SESSION, "extra": "x"})
    assert arrived == Arrival("prolific", preview=False, worker_ref=PID, assignment_ref=SESSION, task_ref=STUDY,
                              return_to=None)
    with pytest.raises(InvalidInput) as refused:
        prolific.arrival({"PROLIFIC_PID": PID.upper(), "STUDY_ID": STUDY + "0", "SESSION_ID": "<script>"})
    assert refused.value.errors == {"PROLIFIC_PID": ["not a Prolific id"], "STUDY_ID": ["not a Prolific id"],
                                    "SESSION_ID": ["not a Prolific id"]}
    # No parameters is a refusal, not a preview: Prolific has none.
    with pytest.raises(InvalidInput) as missing:
        prolific.arrival({})
    assert missing.value.errors == {name: ["missing"] for name in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")}


def test_the_completion_sends_the_browser_to_prolific_with_the_code():
    prolific = Prolific()
    arrived = prolific.arrival({"PROLIFIC_PID": PID, "STUDY_ID": STUDY, "SESSION_ID": SESSION})
    assert prolific.completion(arrived, assignment_id=42, code="C1A2B3C4") == Completion(
        "https://app.prolific.com/submissions/complete", {"cc": "C1A2B3C4"}, method="get")
    assert (prolific.name, prolific.title, prolific.form_origins, prolific.frame_origins,
            prolific.tasks_per_assignment) == ("prolific", "Prolific", ("https://app.prolific.com",), (), "many")
