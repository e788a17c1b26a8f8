"""Benchmark the worker endpoints `POST /work/next` and `POST /assignments/{id}/submit` under gunicorn on
PostgreSQL.

Run: .venv/bin/python benchmarks/next_submit.py [--workers 32] [--rounds 3] [--sizes 10000,1000000]

A bare baseline, a minimal Flask app whose one endpoint does a single INSERT + COMMIT, is served by the same
gunicorn command for the whole run. Per project size: a fresh migrated database with a requester, a project
(single_choice pos/neg, 5 assignments per item, 1 item per HIT, gold at the default 8% with one gold item per 20
real ones in the pool, so about one task in twelve is a gold task), the items imported and published through the
service layer, the app under gunicorn, and one unmeasured loop run followed by VACUUM ANALYZE (the state of a
live database: planned against a fresh setup's empty tables, the cached plans would scan them, and the bulk
load's vacuum would run during the measurements). Then rounds of four runs back to back, each a warm-up and a measured
window with N client threads (one keep-alive connection each):

1. the baseline;
2. the loop: N workers (signed up over HTTP) doing next -> submit ("pos") with no think time: cycles/s and each
   endpoint's latencies;
3. `next` alone, on behalf of fresh workers (accounts made in the database), so every request is a claim;
4. `submit` alone: the leases run 3 handed out.

This machine's speed drifts by a third over minutes, so every ratio compares figures of the same round, and the
figures are medians over the rounds. Afterwards SQL checks the invariants: no item over its redundancy, no worker
answering an item twice, every acknowledged submit stored (and nothing stored that was not acknowledged). The last
line is machine-readable:

    next_ratio=X submit_ratio=X p95_ms=X scale_ratio=X violations=N

next/submit_ratio: the endpoint's requests/s alone over the baseline's (median over rounds, worst size; the
loop's cycles over the baseline are printed too); p95_ms: the worst p95 of either endpoint, in the loop or alone
(median over rounds, worst size); scale_ratio: loop cycles/s at the largest size over the smallest, each taken
over its round's baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import http.client
import itertools
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from import_items import CLI, DEFAULT_PG_URL, LABEL_SCHEMA, WORDS, cli_env, label, run_cli
from sqlalchemy import create_engine, make_url, text

from base.db import scratch_database as new_database
from shell.config import normalize_database_url
from workers.service import TOKEN_PREFIX

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))

EMAIL = "bench-next@example.com"
PASSWORD = "benchmark-password"
ENDPOINTS = ("next", "submit")
TARGET_RATIO, TARGET_P95_MS, TARGET_SCALE = 0.40, 50.0, 0.80

# The baseline: the least a request that writes can cost on this stack (same engine settings as the app).
BASELINE_APP = textwrap.dedent("""
    import os

    from flask import Flask
    from sqlalchemy import text

    from base.db import make_engine

    engine = make_engine(os.environ["CROWDMARKET_DATABASE_URL"], pool_size=int(os.environ["CROWDMARKET_DB_POOL_SIZE"]))
    app = Flask(__name__)


    @app.post("/hit")
    def hit():
        with engine.connect() as conn:
            new_id = conn.execute(text("INSERT INTO bench_hit (at) VALUES (now()) RETURNING id")).scalar_one()
            conn.commit()
        return {"id": new_id}


    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}
""")


# ---- measurements ---------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class EndpointStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    def rps(self, seconds: float) -> float:
        return len(self.latencies_ms) / seconds

    def pct(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)

    def line(self, name: str, seconds: float) -> str:
        lat = sorted(self.latencies_ms)
        return (f"    {name:<13}{self.rps(seconds):>8.1f} req/s   p50 {percentile(lat, 50):6.1f}  p95 "
                f"{percentile(lat, 95):6.1f}  p99 {percentile(lat, 99):6.1f} ms   errors {self.errors}")


@dataclass
class ClientResult:
    """What one simulated worker saw; merged after the run (no locks in the hot loop)."""

    stats: dict[str, EndpointStats] = field(default_factory=lambda: {e: EndpointStats() for e in (*ENDPOINTS, "hit")})
    cycles: int = 0  # submits acknowledged inside the measured window
    acked: list[int] = field(default_factory=list)  # every acknowledged assignment id, warm-up included
    unsure: int = 0  # submits whose outcome is unknown (connection error): may or may not be stored
    exhausted: bool = False
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Window:
    start: float  # measured from here (after the warm-up) ...
    end: float  # ... to here; clients stop starting requests at `end`

    def has(self, t0: float, t1: float) -> bool:
        return t0 >= self.start and t1 <= self.end


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after a transport error."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else dict(self.headers)
        payload = b""
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request("POST", path, body=payload, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise

    def close(self) -> None:
        self.conn.close()


def _note(result: ClientResult, name: str, status: int) -> None:
    key = f"{name} {status}"
    result.statuses[key] = result.statuses.get(key, 0) + 1


def timed_post(client: Client, window: Window, result: ClientResult, name: str, path: str,
               body: dict | None = None, token: str | None = None,
               fine: tuple[int, ...] = (200,)) -> tuple[int, bytes, bool] | None:
    """One request counted under `name`: its status, an error unless the status is `fine` (None on a transport
    error), and its latency if it succeeded inside the window. Returns (status, body, measured)."""
    t0 = time.perf_counter()
    try:
        status, response = client.post(path, body, token=token)
    except (OSError, http.client.HTTPException):
        result.stats[name].errors += 1
        return None
    t1 = time.perf_counter()
    _note(result, name, status)
    if status not in fine:
        result.stats[name].errors += 1
    measured = status == 200 and window.has(t0, t1)
    if measured:
        result.stats[name].latencies_ms.append((t1 - t0) * 1000)
    return status, response, measured


def worker_loop(client: Client, window: Window, result: ClientResult) -> None:
    """next -> submit until the window ends; a 404 from next (no task available) ends this worker."""
    while time.perf_counter() < window.end:
        got = timed_post(client, window, result, "next", "/api/v1/work/next", fine=(200, 404))
        if got is None or got[0] not in (200, 404):
            continue
        if got[0] == 404:
            result.exhausted = True
            return
        task = json.loads(got[1])
        answers = [{"item_id": item["id"], "answer": "pos"} for item in task["items"]]
        done = timed_post(client, window, result, "submit", f"/api/v1/assignments/{task['assignment_id']}/submit",
                          {"answers": answers})
        if done is None:
            result.unsure += 1
        elif done[0] == 200:
            result.acked.append(task["assignment_id"])
            result.cycles += 1 if done[2] else 0


def baseline_loop(client: Client, window: Window, result: ClientResult) -> None:
    while time.perf_counter() < window.end:
        timed_post(client, window, result, "hit", "/hit")


class Pool:
    """Work shared by the clients of a solo run: each entry is used once. Remembers when it ran dry."""

    def __init__(self, entries: list) -> None:
        self.entries = entries
        self.next_index = itertools.count()
        self.dry_at: float | None = None

    def take(self) -> object | None:
        i = next(self.next_index)  # atomic under the GIL
        if i < len(self.entries):
            return self.entries[i]
        if self.dry_at is None:
            self.dry_at = time.perf_counter()
        return None


def solo_next_loop(tokens: Pool, leases: list, client: Client, window: Window, result: ClientResult) -> None:
    """Only `next`: every request comes from a worker who holds nothing yet, so each one claims a slot."""
    while time.perf_counter() < window.end:
        token = tokens.take()
        if token is None:
            return
        got = timed_post(client, window, result, "next", "/api/v1/work/next", token=token)
        if got is None:
            continue
        if got[0] != 200:
            result.exhausted |= got[0] == 404
            continue
        task = json.loads(got[1])
        leases.append((token, task["assignment_id"], [item["id"] for item in task["items"]]))


def solo_submit_loop(leases: Pool, client: Client, window: Window, result: ClientResult) -> None:
    """Only `submit`: the leases the solo `next` run handed out, each submitted once."""
    while time.perf_counter() < window.end:
        lease = leases.take()
        if lease is None:
            return
        token, assignment_id, item_ids = lease
        done = timed_post(client, window, result, "submit", f"/api/v1/assignments/{assignment_id}/submit",
                          {"answers": [{"item_id": i, "answer": "pos"} for i in item_ids]}, token=token)
        if done is None:
            result.unsure += 1
        elif done[0] == 200:
            result.acked.append(assignment_id)


@dataclass
class Load:
    results: list[ClientResult]
    seconds: float
    cpu: dict[str, float]  # share of one core over the measured window, per process group
    window: Window | None = None

    def until(self, dry_at: float | None) -> float:
        """Measured seconds when the work may run dry before the window ends."""
        assert self.window is not None
        end = self.window.end if dry_at is None else min(self.window.end, dry_at)
        return max(1e-9, end - self.window.start)

    def merged(self, name: str) -> EndpointStats:
        out = EndpointStats()
        for r in self.results:
            out.latencies_ms.extend(r.stats[name].latencies_ms)
            out.errors += r.stats[name].errors
        return out

    @property
    def cycles(self) -> int:
        return sum(r.cycles for r in self.results)

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            for k, v in r.statuses.items():
                out[k] = out.get(k, 0) + v
        return dict(sorted(out.items()))


def _proc_cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields_[11]) + int(fields_[12])) / tick  # utime + stime
    return total


def _postgres_backends(database: str, *, autovacuum: bool = False) -> list[int]:
    """Server processes of one database (their title names it), so other databases' load is not counted: its
    connections, or its autovacuum workers."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if (title.startswith("postgres: ") and f" {database}" in title
                    and title.startswith("postgres: autovacuum") == autovacuum):
                pids.append(int(entry.name))
    return pids


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def drive(loop: Callable[[Client, Window, ClientResult], None], clients: list[Client], warmup: float,
          duration: float, server: Gunicorn, database: str) -> Load:
    """Run `loop` on one thread per client; measure the window after the warm-up, with CPU use per side."""
    now = time.perf_counter()
    window = Window(start=now + warmup, end=now + warmup + duration)
    results = [ClientResult() for _ in clients]
    threads = [threading.Thread(target=loop, args=(c, window, r), daemon=True) for c, r in zip(clients, results,
                                                                                                 strict=True)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, window.start - time.perf_counter()))
    groups = {"gunicorn": server.worker_pids(), "postgres": _postgres_backends(database),
              "autovacuum": _postgres_backends(database, autovacuum=True)}
    before = {k: _proc_cpu_seconds(v) for k, v in groups.items()}
    before["client"], before["machine"] = time.process_time(), _machine_busy_seconds()
    t_start = time.perf_counter()
    time.sleep(max(0.0, window.end - time.perf_counter()))
    seconds = time.perf_counter() - t_start
    cpu = {k: (_proc_cpu_seconds(v) - before[k]) / seconds for k, v in groups.items()}
    cpu["client"] = (time.process_time() - before["client"]) / seconds
    # Whatever else ran on the machine meanwhile (other jobs skew the figures; this shows by how much).
    cpu["other"] = max(0.0, (_machine_busy_seconds() - before["machine"]) / seconds - sum(cpu.values()))
    for t in threads:
        t.join()
    return Load(results, duration, cpu, window)


# ---- servers and databases ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """A gunicorn master in its own process group; `stop` ends it and its workers."""

    def __init__(self, app: str, chdir: Path, env: dict[str, str], settings: list[str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        command = [GUNICORN, *settings, "-b", f"127.0.0.1:{self.port}", "--chdir", str(chdir), app]
        with log.open("w") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._wait_ready(settings)

    def _wait_ready(self, settings: list[str]) -> None:
        want = int(settings[settings.index("-w") + 1]) if "-w" in settings else 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok and len(self.worker_pids()) >= want:
                    time.sleep(1.0)  # let every worker finish importing the app
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not become ready:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(p) for p in children]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created: the master and its workers
                self.proc.wait()


@contextmanager
def serving(app: str, chdir: Path, env: dict[str, str], settings: list[str], log: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(app, chdir, env, settings, log)
    try:
        yield server
    finally:
        server.stop()


def scratch_database(pg_url: str, tag: str) -> AbstractContextManager[str]:
    """A new, empty PostgreSQL database for one measurement; dropped afterwards."""
    return new_database(pg_url, f"cm_bench_next_{tag}_{os.getpid()}")


def sql(url: str, statement: str, params: dict | None = None, *, autocommit: bool = False) -> list[tuple]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT" if autocommit else None)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params or {})
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


# ---- setup ----------------------------------------------------------------------------------------------


GOLD_EVERY = 20  # default: one gold item per this many real ones (--gold-every; 0: no gold)


def gold_items(n: int, gold_every: int) -> int:
    return n // gold_every if gold_every else 0


class GeneratedItems:
    """A read-only JSONL byte stream of n items and n / GOLD_EVERY gold items among them, generated line by line
    (nothing held in memory)."""

    def __init__(self, n: int, gold_every: int = GOLD_EVERY) -> None:
        self.gold_every = gold_every
        self.lines = (self._line(i).encode() for i in range(n + gold_items(n, gold_every)))

    def _line(self, i: int) -> str:
        words = " ".join(WORDS[(i * 7 + k * 13) % len(WORDS)] for k in range(14))
        doc: dict[str, object] = {"external_id": f"it-{i}", "data": {"text": words, "n": i}}
        if self.gold_every and i % (self.gold_every + 1) == self.gold_every:
            doc["gold"] = "pos" if i % 2 else "neg"
        return json.dumps(doc, separators=(",", ":")) + "\n"

    def readline(self, _limit: int = -1) -> bytes:
        return next(self.lines, b"")


def setup_project(url: str, n_items: int, gold_every: int = GOLD_EVERY, redundancy: int = 5) -> dict[str, float]:
    """Requester, project, n items imported and published through the service layer; returns timings."""
    from base.clock import utcnow
    from base.db import Database
    from base.identity import Role
    from market.catalogue.batches import publish_batch
    from market.catalogue.imports import import_items
    from market.catalogue.projects import create_project
    from payments import ledger
    from workers.service import create_account

    timings: dict[str, float] = {}
    database = Database.from_url(url, pool_size=1)
    try:
        with database.unit_of_work() as session:
            owner = create_account(session, role=Role.REQUESTER, email=EMAIL, now=utcnow())
            project = create_project(session, owner=owner, now=utcnow(), data={
                "title": "next/submit benchmark", "label_schema": LABEL_SCHEMA, "reward_cents": 5,
                "assignments_per_item": redundancy, "items_per_hit": 1, "instructions": "Is the review positive?",
                "estimated_seconds": 20})  # 5c / 20 s = $9.00/h: above the wage floor
            ledger.fund(session, requester_id=owner.id, cents=10**9, currency="USD", key="bench", now=utcnow(),
                        actor_id=None)
            start = time.perf_counter()
            stream: IO[bytes] = GeneratedItems(n_items, gold_every)  # type: ignore[assignment]
            result = import_items(session, project=project, stream=stream, fmt="jsonl", now=utcnow())
            timings["import"] = time.perf_counter() - start
            gold = gold_items(n_items, gold_every)
            if result.created != n_items + gold or result.gold != gold:
                raise RuntimeError(f"imported {result.created} items ({result.gold} gold), expected {n_items} "
                                   f"and {gold} gold")
            start = time.perf_counter()
            batch, _ = publish_batch(session, project_id=project.id, account=owner, now=utcnow(),
                                             name="bench")
            timings["publish"] = time.perf_counter() - start
            if batch.hit_count != n_items:
                raise RuntimeError(f"published {batch.hit_count} HITs, expected {n_items}")
    finally:
        database.engine.dispose()
    start = time.perf_counter()
    sql(url, "ANALYZE", autocommit=True)  # what autovacuum would do soon after a bulk load
    timings["analyze"] = time.perf_counter() - start
    return timings


def sign_up(port: int, count: int) -> list[str]:
    """Register `count` workers over HTTP (a few at a time: scrypt is slow on purpose); return their tokens."""
    tokens: list[str | None] = [None] * count
    failures: list[str] = []

    def register(indexes: range) -> None:
        client = Client(port)
        try:
            for i in indexes:
                # Each from an address of its own, as behind a load balancer (the app trusts one proxy hop here):
                # sign-ups are limited per address, and with Redis the count is shared by every process.
                client.headers["X-Forwarded-For"] = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
                status, body = client.post("/api/v1/workers", {"username": f"bench-worker-{i}",
                                                               "password": PASSWORD, "display_name": f"W{i}"})
                if status != 201:
                    failures.append(f"sign-up {i}: {status} {body[:200]!r}")
                    continue
                tokens[i] = json.loads(body)["token"]
        finally:
            client.close()

    threads = [threading.Thread(target=register, args=(range(k, count, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError("; ".join(failures[:5]))
    return [t for t in tokens if t is not None]


def make_worker_pool(url: str, count: int) -> list[str]:
    """`count` worker accounts with API tokens, written straight to the database (signing up over HTTP would
    spend minutes in scrypt); their tokens count as used a moment ago, as a working crowd's would."""
    tokens = [TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in range(count)]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            ids = conn.execute(text("""
                INSERT INTO account (role, username, username_key, display_name, is_active, created_at)
                SELECT 'worker', 'bench-solo-' || g, 'bench-solo-' || g, '', true, now()
                FROM generate_series(1, :n) AS g
                RETURNING id"""), {"n": count}).scalars().all()
            conn.execute(text("""
                INSERT INTO api_token (account_id, token_hash, prefix, name, created_at, last_used_at)
                SELECT a, h, p, 'bench', now(), now()
                FROM unnest(CAST(:ids AS integer[]), CAST(:hashes AS text[]), CAST(:prefixes AS text[])) AS t(a, h, p)
                """), {"ids": list(ids), "hashes": [hashlib.sha256(t.encode()).hexdigest() for t in tokens],
                       "prefixes": [t[:10] for t in tokens]})
    finally:
        engine.dispose()
    return tokens


# ---- invariants -----------------------------------------------------------------------------------------


def check_invariants(url: str, acked: list[int], unsure: int) -> tuple[int, list[str]]:
    """(violations, report lines) from the database after a scenario."""
    over = sql(url, """
        SELECT count(*) FROM (
            SELECT an.item_id FROM answer an JOIN item i ON i.id = an.item_id JOIN batch b ON b.id = i.batch_id
            GROUP BY an.item_id, b.assignments_per_item HAVING count(*) > b.assignments_per_item) x""")[0][0]
    twice = sql(url, """
        SELECT count(*) FROM (SELECT worker_id, item_id FROM answer GROUP BY worker_id, item_id
                              HAVING count(*) > 1) x""")[0][0]
    missing = sql(url, """
        SELECT count(*) FROM unnest(CAST(:ids AS integer[])) AS k(id)
        WHERE NOT EXISTS (SELECT 1 FROM assignment a WHERE a.id = k.id AND a.status = 'submitted'
                          AND EXISTS (SELECT 1 FROM answer an WHERE an.assignment_id = a.id))""",
                  {"ids": acked})[0][0]
    submitted, answers, live = sql(url, """
        SELECT (SELECT count(*) FROM assignment WHERE status = 'submitted'), (SELECT count(*) FROM answer),
               (SELECT count(*) FROM assignment WHERE status = 'leased')""")[0]
    # Stored but never acknowledged: allowed only for submits whose response was lost.
    unacked = max(0, submitted - len(set(acked)) - unsure)
    # One item per HIT: one answer per submitted assignment.
    mismatch = abs(answers - submitted)
    violations = over + twice + missing + unacked + mismatch
    lines = [f"  invariants: {over} items over redundancy, {twice} (worker, item) pairs answered twice, "
             f"{missing} acknowledged submits not stored, {unacked} stored submits never acknowledged, "
             f"answers {answers} vs submitted assignments {submitted} (acknowledged {len(set(acked))}, "
             f"unsure {unsure}, leases left {live})"]
    return violations, lines


# ---- scenarios ------------------------------------------------------------------------------------------


def server_env(url: str, tmp: Path, pool_size: int, redis_url: str = "") -> dict[str, str]:
    env = cli_env(url, tmp)
    env.update(CROWDMARKET_LOG_LEVEL="WARNING", CROWDMARKET_DB_POOL_SIZE=str(pool_size), CROWDMARKET_PROXY_HOPS="1",
               # The load is 64 scripts taking tasks with no think time: the per-account next limit is not under test.
               CROWDMARKET_RATELIMIT_NEXT="off",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    env.pop("CROWDMARKET_REDIS_URL", None)
    if redis_url:
        env["CROWDMARKET_REDIS_URL"] = redis_url
    return env


@contextmanager
def job_worker(env: dict[str, str], tmp: Path) -> Iterator[None]:
    """`crowdmarket jobs work` beside the app when Redis is configured, as in production: workers are judged
    there after their submits (market/quality/evaluation.py), on the same two cores."""
    if not env.get("CROWDMARKET_REDIS_URL"):
        yield
        return
    with (tmp / "jobs.log").open("w") as log:
        proc = subprocess.Popen([CLI, "jobs", "work"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def cpu_line(load: Load, what: str) -> str:
    parts = ", ".join(f"{k} {v * 100:.0f}%" for k, v in load.cpu.items())
    return f"    cpu, {what} (100% = one core; {os.cpu_count()} cores): {parts}"


@contextmanager
def baseline_server(args: argparse.Namespace, settings: list[str], tmp: Path) -> Iterator[tuple[Gunicorn, str]]:
    """The bare baseline app on its own scratch database, up for the whole run (idle between its rounds)."""
    app_dir = tmp / "baseline"
    app_dir.mkdir()
    (app_dir / "baseline_app.py").write_text(BASELINE_APP)
    with scratch_database(args.pg_url, "baseline") as url:
        sql(url, "CREATE TABLE bench_hit (id serial PRIMARY KEY, at timestamptz NOT NULL)")
        env = server_env(url, tmp, args.pool_size)
        with serving("baseline_app:app", app_dir, env, settings, tmp / "gunicorn_baseline.log") as server:
            yield server, make_url(url).database or ""


def run_clients(loop: Callable[[Client, Window, ClientResult], None], port: int, tokens: list[str | None],
                args: argparse.Namespace, server: Gunicorn, db_name: str) -> Load:
    clients = [Client(port, token) for token in tokens]
    try:
        return drive(loop, clients, args.warmup, args.duration, server, db_name)
    finally:
        for c in clients:
            c.close()


@dataclass
class Round:
    """One round at one project size: the baseline, then our three runs, back to back, so that the ratios
    compare figures taken within a minute of each other (this machine's speed drifts by a third over minutes)."""

    baseline: float  # requests/s
    baseline_p95: float  # ms: what the bare INSERT app's own clients wait, for scale
    cycles: float  # loop cycles/s
    loop: dict[str, EndpointStats]
    solo: dict[str, tuple[EndpointStats, float]]  # each endpoint alone: stats, measured seconds

    def rps(self, name: str) -> float:
        stats, seconds = self.solo[name]
        return stats.rps(seconds)

    def ratio(self, name: str) -> float:
        return self.rps(name) / self.baseline

    def p95(self) -> float:
        """The worst p95 of either endpoint, in the loop or alone."""
        return max([self.loop[e].pct(95) for e in ENDPOINTS] + [self.solo[e][0].pct(95) for e in ENDPOINTS])


@dataclass
class Scenario:
    items: int
    rounds: list[Round]
    violations: int

    def median(self, value: Callable[[Round], float]) -> float:
        return statistics.median(value(r) for r in self.rounds)


def _solo(name: str, load: Load, pool: Pool) -> tuple[EndpointStats, float]:
    stats, seconds = load.merged(name), load.until(pool.dry_at)
    ran_out = pool.dry_at is not None and load.window is not None and pool.dry_at < load.window.end
    print(stats.line(name + " alone", seconds) + (f"   (work ran out after {seconds:.1f}s)" if ran_out else ""))
    return stats, seconds


def run_scenario(args: argparse.Namespace, settings: list[str], tmp: Path, n_items: int,
                 baseline: tuple[Gunicorn, str]) -> Scenario:
    base_server, base_db = baseline
    with scratch_database(args.pg_url, label(n_items)) as url:
        env = server_env(url, tmp, args.pool_size, args.redis)
        start = time.perf_counter()
        run_cli(["db", "upgrade"], env, tmp)
        migrate = time.perf_counter() - start
        timings = setup_project(url, n_items, args.gold_every)
        print(f"{label(n_items)} items: setup migrate {migrate:.1f}s, import {timings['import']:.1f}s "
              f"({n_items / timings['import']:,.0f} items/s), publish {timings['publish']:.1f}s "
              f"({n_items / timings['publish']:,.0f} items/s), analyze {timings['analyze']:.1f}s", flush=True)
        solo_tokens = make_worker_pool(url, args.solo_workers * args.rounds)
        db_name = make_url(url).database or ""
        rounds: list[Round] = []
        results: list[ClientResult] = []
        with serving("wsgi:app", ROOT, env, settings, tmp / f"gunicorn_{label(n_items)}.log") as server, \
                job_worker(env, tmp):
            start = time.perf_counter()
            tokens: list[str | None] = list(sign_up(server.port, args.workers))
            print(f"  {len(tokens)} workers signed up over HTTP in {time.perf_counter() - start:.1f}s", flush=True)
            anonymous: list[str | None] = [None] * args.workers
            # Prime, then VACUUM ANALYZE, as autovacuum soon would on a live database: planned against the empty
            # tables of a fresh setup, the cached plans scan them, and every statement slows as the tables fill;
            # and the bulk load's vacuum would otherwise run during the measurements.
            results += run_clients(worker_loop, server.port, tokens, args, server, db_name).results
            start = time.perf_counter()
            sql(url, "VACUUM ANALYZE", autocommit=True)
            print(f"  primed, then VACUUM ANALYZE in {time.perf_counter() - start:.1f}s", flush=True)
            for k in range(args.rounds):
                print(f"  round {k + 1}:")
                base = run_clients(baseline_loop, base_server.port, anonymous, args, base_server, base_db)
                base_rps = base.merged("hit").rps(base.seconds)
                print(base.merged("hit").line("baseline", base.seconds))
                loop = run_clients(worker_loop, server.port, tokens, args, server, db_name)
                print(f"    next -> submit loop: {loop.cycles / loop.seconds:.1f} cycles/s")
                for e in ENDPOINTS:
                    print(loop.merged(e).line(e, loop.seconds))
                if any(r.exhausted for r in loop.results):
                    print("    WARNING: workers ran out of work (404); lower --duration or --rounds")
                # Each endpoint alone, as many clients: `next` for workers who hold nothing (every request is a
                # claim), then `submit` of the leases it handed out.
                token_pool = Pool(solo_tokens[k * args.solo_workers:(k + 1) * args.solo_workers])
                leases: list = []
                nxt = run_clients(functools.partial(solo_next_loop, token_pool, leases), server.port, anonymous,
                                  args, server, db_name)
                lease_pool = Pool(leases)
                sub = run_clients(functools.partial(solo_submit_loop, lease_pool), server.port, anonymous,
                                  args, server, db_name)
                solo = {"next": _solo("next", nxt, token_pool), "submit": _solo("submit", sub, lease_pool)}
                for what, load in (("baseline", base), ("loop", loop), ("next alone", nxt), ("submit alone", sub)):
                    print(cpu_line(load, what))
                rounds.append(Round(base_rps, base.merged("hit").pct(95), loop.cycles / loop.seconds,
                                    {e: loop.merged(e) for e in ENDPOINTS},
                                    solo))
                results += loop.results + sub.results
                sys.stdout.flush()
        acked = [a for r in results for a in r.acked]
        violations, lines = check_invariants(url, acked, sum(r.unsure for r in results))
        for line in lines:
            print(line, flush=True)
        return Scenario(n_items, rounds, violations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=32, help="concurrent simulated workers (and baseline clients)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; the figures are their medians")
    parser.add_argument("--gold-every", type=int, default=GOLD_EVERY,
                        help="one gold item per this many real ones (0: no gold, so no gold tasks)")
    parser.add_argument("--sizes", default="10000,1000000", help="comma-separated project sizes (items)")
    parser.add_argument("--solo-workers", type=int, default=12000,
                        help="fresh workers per round for the `next`-alone run (one claim each)")
    parser.add_argument("--procs", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads per process")
    parser.add_argument("--gunicorn", default="", help="replace the gunicorn settings (e.g. '-w 5 -k sync')")
    parser.add_argument("--pool-size", type=int, default=10, help="SQLAlchemy pool size per process (both apps)")
    parser.add_argument("--redis", default=os.environ.get("CROWDMARKET_REDIS_URL", ""),
                        help="Redis for the app (and a `crowdmarket jobs work` beside it); empty: none, workers "
                             "are judged in the serving processes")
    env_url = os.environ.get("CROWDMARKET_DATABASE_URL", "")
    parser.add_argument("--pg-url", default=env_url if env_url.startswith("postgres") else DEFAULT_PG_URL,
                        help="PostgreSQL server to create the scratch databases on")
    args = parser.parse_args()
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    if not sizes or min(sizes) <= 0 or args.workers <= 0 or args.duration <= 0 or args.rounds <= 0:
        parser.error("sizes, workers, duration and rounds must be positive")
    args.pg_url = normalize_database_url(args.pg_url)
    # The same gunicorn settings for the baseline and the app.
    settings = ["-w", str(args.procs), "-k", "gthread", "--threads", str(args.threads), "--keep-alive", "30",
                "--log-level", "warning"]
    if args.gunicorn:
        settings = [*args.gunicorn.split(), "--log-level", "warning"]

    t0 = time.perf_counter()
    print(f"gunicorn {' '.join(settings)}; {args.workers} clients; {args.rounds} rounds of {args.warmup:g}s warm-up "
          f"+ {args.duration:g}s per run; started {dt.datetime.now().isoformat(timespec='seconds')}", flush=True)
    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="cm_bench_next_") as tmp_name:
        tmp = Path(tmp_name)
        with baseline_server(args, settings, tmp) as baseline:
            for n in sizes:
                scenarios.append(run_scenario(args, settings, tmp, n, baseline))

    print()
    print("medians over rounds; requests/s, latencies in ms; % = requests/s over the baseline's in the same round")
    print(f"{'items':>9}{'baseline':>10}{'base p95':>10}{'cycles/s':>10}{'loop p95':>10}{'next/s':>9}{'p95':>7}"
          f"{'next%':>7}{'submit/s':>10}{'p95':>7}{'submit%':>9}{'loop%':>7}")
    for s in scenarios:
        m = s.median
        print(f"{label(s.items):>9}{m(lambda r: r.baseline):>10.0f}{m(lambda r: r.baseline_p95):>10.1f}"
              f"{m(lambda r: r.cycles):>10.1f}"
              f"{m(lambda r: max(r.loop[e].pct(95) for e in ENDPOINTS)):>10.1f}"
              f"{m(lambda r: r.rps('next')):>9.1f}{m(lambda r: r.solo['next'][0].pct(95)):>7.1f}"
              f"{m(lambda r: r.ratio('next')):>7.0%}{m(lambda r: r.rps('submit')):>10.1f}"
              f"{m(lambda r: r.solo['submit'][0].pct(95)):>7.1f}{m(lambda r: r.ratio('submit')):>9.0%}"
              f"{m(lambda r: r.cycles / r.baseline):>7.0%}")
    # The ratios: each endpoint's requests/s when it is all the server does, over the baseline's (worst size).
    next_ratio = min(s.median(lambda r: r.ratio("next")) for s in scenarios)
    submit_ratio = min(s.median(lambda r: r.ratio("submit")) for s in scenarios)
    p95 = max(s.median(Round.p95) for s in scenarios)
    # Scale: loop cycles/s at the largest size over the smallest, each over its rounds' baselines (the machine's
    # drift between the two sizes' runs would otherwise count as growth or shrinkage).
    scale = float("nan")
    if len(scenarios) > 1:
        first, last = scenarios[0], scenarios[-1]
        scale = last.median(lambda r: r.cycles / r.baseline) / first.median(lambda r: r.cycles / r.baseline)
        raw = last.median(lambda r: r.cycles) / first.median(lambda r: r.cycles)
        print(f"scale: {scale:.2f} against each round's baseline, {raw:.2f} in raw cycles/s")
    violations = sum(s.violations for s in scenarios)
    checks = [(f"next >= {TARGET_RATIO:.0%} of baseline", next_ratio >= TARGET_RATIO),
              (f"submit >= {TARGET_RATIO:.0%} of baseline", submit_ratio >= TARGET_RATIO),
              (f"p95 < {TARGET_P95_MS:g} ms", p95 < TARGET_P95_MS)]
    if len(scenarios) > 1:
        checks.append((f"cycles/s at {label(sizes[-1])} >= {TARGET_SCALE:.0%} of {label(sizes[0])}",
                       scale >= TARGET_SCALE))
    checks.append(("no invariant violations", violations == 0))
    for name, ok in checks:
        print(f"target {'met' if ok else 'MISSED'}: {name}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    print(f"next_ratio={next_ratio:.2f} submit_ratio={submit_ratio:.2f} p95_ms={p95:.1f} scale_ratio={scale:.2f} "
          f"violations={violations}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
