"""What the HTML pages share: CSRF on every form, and the signed-in account of a page request.

A page session is an API token: issued at log-in by the token service (stored hashed), its plaintext is all the
signed session cookie holds, and each page request authenticates it exactly as bearer auth does. Revoking it at
log-out ends the session everywhere, so a copied cookie stops working too."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from base.errors import Forbidden
from base.identity import Caller, Role
from edge.auth import AUTHENTICATE
from edge.request import clock, db_session

F = TypeVar("F", bound=Callable[..., Any])
SESSION_TOKEN = "token"
# Where a page that needs a signed-in account sends a visitor who is not: the workers' log-in page.
LOGIN_VIEW = "worker_pages.login"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A work page inside another site's frame (MTurk's ExternalQuestion) gets no session cookie there (SameSite=Lax):
# its script authenticates with a signed per-assignment token in this header instead (console/work.py). A request
# carrying it never acts with the session, so CSRF (a cookie riding along) does not apply to it; and no other
# site's page can set a custom header on a request to us without a CORS preflight we never grant.
WORK_TOKEN_HEADER = "X-Work-Token"

csrf = CSRFProtect()

# Where each role lands after log-in, and what its navigation offers: (label, path) pairs. Paths, not endpoint
# names, as the rooms that serve them sit above this layer.
HOME = {Role.WORKER: "/work", Role.OPS: "/ops", Role.REQUESTER: "/requester"}
NAVIGATION = {
    Role.WORKER: (("Tasks", "/work"), ("Earnings", "/work/earnings")),
    Role.OPS: (("Flags", "/ops"), ("Payouts", "/ops/payouts"), ("Projects", "/ops/projects")),
    Role.REQUESTER: (("Projects", "/requester"),),
}


def home_for(role: Role) -> str:
    return HOME[role]


def install(app: Flask) -> None:
    """CSRF on every state-changing request outside the JSON API. The API authenticates with bearer tokens and
    never reads the session cookie, so a cross-site request cannot act with a browser's credentials there; it
    stays exempt, and pages are protected by default (a new form cannot forget it)."""
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked below, for pages only
    # The token lives as long as the session (cleared at log-in and log-out): a form left open an hour still posts.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    csrf.init_app(app)

    @app.before_request
    def _check_csrf() -> None:
        if (request.method in UNSAFE_METHODS and not is_api_path(request.path)
                and WORK_TOKEN_HEADER not in request.headers):
            csrf.protect()  # raises CSRFError, a 400

    @app.errorhandler(CSRFError)
    def _csrf_refused(exc: CSRFError) -> Response:
        # Said plainly: what the worker sees after a form sat open past log-out, or a post from another site.
        html = render_template("error.html", status=400, title="Form refused",
                               detail=f"This form was not sent from a page of this site's current session "
                                      f"({exc.description.rstrip('.')}). Go back, reload the page and try again.")
        return Response(html, status=400, mimetype="text/html")


def is_api_path(path: str) -> bool:
    return path.startswith("/api/")


def sign_in(token: str) -> None:
    """Start a page session holding `token`, after dropping whatever the session held (no session fixation: a
    session planted before log-in, with its CSRF secret, is not the one signed in)."""
    session.clear()
    session.permanent = True  # the cookie lasts PERMANENT_SESSION_LIFETIME, as long as the token
    session[SESSION_TOKEN] = token


def sign_out() -> str | None:
    """End the page session; returns the token it held (for the caller to revoke)."""
    token = session.get(SESSION_TOKEN)
    session.clear()
    return token if isinstance(token, str) else None


def page_account() -> Caller | None:
    """The account signed in on this page request (its token live, the account active), or None."""
    if "page_account" not in g:
        token = session.get(SESSION_TOKEN)
        account = None
        if isinstance(token, str):
            account = current_app.extensions[AUTHENTICATE](db_session(), token, now=clock())
        g.page_account = account
    return g.page_account


def signed_in(*roles: Role) -> Callable[[F], F]:
    """Guard a page: a signed-in account with one of `roles`; anyone else is sent to log in, then back here."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            account = page_account()
            if account is None:
                return redirect(url_for(LOGIN_VIEW, next=request.full_path.rstrip("?")))
            if account.role not in roles:
                raise Forbidden(f"This page is for {', '.join(r.value for r in roles)} accounts.")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


MAX_ID = 2**63 - 1  # the largest id any of our databases stores (BIGINT; SQLite's INTEGER)


def query_id(name: str) -> int | None:
    """A positive id from the query string (paging cursors, filters), or None when it is missing or is not one:
    a page then shows its default rather than refuse, and the database never sees a number it cannot hold."""
    value = request.args.get(name, type=int)
    return value if value is not None and 0 < value <= MAX_ID else None


def safe_next(target: str | None, default: str) -> str:
    """`target` if it is a path on this site, else `default` (no open redirect through ?next=)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
