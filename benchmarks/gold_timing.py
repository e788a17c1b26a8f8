"""How long a claim takes when it serves a gold task and when it serves real work, on PostgreSQL.

Run: .venv/bin/python benchmarks/gold_timing.py [--real 20000] [--gold 2000] [--workers 100] [--tasks 40]

Gold must not stand out by timing either: a gold claim picks a gold HIT off an index from a random rank (no sort
of the pool), a real claim a slot off the free-slot index, and both are one statement on PostgreSQL. This script
builds a project (1 item per HIT, redundancy 3, gold rate 10%) in a scratch database, then has each worker claim
and submit `--tasks` tasks in process through the service layer (no HTTP), the turns alternating gold and real
so both kinds are measured under the same conditions (the real schedule is random; the mix does not change a
claim's cost). It prints the median, p90 and p99 of `next_assignment` for each kind, and their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_items import DEFAULT_PG_URL, LABEL_SCHEMA, WORDS  # noqa: E402
from next_submit import scratch_database  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--real", type=int, default=20_000)
    parser.add_argument("--gold", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()

    from alembic import command
    from sqlalchemy import text

    from market import service, work
    from market.cli import alembic_config
    from market.db import Database, utcnow
    from market.imports import import_items
    from workers.models import Role
    from workers.service import create_account

    with scratch_database(args.pg_url, "gold") as url:
        config = alembic_config(url)
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")
        database = Database.from_url(url, pool_size=2)
        with database.session_scope() as s:
            owner = create_account(s, role=Role.REQUESTER, email="gold-bench@example.com", now=utcnow())
            project = service.create_project(s, owner=owner, now=utcnow(), data={
                "title": "gold timing", "label_schema": LABEL_SCHEMA, "reward_cents": 5, "assignments_per_item": 3,
                "items_per_hit": 1, "gold_rate": Decimal("0.10")})
            lines, every = [], (args.real + args.gold) // args.gold  # gold spread through the file
            for i in range(args.real + args.gold):
                doc: dict[str, object] = {"external_id": f"i{i}", "data": {"text": WORDS[i % len(WORDS)]}}
                if i % every == 0:
                    doc["gold"] = "pos"
                lines.append(json.dumps(doc))
            import_items(s, project=project, stream=io.BytesIO(("\n".join(lines) + "\n").encode()), fmt="jsonl",
                         now=utcnow())
            service.publish_batch(s, project_id=project.id, account=owner, now=utcnow())
            workers = [create_account(s, role=Role.WORKER, username=f"gw{n}", now=utcnow())
                       for n in range(args.workers)]
            s.commit()
            gold_hits = s.execute(text("SELECT count(*) FROM hit WHERE is_gold")).scalar_one()
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        print(f"{args.real:,} real items, {gold_hits:,} gold HITs, {args.workers} workers x {args.tasks} tasks")

        turn = {"gold": False}
        work.is_gold_turn = lambda *a, **k: turn["gold"]  # alternate the kinds; the schedule's odds are not timed
        times: dict[bool, list[float]] = {True: [], False: []}
        for n in range(args.tasks):
            for worker in workers:
                turn["gold"] = (n + worker.id) % 2 == 0
                with database.session_scope() as s:
                    start = time.perf_counter()
                    task = work.next_assignment(s, worker=worker, now=utcnow(), project_id=project.id)
                    elapsed = time.perf_counter() - start
                    gold = s.execute(text("SELECT is_gold FROM assignment WHERE id = :i"), {"i": task.id}).scalar_one()
                    times[gold].append(elapsed * 1000)
                    work.submit(s, worker=worker, assignment_id=task.id, now=utcnow(),
                                answers=[{"item_id": i["id"], "answer": "pos"} for i in task.items])
        database.dispose()
    for kind, label in ((False, "real"), (True, "gold")):
        values = times[kind]
        print(f"  {label}: {len(values):5d} claims  median {statistics.median(values):6.2f} ms  "
              f"p90 {percentile(values, 0.9):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms")
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    print(f"gold_over_real_median={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
