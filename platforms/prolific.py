"""Prolific: a burst as one study whose participants work through the burst's HITs in our work page.

Arrival. Prolific opens the study URL in a tab with the placeholders we append to it filled in: `PROLIFIC_PID`
(the participant), `STUDY_ID` and `SESSION_ID` (the submission: "Submission id. This is the ID we pass to the
survey platform using %SESSION_ID%"), each a 24-character lower-case hexadecimal id. Prolific has no preview in
MTurk's sense: a participant only reaches the URL by starting a submission, so a request without the three
parameters is refused, never treated as a preview. The work is handed back by sending the browser to
`https://app.prolific.com/submissions/complete?cc=<completion code>`.

API. `https://api.prolific.com/api/v1/`, JSON, `Authorization: Token <token>`. Lists are paged with
`_links.next.href` (null on the last page); errors are `{"error": {"status", "error_code", "title", "detail"}}`.
- study: POST studies/ makes a draft (UNPUBLISHED); POST studies/{id}/transition/ with PUBLISH or STOP. `reward`
  is in the study currency's cents, `estimated_completion_time` in minutes. Create takes no idempotency key, so
  `internal_name` carries our burst key and a retry looks for it first.
- submissions: GET submissions/?study={id}; POST submissions/{id}/transition/ with APPROVE, or REJECT with a
  `message` of at least 100 characters and a `rejection_category`. A submission's `bonus_payments` lists the
  bonuses paid on it, in cents.
- bonuses: POST submissions/bonus-payments/ sets one up from `csv_bonuses` ("<submission id>,<amount>" with the
  amount a decimal in the study currency, "1.50"), which pays nothing; POST bulk-bonus-payments/{id}/pay/ pays it,
  asynchronously, and is documented as NOT idempotent.
- blocks: POST participant-groups/{id}/participants/ with `participant_ids`; a study excludes that group with the
  filter `{"filter_id": "participant_group_blocklist", "selected_values": [group id]}`.

Sources:
- https://docs.prolific.com/documentation/get-started/your-first-data-collection (users/me, create, publish)
- https://docs.prolific.com/api-reference/studies and https://docs.prolific.com/api-reference/studies/the-study-object
  (statuses, external_study_url placeholders, completion_codes)
- https://docs.prolific.com/documentation/core-concepts/reviewing-submissions-and-rewards (MANUALLY_REVIEW,
  the complete?cc= redirect)
- https://docs.prolific.com/api-reference/submissions/submission-object (submission statuses)
- https://docs.prolific.com/api-reference/submissions/get-submission (id = SESSION_ID, bonus_payments in cents)
- https://docs.prolific.com/api-reference/submissions/transition-submission (APPROVE/REJECT, 100-character
  message, rejection_category)
- https://docs.prolific.com/api-reference/bonuses/create-bonus-payments and
  https://docs.prolific.com/api-reference/bonuses/pay-bonus-payments (set up, pay, not idempotent)
- https://docs.prolific.com/api-reference/participant-groups (allowlist and blocklist filters)
- https://researcher-help.prolific.com/hc/en-gb/articles/4407695146002-Prolific-s-payment-principles (minimum pay)
- https://www.prolific.com/pricing (platform fee)
The field names, the transition actions and the rejection categories were checked against Prolific's own client
(github.com/prolific-oss/cli: model/study.go, client/client.go, client/participant_group.go) and Mephisto's
Prolific provider (github.com/facebookresearch/Mephisto, providers/prolific/api/constants.py).

Where the documentation is silent and we chose:
- the listing of every study (GET studies/ with no status filter) is taken to include drafts;
- a transition Prolific refuses (4xx) because it already happened (PUBLISH twice, STOP twice, APPROVE twice) is
  confirmed by reading the study or submission back, whatever the refusal says;
- a study found for the key is published only when UNPUBLISHED; a PAUSED one is left as the requester left it;
- no `maximum_allowed_time` is sent (Prolific derives it from the estimate: our per-HIT assignment time does not
  describe a session of many HITs) and no currency (a study is in its workspace's currency, which
  PROLIFIC_MIN_HOURLY_CENTS must be in); all devices are allowed;
- rejections use the category OTHER, the feedback being the explanation;
- a bonus: see `ProlificCrowd.bonus` for what is safe on a retry and what is not."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import NewConnectionError

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

NAME = "prolific"
APP_ORIGIN = "https://app.prolific.com"
COMPLETE_URL = f"{APP_ORIGIN}/submissions/complete"
# Prolific's ids (participants, studies, submissions) are 24 lower-case hex digits, e.g. 60ffe5c8371090c7041d43f8.
_ID = re.compile(r"\A[0-9a-f]{24}\Z")
_ARRIVAL_FIELDS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
STUDY_URL_PARAMETERS = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"

# Prolific's platform fee as its pricing page states it (read 2026-09-20): 42.8% of participant payments, rewards
# and bonuses alike, for companies (33.3% for academic and non-profit accounts, which we are not).
FEES = FeeModel(NAME, rate=Decimal("0.428"))

SETTINGS: dict[str, tuple[Any, type]] = {
    "PROLIFIC_TOKEN": ("", str),  # "" = not configured
    "PROLIFIC_API_URL": ("https://api.prolific.com", str),
    # Prolific's minimum reward per hour, in the study currency's cents: $8.00 (or £6.00 in a GBP workspace: 600).
    "PROLIFIC_MIN_HOURLY_CENTS": (800, int),
    # The participant group our studies exclude and blocks add to; "" = blocks are not mirrored to Prolific.
    "PROLIFIC_BLOCK_GROUP_ID": ("", str),
}

# (connect, read) seconds: every request has both, so a stalled Prolific cannot hold a worker forever.
TIMEOUT = (5.0, 30.0)
REJECTION_CATEGORY = "OTHER"
REJECTION_CONTEXT = ("(This is the requester's review of the answers you gave on the study's task page; the "
                     "tasks and their guidelines are shown there.)")
MIN_REJECTION_MESSAGE = 100
_STATUSES = {"AWAITING REVIEW": "submitted", "APPROVED": "approved", "REJECTED": "rejected"}


class Prolific:
    name = NAME
    title = "Prolific"
    form_origins = (APP_ORIGIN,)
    frame_origins: tuple[str, ...] = ()  # Prolific opens the study in a tab
    tasks_per_assignment = "many"

    def arrival(self, args: Mapping[str, str]) -> Arrival:
        errors: dict[str, list[str]] = {}
        for field in _ARRIVAL_FIELDS:
            value = args.get(field, "")
            if not _ID.match(value):
                errors[field] = ["missing" if not value else "not a Prolific id"]
        if errors:
            raise InvalidInput("This page is opened by Prolific, with its study parameters.", errors=errors)
        return Arrival(NAME, preview=False, worker_ref=args["PROLIFIC_PID"], assignment_ref=args["SESSION_ID"],
                       task_ref=args["STUDY_ID"], return_to=None)

    def completion(self, arrival: Arrival, *, assignment_id: int, code: str | None = None) -> Completion:
        # The submission is identified by the participant's session on Prolific's site; the code tells Prolific
        # the study was completed (our assignment id stays with us).
        assert arrival.assignment_ref and code, "a Prolific completion needs the study's completion code"
        return Completion(COMPLETE_URL, {"cc": code}, method="get")


def make_crowd(config: Mapping[str, Any], *, session: requests.Session | None = None) -> ProlificCrowd:
    """The crowd from the parsed settings (SETTINGS' defaults for any missing)."""
    value = {name: config.get(name, default) for name, (default, _) in SETTINGS.items()}
    return ProlificCrowd(token=value["PROLIFIC_TOKEN"], api_url=value["PROLIFIC_API_URL"],
                         min_hourly_cents=int(value["PROLIFIC_MIN_HOURLY_CENTS"]),
                         block_group_id=value["PROLIFIC_BLOCK_GROUP_ID"], session=session)


class ProlificCrowd:
    name = NAME
    fees = FEES

    def __init__(self, *, token: str, api_url: str, min_hourly_cents: int, block_group_id: str = "",
                 session: requests.Session | None = None) -> None:
        self._token, self._api = token, api_url.rstrip("/")
        self._min_hourly, self._block_group = min_hourly_cents, block_group_id
        self._http = session or requests.Session()

    # --- publishing -----------------------------------------------------------------------------------------

    def publish(self, order: BurstOrder, log: CallLog) -> list[ExternalTask]:
        """One study per burst, found again by `internal_name == order.key` on a retry, published unless it
        already was."""
        body = self.study_body(order)
        study = self._find_study(order.key, log)
        if study is None:
            retried = False

            def create() -> dict[str, Any]:
                nonlocal retried
                # The create may have landed although its answer was lost (a timeout, a 5xx): look again first.
                if retried and (found := self._find_study(order.key, log)) is not None:
                    return found
                retried = True
                return self._request("POST", "/api/v1/studies/", json=body)

            study = log.call("create_study", create, key=order.key, target=order.url)
        if study["status"] == "UNPUBLISHED":
            self._transition_study(study["id"], "PUBLISH", log, key=order.key,
                                   done=lambda status: status != "UNPUBLISHED")
        return [ExternalTask(study["id"], int(study["total_available_places"]), int(study["reward"]),
                             key=order.key)]

    def study_body(self, order: BurstOrder) -> dict[str, Any]:
        """The study we ask Prolific for: `redundancy` places, each participant doing their share of the tasks
        for a reward no lower than Prolific's minimum hourly pay over the estimated time."""
        if order.redundancy < 1 or order.tasks < 1:
            raise ValueError("a Prolific study needs at least one place and one task")
        if not order.completion_code:
            raise ValueError("a Prolific study needs a completion code")
        tasks_each = -(-order.tasks // order.redundancy)
        minutes = max(1, -(-tasks_each * order.estimated_seconds // 60))
        reward = max(tasks_each * order.reward_cents, -(-self._min_hourly * minutes // 60))
        separator = "&" if "?" in order.url else "?"
        body: dict[str, Any] = {
            "name": order.title,
            "internal_name": order.key,
            "description": order.description,
            "external_study_url": f"{order.url}{separator}{STUDY_URL_PARAMETERS}",
            "prolific_id_option": "url_parameters",
            # MANUALLY_REVIEW leaves each submission AWAITING REVIEW until our review approves or rejects it.
            "completion_codes": [{"code": order.completion_code, "code_type": "COMPLETED",
                                  "actions": [{"action": "MANUALLY_REVIEW"}]}],
            "total_available_places": order.redundancy,
            "estimated_completion_time": minutes,
            "reward": reward,
            "device_compatibility": ["desktop", "tablet", "mobile"],
        }
        if self._block_group:
            body["filters"] = [{"filter_id": "participant_group_blocklist", "selected_values": [self._block_group]}]
        return body

    def cancel(self, task: ExternalTask, log: CallLog) -> None:
        """STOP the study: no new participants; those already in it finish."""
        self._transition_study(task.external_id, "STOP", log, key=task.key,
                               done=lambda status: status in ("AWAITING REVIEW", "COMPLETED"))

    def _find_study(self, key: str, log: CallLog) -> dict[str, Any] | None:
        for study in self._pages("list_studies", "/api/v1/studies/", log):
            if study.get("internal_name") == key:
                return study
        return None

    def _transition_study(self, study_id: str, action: str, log: CallLog, *, key: str | None,
                          done: Callable[[str], bool]) -> None:
        path = f"/api/v1/studies/{study_id}/"
        try:
            log.call(f"{action.lower()}_study", lambda: self._request("POST", f"{path}transition/",
                                                                      json={"action": action}),
                     key=key, target=study_id)
        except PlatformError as refused:
            if refused.retryable or refused.status is None:
                raise
            current = log.call("get_study", lambda: self._request("GET", path), key=key, target=study_id)
            if not done(current.get("status", "")):
                raise

    # --- mirroring our decisions ----------------------------------------------------------------------------

    def submissions(self, tasks: list[ExternalTask], log: CallLog) -> list[ExternalSubmission]:
        found = []
        for task in tasks:
            path = f"/api/v1/submissions/?study={task.external_id}"
            for row in self._pages("list_submissions", path, log):
                raw = row.get("status", "")
                found.append(ExternalSubmission(
                    external_id=row["id"], task_ref=task.external_id,
                    worker_ref=row.get("participant_id") or row.get("participant") or "",
                    status=_STATUSES.get(raw, "other"), raw_status=raw,
                    submitted_at=_timestamp(row.get("completed_at"))))
        return found

    def approve(self, submission: ExternalSubmission, log: CallLog, *, feedback: str | None = None) -> None:
        # Prolific's APPROVE takes no message; the feedback stays with us.
        self._transition_submission(submission, {"action": "APPROVE"}, "APPROVED", log)

    def reject(self, submission: ExternalSubmission, log: CallLog, *, feedback: str) -> None:
        if len(feedback) < MIN_REJECTION_MESSAGE:
            # Our reviewers' feedback is often one line; Prolific wants 100 characters: say where it came from.
            feedback = f"{feedback.strip()} {REJECTION_CONTEXT}"
        self._transition_submission(submission, {"action": "REJECT", "message": feedback,
                                                 "rejection_category": REJECTION_CATEGORY}, "REJECTED", log)

    def _transition_submission(self, submission: ExternalSubmission, body: dict[str, str], done: str,
                               log: CallLog) -> None:
        path = f"/api/v1/submissions/{submission.external_id}/"

        def transition() -> Any:
            return self._request("POST", f"{path}transition/", json=body)

        try:
            log.call(body["action"].lower(), transition, target=submission.external_id)
        except PlatformError as refused:
            if refused.retryable or refused.status is None:
                raise
            current = self._submission(submission.external_id, log)
            if current.get("status") != done:
                raise

    def bonus(self, log: CallLog, *, submission: ExternalSubmission, cents: int, reason: str, key: str) -> None:
        """Set up a bonus of `cents` on the submission, then pay it. Prolific's bonuses carry no reason (it stays
        with us) and no idempotency key, and paying is documented as not idempotent. So:
        - a bonus of this amount already listed on the submission counts as this one (a retry after a pay whose
          answer was lost finds it there);
        - setting up is retried freely (an unpaid set-up costs nothing); paying is retried only on failures that
          mean Prolific did not take it (429, no connection made); a 5xx or a timeout after sending is raised as
          `bonus_unconfirmed`, not retried, for a person to check.
        Remaining gap: Prolific lists a paid bonus only once its asynchronous payment is made ("in the following
        minutes"), so a retry with the same key inside that window, after a pay whose answer was lost, pays
        again; and a second bonus of the same amount on the same submission under another key is taken for
        paid and skipped."""
        if cents <= 0:
            raise ValueError("a bonus is a positive number of cents")
        current = self._submission(submission.external_id, log, key=key)
        if cents in {round(paid) for paid in current.get("bonus_payments") or []}:
            return
        amount = Decimal(cents).scaleb(-2)  # "1.50" in the study currency
        bulk = log.call("set_up_bonus", lambda: self._request("POST", "/api/v1/submissions/bonus-payments/", json={
            "study_id": submission.task_ref, "csv_bonuses": f"{submission.external_id},{amount}\n"}),
            key=key, target=submission.external_id)

        def pay() -> Any:
            try:
                return self._request("POST", f"/api/v1/bulk-bonus-payments/{bulk['id']}/pay/")
            except PlatformError as exc:
                if exc.retryable and exc.code not in ("throttled", "no_connection"):
                    raise PlatformError("bonus_unconfirmed", f"the payment may have been made: {exc.message}",
                                        status=exc.status) from exc
                raise

        log.call("pay_bonus", pay, key=key, target=submission.external_id)

    def block(self, log: CallLog, *, worker_ref: str, reason: str) -> None:
        """Add the participant to the configured participant group, which our studies exclude. Prolific's groups
        hold no reason; it stays with us."""
        def add() -> Any:
            if not self._block_group:
                raise PlatformError("not_configured", "PROLIFIC_BLOCK_GROUP_ID is not set: blocks are not mirrored")
            return self._request("POST", f"/api/v1/participant-groups/{self._block_group}/participants/",
                                 json={"participant_ids": [worker_ref]})

        log.call("block", add, target=worker_ref)

    def status(self, log: CallLog) -> dict[str, Any]:
        me = log.call("get_me", lambda: self._request("GET", "/api/v1/users/me/"))
        return {"platform": NAME, "endpoint": self._api, "user": me.get("id"), "email": me.get("email"),
                "currency": me.get("currency_code"), "balance_cents": me.get("balance"),
                "available_balance_cents": me.get("available_balance"),
                "block_group": self._block_group or None}

    # --- HTTP -----------------------------------------------------------------------------------------------

    def _submission(self, submission_id: str, log: CallLog, *, key: str | None = None) -> dict[str, Any]:
        return log.call("get_submission", lambda: self._request("GET", f"/api/v1/submissions/{submission_id}/"),
                        key=key, target=submission_id)

    def _pages(self, operation: str, path: str, log: CallLog) -> Iterator[dict[str, Any]]:
        url: str | None = self._api + path
        while url:
            page = log.call(operation, lambda url=url: self._request("GET", url), target=url, listing=True)
            yield from page.get("results", [])
            url = ((page.get("_links") or {}).get("next") or {}).get("href")

    def _request(self, method: str, path_or_url: str, *, json: Any = None) -> Any:
        """One request; every failure a PlatformError (429, 5xx and connection failures retryable)."""
        if not self._token:
            raise PlatformError("not_configured", "PROLIFIC_TOKEN is not set")
        url = path_or_url if "://" in path_or_url else self._api + path_or_url
        if _origin(url) != _origin(self._api):
            # A next-page link elsewhere would take our token with it.
            raise PlatformError("bad_link", f"{url} is not on {self._api}")
        try:
            response = self._http.request(method, url, json=json, timeout=TIMEOUT,
                                          headers={"Authorization": f"Token {self._token}",
                                                   "Accept": "application/json"})
        except requests.ConnectTimeout as exc:
            raise PlatformError("no_connection", str(exc), retryable=True) from exc
        except requests.ConnectionError as exc:
            # No connection made (refused, unresolvable): Prolific never saw the request. Otherwise the
            # connection broke after sending, and Prolific may have acted on it.
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            code = "no_connection" if isinstance(reason, NewConnectionError) else "connection_lost"
            raise PlatformError(code, str(exc), retryable=True) from exc
        except requests.Timeout as exc:
            raise PlatformError("timeout", str(exc), retryable=True) from exc
        except requests.RequestException as exc:
            raise PlatformError("request_failed", str(exc)) from exc
        if response.status_code == 429:
            raise PlatformError("throttled", _detail(response), retryable=True, status=429)
        if response.status_code >= 500:
            raise PlatformError("server_error", _detail(response), retryable=True, status=response.status_code)
        if response.status_code >= 400:
            raise PlatformError(_code(response), _detail(response), status=response.status_code)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise PlatformError("bad_response", f"not JSON: {response.text[:200]}",
                                status=response.status_code) from exc


def _error(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _code(response: requests.Response) -> str:
    error = _error(response)
    return str(error.get("error_code") or error.get("title") or f"http_{response.status_code}")


def _detail(response: requests.Response) -> str:
    error = _error(response)
    return str(error.get("detail") or error.get("title") or response.text[:200] or response.reason)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _timestamp(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None
