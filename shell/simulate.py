"""`crowdmarket simulate`: a simulated crowd works one project end to end through the public HTTP API, and the
outcome is measured against the simulated truth (label accuracy of MV, DS and gold-anchored DS, cost per item,
how well quality control caught the bad workers, hourly wages, whether the books balance).

In process (the default) the app runs on a fresh temporary SQLite file with a simulated clock (the app's CLOCK
override), so think times advance that clock and measured task times and hourly wages mean something, without
sleeping. With `--url` the same calls go to a running instance over HTTP; its own clock runs, think times are not
waited for, so wages (and the time-based quality checks) are then not meaningful.
"""

from __future__ import annotations

import heapq
import json
import random
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BAD_KINDS = ("spammer", "same", "fast", "colluder")
KINDS = ("honest", *BAD_KINDS)
PASSWORD = "simulated-worker-password"


class SimulationError(Exception):
    """The instance answered something the simulation cannot go on from."""


@dataclass
class Settings:
    items: int = 2000
    classes: int = 2
    redundancy: int = 3
    gold_rate: float = 0.08
    reward_cents: int = 5
    estimated_seconds: int = 20
    target_wage_cents: int = 1200
    approve: str = "gold-pass"
    gold_pass_min: float = 0.6
    min_accuracy: float = 0.6
    workers: int = 50
    mix: dict[str, float] = field(default_factory=lambda: {"honest": 0.6, "spammer": 0.1, "same": 0.1, "fast": 0.1,
                                                           "colluder": 0.1})
    accuracy: tuple[float, float] = (0.7, 0.95)
    seed: int = 0


def parse_mix(text: str) -> dict[str, float]:
    """`honest=0.6,spammer=0.1,...` into shares that sum to 1 (unknown kinds refused)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, share = part.partition("=")
        if kind not in KINDS:
            raise ValueError(f"unknown worker kind {kind!r} (kinds: {', '.join(KINDS)})")
        mix[kind] = float(share)
    total = sum(mix.values())
    if total <= 0 or any(v < 0 for v in mix.values()):
        raise ValueError("the mix needs non-negative shares with a positive sum")
    return {k: v / total for k, v in mix.items()}


def parse_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    lo, hi = float(low), float(high or low)
    if not 0 <= lo <= hi <= 1:
        raise ValueError("the accuracy range is LOW-HIGH within 0-1")
    return lo, hi


# ---- transports: the same calls in process (a test client) or over HTTP --------------------------------------

Call = Callable[..., tuple[int, Any, dict[str, str]]]


def client_call(client: Any) -> Call:
    """Calls through a Flask test client; `address` stands for the caller's IP (sign-ups are limited per address)."""

    def call(method: str, path: str, *, token: str | None = None, body: Any = None, data: bytes | None = None,
             content_type: str | None = None, query: dict[str, Any] | None = None, address: str = "127.0.0.1"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content_type:
            headers["Content-Type"] = content_type
        resp = client.open(path, method=method, json=body, data=data, headers=headers, query_string=query,
                           environ_base={"REMOTE_ADDR": address})
        body = resp.get_json(silent=True)
        resp.close()  # as a server does: what the app runs after a response (judging the worker) runs now
        return resp.status_code, body, dict(resp.headers)

    return call


def http_call(base_url: str) -> Call:
    """Calls over HTTP with the standard library (no dependency for a command most never run)."""
    from urllib.parse import urlencode

    def call(method: str, path: str, *, token: str | None = None, body: Any = None, data: bytes | None = None,
             content_type: str | None = None, query: dict[str, Any] | None = None, address: str = ""):
        url = base_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            data, content_type = json.dumps(body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return status, parsed, hdrs

    return call


def expect(result: tuple[int, Any, dict[str, str]], *statuses: int, what: str) -> Any:
    status, body, _ = result
    if status not in statuses:
        detail = body.get("detail") if isinstance(body, dict) else body
        raise SimulationError(f"{what}: HTTP {status}: {detail}")
    return body


# ---- the crowd -----------------------------------------------------------------------------------------------


@dataclass
class Worker:
    kind: str
    accuracy: float
    token: str = ""
    account_id: int = 0
    free_at: float = 0.0
    same_label: int = 0


class Crowd:
    """The simulated workers and the truth: how each kind answers and how long it takes."""

    def __init__(self, settings: Settings) -> None:
        self.s, self.rng = settings, random.Random(settings.seed)
        self.labels = [f"c{k}" for k in range(settings.classes)]
        self.truth = {f"it{n}": self.rng.randrange(settings.classes) for n in range(settings.items)}
        golds = max(10, round(settings.items * settings.gold_rate)) if settings.gold_rate else 0
        self.gold = {f"gold{n}": self.rng.randrange(settings.classes) for n in range(golds)}
        self.workers = [self._worker(kind) for kind in self._kinds()]
        self.ring_seed = self.rng.randrange(2**31)

    def _kinds(self) -> list[str]:
        counts = {k: round(v * self.s.workers) for k, v in self.s.mix.items()}
        kinds = [k for k, c in counts.items() for _ in range(c)]
        kinds += ["honest"] * (self.s.workers - len(kinds))
        return kinds[: self.s.workers]

    def _worker(self, kind: str) -> Worker:
        lo, hi = self.s.accuracy
        accuracy = self.rng.uniform(lo, hi) if kind == "honest" else 0.0
        return Worker(kind, accuracy, same_label=self.rng.randrange(self.s.classes))

    def _other(self, true: int, rng: random.Random) -> int:
        if self.s.classes < 2:
            return true
        return rng.choice([c for c in range(self.s.classes) if c != true])

    def answer(self, worker: Worker, external_id: str) -> str:
        true = self.truth.get(external_id, self.gold.get(external_id, 0))
        if worker.kind == "honest":
            label = true if self.rng.random() < worker.accuracy else self._other(true, self.rng)
        elif worker.kind == "same":
            label = worker.same_label
        elif worker.kind == "colluder":
            # The ring copies its (poor: 40% right) leader: one label per item, whoever of them answers it.
            ring = random.Random(f"{self.ring_seed}:{external_id}")
            label = true if ring.random() < 0.4 else self._other(true, ring)
        else:  # spammer, fast: uniform
            label = self.rng.randrange(self.s.classes)
        return self.labels[label]

    def think_seconds(self, worker: Worker, items: int) -> float:
        if worker.kind == "fast":
            return self.rng.uniform(0.5, 2.0) * items
        base = self.s.estimated_seconds * items
        factor = 0.5 if worker.kind in ("spammer", "same") else 1.0
        return max(1.0, self.rng.gauss(base * factor, base * factor * 0.25))


# ---- the run -------------------------------------------------------------------------------------------------


class Simulation:
    """One run: `call` reaches the instance, `advance` moves its clock (a no-op over HTTP)."""

    def __init__(self, settings: Settings, call: Call, *, requester_token: str, ops_token: str | None,
                 advance: Callable[[float], None], now: Callable[[], float],
                 run_cycle: Callable[[], None] | None = None, tick: Callable[[], None] | None = None) -> None:
        self.s, self.call, self.token, self.ops = settings, call, requester_token, ops_token
        self.advance, self.now, self.run_cycle, self.tick = advance, now, run_cycle, tick
        self.crowd = Crowd(settings)
        self.counts: dict[str, int] = {"tasks": 0, "answers": 0}

    def run(self) -> dict[str, Any]:
        spend_before = self.requester_money()
        project_id = self.create_project()
        self.import_items(project_id)
        expect(self.call("POST", f"/api/v1/projects/{project_id}/batches", token=self.token, body={}),
               201, what="publish the batch")
        self.sign_up()
        self.work(project_id)
        if self.tick is not None:  # the judgements still waiting are made
            self.advance(60)
            self.tick()
        flagged = self.flagged(project_id)
        self.review(project_id)
        self.cycle()
        accuracy = {name: self.aggregate(project_id, method) for name, method in
                    (("mv", "mv"), ("ds", "ds"), ("ds_gold", "ds-gold"))}
        spend = spend_before - self.requester_money()
        return self.report(project_id, accuracy, spend, flagged)

    # -- setup
    def create_project(self) -> int:
        body = {"title": "Simulated crowd", "instructions": "Pick the class.",
                "label_schema": {"type": "single_choice", "categories": [{"key": c, "name": c.upper()}
                                                                         for c in self.crowd.labels]},
                "reward_cents": self.s.reward_cents, "assignments_per_item": self.s.redundancy, "items_per_hit": 1,
                "estimated_seconds": self.s.estimated_seconds, "gold_rate": self.s.gold_rate,
                "target_wage_cents_per_hour": self.s.target_wage_cents, "auto_approval_delay_seconds": 3600,
                "reject_gold_misses": self.s.approve == "auto", "auto_top_up": True,
                "min_gold_accuracy": self.s.min_accuracy}
        return expect(self.call("POST", "/api/v1/projects", token=self.token, body=body), 201,
                      what="create the project")["id"]

    def import_items(self, project_id: int) -> None:
        records = [{"external_id": e, "data": {"text": f"item {e}"}} for e in self.crowd.truth]
        records += [{"external_id": e, "data": {"text": f"item {e}"}, "gold": self.crowd.labels[t]}
                    for e, t in self.crowd.gold.items()]
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        expect(self.call("POST", f"/api/v1/projects/{project_id}/items", token=self.token, data=data,
                         content_type="application/x-ndjson"), 201, what="import the items")
        self.counts.update(items=len(self.crowd.truth), gold_items=len(self.crowd.gold))

    def sign_up(self) -> None:
        for n, worker in enumerate(self.crowd.workers):
            body = {"username": f"sim{self.s.seed}w{n}x{self.crowd.rng.randrange(10**6)}", "password": PASSWORD}
            made = expect(self.call("POST", "/api/v1/workers", body=body, address=f"10.9.{n // 250}.{n % 250 + 1}"),
                          201, what="sign a worker up")
            worker.token, worker.account_id = made["token"], made["account_id"]

    # -- work: the next event is the earliest worker's; the clock jumps to it
    def work(self, project_id: int) -> None:
        start = self.now()
        queue = [(0.0, n, None) for n in range(len(self.crowd.workers))]
        heapq.heapify(queue)
        while queue:
            at, n, task = heapq.heappop(queue)
            self.advance(start + at - self.now())
            if self.tick is not None:
                self.tick()
            worker = self.crowd.workers[n]
            if task is None:
                task = self.lease(worker, project_id)
                if task is not None:
                    heapq.heappush(queue, (at + self.crowd.think_seconds(worker, len(task["items"])), n, task))
                continue
            self.submit(worker, task)
            heapq.heappush(queue, (at + self.crowd.rng.uniform(1, 5), n, None))

    def lease(self, worker: Worker, project_id: int) -> dict[str, Any] | None:
        status, body, _ = self.call("POST", "/api/v1/work/next", token=worker.token, query={"project_id": project_id})
        if status == 200:
            return body
        if status in (204, 403, 404, 409):  # no work left for them, or they are blocked
            return None
        raise SimulationError(f"work/next: HTTP {status}: {body}")

    def submit(self, worker: Worker, task: dict[str, Any]) -> None:
        answers = [{"item_id": i["id"], "answer": self.crowd.answer(worker, i["data"]["text"].removeprefix("item "))}
                   for i in task["items"]]
        status, body, _ = self.call("POST", f"/api/v1/assignments/{task['assignment_id']}/submit",
                                    token=worker.token, body={"answers": answers})
        if status == 200:
            self.counts["tasks"] += 1
            self.counts["answers"] += len(answers)
        elif status not in (403, 409, 410):  # blocked meanwhile, or the lease lapsed
            raise SimulationError(f"submit: HTTP {status}: {body}")

    # -- after the work
    def pages(self, path: str, token: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows, after = [], None
        while True:
            q = {**(query or {}), "limit": 1000, **({"after": after} if after is not None else {})}
            body = expect(self.call("GET", path, token=token, query=q), 200, what=f"list {path}")
            rows += body["data"]
            after = body.get("next_after")
            if after is None:
                return rows

    def flagged(self, project_id: int) -> set[int] | None:
        """Workers the quality control flagged or blocked (needs an ops token)."""
        if not self.ops:
            return None
        return {f["worker_id"] for f in self.pages("/api/v1/ops/flags", self.ops)
                if f["project_id"] in (project_id, None)}

    def review(self, project_id: int) -> None:
        path = f"/api/v1/projects/{project_id}/reviews"
        if self.s.approve == "gold-pass":
            failing = self.gold_failures(project_id)
            if failing:
                expect(self.call("POST", path, token=self.token, body={
                    "decision": "reject", "worker_ids": sorted(failing),
                    "feedback": "Too many check items were answered wrongly"}), 200, what="reject")
            self.counts["workers_rejected"] = len(failing)
        if self.s.approve in ("all", "gold-pass"):
            for batch in self.pages(f"/api/v1/projects/{project_id}/batches", self.token):
                expect(self.call("POST", path, token=self.token, body={"decision": "approve",
                                                                       "batch_id": batch["id"]}),
                       200, what="approve")
        else:  # auto: the payments cycle approves once the delay has passed
            self.advance(3600 + 60)

    def gold_failures(self, project_id: int) -> set[int]:
        """Workers whose gold accuracy (from the requester's own view of the answers) is under the minimum."""
        seen: dict[int, list[bool]] = {}
        for row in self.pages(f"/api/v1/projects/{project_id}/answers", self.token):
            ext = row.get("external_id", "")
            if ext in self.crowd.gold:
                seen.setdefault(row["worker_id"], []).append(row["answer"] == self.crowd.labels[self.crowd.gold[ext]])
        return {w for w, marks in seen.items() if sum(marks) / len(marks) < self.s.gold_pass_min}

    def cycle(self) -> None:
        """The payments cycle (auto-approval, fair-wage top-ups, settling holds) runs in process only: a live
        instance runs its own on its schedule."""
        if self.run_cycle is not None:
            self.counts["payment_cycles"] = 1
            self.run_cycle()

    def aggregate(self, project_id: int, method: str) -> float:
        status, run, headers = self.call("POST", f"/api/v1/projects/{project_id}/aggregations", token=self.token,
                                         body={"method": method})
        if status != 202:
            raise SimulationError(f"aggregation {method}: HTTP {status}: {run}")
        path = f"/api/v1/projects/{project_id}/aggregations/{run['id']}"
        for _ in range(600):
            run = expect(self.call("GET", path, token=self.token), 200, what="read the aggregation")
            if run["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)  # a live instance's queue: real time, not the simulated clock
        if run["status"] != "succeeded":
            raise SimulationError(f"aggregation {method} did not succeed: {run.get('error')}")
        labels = self.pages(f"{path}/labels", self.token, {"gold": "false"})
        right = sum(row["label"] == self.crowd.labels[self.crowd.truth[row["external_id"]]] for row in labels)
        return round(right / len(self.crowd.truth), 4)

    def requester_money(self) -> int:
        body = expect(self.call("GET", "/api/v1/ledger/balance", token=self.token), 200, what="read the balance")
        return money_total(body)

    def report(self, project_id: int, accuracy: dict[str, float], spend: int,
               flagged: set[int] | None) -> dict[str, Any]:
        rows = self.pages(f"/api/v1/projects/{project_id}/assignments", self.token, {"status": "all"})
        wages = hourly_wages(rows)
        bad = {w.account_id for w in self.crowd.workers if w.kind in BAD_KINDS}
        precision = recall = None
        if flagged is not None:
            caught = flagged & bad
            precision = round(len(caught) / len(flagged), 4) if flagged else None
            recall = round(len(caught) / len(bad), 4) if bad else None
        books = None
        if self.ops:
            books = bool(expect(self.call("GET", "/api/v1/ledger/reconciliation", token=self.ops), 200,
                                what="reconcile the books")["ok"])
        kinds = {k: sum(w.kind == k for w in self.crowd.workers) for k in KINDS}
        return {
            "accuracy": accuracy,
            "cost_per_item_cents": round(spend / max(1, len(self.crowd.truth)), 3),
            "spend_cents": spend,
            "flag_precision": precision, "flag_recall": recall,
            "flagged_by_kind": {k: sum(w.kind == k and w.account_id in (flagged or ()) for w in self.crowd.workers)
                                for k in KINDS} if flagged is not None else None,
            "hourly_wage_cents": {**wages, "target": self.s.target_wage_cents},
            "books_balanced": books,
            "counts": {**self.counts, "workers": len(self.crowd.workers), "workers_by_kind": kinds,
                       "assignments_by_status": _by_status(rows)},
            "settings": {"items": self.s.items, "classes": self.s.classes, "redundancy": self.s.redundancy,
                         "gold_rate": self.s.gold_rate, "reward_cents": self.s.reward_cents,
                         "estimated_seconds": self.s.estimated_seconds, "approve": self.s.approve,
                         "seed": self.s.seed, "mix": self.s.mix, "accuracy": list(self.s.accuracy)},
        }


def money_total(balances: dict[str, Any]) -> int:
    """A requester's money still theirs (available + escrow, every currency: the simulation uses one)."""
    total = 0
    for row in balances.get("balances", balances.get("data", [])) if isinstance(balances, dict) else []:
        for key in ("available", "escrow"):
            value = row.get(key)
            total += value["cents"] if isinstance(value, dict) else int(value or 0)
    return total


def hourly_wages(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each paid worker's (reward + top-up) per hour of measured task time: min, p10, median."""
    paid: dict[int, int] = {}
    ms: dict[int, int] = {}
    for row in rows:
        if row["status"] != "approved":
            continue
        w = row["worker_id"]
        paid[w] = paid.get(w, 0) + (row["paid"] or {}).get("cents", 0) + (row.get("top_up") or {}).get("cents", 0)
        ms[w] = ms.get(w, 0) + (row["duration_ms"] or 0)
    rates = sorted(round(paid[w] * 3_600_000 / ms[w]) for w in paid if ms[w] > 0)
    if not rates:
        return {"min": None, "p10": None, "median": None, "workers": 0}
    return {"min": rates[0], "p10": rates[len(rates) // 10], "median": round(statistics.median(rates)),
            "workers": len(rates)}


def _by_status(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    return out


def run_over_http(settings: Settings, url: str, token: str, ops_token: str | None) -> dict[str, Any]:
    """The simulation against a running instance: its clock runs, think times are not waited for, its own payments
    cycle runs on its schedule (auto-approval waits for it)."""
    return Simulation(settings, http_call(url), requester_token=token, ops_token=ops_token,
                      advance=lambda seconds: None, now=time.time).run()
