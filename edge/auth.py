"""Bearer-token authentication and role checks for the JSON API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy.exc import DBAPIError

from base.errors import Forbidden, Unauthorized
from base.identity import Caller, Role
from edge.request import clock, db_session

F = TypeVar("F", bound=Callable[..., Any])
# The app's authenticator, `(session, token, *, now) -> Caller | None`: the accounts package's, put there by the
# factory (shell/app.py), so that the edge needs no domain package.
AUTHENTICATE = "crowdmarket.authenticate"
Authenticate = Callable[..., Caller | None]


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def current_account() -> Caller:
    """The authenticated account of this request (only inside a view guarded by `requires`)."""
    return g.account


def requires(*roles: Role, autocommit: bool = False) -> Callable[[F], F]:
    """Guard a view: a live API token of an account with one of `roles`. `autocommit`: the view's writes are
    single atomic statements, so its session may run without BEGIN/COMMIT (`Database.autocommit_session`)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not autocommit:
                return guarded(*args, **kwargs)
            try:
                return guarded(*args, **kwargs)
            except DBAPIError as exc:
                # The autocommit pool does not ping at checkout: a connection that died idle (a database
                # restart) shows here, and the pool has dropped every connection as old as it. Once more on a
                # fresh one; safe because these views are idempotent (a claim hands back the live lease, a
                # submit replays).
                if not exc.connection_invalidated:
                    raise
                g.pop("db_session").close()
                return guarded(*args, **kwargs)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            token = bearer_token()
            if token is None:
                raise Unauthorized("Send an API token as 'Authorization: Bearer <token>'.")
            account = current_app.extensions[AUTHENTICATE](db_session(autocommit=autocommit), token, now=clock())
            if account is None:
                raise Unauthorized("The API token is unknown, revoked, or its account is disabled.")
            if account.role not in roles:
                raise Forbidden(f"This endpoint is for {', '.join(r.value for r in roles)} accounts.")
            g.account = account
            return view(*args, **kwargs)

        wrapper._roles = roles  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator
