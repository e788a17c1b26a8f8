"""Schemas for accounts, tokens, and ops' flags and blocks at the HTTP edge."""

from __future__ import annotations

import datetime as dt

from marshmallow import Schema, fields, validate

from edge.fields import FullMatch, Id, JSONObject, PageQuerySchema, Text
from workers.models import FlagReason, FlagState
from workers.service import MIN_PASSWORD, USERNAME, USERNAME_RULE


class AccountSchema(Schema):
    id = fields.Integer()
    role = Text()
    email = Text(allow_none=True)
    username = Text(allow_none=True)
    display_name = Text()
    created_at = fields.DateTime()


class TokenSchema(Schema):
    id = fields.Integer()
    name = Text()
    prefix = Text(metadata={"description": "The token's first characters, to recognise it."})
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime(allow_none=True, metadata={"description": "When it stops working; null: never."})
    login = fields.Boolean(metadata={"description": "Issued by a login or sign-up (an account keeps its newest 5)."})


class NewTokenSchema(TokenSchema):
    token = Text(metadata={"description": "Shown once; only its hash is stored."})


class TokenCreateSchema(Schema):
    name = Text(load_default="", validate=validate.Length(max=100))
    expires_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=dt.UTC,
                                      metadata={"description": "When the token stops working (in the future); "
                                                               "null or absent: until revoked."})


# ---- ops: flags and blocks ---------------------------------------------------------------------------------


class FlagCreateSchema(Schema):
    worker_id = Id(required=True, strict=True)
    project_id = Id(load_default=None, allow_none=True, strict=True)
    note = Text(required=True, validate=validate.Length(1, 5000), metadata={"description": "Why, for the record."})
    evidence = JSONObject(load_default=None, allow_none=True,
                           metadata={"description": "What was seen: metric, threshold, n, window."})


class FlagQuerySchema(PageQuerySchema):
    state = Text(validate=validate.OneOf([s.value for s in FlagState]))
    reason = Text(validate=validate.OneOf([r.value for r in FlagReason]))
    worker_id = Id(strict=False)
    project_id = Id(strict=False)


class BlockSchema(Schema):
    scope = Text(required=True, validate=validate.OneOf(["project", "all"]))
    expires_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=dt.UTC,
                                      metadata={"description": "When the block ends by itself; null: never."})
    reason = Text(required=True, validate=validate.Length(1, 5000))


class FlagNoteSchema(Schema):
    reason = Text(required=True, validate=validate.Length(1, 5000))


class FlagEventSchema(Schema):
    action = Text()
    actor_id = fields.Integer(allow_none=True)
    note = Text()
    at = fields.DateTime()


class FlagBlockSchema(Schema):
    scope = Text()
    project_id = fields.Integer(allow_none=True)
    reason = Text()
    expires_at = fields.DateTime(allow_none=True)
    lifted_at = fields.DateTime(allow_none=True)
    in_force = fields.Boolean()


class FlagSchema(Schema):
    id = fields.Integer()
    worker_id = fields.Integer()
    project_id = fields.Integer(allow_none=True)
    reason = Text()
    evidence = fields.Dict(allow_none=True)
    state = Text()
    created_by_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    block = fields.Nested(FlagBlockSchema, allow_none=True)
    events = fields.List(fields.Nested(FlagEventSchema))


class FlagListSchema(Schema):
    data = fields.List(fields.Nested(FlagSchema))
    next_after = fields.Integer(allow_none=True)


class RegisterSchema(Schema):
    username = Text(required=True, validate=FullMatch(USERNAME, error=USERNAME_RULE))
    password = Text(required=True, validate=validate.Length(MIN_PASSWORD, 1024,
                                                            error=f"{MIN_PASSWORD}-1024 characters"), load_only=True)
    display_name = Text(load_default="", validate=validate.Length(max=200))


class LoginSchema(Schema):
    username = Text(required=True, validate=validate.Length(1, 320),
                   metadata={"description": "A worker's username; requesters and ops staff give their email."})
    password = Text(required=True, validate=validate.Length(1, 1024), load_only=True)


class NewWorkerTokenSchema(Schema):
    account_id = fields.Integer()
    username = Text()
    token = Text(metadata={"description": "Shown once; only its hash is stored."})


class IdentitySchema(Schema):
    platform = Text(required=True, validate=FullMatch("[a-z][a-z0-9_-]{1,31}"))
    external_id = Text(required=True, validate=validate.Length(1, 255))
    account_id = fields.Integer(dump_only=True)
