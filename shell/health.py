"""`GET /healthz`: database and Redis status for load balancers and operators."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from edge.problems import RETRY_AFTER_SECONDS
from edge.request import db_session, redis_client

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    """200 when the database answers (status "degraded" if Redis does not); 503 when the database is down."""
    body: dict[str, str] = {}
    try:
        db_session().execute(text("SELECT 1"))
        body["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means the database is unusable
        body["database"] = f"error: {type(exc).__name__}"
    client = redis_client()
    if client is None:
        body["redis"] = "not configured"
    else:
        try:
            client.ping()
            body["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            body["redis"] = f"error: {type(exc).__name__}"
    if body["database"] != "ok":
        body["status"] = "down"
        # The load balancer's cue, as the API's 503s are (edge/problems.py): retry shortly.
        return jsonify(body), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    body["status"] = "degraded" if body["redis"].startswith("error") else "ok"
    return jsonify(body), 200
