"""Amazon Mechanical Turk: our work page as a HIT's ExternalQuestion.

MTurk shows the page in a frame on its worker site with `assignmentId`, `hitId`, `workerId` and `turkSubmitTo`
appended to the ExternalQuestion URL; a worker previewing the HIT gets `assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE`
and no `workerId`. The finished work is announced by POSTing a form with `assignmentId` (and at least one more
field) to `{turkSubmitTo}/mturk/externalSubmit`. (MTurk's ExternalQuestion documentation:
https://docs.aws.amazon.com/AWSMechTurk/latest/AWSMturkAPI/ApiReference_ExternalQuestionArticle.html)

What MTurk does not give: proof of who the worker is. The parameters are plain query string, and GetAssignment
serves only Submitted, Approved or Rejected assignments, so an accepted one cannot be checked on arrival. The page
therefore takes the arrival at its word, records our assignment against MTurk's (platforms/models.py), and the
sync (#10) confirms, once MTurk lists the assignment as submitted, that the same workerId submitted it. A forged
arrival earns nothing either way: money reaches MTurk workers only through MTurk's own assignment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from base.errors import InvalidInput
from base.money import FeeModel
from platforms.base import Arrival, Completion

NAME = "mturk"
PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
# Where MTurk's frames post back: production and the sandbox. turkSubmitTo is checked against these, so the page
# never posts a worker's form to a host named in a URL someone else wrote.
SUBMIT_ORIGINS = ("https://www.mturk.com", "https://workersandbox.mturk.com")
# MTurk's ids are upper-case letters and digits (assignment and HIT ids 30 characters, worker ids 12-14); allow
# what the documentation allows (up to 255), but nothing that is not an id.
_ID = re.compile(r"\A[A-Z0-9]{1,255}\Z")


class MTurk:
    name = NAME
    title = "Mechanical Turk"
    form_origins = SUBMIT_ORIGINS

    def arrival(self, args: Mapping[str, str]) -> Arrival:
        assignment = args.get("assignmentId", "")
        if assignment == PREVIEW:
            return Arrival(NAME, preview=True, task_ref=_optional(args.get("hitId")))
        errors: dict[str, list[str]] = {}
        values = {}
        for name in ("assignmentId", "hitId", "workerId"):
            value = args.get(name, "")
            if not _ID.match(value):
                errors[name] = ["missing" if not value else "not an MTurk id"]
            values[name] = value
        submit_to = args.get("turkSubmitTo", "").rstrip("/")
        if submit_to not in SUBMIT_ORIGINS:
            errors["turkSubmitTo"] = [f"must be one of {', '.join(SUBMIT_ORIGINS)}"]
        if errors:
            raise InvalidInput("This page is opened by Mechanical Turk, with its assignment parameters.",
                               errors=errors)
        return Arrival(NAME, preview=False, worker_ref=values["workerId"], assignment_ref=values["assignmentId"],
                       task_ref=values["hitId"], return_to=submit_to)

    def completion(self, arrival: Arrival, *, assignment_id: int, code: str | None = None) -> Completion:
        assert arrival.return_to and arrival.assignment_ref, "a preview completes nothing"
        # MTurk refuses a submit holding only assignmentId; our assignment id is the second field (the answers
        # stay with us).
        return Completion(f"{arrival.return_to}/mturk/externalSubmit",
                          {"assignmentId": arrival.assignment_ref, "crowdmarket_assignment": str(assignment_id)})


def _optional(value: str | None) -> str | None:
    return value if value and _ID.match(value) else None


# Amazon Mechanical Turk's published fees: 20% of reward and bonus, another 20% of the reward for HITs with 10 or
# more assignments, $0.01 at least per assignment and per bonus.
FEES = FeeModel("mturk", rate=Decimal("0.20"), large_hit_rate=Decimal("0.20"), large_hit_assignments=10,
                minimum_cents=1)
