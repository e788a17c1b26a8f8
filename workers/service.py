"""Accounts and API tokens. No flask here: callers pass the session and the clock."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.problems import Conflict, InvalidInput, NotFound
from workers.models import Account, ApiToken, Role

TOKEN_PREFIX = "cm_"
# Refresh last_used_at at most this often, so authentication is not a write on every request.
_LAST_USED_GRANULARITY = dt.timedelta(minutes=5)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_account(session: Session, *, role: Role, now: dt.datetime, email: str | None = None,
                   username: str | None = None, display_name: str = "") -> Account:
    """Create an account; email (requesters, ops) or username (workers) must be unique."""
    if not email and not username:
        raise InvalidInput("An account needs an email or a username.", errors={"email": ["required"]})
    account = Account(role=role, email=email.lower() if email else None, username=username,
                      display_name=display_name, created_at=now)
    session.add(account)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("An account with that email or username exists already.") from exc
    return account


def issue_token(session: Session, *, account: Account, now: dt.datetime, name: str = "") -> tuple[ApiToken, str]:
    """Create an API token; the plaintext is returned once and only its hash is stored."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(account_id=account.id, token_hash=hash_token(plaintext), prefix=plaintext[:10],
                     name=name, created_at=now)
    session.add(token)
    session.flush()
    return token, plaintext


def authenticate(session: Session, plaintext: str, *, now: dt.datetime) -> Account | None:
    """The active account a live token belongs to, or None."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext)))
    if token is None or token.revoked_at is not None or not token.account.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_GRANULARITY:
        token.last_used_at = now
        session.commit()
    return token.account


def list_tokens(session: Session, *, account_id: int) -> list[ApiToken]:
    """The account's tokens, newest first (hashes never leave the service)."""
    stmt = select(ApiToken).where(ApiToken.account_id == account_id).order_by(ApiToken.id.desc())
    return list(session.scalars(stmt))


def revoke_token(session: Session, *, account_id: int, token_id: int, now: dt.datetime) -> ApiToken:
    """Revoke one of the account's tokens; revoking twice is harmless."""
    token = session.get(ApiToken, token_id)
    if token is None or token.account_id != account_id:
        raise NotFound(f"Token {token_id} not found.")
    if token.revoked_at is None:
        token.revoked_at = now
    session.commit()
    return token


def find_account(session: Session, *, email: str) -> Account:
    account = session.scalar(select(Account).where(Account.email == email.lower()))
    if account is None:
        raise NotFound(f"No account with email {email}.")
    return account
