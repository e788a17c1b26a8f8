"""Review API: requesters approve, reject and reverse rejections of their projects' work (one or in bulk) and list
it; ops review any project's work; workers see their own reviewed work."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from base.errors import Conflict, NotFound
from base.identity import Role
from edge.auth import current_account, requires
from edge.blueprint import Blueprint, page
from edge.fields import PageQuerySchema
from edge.openapi import problems
from edge.request import clock, db_session
from payments.review import listing
from payments.review.approve import ReviewResult, Skip, approve, reject, reverse_rejection, reviewable_project
from payments.review.schemas import (
    ApproveSchema,
    AssignmentQuerySchema,
    BulkReviewSchema,
    OpsBulkReviewSchema,
    RejectSchema,
    RequesterAssignmentListSchema,
    ReviewResultSchema,
    WorkerReviewedListSchema,
)

blp = Blueprint("review", __name__, url_prefix="/api/v1/projects", doc_tag="projects",
                description="Reviewing submitted work (requesters).")
work_blp = Blueprint("review_work", __name__, url_prefix="/api/v1/work", doc_tag="work",
                     description="Your reviewed work (workers).")
ops_blp = Blueprint("review_ops", __name__, url_prefix="/api/v1/ops", doc_tag="ops",
                    description="Reviewing any project's work (ops).")
READ = (Role.REQUESTER, Role.OPS)
WRITE = (Role.REQUESTER,)


def _body(result: ReviewResult) -> dict[str, Any]:
    return {"decision": "approve" if result.approved else "reject", "reviewed": result.reviewed,
            "skipped": [{"assignment_id": i, "reason": r.value} for i, r in sorted(result.skipped.items())],
            "rewards": [{"cents": c, "currency": k} for k, c in sorted(result.rewards.items())],
            "fees": [{"cents": c, "currency": k} for k, c in sorted(result.fees.items())]}


def _single(result: ReviewResult, assignment_id: int, *, replay: Skip) -> dict[str, Any]:
    """One assignment's review: 404 when not yours, 200 for a repeat of the same decision, 409 otherwise."""
    reason = result.skipped.get(assignment_id)
    if reason == Skip.NOT_FOUND:
        raise NotFound(f"Assignment {assignment_id} not found.")
    if reason is not None and reason != replay:
        raise Conflict(f"Assignment {assignment_id} cannot be {'approved' if result.approved else 'rejected'}: "
                       f"{reason.value.replace('_', ' ')}.", errors={"status": [reason.value]}, reason=reason.value)
    return _body(result)


@blp.route("/<int:project_id>/assignments")
class ProjectAssignments(MethodView):
    @requires(*READ)
    @blp.arguments(AssignmentQuerySchema, location="query")
    @blp.response(200, RequesterAssignmentListSchema)
    def get(self, args: dict[str, Any], project_id: int):
        """The project's assignments by status (default: submitted work awaiting review), with pay and the time
        the auto-approval job approves each."""
        session = db_session()
        project = reviewable_project(session, current_account(), project_id)
        rows = listing.project_assignments(session, project=project, status=args["status"],
                                           after=args.get("after"), limit=args["limit"])
        return page(rows, args["limit"])


@blp.route("/<int:project_id>/assignments/<int:assignment_id>/approve")
class Approve(MethodView):
    @requires(*WRITE)
    @blp.arguments(ApproveSchema)
    @blp.response(200, ReviewResultSchema)
    @problems(402, 409)
    def post(self, _data: dict[str, Any], project_id: int, assignment_id: int):
        """Approve a submitted assignment and pay its reward (402 when your money is short; a repeat pays
        nothing more)."""
        result = approve(db_session(), actor=current_account(), now=clock(), assignment_ids=[assignment_id],
                         project_id=project_id)
        return _single(result, assignment_id, replay=Skip.ALREADY_APPROVED)


@blp.route("/<int:project_id>/assignments/<int:assignment_id>/reject")
class Reject(MethodView):
    @requires(*WRITE)
    @blp.arguments(RejectSchema)
    @blp.response(200, ReviewResultSchema)
    @problems(409)
    def post(self, data: dict[str, Any], project_id: int, assignment_id: int):
        """Reject a submitted assignment with feedback the worker sees; it is not paid (reversible for 30 days)."""
        result = reject(db_session(), actor=current_account(), now=clock(), feedback=data["feedback"],
                        assignment_ids=[assignment_id], project_id=project_id)
        return _single(result, assignment_id, replay=Skip.ALREADY_REJECTED)


@blp.route("/<int:project_id>/assignments/<int:assignment_id>/reverse-rejection")
class ReverseRejection(MethodView):
    @requires(*WRITE)
    @blp.arguments(ApproveSchema)
    @blp.response(200, ReviewResultSchema)
    @problems(402, 409)
    def post(self, _data: dict[str, Any], project_id: int, assignment_id: int):
        """Reverse a rejection within 30 days of it: the work is approved and paid (a repeat pays nothing more)."""
        result = reverse_rejection(db_session(), actor=current_account(), now=clock(), assignment_id=assignment_id,
                                   project_id=project_id)
        return _body(result)


def _bulk(data: dict[str, Any], project_id: int | None) -> dict[str, Any]:
    selector = {k: data[k] for k in ("assignment_ids", "batch_id", "worker_ids") if k in data}
    kwargs = {"actor": current_account(), "now": clock(), "project_id": project_id, **selector}
    if data["decision"] == "approve":
        return _body(approve(db_session(), **kwargs))
    return _body(reject(db_session(), feedback=data["feedback"], **kwargs))


@blp.route("/<int:project_id>/reviews")
class BulkReview(MethodView):
    @requires(*WRITE)
    @blp.arguments(BulkReviewSchema)
    @blp.response(200, ReviewResultSchema)
    @problems(402)
    def post(self, data: dict[str, Any], project_id: int):
        """Approve (and pay) or reject many submitted assignments at once: by ids (up to 10,000), every submitted
        assignment of a batch, or of given workers; those named but not reviewed are listed with why. 402 when
        your money is short: then nothing is reviewed."""
        return _bulk(data, project_id)


@ops_blp.route("/reviews")
class OpsBulkReview(MethodView):
    @requires(Role.OPS)
    @ops_blp.arguments(OpsBulkReviewSchema)
    @ops_blp.response(200, ReviewResultSchema)
    @problems(402, 404)
    def post(self, data: dict[str, Any]):
        """Approve or reject submitted work of any project: by ids, by batch, or by workers of a project."""
        return _bulk(data, data.get("project_id"))


@work_blp.route("/reviewed")
class Reviewed(MethodView):
    @requires(Role.WORKER)
    @work_blp.arguments(PageQuerySchema, location="query")
    @work_blp.response(200, WorkerReviewedListSchema)
    def get(self, args: dict[str, Any]):
        """Your reviewed work: approved (with its reward and any top-up) or rejected (with the feedback)."""
        rows = listing.worker_reviewed(db_session(), worker_id=current_account().id, after=args.get("after"),
                                       limit=args["limit"])
        return page(rows, args["limit"])


BLUEPRINTS = (blp, work_blp, ops_blp)
