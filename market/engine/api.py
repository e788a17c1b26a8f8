"""Worker JSON API: get the next task, see one, submit, return."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from base.errors import InvalidInput
from base.identity import Actor, Role
from base.public_ids import ItemIds
from edge import limits
from edge.auth import current_account, requires
from edge.blueprint import Blueprint
from edge.openapi import problems
from edge.request import clock, db_session, item_ids
from market.engine.claim import Task
from market.engine.next_task import load_task, next_assignment
from market.engine.schemas import (
    NextQuerySchema,
    ReturnResultSchema,
    SubmitResultSchema,
    SubmitSchema,
    TaskSchema,
)
from market.engine.submit import return_assignment, submit

blp = Blueprint("work", __name__, url_prefix="/api/v1", description="Crowd workers: accounts and tasks.")
WORKER = (Role.WORKER,)


def _public_answers(answers: dict[int, Any], ids: ItemIds) -> list[dict[str, Any]]:
    return [{"item_id": ids.public(i), "answer": a} for i, a in answers.items()]


def present_task(task: Task) -> dict[str, Any]:
    """A task as the worker sees it (TaskSchema's input): the API and the work page (console/work.py) alike."""
    ids = item_ids()
    return {
        "assignment_id": task.id,
        "status": task.status.value,
        "project": {"id": task.project_id, "title": task.project_title, "description": task.project_description},
        "guidelines": {"version": task.guideline_version, "instructions": task.instructions},
        "label_schema": task.label_schema,
        "reward": {"cents": task.reward_cents, "currency": task.currency},
        "hourly_rate": None if task.hourly_rate is None else {
            "cents": task.hourly_rate[0], "currency": task.currency, "basis": task.hourly_rate[1]},
        "leased_at": task.leased_at,
        "expires_at": task.expires_at,
        "items": [{"id": ids.public(i["id"]), "data": i["data"]} for i in task.items],
        "answers": None if task.answers is None else _public_answers(task.answers, ids),
    }


@blp.route("/work/next")
class NextTask(MethodView):
    @requires(*WORKER, autocommit=True)
    @blp.arguments(NextQuerySchema, location="query")
    @blp.response(200, TaskSchema)
    @problems(404, 409, 429)
    def post(self, args: dict[str, Any]):
        """Lease the next task: a HIT's items, guidelines, label schema, reward and lease expiry. Limited per worker
        account (CROWDMARKET_RATELIMIT_NEXT, 120 a minute by default: 429 with Retry-After past it)."""
        return present_task(lease_next(worker=current_account(), project_id=args.get("project_id")))


def lease_next(*, worker: Actor, project_id: int | None) -> Task:
    """The engine's next task for `worker` (the API and the work page alike), on the app's gold schedule, within
    the next-task limit per account (CROWDMARKET_RATELIMIT_NEXT)."""
    limits.next_task(worker.id)
    return next_assignment(db_session(), worker=worker, now=clock(), project_id=project_id,
                           gold_key=current_app.extensions["crowdmarket.gold_key"])


@blp.route("/assignments/<int:assignment_id>")
class AssignmentDetail(MethodView):
    @requires(*WORKER)
    @blp.response(200, TaskSchema)
    def get(self, assignment_id: int):
        """One of your assignments."""
        return present_task(load_task(db_session(), worker_id=current_account().id, assignment_id=assignment_id))


@blp.route("/assignments/<int:assignment_id>/submit")
class Submit(MethodView):
    @requires(*WORKER, autocommit=True)
    @blp.arguments(SubmitSchema)
    @blp.response(200, SubmitResultSchema)
    @problems(409, 410)
    def post(self, data: dict[str, Any], assignment_id: int):
        """Submit one answer per item. Idempotent: the same answers again return the same result."""
        return submit_answers(data, worker=current_account(), assignment_id=assignment_id)


def submit_answers(data: dict[str, Any], *, worker: Actor, assignment_id: int) -> dict[str, Any]:
    """Submit a loaded SubmitSchema body for `worker`; the SubmitResultSchema input. The API and the work page
    (console/work.py) both submit through here, so a page submit is an API submit."""
    ids = item_ids()
    # internal(), not item_id(): these ids are only compared with the assignment's, never looked up, and an
    # impossible one must stay distinct to be named in the error.
    answers = [{"item_id": ids.internal(a["item_id"]), "answer": a["answer"]} for a in data["answers"]]
    try:
        result, replayed = submit(db_session(), worker=worker, assignment_id=assignment_id,
                                  answers=answers, client_meta=data["client"], now=clock())
    except InvalidInput as exc:  # errors name items by id: the worker's ids
        exc.errors = {"answers": {str(ids.public(int(k))): v for k, v in exc.errors["answers"].items()}}
        raise
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
        return give_back(worker=current_account(), assignment_id=assignment_id)


def give_back(*, worker: Actor, assignment_id: int) -> dict[str, Any]:
    """Return `worker`'s assignment; the ReturnResultSchema input (the API and the work page alike)."""
    assignment = return_assignment(db_session(), worker=worker, assignment_id=assignment_id, now=clock())
    return {"assignment_id": assignment.id, "status": assignment.status.value,
            "returned_at": assignment.returned_at, "duration_ms": assignment.duration_ms}
