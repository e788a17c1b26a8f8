"""Checks that keep input the database cannot store out of it (so it is a 4xx, never a 500)."""

from __future__ import annotations

import json
from typing import Any

# Ids are 32-bit integer columns on PostgreSQL; a larger id cannot exist, so it is simply not found.
MAX_ID = 2**31 - 1


def text_error(value: str) -> str | None:
    """Why a string cannot be stored (NUL, lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate, which is not valid Unicode"
    return None


def find_text_error(doc: Any) -> str | None:
    """The first unstorable string in a JSON document (keys included), or None."""
    if isinstance(doc, str):
        return text_error(doc)
    if isinstance(doc, dict):
        for key, value in doc.items():
            found = text_error(key) or find_text_error(value)
            if found:
                return found
    elif isinstance(doc, list):
        for value in doc:
            found = find_text_error(value)
            if found:
                return found
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(text: str | bytes) -> Any:
    """json.loads without NaN/Infinity, which Python accepts but JSON (and PostgreSQL's jsonb) does not."""
    return json.loads(text, parse_constant=_reject_constant)
