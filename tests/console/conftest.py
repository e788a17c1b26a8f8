"""Fixtures of the console pages' tests."""

from __future__ import annotations

import pytest

from market.engine import next_task


@pytest.fixture(autouse=True)
def turns(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Script which leases are gold (append True); an empty script means real work. Without it the app's gold
    schedule would decide, and a returned gold task comes back (the next task after gold is gold again)."""
    script: list[bool] = []
    monkeypatch.setattr(next_task, "is_gold_turn", lambda *args, **kwargs: script.pop(0) if script else False)
    return script
