"""Worker-facing schemas. Nothing here may carry gold flags, gold answers, other workers' answers or requester
data beyond the task itself: the worker's view of an item is its id and data, as for every other item."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from market.edge import JSON, FullMatch, Id, JSONObject, Text
from market.public_ids import LIMIT
from workers.service import MIN_PASSWORD, USERNAME, USERNAME_RULE


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


class TaskSchema(Schema):
    assignment_id = fields.Integer()
    status = Text()
    project = fields.Nested(TaskProjectSchema)
    guidelines = fields.Nested(GuidelinesSchema)
    label_schema = fields.Dict()
    reward = fields.Nested(RewardSchema)
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


class RegisterSchema(Schema):
    username = Text(required=True, validate=FullMatch(USERNAME, error=USERNAME_RULE))
    password = Text(required=True, validate=validate.Length(MIN_PASSWORD, 1024,
                                                            error=f"{MIN_PASSWORD}-1024 characters"), load_only=True)
    display_name = Text(load_default="", validate=validate.Length(max=200))


class LoginSchema(Schema):
    username = Text(required=True, validate=validate.Length(1, 64))
    password = Text(required=True, validate=validate.Length(1, 1024), load_only=True)


class NewWorkerTokenSchema(Schema):
    account_id = fields.Integer()
    username = Text()
    token = Text(metadata={"description": "Shown once; only its hash is stored."})


class IdentitySchema(Schema):
    platform = Text(required=True, validate=FullMatch("[a-z][a-z0-9_-]{1,31}"))
    external_id = Text(required=True, validate=validate.Length(1, 255))
    account_id = fields.Integer(dump_only=True)


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
