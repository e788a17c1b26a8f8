"""Benchmark the platforms' sync: a burst's approvals mirrored to MTurk through `platforms.service.sync`, against
a bare boto3 client making the same HTTP calls.

Run: .venv/bin/python benchmarks/platform_sync.py [--hits 2000] [--database-url URL]

The database is embedded SQLite in a temporary directory; `--database-url postgresql://…` names a PostgreSQL
server on which a scratch database is created and dropped (import_items.py's). MTurk is the tests' fake endpoint
(tests/platforms/fake_mturk.py: MTurk's JSON 1.1 protocol on 127.0.0.1), reached by real boto3 with dummy
credentials; nothing leaves the machine.

Setup (not timed): a funded requester, a project (reward 10 cents for an estimated 40 s: $9.00/h, above the floor;
1 item per HIT, 1 answer per item, no gold) with `--hits` items published as one batch; a burst of all its HITs to
MTurk (`platforms.burst.create` with MTurk's fees), published with `platforms.service.publish`; every HIT then
accepted on the fake by its own worker id, arrived on our page (`platforms.arrivals.arrive`), answered through the
engine's submit 60 s later and submitted on the fake; one sync as the scheduled job would run it before the
review (it records the submissions and, every place being done, expires the HITs and closes the burst); then the
requester approves the burst's batch (`payments.review.approve.approve`).

Timed:
- the sync that mirrors the approvals: one ApproveAssignment per submission, the ListReviewableHITs and
  ListAssignmentsForHIT pages, our checks and bookkeeping per submission and the job log (a PlatformCall row per
  call, each in a transaction of its own);
- a second sync with nothing left to do (the same listing and checks, no approval);
- the baseline: the fake's assignments put back to Submitted, a fresh bare boto3 client makes the same calls (the
  same listing pages, then ApproveAssignment for each submitted assignment) with no database, call log or checks.
The HTTP requests the fake receives during each are counted, and the baseline's must match the first sync's.

The last line is machine-readable (target: ratio <= 3, our bookkeeping at most twice the bare calls' time):

    sync_per_s=X idle_s=X ratio=X requests_per_submission=X
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
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

# boto3's standard chain reads these; the fake checks no signature.
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(name, None)

import boto3
from alembic import command
from botocore.config import Config
from import_items import fresh_database
from sqlalchemy import func, select

from base.clock import utcnow
from base.db import Database
from base.identity import Caller, Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Assignment, AssignmentStatus
from market.catalogue.projects import create_project
from market.engine.submit import submit
from payments import ledger
from payments.review.approve import approve
from platforms import arrivals, mturk, service
from platforms import burst as bursts
from platforms.base import Arrival
from platforms.models import PlatformBatch, PlatformCall, PlatformSubmission
from qualification.gold import schedule_key
from shell.app import subscribe
from shell.cli import alembic_config
from shell.config import normalize_database_url
from tests.platforms.fake_mturk import FakeMTurk
from workers.models import Account
from workers.service import create_account

REWARD, ESTIMATE, WORKED = 10, 40, 60
LABELS = {"type": "single_choice", "categories": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}]}
PAGE_URL = "https://crowd.example.test/work/external/mturk?ref=bench"
SUBMIT_TO = "https://workersandbox.mturk.com"
GOLD_KEY = schedule_key("platform-sync-bench")


class IndexedFake(FakeMTurk):
    """The tests' fake with each HIT's assignments at hand: the fake finds them by scanning every assignment,
    which at 2,000 HITs made its own work 1.8 s of each listing (every HIT's status on each page), time that would
    count as the bare calls'. Its answers are unchanged (the same code reads a HIT's assignments only); `busy`
    adds up the seconds it spends answering."""

    def __init__(self) -> None:
        super().__init__()
        self.by_hit: dict[str, dict[str, Any]] = {}
        self.busy = 0.0

    def accept(self, hit_id: str, worker_id: str) -> str:
        made = super().accept(hit_id, worker_id)
        with self._lock:
            self.by_hit.setdefault(hit_id, {})[made] = self.assignments[made]
        return made

    def _handle(self, target: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        start = time.perf_counter()
        try:
            return super()._handle(target, content_type, body)
        finally:
            self.busy += time.perf_counter() - start

    def _only(self, hit_id: str, answer: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        # Called under the fake's lock (its _handle): no other request sees the narrowed view.
        everything, self.assignments = self.assignments, self.by_hit.get(hit_id, {})
        try:
            return answer()
        finally:
            self.assignments = everything

    def _hit_json(self, hit: Any) -> dict[str, Any]:
        return self._only(hit.hit_id, lambda: super(IndexedFake, self)._hit_json(hit))

    def _op_ListAssignmentsForHIT(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 (MTurk's names)
        return self._only(p.get("HITId", ""), lambda: super(IndexedFake, self)._op_ListAssignmentsForHIT(p))


def no_sleep(_seconds: float) -> None:
    """No retry is expected; if the fake ever refused a call, waiting would only blur the figures."""


def setup(db: Database, fake: IndexedFake, crowd: mturk.MTurkCrowd, n_hits: int, now: dt.datetime) -> int:
    """Everything up to the approvals, through the services; returns the burst's id."""
    with db.unit_of_work() as s:
        requester = create_account(s, role=Role.REQUESTER, email="bench-sync@example.com", now=now)
        s.flush()
        ledger.fund(s, requester_id=requester.id, cents=100 * n_hits, currency="USD", key="bench", now=now,
                    actor_id=None)
        project = create_project(s, owner=requester, now=now, data={
            "title": "Platforms sync benchmark", "instructions": "Pick one.", "label_schema": LABELS,
            "reward_cents": REWARD, "items_per_hit": 1, "assignments_per_item": 1, "gold_rate": 0,
            "estimated_seconds": ESTIMATE})
        lines = "".join(json.dumps({"external_id": f"i{n}", "data": {"text": f"item {n}"}}) + "\n"
                        for n in range(n_hits))
        import_items(s, project=project, stream=io.BytesIO(lines.encode()), fmt="jsonl", now=now)
        batch, _ = publish_batch(s, project_id=project.id, account=requester, now=now)
        burst, _ = bursts.create(s, actor=Caller(requester.id, requester.role), batch_id=batch.id,
                                 platform=mturk.NAME, platform_title=mturk.MTurk.title, fees=mturk.FEES,
                                 hits=n_hits, split=False, key="bench", now=now)
        requester_id, burst_id, burst_batch = requester.id, burst.id, burst.batch_id
    published = service.publish(db, crowd, burst_id, url=PAGE_URL, keywords=("bench",), now=now, sleep=no_sleep)
    assert not published.errors and published.done["tasks"] == n_hits, published
    for n, hit_id in enumerate(list(fake.hits)):
        worker_ref = f"A{n + 1:013d}"
        assignment_ref = fake.accept(hit_id, worker_ref)
        arrival = Arrival(mturk.NAME, preview=False, worker_ref=worker_ref, assignment_ref=assignment_ref,
                          task_ref=hit_id, return_to=SUBMIT_TO)
        with db.unit_of_work() as s:  # the page load
            burst = s.get(PlatformBatch, burst_id)
            arrived = arrivals.arrive(s, arrival=arrival, burst=burst, many=False, now=now, gold_key=GOLD_KEY)
            worker, task = Caller(arrived.worker.id, arrived.worker.role), arrived.task
        with db.unit_of_work() as s:  # the page's submit
            submit(s, worker=worker, assignment_id=task.id, now=now + dt.timedelta(seconds=WORKED),
                   answers=[{"item_id": item["id"], "answer": "a"} for item in task.items])
        fake.submit(assignment_ref)
    before_review = now + dt.timedelta(minutes=5)
    listed = service.sync(db, crowd, burst_id, now=before_review, sleep=no_sleep)
    assert not listed.errors and listed.done.get("new") == n_hits, listed
    with db.unit_of_work() as s:
        reviewed = approve(s, actor=s.get(Account, requester_id), now=before_review, batch_id=burst_batch)
    assert len(reviewed.reviewed) == n_hits, reviewed
    return burst_id


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def requests_during(fake: IndexedFake, fn: Callable[[], Any]) -> tuple[float, Any, Counter[str], float]:
    """Time `fn`; count the fake's requests by operation meanwhile, and the seconds it spent answering them."""
    first, busy = len(fake.requests), fake.busy
    seconds, value = timed(fn)
    return seconds, value, Counter(op for op, _ in fake.requests[first:]), fake.busy - busy


def bare_sync(client: Any, hit_type: str, hit_ids: list[str]) -> int:
    """What the sync asks MTurk, as plainly as boto3 allows: the reviewable HITs of the HIT type and the
    assignments of every HIT, all pages, then ApproveAssignment for each submitted one. Returns approvals."""
    def pages(method: Callable[..., dict[str, Any]], key: str, **params: Any) -> list[dict[str, Any]]:
        found, next_token = [], None
        while True:
            page = method(MaxResults=mturk.PAGE, **params, **({"NextToken": next_token} if next_token else {}))
            found.extend(page[key])
            next_token = page.get("NextToken")
            if not next_token:
                return found

    hits = dict.fromkeys(hit_ids)
    hits.update(dict.fromkeys(h["HITId"] for h in pages(client.list_reviewable_hits, "HITs", HITTypeId=hit_type,
                                                          Status="Reviewable")))
    approved = 0
    for hit_id in hits:
        for a in pages(client.list_assignments_for_hit, "Assignments", HITId=hit_id,
                       AssignmentStatuses=["Submitted", "Approved", "Rejected"]):
            if a["AssignmentStatus"] == "Submitted":
                client.approve_assignment(AssignmentId=a["AssignmentId"])
                approved += 1
    return approved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=2000, help="HITs (= submissions) in the burst")
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL server to make the scratch database on (default: embedded SQLite)")
    args = parser.parse_args()
    backend = "postgresql" if args.database_url.startswith("postgres") else "sqlite"
    pg_url = normalize_database_url(args.database_url) if backend == "postgresql" else ""
    n = args.hits
    with (tempfile.TemporaryDirectory() as tmp, fresh_database(backend, pg_url, Path(tmp), "platforms") as url,
          IndexedFake() as fake):
        cfg = alembic_config(url)
        cfg.attributes["configure_logger"] = False
        command.upgrade(cfg, "head")
        db = Database.from_url(url, pool_size=2)
        subscribe(db.events)  # the holds and settlements, as in the app
        crowd = mturk.make_crowd({"MTURK_ENDPOINT_URL": fake.url})
        now = utcnow()
        print(f"setup on {backend}: {n:,} HITs burst to the fake MTurk, accepted, submitted and approved ...",
              flush=True)
        setup_s, burst_id = timed(lambda: setup(db, fake, crowd, n, now))
        print(f"  set up in {setup_s:.1f} s", flush=True)
        later = now + dt.timedelta(hours=1)

        sync_s, first, sync_ops, sync_fake = requests_during(
            fake, lambda: service.sync(db, crowd, burst_id, now=later, sleep=no_sleep))
        assert not first.errors and first.done.get("approved") == n, first.done
        idle_s, second, idle_ops, idle_fake = requests_during(
            fake, lambda: service.sync(db, crowd, burst_id, now=later + dt.timedelta(minutes=1), sleep=no_sleep))
        assert not second.errors and "approved" not in second.done, second.done
        assert {a.status for a in fake.assignments.values()} == {"Approved"}

        with db.session_scope() as s:
            mirrored = s.scalar(select(func.count(PlatformSubmission.id)).where(
                PlatformSubmission.platform_batch_id == burst_id, PlatformSubmission.mirrored == "approved"))
            logged = s.scalar(select(func.count(PlatformCall.id)).where(PlatformCall.platform_batch_id == burst_id))
            ours = s.scalar(select(func.count(Assignment.id)).where(
                Assignment.status == AssignmentStatus.APPROVED))
        assert mirrored == n and ours == n

        # The baseline meets the state the first sync met: every assignment submitted, the HITs expired.
        for assignment in fake.assignments.values():
            assignment.status, assignment.feedback = "Submitted", None
        client = boto3.client("mturk", region_name="us-east-1", endpoint_url=fake.url,
                              config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
        hit_type = next(iter(fake.hit_types))
        base_s, approved, base_ops, base_fake = requests_during(
            fake, lambda: bare_sync(client, hit_type, list(fake.hits)))
        assert approved == n and base_ops == sync_ops, (base_ops, sync_ops)
        db.engine.dispose()

    sync_per_s, ratio = n / sync_s, sync_s / base_s
    per_submission = sum(sync_ops.values()) / n
    print(f"hits {n:,}; job log rows for the burst {logged:,}")
    print(f"{'step':<34}{'seconds':>9}{'approvals/s':>13}{'requests':>10}{'fake s':>8}")
    print(f"{'sync mirroring the approvals':<34}{sync_s:>9.2f}{sync_per_s:>13.0f}{sum(sync_ops.values()):>10}"
          f"{sync_fake:>8.2f}")
    print(f"{'sync with nothing to do':<34}{idle_s:>9.2f}{'':>13}{sum(idle_ops.values()):>10}{idle_fake:>8.2f}")
    print(f"{'bare boto3, the same calls':<34}{base_s:>9.2f}{n / base_s:>13.0f}{sum(base_ops.values()):>10}"
          f"{base_fake:>8.2f}")
    print("requests of the first sync:", ", ".join(f"{op} {k}" for op, k in sorted(sync_ops.items())))
    print(f"ratio sync/baseline {ratio:.2f}; requests per submission {per_submission:.2f}")
    print(f"sync_per_s={sync_per_s:.1f} idle_s={idle_s:.2f} ratio={ratio:.2f} "
          f"requests_per_submission={per_submission:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
