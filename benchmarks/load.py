"""Load and faults: two app instances on one PostgreSQL + Redis, a crowd of workers, then things break.

Run: .venv/bin/python benchmarks/load.py [--items 10000] [--workers 64] [--seconds 15] [--no-faults]

The script starts its own PostgreSQL cluster (initdb + pg_ctl from /usr/lib/postgresql/*/bin, in a temporary
directory, as the `postgres` OS user when run as root) and its own Redis (`redis-server --save "" --appendonly
no`), each on a free port, so it may kill and restart them without harming anyone; or --database-url (a server
to create a scratch database on), --redis-url and --pg-restart-cmd use existing ones (then Redis is not stopped).
On them: the schema migrated with `crowdmarket db upgrade`, a project (single_choice, redundancy 3, one item per
HIT, gold at the default 8%) with --items items imported and published, two instances (`crowdmarket run`, each a
gunicorn master on its own port), a `crowdmarket jobs work` beside them, and a loop that approves the batch's
submitted work over the API every 2 s and runs `crowdmarket payments cycle` every 10 s.

--workers simulated workers (threads, one keep-alive connection each, signed up over the API, half on each
instance) loop next -> submit. They retry a 503 that has Retry-After (after waiting it) and a connection error
(resubmitting the same answers: a submit is idempotent); any other 5xx is a violation, and is retried too.

Phases:
(a) closed loop, no think time: peak cycles/s, each endpoint's requests/s and p50/p95/p99 (from the first try);
(b) open loop: cycles arrive at fixed times at half the peak rate; a free worker takes each, and `next` is timed
    from the arrival's scheduled time (so a queue behind busy workers counts: no coordinated omission), `submit`
    from when it is sent (right after its `next`); target p95 < 50 ms for both;
(c) faults, under the open loop's load: SIGKILL one gunicorn worker process; SIGKILL a whole instance's master
    (and its orphans), then restart it; restart PostgreSQL; stop Redis (checking /healthz says "degraded" on both
    instances and that cycles still complete), then start it again.

Then SQL checks: no item over redundancy, no (worker, item) answered twice, every acknowledged submit stored
(lost), nothing stored that was not acknowledged, no assignment rewarded twice, and the books balance
(payments.ledger.check_books). The last line is machine-readable:

    cycles_per_s=X p95_ms=X violations=N lost=N

cycles_per_s: phase (a)'s; p95_ms: phase (b)'s, the worse of next and submit; violations: unexpected 5xx (any
500, any 5xx but a 503 with Retry-After) plus invariant and books violations; lost: acknowledged but not stored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import http.client
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from import_items import CLI, run_cli
from next_submit import GOLD_EVERY, free_port, percentile, server_env, setup_project, sign_up, sql
from sqlalchemy import make_url

from base.db import Database
from payments.ledger import check_books
from shell.config import normalize_database_url
from workers.service import TOKEN_PREFIX

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("next", "submit", "approve", "healthz")
TARGET_P95_MS = 50.0
IDLE_RECONNECT_S = 1.5
MAX_TRIES = 200  # a request given up after this many retries counts as "gave up" (and its submit as unsure)


# ---- our own PostgreSQL and Redis ----------------------------------------------------------------------


class OwnPostgres:
    """A throw-away cluster: initdb in a temporary directory, pg_ctl start/restart/stop."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins:
            raise RuntimeError("no /usr/lib/postgresql/*/bin: pass --database-url")
        self.bin = Path(bins[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="cm_load_pg_"))
        self.port = free_port()
        # initdb refuses to run as root: run the cluster as the postgres OS user.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run([*self.prefix, str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
                        "-U", "postgres", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        self.ctl("start")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        subprocess.run([*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                        str(self.dir / "log"), "-w", "-t", "120", "-o", options, *args], check=True,
                       capture_output=True)

    def restart(self) -> None:
        self.ctl("restart", "-m", "fast")

    def close(self) -> None:
        try:
            self.ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class OwnRedis:
    """redis-server without persistence, as a child; `stop` and `start` again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    close = stop


# ---- the app ------------------------------------------------------------------------------------------


class Instance:
    """`crowdmarket run` (a gunicorn master and its workers) in its own process group, on a fixed port."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path, workers: int, threads: int) -> None:
        self.name, self.env, self.workers, self.threads = name, env, workers, threads
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([CLI, "run", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
                                          str(self.workers), "--threads", str(self.threads)], env=self.env,
                                         cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            if healthz(self.port)[0] == 200 and len(self.worker_pids()) >= self.workers:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

    def kill_worker(self) -> int:
        pid = self.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_master(self) -> None:
        """SIGKILL the master, then its orphaned workers (they would notice and exit on their own soon)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created for it
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def healthz(port: int) -> tuple[int, dict]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, json.loads(body or b"{}")
    except (OSError, http.client.HTTPException, ValueError):
        return 0, {}


class JobWorker:
    """`crowdmarket jobs work`, restarted by `ensure` if it died (as a supervisor would, e.g. after Redis left)."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.log, self.deaths = env, tmp / "jobs.log", 0
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        with self.log.open("a") as out:
            return subprocess.Popen([CLI, "jobs", "work"], env=self.env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)

    def ensure(self) -> None:
        if self.proc.poll() is not None:
            self.deaths += 1
            self.proc = self._spawn()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- measurements -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)  # endpoint -> 503 retries + connection errors
    violations: Counter = field(default_factory=Counter)  # endpoint -> unexpected 5xx
    cycles: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Recorder:
    """Everything the clients saw, per phase; one lock (cheap next to an HTTP round trip)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phases: dict[str, Phase] = {}
        self.current = self.phase("setup")
        self.acked: set[int] = set()
        self.unsure: set[int] = set()
        self.samples: list[str] = []  # a few bodies of unexpected 5xx, as evidence

    def phase(self, name: str) -> Phase:
        self.current = self.phases.setdefault(name, Phase(name))
        return self.current

    def status(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.current.statuses[f"{endpoint} {status}"] += 1

    def retry(self, endpoint: str) -> None:
        with self.lock:
            self.current.retries[endpoint] += 1

    def violation(self, endpoint: str, status: int, body: bytes) -> None:
        with self.lock:
            self.current.violations[endpoint] += 1
            if len(self.samples) < 8:
                self.samples.append(f"{self.current.name} {endpoint} {status}: {body[:300]!r}")

    def latency(self, endpoint: str, ms: float) -> None:
        with self.lock:
            self.current.latencies[endpoint].append(ms)

    def ack(self, assignment_id: int) -> None:
        with self.lock:
            self.acked.add(assignment_id)
            self.unsure.discard(assignment_id)
            self.current.cycles += 1


class Conn:
    """One keep-alive connection to one port; reconnects after a transport error."""

    def __init__(self, port: int, token: str | None) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.used = time.monotonic()

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, str | None, bytes]:
        # gunicorn closes a keep-alive connection idle for 2 s (its default); a request sent on it would fail and
        # count as a fault. Reconnect first, as a client pool with an idle timeout would (~0.1 ms on loopback).
        if time.monotonic() - self.used > IDLE_RECONNECT_S:
            self.conn.close()
        self.used = time.monotonic()
        headers = dict(self.headers)
        payload = b""
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.getheader("Retry-After"), response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise

    def close(self) -> None:
        self.conn.close()


def call(conn: Conn, rec: Recorder, endpoint: str, method: str, path: str, body: dict | None = None,
         stop: threading.Event | None = None) -> tuple[int, bytes] | None:
    """The request, retried after a 503 with Retry-After (waiting it), a connection error, or another 5xx (a
    violation); None if given up. Latency, from the first try, is recorded for a 2xx/4xx answer."""
    t0 = time.perf_counter()
    for _ in range(MAX_TRIES):
        try:
            status, retry_after, data = conn.request(method, path, body)
        except (OSError, http.client.HTTPException):
            rec.retry(endpoint)
            time.sleep(0.1)  # the instance is down or restarting: do not spin
            continue
        rec.status(endpoint, status)
        if status == 503 and retry_after is not None:
            rec.retry(endpoint)
            time.sleep(min(float(retry_after), 5.0))
            continue
        if status >= 500:
            rec.violation(endpoint, status, data)
            time.sleep(0.1)
            continue
        rec.latency(endpoint, (time.perf_counter() - t0) * 1000)
        return status, data
    return None


class SimWorker:
    """One simulated worker: a token and a keep-alive connection to one instance."""

    def __init__(self, token: str, port: int, rec: Recorder) -> None:
        self.conn, self.rec = Conn(port, token), rec
        self.exhausted = False

    def cycle(self, scheduled: float | None = None) -> None:
        """next -> submit. With `scheduled`, next's latency counts from that time (the open loop's arrival)."""
        rec = self.rec
        if scheduled is None:
            got = call(self.conn, rec, "next", "POST", "/api/v1/work/next")
        else:
            got = call(self.conn, _Shifted(rec, scheduled), "next", "POST", "/api/v1/work/next")
        if got is None or got[0] != 200:
            self.exhausted |= got is not None and got[0] == 404
            return
        task = json.loads(got[1])
        # The items carry their index: gold items (every GOLD_EVERY+1-th) are "pos" when odd; answering so keeps
        # the crowd's gold accuracy at 100%, so quality checks do not block them halfway through the run.
        answers = [{"item_id": item["id"], "answer": "pos" if item.get("data", {}).get("n", 1) % 2 else "neg"}
                   for item in task["items"]]
        aid = task["assignment_id"]
        with rec.lock:
            rec.unsure.add(aid)
        done = call(self.conn, rec, "submit", "POST", f"/api/v1/assignments/{aid}/submit", {"answers": answers})
        if done is not None and done[0] == 200:
            rec.ack(aid)
        elif done is not None:
            with rec.lock:
                rec.unsure.discard(aid)  # answered, and not stored: a 4xx (counted in the statuses)


class _Shifted:
    """A Recorder view whose latencies count from a scheduled time instead of the first try."""

    def __init__(self, rec: Recorder, scheduled: float) -> None:
        self.rec, self.scheduled = rec, scheduled

    def latency(self, endpoint: str, _ms: float) -> None:
        self.rec.latency(endpoint, (time.perf_counter() - self.scheduled) * 1000)

    def __getattr__(self, name: str):
        return getattr(self.rec, name)


def closed_loop(crowd: list[SimWorker], seconds: float) -> float:
    """Every worker loops without think time for `seconds`; returns the measured seconds."""
    end = time.perf_counter() + seconds

    def loop(w: SimWorker) -> None:
        while time.perf_counter() < end and not w.exhausted:
            w.cycle()

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(w,)) for w in crowd]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def open_loop(crowd: list[SimWorker], rate: float, stop: threading.Event) -> tuple[float, int]:
    """Cycles arrive every 1/rate s (fixed times) until `stop`; a free worker takes each. Returns (seconds,
    arrivals)."""
    arrivals: queue.Queue[float | None] = queue.Queue()

    def serve(w: SimWorker) -> None:
        while (scheduled := arrivals.get()) is not None:
            if not w.exhausted:
                w.cycle(scheduled)

    threads = [threading.Thread(target=serve, args=(w,)) for w in crowd]
    for t in threads:
        t.start()
    start = time.perf_counter() + 0.05
    k = 0
    while not stop.is_set():
        at = start + k / rate
        delay = at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        arrivals.put(at)
        k += 1
    for _ in threads:
        arrivals.put(None)
    for t in threads:
        t.join()
    return time.perf_counter() - start, k


@contextmanager
def open_load(crowd: list[SimWorker], rate: float, rec: Recorder, name: str) -> Iterator[Phase]:
    phase = rec.phase(name)
    stop = threading.Event()
    out: list[tuple[float, int]] = []
    driver = threading.Thread(target=lambda: out.append(open_loop(crowd, rate, stop)))
    driver.start()
    try:
        yield phase
    finally:
        stop.set()
        driver.join()
        phase.seconds = out[0][0] if out else 0.0
        phase.notes.append(f"{out[0][1] if out else 0} arrivals at {rate:.1f}/s")


class Reviewer:
    """Beside the crowd: approve the batch's submitted work over the API every 2 s (alternating instances) and
    run `crowdmarket payments cycle` every 10 s."""

    def __init__(self, token: str, project_id: int, batch_id: int, ports: list[int], env: dict[str, str],
                 rec: Recorder, jobs: JobWorker) -> None:
        self.conns = [Conn(p, token) for p in ports]
        self.path, self.batch_id = f"/api/v1/projects/{project_id}/reviews", batch_id
        self.env, self.rec, self.jobs = env, rec, jobs
        self.stop = threading.Event()
        self.approved = 0
        self.cycles_ok = self.cycles_failed = 0
        self.thread = threading.Thread(target=self._run)

    def approve_once(self, k: int = 0) -> None:
        got = call(self.conns[k % len(self.conns)], self.rec, "approve", "POST", self.path,
                   {"decision": "approve", "batch_id": self.batch_id})
        if got is not None and got[0] == 200:
            self.approved += len(json.loads(got[1])["reviewed"])

    def payments_cycle(self) -> None:
        done = subprocess.run([CLI, "payments", "cycle"], env=self.env, cwd=ROOT, capture_output=True)
        if done.returncode == 0:
            self.cycles_ok += 1
        else:
            self.cycles_failed += 1  # e.g. during the PostgreSQL restart; cron runs it again

    def _run(self) -> None:
        k = 0
        while not self.stop.wait(2.0):
            self.approve_once(k)
            if k % 5 == 4:
                self.payments_cycle()
            self.jobs.ensure()
            k += 1

    def __enter__(self) -> Reviewer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


# ---- faults -------------------------------------------------------------------------------------------


def fault_phase(args: argparse.Namespace, crowd: list[SimWorker], rate: float, rec: Recorder,
                instances: list[Instance], pg: OwnPostgres | None, redis_server: OwnRedis | None,
                jobs: JobWorker) -> None:
    gap = max(2.0, args.seconds / 3)

    def step(name: str, action: Callable[[], str]) -> None:
        phase = rec.phase(f"c:{name}")
        with open_load(crowd, rate, rec, f"c:{name}"):
            t0 = time.perf_counter()
            detail = action()
            phase.notes.append(f"{detail} ({time.perf_counter() - t0:.1f}s)")
            time.sleep(gap)
        print(f"  fault {name}: {phase.notes[0]}; {phase.cycles} cycles acknowledged meanwhile", flush=True)

    step("kill-worker", lambda: f"SIGKILL gunicorn worker {instances[0].kill_worker()} of {instances[0].name}")

    def kill_instance() -> str:
        instances[1].kill_master()
        time.sleep(1.0)
        instances[1].start()
        return f"SIGKILL {instances[1].name}'s master and workers, restarted it on the same port"

    step("kill-instance", kill_instance)

    def restart_pg() -> str:
        if pg is not None:
            pg.restart()
            return "pg_ctl restart -m fast"
        if args.pg_restart_cmd:
            subprocess.run(args.pg_restart_cmd, shell=True, check=True)
            return f"ran {args.pg_restart_cmd!r}"
        return "skipped (no --pg-restart-cmd for an external database)"

    step("restart-postgres", restart_pg)
    if redis_server is None:
        print("  fault stop-redis: skipped (external Redis)")
        return

    def stop_redis() -> str:
        redis_server.stop()
        time.sleep(1.0)
        before = rec.current.cycles
        health = [healthz(i.port) for i in instances]
        seen = ", ".join(f"{i.name}: {s} {b.get('status')}" for i, (s, b) in zip(instances, health, strict=True))
        degraded = all(s == 200 and b.get("status") == "degraded" for s, b in health)
        if not degraded:
            rec.violation("healthz", 0, f"not degraded with Redis down: {seen}".encode())
        time.sleep(gap)
        served = rec.current.cycles - before
        rec.current.notes.append(f"Redis down: /healthz {seen}; {served} cycles acknowledged while down")
        if served == 0:
            rec.violation("next", 0, b"no cycle completed while Redis was down")
        redis_server.start()
        jobs.ensure()
        return f"Redis stopped {gap + 1:.0f}s, /healthz {'degraded on both' if degraded else 'NOT degraded'}"

    step("stop-redis", stop_redis)


# ---- setup and checks ---------------------------------------------------------------------------------


@contextmanager
def scratch(server_url: str, name: str) -> Iterator[str]:
    """A new database on the server, dropped afterwards; each statement on a fresh connection, since the server
    restarts in between (base.db.scratch_database keeps one pooled connection, dead by then)."""
    for statement in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        sql(server_url, statement, autocommit=True)
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', autocommit=True)


def requester_token(url: str) -> tuple[str, int, int]:
    """An API token for the benchmark's requester (written to the database); (token, project id, batch id)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    owner, project_id, batch_id = sql(url, """
        SELECT p.owner_id, p.id, b.id FROM project p JOIN batch b ON b.project_id = p.id""")[0]
    sql(url, """INSERT INTO api_token (account_id, token_hash, prefix, name, created_at, last_used_at)
                VALUES (:a, :h, :p, 'bench', now(), now())""",
        {"a": owner, "h": hashlib.sha256(token.encode()).hexdigest(), "p": token[:10]})
    return token, project_id, batch_id


def verify(url: str, rec: Recorder) -> tuple[int, int, list[str]]:
    """(violations, lost, report lines) from the database."""
    over = sql(url, """
        SELECT count(*) FROM (
            SELECT an.item_id FROM answer an JOIN item i ON i.id = an.item_id JOIN batch b ON b.id = i.batch_id
            GROUP BY an.item_id, b.assignments_per_item HAVING count(*) > b.assignments_per_item) x""")[0][0]
    twice = sql(url, """SELECT count(*) FROM (SELECT worker_id, item_id FROM answer GROUP BY worker_id, item_id
                                             HAVING count(*) > 1) x""")[0][0]
    stored_sql = "a.status IN ('submitted', 'approved', 'rejected') AND EXISTS (SELECT 1 FROM answer an " \
                 "WHERE an.assignment_id = a.id)"
    lost = sql(url, f"""SELECT count(*) FROM unnest(CAST(:ids AS integer[])) AS k(id)
                        WHERE NOT EXISTS (SELECT 1 FROM assignment a WHERE a.id = k.id AND {stored_sql})""",
               {"ids": sorted(rec.acked)})[0][0]
    stored = sql(url, f"SELECT count(*) FROM assignment a WHERE {stored_sql}")[0][0]
    unacked = max(0, stored - len(rec.acked) - len(rec.unsure))
    paid_twice = sql(url, """SELECT count(*) FROM (SELECT assignment_id FROM ledger_transaction WHERE kind = 'reward'
                             GROUP BY assignment_id HAVING count(*) > 1) x""")[0][0]
    approved, rewarded = sql(url, """
        SELECT (SELECT count(*) FROM assignment WHERE status = 'approved'),
               (SELECT count(DISTINCT assignment_id) FROM ledger_transaction WHERE kind = 'reward')""")[0]
    database = Database.from_url(url, pool_size=1)
    try:
        with database.unit_of_work() as session:
            books = check_books(session)
    finally:
        database.engine.dispose()
    lines = [f"  invariants: {over} items over redundancy, {twice} (worker, item) pairs answered twice, {lost} "
             f"acknowledged submits lost, {unacked} stored but never acknowledged (acknowledged {len(rec.acked)}, "
             f"unsure {len(rec.unsure)}, stored {stored})",
             f"  money: {approved} approved, {rewarded} rewarded, {paid_twice} rewarded twice; books: "
             f"{'balanced' if not books else '; '.join(books[:5])}"]
    return over + twice + unacked + paid_twice + len(books), lost, lines


def table(rec: Recorder) -> list[str]:
    out = [f"{'phase':<20}{'endpoint':<9}{'count':>7}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'retries':>8}"
           f"{'viol.':>6}"]
    for phase in rec.phases.values():
        if phase.name == "setup":
            continue
        for e in ENDPOINTS:
            lat = sorted(phase.latencies.get(e, []))
            if not lat and not phase.retries[e] and not phase.violations[e]:
                continue
            rps = len(lat) / phase.seconds if phase.seconds else 0.0
            out.append(f"{phase.name:<20}{e:<9}{len(lat):>7}{rps:>8.1f}{percentile(lat, 50):>8.1f}"
                       f"{percentile(lat, 95):>8.1f}{percentile(lat, 99):>8.1f}{phase.retries[e]:>8}"
                       f"{phase.violations[e]:>6}")
    return out


def statuses_line(rec: Recorder) -> str:
    total: Counter = Counter()
    for p in rec.phases.values():
        total.update(p.statuses)
    return "  statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(total.items()))


# ---- main ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path, server_url: str, redis_url: str, pg: OwnPostgres | None,
        redis_server: OwnRedis | None) -> int:
    rec = Recorder()
    with scratch(server_url, f"cm_load_{os.getpid()}") as url:
        env = server_env(url, tmp, args.pool_size, redis_url)
        run_cli(["db", "upgrade"], env, tmp)
        timings = setup_project(url, args.items, GOLD_EVERY, redundancy=3)
        print(f"setup: {args.items} items (+{args.items // GOLD_EVERY} gold) imported in {timings['import']:.1f}s, "
              f"published in {timings['publish']:.1f}s", flush=True)
        token, project_id, batch_id = requester_token(url)
        instances = [Instance(f"instance-{k}", env, tmp, args.procs, args.threads) for k in "ab"]
        jobs = JobWorker(env, tmp)
        crowd: list[SimWorker] = []
        try:
            start = time.perf_counter()
            tokens = sign_up(instances[0].port, args.workers)
            crowd = [SimWorker(t, instances[i % 2].port, rec) for i, t in enumerate(tokens)]
            print(f"{len(crowd)} workers signed up over the API in {time.perf_counter() - start:.1f}s, half on "
                  f"each instance (ports {instances[0].port}, {instances[1].port})", flush=True)
            with Reviewer(token, project_id, batch_id, [i.port for i in instances], env, rec, jobs) as reviewer:
                rec.phase("warm-up")
                closed_loop(crowd, args.warmup)
                sql(url, "VACUUM ANALYZE", autocommit=True)
                phase = rec.phase("a:closed")
                phase.seconds = closed_loop(crowd, args.seconds)
                peak = phase.cycles / phase.seconds
                print(f"(a) closed loop: {peak:.1f} cycles/s", flush=True)
                rate = max(1.0, peak * args.open_share)
                with open_load(crowd, rate, rec, "b:open"):
                    time.sleep(args.seconds)
                b = rec.phases["b:open"]
                p95 = max(percentile(sorted(b.latencies.get(e, [])), 95) for e in ("next", "submit"))
                print(f"(b) open loop at {rate:.1f} cycles/s: p95 {p95:.1f} ms (target < {TARGET_P95_MS:g} ms: "
                      f"{'met' if p95 < TARGET_P95_MS else 'MISSED'})", flush=True)
                if not args.no_faults:
                    fault_phase(args, crowd, rate, rec, instances, pg, redis_server, jobs)
                if any(w.exhausted for w in crowd):
                    print("WARNING: the crowd ran out of work (404 from next): raise --items or lower --seconds")
            rec.phase("final")
            reviewer.approve_once()
            reviewer.payments_cycle()
            print(f"reviewer: {reviewer.approved} approved over the API; payments cycle {reviewer.cycles_ok} ok, "
                  f"{reviewer.cycles_failed} failed; job worker restarted {jobs.deaths} times")
        finally:
            for w in crowd:
                w.conn.close()
            jobs.stop()
            for i in instances:
                i.stop()
        bad, lost, lines = verify(url, rec)
    print()
    for line in table(rec):
        print(line)
    for phase in rec.phases.values():
        for note in phase.notes:
            print(f"  {phase.name}: {note}")
    print(statuses_line(rec))
    for sample in rec.samples:
        print(f"  unexpected: {sample}")
    for line in lines:
        print(line)
    http_violations = sum(sum(p.violations.values()) for p in rec.phases.values())
    violations = http_violations + bad
    print(f"  violations: {http_violations} unexpected 5xx / failed checks over HTTP, {bad} in the database")
    print(f"cycles_per_s={peak:.1f} p95_ms={p95:.1f} violations={violations} lost={lost}")
    return 1 if violations or lost else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000, help="items in the project (redundancy 3)")
    parser.add_argument("--workers", type=int, default=64, help="concurrent simulated workers (>= 2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured closed-loop seconds first")
    parser.add_argument("--open-share", type=float, default=0.5, help="open-loop rate as a share of the peak")
    parser.add_argument("--no-faults", action="store_true", help="skip phase (c)")
    parser.add_argument("--procs", type=int, default=2, help="gunicorn worker processes per instance")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--pool-size", type=int, default=5, help="SQLAlchemy pool size per process")
    parser.add_argument("--database-url", default="", help="an existing PostgreSQL server (a scratch database "
                                                           "is made on it); default: our own cluster")
    parser.add_argument("--redis-url", default="", help="an existing Redis (not stopped); default: our own")
    parser.add_argument("--pg-restart-cmd", default="", help="shell command restarting --database-url's server")
    args = parser.parse_args()
    if args.items <= 0 or args.workers < 2 or args.seconds <= 0:
        parser.error("--items and --seconds must be positive, --workers at least 2")
    print(f"load: {args.items} items, {args.workers} workers, {args.seconds:g}s per phase, 2 instances x "
          f"{args.procs} processes x {args.threads} threads; started {dt.datetime.now().isoformat('T', 'seconds')}",
          flush=True)
    t0 = time.perf_counter()
    pg = None if args.database_url else OwnPostgres()
    redis_server = None if args.redis_url else OwnRedis()
    try:
        server_url = normalize_database_url(args.database_url) if args.database_url else pg.url  # type: ignore[union-attr]
        redis_url = args.redis_url or redis_server.url  # type: ignore[union-attr]
        if pg is not None:
            print(f"own PostgreSQL on port {pg.port} ({pg.bin.parent.name}), own Redis on "
                  f"{make_url(server_url).host}:{redis_server.port if redis_server else '-'}", flush=True)
        with tempfile.TemporaryDirectory(prefix="cm_load_") as tmp_name:
            code = run(args, Path(tmp_name), server_url, redis_url, pg, redis_server)
    finally:
        if redis_server is not None:
            redis_server.close()
        if pg is not None:
            pg.close()
    print(f"total {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
