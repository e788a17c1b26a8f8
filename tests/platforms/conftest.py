"""Fakes of the platforms' APIs on 127.0.0.1, one per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.platforms.fake_mturk import FakeMTurk
from tests.platforms.fake_prolific import FakeProlific


@pytest.fixture
def fake_prolific() -> Iterator[FakeProlific]:
    with FakeProlific() as fake:
        yield fake


@pytest.fixture
def fake_mturk() -> Iterator[FakeMTurk]:
    with FakeMTurk() as fake:
        yield fake
