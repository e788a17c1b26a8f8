"""`crowdmarket run`: the app under gunicorn, in this process (gunicorn's own runner, with our app factory).

Threaded workers (gthread): a slow request (an inline aggregation run, a large export) holds one thread, and the
worker's heartbeat runs on, so it is not killed for it. Without --reload the master builds the app once before
forking (a configuration error shows at start, not as workers failing to boot); with --reload each worker builds
its own, and gunicorn restarts the workers when a source file changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


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


def settings(*, host: str, port: int, workers: int, threads: int, reload: bool) -> dict[str, Any]:
    """gunicorn's settings for `crowdmarket run`."""
    return {"bind": f"{host}:{port}", "workers": workers, "worker_class": "gthread", "threads": threads,
            "reload": reload, "preload_app": not reload, "accesslog": "-", "errorlog": "-", "post_fork": _post_fork,
            # A worker whose heartbeat stops for `timeout` s (gthread beats on while a request runs, so only a hung
            # process) is killed and replaced, as one killed outright is; its in-flight clients see a dropped
            # connection and retry (writes are idempotent). On SIGTERM, requests get `graceful_timeout` s to end.
            "timeout": 30, "graceful_timeout": 30,
            # gunicorn's control socket sits at one path per user: two servers on a machine would take each other's.
            "control_socket_disable": True}


def serve(factory: Callable[[], Flask], **options: Any) -> None:
    """Serve until stopped (SIGINT or SIGTERM end it gracefully)."""
    Server(factory, settings(**options)).run()
