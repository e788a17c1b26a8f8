"""Benchmark `crowdmarket items import`: items/s and the child's peak RSS, on SQLite and PostgreSQL.

Run: .venv/bin/python benchmarks/import_items.py [--sizes 100000,1000000] [--backends sqlite,postgresql]

Each backend x size gets a fresh, migrated database; the import runs as the real CLI in a child process
(timed with perf_counter, peak RSS from os.wait4), then the item count is checked. The smallest size is
re-imported once to check idempotency (0 created). The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from base.db import scratch_database
from shell.config import normalize_database_url

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("crowdmarket"))
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SEED = 20260105
GOLD_SHARE = 0.05
EMAIL = "bench@example.com"
LABEL_SCHEMA = {"type": "single_choice",
                "categories": [{"key": "pos", "name": "Positive"}, {"key": "neg", "name": "Negative"}]}
WORDS = ("the delivery was quick and the product works as described although the box arrived slightly "
         "damaged support answered fast price fair quality poor great would buy again never terrible "
         "excellent battery screen sound broke after week recommend friends").split()
SHORT = {"sqlite": "sqlite", "postgresql": "pg"}


@dataclass
class Run:
    backend: str
    items: int
    seconds: float
    rss_kib: int
    created: int

    @property
    def ips(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def label(n: int) -> str:
    """100000 -> '100k', 1000000 -> '1m'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def write_items(path: Path, n: int, seed: int = SEED) -> int:
    """Write n JSONL items line by line (bounded memory); return the number of gold lines."""
    rng = random.Random(seed)
    gold = 0
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            words: list[str] = []
            while sum(len(w) + 1 for w in words) < 80:
                words.append(rng.choice(WORDS))
            doc: dict[str, object] = {"external_id": f"it-{i}", "data": {"text": " ".join(words), "n": i}}
            if rng.random() < GOLD_SHARE:
                doc["gold"] = rng.choice(("pos", "neg"))
                doc["explanation"] = "benchmark gold item"
                gold += 1
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
    return gold


def cli_env(url: str, tmp: Path) -> dict[str, str]:
    return {**os.environ, "CROWDMARKET_DATABASE_URL": url, "CROWDMARKET_INSTANCE_PATH": str(tmp / "instance"),
            "CROWDMARKET_LOG_LEVEL": "WARNING"}


class CliError(RuntimeError):
    pass


def run_cli(args: list[str], env: dict[str, str], tmp: Path) -> tuple[float, int, str]:
    """Run the CLI as a child; return (wall seconds, child's peak RSS in KiB, stdout). Raises on failure."""
    command = [CLI, *args]
    with (tmp / "out.txt").open("w+") as out, (tmp / "err.txt").open("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise CliError(f"crowdmarket {' '.join(args[:2])} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss, stdout  # ru_maxrss is KiB on Linux


@contextmanager
def fresh_database(backend: str, pg_url: str, tmp: Path, tag: str) -> Iterator[str]:
    """Yield the URL of a new, empty database; remove it afterwards."""
    if backend == "sqlite":
        path = tmp / f"bench_{tag}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with scratch_database(pg_url, f"cm_bench_import_{os.getpid()}") as url:
        yield url


def prepare(url: str, env: dict[str, str], tmp: Path) -> int:
    """Migrate, create the requester (CLI) and the project (service layer); return the project id."""
    from base.clock import utcnow
    from base.db import Database
    from market.catalogue.projects import create_project
    from workers.service import find_account

    run_cli(["db", "upgrade"], env, tmp)
    run_cli(["users", "create", "--role", "requester", "--email", EMAIL], env, tmp)
    database = Database.from_url(url, pool_size=1)
    try:
        with database.unit_of_work() as session:
            owner = find_account(session, email=EMAIL)
            project = create_project(session, owner=owner, now=utcnow(), data={
                "title": "Import benchmark", "label_schema": LABEL_SCHEMA, "reward_cents": 5})
            return project.id
    finally:
        database.engine.dispose()  # no idle connection may hold the SQLite file or the PG database


def count_items(url: str, project_id: int) -> tuple[int, int]:
    """(items, gold items) of the project."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT count(*), coalesce(sum(CASE WHEN is_gold THEN 1 ELSE 0 END), 0) "
                                    "FROM item WHERE project_id = :p"), {"p": project_id}).one()
            return int(row[0]), int(row[1])
    finally:
        engine.dispose()


def created_of(stdout: str) -> int:
    match = re.search(r"(\d+) created", stdout)
    if match is None:
        raise RuntimeError(f"unexpected import output: {stdout!r}")
    return int(match.group(1))


def import_file(project_id: int, path: Path, env: dict[str, str], tmp: Path) -> tuple[float, int, str]:
    return run_cli(["items", "import", str(project_id), str(path), "--quiet"], env, tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated item counts")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    env_url = os.environ.get("CROWDMARKET_DATABASE_URL", "")
    parser.add_argument("--pg-url", default=env_url if env_url.startswith("postgres") else DEFAULT_PG_URL,
                        help="PostgreSQL server to create the scratch database on")
    args = parser.parse_args()
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := set(backends) - set(SHORT):
        parser.error(f"unknown backend(s) {sorted(unknown)}")
    if not sizes or min(sizes) <= 0:
        parser.error("sizes must be positive")
    pg_url = normalize_database_url(args.pg_url)

    t0 = time.perf_counter()
    runs: list[Run] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cm_bench_import_") as tmp_name:
        tmp = Path(tmp_name)
        files: dict[int, tuple[Path, int]] = {}
        for n in sizes:
            start = time.perf_counter()
            path = tmp / f"items_{label(n)}.jsonl"
            files[n] = (path, write_items(path, n))
            print(f"generated {path.name}: {n} items, {files[n][1]} gold, "
                  f"{path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f}s", flush=True)
        for backend in backends:
            for n in sizes:
                path, gold = files[n]
                tag = f"{SHORT[backend]}_{label(n)}"
                with fresh_database(backend, pg_url, tmp, tag) as url:
                    env = cli_env(url, tmp)
                    project_id = prepare(url, env, tmp)
                    seconds, rss, stdout = import_file(project_id, path, env, tmp)
                    run = Run(backend, n, seconds, rss, created_of(stdout))
                    runs.append(run)
                    print(f"{tag}: {run.ips:,.0f} items/s, {rss / 1024:.0f} MiB peak RSS", flush=True)
                    counted, counted_gold = count_items(url, project_id)
                    if (counted, counted_gold, run.created) != (n, gold, n):
                        problems.append(f"{tag}: expected {n} items ({gold} gold) created, CLI said "
                                        f"{run.created}, database has {counted} ({counted_gold} gold)")
                    if n == sizes[0]:  # idempotency: the same file again adds nothing
                        seconds, rss, stdout = import_file(project_id, path, env, tmp)
                        again, (counted, _) = created_of(stdout), count_items(url, project_id)
                        print(f"{tag} re-import: {again} created, {counted} in database, {seconds:.1f}s, "
                              f"{rss / 1024:.0f} MiB peak RSS", flush=True)
                        if again != 0 or counted != n:
                            problems.append(f"{tag} re-import: {again} created, database has {counted} (want {n})")

    print()
    print(f"{'backend':<11}{'items':>10}{'seconds':>10}{'items/s':>10}{'peak RSS MiB':>14}")
    for r in runs:
        print(f"{r.backend:<11}{r.items:>10}{r.seconds:>10.1f}{r.ips:>10,.0f}{r.rss_kib / 1024:>14.1f}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    for p in problems:
        print(f"VIOLATION: {p}")
    metrics = [f"{SHORT[r.backend]}_{label(r.items)}_ips={r.ips:.0f}" for r in runs]
    metrics.append(f"max_rss_mib={max((r.rss_kib for r in runs), default=0) / 1024:.1f}")
    print("import " + " ".join(metrics))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
