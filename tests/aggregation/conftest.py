"""Fixtures for the aggregation tests: where the shared real datasets live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.aggregation.data import ENV_VAR, FALLBACKS, dataset_root


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The dataset directory: $CROWDMARKET_DATASETS, else <repo>/../shared/datasets, else /work/shared/datasets.
    Tests that need it skip when there is none."""
    root = dataset_root()
    if root is None:
        configured = os.environ.get(ENV_VAR)
        where = (f"{ENV_VAR}={configured} is not a directory" if configured else
                 f"set {ENV_VAR} (looked in {', '.join(str(p) for p in FALLBACKS)})")
        pytest.skip(f"no dataset directory of <name>/answers.csv + gold.csv: {where}")
    return root
