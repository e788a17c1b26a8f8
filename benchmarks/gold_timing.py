"""How long `next` and `submit` take when they serve or take a gold task and when real work, on PostgreSQL.

Run: .venv/bin/python benchmarks/gold_timing.py [--real 20000] [--gold 4000] [--workers 100] [--tasks 40]

Gold must not stand out by timing: a gold claim takes a slot off its pool's queue with the same statements a
real claim takes one off its batch's, and a submit runs the same statement for both, the worker being judged only
after the response (market/quality/evaluation.py). This script builds a project (2 items per HIT, redundancy 3, gold
rate 10%) in a scratch database and has each worker claim and submit `--tasks` tasks through the app in process
(Flask's test client: the WSGI app without sockets), the turns alternating gold and real so both kinds are
measured under the same conditions (the real schedule is random; the mix does not change an endpoint's cost).
A response is timed until the app hands it over; closing it then runs what the app does after the response
(judging the worker), outside the timed span, as a server does once it has sent the response. It prints the
median, p90 and p99 of each endpoint for each kind and the gold/real ratio of the medians.
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
sys.path.insert(0, str(ROOT))  # before this folder (Python puts it first): its aggregation.py is not the package

from import_items import DEFAULT_PG_URL, LABEL_SCHEMA, WORDS  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call):  # noqa: ANN001, ANN201 - a response factory in, (response, ms) out
    start = time.perf_counter()
    response = call()
    elapsed = (time.perf_counter() - start) * 1000
    data = response.get_json()
    response.close()  # what the app runs after the response (judging the worker), outside the timed span
    return data, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--real", type=int, default=20_000)
    parser.add_argument("--gold", type=int, default=4_000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()

    from alembic import command
    from sqlalchemy import text

    from base.clock import utcnow
    from base.db import Database, scratch_database
    from base.identity import Role
    from market.catalogue.batches import publish_batch
    from market.catalogue.imports import import_items
    from market.catalogue.projects import create_project
    from market.engine import next_task
    from payments import ledger
    from shell.app import create_app
    from shell.cli import alembic_config
    from workers.service import create_account, issue_token

    with scratch_database(args.pg_url, "cm_bench_gold_timing") as url:
        config = alembic_config(url)
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")
        database = Database.from_url(url, pool_size=2)
        with database.unit_of_work() as s:
            owner = create_account(s, role=Role.REQUESTER, email="gold-bench@example.com", now=utcnow())
            project = create_project(s, owner=owner, now=utcnow(), data={
                "title": "gold timing", "label_schema": LABEL_SCHEMA, "reward_cents": 5, "assignments_per_item": 3,
                "items_per_hit": 2, "gold_rate": Decimal("0.10"), "estimated_seconds": 20})  # $9.00/h
            ledger.fund(s, requester_id=owner.id, cents=10**9, currency="USD", key="bench", now=utcnow(),
                        actor_id=None)
            lines, every = [], (args.real + args.gold) // args.gold  # gold spread through the file
            for i in range(args.real + args.gold):
                doc: dict[str, object] = {"external_id": f"i{i}", "data": {"text": WORDS[i % len(WORDS)]}}
                if i % every == 0:
                    doc["gold"] = "pos"
                lines.append(json.dumps(doc))
            import_items(s, project=project, stream=io.BytesIO(("\n".join(lines) + "\n").encode()), fmt="jsonl",
                         now=utcnow())
            publish_batch(s, project_id=project.id, account=owner, now=utcnow())
            workers = []
            for n in range(args.workers):
                worker = create_account(s, role=Role.WORKER, username=f"gw{n}", now=utcnow())
                workers.append((worker.id, issue_token(s, account=worker, now=utcnow())[1]))
            s.flush()
            gold_hits = s.execute(text("SELECT count(*) FROM hit WHERE is_gold")).scalar_one()
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        database.dispose()
        print(f"{args.real:,} real items, {gold_hits:,} gold HITs of 2, {args.workers} workers x {args.tasks} tasks")

        app = create_app({"DATABASE_URL": url, "SECRET_KEY": "benchmark " * 4, "REDIS_URL": None})
        client = app.test_client()
        turn = {"gold": False}
        next_task.is_gold_turn = lambda *a, **k: turn["gold"]  # alternate the kinds; the schedule's odds are not timed
        times: dict[tuple[str, bool], list[float]] = {(e, g): [] for e in ("next", "submit") for g in (True, False)}
        database = app.extensions["crowdmarket.db"]

        def one_round(n: int, times: dict[tuple[str, bool], list[float]]) -> None:
            for worker_id, token in workers:
                turn["gold"] = (n + worker_id) % 2 == 0
                headers = {"Authorization": f"Bearer {token}"}
                task, ms = timed(lambda h=headers: client.post("/api/v1/work/next", headers=h))
                with database.session_scope() as s:
                    gold = s.execute(text("SELECT is_gold FROM assignment WHERE id = :i"),
                                     {"i": task["assignment_id"]}).scalar_one()
                times[("next", gold)].append(ms)
                body = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]}
                _, ms = timed(lambda h=headers, b=body, t=task: client.post(
                    f"/api/v1/assignments/{t['assignment_id']}/submit", json=b, headers=h))
                times[("submit", gold)].append(ms)

        # One unmeasured round, then statistics and fresh connections: plans made on the empty assignment table
        # would scan it (base/db.py recycles the hot pool's connections for that reason, every few minutes).
        one_round(0, {key: [] for key in times})
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        database.dispose()
        for n in range(1, args.tasks + 1):
            one_round(n, times)
        app.extensions["crowdmarket.db"].dispose()
    for endpoint in ("next", "submit"):
        for gold, label in ((False, "real"), (True, "gold")):
            values = times[(endpoint, gold)]
            print(f"  {endpoint:6s} {label}: {len(values):5d}  median {statistics.median(values):6.2f} ms  "
                  f"p90 {percentile(values, 0.9):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms")
    for endpoint in ("next", "submit"):
        ratio = statistics.median(times[(endpoint, True)]) / statistics.median(times[(endpoint, False)])
        print(f"{endpoint}_gold_over_real_median={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
