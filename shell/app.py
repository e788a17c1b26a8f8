"""The application factory."""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask, g, request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from werkzeug.middleware.proxy_fix import ProxyFix

import console
from aggregation import api as aggregation_api
from base.clock import utcnow
from base.db import Database
from base.events import (
    AssignmentReturned,
    AssignmentsReviewed,
    AssignmentSubmitted,
    BatchPublished,
    BatchStatusChanged,
    EventHub,
    GoldItemChanged,
    LeasesLapsed,
    PlacesMoved,
)
from base.public_ids import ItemIds
from edge import blueprint, limits, metrics, openapi, telemetry, web
from edge.auth import AUTHENTICATE
from edge.problems import register_error_handlers
from edge.ratelimit import LoginLimits
from edge.request import App
from market.catalogue import api as market_api
from market.catalogue.results import worked_for
from market.engine import api as work_api
from market.quality import api as ops_api
from market.quality import evaluation, scoring
from payments.books import api as books_api
from payments.review import api as review_api
from payments.wage import api as wage_api
from payments.wage import holds, settle
from platforms import api as platforms_api
from platforms import jobs as platform_jobs
from qualification import api as qualification_api
from qualification import views as qualification_views
from qualification.api import WORKED_FOR
from qualification.gold import schedule_key
from shell import health, pages
from shell.config import ConfigError, check_config, load_config, resolve_secret_key
from workers import api as workers_api
from workers import views as workers_views
from workers.service import authenticate


class SessionCookies(SecureCookieSessionInterface):
    """Flask's cookie sessions, with the signing serializer built once per app rather than on every request (API
    calls included, which never use the session: it was a twentieth of a worker request's CPU)."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        serializer = app.extensions.get("crowdmarket.session_serializer")
        if serializer is None:
            serializer = app.extensions["crowdmarket.session_serializer"] = super().get_signing_serializer(app)
        return serializer

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when the request came over HTTPS (behind a proxy: as the trusted hops report it, ProxyFix and
        CROWDMARKET_PROXY_HOPS), or always with SESSION_COOKIE_SECURE; decided per request, so one deployment
        serves a plain-HTTP localhost and an HTTPS site right."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def subscribe(hub: EventHub) -> None:
    """Subscribe the handlers of domain events (base/events.py) on a database's hub."""
    for kind in (AssignmentSubmitted, AssignmentReturned, LeasesLapsed):
        hub.subscribe(kind, evaluation.on_work_done)
    hub.subscribe(GoldItemChanged, scoring.on_gold_item_changed)
    hub.subscribe(BatchPublished, holds.on_batch_published)
    hub.subscribe(PlacesMoved, holds.on_places_moved)
    hub.subscribe(AssignmentsReviewed, platform_jobs.on_assignments_reviewed)
    hub.subscribe(BatchStatusChanged, settle.on_batch_status_changed)
    metrics.subscribe(hub)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app. `overrides` replaces settings (tests pass DATABASE, CLOCK, SECRET_KEY, ...)."""
    app = App(__name__, instance_path=os.environ.get("CROWDMARKET_INSTANCE_PATH") or None)
    app.session_interface = SessionCookies()
    # The page session's cookie (workers/views.py, edge/web.py): never readable by scripts, not sent on cross-site
    # requests other than top-level navigation; Secure per request (SessionCookies.get_cookie_secure).
    app.config.update(SESSION_COOKIE_NAME="crowdmarket_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax")
    app.config.update(load_config(app.instance_path))
    app.config.update(overrides or {})
    resolve_secret_key(app.config, app.instance_path)
    check_config(app.config)
    if app.config["PROXY_HOPS"]:
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    telemetry.configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    telemetry.install(app)
    app.config.update(
        MAX_CONTENT_LENGTH=app.config["MAX_REQUEST_BYTES"],
        API_TITLE="crowdmarket",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",  # /docs is shell.pages' (ReDoc from our static files)
        API_SPEC_OPTIONS={
            "info": {"description": "Post labeling jobs, publish them as HITs, collect and export answers."},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}],
        },
    )

    if app.config.get("DATABASE") is None:
        url = app.config["DATABASE_URL"]
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            os.makedirs(os.path.dirname(url.removeprefix("sqlite:///")) or ".", exist_ok=True)
        app.config["DATABASE"] = Database.from_url(url, pool_size=app.config["DB_POOL_SIZE"])
    app.extensions["crowdmarket.db"] = app.config["DATABASE"]
    app.extensions["crowdmarket.clock"] = app.config.get("CLOCK") or utcnow
    # Tests may pin the gold schedule (GOLD_KEY); otherwise it is derived from the secret key.
    app.extensions["crowdmarket.gold_key"] = app.config.get("GOLD_KEY") or schedule_key(app.config["SECRET_KEY"])
    app.extensions["crowdmarket.item_ids"] = ItemIds(app.config["SECRET_KEY"])
    app.extensions["crowdmarket.redis"] = (
        redis.Redis.from_url(app.config["REDIS_URL"], socket_timeout=1, socket_connect_timeout=1)
        if app.config["REDIS_URL"] else None)

    # Tests give each app a namespace of its own (LIMIT_NAMESPACE), so counts never leak from one test to another.
    app.extensions["crowdmarket.login_limits"] = LoginLimits(
        app.extensions["crowdmarket.redis"], namespace=app.config.get("LIMIT_NAMESPACE", "crowdmarket"))

    try:
        limits.parse_rule(app.config.get("RATELIMIT_NEXT"))
    except ValueError as exc:
        raise ConfigError(f"CROWDMARKET_RATELIMIT_NEXT: {exc}") from exc
    limits.install(app)

    api = openapi.Api(app, spec_kwargs={"extra_plugins": [openapi.Plugin(app)]})
    openapi.install(api)
    blueprint.install(app, api)

    pages.install(app)
    web.install(app)
    app.register_blueprint(workers_views.blp)
    app.register_blueprint(qualification_views.blp)
    console.install(app)
    app.register_blueprint(health.blp)
    app.register_blueprint(metrics.blp)
    app.register_blueprint(aggregation_api.pages)
    for blp in (*market_api.BLUEPRINTS, workers_api.blp, work_api.blp, qualification_api.blp,
                qualification_api.tests_blp, *ops_api.BLUEPRINTS, aggregation_api.blp, wage_api.blp,
                *books_api.BLUEPRINTS, *review_api.BLUEPRINTS, platforms_api.blp):
        api.register_blueprint(blp)
    register_error_handlers(app)
    evaluation.install(app)
    # Connect the rooms that must not import each other: the edge's authenticator, qualification's view of the
    # market, and the handlers of domain events.
    app.extensions[AUTHENTICATE] = authenticate
    app.extensions[WORKED_FOR] = worked_for
    subscribe(app.extensions["crowdmarket.db"].events)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    return app
