"""Schemas for accounts and tokens at the HTTP edge."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class AccountSchema(Schema):
    id = fields.Integer()
    role = fields.String()
    email = fields.String(allow_none=True)
    username = fields.String(allow_none=True)
    display_name = fields.String()
    created_at = fields.DateTime()


class TokenSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    prefix = fields.String(metadata={"description": "The token's first characters, to recognise it."})
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "Shown once; only its hash is stored."})


class TokenCreateSchema(Schema):
    name = fields.String(load_default="", validate=validate.Length(max=100))
