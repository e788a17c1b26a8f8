"""The platforms by name (ARCHITECTURE.md: one registry per kind). A third crowd is a module here with a
`Platform`, its `FEES`, its `SETTINGS` and `make_crowd`, listed below; nothing else changes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from base.errors import NotFound
from base.money import FeeModel
from platforms import mturk, prolific
from platforms.base import Crowd, Platform

_MODULES: dict[str, ModuleType] = {"mturk": mturk, "prolific": prolific}
PLATFORMS: dict[str, Platform] = {"mturk": mturk.MTurk(), "prolific": prolific.Prolific()}

# Every platform's own settings, read like the app's (CROWDMARKET_<NAME>; shell/config.py merges them).
SETTINGS: dict[str, tuple[Any, type]] = {name: spec for module in _MODULES.values()
                                         for name, spec in module.SETTINGS.items()}
# Sites that may show our pages in a frame (CSP frame-ancestors).
FRAME_ORIGINS: tuple[str, ...] = tuple(origin for p in PLATFORMS.values() for origin in p.frame_origins)


def platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise NotFound(f"No platform {name!r}.") from None


def fees(name: str) -> FeeModel:
    platform(name)
    return _MODULES[name].FEES


def crowd(name: str, config: Mapping[str, Any]) -> Crowd:
    """The platform's client, from the app's configuration."""
    platform(name)
    return _MODULES[name].make_crowd(config)


def crowds(config: Mapping[str, Any]) -> dict[str, Callable[[], Crowd]]:
    """Each platform's client, made when first needed."""
    return {name: (lambda name=name: crowd(name, config)) for name in PLATFORMS}
