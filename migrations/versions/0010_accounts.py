"""usernames unique ignoring case (account.username_key); API tokens with an expiry; login tokens marked

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 09:30:00

Accounts whose usernames differ only in case (possible before: "Ada" and "ada") are made distinct first: the
oldest keeps its name, each later one is renamed `<name>-<id>` (cut to fit 64 characters) and logged. Nobody is
locked out by it: API tokens are untouched, and `GET /me` shows the new name to log in with. The later account
is the one renamed because it is the one that could have been made to pass for the first.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import base.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")
_account = sa.table("account", sa.column("id", sa.Integer), sa.column("username", sa.String),
                    sa.column("username_key", sa.String))


def _fill_username_keys() -> None:
    """Each username's key, its lower-cased form (as workers.models.username_key), after renaming the accounts
    whose usernames differ from an older one's only in case."""
    conn = op.get_bind()
    rows = conn.execute(sa.select(_account.c.id, _account.c.username)
                        .where(_account.c.username.is_not(None)).order_by(_account.c.id)).all()
    taken = {name.lower() for _, name in rows}
    seen: set[str] = set()
    updates = []
    for account_id, name in rows:
        new = name
        if name.lower() in seen:
            suffix, n = f"-{account_id}", 0
            while (new := f"{name[:64 - len(suffix)]}{suffix}").lower() in taken:
                n += 1
                suffix = f"-{account_id}-{n}"
            taken.add(new.lower())
            log.warning("account %s: username %r differs from an older account's only in case; renamed %r",
                        account_id, name, new)
        seen.add(new.lower())
        updates.append({"i": account_id, "name": new, "key": new.lower()})
    if updates:
        conn.execute(_account.update().where(_account.c.id == sa.bindparam("i"))
                     .values(username=sa.bindparam("name"), username_key=sa.bindparam("key")), updates)


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX: the exact-case unique constraint stays (the new one implies it), because
    # dropping it on SQLite means copying the table, and dropping `account` there with foreign keys on would
    # cascade into every table that refers to it.
    op.add_column("account", sa.Column("username_key", sa.String(length=64), nullable=True))
    _fill_username_keys()
    op.create_index("uq_account_username_key", "account", ["username_key"], unique=True)
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", base.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("login", sa.Boolean(), server_default=sa.false(), nullable=False))
    # Tokens that logins and sign-ups issued so far, by the names those gave them.
    op.execute(sa.text("UPDATE api_token SET login = :yes WHERE name IN ('login', 'sign-up')")
               .bindparams(yes=True))


def downgrade() -> None:
    # Renamed usernames keep their new names: they are unique either way.
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("login")
        batch_op.drop_column("expires_at")
    op.drop_index("uq_account_username_key", table_name="account")
    op.drop_column("account", "username_key")  # SQLite 3.35+ drops a column in place; no table copy
