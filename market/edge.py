"""HTTP-edge building blocks shared by every blueprint: strict JSON bodies, bounded ids, storable strings."""

from __future__ import annotations

import json
from typing import Any

import flask_smorest
from flask import Flask, Request
from flask.json.provider import DefaultJSONProvider
from marshmallow import Schema, fields, validate
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.routing import IntegerConverter

from market.validation import MAX_ID, loads_strict, text_error


class StrictParser(FlaskParser):
    """A body that is not JSON is refused (415) instead of being read as `{}`; NaN/Infinity are invalid."""

    def _raw_load_json(self, req: Request) -> Any:
        if not core.is_json(req.mimetype):
            if req.content_length or req.get_data(cache=True):
                raise UnsupportedMediaType("Send a JSON body with Content-Type: application/json.")
            return core.missing
        data = req.get_data(cache=True)
        # webargs reads a JSONDecodeError with an empty `doc` as "no body", so errors keep the text.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"Bytes decoding error : {exc.reason}", doc=repr(data[:50]),
                                       pos=exc.start) from exc
        try:
            return loads_strict(text)
        except json.JSONDecodeError:
            raise
        except ValueError as exc:
            raise json.JSONDecodeError(str(exc), doc=text, pos=0) from exc


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser()

    def arguments(self, schema: type[Schema] | Schema, *args: Any, **kwargs: Any) -> Any:
        """As flask-smorest's, but a schema class is instantiated once, here: webargs would build an instance
        (deep-copying every field) on each request. Loading is thread-safe on a shared instance."""
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)


class BoundedInt(IntegerConverter):
    """`<int:...>` path segments beyond a 32-bit id do not match (404) instead of overflowing the database."""

    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(url_map, *args, **kwargs)


class StrictJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_strict(s)


def install(app: Flask, api: flask_smorest.Api) -> None:
    """Use the strict JSON provider and bounded ids; call before registering blueprints."""
    app.json = StrictJSONProvider(app)
    app.url_map.converters["int"] = BoundedInt
    api.register_converter(BoundedInt, lambda c: {"type": "integer", "minimum": 0, "maximum": c.max})


class Text(fields.String):
    """A string the database can store: no NUL characters or unpaired surrogates."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        result = super()._deserialize(value, attr, data, **kwargs)
        problem = text_error(result)
        if problem:
            raise self.make_error("invalid_text", problem=problem)
        return result

    default_error_messages = {"invalid_text": "{problem}."}  # noqa: RUF012


def Id(**kwargs: Any) -> fields.Integer:  # noqa: N802 - reads like a field class
    """An id field: a positive 32-bit integer."""
    return fields.Integer(validate=validate.Range(1, MAX_ID), **kwargs)
