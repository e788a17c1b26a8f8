"""Prometheus metrics: requests by route, the market's domain counters, the job queue's depth; `GET /metrics`.

Request metrics are labelled by the URL rule (`/api/v1/assignments/<int:assignment_id>/submit`), never by the raw
path, and by method (unknown methods as "OTHER") and status class ("2xx"), so a client cannot add series.

Domain counters listen to the domain events (base/events.py), so no domain module knows about metrics, and count
only what committed: a handler notes the increment in the session, which applies it after the commit (and forgets
it on a rollback: a publish refused for want of funds leases, posts and flags nothing).

Under gunicorn (`crowdmarket run`) each worker process counts in files of PROMETHEUS_MULTIPROC_DIR (shell/server.py
makes one per master and removes it at exit) and a scrape adds up every worker's, through prometheus-client's
multiprocess mode; elsewhere the process's own counts are served.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from base import events
from base.identity import Role
from edge import jobs
from edge.auth import AUTHENTICATE, bearer_token
from edge.request import clock, db_session

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The text format every Prometheus server reads (prometheus-client's own HTTP server answers with it too).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A claim or submit takes milliseconds, an export or an inline aggregation run seconds.
BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Our own registry, not prometheus-client's global one: it holds only what is ours (tests build many apps in one
# process; the metrics are per process, as a worker process is).
REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("crowdmarket_http_requests", "HTTP requests answered, by route, method and status class.",
                   ["endpoint", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("crowdmarket_http_request_duration_seconds", "Time from routing to response, by route.",
                    ["endpoint", "method"], buckets=BUCKETS, registry=REGISTRY)
CLAIMS = Counter("crowdmarket_claims", "Tasks leased to workers (gold tasks included).", registry=REGISTRY)
GOLD_SERVED = Counter("crowdmarket_gold_served", "Gold tasks leased to workers.", registry=REGISTRY)
SUBMITS = Counter("crowdmarket_submits", "Assignments submitted (replays not counted).", registry=REGISTRY)
FLAGS = Counter("crowdmarket_flags_raised", "Workers flagged for review, by reason.", ["reason"], registry=REGISTRY)
POSTINGS = Counter("crowdmarket_ledger_postings", "Ledger transactions posted, by kind.", ["kind"],
                   registry=REGISTRY)
QUEUE_DEPTH = "crowdmarket_job_queue_depth"

_PENDING = "crowdmarket.metrics.pending"


# The labelled children by (route, method, status class): `labels()` costs more than the count itself. Bounded,
# as the labels are (routes are the app's, methods normalized first).
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    method = method if method in METHODS else "OTHER"
    key = (endpoint, method, status // 100)
    children = _CHILDREN.get(key)
    if children is None:
        children = _CHILDREN[key] = (REQUESTS.labels(endpoint, method, f"{key[2]}xx"), LATENCY.labels(endpoint, method))
    children[0].inc()
    children[1].observe(seconds)


# --- domain counters, applied once their unit of work commits ----------------------------------------------------

def _after_commit(session: Session, increment: Callable[[], None]) -> None:
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append((transaction, increment))


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the transaction may still roll back
        return
    for _, increment in session.info.pop(_PENDING, ()):
        increment()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_soft_rollback")
def _savepoint_rolled_back(session: Session, previous: SessionTransaction) -> None:
    """A savepoint rolled back (base.uow.savepoint's "take the row that won the race"): forget what it counted."""
    if previous.nested and (pending := session.info.get(_PENDING)):
        pending[:] = [(t, inc) for t, inc in pending if not _within(t, previous)]


def on_task_leased(session: Session, leased: events.TaskLeased) -> None:
    _after_commit(session, CLAIMS.inc)
    if leased.gold:
        _after_commit(session, GOLD_SERVED.inc)


def on_submitted(session: Session, _submitted: events.AssignmentSubmitted) -> None:
    _after_commit(session, SUBMITS.inc)


def on_flag_raised(session: Session, raised: events.FlagRaised) -> None:
    _after_commit(session, FLAGS.labels(raised.reason).inc)


def on_ledger_posted(session: Session, posted: events.LedgerPosted) -> None:
    for kind, count in Tally(posted.kinds).items():
        _after_commit(session, partial(POSTINGS.labels(kind).inc, count))


def subscribe(hub: events.EventHub) -> None:
    """Count the domain events of a database's hub (the composition root calls this)."""
    hub.subscribe(events.TaskLeased, on_task_leased)
    hub.subscribe(events.AssignmentSubmitted, on_submitted)
    hub.subscribe(events.FlagRaised, on_flag_raised)
    hub.subscribe(events.LedgerPosted, on_ledger_posted)


# --- the scrape ------------------------------------------------------------------------------------------------

class _Live:
    """What is read at scrape time: the job queue's depth (RQ's queue length; 0 when jobs run inline)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(QUEUE_DEPTH, "Jobs waiting on the RQ queue (0 when jobs run inline).")
        queue = jobs.queue(self.app)
        try:
            gauge.add_metric([], 0 if queue is None else queue.count)
        except Exception as exc:  # noqa: BLE001 - Redis down: the scrape still answers, without the gauge
            log.warning("job queue depth unavailable: %s", type(exc).__name__)
            return
        yield gauge


class _Ours:
    """This process's own metrics, for a scrape outside multiprocess mode."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def multiprocess() -> bool:
    """Whether the counts live in PROMETHEUS_MULTIPROC_DIR (set before prometheus-client was imported)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition(app: Flask) -> bytes:
    """The metrics in Prometheus' text format: every gunicorn worker's in multiprocess mode, else this process's."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        MultiProcessCollector(registry)
    else:
        registry.register(_Ours())  # type: ignore[arg-type]
    registry.register(_Live(app))  # type: ignore[arg-type]
    return generate_latest(registry)


# --- who may scrape ----------------------------------------------------------------------------------------------

def _local() -> bool:
    """A request from this host that no proxy relayed (behind a proxy on the same host every request would come
    from loopback; with CROWDMARKET_PROXY_HOPS set, ProxyFix has put the client's address in remote_addr)."""
    if any(h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-IP")):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def allowed() -> bool:
    """The configured metrics token, an ops API token, or a request from loopback not relayed by a proxy."""
    token = bearer_token()
    if token is not None:
        wanted = current_app.config.get("METRICS_TOKEN") or ""
        if wanted and hmac.compare_digest(token.encode(), wanted.encode()):
            return True
        account = current_app.extensions[AUTHENTICATE](db_session(), token, now=clock())
        return account is not None and account.role == Role.OPS
    return _local()


blp = Blueprint("metrics", __name__)


@blp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics, for the configured token, ops tokens, or loopback; 404 for anyone else (nothing
    public says it is there)."""
    if not allowed():
        abort(404)
    return Response(exposition(current_app._get_current_object()),  # type: ignore[attr-defined]
                    content_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
