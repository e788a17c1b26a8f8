"""The platforms by name (ARCHITECTURE.md: one registry per kind)."""

from __future__ import annotations

from base.errors import NotFound
from platforms.base import Platform
from platforms.mturk import MTurk

PLATFORMS: dict[str, Platform] = {"mturk": MTurk()}


def platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise NotFound(f"No platform {name!r}.") from None
