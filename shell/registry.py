"""The models registry: every module that declares tables, listed once. Alembic (migrations/env.py) and the tests
load the metadata from here, so a new package's models (payments, ...) are added in one place, and autogenerate
never proposes dropping tables it was not shown."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

from base.db import Base

MODEL_MODULES = (
    "workers.models",
    "qualification.models",
    "market.catalogue.models",
    "market.quality.models",
    "aggregation.models",
    "payments.models",
    "platforms.models",
)


def metadata() -> MetaData:
    """The metadata with every table of every package registered on it."""
    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata
