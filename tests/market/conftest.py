"""Fixtures shared by the market's tests."""

from __future__ import annotations

import pytest

from market.engine import next_task


@pytest.fixture
def turns(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Script which turns are gold: append True/False; an empty script means a real task."""
    script: list[bool] = []
    monkeypatch.setattr(next_task, "is_gold_turn", lambda *args, **kwargs: script.pop(0) if script else False)
    return script
