"""The `crowdmarket` command: our own commands only, in a plain click group.

Importing this module imports click alone. Commands that need the app build it when they run (`with_app`), so
`crowdmarket --help` and the offline aggregator never build it, nor import Flask or SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from aggregation.cli import aggregate_command
from base.validation import MAX_ID
from shell.simulate_cli import simulate_command

if TYPE_CHECKING:
    from flask import Flask
    from tqdm import tqdm

    from base.errors import DomainError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# workers.models.Role's requester and ops values (a test keeps them equal): no model import for --help.
ACCOUNT_ROLES = ("requester", "ops")


def _app(ctx: click.Context) -> Flask:
    """The app for this invocation, built once: by the factory the caller put in `obj` (tests do), else ours."""
    root = ctx.find_root()
    app = root.meta.get("crowdmarket.app")
    if app is None:
        from shell.config import ConfigError

        factory = root.obj
        if factory is None:
            from shell.app import create_app as factory
        try:
            app = root.meta["crowdmarket.app"] = factory()
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    return app


def with_app(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run `command` inside the app's context, as one unit of work (base/uow.py): it commits when the command
    succeeds and rolls back when it fails; its session closes at the end, as after a request. A command that
    prints what it stored ends its unit of work first (`UnitOfWork`), so it never reports what was not kept."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from edge.request import unit_of_work

        with _app(click.get_current_context()).app_context(), unit_of_work():
            return command(*args, **kwargs)

    return run


def _fail(exc: DomainError) -> None:
    message = exc.detail
    if exc.errors:
        errors = exc.errors if isinstance(exc.errors, list) else [exc.errors]
        message += "".join(f"\n  {e}" for e in errors[:20])
    raise click.ClickException(message)


@click.group()
def cli() -> None:
    """crowdmarket: a crowdsourcing task market."""


cli.add_command(aggregate_command)
cli.add_command(simulate_command)


@cli.group()
def users() -> None:
    """Accounts."""


@users.command("create")
@click.option("--role", type=click.Choice(ACCOUNT_ROLES), required=True)
@click.option("--email", required=True)
@click.option("--name", "display_name", default="", help="Display name.")
@with_app
def users_create(role: str, email: str, display_name: str) -> None:
    """Create a requester or ops account and print its first API token (shown once)."""
    from base.errors import DomainError
    from base.identity import Role
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from workers import service as accounts

    session = db_session()
    try:
        with UnitOfWork(session):
            account = accounts.create_account(session, role=Role(role), email=email, display_name=display_name,
                                              now=clock())
            _, token = accounts.issue_token(session, account=account, now=clock(), name="created by CLI")
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Created {role} account {account.id} <{account.email}>. Its API token, shown only once:", err=True)
    click.echo(token)


@users.command("set-password")
@click.option("--email", required=True, help="The requester's or ops account's email.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (scripts).")
@with_app
def users_set_password(email: str, password_stdin: bool) -> None:
    """Set the password a requester or ops account logs in with on the web pages (/login, with the email).
    Its earlier page sessions end."""
    from flask import current_app

    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import db_session
    from workers import service as accounts

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    session = db_session()
    try:
        with UnitOfWork(session):
            account = accounts.find_account(session, email=email)
            accounts.set_password(session, account=account, password=password,
                                  password_hash=current_app.config["PASSWORD_HASH"])
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Password set for {account.role.value} account {account.id} <{account.email}>; "
               "log in at /login with the email.", err=True)


@cli.group()
def tokens() -> None:
    """API tokens."""


def _expiry(expires_in: int | None, expires_at: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    if expires_in is not None and expires_at is not None:
        raise click.UsageError("Give --expires-in or --expires-at, not both.")
    if expires_in is not None:
        return now + dt.timedelta(days=expires_in)
    if expires_at is not None and expires_at.tzinfo is None:
        return expires_at.replace(tzinfo=dt.UTC)
    return expires_at


@tokens.command("create")
@click.option("--email", required=True)
@click.option("--name", default="", help="What the token is for.")
@click.option("--expires-in", type=click.IntRange(min=1), metavar="DAYS", help="The token stops working after this.")
@click.option("--expires-at", type=dt.datetime.fromisoformat, metavar="WHEN",
              help="The token stops working then (ISO 8601; UTC unless it says otherwise).")
@with_app
def tokens_create(email: str, name: str, expires_in: int | None, expires_at: dt.datetime | None) -> None:
    """Issue another token for an account and print it (shown once); by default it works until revoked."""
    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from workers import service as accounts

    session = db_session()
    try:
        with UnitOfWork(session):
            account = accounts.find_account(session, email=email)
            _, token = accounts.issue_token(session, account=account, now=clock(), name=name,
                                            expires_at=_expiry(expires_in, expires_at, clock()))
    except DomainError as exc:
        _fail(exc)
    click.echo(token)


@tokens.command("revoke")
@click.option("--email", required=True)
@click.argument("token_id", type=click.IntRange(1, MAX_ID))
@with_app
def tokens_revoke(email: str, token_id: int) -> None:
    """Revoke one of an account's tokens."""
    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from workers import service as accounts

    session = db_session()
    try:
        with UnitOfWork(session):
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
@with_app
def items_import(project_id: int, path: Path, fmt: str | None, quiet: bool) -> None:
    """Import items from a JSONL or CSV file, atomically, with a progress bar."""
    from tqdm import tqdm

    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from market.catalogue import imports
    from market.catalogue.models import Project

    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    session = db_session()
    project = session.get(Project, project_id)
    if project is None:
        raise click.ClickException(f"Project {project_id} not found.")
    with path.open("rb") as raw, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, disable=quiet,
                                       desc=f"importing {path.name}", file=sys.stderr) as bar:
        try:
            with UnitOfWork(session):
                result = imports.import_items(session, project=project,
                                              stream=io.BufferedReader(_Counting(raw, bar)), fmt=fmt, now=clock())
        except DomainError as exc:
            _fail(exc)
    click.echo(f"{result.created} created, {result.skipped} skipped (existing), {result.gold} gold, "
               f"{result.lines} records read.")


@cli.group()
def work() -> None:
    """The assignment engine."""


@work.command("sweep")
@with_app
def work_sweep() -> None:
    """Mark lapsed leases expired and free their slots (optional: claims never wait for it)."""
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from market.engine.submit import sweep_expired

    with UnitOfWork(session := db_session()):
        tidied = sweep_expired(session, now=clock())
    click.echo(f"{tidied} lapsed lease(s) tidied.", err=True)


@cli.group()
def jobs() -> None:
    """Background jobs (aggregation runs) on RQ, when Redis is configured."""


JOB_RETRY_SECONDS = 2


@jobs.command("work")
@click.option("--burst", is_flag=True, help="Stop once the queue is empty.")
@with_app
def jobs_work(burst: bool) -> None:
    """Run queued jobs in this process, the payments cycle every PAYMENTS_CYCLE_SECONDS and the platforms' sync
    every PLATFORMS_SYNC_SECONDS (needs CROWDMARKET_REDIS_URL; without Redis jobs run inline, and cron runs
    `crowdmarket payments cycle` and `crowdmarket platforms sync`)."""
    import redis
    from flask import current_app

    from edge import jobs as queue
    from payments import jobs as payment_jobs
    from platforms import jobs as platform_jobs

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    while True:
        try:
            if app.config.get("REDIS_URL"):
                payment_jobs.ensure_scheduled(app)
                platform_jobs.ensure_scheduled(app)
            queue.work(app, burst=burst)
            return
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis restarting must not take the job worker down with it (it would stay down, and queued jobs
            # with it): wait and start again; jobs are idempotent, so one cut off mid-run may run again.
            if burst:
                raise click.ClickException(f"Redis unavailable: {exc}") from None
            click.echo(f"Redis unavailable ({exc}); the job worker starts again in {JOB_RETRY_SECONDS} s", err=True)
            time.sleep(JOB_RETRY_SECONDS)


@cli.group()
def payments() -> None:
    """Payments: approvals, top-ups, holds."""


@payments.command("cycle")
@with_app
def payments_cycle() -> None:
    """Run one payments cycle (auto-approval, ...) and print what it did: for cron when Redis is not configured
    (with Redis, `crowdmarket jobs work` runs it on RQ's scheduler)."""
    import json

    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from payments import cycle

    with UnitOfWork(session := db_session()):
        done = cycle.run(session, now=clock())
    click.echo(json.dumps(done, sort_keys=True, default=str))


@cli.command("burst")
@click.argument("batch_id", type=click.IntRange(1, MAX_ID))
@click.option("--platform", "platform_name", required=True, help="The platform's name (platforms/registry.py).")
@click.option("--hits", type=click.IntRange(1), required=True, help="How many of the batch's HITs to send.")
@click.option("--split", is_flag=True, help="Keep platform tasks under the large-task fee threshold.")
@click.option("--email", required=True, help="The requester who owns the batch.")
@click.option("--key", default=None, help="Idempotency key (default: the batch, platform and size), so running the "
                                          "same command again publishes nothing twice.")
@click.option("--yes", is_flag=True, help="Do not ask before holding the cost and publishing.")
@with_app
def burst_command(batch_id: int, platform_name: str, hits: int, split: bool, email: str, key: str | None,
                  yes: bool) -> None:
    """Burst HITs of a batch to another crowd: print the estimate (with warnings), then hold its cost, publish on
    the platform and print what was made."""
    from flask import current_app

    from base.errors import DomainError
    from base.identity import Caller
    from base.money import Money
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from market.catalogue.models import Batch, Project
    from platforms import burst as bursts
    from platforms import jobs as platform_jobs
    from platforms import registry
    from workers.service import find_account

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        crowd = registry.platform(platform_name)
        session = db_session()
        with UnitOfWork(session):
            owner = find_account(session, email=email)
            actor = Caller(owner.id, owner.role)
            batch = session.get(Batch, batch_id)
            project = session.get(Project, batch.project_id) if batch else None
            if batch is None or project is None or project.owner_id != owner.id:
                raise click.ClickException(f"No batch {batch_id} of {email}.")
            shown = bursts.estimate(session, batch=batch, project=project, platform=platform_name,
                                    platform_title=crowd.title, fees=registry.fees(platform_name), hits=hits,
                                    split=split)
        click.echo(f"{crowd.title}: {shown.hits} HITs, {shown.places} places + {shown.gold_tasks} gold = "
                   f"{shown.tasks} tasks, {shown.per_platform_task} assignments per {crowd.title} task; fee "
                   f"{bursts.percent(shown.fee_rate)} on rewards; held in escrow: "
                   f"{Money(shown.total_cents, shown.currency)}")
        for warning in shown.warnings:
            click.echo(f"warning: {warning}")
        if shown.warnings and not split and not yes and click.confirm("Split instead?", default=True):
            split = True
            with UnitOfWork(session := db_session()):
                batch, project = session.get(Batch, batch_id), session.get(Project, project.id)
                shown = bursts.estimate(session, batch=batch, project=project, platform=platform_name,
                                        platform_title=crowd.title, fees=registry.fees(platform_name), hits=hits,
                                        split=True)
            click.echo(f"split: {shown.per_platform_task} assignments per {crowd.title} task; fee "
                       f"{bursts.percent(shown.fee_rate)} on rewards; held in escrow: "
                       f"{Money(shown.total_cents, shown.currency)}")
        if not yes and not click.confirm("Hold this and publish?", default=False):
            raise click.Abort()
        with UnitOfWork(session := db_session()):
            made, _ = bursts.create(session, actor=actor, batch_id=batch_id, platform=platform_name,
                                    platform_title=crowd.title, fees=registry.fees(platform_name), hits=hits,
                                    split=split, key=key or f"cli-{batch_id}-{platform_name}-{hits}-{int(split)}",
                                    now=clock())
            platform_jobs.page_url(app, made)
            burst_id = made.id
        with app.app_context():
            done = platform_jobs.publish_now(burst_id)
    except DomainError as exc:
        _fail(exc)
        return
    click.echo(f"burst {burst_id}: {done['done'].get('tasks', 0)} {crowd.title} tasks published"
               + (f"; errors: {'; '.join(done['errors'])}" if done["errors"] else ""))
    if done["errors"]:
        raise SystemExit(1)


@cli.group()
def platforms() -> None:
    """Other crowds: bursts' status and the sync."""


@platforms.command("status")
@click.option("--check", is_flag=True, help="Also ask each configured platform about our account.")
@with_app
def platforms_status(check: bool) -> None:
    """What is out there, what is in sync and what is not, per burst."""
    from edge.request import db_session
    from platforms import service

    rows = service.status(db_session())
    if not rows:
        click.echo("no bursts")
    for r in rows:
        state = "in sync" if not r["pending"] and not r["failed_calls"] and not r["last_error"] else "NOT in sync"
        click.echo(f"burst {r['id']} {r['platform']} batch {r['batch_id']}: {r['status']}, "
                   f"{r['platform_tasks']} tasks ({r['platform_tasks_ended']} ended), {r['places_left']} of "
                   f"{r['places']} places left; submissions {r['submissions']}: {r['mirrored']} mirrored, "
                   f"{r['pending']} pending, {r['problems']} problems; bonuses {r['bonus_cents']} cents; "
                   f"{r['failed_calls']} failed calls; {state}"
                   + (f"; last error: {r['last_error']}" if r["last_error"] else ""))
    if check:
        _check_platforms()


def _check_platforms() -> None:
    from flask import current_app

    from platforms import registry, service
    from platforms.base import PlatformError

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for name in sorted(registry.PLATFORMS):
        log = service.call_log(app.extensions["crowdmarket.db"], platform=name, job="status", burst_id=None)
        try:
            facts = registry.crowd(name, app.config).status(log)
        except PlatformError as exc:
            click.echo(f"{name}: unreachable or not configured: {exc}")
            continue
        finally:
            log.close()
        click.echo(f"{name}: " + ", ".join(f"{k}={v}" for k, v in sorted(facts.items())))


@platforms.command("sync")
@with_app
def platforms_sync() -> None:
    """One sync of every burst and print what it did: for cron when Redis is not configured."""
    import json

    from platforms import jobs as platform_jobs

    click.echo(json.dumps(platform_jobs.sync_now(), sort_keys=True, default=str))


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head")
@with_app
def db_upgrade(revision: str) -> None:
    """Migrate the configured database to `revision` (default: the newest)."""
    from alembic import command
    from flask import current_app

    command.upgrade(alembic_config(current_app.config["DATABASE_URL"]), revision)
    click.echo(f"Database at {revision}.", err=True)


def alembic_config(url: str) -> Any:
    """Alembic's config for this project, pointed at `url`."""
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@cli.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes.")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True, help="Threads per worker.")
@click.option("--reload", is_flag=True, help="Development: restart the workers when a source file changes.")
@click.pass_context
def run(ctx: click.Context, host: str, port: int, workers: int, threads: int, reload: bool) -> None:
    """Serve the app with gunicorn (threaded workers); --reload for development."""
    from shell.server import serve

    serve(lambda: _app(ctx), host=host, port=port, workers=workers, threads=threads, reload=reload)


# --- payments: the books (ledger) and payouts (issue 13, payments/books) ---------------------------------------

@cli.group()
def ledger() -> None:
    """The books: funding, reconciliation, audit export."""


@ledger.command("fund")
@click.option("--email", required=True, help="The requester's email.")
@click.option("--cents", type=click.IntRange(min=1), required=True)
@click.option("--currency", default="USD", show_default=True)
@click.option("--key", default=None, help="Idempotency key (default: a new one); the same key never funds twice.")
@click.option("--reason", default="", help="What the money is for.")
@with_app
def ledger_fund(email: str, cents: int, currency: str, key: str | None, reason: str) -> None:
    """Credit a requester's available money (ops, for the embedded default)."""
    import uuid

    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from payments.books import balances

    session = db_session()
    key = key or f"cli-{uuid.uuid4().hex}"
    try:
        with UnitOfWork(session):
            requester = balances.find_requester(session, email=email)
            txn, created = balances.fund(session, requester_id=requester.id, cents=cents, currency=currency.upper(),
                                         key=key, now=clock(), actor_id=None, reason=reason)
            available = balances.requester_balances(session, requester_id=requester.id)["balances"]
    except DomainError as exc:
        _fail(exc)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    now_has = next((b["available"] for b in available if b["currency"] == currency.upper()), 0)
    click.echo(f"{'Funded' if created else 'Already funded (replay)'}: transaction {txn.id}, {cents} "
               f"{currency.upper()} cents to {email} (key {key}); available now {now_has}.")


@ledger.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@with_app
def ledger_reconcile(as_json: bool) -> None:
    """Check that payouts, holds and ledger totals agree, per currency; exit code 1 when anything disagrees."""
    import json

    from edge.request import db_session
    from payments.books.reconcile import reconcile

    report = reconcile(db_session())
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        for currency, part in report["currencies"].items():
            t = part["totals"]
            click.echo(f"{currency}: funding {t['funding']}, rewards {t['rewards']}, bonuses {t['bonuses']}, fees "
                       f"{t['fees']}, payouts {t['payouts']}; paid out {part['paid_out']} vs payout lines "
                       f"{part['payout_lines_paid']}; escrow {part['escrow']} vs open holds "
                       f"{part['open_holds_remaining']}")
        for problem in report["problems"]:
            click.echo(f"PROBLEM: {problem}", err=True)
        click.echo("The books agree." if report["ok"] else f"{len(report['problems'])} problem(s).", err=True)
    if not report["ok"]:
        sys.exit(1)


@ledger.command("export")
@click.option("--format", "fmt", type=click.Choice(["beancount"]), default="beancount", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: standard output.")
@with_app
def ledger_export(fmt: str, output: Path | None) -> None:
    """Write the books as a Beancount file (check it with `bean-check FILE`)."""
    from edge.request import db_session
    from payments.books.export import beancount_lines

    chunks = beancount_lines(db_session())
    if output is None:
        for chunk in chunks:
            click.echo(chunk, nl=False)
        return
    with output.open("w", encoding="utf-8") as out:
        for chunk in chunks:
            out.write(chunk)
    click.echo(f"Wrote {output}.", err=True)


@cli.group()
def payouts() -> None:
    """Payout batches (ops)."""


def _ops_id(session: Any, email: str | None) -> int:
    from workers import service as accounts

    if email is None:
        raise click.UsageError("Give --ops-email: the ops account that acts.")
    account = accounts.find_account(session, email=email)
    if account.role.value != "ops":
        raise click.ClickException(f"{email} is not an ops account.")
    return account.id


@payouts.command("create")
@click.option("--ops-email", required=True, help="The ops account that creates the batch.")
@click.option("--period-end", type=dt.datetime.fromisoformat, required=True, metavar="WHEN",
              help="ISO 8601; UTC unless it says otherwise.")
@click.option("--minimum-cents", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--currency", default="USD", show_default=True)
@click.option("--provider", default="manual", show_default=True)
@click.option("--key", default=None, help="Idempotency key: the same key returns the same batch.")
@with_app
def payouts_create(ops_email: str, period_end: dt.datetime, minimum_cents: int, currency: str, provider: str,
                   key: str | None) -> None:
    """Create a draft payout batch and print its lines."""
    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from payments.books import payouts as service

    session = db_session()
    if period_end.tzinfo is None:
        period_end = period_end.replace(tzinfo=dt.UTC)
    try:
        with UnitOfWork(session):
            batch, created = service.create_batch(session, actor_id=_ops_id(session, ops_email),
                                                  currency=currency.upper(), period_end=period_end,
                                                  minimum_cents=minimum_cents, provider=provider, key=key,
                                                  now=clock())
            summary = service.summary(session, batch.id)
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Payout batch {batch.id} ({'created' if created else 'replay'}): "
               + (", ".join(f"{s} {v['lines']} line(s) {v['cents']} cents" for s, v in summary.items()) or "empty"))


@payouts.command("approve")
@click.option("--ops-email", required=True)
@click.argument("batch_id", type=click.IntRange(1, MAX_ID))
@with_app
def payouts_approve(ops_email: str, batch_id: int) -> None:
    """Approve a draft batch: each pending line moves payable -> paid out."""
    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from payments.books import payouts as service

    session = db_session()
    try:
        with UnitOfWork(session):
            batch = service.approve(session, batch_id=batch_id, actor_id=_ops_id(session, ops_email), now=clock())
            status, summary = batch.status.value, service.summary(session, batch_id)
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Payout batch {batch_id} {status}: "
               + ", ".join(f"{s} {v['lines']} line(s) {v['cents']} cents" for s, v in summary.items()))


@payouts.command("mark-paid")
@click.argument("batch_id", type=click.IntRange(1, MAX_ID))
@click.option("--reference", required=True, help="The external reference (bank transfer, provider id).")
@click.option("--line", "line_id", type=click.IntRange(1, MAX_ID), help="One line only (default: every approved).")
@with_app
def payouts_mark_paid(batch_id: int, reference: str, line_id: int | None) -> None:
    """Mark an approved batch's lines (or one line) paid with an external reference."""
    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from payments.books import payouts as service

    session = db_session()
    try:
        with UnitOfWork(session):
            if line_id is None:
                service.mark_batch_paid(session, batch_id=batch_id, reference=reference, now=clock())
            else:
                service.mark_paid(session, batch_id=batch_id, line_id=line_id, reference=reference, now=clock())
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Marked paid ({reference}).", err=True)


@payouts.command("mark-failed")
@click.argument("batch_id", type=click.IntRange(1, MAX_ID))
@click.argument("line_id", type=click.IntRange(1, MAX_ID))
@click.option("--reason", default="")
@with_app
def payouts_mark_failed(batch_id: int, line_id: int, reason: str) -> None:
    """A line could not be paid: reverse its payout (the money is payable again)."""
    from base.errors import DomainError
    from base.uow import UnitOfWork
    from edge.request import clock, db_session
    from payments.books import payouts as service

    session = db_session()
    try:
        with UnitOfWork(session):
            service.mark_failed(session, batch_id=batch_id, line_id=line_id, reason=reason, now=clock(),
                                actor_id=None)
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Line {line_id} failed; its payout reversed.", err=True)


@payouts.command("export")
@click.argument("batch_id", type=click.IntRange(1, MAX_ID))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: standard output.")
@with_app
def payouts_export(batch_id: int, output: Path | None) -> None:
    """Write a payout batch as CSV (what ops pay from)."""
    from base.errors import DomainError
    from edge.request import db_session
    from payments.books.payouts import csv_lines

    try:
        text = "".join(csv_lines(db_session(), batch_id))
    except DomainError as exc:
        _fail(exc)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


# --- end of payments ------------------------------------------------------------------------------------------


def main() -> None:
    cli()
