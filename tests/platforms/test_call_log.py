"""The job log: failures written at once (none is ever lost), successful calls with the next record, and a run
of listing pages as one row; retries with backoff, recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from platforms import service
from platforms.base import PlatformError
from platforms.calls import RecordingLog
from platforms.models import PlatformCall


def _fails(*errors: PlatformError):
    left = list(errors)

    def call():
        if left:
            raise left.pop(0)
        return "ok"
    return call


def _rows(session):
    session.expire_all()
    return [(r.operation, r.calls, r.target, r.last_target, r.outcome, r.attempts)
            for r in session.scalars(select(PlatformCall).order_by(PlatformCall.id))]


def test_listing_pages_are_one_row_and_a_failure_is_written_at_once(database, session):
    log = service.call_log(database, platform="mturk", job="sync", burst_id=None, sleep=lambda s: None)
    for hit in ("H0", "H1", "H2"):
        log.call("ListAssignmentsForHIT", lambda: {}, target=hit, listing=True)
    log.call("ApproveAssignment", lambda: None, target="A1")
    log.call("ListAssignmentsForHIT", _fails(PlatformError("ThrottlingException", "slow", retryable=True)),
             target="H3", listing=True)  # retried: a row of its own, with its attempts
    assert _rows(session) == []  # successes wait for the job's next record
    with pytest.raises(PlatformError):
        log.call("SendBonus", _fails(PlatformError("RequestError", "no")), key="cm-topup-1-10", target="A1")
    assert _rows(session) == [("ListAssignmentsForHIT", 3, "H0", "H2", "ok", 1),
                              ("ApproveAssignment", 1, "A1", None, "ok", 1),
                              ("ListAssignmentsForHIT", 1, "H3", None, "ok", 2),
                              ("SendBonus", 1, "A1", None, "error", 1)]
    log.call("ListAssignmentsForHIT", lambda: {}, target="H4", listing=True)
    log.close()
    assert _rows(session)[-1] == ("ListAssignmentsForHIT", 1, "H4", None, "ok", 1)


def test_retryable_errors_are_retried_with_growing_waits_and_the_rest_raised_once():
    waits: list[float] = []
    log = RecordingLog(sleep=waits.append, attempts=4, base_delay=1.0)
    throttled = PlatformError("ThrottlingException", "Rate exceeded", retryable=True)
    assert log.call("CreateHITWithHITType", _fails(throttled, throttled), key="k") == "ok"
    assert len(waits) == 2 and 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0  # jittered, doubling
    with pytest.raises(PlatformError):
        log.call("CreateHITWithHITType", _fails(throttled, throttled, throttled, throttled))  # gives up at 4
    with pytest.raises(PlatformError):
        log.call("ApproveAssignment", _fails(PlatformError("RequestError", "bad")))
    assert [(r.attempts, r.outcome, len(r.errors)) for r in log.records] == [(3, "ok", 2), (4, "error", 4),
                                                                           (1, "error", 1)]
