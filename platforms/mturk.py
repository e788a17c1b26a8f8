"""Amazon Mechanical Turk: our work page as a HIT's ExternalQuestion (`MTurk`, the Platform), and publishing bursts
to MTurk and mirroring our reviews there (`MTurkCrowd`, the Crowd, through boto3).

MTurk shows the page in a frame on its worker site with `assignmentId`, `hitId`, `workerId` and `turkSubmitTo`
appended to the ExternalQuestion URL; a worker previewing the HIT gets `assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE`
and no `workerId`. The finished work is announced by POSTing a form with `assignmentId` (and at least one more
field) to `{turkSubmitTo}/mturk/externalSubmit`.

What MTurk does not give: proof of who the worker is. The parameters are plain query string, and GetAssignment
serves only Submitted, Approved or Rejected assignments, so an accepted one cannot be checked on arrival. The page
therefore takes the arrival at its word, records our assignment against MTurk's (platforms/models.py), and the
sync (#10) confirms, once MTurk lists the assignment as submitted, that the same workerId submitted it. A forged
arrival earns nothing either way: money reaches MTurk workers only through MTurk's own assignment.

Idempotency: HITs and bonuses carry a UniqueRequestToken (at most 64 characters) derived from our keys; MTurk
answers a repeated token with a RequestError saying the idempotency token "has already been processed" (the
documentation's older wording: HitAlreadyExists), which we read as "done before": a HIT is then found again by its
RequesterAnnotation (the same token), a bonus counts as sent. Approving an approved assignment (or rejecting a
rejected one) is refused with "This operation can be called with a status of: Submitted"; GetAssignment confirms.

MTurk's documentation:
https://docs.aws.amazon.com/AWSMechTurk/latest/AWSMturkAPI/ApiReference_ExternalQuestionArticle.html
https://docs.aws.amazon.com/AWSMechTurk/latest/AWSMturkAPI/ApiReference_QualificationRequirementDataStructureArticle.html
https://docs.aws.amazon.com/AWSMechTurk/latest/AWSMechanicalTurkRequester/RequestTokens.html
https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/mturk/aws.sdk.kotlin.services.mturk.model/-create-hit-request/unique-request-token.html
https://docs.amazonaws.cn/goto/WebAPI/mturk-requester-2017-01-17/CreateHITWithHITType
Fees: https://www.mturk.com/pricing (20% of reward and bonus, +20% on HITs of 10 or more assignments, $0.01 min)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import boto3
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from base.errors import InvalidInput
from base.money import FeeModel
from platforms.base import (
    Arrival,
    BurstOrder,
    CallLog,
    Completion,
    ExternalSubmission,
    ExternalTask,
    PlatformError,
)

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
    # The work page is shown in a frame on MTurk's worker sites: production's is worker.mturk.com (which still
    # hands out turkSubmitTo=https://www.mturk.com), the sandbox's workersandbox.mturk.com.
    frame_origins = ("https://worker.mturk.com", *SUBMIT_ORIGINS)
    tasks_per_assignment = "one"

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


# --- publishing and mirroring (the Crowd) ----------------------------------------------------------------------

# Amazon Mechanical Turk's published fees: 20% of reward and bonus, another 20% of the reward for HITs with 10 or
# more assignments, $0.01 at least per assignment and per bonus.
FEES = FeeModel("mturk", rate=Decimal("0.20"), large_hit_rate=Decimal("0.20"), large_hit_assignments=10,
                minimum_cents=1)

SANDBOX_URL = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
PRODUCTION_URL = "https://mturk-requester.us-east-1.amazonaws.com"

# The platform's own settings (merged by the app into its CROWDMARKET_<NAME> settings): default and type.
SETTINGS: dict[str, tuple[Any, type]] = {
    "MTURK_PRODUCTION": (0, int),  # 0: the requester sandbox; 1: production (real money)
    "MTURK_ENDPOINT_URL": ("", str),  # "" = by MTURK_PRODUCTION
    "MTURK_REGION": ("us-east-1", str),
    "MTURK_MIN_PERCENT_APPROVED": (95, int),  # 0 = no requirement
    "MTURK_MIN_HITS_APPROVED": (0, int),  # 0 = no requirement
    "MTURK_LOCALES": ("", str),  # "" = any; "US,CA" or "US-NY" style
    "MTURK_KEYWORDS": ("labeling", str),  # added to every order's keywords
}

# MTurk's system qualification types.
PERCENT_APPROVED = "000000000000000000L0"
HITS_APPROVED = "00000000000000000040"
LOCALE = "00000000000000000071"

# MTurk's limits: idempotency tokens, RequesterFeedback, page size.
TOKEN_MAX = 64
FEEDBACK_MAX = 1024
PAGE = 100
# With a split order, HITs stay under this many assignments so the large-HIT fee does not apply.
SPLIT_MAX = FEES.large_hit_assignments - 1
# A HIT whose expiration is set in the past expires now.
EXPIRE_NOW = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_STATUSES = {"Submitted": "submitted", "Approved": "approved", "Rejected": "rejected"}
_THROTTLED = {"ThrottlingException", "ServiceUnavailable", "ServiceFault"}
_TRANSIENT = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)
_DUPLICATE = re.compile(r"already been processed|AlreadyExists", re.IGNORECASE)
_LOCALE = re.compile(r"\A([A-Z]{2})(?:-([A-Z0-9]{1,3}))?\Z")
_XMLNS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Our MTurk settings from `config`, each as its type, defaults for those missing."""
    return {name: kind(config.get(name, default)) for name, (default, kind) in SETTINGS.items()}


def make_crowd(config: Mapping[str, Any], *, client: Any | None = None) -> MTurkCrowd:
    """The MTurk crowd the settings describe. AWS credentials come from boto3's standard chain. boto3 makes one
    attempt per call: the call log does the retrying, so that each retry is recorded."""
    values = settings(config)
    sandbox = not values["MTURK_PRODUCTION"]
    endpoint = values["MTURK_ENDPOINT_URL"] or (SANDBOX_URL if sandbox else PRODUCTION_URL)
    if client is None:
        client = boto3.client("mturk", region_name=values["MTURK_REGION"], endpoint_url=endpoint,
                              config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    return MTurkCrowd(client, endpoint=endpoint, sandbox=sandbox,
                      requirements=qualification_requirements(values),
                      keywords=_split(values["MTURK_KEYWORDS"]))


def qualification_requirements(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The worker requirements of the settings, as CreateHITType's QualificationRequirements (guarding Accept:
    workers may still preview)."""
    requirements = []
    if values["MTURK_MIN_PERCENT_APPROVED"]:
        requirements.append({"QualificationTypeId": PERCENT_APPROVED, "Comparator": "GreaterThanOrEqualTo",
                             "IntegerValues": [values["MTURK_MIN_PERCENT_APPROVED"]], "ActionsGuarded": "Accept"})
    if values["MTURK_MIN_HITS_APPROVED"]:
        requirements.append({"QualificationTypeId": HITS_APPROVED, "Comparator": "GreaterThanOrEqualTo",
                             "IntegerValues": [values["MTURK_MIN_HITS_APPROVED"]], "ActionsGuarded": "Accept"})
    locales = []
    for locale in _split(values["MTURK_LOCALES"]):
        match = _LOCALE.match(locale.upper())
        if match is None:
            raise ValueError(f"MTURK_LOCALES: {locale!r} is not a country (US) or country-subdivision (US-NY)")
        country, subdivision = match.groups()
        locales.append({"Country": country, **({"Subdivision": subdivision} if subdivision else {})})
    if locales:
        requirements.append({"QualificationTypeId": LOCALE, "Comparator": "In", "LocaleValues": locales,
                             "ActionsGuarded": "Accept"})
    return requirements


def external_question(url: str, frame_height: int = 0) -> str:
    """The ExternalQuestion a HIT shows our page with; frame height 0 lets MTurk size the frame to the window."""
    if not url.startswith("https://"):
        raise ValueError("MTurk shows only an https:// ExternalURL")
    return (f'<ExternalQuestion xmlns="{_XMLNS}"><ExternalURL>{escape(url)}</ExternalURL>'
            f"<FrameHeight>{int(frame_height)}</FrameHeight></ExternalQuestion>")


def dollars(cents: int) -> str:
    """MTurk's amount string ("0.05") for integer cents."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"amounts are integer cents, not {type(cents).__name__}: {cents!r}")
    if cents < 0:
        raise ValueError(f"amounts are not negative: {cents}")
    return str(Decimal(cents).scaleb(-2))


def token(key: str) -> str:
    """An idempotency token within MTurk's 64 characters: the key itself, or its SHA-256 when longer."""
    return key if len(key) <= TOKEN_MAX else hashlib.sha256(key.encode()).hexdigest()


def hit_sizes(order: BurstOrder) -> list[int]:
    """MaxAssignments of each HIT the order needs: `redundancy` each (at most 9 for a split order), the last the
    remainder."""
    if order.tasks < 1 or order.redundancy < 1:
        raise ValueError("an order needs at least one task and a redundancy of at least one")
    size = min(order.redundancy, SPLIT_MAX) if order.split else order.redundancy
    count = math.ceil(order.tasks / size)
    return [size] * (count - 1) + [order.tasks - size * (count - 1)]


class MTurkCrowd:
    """MTurk through a boto3 client: one HIT type per order, HITs under it, assignments mirrored."""

    name = NAME
    fees = FEES

    def __init__(self, client: Any, *, endpoint: str, sandbox: bool,
                 requirements: list[dict[str, Any]] | None = None, keywords: tuple[str, ...] = ()) -> None:
        self.client, self.endpoint, self.sandbox = client, endpoint, sandbox
        self.requirements, self.keywords = requirements or [], keywords

    def publish(self, order: BurstOrder, log: CallLog) -> list[ExternalTask]:
        keywords = ", ".join(dict.fromkeys((*self.keywords, *order.keywords)))
        type_params: dict[str, Any] = {
            "Title": order.title, "Description": order.description, "Keywords": keywords,
            "Reward": dollars(order.reward_cents), "AssignmentDurationInSeconds": order.assignment_seconds,
            "AutoApprovalDelayInSeconds": order.auto_approval_seconds,
        }
        if self.requirements:
            type_params["QualificationRequirements"] = self.requirements
        # MTurk returns the same HITTypeId for the same properties, so a retried publish reuses it.
        hit_type = log.call("CreateHITType", self._request("CreateHITType", **type_params))["HITTypeId"]
        question = external_question(order.url)
        # Our HITs on MTurk by token, listed once: first when this is a retry, else only if MTurk says a token
        # was processed before.
        found: dict[str, dict[str, Any]] | None = self._by_annotation(log) if order.retry else None
        tasks = []
        for i, size in enumerate(hit_sizes(order)):
            key = token(f"{order.key}-{i}")
            if found is not None and key in found:
                hit = found[key]
                tasks.append(ExternalTask(hit["HITId"], hit["MaxAssignments"], order.reward_cents,
                                          group=hit["HITTypeId"], key=key, expires_at=_utc(hit.get("Expiration"))))
                continue
            created = log.call("CreateHITWithHITType", self._request(
                "CreateHITWithHITType", duplicate=True, HITTypeId=hit_type, MaxAssignments=size,
                LifetimeInSeconds=order.lifetime_seconds, Question=question, RequesterAnnotation=key,
                UniqueRequestToken=key), key=key, target=hit_type)
            if created is None:
                if found is None:
                    found = self._by_annotation(log)
                if key not in found:
                    raise PlatformError("HITNotFound", f"MTurk has processed token {key} but lists no HIT for it")
                hit = found[key]
            else:
                hit = created["HIT"]
            tasks.append(ExternalTask(hit["HITId"], hit["MaxAssignments"], order.reward_cents,
                                      group=hit["HITTypeId"], key=key, expires_at=_utc(hit.get("Expiration"))))
        return tasks

    def _by_annotation(self, log: CallLog) -> dict[str, dict[str, Any]]:
        return {hit.get("RequesterAnnotation"): hit for hit in self._hits(log)}

    def submissions(self, tasks: list[ExternalTask], log: CallLog) -> list[ExternalSubmission]:
        """The assignments of the live HITs, and of the expired ones MTurk lists as Reviewable (an expired HIT
        is Unassignable while an accepted assignment may still be submitted, and has nothing new before)."""
        now = dt.datetime.now(dt.UTC)
        live = [t.external_id for t in tasks
                if not t.ended and (t.expires_at is None or _utc(t.expires_at) > now)]
        ended = {t.external_id for t in tasks} - set(live)
        reviewable: set[str] = set()
        # One HIT type's reviewable HITs can include other bursts' (MTurk gives one HITTypeId to the same
        # properties): only the HITs asked about count.
        for group in dict.fromkeys(t.group for t in tasks if t.group and t.external_id in ended):
            for page in self._pages(log, "ListReviewableHITs", target=group, HITTypeId=group, Status="Reviewable"):
                reviewable.update(hit["HITId"] for hit in page["HITs"])
        hit_ids = [*live, *(t.external_id for t in tasks if t.external_id in ended & reviewable)]
        found = []
        for hit_id in hit_ids:
            for page in self._pages(log, "ListAssignmentsForHIT", target=hit_id, HITId=hit_id,
                                    AssignmentStatuses=list(_STATUSES)):
                found.extend(ExternalSubmission(a["AssignmentId"], a["HITId"], a["WorkerId"],
                                                _STATUSES.get(a["AssignmentStatus"], "other"),
                                                a["AssignmentStatus"], _utc(a.get("SubmitTime")))
                             for a in page["Assignments"])
        return found

    def approve(self, submission: ExternalSubmission, log: CallLog, *, feedback: str | None = None) -> None:
        params: dict[str, Any] = {"AssignmentId": submission.external_id}
        if feedback:
            params["RequesterFeedback"] = _feedback(feedback)
        try:
            log.call("ApproveAssignment", self._request("ApproveAssignment", **params),
                     target=submission.external_id)
        except PlatformError as refused:
            self._confirm(log, submission, "Approved", refused)

    def reject(self, submission: ExternalSubmission, log: CallLog, *, feedback: str) -> None:
        params = {"AssignmentId": submission.external_id, "RequesterFeedback": _feedback(feedback)}
        try:
            log.call("RejectAssignment", self._request("RejectAssignment", **params), target=submission.external_id)
        except PlatformError as refused:
            self._confirm(log, submission, "Rejected", refused)

    def bonus(self, log: CallLog, *, submission: ExternalSubmission, cents: int, reason: str, key: str) -> None:
        if not reason.strip():
            raise ValueError("MTurk shows the worker a bonus's reason: it is required")
        amount = dollars(cents)
        if cents == 0:
            raise ValueError("a bonus is at least one cent")
        unique = token(key)
        log.call("SendBonus", self._request(
            "SendBonus", duplicate=True, WorkerId=submission.worker_ref, AssignmentId=submission.external_id,
            BonusAmount=amount, Reason=reason, UniqueRequestToken=unique),
            key=unique, target=submission.external_id)

    def block(self, log: CallLog, *, worker_ref: str, reason: str) -> None:
        if not reason.strip():
            raise ValueError("MTurk requires a reason for blocking a worker")
        log.call("CreateWorkerBlock", self._request("CreateWorkerBlock", WorkerId=worker_ref, Reason=reason),
                 target=worker_ref)

    def cancel(self, task: ExternalTask, log: CallLog) -> None:
        log.call("UpdateExpirationForHIT", self._request(
            "UpdateExpirationForHIT", HITId=task.external_id, ExpireAt=EXPIRE_NOW), target=task.external_id)

    def status(self, log: CallLog) -> dict[str, Any]:
        balance = log.call("GetAccountBalance", self._request("GetAccountBalance"))
        return {"endpoint": self.endpoint, "sandbox": self.sandbox,
                "available_balance": balance["AvailableBalance"]}

    # --- helpers ----------------------------------------------------------------------------------------------

    def _request(self, operation: str, *, duplicate: bool = False,
                 **params: Any) -> Callable[[], dict[str, Any] | None]:
        """A call of `operation` for the call log, boto3's errors made PlatformErrors. With `duplicate`, MTurk
        refusing a token it has processed before means the work was done then: the call returns None."""
        method = getattr(self.client, xform_name(operation))

        def call() -> dict[str, Any] | None:
            try:
                return method(**params)
            except ClientError as exc:
                error = platform_error(exc)
                if duplicate and error.code == "RequestError" and _DUPLICATE.search(error.message):
                    return None
                raise error from exc
            except _TRANSIENT as exc:
                raise PlatformError(type(exc).__name__, str(exc), retryable=True) from exc
            except BotoCoreError as exc:  # no credentials, a request boto3 refuses to send: not worth a retry
                raise PlatformError(type(exc).__name__, str(exc)) from exc

        return call

    def _pages(self, log: CallLog, operation: str, *, target: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every page of a listing, one recorded call per page."""
        next_token = None
        while True:
            paging = {"MaxResults": PAGE, **({"NextToken": next_token} if next_token else {})}
            page = log.call(operation, self._request(operation, **params, **paging), target=target, listing=True)
            yield page
            next_token = page.get("NextToken")
            if not next_token:
                return

    def _hits(self, log: CallLog) -> Iterator[dict[str, Any]]:
        for page in self._pages(log, "ListHITs", target="requester"):
            yield from page["HITs"]

    def _confirm(self, log: CallLog, submission: ExternalSubmission, wanted: str, refused: PlatformError) -> None:
        """MTurk refuses to review an assignment twice (a RequestError); it counts as done when GetAssignment
        shows the status we asked for. Anything else raises the refusal."""
        if refused.code != "RequestError":
            raise refused
        try:
            found = log.call("GetAssignment", self._request("GetAssignment", AssignmentId=submission.external_id),
                             target=submission.external_id)
        except PlatformError:
            raise refused from None
        if found["Assignment"]["AssignmentStatus"] != wanted:
            raise refused


def platform_error(exc: ClientError) -> PlatformError:
    """A boto3 ClientError as a PlatformError: throttling, MTurk's service faults and HTTP 429/5xx retryable."""
    error = exc.response.get("Error", {})
    code, message = error.get("Code") or "Unknown", error.get("Message") or str(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    retryable = (code in _THROTTLED or "rate exceeded" in message.lower()
                 or status is not None and (status == 429 or status >= 500))
    return PlatformError(code, message, retryable=retryable, status=status)


def _feedback(text: str) -> str:
    if not text.strip():
        raise ValueError("feedback must not be empty")
    if len(text) > FEEDBACK_MAX:
        raise ValueError(f"MTurk takes at most {FEEDBACK_MAX} characters of feedback")
    return text


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None
