"""Aggregation runs through the service on a real database: load the answers, aggregate, store the results; then
the quality report, its download with provenance, and the label export.

Run: .venv/bin/python benchmarks/aggregation_runs.py [--items 40000] [--backends sqlite,postgresql]

Per backend, a fresh migrated database gets one project (4 single-choice labels, 5 answers per item), `--items`
items plus 5% gold, published as one batch, and 500 workers' answers written straight into the tables (fixed
seed; the answers' values are random: this measures the machinery, not accuracy). Each step is timed once, wall
clock, in this process, through the service functions the API and the job call (`aggregation.service`,
`aggregation.report`). PostgreSQL is the one at CROWDMARKET_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/test), used only to create a scratch database (import_items.py's).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from alembic import command
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from import_items import DEFAULT_PG_URL, fresh_database  # noqa: E402

from aggregation import report  # noqa: E402
from aggregation import service as runs  # noqa: E402
from aggregation.jobs import execute_run  # noqa: E402
from base.clock import utcnow
from base.db import Database
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Answer, Assignment, AssignmentStatus, Hit, Item, Project
from market.catalogue.projects import create_project
from payments import ledger
from shell.cli import alembic_config
from shell.config import normalize_database_url
from workers import service as accounts  # noqa: E402
from workers.models import Account

SEED = 5
WORKERS = 500
PER_ITEM = 5
LABELS = ("a", "b", "c", "d")


def populate(database: Database, n_items: int):
    """A project with published items and PER_ITEM answers each from distinct workers; returns (project, owner)."""
    session = database.session()
    now = utcnow()
    owner = accounts.create_account(session, role=Role.REQUESTER, email="bench@example.com", display_name="",
                                    now=now)
    session.commit()
    schema = {"type": "single_choice", "categories": [{"key": k, "name": k} for k in LABELS]}
    project = create_project(session, owner=owner, now=now, data={
        "title": "bench", "instructions": "Pick one.", "label_schema": schema, "reward_cents": 1,
        "estimated_seconds": 4, "assignments_per_item": PER_ITEM})  # 1c / 4 s = $9.00/h: above the wage floor
    ledger.fund(session, requester_id=owner.id, cents=10**9, currency="USD", key="bench", now=now, actor_id=None)
    records = [{"external_id": f"x{i}", "data": {"i": i}} for i in range(n_items)]
    records += [{"external_id": f"g{i}", "data": {"i": i}, "gold": "a"} for i in range(n_items // 20)]
    import_items(session, project=project, fmt="jsonl", now=now,
                 stream=io.BytesIO("".join(json.dumps(r) + "\n" for r in records).encode()))
    publish_batch(session, project_id=project.id, account=owner, now=now)
    workers = [Account(role=Role.WORKER, username=f"bench-{i}") for i in range(WORKERS)]
    session.add_all(workers)
    session.commit()
    rows = session.execute(select(Item.id, Item.hit_id, Hit.batch_id).join(Hit, Hit.id == Item.hit_id)
                           .where(Item.project_id == project.id)).all()
    rng = np.random.default_rng(SEED)
    picks = [(item_id, hit_id, batch_id, workers[w].id) for item_id, hit_id, batch_id in rows
             for w in rng.choice(WORKERS, PER_ITEM, replace=False)]
    ids = session.scalars(insert(Assignment).returning(Assignment.id), [
        {"hit_id": hit_id, "batch_id": batch_id, "project_id": project.id, "worker_id": worker_id,
         "status": AssignmentStatus.SUBMITTED, "guideline_version": 1, "leased_at": now, "expires_at": now,
         "submitted_at": now} for _, hit_id, batch_id, worker_id in picks]).all()
    values = rng.integers(0, len(LABELS), len(picks))
    session.execute(insert(Answer), [
        {"assignment_id": a, "item_id": item_id, "worker_id": worker_id, "project_id": project.id,
         "value": LABELS[v], "guideline_version": 1, "submitted_at": now, "duration_ms": 3000}
        for a, (item_id, _, _, worker_id), v in zip(ids, picks, values.tolist(), strict=True)])
    session.commit()
    session.close()
    return project.id, owner.id, len(picks)


def timed(step):
    start = time.perf_counter()
    value = step()
    return time.perf_counter() - start, value


def bench(backend: str, n_items: int) -> list[tuple[str, float, str]]:
    pg_url = normalize_database_url(os.environ.get("CROWDMARKET_DATABASE_URL") or DEFAULT_PG_URL)
    with tempfile.TemporaryDirectory() as tmp, fresh_database(backend, pg_url, Path(tmp), "runs") as url:
        cfg = alembic_config(url)
        cfg.attributes["configure_logger"] = False
        command.upgrade(cfg, "head")
        database = Database.from_url(url, pool_size=2)
        try:
            setup, (project_id, owner_id, n_answers) = timed(lambda: populate(database, n_items))
            print(f"{backend}: {n_answers:,} answers on {n_items + n_items // 20:,} items set up in {setup:.0f} s",
                  flush=True)
            session = database.session()
            project, owner = session.get(Project, project_id), session.get(Account, owner_id)
            rows = []
            for method in ("mv", "ds"):
                run, _ = runs.request_run(session, project=project, account=owner, method=method, params={},
                                          idempotency_key=None, now=utcnow())
                seconds, _ = timed(lambda run=run: execute_run(session, run.id, clock=utcnow))
                session.refresh(run)
                rows.append((f"run {method} (load, aggregate, store)", seconds, f"{run.status}, "
                             f"{run.iterations} iterations"))
            seconds, _ = timed(lambda: report.build(session, project=project, run=None, now=utcnow()))
            rows.append(("quality report (JSON)", seconds, ""))
            seconds, size = timed(lambda: sum(len(c) for c in report.download(session, project=project, run=None,
                                                                               now=utcnow())))
            rows.append(("report download with provenance", seconds, f"{size / 2**20:.1f} MiB"))
            seconds, size = timed(lambda: sum(len(c) for c in runs.export_lines(session, run=run, fmt="csv")))
            rows.append(("label export (CSV)", seconds, f"{size / 2**20:.1f} MiB"))
            session.close()
            return rows
        finally:
            database.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    results = {b: bench(b, args.items) for b in args.backends.split(",")}
    print("\n| step | " + " | ".join(results) + " |")
    print("| --- | " + " | ".join("---:" for _ in results) + " |")
    for i, (step, _, _) in enumerate(next(iter(results.values()))):
        cells = [f"{rows[i][1]:.2f} s" + (f" ({rows[i][2]})" if rows[i][2] else "") for rows in results.values()]
        print(f"| {step} | " + " | ".join(cells) + " |")
    for backend, rows in results.items():
        print(f"BENCH backend={backend} " + " ".join(f"{step.split(' (')[0].replace(' ', '_')}={s:.3f}"
                                                    for step, s, _ in rows))


if __name__ == "__main__":
    main()
