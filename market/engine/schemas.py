"""Worker-facing schemas. Nothing here may carry gold flags, gold answers, other workers' answers or requester
data beyond the task itself: the worker's view of an item is its id and data, as for every other item."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from base.public_ids import LIMIT
from edge.fields import JSON, Id, JSONObject, Text


class NextQuerySchema(Schema):
    project_id = Id(metadata={"description": "Only work from this project."})


class WorkerItemSchema(Schema):
    id = fields.Integer(metadata={"description": "The item's id for you: stable, unrelated to import order."})
    data = fields.Dict()


class TaskProjectSchema(Schema):
    id = fields.Integer()
    title = Text()
    description = Text()


class GuidelinesSchema(Schema):
    version = fields.Integer()
    instructions = Text()


class RewardSchema(Schema):
    cents = fields.Integer()
    currency = Text()


class HourlyRateSchema(Schema):
    cents = fields.Integer(metadata={"description": "Integer cents per hour (half up)."})
    currency = Text()
    basis = Text(validate=validate.OneOf(("measured", "estimated")), metadata={
        "description": "measured: the median working time of this batch's HITs so far (10 submissions or more); "
                       "estimated: the requester's estimate, until then."})


class TaskSchema(Schema):
    assignment_id = fields.Integer()
    status = Text()
    project = fields.Nested(TaskProjectSchema)
    guidelines = fields.Nested(GuidelinesSchema)
    label_schema = fields.Dict()
    reward = fields.Nested(RewardSchema)
    hourly_rate = fields.Nested(HourlyRateSchema, allow_none=True, metadata={
        "description": "What this task is expected to pay per hour (before any fair-wage top-up)."})
    leased_at = fields.DateTime()
    expires_at = fields.DateTime()
    items = fields.List(fields.Nested(WorkerItemSchema))
    answers = fields.List(fields.Dict(), allow_none=True,
                          metadata={"description": "Your own answers, once submitted."})


PublicItemId = fields.Integer(required=True, strict=True, validate=validate.Range(0, LIMIT - 1),
                              metadata={"description": "An item's id as the task shows it."})


class AnswerInSchema(Schema):
    item_id = PublicItemId
    answer = JSON(required=True, allow_none=False)


class SubmitSchema(Schema):
    answers = fields.List(fields.Nested(AnswerInSchema), required=True, validate=validate.Length(1, 100))
    client = JSONObject(keys=Text(validate=validate.Length(max=64)), load_default=None,
                         metadata={"description": "Client metadata kept with the answers (user agent, ...)."})


class FeedbackSchema(Schema):
    item_id = fields.Integer()
    correct_answer = fields.Raw()
    explanation = Text()


class SubmitResultSchema(Schema):
    assignment_id = fields.Integer()
    status = Text()
    submitted_at = fields.DateTime()
    duration_ms = fields.Integer()
    answers = fields.List(fields.Dict())
    feedback = fields.List(fields.Nested(FeedbackSchema), metadata={
        "description": "Where the project shows it: the correct answer and explanation of each item you got "
                       "wrong that had a known answer. Empty otherwise."})


class ReturnResultSchema(Schema):
    assignment_id = fields.Integer()
    status = Text()
    returned_at = fields.DateTime()
    duration_ms = fields.Integer()
