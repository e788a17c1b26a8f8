"""HTTP-edge building blocks shared by every blueprint: strict JSON bodies, bounded ids, storable strings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import flask_smorest
from flask import Flask, Request, Response, request, stream_with_context
from flask.json.provider import DefaultJSONProvider
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy.orm import Session
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import LengthRequired, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.routing import IntegerConverter

from market.labels import ANSWER_TYPES
from market.problems import InvalidInput
from market.validation import MAX_ID, JSONValueError, json_error, loads_strict, text_error


class StrictParser(FlaskParser):
    """A body that is not JSON is refused (415) instead of being read as `{}`; NaN/Infinity are invalid (400);
    JSON we cannot store (see market.validation) is a 422 naming the place in the body."""

    def _raw_load_json(self, req: Request) -> Any:
        if not core.is_json(req.mimetype):
            if req.content_length or request_body(req):
                raise UnsupportedMediaType("Send a JSON body with Content-Type: application/json.")
            return core.missing
        data = request_body(req)
        # webargs reads a JSONDecodeError with an empty `doc` as "no body", so errors keep the text.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"Bytes decoding error : {exc.reason}", doc=repr(data[:50]),
                                       pos=exc.start) from exc
        try:
            return loads_strict(text)
        except JSONValueError as exc:
            raise ValidationError(exc.messages()) from exc
        except json.JSONDecodeError:
            raise
        except ValueError as exc:
            raise json.JSONDecodeError(str(exc), doc=text, pos=0) from exc


def request_body(req: Request) -> bytes:
    """The body, read whole. Without a Content-Length (a chunked body) werkzeug's stream stops at the limit without
    an error, so a larger body would be read cut short: one byte more from the server's input tells (a 413)."""
    data = req.get_data(cache=True)
    limit = req.max_content_length
    if req.content_length is None and limit is not None and len(data) >= limit and req.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return data


def _refuse_unframed_body() -> None:
    # A server that does not decode chunked bodies (no wsgi.input_terminated) hands the app an empty stream: the
    # body would be read as none at all, and an empty batch request publishes every item.
    if request.content_length is None and "wsgi.input_terminated" not in request.environ \
            and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise LengthRequired("This server cannot read a chunked body: send it with a Content-Length.")


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
    """Use the strict JSON provider and bounded ids, refuse bodies the server cannot frame; call before registering
    blueprints."""
    app.json = StrictJSONProvider(app)
    app.before_request(_refuse_unframed_body)
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


class FullMatch(validate.Regexp):
    """A pattern the whole value must match. The spec shows it as `^(?:...)$`, which JSON Schema (ECMA-262) reads
    the same way; Python's `$` alone would also accept a trailing newline, so the check is a full match."""

    def __init__(self, pattern: str, **kwargs: Any) -> None:
        super().__init__(f"^(?:{pattern})$", **kwargs)

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class _Storable(fields.Field):
    """Free-form JSON that the database can store. Bodies are checked as they are parsed (StrictParser); this
    checks the value wherever else a schema gets it from."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        error = json_error(result)
        if error is not None:
            raise ValidationError(error.messages() if error.path else error.messages()["_schema"])
        return result


class JSON(_Storable, fields.Raw):
    """Any JSON value: an answer, a known answer."""


class JSONObject(_Storable, fields.Dict):
    """A JSON object: a question's data, client metadata, evidence."""


class Fixed(fields.Decimal):
    """A decimal kept in a NUMERIC column with `places` decimal places. It is taken as given or refused, never
    rounded (0.4999 would be stored as 0.50, and 1.004 rounded into a range that ends at 1): more significant
    places than the column keeps are an error; trailing zeros are not places (0.0500 is 0.05). Bound it with
    Decimal ranges: Decimal("0.999") > 0.999 as a float."""

    default_error_messages = {"places": "at most {places} decimal places."}  # noqa: RUF012

    def __init__(self, places: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.column_places = places

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        number: Decimal = super()._deserialize(value, attr, data, **kwargs)
        _, digits, exponent = number.as_tuple()
        significant = "".join(map(str, digits)).rstrip("0")
        if significant and -(int(exponent) + len(digits) - len(significant)) > self.column_places:
            raise self.make_error("places", places=self.column_places)
        return number


def Id(**kwargs: Any) -> fields.Integer:  # noqa: N802 - reads like a field class
    """An id field: a positive 32-bit integer."""
    return fields.Integer(validate=validate.Range(1, MAX_ID), **kwargs)


def idempotency_doc(what: str) -> dict[str, Any]:
    """The OpenAPI description of the Idempotency-Key header of a create endpoint."""
    return {"parameters": [{"in": "header", "name": "Idempotency-Key", "schema": {"type": "string", "maxLength": 255},
                            "description": f"Retries with the same key return the same {what}; the same key "
                                           "with a different request is 409."}]}


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header (None when absent); 1-255 characters or a 422."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidInput("Idempotency-Key must be 1-255 characters.",
                           errors={"Idempotency-Key": ["1-255 characters"]})
    problem = None if key is None else text_error(key)
    if problem:  # a NUL reaches the header through werkzeug's server; PostgreSQL cannot store it
        raise InvalidInput(f"Idempotency-Key {problem}.", errors={"Idempotency-Key": [f"{problem}."]})
    return key


def streamed(session: Session, chunks: Iterator[str], *, mimetype: str, filename: str) -> Response:
    """A download streamed from `chunks`, which read through `session`. The first chunk is taken here, so an
    error it raises is an ordinary error response; the stream closes the session when it ends, because it
    outlives the view (on SQLite an open transaction holds the write lock and stalls every other writer)."""
    first = next(chunks, "")  # an export with nothing to say (JSON Lines of no rows) is an empty body

    def stream() -> Iterator[str]:
        try:
            yield first
            yield from chunks
        finally:
            session.close()

    return Response(stream_with_context(stream()), mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def page(rows: list[Any], limit: int, key: str = "id") -> dict[str, Any]:
    """A keyset page: the rows, and the `after` that fetches the next page (None when this one is the last)."""
    last = rows[-1] if rows else None
    next_after = (last[key] if isinstance(last, dict) else getattr(last, key)) if len(rows) == limit else None
    return {"data": rows, "next_after": next_after}


class PageQuerySchema(Schema):
    after = fields.Integer(validate=validate.Range(0, 2**31 - 1),
                           metadata={"description": "Return rows with an id greater than this (keyset paging)."})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


# ---- label schemas: a project's, and a qualification test's -------------------------------------------------

KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"


class CategorySchema(Schema):
    key = Text(required=True, validate=FullMatch(KEY_PATTERN, error="must be 1-64 characters of "
                                                                "letters, digits, _ . : - starting alphanumeric"))
    name = Text(required=True, validate=validate.Length(1, 200))
    description = Text(validate=validate.Length(max=2000))
    example = Text(validate=validate.Length(max=2000))


# The keys each type of label schema allows, and those it needs.
LABEL_KEYS = {
    "single_choice": {"type", "categories"},
    "multi_choice": {"type", "categories", "min_choices", "max_choices"},
    "rating": {"type", "min", "max", "min_label", "max_label"},
    "text": {"type", "max_length"},
}
LABEL_NEEDS = {"single_choice": ["categories"], "multi_choice": ["categories"], "rating": ["min", "max"], "text": []}


class LabelSchemaSchema(Schema):
    """What a worker answers: single_choice, multi_choice, rating or text."""

    class Meta:
        openapi = {"oneOf": [
            {"properties": {"type": {"enum": [kind]}}, "required": ["type", *LABEL_NEEDS[kind]],
             "not": {"anyOf": [{"required": [key]} for key in sorted(set().union(*LABEL_KEYS.values()) - keys)]}}
            for kind, keys in LABEL_KEYS.items()]}

    type = Text(required=True, validate=validate.OneOf(ANSWER_TYPES))
    categories = fields.List(fields.Nested(CategorySchema), validate=validate.Length(2, 500))
    min_choices = fields.Integer(strict=True, validate=validate.Range(0, 500))
    max_choices = fields.Integer(strict=True, validate=validate.Range(1, 500))
    min = fields.Integer(strict=True, validate=validate.Range(-1000, 1000))
    max = fields.Integer(strict=True, validate=validate.Range(-1000, 1000))
    min_label = Text(validate=validate.Length(max=200))
    max_label = Text(validate=validate.Length(max=200))
    max_length = fields.Integer(strict=True, validate=validate.Range(1, 100_000))

    @validates_schema
    def _per_type(self, data: dict[str, Any], **_: Any) -> None:
        kind = data.get("type")
        if kind not in LABEL_KEYS:
            return
        extra = sorted(set(data) - LABEL_KEYS[kind])
        if extra:
            raise ValidationError({k: [f"not allowed for type {kind}"] for k in extra})
        missing = [k for k in LABEL_NEEDS[kind] if k not in data]
        if missing:
            raise ValidationError({k: [f"required for type {kind}"] for k in missing})
        if kind in ("single_choice", "multi_choice"):
            keys = [c["key"] for c in data["categories"]]
            if len(set(keys)) != len(keys):
                raise ValidationError({"categories": ["category keys must be unique"]})
            lo, hi = data.get("min_choices", 0), data.get("max_choices", len(keys))
            if kind == "multi_choice" and not lo <= hi <= len(keys):
                raise ValidationError({"max_choices": ["need min_choices <= max_choices <= number of categories"]})
        if kind == "rating":
            if not data["min"] < data["max"] or data["max"] - data["min"] > 100:
                raise ValidationError({"max": ["need min < max and at most 100 steps"]})
