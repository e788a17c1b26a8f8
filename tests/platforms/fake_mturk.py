"""A small fake MTurk requester endpoint on 127.0.0.1, for real boto3 clients (`endpoint_url=fake.url`).

It speaks MTurk's JSON 1.1 protocol (POST /, `X-Amz-Target: MTurkRequesterServiceV20170117.<Operation>`) for the
operations our crowd uses, keeps its state in memory, and answers errors as MTurk does (`{"__type": "RequestError",
"Message": ...}`, HTTP 400), so boto3 raises the same ClientError codes. Test hooks play the worker's side
(`accept`, `submit`) and inject failures (`fail_next`)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TARGET = "MTurkRequesterServiceV20170117."
CONTENT_TYPE = "application/x-amz-json-1.1"
REVIEWED = ("Submitted", "Approved", "Rejected")  # what GetAssignment serves


class MTurkError(Exception):
    def __init__(self, message: str, code: str = "RequestError", status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _processed(token: str) -> MTurkError:
    # How MTurk reports a repeated UniqueRequestToken (seen on CreateHIT*, SendBonus, UpdateExpirationForHIT).
    return MTurkError(f'The idempotency token "{token}" has already been processed. ({int(time.time() * 1000)})')


@dataclass
class Hit:
    hit_id: str
    hit_type_id: str
    max_assignments: int
    question: str
    annotation: str | None
    created: float
    expiration: float

    def expired(self) -> bool:
        return self.expiration <= time.time()


@dataclass
class Assignment:
    assignment_id: str
    hit_id: str
    worker_id: str
    status: str = "Accepted"
    accept_time: float = field(default_factory=time.time)
    submit_time: float | None = None
    feedback: str | None = None


class FakeMTurk:
    """`with FakeMTurk() as fake:` serves at `fake.url` until the block ends."""

    def __init__(self, balance: str = "10000.00") -> None:
        self.balance = balance
        self.hit_types: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, Hit] = {}
        self.assignments: dict[str, Assignment] = {}
        self.bonuses: list[dict[str, Any]] = []
        self.blocks: dict[str, str] = {}  # worker id -> reason
        self.expirations: list[tuple[str, float]] = []  # (HIT id, ExpireAt) as asked
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._tokens: dict[str, str] = {}  # UniqueRequestToken -> what it made
        self._failures: dict[str, list[tuple[str, int]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeMTurk:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = fake._handle(self.headers.get("X-Amz-Target", ""),
                                               self.headers.get("Content-Type", ""), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", f"fake-{next(fake._ids)}")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll keeps shutdown (every test's teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeMTurk:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test hooks: the worker's side and failures -----------------------------------------------------------

    def accept(self, hit_id: str, worker_id: str) -> str:
        """A worker accepting the HIT: a new assignment, as MTurk would make it."""
        with self._lock:
            hit = self.hits[hit_id]
            taken = [a for a in self.assignments.values() if a.hit_id == hit_id]
            if hit.expired() or len(taken) >= hit.max_assignments:
                raise ValueError(f"HIT {hit_id} takes no more workers")
            if worker_id in self.blocks or any(a.worker_id == worker_id for a in taken):
                raise ValueError(f"worker {worker_id} may not accept HIT {hit_id}")
            assignment = Assignment(self._id("A"), hit_id, worker_id)
            self.assignments[assignment.assignment_id] = assignment
            return assignment.assignment_id

    def submit(self, assignment_id: str) -> None:
        """What the worker's POST to /mturk/externalSubmit does."""
        with self._lock:
            assignment = self.assignments[assignment_id]
            if assignment.status != "Accepted":
                raise ValueError(f"assignment {assignment_id} is {assignment.status}")
            assignment.status, assignment.submit_time = "Submitted", time.time()

    def fail_next(self, operation: str, code: str = "ThrottlingException", times: int = 1,
                  status: int = 400) -> None:
        """The next `times` calls of `operation` fail with `code` (the state is left alone)."""
        with self._lock:
            self._failures.setdefault(operation, []).extend([(code, status)] * times)

    # --- the protocol ------------------------------------------------------------------------------------------

    def _handle(self, target: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if not target.startswith(TARGET) or not content_type.startswith(CONTENT_TYPE):
            return 400, {"__type": "UnknownOperationException", "Message": f"not MTurk's protocol: {target}"}
        operation = target.removeprefix(TARGET)
        params = json.loads(body or b"{}")
        with self._lock:
            self.requests.append((operation, params))
            failures = self._failures.get(operation)
            if failures:
                code, status = failures.pop(0)
                return status, {"__type": code, "Message": "Rate exceeded" if "Throttl" in code else code}
            handler = getattr(self, f"_op_{operation}", None)
            if handler is None:
                return 400, {"__type": "UnknownOperationException", "Message": f"unknown operation {operation}"}
            try:
                return 200, handler(params)
            except MTurkError as error:
                return error.status, {"__type": error.code, "Message": error.message}
            except KeyError as missing:
                return 400, {"__type": "ValidationException", "Message": f"{missing} is required"}

    def _id(self, kind: str) -> str:
        return f"3{kind}{next(self._ids):0>{29 - len(kind)}}"

    def _hit_json(self, hit: Hit) -> dict[str, Any]:
        kind = self.hit_types[hit.hit_type_id]
        done = [a for a in self.assignments.values() if a.hit_id == hit.hit_id]
        pending = sum(a.status == "Accepted" for a in done)
        completed = len(done) - pending
        if completed and not pending and (hit.expired() or completed >= hit.max_assignments):
            status = "Reviewable"
        elif hit.expired() or len(done) >= hit.max_assignments:
            status = "Unassignable"
        else:
            status = "Assignable"
        return _present({"HITId": hit.hit_id, "HITTypeId": hit.hit_type_id, "HITGroupId": hit.hit_type_id,
                "CreationTime": hit.created, "Title": kind["Title"], "Description": kind["Description"],
                "Question": hit.question, "Keywords": kind.get("Keywords", ""), "HITStatus": status,
                "MaxAssignments": hit.max_assignments, "Reward": kind["Reward"],
                "AutoApprovalDelayInSeconds": kind.get("AutoApprovalDelayInSeconds", 2592000),
                "Expiration": hit.expiration, "AssignmentDurationInSeconds": kind["AssignmentDurationInSeconds"],
                "RequesterAnnotation": hit.annotation,
                "QualificationRequirements": kind.get("QualificationRequirements", []),
                "NumberOfAssignmentsPending": pending, "NumberOfAssignmentsCompleted": completed,
                "NumberOfAssignmentsAvailable": max(0, hit.max_assignments - len(done))})

    @staticmethod
    def _assignment_json(a: Assignment) -> dict[str, Any]:
        return _present({"AssignmentId": a.assignment_id, "HITId": a.hit_id, "WorkerId": a.worker_id,
                "AssignmentStatus": a.status, "AcceptTime": a.accept_time, "SubmitTime": a.submit_time,
                "RequesterFeedback": a.feedback})

    def _token(self, params: dict[str, Any], made: str) -> None:
        token = params.get("UniqueRequestToken")
        if token is not None:
            if token in self._tokens:
                raise _processed(token)
            self._tokens[token] = made

    def _assignment(self, assignment_id: str) -> Assignment:
        if assignment_id not in self.assignments:
            raise MTurkError(f"Assignment {assignment_id} does not exist.")
        return self.assignments[assignment_id]

    @staticmethod
    def _page(items: list[Any], params: dict[str, Any], key: str) -> dict[str, Any]:
        start, size = int(params.get("NextToken") or 0), int(params.get("MaxResults") or 10)
        page: dict[str, Any] = {key: items[start:start + size], "NumResults": len(items[start:start + size])}
        if start + size < len(items):
            page["NextToken"] = str(start + size)
        return page

    # --- operations -------------------------------------------------------------------------------------------

    def _op_CreateHITType(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 (MTurk's names)
        for name in ("AssignmentDurationInSeconds", "Reward", "Title", "Description"):
            p[name]  # noqa: B018 (required: KeyError answers ValidationException)
        # MTurk gives the same HITTypeId to the same properties.
        for hit_type_id, kind in self.hit_types.items():
            if kind == p:
                return {"HITTypeId": hit_type_id}
        hit_type_id = self._id("TYPE")
        self.hit_types[hit_type_id] = dict(p)
        return {"HITTypeId": hit_type_id}

    def _op_CreateHITWithHITType(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if p["HITTypeId"] not in self.hit_types:
            raise MTurkError(f"Hit type {p['HITTypeId']} does not exist.")
        hit_id = self._id("HIT")
        self._token(p, hit_id)
        now = time.time()
        hit = Hit(hit_id, p["HITTypeId"], p.get("MaxAssignments", 1), p.get("Question", ""),
                  p.get("RequesterAnnotation"), now, now + p["LifetimeInSeconds"])
        self.hits[hit_id] = hit
        return {"HIT": self._hit_json(hit)}

    def _op_ListHITs(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return self._page([self._hit_json(h) for h in self.hits.values()], p, "HITs")

    def _op_ListReviewableHITs(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        hits = [self._hit_json(h) for h in self.hits.values()
                if p.get("HITTypeId") in (None, h.hit_type_id)]
        return self._page([h for h in hits if h["HITStatus"] == p.get("Status", "Reviewable")], p, "HITs")

    def _op_ListAssignmentsForHIT(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if p["HITId"] not in self.hits:
            raise MTurkError(f"Hit {p['HITId']} does not exist.")
        statuses = p.get("AssignmentStatuses") or list(REVIEWED)
        found = [self._assignment_json(a) for a in self.assignments.values()
                 if a.hit_id == p["HITId"] and a.status in statuses]
        return self._page(found, p, "Assignments")

    def _op_GetAssignment(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        assignment = self._assignment(p["AssignmentId"])
        if assignment.status not in REVIEWED:
            raise MTurkError(f"This operation can be called with a status of: {','.join(REVIEWED)}")
        return {"Assignment": self._assignment_json(assignment),
                "HIT": self._hit_json(self.hits[assignment.hit_id])}

    def _op_ApproveAssignment(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        assignment = self._assignment(p["AssignmentId"])
        allowed = ("Submitted", "Rejected") if p.get("OverrideRejection") else ("Submitted",)
        if assignment.status not in allowed:
            raise MTurkError(f"This operation can be called with a status of: {', '.join(allowed)}")
        assignment.status, assignment.feedback = "Approved", p.get("RequesterFeedback")
        return {}

    def _op_RejectAssignment(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        assignment = self._assignment(p["AssignmentId"])
        feedback = p["RequesterFeedback"]
        if assignment.status != "Submitted":
            raise MTurkError("This operation can be called with a status of: Submitted")
        assignment.status, assignment.feedback = "Rejected", feedback
        return {}

    def _op_SendBonus(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        assignment = self._assignment(p["AssignmentId"])
        if assignment.worker_id != p["WorkerId"] or assignment.status not in REVIEWED:
            raise MTurkError(f"Assignment {p['AssignmentId']} is not a submitted assignment of {p['WorkerId']}.")
        if not p["Reason"]:
            raise MTurkError("Reason is required.")
        self._token(p, p["AssignmentId"])
        self.bonuses.append({"WorkerId": p["WorkerId"], "AssignmentId": p["AssignmentId"],
                             "BonusAmount": p["BonusAmount"], "Reason": p["Reason"],
                             "UniqueRequestToken": p.get("UniqueRequestToken")})
        return {}

    def _op_CreateWorkerBlock(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        self.blocks[p["WorkerId"]] = p["Reason"]
        return {}

    def _op_UpdateExpirationForHIT(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if p["HITId"] not in self.hits:
            raise MTurkError(f"Hit {p['HITId']} does not exist.")
        hit = self.hits[p["HITId"]]
        self.expirations.append((hit.hit_id, p["ExpireAt"]))
        hit.expiration = max(p["ExpireAt"], time.time())  # a time in the past expires the HIT now
        return {}

    def _op_GetAccountBalance(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"AvailableBalance": self.balance}


def _present(values: dict[str, Any]) -> dict[str, Any]:
    # MTurk leaves out what a HIT or assignment does not have (no nulls).
    return {name: value for name, value in values.items() if value is not None}
