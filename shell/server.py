"""`crowdmarket run`: the app under gunicorn, in this process (gunicorn's own runner, with our app factory).

Threaded workers (gthread): a slow request (an inline aggregation run, a large export) holds one thread, and the
worker's heartbeat runs on, so it is not killed for it. Without --reload the master builds the app once before
forking (a configuration error shows at start, not as workers failing to boot); with --reload each worker builds
its own, and gunicorn restarts the workers when a source file changes.

Metrics (edge/metrics.py): each worker process counts in files of one PROMETHEUS_MULTIPROC_DIR, which `serve` makes
per master (unless one is given) before prometheus-client is first imported, and removes when the master exits;
a scrape of any worker adds up all of theirs. Logs: the request lines of edge/telemetry.py replace gunicorn's
access log; with CROWDMARKET_LOG_FORMAT=json (the default here) gunicorn's own lines are JSON objects too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # edge.metrics.MULTIPROC_ENV, not imported: see `serve`
LOG_FORMAT_ENV = "CROWDMARKET_LOG_FORMAT"


class Server(BaseApplication):
    """gunicorn with `options` (its settings by name) serving the app `factory` builds."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory, self.options = factory, options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        return self.factory()


def _post_fork(_server: Any, worker: Any) -> None:
    """A forked worker drops the database connections it may have inherited from the master, unclosed, as
    SQLAlchemy advises after fork (the master's own stay open; redis-py resets its pool after a fork itself)."""
    if worker.cfg.preload_app:
        database = worker.app.wsgi().extensions["crowdmarket.db"]
        for engine in database.engines():
            engine.dispose(close=False)


def _child_exit(_server: Any, worker: Any) -> None:
    """A worker that ended leaves its counters (they still count in the totals) but not its live gauges."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


class JsonLogger(Logger):
    """gunicorn's error log as JSON objects, like the app's (CROWDMARKET_LOG_FORMAT=json)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from edge.telemetry import json_formatter

        for handler in self.error_log.handlers:
            handler.setFormatter(json_formatter())


def settings(*, host: str, port: int, workers: int, threads: int, reload: bool,
             log_format: str = "text") -> dict[str, Any]:
    """gunicorn's settings for `crowdmarket run`: no access log, as the app logs every request itself."""
    return {"bind": f"{host}:{port}", "workers": workers, "worker_class": "gthread", "threads": threads,
            "reload": reload, "preload_app": not reload, "accesslog": None, "errorlog": "-", "post_fork": _post_fork,
            "child_exit": _child_exit, **({"logger_class": JsonLogger} if log_format == "json" else {}),
            # A worker whose heartbeat stops for `timeout` s (gthread beats on while a request runs, so only a hung
            # process) is killed and replaced, as one killed outright is; its in-flight clients see a dropped
            # connection and retry (writes are idempotent). On SIGTERM, requests get `graceful_timeout` s to end.
            "timeout": 30, "graceful_timeout": 30,
            # gunicorn's control socket sits at one path per user: two servers on a machine would take each other's.
            "control_socket_disable": True}


def serve(factory: Callable[[], Flask], **options: Any) -> None:
    """Serve until stopped (SIGINT or SIGTERM end it gracefully). JSON logs unless CROWDMARKET_LOG_FORMAT says
    otherwise; metrics in multiprocess mode, in a directory of this master's own unless PROMETHEUS_MULTIPROC_DIR
    names one (which must then be emptied between runs, as prometheus-client asks)."""
    os.environ.setdefault(LOG_FORMAT_ENV, "json")
    made = None
    if not os.environ.get(MULTIPROC_ENV):
        # Before the app (and prometheus-client) is imported: the library picks its file-backed values at import.
        made = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="crowdmarket-metrics-")
    try:
        Server(factory, settings(**options, log_format=os.environ[LOG_FORMAT_ENV])).run()
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
