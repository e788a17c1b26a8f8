"""The web pages that compose several rooms: the worker's dashboard, work page and earnings, the ops console
(flags, workers, payouts, project health) and the requesters' project pages.

Above every domain (it reads the market, qualification, payments and aggregation alike) and below the shell; every
module here faces HTTP and calls the same domain services as the JSON API. Pages of one room stay in that room's
`views.py` (the qualification tests in qualification). Each module here serves one blueprint, `blp`, listed in
MODULES."""

from __future__ import annotations

from importlib import import_module

from flask import Flask

MODULES: tuple[str, ...] = ("dashboard", "work", "external", "earnings", "flags", "ops_workers", "payouts", "health",
                            "requester")


def install(app: Flask) -> None:
    for name in MODULES:
        app.register_blueprint(import_module(f"console.{name}").blp)
