"""Domain errors and HTTP errors as RFC 9457 `application/problem+json` (HTML error pages outside the API)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, render_template, request
from marshmallow import ValidationError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError

from base.errors import PROBLEM_MIMETYPE, DomainError
from edge.telemetry import request_id

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying when the database is unreachable: a restarted PostgreSQL takes a
# few seconds to accept connections, and a dead pool is replaced on the next request.
RETRY_AFTER_SECONDS = 2


def transient_database_error(exc: BaseException) -> bool:
    """An error that says the database is unreachable or busy for now (refused, restarted, shut down, locked, the
    pool exhausted, a serialization failure), not that the request or our code is wrong: retrying may succeed."""
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    return False


def problem(status: int, title: str, detail: str | None = None, *, errors: Any = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """Build an `application/problem+json` response, serialized as the app's JSON responses are (compact, one
    line, ending with a newline)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    resp = current_app.json.response(body)
    resp.status_code, resp.mimetype = status, PROBLEM_MIMETYPE
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _webargs_errors(messages: Any) -> Any:
    # webargs nests field errors under the request location ({"json": {...}}); flatten a single one.
    if isinstance(messages, dict) and len(messages) == 1:
        (location, inner), = messages.items()
        if location in ("json", "query", "form", "files", "headers", "path", "view_args"):
            return inner
    return messages


def _wants_problem() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/openapi.json")


def _html_error(status: int, title: str, detail: str, rid: str | None = None) -> Response:
    html = render_template("error.html", status=status, title=title, detail=detail, request_id=rid)
    return Response(html, status=status, mimetype="text/html")


def register_error_handlers(app: Flask) -> None:
    """Install handlers; call after flask-smorest's Api so ours replace its JSON handler."""

    @app.errorhandler(DomainError)
    def _domain(exc: DomainError) -> Response:
        if not _wants_problem():
            return _html_error(exc.status, exc.title, exc.detail)
        return problem(exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers, **exc.extra)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        return problem(422, "Invalid input", "The request has invalid fields.", errors=exc.messages)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = exc.code or 500
        data = getattr(exc, "data", None) or {}
        headers = dict(data.get("headers") or {})
        if not _wants_problem():
            return _html_error(code, exc.name, exc.description or "")
        if "messages" in data or "errors" in data:
            errors = _webargs_errors(data.get("errors", data.get("messages")))
            return problem(code, "Invalid input" if code == 422 else exc.name,
                           data.get("message") or "The request has invalid fields.",
                           errors=errors, headers=headers)
        if code == 413:
            limit = request.max_content_length
            detail = f"The request body is larger than the limit of {limit} bytes." if limit else exc.description
            return problem(413, "Request entity too large", detail, headers=headers)
        if code == 405:
            headers.update({"Allow": ", ".join(exc.valid_methods or [])} if hasattr(exc, "valid_methods")
                           and exc.valid_methods else {})
        return problem(code, exc.name, data.get("message") or exc.description, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # pragma: no cover - routed above
            return _http(exc)
        if transient_database_error(exc):
            # Nothing was committed (the unit of work rolls back on the way out), so the client may simply retry.
            log.warning("database unavailable on %s %s: %s", request.method, request.path,
                        str(getattr(exc, "orig", exc)).strip().splitlines()[0:1])
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            title, detail = "Service unavailable", "The database is unavailable for a moment; retry shortly."
            if not _wants_problem():
                g.page_account = None  # the page's header would ask the database who is signed in
                resp = _html_error(503, title, detail)
                resp.headers.update(headers)
                return resp
            return problem(503, title, detail, headers=headers)
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_problem():
            return _html_error(500, "Internal server error", InternalServerError.description, request_id())
        # The request id lets the user's report be matched with the logged traceback.
        return problem(500, "Internal server error", "An unexpected error occurred; it has been logged under the "
                       "request id given.", request_id=request_id())
