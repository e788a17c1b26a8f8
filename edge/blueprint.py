"""HTTP-edge building blocks shared by every blueprint: strict JSON bodies, bounded ids, storable strings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import flask_smorest
from flask import Flask, Request, Response, g, request, stream_with_context
from flask.json.provider import DefaultJSONProvider
from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import LengthRequired, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.routing import IntegerConverter

from base.errors import InvalidInput
from base.validation import MAX_ID, JSONValueError, loads_strict, text_error


class StrictParser(FlaskParser):
    """A body that is not JSON is refused (415) instead of being read as `{}`; NaN/Infinity are invalid (400);
    JSON we cannot store (see base.validation) is a 422 naming the place in the body."""

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
    """flask-smorest's Blueprint with strict JSON bodies. `doc_tag`: document this blueprint's operations under
    another blueprint's tag (its name), for routes that live in another room than the paths they extend (the
    quality room's /projects/... paths are the requester API's): the OpenAPI groups, and clients generated from
    them, stay as they were."""

    ARGUMENTS_PARSER = StrictParser()

    def __init__(self, *args: Any, doc_tag: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.doc_tag = doc_tag

    def route(self, rule: str, *, parameters: Any = None, tags: list[str] | None = None, **options: Any) -> Any:
        return super().route(rule, parameters=parameters, tags=tags or ([self.doc_tag] if self.doc_tag else None),
                             **options)

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
    outlives the view (on SQLite an open transaction holds the write lock and stalls every other writer). The
    stream takes the session over from the request's unit of work: its reads stay one transaction, as before,
    and a download writes nothing (closing it ends that transaction)."""
    first = next(chunks, "")  # an export with nothing to say (JSON Lines of no rows) is an empty body
    if g.get("db_session") is session:
        g.pop("db_session")

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
