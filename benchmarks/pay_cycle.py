"""Benchmark the money paths on PostgreSQL: bulk approval, the top-up job and a payout batch, each against a bare
SQL baseline doing the same row writes in the same run; then check the books.

Run: .venv/bin/python benchmarks/pay_cycle.py [--assignments 100000] [--workers 10000]

Setup (not timed): a fresh migrated database on the PostgreSQL at CROWDMARKET_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/test, used only to create a scratch database), a funded requester, a
project (reward 10 cents, 1 item per HIT, 1 assignment per item, no gold, a 40 s estimate: $9.00/h, above the
floor) with `--assignments` items imported and published through the services (so the batch's hold is placed as
in production), `--workers` workers, and one submitted assignment per HIT written straight into the table, round
robin over the workers, with server-measured times around 90 s (so the batch pays $4.00/h, below the $15.00/h
target: every approved assignment earns a top-up, more than the hold's headroom, so the hold is extended).

Each of the three steps runs twice on the same state, first as the baseline, then through the service:

- the baseline is the least SQL that makes the same row writes (the same rows in the same tables: assignments
  updated, transactions, entries and pay rows inserted, balances and the hold updated; payout lines, their
  transactions and entries), each write one statement over arrays (`unnest`: the fastest way to send PostgreSQL
  many rows), from the same process over the same connection settings, without any of the service's checks;
  it runs in a transaction that is timed up to its last write and rolled back (then VACUUM), so the service
  meets the same rows;
- the service is the function the API, the job and the CLI call (`payments.review.approve.approve` for a batch,
  `payments.wage.topups.pay_top_ups`, `payments.books.payouts.create_batch` + `approve`), in a unit of work,
  timed to its commit.

The last line is machine-readable (target: each ratio <= 3):

    approve_ratio=X topup_ratio=X payout_ratio=X balanced=0|1
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alembic import command
from import_items import DEFAULT_PG_URL, fresh_database
from sqlalchemy import text

from base.clock import utcnow
from base.db import Database
from base.identity import Role
from base.money import top_up_cents
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.projects import create_project
from payments import ledger
from payments.books import payouts
from payments.review.approve import approve
from payments.wage.topups import estimated_seconds, pay_top_ups
from shell.app import subscribe
from shell.cli import alembic_config
from shell.config import normalize_database_url
from workers.models import Account
from workers.service import create_account

REWARD, TARGET, SECONDS = 10, 1500, 90
LABELS = {"type": "single_choice", "categories": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}]}


def setup(database: Database, n_assignments: int, n_workers: int, now: dt.datetime) -> tuple[int, int, int]:
    """Returns (requester id, batch id, ops id)."""
    with database.unit_of_work() as s:
        requester = create_account(s, role=Role.REQUESTER, email="bench-pay@example.com", now=now)
        ops = create_account(s, role=Role.OPS, email="bench-ops@example.com", now=now)
        s.flush()
        ledger.fund(s, requester_id=requester.id, cents=100 * n_assignments * 10, currency="USD", key="bench",
                    now=now, actor_id=ops.id)
        project = create_project(s, owner=requester, now=now, data={
            "title": "Payments benchmark", "instructions": "Pick one.", "label_schema": LABELS,
            "reward_cents": REWARD, "items_per_hit": 1, "assignments_per_item": 1, "gold_rate": 0,
            "estimated_seconds": 40, "target_wage_cents_per_hour": TARGET})
        lines = "".join(json.dumps({"external_id": f"i{n}", "data": {"text": f"item {n}"}}) + "\n"
                        for n in range(n_assignments))
        import_items(s, project=project, stream=io.BytesIO(lines.encode()), fmt="jsonl", now=now)
        batch, _ = publish_batch(s, project_id=project.id, account=requester, now=now)
        requester_id, batch_id, ops_id = requester.id, batch.id, ops.id
    with database.engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO account (role, username, username_key, display_name, is_active, created_at)
            SELECT 'worker', 'bw' || g, 'bw' || g, '', true, :now FROM generate_series(1, :n) AS g"""),
            {"n": n_workers, "now": now})
        conn.execute(text("""
            WITH w AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM account WHERE username LIKE 'bw%%'),
                 h AS (SELECT id, project_id, row_number() OVER (ORDER BY id) - 1 AS k FROM hit WHERE batch_id = :b)
            INSERT INTO assignment (hit_id, batch_id, project_id, worker_id, is_gold, status, guideline_version,
                                    leased_at, expires_at, submitted_at, duration_ms)
            SELECT h.id, :b, h.project_id, w.id, false, 'submitted', 1, :leased, :expires, :now,
                   :ms + (h.k * 7919) % 20000 - 10000
            FROM h JOIN w ON w.k = h.k % :n"""),
            {"b": batch_id, "n": n_workers, "now": now, "leased": now - dt.timedelta(seconds=SECONDS),
             "expires": now + dt.timedelta(seconds=600), "ms": SECONDS * 1000})
        conn.execute(text("ANALYZE"))
    return requester_id, batch_id, ops_id


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def baseline(database: Database, writes) -> float:
    """Time `writes(conn)` in a transaction that is then rolled back, and vacuum the dead rows away."""
    with database.engine.connect() as conn:
        tx = conn.begin()
        start = time.perf_counter()
        writes(conn)
        elapsed = time.perf_counter() - start
        tx.rollback()
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return elapsed


def _accounts(conn, codes: dict[str, tuple[str, int | None]]) -> dict[str, int]:
    """Create the ledger accounts the baseline needs as plainly as it can (the service does the same)."""
    conn.execute(text("""
        INSERT INTO ledger_account (code, kind, owner_id, currency, balance, nonnegative, created_at)
        SELECT c, k, o, 'USD', 0, true, now()
        FROM unnest(CAST(:c AS text[]), CAST(:k AS text[]), CAST(:o AS bigint[])) AS x(c, k, o)
        ORDER BY c ON CONFLICT (code) DO NOTHING"""),
        {"c": list(codes), "k": [k for k, _ in codes.values()], "o": [o for _, o in codes.values()]})
    return {c: i for c, i in conn.execute(text("SELECT code, id FROM ledger_account WHERE code = ANY(:c)"),
                                          {"c": list(codes)})}


def _post(conn, rows: list[dict], legs: list[list[tuple[int, int]]]) -> list[int]:
    """Insert transactions and their entries and move the balances: three statements over arrays, the fastest
    way PostgreSQL takes many rows (psycopg re-parses the pages of an executemany)."""
    cols = ("key", "kind", "requester", "worker", "project", "batch", "assignment", "hold", "reason")
    by_key = dict((k, t) for t, k in conn.execute(text("""
        INSERT INTO ledger_transaction (idempotency_key, kind, currency, requester_id, worker_id, project_id,
                                        batch_id, assignment_id, hold_id, reason, created_at)
        SELECT k, kind, 'USD', r, w, p, b, a, h, reason, now()
        FROM unnest(CAST(:key AS text[]), CAST(:kind AS text[]), CAST(:requester AS bigint[]),
                    CAST(:worker AS bigint[]), CAST(:project AS bigint[]), CAST(:batch AS bigint[]),
                    CAST(:assignment AS bigint[]), CAST(:hold AS bigint[]), CAST(:reason AS text[]))
             AS x(k, kind, r, w, p, b, a, h, reason)
        RETURNING id, idempotency_key"""), {c: [r[c] for r in rows] for c in cols}))
    ids = [by_key[r["key"]] for r in rows]
    entries = [(t, a, c) for t, ls in zip(ids, legs, strict=True) for a, c in ls]
    conn.execute(text("""
        INSERT INTO ledger_entry (transaction_id, account_id, amount)
        SELECT * FROM unnest(CAST(:t AS bigint[]), CAST(:a AS bigint[]), CAST(:c AS bigint[]))"""),
        {"t": [e[0] for e in entries], "a": [e[1] for e in entries], "c": [e[2] for e in entries]})
    deltas: defaultdict[int, int] = defaultdict(int)
    for ls in legs:
        for a, c in ls:
            deltas[a] += c
    conn.execute(text("""
        UPDATE ledger_account AS a SET balance = a.balance + x.d
        FROM unnest(CAST(:a AS bigint[]), CAST(:d AS bigint[])) AS x(id, d) WHERE a.id = x.id"""),
        {"a": list(deltas), "d": list(deltas.values())})
    return ids


def approve_baseline(batch_id: int, requester: int):
    def writes(conn) -> None:
        rows = conn.execute(text("""
            UPDATE assignment SET status = 'approved', reviewed_at = now(), reviewed_by_id = :r
            WHERE batch_id = :b AND status = 'submitted' RETURNING id, worker_id, project_id, duration_ms"""),
            {"b": batch_id, "r": requester}).all()
        hold = conn.execute(text("SELECT id FROM hold WHERE batch_id = :b"), {"b": batch_id}).scalar()
        codes = {f"requester:{requester}:escrow:USD": ("requester_escrow", requester)}
        codes |= {f"worker:{w}:payable:USD": ("worker_payable", w) for _, w, _, _ in rows}
        ids = _accounts(conn, codes)
        escrow = ids[f"requester:{requester}:escrow:USD"]
        txns = _post(conn, [{"key": f"base:reward:{a}", "kind": "reward", "requester": requester, "worker": w,
                      "project": p, "batch": batch_id, "assignment": a, "hold": hold, "reason": "Reward"}
                     for a, w, p, _ in rows],
              [[(escrow, -REWARD), (ids[f"worker:{w}:payable:USD"], REWARD)] for _, w, _, _ in rows])
        txns = dict(zip((a for a, _, _, _ in rows), txns, strict=True))
        conn.execute(text("""
            INSERT INTO assignment_pay (assignment_id, worker_id, batch_id, project_id, currency, reward_cents,
                                        reward_transaction_id, duration_ms, approved_at)
            SELECT a, w, :b, p, 'USD', :c, t, ms, now()
            FROM unnest(CAST(:a AS bigint[]), CAST(:w AS bigint[]), CAST(:p AS bigint[]), CAST(:t AS bigint[]),
                        CAST(:ms AS int[])) AS x(a, w, p, t, ms)"""),
            {"b": batch_id, "c": REWARD, "a": [r[0] for r in rows], "w": [r[1] for r in rows],
             "p": [r[2] for r in rows], "t": [txns[r[0]] for r in rows], "ms": [r[3] for r in rows]})
        conn.execute(text("UPDATE hold SET posted = posted + :c WHERE id = :h"),
                     {"c": REWARD * len(rows), "h": hold})
    return writes


def topup_baseline(batch_id: int, requester: int, cents_each: int):
    def writes(conn) -> None:
        per_worker = conn.execute(text("""
            SELECT worker_id, project_id, array_agg(assignment_id) FROM assignment_pay
            WHERE batch_id = :b AND top_up_transaction_id IS NULL GROUP BY worker_id, project_id
            ORDER BY worker_id"""), {"b": batch_id}).all()
        hold, rest = conn.execute(text("SELECT id, held - posted - released FROM hold WHERE batch_id = :b"),
                                  {"b": batch_id}).one()
        codes = {f"requester:{requester}:escrow:USD": ("requester_escrow", requester),
                 f"requester:{requester}:available:USD": ("requester_available", requester)}
        codes |= {f"worker:{w}:payable:USD": ("worker_payable", w) for w, _, _ in per_worker}
        ids = _accounts(conn, codes)
        escrow = ids[f"requester:{requester}:escrow:USD"]
        total = cents_each * sum(len(a) for _, _, a in per_worker)
        if total > rest:  # the hold is short: extend it from available first, as the service does
            _post(conn, [{"key": f"base:hold:{batch_id}:extend", "kind": "hold", "requester": requester,
                          "worker": None, "project": None, "batch": batch_id, "assignment": None, "hold": hold,
                          "reason": ""}],
                  [[(ids[f"requester:{requester}:available:USD"], rest - total), (escrow, total - rest)]])
            conn.execute(text("UPDATE hold SET held = held + :c WHERE id = :h"), {"c": total - rest, "h": hold})
        txns = _post(conn, [{"key": f"base:topup:{batch_id}:{w}", "kind": "bonus", "requester": requester,
                             "worker": w, "project": p, "batch": batch_id, "assignment": None, "hold": hold,
                             "reason": "Fair-wage top-up"} for w, p, _ in per_worker],
                     [[(escrow, -cents_each * len(a)), (ids[f"worker:{w}:payable:USD"], cents_each * len(a))]
                      for w, _, a in per_worker])
        pairs = [(a, t) for t, (_, _, aids) in zip(txns, per_worker, strict=True) for a in aids]
        conn.execute(text("""
            UPDATE assignment_pay AS p SET top_up_cents = :c, top_up_transaction_id = x.t
            FROM unnest(CAST(:a AS bigint[]), CAST(:t AS bigint[])) AS x(a, t) WHERE p.assignment_id = x.a"""),
            {"c": cents_each, "a": [a for a, _ in pairs], "t": [t for _, t in pairs]})
        conn.execute(text("UPDATE hold SET posted = posted + :c WHERE id = :h"), {"c": total, "h": hold})
    return writes


def payout_baseline(ops: int):
    def writes(conn) -> None:
        batch = conn.execute(text("""
            INSERT INTO payout_batch (currency, period_end, minimum_cents, provider, status, created_by_id,
                                      created_at, approved_by_id, approved_at)
            VALUES ('USD', now(), 100, 'manual', 'approved', :o, now(), :o, now()) RETURNING id"""),
            {"o": ops}).scalar()
        due = conn.execute(text("""
            SELECT owner_id, balance, id FROM ledger_account WHERE kind = 'worker_payable' AND balance >= 100
            ORDER BY owner_id""")).all()
        lines = [r[0] for r in conn.execute(text("""
            INSERT INTO payout_line (payout_batch_id, worker_id, currency, amount_cents, status)
            SELECT :b, w, 'USD', c, 'pending' FROM unnest(CAST(:w AS int[]), CAST(:c AS bigint[])) AS t(w, c)
            ORDER BY w RETURNING id"""), {"b": batch, "w": [w for w, _, _ in due], "c": [c for _, c, _ in due]})]
        ids = _accounts(conn, {f"worker:{w}:paid_out:USD": ("worker_paid_out", w) for w, _, _ in due})
        txns = _post(conn, [{"key": f"base:payout:{line}", "kind": "payout", "requester": None, "worker": w,
                             "project": None, "batch": None, "assignment": None, "hold": None, "reason": "Payout"}
                            for line, (w, _, _) in zip(lines, due, strict=True)],
                     [[(acct, -c), (ids[f"worker:{w}:paid_out:USD"], c)] for w, c, acct in due])
        conn.execute(text("""
            UPDATE payout_line AS l SET status = 'approved', transaction_id = x.t
            FROM unnest(CAST(:l AS bigint[]), CAST(:t AS bigint[])) AS x(l, t) WHERE l.id = x.l"""),
            {"l": lines, "t": txns})
    return writes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignments", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=10_000)
    args = parser.parse_args()
    pg = normalize_database_url(os.environ.get("CROWDMARKET_DATABASE_URL") or DEFAULT_PG_URL)
    with tempfile.TemporaryDirectory() as tmp, fresh_database("postgresql", pg, Path(tmp), "payments") as url:
        cfg = alembic_config(url)
        cfg.attributes["configure_logger"] = False
        command.upgrade(cfg, "head")
        database = Database.from_url(url, pool_size=2)
        subscribe(database.events)
        now = utcnow()
        print(f"setup: {args.assignments:,} submitted assignments of one batch by {args.workers:,} workers ...",
              flush=True)
        requester, batch_id, ops = setup(database, args.assignments, args.workers, now)
        later = now + dt.timedelta(hours=1)

        def service(fn) -> float:
            def run() -> None:
                with database.unit_of_work() as s:
                    fn(s)
            return timed(run)

        results = {}
        base = baseline(database, approve_baseline(batch_id, requester))
        ours = service(lambda s: approve(s, actor=s.get(Account, requester), now=later, batch_id=batch_id))
        results["approve"] = (base, ours)
        with database.session_scope() as s:
            each = top_up_cents(reward_cents=REWARD, target_cents_per_hour=TARGET,
                                seconds=estimated_seconds(s, batch_id))
        base = baseline(database, topup_baseline(batch_id, requester, each))
        ours = service(lambda s: pay_top_ups(s, now=later))
        results["topup"] = (base, ours)
        base = baseline(database, payout_baseline(ops))

        def payout(s) -> None:
            batch, _ = payouts.create_batch(s, actor_id=ops, currency="USD", period_end=later, minimum_cents=100,
                                            now=later, key="bench")
            payouts.approve(s, batch_id=batch.id, actor_id=ops, now=later)
        ours = service(payout)
        results["payout"] = (base, ours)
        with database.session_scope() as s:
            problems = ledger.check_books(s)
            counts = s.execute(text("""
                SELECT (SELECT count(*) FROM assignment WHERE status = 'approved'),
                       (SELECT count(*) FROM assignment_pay WHERE top_up_cents > 0),
                       (SELECT count(*) FROM payout_line WHERE status = 'approved'),
                       (SELECT max(top_up_cents) FROM assignment_pay)""")).one()
        database.engine.dispose()
    print(f"approved {counts[0]:,}, topped up {counts[1]:,} (max {counts[3]} cents each), "
          f"paid out {counts[2]:,} workers")
    print(f"{'step':<10}{'baseline s':>12}{'service s':>12}{'ratio':>8}")
    ratios = {}
    for step, (base, ours) in results.items():
        ratios[step] = ours / base if base else float("inf")
        print(f"{step:<10}{base:>12.2f}{ours:>12.2f}{ratios[step]:>8.2f}")
    if problems:
        print("books:", *problems[:10], sep="\n  ")
    print(f"approve_ratio={ratios['approve']:.2f} topup_ratio={ratios['topup']:.2f} "
          f"payout_ratio={ratios['payout']:.2f} balanced={0 if problems else 1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
