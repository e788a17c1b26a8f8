"""The crowd worker's work page: one page load, then tasks come and go through small JSON endpoints under
/work/tasks/ that call the very functions the worker API calls (market/engine/api.py, market/quality/api.py).

They are page endpoints, not API ones: the page session authenticates them (never a bearer token), every POST
carries the CSRF header (edge/web.py checks it), and errors are problem+json like the API's. Who may act is
decided in one place, `_worker()`: the page session, or a signed per-assignment work token for a page inside a
platform's frame (console/external.py: MTurk's ExternalQuestion), where our session cookie is not sent.

Why the next task comes in the submit's own response rather than being leased ahead: the engine lets a worker hold
one live lease at a time (a partial unique index on assignment(worker_id) where leased: it is what stops
hoarding), so the next HIT is leased in the request that ends the current one. The items of a HIT are all in the
page already, so moving from item to item is client-side; between HITs the page waits one request, which carries
the next task."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from flask_wtf.csrf import CSRFError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from marshmallow import Schema, ValidationError, fields
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from base.errors import DomainError, Forbidden, InvalidInput, Unauthorized
from base.identity import Caller, Role
from edge.csp import content_security_policy
from edge.problems import problem
from edge.request import clock, db_session, item_ids
from edge.web import WORK_TOKEN_HEADER, page_account, query_id, signed_in
from market.engine.api import give_back, lease_next, present_task, submit_answers
from market.engine.next_task import Task
from market.engine.progress import answers_since, last_answered_guideline_version, utc_midnight
from market.engine.schemas import NextQuerySchema, ReturnResultSchema, SubmitResultSchema, SubmitSchema, TaskSchema
from market.quality import disputes
from market.quality.api import present_dispute
from market.quality.schemas import DisputeCreateSchema, WorkerDisputeSchema
from payments.review.listing import worker_earnings_summary
from workers.models import Account

blp = Blueprint("work_pages", __name__, url_prefix="/work/tasks")

# A work token outlives the longest lease with room to spare; the platform's frame is reloaded for a new one.
WORK_TOKEN_SECONDS = 6 * 3600
# Items may show images from anywhere on the web (by URL): this page alone allows them.
CSP_DIRECTIVES = {"img_src": "'self' data: https:"}


class PageSubmitSchema(SubmitSchema):
    next = fields.Boolean(load_default=False, metadata={"description": "Lease the next task in the same request."})


class PageNextSchema(Schema):
    next = fields.Boolean(load_default=False)


@blp.after_request
def _no_store(response: Response) -> Response:
    # A worker's tasks and earnings: never kept by a cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def _is_json_endpoint() -> bool:
    return request.method == "POST"


@blp.errorhandler(DomainError)
def _domain(exc: DomainError) -> Any:
    if not _is_json_endpoint():  # the page itself: an HTML error page, as every page's
        html = render_template("error.html", status=exc.status, title=exc.title, detail=exc.detail)
        return Response(html, status=exc.status, mimetype="text/html")
    return problem(exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers, **exc.extra)


@blp.errorhandler(ValidationError)
def _invalid(exc: ValidationError) -> Response:
    return problem(422, "Invalid input", "The request has invalid fields.", errors=exc.messages)


@blp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    # The page's script reads a problem from its endpoints whatever went wrong, a body over the limit (refused
    # while the CSRF check reads the form, before any view) included; the page itself gets the error page.
    code = exc.code or 500
    if not _is_json_endpoint():
        html = render_template("error.html", status=code, title=exc.name, detail=exc.description or "")
        return Response(html, status=code, mimetype="text/html")
    if isinstance(exc, RequestEntityTooLarge) and request.max_content_length:
        return problem(413, "Request entity too large",
                       f"The request body is larger than the limit of {request.max_content_length} bytes.")
    return problem(code, exc.name, exc.description)


@blp.errorhandler(CSRFError)
def _csrf(exc: CSRFError) -> Response:
    return problem(400, "CSRF check failed", f"{exc.description} Reload the page and try again.")


def _tokens() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="crowdmarket.work-token")


def work_token(*, worker_id: int, assignment_id: int) -> str:
    """A signed token that lets a page act for this worker on this one assignment, without a session: the work
    page inside a platform's frame (console/external.py), where our session cookie is not sent."""
    return _tokens().dumps({"w": worker_id, "a": assignment_id})


def _token_worker(token: str, assignment_id: int | None) -> Caller:
    try:
        claim = _tokens().loads(token, max_age=WORK_TOKEN_SECONDS)
    except SignatureExpired:
        raise Unauthorized("This page is too old: reload it from the platform.") from None
    except BadSignature:
        raise Unauthorized("The work token is not valid.") from None
    if assignment_id is None or claim.get("a") != assignment_id:
        raise Forbidden("This page may act on its own assignment only.")
    account = db_session().get(Account, claim.get("w"))
    if account is None or not account.is_active or account.role != Role.WORKER:
        raise Unauthorized("The account of this work token is not active.")
    return Caller(account.id, account.role)


def _worker(assignment_id: int | None = None) -> Caller:
    """The worker this request acts for, decided here only: the page session's account, a worker; or, when the
    request carries a work token (edge.web.WORK_TOKEN_HEADER), that token's worker, for its assignment alone
    (never the session, so a token page cannot borrow a signed-in session's rights)."""
    token = request.headers.get(WORK_TOKEN_HEADER)
    if token is not None:
        return _token_worker(token, assignment_id)
    account = page_account()
    if account is None:
        raise Unauthorized("Log in first: your session ended or was never started.")
    if account.role != Role.WORKER:
        raise Forbidden("This endpoint is for worker accounts.")
    return account


def _by_token() -> bool:
    # A token page is one platform assignment: it never leases another task (the platform hands out the next).
    return WORK_TOKEN_HEADER in request.headers


def _body(schema: Schema) -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None and (request.content_length or request.content_length is None and request.get_data()):
        raise InvalidInput("The body is not JSON.", errors={"json": ["not valid JSON"]})
    return schema.load({} if data is None else data)


def _progress(worker: Caller) -> dict[str, Any]:
    session = db_session()
    return {"answers_today": answers_since(session, worker_id=worker.id, since=utc_midnight(clock())),
            "earnings": [{"currency": c, **v} for c, v in sorted(worker_earnings_summary(
                session, worker_id=worker.id).items())]}


def _next(worker: Caller, project_id: int | None, *, refusal_as_data: bool = True) -> dict[str, Any]:
    """The next task as the page paints it, or why there is none: {"task": ..., "expires_in_ms", ...} or
    {"task": None, "reason", "detail"} (`refusal_as_data=False`: the engine's refusal is raised, a problem)."""
    try:
        task = lease_next(worker=worker, project_id=project_id)
    except DomainError as exc:
        if not refusal_as_data:
            raise
        # The engine's refusals come before its writes, or keep them (`keep_writes`: lapsed leases ended): either
        # way what this request stored before stays stored.
        return {"task": None, "status": exc.status, "reason": exc.extra.get("reason"), "detail": exc.detail,
                "progress": _progress(worker)}
    return painted(worker, task)


def painted(worker: Caller, task: Task) -> dict[str, Any]:
    """A task as the page paints it: the task, its lease's remaining time, whether the guidelines changed since
    the worker's last answer in the project, their progress."""
    last = last_answered_guideline_version(db_session(), worker_id=worker.id, project_id=task.project_id)
    # The countdown runs on the browser's clock from this figure, measured on the server's clock (which tests
    # fake): the two clocks need not agree.
    expires_in_ms = max(0, int((task.expires_at - clock()).total_seconds() * 1000))
    return {"task": TaskSchema().dump(present_task(task)), "expires_in_ms": expires_in_ms,
            "guidelines_changed": last is not None and last < task.guideline_version,
            "progress": _progress(worker)}


@blp.get("")
@signed_in(Role.WORKER)
def work_page() -> Response:
    """The work page: the current or next task, painted by shell/static/work/task.js."""
    args = NextQuerySchema().load({k: v for k, v in request.args.items() if k == "project_id"})
    html = render_template("work/task.html", project_id=args.get("project_id"))
    policy = content_security_policy(**CSP_DIRECTIVES)
    return Response(html, mimetype="text/html", headers={"Content-Security-Policy": policy})


@blp.post("/next")
def next_task() -> dict[str, Any]:
    """Lease the next task (or get the one held): the task, its lease's remaining time, progress."""
    worker = _worker()
    args = NextQuerySchema().load({k: v for k, v in request.args.items() if k == "project_id"})
    return _next(worker, args.get("project_id"), refusal_as_data=False)


@blp.post("/<int:assignment_id>/submit")
def submit(assignment_id: int) -> dict[str, Any]:
    """Submit the answers (the API's submit: idempotent) and, with "next": true, lease the next task too."""
    worker = _worker(assignment_id)
    data = _body(PageSubmitSchema())
    result = SubmitResultSchema().dump(submit_answers(data, worker=worker, assignment_id=assignment_id))
    return {"result": result, "next": _next(worker, query_id("project_id"))
            if data["next"] and not _by_token() else None}


@blp.post("/<int:assignment_id>/return")
def give_task_back(assignment_id: int) -> dict[str, Any]:
    """Return the task without penalty (the API's return) and, with "next": true, lease the next one."""
    worker = _worker(assignment_id)
    data = _body(PageNextSchema())
    result = ReturnResultSchema().dump(give_back(worker=worker, assignment_id=assignment_id))
    return {"result": result, "next": _next(worker, query_id("project_id"))
            if data["next"] and not _by_token() else None}


@blp.post("/<int:assignment_id>/disputes")
def contest(assignment_id: int) -> tuple[dict[str, Any], int]:
    """Contest an answer the feedback showed as wrong (the API's dispute service)."""
    worker = _worker(assignment_id)
    data = _body(DisputeCreateSchema())
    item_id = item_ids().item_id(data["item_id"])
    if item_id is None:
        raise InvalidInput("No such item.", errors={"item_id": ["is not an item of this assignment"]})
    dispute, created = disputes.open_dispute(db_session(), worker=worker, assignment_id=assignment_id,
                                             item_id=item_id, note=data["note"], now=clock())
    return WorkerDisputeSchema().dump(present_dispute(dispute)), 201 if created else 200

