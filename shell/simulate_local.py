"""`crowdmarket simulate` in process: a fresh temporary SQLite database, the app on a simulated clock, the
crowd through a Flask test client (shell/simulate.py has the crowd and the run)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shell.simulate import Settings, Simulation, client_call


class SimClock:
    """The app's clock in a simulation: it moves only when the simulation moves it."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.now += dt.timedelta(seconds=seconds)


class Evaluations:
    """The app's evaluating thread (CROWDMARKET_EVALUATION=thread, market/quality/evaluation.py) as the simulation
    runs it: the workers a response gave cause to judge wait, coalesced, and are judged once a simulated minute, as
    a busy server's thread or queue lags behind the work. Judging after every submit cost 40 ms a task here, more
    than the two requests; this way a run is deterministic too (no real thread)."""

    EVERY_SECONDS = 60

    def __init__(self, app: Any, clock: SimClock) -> None:
        self.app, self.clock = app, clock
        self.pending: set[tuple[int, int]] = set()
        self.last = clock.now

    def add(self, pairs: set[tuple[int, int]]) -> None:
        self.pending |= pairs

    def tick(self) -> None:
        if not self.pending or (self.clock.now - self.last).total_seconds() < self.EVERY_SECONDS:
            return
        from market.quality.evaluation import evaluate_now

        self.last = self.clock.now
        pairs, self.pending = sorted(self.pending), set()
        with self.app.app_context():
            for worker_id, project_id in pairs:
                evaluate_now(worker_id, project_id)


START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
FUNDS_CENTS = 100_000_000


def run_in_process(settings: Settings) -> dict[str, Any]:
    """The simulation on a fresh temporary SQLite database (removed afterwards): never a real database."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="crowdmarket-simulate-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'simulate.db'}"
        clock = SimClock(START)
        app = _app(url, clock, settings.seed)
        tokens = _accounts(app, clock)
        judge = Evaluations(app, clock)
        app.extensions["crowdmarket.evaluation_thread"] = judge
        sim = Simulation(settings, client_call(app.test_client()), requester_token=tokens["requester"],
                         ops_token=tokens["ops"], advance=clock.advance, now=lambda: clock.now.timestamp(),
                         run_cycle=lambda: _cycle(app, clock), tick=judge.tick)
        try:
            return sim.run()
        finally:
            app.extensions["crowdmarket.db"].engine.dispose()


def _app(url: str, clock: SimClock, seed: int) -> Any:
    import hashlib

    from base.db import Database
    from shell.app import create_app
    from shell.registry import metadata

    database = Database.from_url(url)
    metadata().create_all(database.engine)
    # Cheap password hashes (the crowd's passwords are made up), no Redis (jobs and judgements inline), no
    # platforms reached.
    return create_app({"DATABASE": database, "DATABASE_URL": url, "CLOCK": clock, "REDIS_URL": None,
                       # A key from the seed: the gold schedule and public ids derive from it, so a seed repeats
                       # the run (the database is thrown away, nothing it signs outlives the run).
                       "SECRET_KEY": hashlib.sha256(f"simulate:{seed}".encode()).hexdigest(),
                       "PASSWORD_HASH": "scrypt:256:8:1",
                       # TESTING: an error inside the app stops the run with its traceback, not a quiet 500.
                       "EVALUATION": "thread", "TESTING": True,
                       # The crowd works on a simulated clock, many tasks per real second: the next-task limit
                       # (real time) would throttle it, and a log line per request would drown the report.
                       "RATELIMIT_NEXT": "off", "LOG_LEVEL": "WARNING"})


def _accounts(app: Any, clock: SimClock) -> dict[str, str]:
    from base.identity import Role
    from base.uow import UnitOfWork
    from payments import ledger
    from workers.service import create_account, issue_token

    with app.app_context():
        session = app.extensions["crowdmarket.db"].session()
        with UnitOfWork(session):
            requester = create_account(session, role=Role.REQUESTER, email="requester@simulate.test", now=clock())
            ops = create_account(session, role=Role.OPS, email="ops@simulate.test", now=clock())
            _, requester_token = issue_token(session, account=requester, now=clock())
            _, ops_token = issue_token(session, account=ops, now=clock())
            ledger.fund(session, requester_id=requester.id, cents=FUNDS_CENTS, currency="USD", now=clock(),
                        actor_id=None, key="simulate:funding", reason="simulation")
        session.close()
    return {"requester": requester_token, "ops": ops_token}


def _cycle(app: Any, clock: SimClock) -> None:
    from base.uow import UnitOfWork
    from payments.cycle import run

    with app.app_context():
        session = app.extensions["crowdmarket.db"].session()
        with UnitOfWork(session):
            run(session, now=clock())
        session.close()
