"""Every request: a request id (the client's X-Request-ID when sane, else a new one) sent back on every response,
one log line (JSON with CROWDMARKET_LOG_FORMAT=json), and its count and duration in the metrics (edge/metrics.py).

The log's records all carry the request id of the request they were written in, so an error a user reports with
the id of its response (500 problems include it) is found in the logs with everything else that request wrote.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from edge import metrics

HEADER = "X-Request-ID"
# What a client's id may be to be kept: short, and nothing that could split a log line or a header (a proxy's or
# a load balancer's ids are UUIDs or hex; W3C trace ids hex).
_SANE_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "{levelname}{name}{message}{request_id}{process}"
UNMATCHED = "<unmatched>"  # the endpoint label of a request no route took (a 404, a 405)

log = logging.getLogger("crowdmarket.request")


def request_id() -> str | None:
    """The id of the request being served (None outside a request)."""
    return g.get("request_id") if has_request_context() else None


def incoming_id(value: str | None) -> str:
    """The client's id when it is sane, else a new one."""
    if value and _SANE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamp every record with the id of the request it was written in ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id() or "-"
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is when a record comes, not as it was when the app was built (as logging's own
    last-resort handler does)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, request_id, pid, and the record's
    extra fields (a request's method, path, status, ...); an exception's traceback as exc_info."""
    return JsonFormatter(JSON_FIELDS, style="{", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger", "process": "pid"})


def configure_logging(level: str, fmt: str) -> None:
    """Log to stderr in `fmt` ("text" or "json") at `level`, unless logging was set up by someone else (a test
    runner, an embedding program): then its handlers stay and only get the request id."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, StderrHandler)]
    if root.handlers and not ours:
        return
    handler = ours[0] if ours else StderrHandler()
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if not handler.filters:
        handler.addFilter(RequestIdFilter())
    if not ours:
        root.addHandler(handler)
    root.setLevel(level)


def _account_id() -> int | None:
    account = g.get("account") or g.get("page_account")
    return getattr(account, "id", None)


def _start() -> None:
    g.request_started = time.perf_counter()
    g.request_id = incoming_id(request.headers.get(HEADER))


def _finish(response: Response) -> Response:
    if "request_id" not in g:  # a hook ahead of ours refused the request
        _start()
    rid = g.request_id
    response.headers[HEADER] = rid
    seconds = time.perf_counter() - g.request_started
    endpoint = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    metrics.observe_request(endpoint, request.method, response.status_code, seconds)
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s %s", request.method, request.path, response.status_code, extra={
            "request_id": rid, "method": request.method, "path": request.path, "endpoint": endpoint,
            "status": response.status_code, "duration_ms": round(seconds * 1000, 3), "account_id": _account_id()})
    return response


def install(app: Flask) -> None:
    """Time and id every request, before any other hook runs (one may refuse it) and after all have."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request_funcs.setdefault(None, []).insert(0, _finish)
