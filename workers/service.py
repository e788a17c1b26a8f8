"""Accounts and API tokens. No flask here: callers pass the session and the clock."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from functools import lru_cache

from sqlalchemy import ColumnElement, bindparam, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from base.db import HotStatement
from base.errors import Conflict, InvalidInput, NotFound, Unauthorized
from base.identity import DEFAULT_PASSWORD_HASH, Actor, Caller, Role
from base.uow import savepoint
from workers.models import Account, ApiToken, ExternalIdentity, username_key

TOKEN_PREFIX = "cm_"
# Refresh last_used_at at most this often, so authentication is not a write on every request.
_LAST_USED_GRANULARITY = dt.timedelta(minutes=5)
# Login (and sign-up) tokens an account keeps: one per device a worker uses, with room to spare. A new login past
# this deletes the oldest, so a client that logs in on every start, or a script, cannot pile up live tokens.
LOGIN_TOKENS_KEPT = 5


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_account(session: Session, *, role: Role, now: dt.datetime, email: str | None = None,
                   username: str | None = None, display_name: str = "") -> Account:
    """Create an account; email (requesters, ops) or username (workers) must be unique, ignoring case."""
    if not email and not username:
        raise InvalidInput("An account needs an email or a username.", errors={"email": ["required"]})
    account = Account(role=role, email=email.lower() if email else None, username=username,
                      display_name=display_name, created_at=now)
    try:
        with savepoint(session):  # the failed insert alone is undone: the session stays usable
            session.add(account)
            session.flush()
    except IntegrityError as exc:
        raise Conflict("An account with that email or username exists already.") from exc
    return account


def issue_token(session: Session, *, account: Actor, now: dt.datetime, name: str = "",
                expires_at: dt.datetime | None = None, login: bool = False) -> tuple[ApiToken, str]:
    """Create an API token, optionally expiring; the plaintext is returned once and only its hash is stored.
    A `login` token pushes the account's oldest login tokens past `LOGIN_TOKENS_KEPT` out."""
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("A token must expire in the future.", errors={"expires_at": ["must be in the future"]})
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(account_id=account.id, token_hash=hash_token(plaintext), prefix=plaintext[:10],
                     name=name, created_at=now, expires_at=expires_at, login=login)
    session.add(token)
    session.flush()
    if login:
        kept = (select(ApiToken.id).where(ApiToken.account_id == account.id, ApiToken.login.is_(True))
                .order_by(ApiToken.id.desc()).limit(LOGIN_TOKENS_KEPT))
        session.execute(delete(ApiToken).where(ApiToken.account_id == account.id, ApiToken.login.is_(True),
                                               ApiToken.id.not_in(kept.scalar_subquery())))
    return token, plaintext


# Built once, Core rather than ORM: authentication runs on every API request.
_BY_TOKEN = HotStatement(
    select(Account.id, Account.role, ApiToken.id.label("token_id"), ApiToken.last_used_at)
    .join(ApiToken, ApiToken.account_id == Account.id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None), Account.is_active.is_(True),
           or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now"))))
_TOUCH = update(ApiToken).where(ApiToken.id == bindparam("token_id")).values(last_used_at=bindparam("now"))


def authenticate(session: Session, plaintext: str, *, now: dt.datetime) -> Caller | None:
    """The active account a live (unrevoked, unexpired) token belongs to, or None."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    row = _BY_TOKEN.first(session, {"token_hash": hash_token(plaintext), "now": now})
    if row is None:
        return None
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_GRANULARITY:
        session.execute(_TOUCH, {"token_id": row.token_id, "now": now})
    return Caller(row.id, Role(row.role))


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
    session.flush()
    return token


def revoke_plaintext(session: Session, plaintext: str, *, now: dt.datetime) -> bool:
    """Revoke the token with this plaintext (a page session's, at log-out); False if none was live."""
    result = session.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(plaintext),
                                                    ApiToken.revoked_at.is_(None)).values(revoked_at=now))
    return bool(result.rowcount)


def find_account(session: Session, *, email: str) -> Account:
    account = session.scalar(select(Account).where(Account.email == email.lower()))
    if account is None:
        raise NotFound(f"No account with email {email}.")
    return account


# ---- workers ----------------------------------------------------------------------------------------------


USERNAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{2,63}"
USERNAME_RULE = "3-64 letters, digits, '_', '.', '-', starting with a letter or digit"
USERNAME_PATTERN = re.compile(rf"\A{USERNAME}\Z")
MIN_PASSWORD = 10


def register_worker(session: Session, *, username: str, password: str, now: dt.datetime,
                    display_name: str = "", password_hash: str = DEFAULT_PASSWORD_HASH) -> Account:
    """Create a worker account with a password, hashed by werkzeug with the `password_hash` method (scrypt).
    The username is unique ignoring case."""
    errors: dict[str, list[str]] = {}
    if not USERNAME_PATTERN.match(username):
        errors["username"] = [USERNAME_RULE]
    if len(password) < MIN_PASSWORD:
        errors["password"] = [f"at least {MIN_PASSWORD} characters"]
    if errors:
        raise InvalidInput("The account details are invalid.", errors=errors)
    account = create_account(session, role=Role.WORKER, username=username, display_name=display_name, now=now)
    account.password_hash = generate_password_hash(password, method=password_hash)
    session.flush()
    return account


def login(session: Session, *, username: str, password: str, now: dt.datetime, name: str = "",
          expires_at: dt.datetime | None = None, password_hash: str = DEFAULT_PASSWORD_HASH) -> tuple[Account, str]:
    """Check a password and issue a login token, optionally expiring; the same answer for unknown users and wrong
    passwords. Workers log in by username (any case); requesters and ops staff, who have no username, by email
    (any case) once `crowdmarket users set-password` gave them a password."""
    account = session.scalar(select(Account).where(_login_name(username)))
    # Hash even for unknown users, with the method real hashes use, so the time taken does not tell who exists.
    stored = account.password_hash if account and account.password_hash else _dummy_hash(password_hash)
    if not check_password_hash(stored, password) or account is None or not account.is_active:
        raise Unauthorized("Unknown username or wrong password.")
    _, token = issue_token(session, account=account, now=now, name=name or "login", login=True,
                           expires_at=expires_at)
    return account, token


def _login_name(name: str) -> ColumnElement[bool]:
    if "@" in name:  # usernames never hold '@' (USERNAME_RULE); emails are stored lower-cased
        return Account.email == name.lower()
    return Account.username_key == username_key(name)


def set_password(session: Session, *, account: Account, password: str,
                 password_hash: str = DEFAULT_PASSWORD_HASH) -> None:
    """Give an account a new password (the same rule as sign-up); its login tokens end, so a session signed in
    with the old one does not outlive the change."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput("The password is too short.", errors={"password": [f"at least {MIN_PASSWORD} characters"]})
    account.password_hash = generate_password_hash(password, method=password_hash)
    session.execute(delete(ApiToken).where(ApiToken.account_id == account.id, ApiToken.login.is_(True)))
    session.flush()


@lru_cache(maxsize=4)
def _dummy_hash(method: str) -> str:
    return generate_password_hash("not a real password", method=method)


def find_worker(session: Session, *, username: str) -> Account | None:
    """The worker with this username (in any case), or None."""
    return session.scalar(select(Account).where(Account.username_key == username_key(username),
                                                Account.role == Role.WORKER))


def link_identity(session: Session, *, account_id: int, platform: str, external_id: str,
                  now: dt.datetime) -> ExternalIdentity:
    """Map a platform's worker id to an account; one account per external id, one id per platform."""
    existing = session.scalar(select(ExternalIdentity).where(
        ExternalIdentity.platform == platform, ExternalIdentity.external_id == external_id))
    if existing is not None:
        if existing.account_id != account_id:
            raise Conflict(f"{platform} id {external_id} belongs to another account.")
        return existing
    identity = ExternalIdentity(account_id=account_id, platform=platform, external_id=external_id, created_at=now)
    try:
        with savepoint(session):
            session.add(identity)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"The account has a {platform} id already.") from exc
    return identity


def identity_account(session: Session, *, platform: str, external_id: str) -> int | None:
    """The account id mapped to a platform's worker id, or None."""
    return session.scalar(select(ExternalIdentity.account_id).where(
        ExternalIdentity.platform == platform, ExternalIdentity.external_id == external_id))


def worker_for_identity(session: Session, *, platform: str, external_id: str, now: dt.datetime) -> Account:
    """The account of an external worker id, created on first sight (e.g. an MTurk worker arriving)."""
    identity = session.scalar(select(ExternalIdentity).where(
        ExternalIdentity.platform == platform, ExternalIdentity.external_id == external_id))
    if identity is not None:
        return session.get_one(Account, identity.account_id)
    account = create_account(session, role=Role.WORKER, username=f"{platform}-{external_id}"[:64], now=now)
    link_identity(session, account_id=account.id, platform=platform, external_id=external_id, now=now)
    return account
