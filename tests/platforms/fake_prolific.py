"""A fake of Prolific's API on 127.0.0.1, in a thread: the endpoints ProlificCrowd uses, with Prolific's token
check, paging (`_links.next.href`), error body and state changes, all in memory. Every request is recorded.

    with FakeProlific() as fake:
        crowd = make_crowd({"PROLIFIC_TOKEN": fake.token, "PROLIFIC_API_URL": fake.url})

Hooks: `add_submission` (a participant who finished: AWAITING REVIEW), `add_group`, `fail_next` (answer the next
requests whose path contains a fragment with an error status, before or after acting on them), `page_size`."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "fake-prolific-token"
REJECTION_CATEGORIES = {"TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL", "FAILED_CHECK",
                        "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER"}
_REQUIRED_STUDY = ("name", "description", "external_study_url", "prolific_id_option", "completion_codes",
                   "total_available_places", "estimated_completion_time", "reward")


def new_id() -> str:
    return secrets.token_hex(12)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class _Failure:
    fragment: str
    method: str | None
    status: int
    times: int
    after: bool


class _Refused(Exception):
    def __init__(self, status: int, title: str, detail: Any = None) -> None:
        self.status, self.title, self.detail = status, title, detail


@dataclass
class FakeProlific:
    token: str = TOKEN
    page_size: int = 100
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    bonuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    me: dict[str, Any] = field(default_factory=lambda: {
        "id": new_id(), "email": "requester@example.com", "currency_code": "USD", "balance": 125000,
        "available_balance": 100000})

    def __post_init__(self) -> None:
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # A short poll, so shutdown (each test's teardown) does not wait out the default half second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeProlific:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # --- hooks ----------------------------------------------------------------------------------------------

    def add_submission(self, study_id: str, participant_id: str, session_id: str | None = None) -> str:
        """A participant who finished the study and awaits review; returns the submission id (= SESSION_ID)."""
        submission_id = session_id or new_id()
        with self._lock:
            self.submissions[submission_id] = {
                "id": submission_id, "study_id": study_id, "participant_id": participant_id,
                "status": "AWAITING REVIEW", "started_at": "2026-12-01T10:00:00.000000Z",
                "completed_at": "2026-12-01T10:12:30.500000Z", "bonus_payments": []}
        return submission_id

    def add_group(self) -> str:
        group_id = new_id()
        with self._lock:
            self.groups[group_id] = []
        return group_id

    def fail_next(self, path_fragment: str, status: int = 429, times: int = 1, *, method: str | None = None,
                  after: bool = False) -> None:
        """Answer the next `times` requests (of `method`, if given) whose path contains `path_fragment` with
        `status`: before acting on them, or with `after`, once acted on (an answer lost on the way back)."""
        with self._lock:
            self._failures.append(_Failure(path_fragment, method, status, times, after))

    def sent(self, method: str, fragment: str) -> list[Recorded]:
        """The requests recorded with this method and a path containing `fragment`."""
        return [r for r in self.requests if r.method == method and fragment in r.path]

    def sent_to(self, method: str, path: str) -> list[Recorded]:
        """The requests recorded with this method and path."""
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    # --- the API --------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p][2:]  # after api/v1
        match method, parts:
            case "GET", ["users", "me"]:
                return 200, self.me
            case "GET", ["studies"]:
                return 200, self._page(path, query, list(self.studies.values()))
            case "POST", ["studies"]:
                return 201, self._create_study(body)
            case "GET", ["studies", study_id]:
                return 200, self._study(study_id)
            case "POST", ["studies", study_id, "transition"]:
                return 200, self._transition_study(self._study(study_id), body.get("action"))
            case "GET", ["submissions"]:
                study_id = query.get("study", [""])[0]
                self._study(study_id)
                rows = [s for s in self.submissions.values() if s["study_id"] == study_id]
                return 200, self._page(path, query, rows)
            case "GET", ["submissions", submission_id]:
                return 200, self._submission(submission_id)
            case "POST", ["submissions", submission_id, "transition"]:
                return 200, self._transition_submission(self._submission(submission_id), body)
            case "POST", ["submissions", "bonus-payments"]:
                return 201, self._set_up_bonus(body)
            case "POST", ["bulk-bonus-payments", bulk_id, "pay"]:
                return 202, self._pay(bulk_id)
            case "POST", ["participant-groups", group_id, "participants"]:
                return 200, self._add_members(group_id, body)
        raise _Refused(404, "Not found")

    def _page(self, path: str, query: dict[str, list[str]], rows: list[dict[str, Any]]) -> dict[str, Any]:
        page = int(query.get("page", ["1"])[0])
        start = (page - 1) * self.page_size
        more = start + self.page_size < len(rows)
        others = "".join(f"&{k}={v[0]}" for k, v in query.items() if k != "page")
        return {"results": rows[start:start + self.page_size], "meta": {"count": len(rows)},
                "_links": {"next": {"href": f"{self.url}{path}?page={page + 1}{others}" if more else None}}}

    def _create_study(self, body: dict[str, Any]) -> dict[str, Any]:
        missing = [name for name in _REQUIRED_STUDY if name not in body]
        if missing:
            raise _Refused(400, "Invalid request", {name: ["This field is required."] for name in missing})
        if not isinstance(body["reward"], int) or body["reward"] < 1:
            raise _Refused(400, "Invalid request", {"reward": ["A positive integer (cents)."]})
        study = {**body, "id": new_id(), "status": "UNPUBLISHED"}
        self.studies[study["id"]] = study
        return study

    def _study(self, study_id: str) -> dict[str, Any]:
        if study_id not in self.studies:
            raise _Refused(404, "Not found", "No study with that id.")
        return self.studies[study_id]

    def _transition_study(self, study: dict[str, Any], action: str | None) -> dict[str, Any]:
        moves = {("UNPUBLISHED", "PUBLISH"): "ACTIVE", ("ACTIVE", "STOP"): "AWAITING REVIEW",
                 ("PAUSED", "STOP"): "AWAITING REVIEW", ("ACTIVE", "PAUSE"): "PAUSED", ("PAUSED", "START"): "ACTIVE"}
        new = moves.get((study["status"], action))
        if new is None:
            raise _Refused(400, "Invalid transition", f"Cannot {action} a study that is {study['status']}.")
        study["status"] = new
        return study

    def _submission(self, submission_id: str) -> dict[str, Any]:
        if submission_id not in self.submissions:
            raise _Refused(404, "Not found", "No submission with that id.")
        return self.submissions[submission_id]

    def _transition_submission(self, submission: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        if action == "REJECT":
            if len(body.get("message") or "") < 100:
                raise _Refused(400, "Invalid request", {"message": ["Must be at least 100 characters long."]})
            if body.get("rejection_category") not in REJECTION_CATEGORIES:
                raise _Refused(400, "Invalid request", {"rejection_category": ["Not a valid choice."]})
        new = {"APPROVE": "APPROVED", "REJECT": "REJECTED"}.get(action or "")
        # Once reviewed, a submission's status cannot change again.
        if new is None or submission["status"] != "AWAITING REVIEW":
            raise _Refused(400, "Invalid transition", f"Cannot {action} a submission that is {submission['status']}.")
        submission["status"] = new
        if action == "REJECT":
            submission["rejection"] = {"message": body["message"], "category": body["rejection_category"]}
        return submission

    def _set_up_bonus(self, body: dict[str, Any]) -> dict[str, Any]:
        study = self._study(body.get("study_id", ""))
        rows = []
        for line in (body.get("csv_bonuses") or "").strip().splitlines():
            ref, amount = line.split(",")
            taken = [s for s in self.submissions.values()
                     if s["study_id"] == study["id"] and ref in (s["id"], s["participant_id"])]
            if not taken:
                raise _Refused(400, "Invalid request", f"{ref} did not take part in the study.")
            rows.append((taken[0]["id"], int(Decimal(amount) * 100), amount))
        cents = sum(r[1] for r in rows)
        bulk = {"id": new_id(), "study": study["id"], "amount": cents, "fees": 0, "total_amount": cents,
                "rows": rows, "paid": 0}
        self.bonuses[bulk["id"]] = bulk
        return {k: v for k, v in bulk.items() if k not in ("rows", "paid")}

    def _pay(self, bulk_id: str) -> str:
        if bulk_id not in self.bonuses:
            raise _Refused(404, "Not found", "No bonus payment with that id.")
        bulk = self.bonuses[bulk_id]
        # As documented: not idempotent, every call pays again.
        bulk["paid"] += 1
        for submission_id, cents, _ in bulk["rows"]:
            self.submissions[submission_id]["bonus_payments"].append(float(cents))
        return "The bonuses will be paid."

    def _add_members(self, group_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if group_id not in self.groups:
            raise _Refused(404, "Not found", "No participant group with that id.")
        members = self.groups[group_id]
        members.extend(p for p in body.get("participant_ids", []) if p not in members)
        return {"results": [{"participant_id": p} for p in members]}

    # --- plumbing -------------------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode(errors="replace")
        with self._lock:
            self.requests.append(Recorded(method, parts.path, query, headers, body))
            failure = next((f for f in self._failures
                            if f.fragment in parts.path and f.method in (None, method)), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
            try:
                if headers.get("Authorization") != f"Token {self.token}":
                    raise _Refused(401, "Unauthorized", "Authentication credentials were not provided.")
                if failure is not None and not failure.after:
                    raise _Refused(failure.status, "Injected failure")
                result = self.handle(method, parts.path, query, body if isinstance(body, dict) else {})
                if failure is not None:
                    raise _Refused(failure.status, "Injected failure after acting")
                return result
            except _Refused as refused:
                return refused.status, {"error": {"status": refused.status, "error_code": 140000 + refused.status,
                                                  "title": refused.title, "detail": refused.detail}}


def _handler(fake: FakeProlific) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = fake.answer(self.command, self.path, dict(self.headers.items()),
                                          self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            pass

    return Handler
