"""Schemas for accounts and tokens at the HTTP edge."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from market.edge import Text


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


class NewTokenSchema(TokenSchema):
    token = Text(metadata={"description": "Shown once; only its hash is stored."})


class TokenCreateSchema(Schema):
    name = Text(load_default="", validate=validate.Length(max=100))
