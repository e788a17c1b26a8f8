"""Atomic, streaming item import from JSONL or CSV.

Lines are validated and inserted in chunks inside one transaction, so memory stays bounded whatever the file
size; any bad line rolls the whole import back and the error lists the first 100 bad lines. Re-importing
a file adds nothing: `external_id` is unique per project and existing ones are skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import ARRAY, Boolean, Integer, Text, bindparam, cast, column, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from base.db import UTCDateTime, dialect_insert
from base.errors import InvalidInput
from base.labels import AnswerError, parse_csv_answer, validate_answer
from base.validation import JSONValueError, json_error, loads_strict
from market.catalogue.gold import pool_new_gold
from market.catalogue.models import Item, Project

FORMATS = ("jsonl", "csv")
CHUNK = 2_000
MAX_LISTED_ERRORS = 100
MAX_LINE_BYTES = 1024 * 1024
_FIELDS = {"external_id", "data", "gold", "explanation", "priority"}
_RESERVED_CSV = {"external_id", "gold", "explanation", "priority"}
_PRIORITY_RANGE = (-1_000_000, 1_000_000)

csv.field_size_limit(MAX_LINE_BYTES)


@dataclass
class ImportResult:
    lines: int = 0
    created: int = 0
    skipped: int = 0
    gold: int = 0


class _Lines:
    """Decode a byte stream line by line, so a bad byte is reported on its own line and parsing goes on."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.line_no = 0
        self.bad: list[tuple[int, str]] = []

    def __iter__(self) -> Iterator[str]:
        while raw := self.stream.readline(MAX_LINE_BYTES + 1):
            self.line_no += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                # Bounded memory: skip the rest of an over-long line instead of reading it whole.
                while (rest := self.stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                self.bad.append((self.line_no, f"line is longer than {MAX_LINE_BYTES} bytes"))
                yield "\n"
                continue
            if self.line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.bad.append((self.line_no, f"not valid UTF-8 (byte {exc.start + 1} of the line)"))
                yield raw.decode("utf-8", errors="replace")

    def pop_bad(self, line_no: int) -> LineError | None:
        """The decoding error of `line_no` (or of an earlier line not yet reported)."""
        if self.bad and self.bad[0][0] <= line_no:
            return LineError(self.bad.pop(0)[1])
        return None


class LineError(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _row(schema: dict[str, Any], external_id: Any, data: Any, gold: Any, explanation: Any,
         priority: Any) -> dict[str, Any]:
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if not isinstance(external_id, str) or not external_id.strip():
        raise LineError("external_id is required and must be a non-empty string", "external_id")
    if len(external_id) > 255:
        raise LineError("external_id is longer than 255 characters", "external_id")
    if not isinstance(data, dict):
        raise LineError("data must be a JSON object", "data")
    if gold is not None:
        try:
            gold = validate_answer(schema, gold)
        except AnswerError as exc:
            raise LineError(f"gold {exc}", "gold") from exc
    if explanation is not None:
        if gold is None:
            raise LineError("explanation is only allowed on gold items", "explanation")
        if not isinstance(explanation, str):
            raise LineError("explanation must be a string", "explanation")
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int) \
            or not _PRIORITY_RANGE[0] <= priority <= _PRIORITY_RANGE[1]:
        raise LineError(f"priority must be a whole number in {list(_PRIORITY_RANGE)}", "priority")
    return {"external_id": external_id, "data": data, "is_gold": gold is not None, "gold_answer": gold,
            "gold_explanation": explanation, "priority": priority}


def _jsonl_rows(lines: _Lines, schema: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    for line_no, line in enumerate(lines, start=1):
        bad = lines.pop_bad(line_no)
        if bad is not None:
            yield line_no, bad
            continue
        if not line.strip():
            continue
        try:
            doc = loads_strict(line)
        except JSONValueError as exc:  # e.g. a NUL character (in a key too), 1e400, nesting 100 deep
            yield line_no, LineError(str(exc), exc.path[0] if exc.path and isinstance(exc.path[0], str) else None)
            continue
        except json.JSONDecodeError as exc:
            yield line_no, LineError(f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        except ValueError as exc:
            yield line_no, LineError(f"invalid JSON: {exc}")
            continue
        if not isinstance(doc, dict):
            yield line_no, LineError("each line must be a JSON object")
            continue
        unknown = sorted(set(doc) - _FIELDS)
        if unknown:
            yield line_no, LineError(f"unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}", unknown[0])
            continue
        try:
            yield line_no, _row(schema, doc.get("external_id"), doc.get("data"), doc.get("gold"),
                                doc.get("explanation"), doc.get("priority"))
        except LineError as exc:
            yield line_no, exc


def _csv_records(reader: Any) -> Iterator[tuple[int, list[str] | LineError]]:
    """The reader's records, each with the line it starts on. A broken one ends the file: after a quote left open
    (which strict reading refuses at the end of the file, instead of taking the rest of it into one field) or a
    quote inside a quoted field, nothing further can be read reliably."""
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "end of data" in str(exc):
                message = 'a quoted field starting on this line is never closed (a missing ")'
            elif "field larger than" in str(exc):
                message = f"a field starting on this line is longer than {MAX_LINE_BYTES} bytes (a quote left open?)"
            else:
                message = f"broken CSV: {exc}"
            yield start, LineError(message)
            return
        yield start, cells


def _csv_header_error(header: list[str]) -> LineError | None:
    unstorable = json_error(header)
    if unstorable is not None:
        return LineError(f"a column name {unstorable.problem}")
    if "external_id" not in header:
        return LineError("the header must have an external_id column", "external_id")
    if len(set(header)) != len(header) or "" in header:
        return LineError("header column names must be unique and non-empty")
    return None


def _csv_row(schema: dict[str, Any], header: list[str], cells: list[str]) -> dict[str, Any]:
    """A record as an item row; raises LineError."""
    if len(cells) != len(header):
        raise LineError(f"expected {len(header)} columns, found {len(cells)}")
    unstorable = json_error(cells)
    if unstorable is not None:
        column = header[int(unstorable.path[0])]
        raise LineError(f"{column} {unstorable.problem}", column if column in _RESERVED_CSV else "data")
    named = dict(zip(header, cells, strict=True))
    gold = None
    if named.get("gold", "").strip():
        try:
            gold = parse_csv_answer(schema, named["gold"])
        except AnswerError as exc:
            raise LineError(f"gold {exc}", "gold") from exc
    priority_text = named.get("priority", "").strip()
    try:
        priority = int(priority_text) if priority_text else None
    except ValueError as exc:
        raise LineError("priority must be a whole number", "priority") from exc
    data = {h: cell for h, cell in named.items() if h not in _RESERVED_CSV}
    return _row(schema, named["external_id"], data, gold, named.get("explanation") or None, priority)


def _csv_rows(lines: _Lines, schema: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    # strict: a quote left open is an error at the end of the file, not the rest of the file in one field.
    records = _csv_records(csv.reader(lines, strict=True))
    first = next(records, None)
    if first is None:
        return
    if isinstance(first[1], LineError):
        yield 1, first[1]
        return
    header = [h.strip() for h in first[1]]
    error = lines.pop_bad(lines.line_no) or _csv_header_error(header)
    if error is not None:
        yield 1, error
        return
    for line_no, cells in records:
        if isinstance(cells, LineError):
            yield line_no, cells
            return
        bad = lines.pop_bad(lines.line_no)
        if bad is not None:
            yield line_no, bad
            continue
        if not cells or cells == [""]:
            continue
        try:
            yield line_no, _csv_row(schema, header, cells)
        except LineError as exc:
            yield line_no, exc


_ITEM = Item.__table__


def _skipping_existing(stmt: Any) -> Any:
    """`stmt` (the dialect's insert of items) adding only new external_ids; returns is_gold of each created row."""
    return stmt.on_conflict_do_nothing(index_elements=[_ITEM.c.project_id, _ITEM.c.external_id]).returning(
        _ITEM.c.is_gold)


# On PostgreSQL one statement per chunk with an array per column: a multi-VALUES insert would bind
# 8 parameters a row, and psycopg's re-parsing of such long statements dominated the import.
_COLUMNS = (("external_id", Text), ("data", Text), ("is_gold", Boolean), ("gold_answer", Text),
            ("gold_explanation", Text), ("priority", Integer))
_CHUNK = func.unnest(*(bindparam(name, type_=ARRAY(kind)) for name, kind in _COLUMNS)).table_valued(
    *(column(name, kind) for name, kind in _COLUMNS), with_ordinality="n").render_derived(name="u")
_PG_INSERT = _skipping_existing(dialect_insert("postgresql")(_ITEM).from_select(
    ["project_id", "external_id", "data", "is_gold", "gold_answer", "gold_explanation", "priority", "created_at"],
    select(bindparam("project_id", type_=Integer), _CHUNK.c.external_id, cast(_CHUNK.c.data, JSONB),
           _CHUNK.c.is_gold, cast(_CHUNK.c.gold_answer, JSONB), _CHUNK.c.gold_explanation, _CHUNK.c.priority,
           bindparam("created_at", type_=UTCDateTime())).order_by(_CHUNK.c.n)))
_SQLITE_INSERT = _skipping_existing(dialect_insert("sqlite")(_ITEM))


def _inserter(session: Session, project_id: int, now: dt.datetime) -> Callable[[list[dict[str, Any]]], list[bool]]:
    """A function inserting a chunk of rows, skipping existing external_ids; returns is_gold of each created row."""
    if session.get_bind().dialect.name == "postgresql":
        def insert_pg(rows: list[dict[str, Any]]) -> list[bool]:
            params = {
                "project_id": project_id, "created_at": now,
                "external_id": [r["external_id"] for r in rows],
                "data": [json.dumps(r["data"]) for r in rows],
                "is_gold": [r["is_gold"] for r in rows],
                "gold_answer": [None if r["gold_answer"] is None else json.dumps(r["gold_answer"]) for r in rows],
                "gold_explanation": [r["gold_explanation"] for r in rows],
                "priority": [r["priority"] for r in rows],
            }
            return list(session.scalars(_PG_INSERT, params))
        return insert_pg

    def insert_generic(rows: list[dict[str, Any]]) -> list[bool]:
        for r in rows:
            r.update(project_id=project_id, created_at=now)
        return list(session.scalars(_SQLITE_INSERT, rows))
    return insert_generic


def import_items(session: Session, *, project: Project, stream: IO[bytes], fmt: str, now: dt.datetime,
                 on_chunk: Callable[[int], None] | None = None) -> ImportResult:
    """Import items from a byte stream in `fmt` ("jsonl" or "csv"); all or nothing. Imports (and publishes) of
    one project take turns on its row lock, taken before the first item is written: gold is grouped into HITs at
    the end, and two imports grouping at once would split or share gold (locking only then would deadlock, each
    holding the key-share lock its item inserts took)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Unknown import format {fmt!r}.", errors={"format": [f"must be one of {FORMATS}"]})
    session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    lines = _Lines(stream)
    parse = _jsonl_rows if fmt == "jsonl" else _csv_rows
    result, errors, error_count = ImportResult(), [], 0
    insert_rows = _inserter(session, project.id, now)
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        created = insert_rows(chunk)
        result.created += len(created)
        result.gold += sum(1 for g in created if g)
        chunk.clear()
        if on_chunk is not None:
            on_chunk(result.lines)

    for line_no, row in parse(lines, project.label_schema):
        result.lines += 1
        if isinstance(row, LineError):
            error_count += 1
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append({"line": line_no, "field": row.field, "message": str(row)})
            continue
        if error_count:
            continue  # keep reading only to report every bad line's count
        chunk.append(row)
        if len(chunk) >= CHUNK:
            flush()
    if error_count:
        raise InvalidInput(f"{error_count} line(s) are invalid; nothing was imported.",
                           errors=errors, error_count=error_count)
    if result.lines == 0:
        raise InvalidInput("The file has no items.", errors=[{"line": 1, "field": None, "message": "empty"}])
    if chunk:
        flush()
    if result.gold:
        pool_new_gold(session, project, now)
    session.flush()
    result.skipped = result.lines - result.created
    return result
