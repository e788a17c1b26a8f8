"""Checks that keep input the database cannot store out of it (so it is a 4xx, never a 500).

Every JSON document we accept (request bodies, JSON Lines imports) is read by `loads_strict`, which refuses what
the JSON text allows but a column cannot hold or a later request could not serve: NaN and Infinity, numbers that
overflow a double to infinity (`1e400`), NUL characters and unpaired surrogates (PostgreSQL's jsonb and text
refuse them; SQLite stores them and they come back as invalid JSON), and nesting deeper than `MAX_DEPTH` (each
level is a stack frame for every reader and writer of the document after us).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# Ids are 32-bit integer columns on PostgreSQL; a larger id cannot exist, so it is simply not found.
MAX_ID = 2**31 - 1
# Deeper JSON is refused. Python's own parser gives up near 1,000 levels, and a document stored just under that
# would fail later, when a request with a deeper stack reads or writes it.
MAX_DEPTH = 64
# Problems listed in one error.
MAX_LISTED = 100

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_NUL = "contains a NUL character (\\u0000)"
_SURROGATE = "contains an unpaired surrogate, which is not valid Unicode"
_TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep"
_INFINITE = "is a number too large for a double (it would be stored as infinity)"

Path = tuple[str | int, ...]


def text_error(value: str) -> str | None:
    """Why a string cannot be stored (NUL, lone surrogate), or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return _NUL if found.group() == "\x00" else _SURROGATE


class JSONValueError(ValueError):
    """Valid JSON that we refuse, and where: each problem's path holds the object keys and array indexes from the
    root. The first problem is `path` and `problem`."""

    def __init__(self, problems: list[tuple[Path, str]]) -> None:
        self.problems = problems
        self.path, self.problem = problems[0]
        where = "".join(f"/{p}" for p in self.path)
        super().__init__(f"{where}: {self.problem}" if where else self.problem)

    def messages(self) -> dict[str, Any]:
        """The problems as marshmallow field errors, nested along their paths (`_schema` for the root)."""
        errors: dict[str, Any] = {}
        for path, problem in self.problems:
            node, keys = errors, [str(k) for k in path] or ["_schema"]
            for key in keys[:-1]:
                child = node.get(key)
                if not isinstance(child, dict):  # messages here already: they move under _schema
                    child = node[key] = {} if child is None else {"_schema": child}
                node = child
            leaf = node.setdefault(keys[-1], [])
            (leaf.setdefault("_schema", []) if isinstance(leaf, dict) else leaf).append(f"{problem}.")
        return errors


def _suspect(doc: Any) -> bool:
    """Whether anything in `doc` is refused: one pass, level by level, without paths (the common case)."""
    level, depth, strings = [doc], 0, []
    while level:
        containers: list[Any] = []
        for value in level:
            kind = type(value)
            if kind is str:
                strings.append(value)
            elif kind is float:
                if value - value != 0.0:  # inf - inf is nan
                    return True
            elif kind is dict or kind is list:
                containers.append(value)
        if not containers:
            break
        depth += 1
        if depth > MAX_DEPTH:
            return True
        level = []
        for container in containers:
            if type(container) is dict:
                strings.extend(container)
                level.extend(container.values())
            else:
                level.extend(container)
    try:
        return _UNSTORABLE.search("".join(strings)) is not None
    except TypeError:  # a key that is not a string: not from JSON text, so look closer
        return True


def _locate(doc: Any) -> list[tuple[Path, str]]:
    """The refused values in document order (the first MAX_LISTED), with their paths; depth-first, without
    recursion. A key that cannot be stored is reported at its object, and the object is not entered."""
    found: list[tuple[Path, str]] = []
    stack: list[tuple[Any, Path]] = [(doc, ())]
    while stack and len(found) < MAX_LISTED:
        value, path = stack.pop()
        if isinstance(value, str):
            problem = text_error(value)
            if problem:
                found.append((path, problem))
        elif isinstance(value, float):
            if value - value != 0.0:  # inf - inf is nan
                found.append((path, _INFINITE))
        elif isinstance(value, dict | list):
            if len(path) >= MAX_DEPTH:
                found.append((path[:1], _TOO_DEEP))  # at the field: a path 64 keys long helps no one
                continue
            children: Iterable[tuple[Any, Any]] = enumerate(value)
            if isinstance(value, dict):
                bad_key = next(filter(None, (text_error(k) for k in value if isinstance(k, str))), None)
                if bad_key:
                    found.append((path, f"has a key that {bad_key}"))
                    continue
                children = value.items()
            stack.extend(reversed([(child, (*path, key)) for key, child in children]))
    return found


def json_error(doc: Any) -> JSONValueError | None:
    """What in a parsed JSON document cannot be stored (see the module's docstring), or None."""
    found = _locate(doc) if _suspect(doc) else None
    return JSONValueError(found) if found else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(text: str | bytes) -> Any:
    """json.loads that refuses NaN/Infinity (Python accepts them, JSON and PostgreSQL's jsonb do not), and raises
    JSONValueError for what `json_error` finds and for nesting too deep to parse."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise JSONValueError([((), _TOO_DEEP)]) from None
    error = json_error(doc)
    if error is not None:
        raise error
    return doc
