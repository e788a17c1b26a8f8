"""Who am I, and my API tokens (any authenticated account)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from market.app import clock, db_session
from market.auth import current_account, requires
from market.edge import Blueprint
from workers import service
from workers.models import Account, Role
from workers.schemas import AccountSchema, NewTokenSchema, TokenCreateSchema, TokenSchema

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
        session.commit()
        return {**{c: getattr(token, c) for c in TokenSchema().fields}, "token": plaintext}


@blp.route("/tokens/<int:token_id>")
class TokenDetail(MethodView):
    @requires(*ANY)
    @blp.response(200, TokenSchema)
    def delete(self, token_id: int):
        """Revoke a token at once."""
        return service.revoke_token(db_session(), account_id=current_account().id, token_id=token_id, now=clock())
