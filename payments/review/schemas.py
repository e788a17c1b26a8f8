"""Review schemas: one per audience. The requester's view of an assignment names its worker and whether it was a
gold task (their own check items); the worker's view of their reviewed work never has a gold flag."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from edge.fields import Id, MoneySchema, PageQuerySchema, Text
from market.catalogue.models import AssignmentStatus
from payments.review.approve import MAX_FEEDBACK, Skip

MAX_BULK_IDS = 10_000
MAX_BULK_WORKERS = 1_000
STATUSES = ["all", *(s.value for s in AssignmentStatus)]


def _feedback(**kwargs: Any) -> Text:
    return Text(validate=validate.Length(1, MAX_FEEDBACK), metadata={
        "description": "What the worker is told about the rejection (1-1,024 characters)."}, **kwargs)


class RejectSchema(Schema):
    feedback = _feedback(required=True)


class ApproveSchema(Schema):
    """Nothing to say: the body may be empty."""


class BulkReviewSchema(Schema):
    """One decision for many assignments: by ids, every submitted assignment of a batch, or of given workers in
    this project. A rejection needs feedback."""

    class Meta:
        openapi = {"oneOf": [{"required": ["assignment_ids"]}, {"required": ["batch_id"]},
                             {"required": ["worker_ids"]}]}

    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))
    assignment_ids = fields.List(Id(strict=True), validate=validate.Length(1, MAX_BULK_IDS))
    batch_id = Id(strict=True)
    worker_ids = fields.List(Id(strict=True), validate=validate.Length(1, MAX_BULK_WORKERS))
    feedback = _feedback()

    @validates_schema
    def _one_selector(self, data: dict[str, Any], **_: Any) -> None:
        given = [k for k in ("assignment_ids", "batch_id", "worker_ids") if k in data]
        if len(given) != 1:
            raise ValidationError(["give exactly one of assignment_ids, batch_id, worker_ids"], "_schema")
        if data.get("decision") == "reject" and "feedback" not in data:
            raise ValidationError({"feedback": ["required to reject"]})


class SkippedSchema(Schema):
    assignment_id = fields.Integer(required=True)
    reason = fields.String(required=True, validate=validate.OneOf([s.value for s in Skip]))


class ReviewResultSchema(Schema):
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))
    reviewed = fields.List(fields.Integer(), required=True, metadata={"description": "Assignments reviewed now."})
    skipped = fields.List(fields.Nested(SkippedSchema), required=True,
                          metadata={"description": "Assignments named but not reviewed, and why."})
    rewards = fields.List(fields.Nested(MoneySchema), required=True,
                          metadata={"description": "Rewards paid to workers by this call, per currency."})
    fees = fields.List(fields.Nested(MoneySchema), required=True)


class AssignmentQuerySchema(PageQuerySchema):
    status = fields.String(load_default="submitted", validate=validate.OneOf(STATUSES),
                           metadata={"description": "Default: submitted work awaiting review; `all`: every status."})


class RequesterAssignmentSchema(Schema):
    """An assignment as its requester sees it, with what it pays and when the job approves it."""

    assignment_id = fields.Integer(required=True)
    worker_id = fields.Integer(required=True)
    batch_id = fields.Integer(required=True)
    hit_id = fields.Integer(required=True)
    is_gold = fields.Boolean(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in AssignmentStatus]))
    submitted_at = fields.DateTime(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)
    auto_approve_at = fields.DateTime(allow_none=True, metadata={
        "description": "When the auto-approval job approves it, if nobody reviews it first (submitted work)."})
    reviewed_at = fields.DateTime(allow_none=True)
    reviewed_by_id = fields.Integer(allow_none=True, metadata={"description": "NULL: the auto-approval job."})
    review_feedback = fields.String(allow_none=True)
    rejection_reversed_at = fields.DateTime(allow_none=True)
    reward = fields.Nested(MoneySchema, required=True, metadata={"description": "The batch's reward."})
    paid = fields.Nested(MoneySchema, allow_none=True, metadata={"description": "The reward paid (approved)."})
    top_up = fields.Nested(MoneySchema, allow_none=True, metadata={"description": "A fair-wage top-up paid."})


class RequesterAssignmentListSchema(Schema):
    data = fields.List(fields.Nested(RequesterAssignmentSchema))
    next_after = fields.Integer(allow_none=True)


class ProjectRefSchema(Schema):
    id = fields.Integer(required=True)
    title = fields.String(required=True)


class WorkerReviewedSchema(Schema):
    """One of your reviewed assignments: approved or rejected (with the requester's feedback), and its pay."""

    assignment_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["approved", "rejected"]))
    project = fields.Nested(ProjectRefSchema, required=True)
    submitted_at = fields.DateTime(allow_none=True)
    reviewed_at = fields.DateTime(allow_none=True)
    feedback = fields.String(allow_none=True, metadata={"description": "Why it was rejected."})
    rejection_reversed_at = fields.DateTime(allow_none=True)
    reward = fields.Nested(MoneySchema, allow_none=True)
    top_up = fields.Nested(MoneySchema, allow_none=True)


class WorkerReviewedListSchema(Schema):
    data = fields.List(fields.Nested(WorkerReviewedSchema))
    next_after = fields.Integer(allow_none=True)


class OpsBulkReviewSchema(BulkReviewSchema):
    project_id = Id(strict=True, metadata={"description": "Required with worker_ids; optional otherwise."})
