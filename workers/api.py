"""Who am I, and my API tokens (any authenticated account)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app, request
from flask.views import MethodView

from base.errors import NotFound, TooManyRequests
from base.identity import Role
from edge import limits
from edge.auth import current_account, requires
from edge.blueprint import Blueprint
from edge.openapi import problems
from edge.ratelimit import LoginLimits, acquire_all
from edge.request import clock, db_session
from workers import service
from workers.models import Account, username_key
from workers.schemas import (
    AccountSchema,
    IdentitySchema,
    LoginSchema,
    NewTokenSchema,
    NewWorkerTokenSchema,
    RegisterSchema,
    TokenCreateSchema,
    TokenSchema,
)

blp = Blueprint("accounts", __name__, url_prefix="/api/v1", description="Your account and API tokens.")
ANY = tuple(Role)


@blp.route("/me")
class Me(MethodView):
    @requires(*ANY)
    @blp.response(200, AccountSchema)
    def get(self):
        """The account the token belongs to."""
        return db_session().get_one(Account, current_account().id)


@blp.route("/tokens")
class Tokens(MethodView):
    @requires(*ANY)
    @blp.response(200, TokenSchema(many=True))
    def get(self):
        """Your tokens (never their secrets)."""
        return service.list_tokens(db_session(), account_id=current_account().id)

    @requires(*ANY)
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, NewTokenSchema)
    def post(self, data: dict[str, Any]):
        """Create another token for your account, optionally expiring; the secret is in this response only."""
        session = db_session()
        token, plaintext = service.issue_token(session, account=current_account(), now=clock(), name=data["name"],
                                               expires_at=data["expires_at"])
        return {**{c: getattr(token, c) for c in TokenSchema().fields}, "token": plaintext}


@blp.route("/tokens/<int:token_id>")
class TokenDetail(MethodView):
    @requires(*ANY)
    @blp.response(200, TokenSchema)
    def delete(self, token_id: int):
        """Revoke a token at once."""
        return service.revoke_token(db_session(), account_id=current_account().id, token_id=token_id, now=clock())


def _limits() -> LoginLimits:
    limits: LoginLimits = current_app.extensions["crowdmarket.login_limits"]
    return limits


def _address() -> str:
    """The client's address: the peer's, or with CROWDMARKET_PROXY_HOPS the one the trusted proxies report."""
    return request.remote_addr or "unknown"


def count_sign_up() -> None:
    """Count one sign-up from the client's address against the sign-up limit (429 past it): the API's and the
    page's sign-ups, and a platform worker's account made on first sight (console/external.py)."""
    limits.sign_up(_address())


def sign_up(data: dict[str, Any], *, token_name: str, expires_at: dt.datetime | None = None) -> tuple[Account, str]:
    """Sign a worker up (RegisterSchema's fields) and issue a login token, within the sign-up limit per client
    address: the API's sign-up and the web page's, one copy."""
    count_sign_up()
    now = clock()
    session = db_session()
    account = service.register_worker(session, username=data["username"], password=data["password"],
                                       display_name=data["display_name"], now=now,
                                       password_hash=current_app.config["PASSWORD_HASH"])
    _, token = service.issue_token(session, account=account, now=now, name=token_name, login=True,
                                   expires_at=expires_at)
    return account, token


def log_in(username: str, password: str, *, token_name: str = "",
           expires_at: dt.datetime | None = None) -> tuple[Account, str]:
    """Check a worker's password and issue a login token, within the failed-login limits: the API's login and
    the web page's, one copy (so both count against the same limits)."""
    limits, now = _limits(), clock()
    user, address = username_key(username), _address()
    # Counted before the password is checked, so parallel guesses cannot all pass a check made before any
    # of them was counted.
    wait = acquire_all(limits.login_checks(user, address), now)
    if wait is not None:
        raise TooManyRequests("Too many failed logins; try again later.", retry_after=wait)
    account, token = service.login(db_session(), username=username, password=password, now=now, name=token_name,
                                   expires_at=expires_at, password_hash=current_app.config["PASSWORD_HASH"])
    limits.login_succeeded(user, address)
    return account, token


@blp.route("/workers", tags=["work"])  # documented with the worker API, as it always was
class Workers(MethodView):
    @blp.arguments(RegisterSchema)
    @blp.response(201, NewWorkerTokenSchema)
    @blp.doc(security=[])
    @problems(409, 429)
    def post(self, data: dict[str, Any]):
        """Sign up as a crowd worker; the response holds your first API token. Sign-ups are limited per client
        address (429 with Retry-After); usernames are unique ignoring case."""
        account, token = sign_up(data, token_name="sign-up")
        return {"account_id": account.id, "username": account.username, "token": token}


@blp.route("/auth/token", tags=["work"])
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(201, NewWorkerTokenSchema)
    @blp.doc(security=[])
    @problems(401, 429)
    def post(self, data: dict[str, Any]):
        """Log in with username (any case) and password; get a new API token (an account keeps its newest 5 login
        tokens). Failed logins are limited per username and address, per username and per address (429 with
        Retry-After)."""
        account, token = log_in(data["username"], data["password"])
        return {"account_id": account.id, "username": account.username, "token": token}


@blp.route("/workers/<int:worker_id>/identities", tags=["work"])
class Identities(MethodView):
    @requires(Role.OPS)
    @blp.arguments(IdentitySchema)
    @blp.response(201, IdentitySchema)
    @problems(409)
    def post(self, data: dict[str, Any], worker_id: int):
        """Map a worker's id on another platform (e.g. MTurk) to their account (ops)."""
        session = db_session()
        target = session.get(Account, worker_id)
        if target is None or target.role != Role.WORKER:
            raise NotFound(f"Worker {worker_id} not found.")
        identity = service.link_identity(session, account_id=worker_id, platform=data["platform"],
                                          external_id=data["external_id"], now=clock())
        return identity
