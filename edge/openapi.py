"""The OpenAPI document's shared parts: problem+json errors on every operation, rules a schema checks in code
(`Meta.openapi`), and field conversions apispec leaves wrong (Decimal bounds rendered as strings).

Each operation documents the problems it can answer with: those that follow from how it is declared (a token
and a role, ids in the path, a body or query to validate) are added here; those of its own rules (409, 410,
429, ...) it declares with `problems(...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from http import HTTPStatus
from typing import Any, TypeVar

import flask_smorest
from apispec import BasePlugin
from flask import Flask
from flask_smorest.utils import prepare_response
from marshmallow import INCLUDE, Schema, fields

from base.errors import PROBLEM_MIMETYPE
from base.identity import Role

F = TypeVar("F", bound=Callable[..., Any])

# What a body can be answered with: malformed JSON, a chunked body the server cannot read, too large, not JSON,
# invalid fields. A raw upload (an import) is never parsed as JSON.
JSON_BODY_PROBLEMS = (400, 411, 413, 415, 422)
RAW_BODY_PROBLEMS = (411, 413, 422)


class ProblemSchema(Schema):
    """An RFC 9457 problem: every error the API answers with, as `application/problem+json`."""

    class Meta:
        unknown = INCLUDE  # extension members: `reason`, `retry_after`, `assignment_id`, ...

    type = fields.String(metadata={"description": "Always about:blank: the status says what kind of problem."})
    title = fields.String(required=True, metadata={"description": "The status in words."})
    status = fields.Integer(required=True)
    detail = fields.String(metadata={"description": "What went wrong this time, for a person."})
    errors = fields.Raw(metadata={"description": "Field errors: an object of messages by field (nested like the "
                                                 "request), or a list of line errors for imports."})


def problems(*statuses: int) -> Callable[[F], F]:
    """Document the problems a view's own rules answer with (409 conflicts, 410 expired leases, ...)."""

    def decorator(view: F) -> F:
        view._problems = (*getattr(view, "_problems", ()), *statuses)  # type: ignore[attr-defined]
        return view

    return decorator


def download_doc(*mimetypes: str) -> dict[str, Any]:
    """The OpenAPI description of a streamed download's body in each of its formats (for `blp.doc`)."""
    return {"responses": {200: {"content": {
        m: {"schema": {"type": "object" if m == "application/json" else "string"}} for m in mimetypes}}}}


class Api(flask_smorest.Api):
    """flask-smorest's Api with problem+json error responses."""

    ERROR_SCHEMA = ProblemSchema

    def register_blueprint(self, blp: flask_smorest.Blueprint, **options: Any) -> None:
        """As flask-smorest's; a blueprint with a `doc_tag` adds no tag of its own to the document."""
        if getattr(blp, "doc_tag", None) is None:
            super().register_blueprint(blp, **options)
            return
        self.spec.tag = lambda _tag: self.spec  # type: ignore[method-assign]  # its operations carry doc_tag
        try:
            super().register_blueprint(blp, **options)
        finally:
            del self.spec.tag

    def _register_responses(self) -> None:
        for status in (*(s for s in HTTPStatus if s >= 400), None):
            response = {"description": status.phrase if status else "Unexpected error",
                        "schema": self.ERROR_SCHEMA}
            prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name if status else self.DEFAULT_ERROR_RESPONSE_NAME, response,
                                          lazy=True)


class Plugin(BasePlugin):
    """Adds to every operation the problems that follow from its declaration and those its view declares, and
    to every schema the JSON Schema keywords its `Meta.openapi` states (rules its validators check in code:
    one field or the other, allowed keys per type)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def schema_helper(self, name: str, definition: Any, schema: Any = None, **kwargs: Any) -> dict[str, Any]:
        return dict(getattr(getattr(schema, "Meta", None), "openapi", {}))

    def _view(self, endpoint: str, method: str) -> Callable[..., Any]:
        view = self.app.view_functions[endpoint]
        cls = getattr(view, "view_class", None)
        return getattr(cls, method) if cls is not None else view

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        rule = kwargs["rule"]
        for method, operation in (operations or {}).items():
            view = self._view(rule.endpoint, method)
            statuses = set(getattr(view, "_problems", ()))
            roles = getattr(view, "_roles", None)
            if roles is not None and operation.get("security") != []:
                statuses.add(401)
                if set(roles) != set(Role):
                    statuses.add(403)
                    operation["description"] = " ".join(filter(None, (
                        operation.get("description"), f"For {' and '.join(r.value for r in roles)} accounts.")))
            if rule.arguments:
                statuses.add(404)
            statuses.add(503)  # the database unreachable for a moment: retry after Retry-After (edge/problems.py)
            body = operation.get("requestBody", {}).get("content", {})
            if body:
                statuses.update(JSON_BODY_PROBLEMS if "application/json" in body else RAW_BODY_PROBLEMS)
            parameters = [p for p in operation.get("parameters", []) if isinstance(p, dict)]
            if any(p.get("in") == "query" for p in parameters):
                statuses.add(422)
            if any(p.get("name") == "Idempotency-Key" for p in parameters):
                statuses.update((409, 422))  # the key reused for another request; a key too long
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses.setdefault(str(status), HTTPStatus(status).name)


def _decimal_bounds(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """apispec serializes a Decimal field's bounds with the field, so they render as strings ("0.00")."""
    return {k: float(v) for k, v in ret.items() if isinstance(v, Decimal)}


def install(api: Api) -> None:
    """Field conversions; call before registering blueprints."""
    api.ma_plugin.converter.add_attribute_function(_decimal_bounds)
