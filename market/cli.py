"""The `crowdmarket` command: the Flask CLI plus account, token, item and database commands."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import IO, Any

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from tqdm import tqdm

from market.app import clock, create_app, db_session
from market.problems import DomainError
from workers import service as accounts
from workers.models import Role

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _fail(exc: DomainError) -> None:
    message = exc.detail
    if exc.errors:
        errors = exc.errors if isinstance(exc.errors, list) else [exc.errors]
        message += "".join(f"\n  {e}" for e in errors[:20])
    raise click.ClickException(message)


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False, load_dotenv=False)
def cli() -> None:
    """crowdmarket: a crowdsourcing task market."""


@cli.group()
def users() -> None:
    """Accounts."""


@users.command("create")
@click.option("--role", type=click.Choice([Role.REQUESTER.value, Role.OPS.value]), required=True)
@click.option("--email", required=True)
@click.option("--name", "display_name", default="", help="Display name.")
@with_appcontext
def users_create(role: str, email: str, display_name: str) -> None:
    """Create a requester or ops account and print its first API token (shown once)."""
    session = db_session()
    try:
        account = accounts.create_account(session, role=Role(role), email=email, display_name=display_name,
                                          now=clock())
        _, token = accounts.issue_token(session, account=account, now=clock(), name="created by CLI")
        session.commit()
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Created {role} account {account.id} <{account.email}>. Its API token, shown only once:", err=True)
    click.echo(token)


@cli.group()
def tokens() -> None:
    """API tokens."""


@tokens.command("create")
@click.option("--email", required=True)
@click.option("--name", default="", help="What the token is for.")
@with_appcontext
def tokens_create(email: str, name: str) -> None:
    """Issue another token for an account and print it (shown once)."""
    session = db_session()
    try:
        account = accounts.find_account(session, email=email)
        _, token = accounts.issue_token(session, account=account, now=clock(), name=name)
        session.commit()
    except DomainError as exc:
        _fail(exc)
    click.echo(token)


@tokens.command("revoke")
@click.option("--email", required=True)
@click.argument("token_id", type=int)
@with_appcontext
def tokens_revoke(email: str, token_id: int) -> None:
    """Revoke one of an account's tokens."""
    session = db_session()
    try:
        account = accounts.find_account(session, email=email)
        accounts.revoke_token(session, account_id=account.id, token_id=token_id, now=clock())
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Token {token_id} revoked.", err=True)


@cli.group()
def items() -> None:
    """Items of a project."""


class _Counting(io.RawIOBase):
    """A binary reader that advances a progress bar by the bytes it reads."""

    def __init__(self, raw: IO[bytes], bar: tqdm) -> None:
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.bar.update(n or 0)
        return n


@items.command("import")
@click.argument("project_id", type=int)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), help="Default: from the file name.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_appcontext
def items_import(project_id: int, path: Path, fmt: str | None, quiet: bool) -> None:
    """Import items from a JSONL or CSV file, atomically, with a progress bar."""
    from market import imports
    from market.models import Project

    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    session = db_session()
    project = session.get(Project, project_id)
    if project is None:
        raise click.ClickException(f"Project {project_id} not found.")
    with path.open("rb") as raw, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, disable=quiet,
                                       desc=f"importing {path.name}", file=sys.stderr) as bar:
        try:
            result = imports.import_items(session, project=project, stream=io.BufferedReader(_Counting(raw, bar)),
                                          fmt=fmt, now=clock())
        except DomainError as exc:
            _fail(exc)
    click.echo(f"{result.created} created, {result.skipped} skipped (existing), {result.gold} gold, "
               f"{result.lines} records read.")


@cli.group()
def work() -> None:
    """The assignment engine."""


@work.command("sweep")
@with_appcontext
def work_sweep() -> None:
    """Mark lapsed leases expired and free their slots (optional: claims never wait for it)."""
    from market.work import sweep_expired

    click.echo(f"{sweep_expired(db_session(), now=clock())} lapsed lease(s) tidied.", err=True)


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Migrate the configured database to `revision` (default: the newest)."""
    from alembic import command

    command.upgrade(alembic_config(current_app.config["DATABASE_URL"]), revision)
    click.echo(f"Database at {revision}.", err=True)


def alembic_config(url: str):
    """Alembic's config for this project, pointed at `url`."""
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def main() -> None:
    os.environ.setdefault("FLASK_RUN_HOST", "127.0.0.1")
    cli()
