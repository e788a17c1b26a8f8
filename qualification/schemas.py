"""Qualification schemas, one per audience: requesters see their tests' known answers; workers never do."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from edge.fields import JSON, Id, JSONObject, LabelSchemaSchema, Text
from qualification.requirements import COMPARATORS, values_error

DAY = 86_400


class RequirementSchema(Schema):
    """MTurk's QualificationRequirement: the worker's value of a qualification compared with integer values."""

    qualification_id = Id(required=True, strict=True)
    comparator = Text(required=True, validate=validate.OneOf(COMPARATORS))
    values = fields.List(fields.Integer(strict=True, validate=validate.Range(-1_000_000_000, 1_000_000_000)),
                         load_default=list, metadata={"description": "None for Exists/DoesNotExist, one for the "
                                                      "order comparators, 1-15 for In/NotIn."})

    @validates_schema
    def _values_fit(self, data: dict[str, Any], **_: Any) -> None:
        problem = values_error(data.get("comparator", ""), data.get("values", []))
        if problem and data.get("comparator") in COMPARATORS:
            raise ValidationError({"values": [problem]})


def requirements_field(**kwargs: Any) -> fields.List:
    return fields.List(fields.Nested(RequirementSchema), validate=validate.Length(max=20), **kwargs)


class QuestionInSchema(Schema):
    data = JSONObject(keys=fields.String(), required=True,
                       metadata={"description": "What the worker sees, shaped like an item's data."})
    answer = JSON(required=True, allow_none=False, metadata={"description": "The known answer."})


class QualificationTypeCreateSchema(Schema):
    name = Text(required=True, validate=validate.Length(1, 200))
    description = Text(load_default="", validate=validate.Length(max=5000))
    label_schema = fields.Nested(LabelSchemaSchema, required=True)
    questions = fields.List(fields.Nested(QuestionInSchema), required=True, validate=validate.Length(1, 500))
    passing_score = fields.Integer(required=True, strict=True, validate=validate.Range(0, 100),
                                   metadata={"description": "Percent of questions right needed to pass."})
    test_duration_seconds = fields.Integer(load_default=1800, strict=True, validate=validate.Range(30, DAY))
    retry_delay_seconds = fields.Integer(load_default=DAY, strict=True, validate=validate.Range(0, 365 * DAY),
                                         metadata={"description": "Wait after an attempt before a retake."})
    max_attempts = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(1, 100),
                                  metadata={"description": "Attempts per worker; null: no limit."})
    auto_grant = fields.Boolean(load_default=True, metadata={"description": "Grant on a pass, the score as value."})


class RequesterQuestionSchema(Schema):
    id = fields.Integer()
    position = fields.Integer()
    data = fields.Dict()
    answer = fields.Raw()


class QualificationTypeSummarySchema(Schema):
    id = fields.Integer()
    name = Text()
    description = Text()
    label_schema = fields.Dict()
    passing_score = fields.Integer()
    test_duration_seconds = fields.Integer()
    retry_delay_seconds = fields.Integer()
    max_attempts = fields.Integer(allow_none=True)
    auto_grant = fields.Boolean()
    created_at = fields.DateTime()


class QualificationTypeSchema(QualificationTypeSummarySchema):
    questions = fields.List(fields.Nested(RequesterQuestionSchema))


class QualificationTypeListSchema(Schema):
    data = fields.List(fields.Nested(QualificationTypeSummarySchema))
    next_after = fields.Integer(allow_none=True)


class GrantCreateSchema(Schema):
    """Whom to grant: `worker_id`, of a worker who has worked on your projects or taken your tests (ops: any), or
    `username`, the one a worker gave you; exactly one of the two."""

    worker_id = Id(strict=True, metadata={"description": "A worker who has worked for you (ops: any worker)."})
    username = Text(validate=validate.Length(1, 64), metadata={"description": "The username a worker gave you."})
    value = fields.Integer(load_default=1, strict=True, validate=validate.Range(-1_000_000_000, 1_000_000_000),
                           metadata={"description": "The qualification's value for this worker (default 1)."})
    reason = Text(required=True, validate=validate.Length(1, 2000))

    @validates_schema
    def _one_grantee(self, data: dict[str, Any], **_: Any) -> None:
        if ("worker_id" in data) == ("username" in data):
            raise ValidationError("Give exactly one of worker_id and username.", field_name="worker_id")


class RevokeSchema(Schema):
    reason = Text(required=True, validate=validate.Length(1, 2000))


class HoldersQuerySchema(Schema):
    revoked = fields.Boolean(load_default=False, metadata={"description": "Include revoked grants."})


class GrantSchema(Schema):
    worker_id = fields.Integer()
    username = Text(allow_none=True)
    value = fields.Integer()
    source = Text()
    reason = Text()
    granted_at = fields.DateTime()
    granted_by_id = fields.Integer(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    revoked_by_id = fields.Integer(allow_none=True)
    revoke_reason = Text(allow_none=True)
    best_score = fields.Integer(allow_none=True, metadata={"description": "The worker's best test score."})
    attempts = fields.Integer()


class GrantListSchema(Schema):
    data = fields.List(fields.Nested(GrantSchema))


# ---- the worker's side: never a known answer ---------------------------------------------------------------


class QualificationTestSchema(Schema):
    id = fields.Integer()
    name = Text()
    description = Text()
    question_count = fields.Integer()
    passing_score = fields.Integer()
    test_duration_seconds = fields.Integer()
    attempts_used = fields.Integer()
    attempts_left = fields.Integer(allow_none=True, metadata={"description": "null: no limit."})
    available_at = fields.DateTime(allow_none=True,
                                   metadata={"description": "When you may start it; null: never (no attempts left)."})
    open_attempt_id = fields.Integer(allow_none=True)
    held_value = fields.Integer(allow_none=True, metadata={"description": "Your value, if you hold it."})


class QualificationTestListSchema(Schema):
    data = fields.List(fields.Nested(QualificationTestSchema))


class WorkerQuestionSchema(Schema):
    id = fields.Integer()
    position = fields.Integer()
    data = fields.Dict()


class AttemptSchema(Schema):
    id = fields.Integer()
    test_id = fields.Integer()
    status = Text()
    started_at = fields.DateTime()
    expires_at = fields.DateTime()
    submitted_at = fields.DateTime(allow_none=True)
    score = fields.Integer(allow_none=True)
    passed = fields.Boolean(allow_none=True)
    label_schema = fields.Dict()
    questions = fields.List(fields.Nested(WorkerQuestionSchema))
    answers = fields.List(fields.Dict(), allow_none=True, metadata={"description": "Your answers, once submitted."})


class AttemptAnswerSchema(Schema):
    question_id = Id(required=True, strict=True)
    answer = JSON(required=True, allow_none=False)


class AttemptSubmitSchema(Schema):
    answers = fields.List(fields.Nested(AttemptAnswerSchema), required=True, validate=validate.Length(1, 500))
