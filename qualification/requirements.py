"""Qualification requirements, MTurk's way: (qualification, comparator, integer values). Pure functions.

A requirement is a dict {"qualification_id": int, "comparator": str, "values": [int, ...]}. Every comparator but
DoesNotExist needs the worker to hold the qualification: a worker without it never meets "LessThan 50" or
"NotEqualTo 3", as on MTurk.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

_ONE_VALUE: dict[str, Callable[[int, int], bool]] = {
    "LessThan": operator.lt, "LessThanOrEqualTo": operator.le, "GreaterThan": operator.gt,
    "GreaterThanOrEqualTo": operator.ge, "EqualTo": operator.eq, "NotEqualTo": operator.ne,
}
_NO_VALUE = ("Exists", "DoesNotExist")
_SOME_VALUES = ("In", "NotIn")
COMPARATORS = (*_ONE_VALUE, *_NO_VALUE, *_SOME_VALUES)
MAX_IN_VALUES = 15  # MTurk's limit for In / NotIn


def values_error(comparator: str, values: list[int]) -> str | None:
    """Why `values` do not suit `comparator`, or None."""
    if comparator in _NO_VALUE and values:
        return f"{comparator} takes no values"
    if comparator in _ONE_VALUE and len(values) != 1:
        return f"{comparator} takes exactly one value"
    if comparator in _SOME_VALUES and not 1 <= len(values) <= MAX_IN_VALUES:
        return f"{comparator} takes 1 to {MAX_IN_VALUES} values"
    return None


def meets(requirement: dict[str, Any], held: int | None) -> bool:
    """Whether a worker holding the qualification with value `held` (None: not held) meets the requirement."""
    comparator, values = requirement["comparator"], requirement.get("values") or []
    if comparator == "DoesNotExist":
        return held is None
    if held is None:
        return False
    if comparator == "Exists":
        return True
    if comparator == "In":
        return held in values
    if comparator == "NotIn":
        return held not in values
    return _ONE_VALUE[comparator](held, values[0])


def unmet(requirements: Iterable[dict[str, Any]], held: dict[int, int]) -> list[dict[str, Any]]:
    """The requirements a worker holding `held` (qualification id -> value) does not meet."""
    return [r for r in requirements if not meets(r, held.get(r["qualification_id"]))]
