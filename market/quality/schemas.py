"""Ops review schemas: worker quality, gold disputes."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from edge.fields import JSON, Id, PageQuerySchema, Text
from market.engine.schemas import PublicItemId
from market.quality.models import DisputeState


class WorkerQualitySchema(Schema):
    """A worker's quality record: in one project, or overall (project_id null)."""

    worker_id = fields.Integer()
    project_id = fields.Integer(allow_none=True)
    gold_seen = fields.Integer(metadata={"description": "Gold items answered (retired ones not counted)."})
    gold_correct = fields.Integer()
    accuracy = fields.Float(allow_none=True)
    wilson_low = fields.Float(metadata={"description": "95% Wilson interval of the gold accuracy."})
    wilson_high = fields.Float()
    rolling_seen = fields.Integer()
    rolling_accuracy = fields.Float(allow_none=True, metadata={
        "description": "Over the project's last accuracy_window gold answers."})
    tasks = fields.Integer(metadata={"description": "Tasks behind the time figures (the last 1,000)."})
    median_ms = fields.Integer(allow_none=True)
    fast_answers = fields.Integer(metadata={
        "description": "Tasks done in under fast_answer_fraction of the project's median time."})
    agreement_counted = fields.Integer(metadata={
        "description": "Recent answers on items with at least two other answers, compared with their majority."})
    agreement = fields.Float(allow_none=True)
    model_accuracy = fields.Float(allow_none=True, metadata={
        "description": "Posterior mean of the worker's accuracy from their gold answers and their agreement with "
                       "the crowd (one-coin Dawid-Skene model; null overall)."})
    model_low = fields.Float(allow_none=True, metadata={"description": "90% credible interval of model_accuracy."})
    model_high = fields.Float(allow_none=True)
    p_below = fields.Float(allow_none=True, metadata={
        "description": "Posterior probability that the worker's accuracy is below the project's minimum."})
    judged_answers = fields.Integer(metadata={
        "description": "Answers the judgement rests on: gold answers and answers compared with the crowd."})
    leases = fields.Integer(metadata={"description": "Tasks leased."})
    given_back = fields.Integer(metadata={"description": "Of those, returned or let lapse."})


class WorkerQualityListSchema(Schema):
    data = fields.List(fields.Nested(WorkerQualitySchema))
    next_after = fields.Integer(allow_none=True)


class DisputeQuerySchema(PageQuerySchema):
    state = Text(validate=validate.OneOf([s.value for s in DisputeState]))
    worker_id = Id(strict=False)
    project_id = Id(strict=False)


class DisputedItemSchema(Schema):
    id = fields.Integer()
    external_id = Text()
    data = fields.Dict()
    gold = fields.Raw()
    explanation = Text(allow_none=True)
    retired_at = fields.DateTime(allow_none=True)
    answers = fields.Integer(metadata={"description": "Scored answers to the item."})
    correct = fields.Integer(metadata={"description": "Of those, how many matched the known answer: a gold item "
                                                      "most workers miss is often wrong."})


class DisputeSchema(Schema):
    id = fields.Integer()
    project_id = fields.Integer()
    worker_id = fields.Integer()
    assignment_id = fields.Integer()
    answer = fields.Raw(metadata={"description": "The worker's answer."})
    note = Text()
    state = Text()
    created_at = fields.DateTime()
    resolved_by_id = fields.Integer(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    resolution = Text(allow_none=True)
    item = fields.Nested(DisputedItemSchema)
    rescored = fields.Integer(metadata={"description": "Answers re-scored by this decision."})


class DisputeListSchema(Schema):
    data = fields.List(fields.Nested(DisputeSchema))
    next_after = fields.Integer(allow_none=True)


class DisputeNoteSchema(Schema):
    note = Text(required=True, validate=validate.Length(1, 5000))


class DisputeCorrectSchema(DisputeNoteSchema):
    gold = JSON(required=True, allow_none=False, metadata={"description": "The corrected known answer."})
    explanation = Text(validate=validate.Length(max=20_000), metadata={"description": "Replaces the old one."})


class DisputeCreateSchema(Schema):
    item_id = PublicItemId
    note = Text(required=True, validate=validate.Length(1, 5000),
                metadata={"description": "Why you think the correct answer shown is wrong."})


class WorkerDisputeSchema(Schema):
    id = fields.Integer()
    assignment_id = fields.Integer()
    item_id = fields.Integer()
    note = Text()
    state = Text(metadata={"description": "open, corrected (your answer was re-scored), retired (the item no longer "
                                          "counts for anyone), or rejected."})
    created_at = fields.DateTime()
    resolved_at = fields.DateTime(allow_none=True)
    resolution = Text(allow_none=True)


class WorkerDisputeListSchema(Schema):
    data = fields.List(fields.Nested(WorkerDisputeSchema))
    next_after = fields.Integer(allow_none=True)
