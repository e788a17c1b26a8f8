"""Worker JSON API: sign up, log in, get the next task, submit, return."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask.views import MethodView

from market import disputes, evaluation, work
from market.app import clock, db_session
from market.auth import current_account, requires
from market.edge import Blueprint, PageQuerySchema, page
from market.openapi import problems
from market.problems import InvalidInput, NotFound, TooManyRequests
from market.public_ids import ItemIds
from market.ratelimit import LoginLimits, acquire_all
from market.work_schemas import (
    DisputeCreateSchema,
    IdentitySchema,
    LoginSchema,
    NewWorkerTokenSchema,
    NextQuerySchema,
    RegisterSchema,
    ReturnResultSchema,
    SubmitResultSchema,
    SubmitSchema,
    TaskSchema,
    WorkerDisputeListSchema,
    WorkerDisputeSchema,
)
from workers import service as accounts
from workers.models import Account, Role, username_key

blp = Blueprint("work", __name__, url_prefix="/api/v1", description="Crowd workers: accounts and tasks.")
WORKER = (Role.WORKER,)


def _ids() -> ItemIds:
    ids: ItemIds = current_app.extensions["crowdmarket.item_ids"]
    return ids


def _public_answers(answers: dict[int, Any], ids: ItemIds) -> list[dict[str, Any]]:
    return [{"item_id": ids.public(i), "answer": a} for i, a in answers.items()]


def _task(task: work.Task) -> dict[str, Any]:
    ids = _ids()
    return {
        "assignment_id": task.id,
        "status": task.status.value,
        "project": {"id": task.project_id, "title": task.project_title, "description": task.project_description},
        "guidelines": {"version": task.guideline_version, "instructions": task.instructions},
        "label_schema": task.label_schema,
        "reward": {"cents": task.reward_cents, "currency": task.currency},
        "leased_at": task.leased_at,
        "expires_at": task.expires_at,
        "items": [{"id": ids.public(i["id"]), "data": i["data"]} for i in task.items],
        "answers": None if task.answers is None else _public_answers(task.answers, ids),
    }


def _limits() -> LoginLimits:
    limits: LoginLimits = current_app.extensions["crowdmarket.login_limits"]
    return limits


def _address() -> str:
    """The client's address: the peer's, or with CROWDMARKET_PROXY_HOPS the one the trusted proxies report."""
    return request.remote_addr or "unknown"


@blp.route("/workers")
class Workers(MethodView):
    @blp.arguments(RegisterSchema)
    @blp.response(201, NewWorkerTokenSchema)
    @blp.doc(security=[])
    @problems(409, 429)
    def post(self, data: dict[str, Any]):
        """Sign up as a crowd worker; the response holds your first API token. Sign-ups are limited per client
        address (429 with Retry-After); usernames are unique ignoring case."""
        limits, now = _limits(), clock()
        wait = limits.signup.acquire(_address(), now)
        if wait is not None:
            raise TooManyRequests("Too many sign-ups from your address; try again later.", retry_after=wait)
        session = db_session()
        account = accounts.register_worker(session, username=data["username"], password=data["password"],
                                           display_name=data["display_name"], now=now,
                                           password_hash=current_app.config["PASSWORD_HASH"])
        _, token = accounts.issue_token(session, account=account, now=now, name="sign-up", login=True)
        session.commit()
        return {"account_id": account.id, "username": account.username, "token": token}


@blp.route("/auth/token")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(201, NewWorkerTokenSchema)
    @blp.doc(security=[])
    @problems(401, 429)
    def post(self, data: dict[str, Any]):
        """Log in with username (any case) and password; get a new API token (an account keeps its newest 5 login
        tokens). Failed logins are limited per username and address, per username and per address (429 with
        Retry-After)."""
        limits, now = _limits(), clock()
        user, address = username_key(data["username"]), _address()
        # Counted before the password is checked, so parallel guesses cannot all pass a check made before any
        # of them was counted.
        wait = acquire_all(limits.login_checks(user, address), now)
        if wait is not None:
            raise TooManyRequests("Too many failed logins; try again later.", retry_after=wait)
        account, token = accounts.login(db_session(), username=data["username"], password=data["password"],
                                        now=now, password_hash=current_app.config["PASSWORD_HASH"])
        limits.login_succeeded(user, address)
        return {"account_id": account.id, "username": account.username, "token": token}


@blp.route("/workers/<int:worker_id>/identities")
class Identities(MethodView):
    @requires(Role.OPS)
    @blp.arguments(IdentitySchema)
    @blp.response(201, IdentitySchema)
    @problems(409)
    def post(self, data: dict[str, Any], worker_id: int):
        """Map a worker's id on another platform (e.g. MTurk) to their account (ops)."""
        session = db_session()
        target = session.get(Account, worker_id)
        if target is None or target.role != Role.WORKER:
            raise NotFound(f"Worker {worker_id} not found.")
        identity = accounts.link_identity(session, account_id=worker_id, platform=data["platform"],
                                          external_id=data["external_id"], now=clock())
        session.commit()
        return identity


@blp.route("/work/next")
class NextTask(MethodView):
    @requires(*WORKER, autocommit=True)
    @blp.arguments(NextQuerySchema, location="query")
    @blp.response(200, TaskSchema)
    @problems(404, 409)
    def post(self, args: dict[str, Any]):
        """Lease the next task: a HIT's items, guidelines, label schema, reward and lease expiry."""
        worker, lapsed = current_account(), []
        task = work.next_assignment(db_session(), worker=worker, now=clock(), project_id=args.get("project_id"),
                                    gold_key=current_app.extensions["crowdmarket.gold_key"], lapsed=lapsed)
        for project_id in set(lapsed):
            evaluation.after_response(worker.id, project_id)
        return _task(task)


@blp.route("/assignments/<int:assignment_id>")
class AssignmentDetail(MethodView):
    @requires(*WORKER)
    @blp.response(200, TaskSchema)
    def get(self, assignment_id: int):
        """One of your assignments."""
        return _task(work.load_task(db_session(), worker_id=current_account().id, assignment_id=assignment_id))


@blp.route("/assignments/<int:assignment_id>/submit")
class Submit(MethodView):
    @requires(*WORKER, autocommit=True)
    @blp.arguments(SubmitSchema)
    @blp.response(200, SubmitResultSchema)
    @problems(409, 410)
    def post(self, data: dict[str, Any], assignment_id: int):
        """Submit one answer per item. Idempotent: the same answers again return the same result."""
        worker, ids = current_account(), _ids()
        # internal(), not item_id(): these ids are only compared with the assignment's, never looked up, and an
        # impossible one must stay distinct to be named in the error.
        answers = [{"item_id": ids.internal(a["item_id"]), "answer": a["answer"]} for a in data["answers"]]
        try:
            result, replayed = work.submit(db_session(), worker=worker, assignment_id=assignment_id,
                                           answers=answers, client_meta=data["client"], now=clock())
        except InvalidInput as exc:  # errors name items by id: the worker's ids
            exc.errors = {"answers": {str(ids.public(int(k))): v for k, v in exc.errors["answers"].items()}}
            raise
        if not replayed:
            evaluation.after_response(worker.id, result.project_id)
        return {"assignment_id": result.assignment_id, "status": result.status.value,
                "submitted_at": result.submitted_at, "duration_ms": result.duration_ms,
                "answers": _public_answers(result.answers, ids),
                "feedback": [{**f, "item_id": ids.public(f["item_id"])} for f in result.feedback]}


@blp.route("/assignments/<int:assignment_id>/return")
class Return(MethodView):
    @requires(*WORKER)
    @blp.response(200, ReturnResultSchema)
    @problems(409, 410)
    def post(self, assignment_id: int):
        """Give the task back without penalty; someone else can take it at once (you, once nothing else is left)."""
        assignment = work.return_assignment(db_session(), worker=current_account(), assignment_id=assignment_id,
                                            now=clock())
        evaluation.after_response(assignment.worker_id, assignment.project_id)
        return {"assignment_id": assignment.id, "status": assignment.status.value,
                "returned_at": assignment.returned_at, "duration_ms": assignment.duration_ms}


def _worker_dispute(d: Any) -> dict[str, Any]:
    return {k: getattr(d, k) for k in ("id", "assignment_id", "note", "created_at", "resolved_at", "resolution")} | {
        "state": d.state.value, "item_id": _ids().public(d.item_id)}


@blp.route("/assignments/<int:assignment_id>/disputes")
class Disputes(MethodView):
    @requires(*WORKER)
    @blp.arguments(DisputeCreateSchema)
    @blp.response(201, WorkerDisputeSchema)
    @blp.alt_response(200, schema=WorkerDisputeSchema, description="You contested this answer already.")
    @problems(409)
    def post(self, data: dict[str, Any], assignment_id: int):
        """Contest an answer the feedback showed as wrong, with a note for the reviewers."""
        item_id = _ids().item_id(data["item_id"])
        if item_id is None:
            raise InvalidInput("No such item.", errors={"item_id": ["is not an item of this assignment"]})
        dispute, created = disputes.open_dispute(db_session(), worker=current_account(), assignment_id=assignment_id,
                                                 item_id=item_id, note=data["note"], now=clock())
        return _worker_dispute(dispute), 201 if created else 200


@blp.route("/disputes")
class MyDisputes(MethodView):
    @requires(*WORKER)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, WorkerDisputeListSchema)
    def get(self, args: dict[str, Any]):
        """Your disputes and how they were decided."""
        rows = disputes.list_disputes(db_session(), after=args.get("after"), limit=args["limit"],
                                      worker_id=current_account().id)
        return page([_worker_dispute(d) for d in rows], args["limit"])
