"""The `crowdmarket` command: the Flask CLI plus account, token, item and database commands."""

from __future__ import annotations

import datetime as dt
import io
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from tqdm import tqdm

from market.app import clock, create_app, db_session
from market.problems import DomainError
from market.validation import MAX_ID
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


def _expiry(expires_in: int | None, expires_at: dt.datetime | None) -> dt.datetime | None:
    if expires_in is not None and expires_at is not None:
        raise click.UsageError("Give --expires-in or --expires-at, not both.")
    if expires_in is not None:
        return clock() + dt.timedelta(days=expires_in)
    if expires_at is not None and expires_at.tzinfo is None:
        return expires_at.replace(tzinfo=dt.UTC)
    return expires_at


@tokens.command("create")
@click.option("--email", required=True)
@click.option("--name", default="", help="What the token is for.")
@click.option("--expires-in", type=click.IntRange(min=1), metavar="DAYS", help="The token stops working after this.")
@click.option("--expires-at", type=dt.datetime.fromisoformat, metavar="WHEN",
              help="The token stops working then (ISO 8601; UTC unless it says otherwise).")
@with_appcontext
def tokens_create(email: str, name: str, expires_in: int | None, expires_at: dt.datetime | None) -> None:
    """Issue another token for an account and print it (shown once); by default it works until revoked."""
    session = db_session()
    try:
        account = accounts.find_account(session, email=email)
        _, token = accounts.issue_token(session, account=account, now=clock(), name=name,
                                        expires_at=_expiry(expires_in, expires_at))
        session.commit()
    except DomainError as exc:
        _fail(exc)
    click.echo(token)


@tokens.command("revoke")
@click.option("--email", required=True)
@click.argument("token_id", type=click.IntRange(1, MAX_ID))
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
@click.argument("project_id", type=click.IntRange(1, MAX_ID))
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


@cli.group()
def jobs() -> None:
    """Background jobs (aggregation runs) on RQ, when Redis is configured."""


@jobs.command("work")
@click.option("--burst", is_flag=True, help="Stop once the queue is empty.")
@with_appcontext
def jobs_work(burst: bool) -> None:
    """Run queued jobs in this process (needs CROWDMARKET_REDIS_URL; without Redis jobs run inline)."""
    from market import jobs as queue

    try:
        queue.work(current_app._get_current_object(), burst=burst)  # type: ignore[attr-defined]
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


# aggregation.engine's METHODS, spelled out so `crowdmarket --help` need not import scipy (a test keeps them equal).
AGGREGATION_METHODS = ("mv", "wmv", "ds", "ds-gold", "onecoin")
# Inputs above this size get a progress bar (unless --quiet): smaller ones read in well under a second.
PROGRESS_BYTES = 5_000_000


def _reason(exc: Exception) -> str:
    """An error's message without the path an OSError repeats."""
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)


@cli.command("aggregate", with_appcontext=False)
@click.option("--method", type=click.Choice(AGGREGATION_METHODS), required=True,
              help="mv: majority vote; wmv: weighted by worker accuracy; ds: Dawid–Skene; ds-gold: gold-anchored; "
                   "onecoin: one-coin Dawid–Skene.")
@click.option("--answers", "answers_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV with worker,task,label.")
@click.option("--gold", "gold_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with task,label of known answers (required by ds-gold).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Results file (task,label,confidence); - for stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
              help="Default: jsonl for a .jsonl/.ndjson --out, else csv.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the tie-breaking RNG.")
@click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True, help="Dawid–Skene iterations.")
@click.option("--tol", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="Dawid–Skene stops when no posterior moves by more.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def aggregate_command(method: str, answers_path: Path, gold_path: Path | None, out: str, fmt: str | None,
                      seed: int, max_iter: int, tol: float, quiet: bool) -> None:
    """Aggregate crowd answers from CSV files offline, with the service's code path (no app or database)."""
    from aggregation import io as aggregation_io
    from aggregation.engine import aggregate

    started = time.perf_counter()
    if method == "ds-gold" and gold_path is None:
        raise click.ClickException("--method ds-gold needs --gold: a task,label CSV of known answers.")
    if fmt is None:
        fmt = "jsonl" if Path(out).suffix.lower() in (".jsonl", ".ndjson") else "csv"
    progress = not quiet and answers_path.stat().st_size > PROGRESS_BYTES
    try:
        table = aggregation_io.read_answers(answers_path, progress=progress)
    except (aggregation_io.InputError, OSError) as exc:
        raise click.ClickException(f"{answers_path}: {_reason(exc)}") from None
    gold_items = gold_labels = None
    if gold_path is not None:
        try:
            gold_items, gold_labels, table = aggregation_io.read_gold(gold_path, table)
        except (aggregation_io.InputError, OSError) as exc:
            raise click.ClickException(f"{gold_path}: {_reason(exc)}") from None
        if method == "ds-gold" and not gold_items.size:
            raise click.ClickException(f"{gold_path}: no gold rows; ds-gold needs at least one.")
    try:
        result = aggregate(method, table.task_codes, table.worker_codes, table.label_codes, n_items=table.n_tasks,
                           n_workers=table.n_workers, n_classes=table.n_classes, gold_items=gold_items,
                           gold_labels=gold_labels, seed=seed, max_iter=max_iter, tol=tol)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        aggregation_io.write_results(sys.stdout if out == "-" else out, table, result, fmt=fmt)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {_reason(exc)}") from None
    if not quiet:
        iterations = result.result.iterations
        summary = [f"{table.n_answers} answers", f"{table.n_tasks} tasks", f"{table.n_workers} workers",
                   f"{table.n_classes} classes", f"method {method}"]
        if method in ("ds", "ds-gold"):
            summary.append(f"{iterations} iteration{'s' if iterations != 1 else ''}"
                           + (" (--max-iter reached)" if iterations >= max_iter else ""))
        if gold_items is not None and gold_items.size and method != "ds-gold":
            hits = int((result.result.labels[gold_items] == gold_labels).sum())
            summary.append(f"gold agreement {hits}/{gold_items.size}")
        summary.append(f"{time.perf_counter() - started:.2f} s")
        click.echo(", ".join(summary), err=True)


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
