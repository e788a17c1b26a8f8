"""The workers' pages: sign up, log in, log out (a signed-in worker lands on the dashboard, console/dashboard.py).

The same schemas, services and rate limits as the API (workers/api.py `sign_up`, `log_in`); a page session is a
login token in the signed session cookie (edge/web.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from base.errors import DomainError
from base.identity import Role
from edge.request import clock, db_session
from edge.web import NAVIGATION, home_for, is_api_path, page_account, safe_next, sign_in, sign_out
from workers import service
from workers.api import log_in, sign_up
from workers.models import Account
from workers.schemas import LoginSchema, RegisterSchema
from workers.service import MIN_PASSWORD, USERNAME_RULE

blp = Blueprint("worker_pages", __name__)


@blp.app_context_processor
def _viewer() -> dict[str, Any]:
    """The signed-in account every page's header shows (base.html): its name, role and navigation."""
    if request.endpoint is None or is_api_path(request.path):
        return {"viewer": None}
    caller = page_account()
    if caller is None:
        return {"viewer": None}
    account = db_session().get_one(Account, caller.id)
    return {"viewer": {"id": caller.id, "role": caller.role.value, "name": account.username or account.email,
                       "display_name": account.display_name, "nav": NAVIGATION[caller.role]}}


@blp.after_request
def _no_store(response: Response) -> Response:
    # Forms carry a CSRF token and signed-in pages a worker's data: never kept by a cache, nor shown again by the
    # back button after log-out.
    response.headers["Cache-Control"] = "no-store"
    return response


def _form(template: str, status: int = 200, **context: Any) -> tuple[str, int, dict[str, str]]:
    headers = context.pop("headers", None) or {}
    html = render_template(template, rules={"username": USERNAME_RULE, "password": MIN_PASSWORD},
                           values=context.pop("values", {}), errors=context.pop("errors", {}),
                           message=context.pop("message", None), **context)
    return html, status, headers


def _refused(template: str, exc: DomainError, values: dict[str, str], **context: Any) -> tuple[str, int, dict]:
    # Nothing to undo: a refusal comes before any write (the limits, the password check) or its savepoint took the
    # write back (a username taken), so the unit of work ends an empty transaction.
    errors = exc.errors if isinstance(exc.errors, dict) else {}
    message = exc.detail
    if "retry_after" in exc.extra:
        message = f"{message.removesuffix('try again later.')}try again in {_wait(exc.extra['retry_after'])}."
    return _form(template, exc.status, values=values, errors=errors, message=message, headers=exc.headers,
                 **context)


def _wait(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{-(-seconds // 60)} minutes"


def _expires_at():
    return clock() + current_app.permanent_session_lifetime


@blp.route("/signup", methods=["GET", "POST"])
def signup():
    """Sign up as a crowd worker (then signed in)."""
    if request.method == "GET":
        if (caller := page_account()) is not None:
            return redirect(home_for(caller.role))
        return _form("workers/signup.html")
    values = {k: request.form.get(k, "") for k in ("username", "display_name")}
    try:
        data = RegisterSchema().load({k: request.form.get(k, "") for k in ("username", "password", "display_name")})
    except ValidationError as exc:
        return _form("workers/signup.html", 422, values=values, errors=exc.messages,
                     message="Please correct the fields below.")
    try:
        _, token = sign_up(data, token_name="web", expires_at=_expires_at())
    except DomainError as exc:
        return _refused("workers/signup.html", exc, values)
    sign_in(token)
    flash("Welcome! Your account is ready.")
    return redirect(home_for(Role.WORKER))


@blp.route("/login", methods=["GET", "POST"])
def login():
    """Log in with username and password."""
    target = safe_next(request.values.get("next"), "")
    if request.method == "GET":
        if (caller := page_account()) is not None:
            return redirect(target or home_for(caller.role))
        return _form("workers/login.html", next=request.args.get("next", ""))
    values = {"username": request.form.get("username", "")}
    try:
        data = LoginSchema().load({k: request.form.get(k, "") for k in ("username", "password")})
    except ValidationError as exc:
        return _form("workers/login.html", 422, values=values, errors=exc.messages, next=request.form.get("next", ""),
                     message="Please fill in your username and password.")
    try:
        account, token = log_in(data["username"], data["password"], token_name="web", expires_at=_expires_at())
    except DomainError as exc:
        return _refused("workers/login.html", exc, values, next=request.form.get("next", ""))
    sign_in(token)
    return redirect(target or home_for(account.role))


@blp.post("/logout")
def logout():
    """Log out: the session's token is revoked, so a copy of the cookie is refused from now on."""
    token = sign_out()
    if token is not None:
        service.revoke_plaintext(db_session(), token, now=clock())
    flash("You are logged out.")
    return redirect(url_for("worker_pages.login"))
