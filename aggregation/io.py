"""Answer and gold CSV files in, aggregated labels out: the file side of `crowdmarket aggregate`.

Answers (`worker,task,label`) are factorised to int32 codes in first-appearance order, so the engine gets the same
arrays the service builds and results map back to names by code. Files are UTF-8 (a BOM is allowed), RFC 4180 CSV
read by the stdlib `csv` module (files without quotes by an equivalent, faster `str.split`); the header is required,
its columns may come in any order and extra columns are ignored. Whitespace around a value is not part of it. Blank
lines are skipped. Errors are `InputError`s naming the line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import operator
import os
import re
import secrets
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    from aggregation.engine import Aggregate

ANSWER_COLUMNS = ("worker", "task", "label")
GOLD_COLUMNS = ("task", "label")
FORMATS = ("csv", "jsonl")
# The parser is fed whole lines in blocks of about this size; the progress bar advances once per block.
BLOCK_BYTES = 1 << 22
BOM = b"\xef\xbb\xbf"
# How many offending lines an error message lists.
SHOWN = 5

Source = str | os.PathLike[str] | IO[bytes] | IO[str]


class InputError(ValueError):
    """An input file's fault, in words for its author: the message names the line(s)."""


@dataclass(frozen=True)
class AnswerTable:
    """Answers as codes: answer `i` is worker `workers[worker_codes[i]]` giving label `labels[label_codes[i]]` to
    task `tasks[task_codes[i]]`. Names are in order of first appearance."""

    task_codes: np.ndarray  # int32 per answer
    worker_codes: np.ndarray  # int32 per answer
    label_codes: np.ndarray  # int32 per answer
    tasks: list[str]
    workers: list[str]
    labels: list[str]  # may hold gold-only labels beyond those answered (see `read_gold`)

    @property
    def n_answers(self) -> int:
        return int(self.task_codes.size)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    @property
    def n_classes(self) -> int:
        return len(self.labels)


class Gold(NamedTuple):
    """Known answers as codes into `table`, which is the answers' table with any gold-only labels appended to its
    `labels` (the same object when there are none): use it, not the original, for the engine and the output."""

    task_codes: np.ndarray  # int64 per gold row
    label_codes: np.ndarray  # int64 per gold row
    table: AnswerTable


class _Csv:
    """A CSV file's bytes, header checked, read one of two ways. `records()`: csv.reader, for any RFC 4180 file.
    `field_blocks()`: str.split, for a `simple` file (no quotes, no lone CRs, no blank lines, which is most),
    about a third faster and equal to csv.reader's reading there. Neither tracks line numbers: error messages
    re-read the file for them (`lines`)."""

    def __init__(self, source: Source, columns: tuple[str, ...], *, progress: bool = False) -> None:
        data = _read(source)
        self.name = _name(source)
        self.progress = progress
        if b'"' not in data:
            # Outside quotes CRLF ends a line as LF does, and trailing blank lines hold no records: normalising
            # both lets such files take the fast path, and keeps every line's number.
            if b"\r" in data and data.count(b"\r") == data.count(b"\r\n"):
                data = data.replace(b"\r\n", b"\n")
            if data.endswith(b"\n\n"):
                data = data.rstrip(b"\n") + b"\n"
        self.simple = not any(s in data for s in (b'"', b"\r", b"\n\n")) and not data.startswith(b"\n")
        self.blocks = _split(data)
        reader = self._reader()
        with self.errors(reader):
            header = next((row for row in reader if row), None)
        if header is None:
            raise InputError(f"empty file: expected a header naming {', '.join(columns)}")
        found = [h.strip().lower() for h in header]
        missing = [c for c in columns if c not in found]
        if missing:
            raise InputError(f"line {reader.line_num}: the header lacks column(s) {', '.join(missing)} (it must "
                             f"name {', '.join(columns)}; found {', '.join(map(repr, header))})")
        repeated = [c for c in columns if found.count(c) > 1]
        if repeated:
            raise InputError(f"line {reader.line_num}: the header names column(s) {', '.join(repeated)} more "
                             "than once")
        self.width = len(header)
        self.positions = tuple(found.index(c) for c in columns)

    def _bar(self) -> tqdm:
        return tqdm(total=sum(map(len, self.blocks)), unit="B", unit_scale=True, desc=f"reading {self.name}",
                    file=sys.stderr, disable=not self.progress, leave=False)

    def _reader(self, bar: tqdm | None = None) -> Any:
        """csv.reader over the blocks as StringIOs of whole lines: its lines (and quoted fields spanning them)
        are those of one big StringIO, and the bar costs nothing per line."""

        def texts() -> Iterator[io.StringIO]:
            line = 1
            for block in self.blocks:
                yield io.StringIO(_decode(block, line), newline="")  # newline="": a lone \r ends a line
                line += block.count(b"\n")
                if bar is not None:
                    bar.update(len(block))

        # strict: a quote misplaced after a quoted field (`"t"x`) is an error, not silently part of the value.
        return csv.reader(itertools.chain.from_iterable(texts()), strict=True)

    @contextlib.contextmanager
    def errors(self, reader: Any) -> Iterator[None]:
        """Turn the csv module's errors (a stray quote, say) into InputErrors with the line."""
        try:
            yield
        except csv.Error as exc:
            raise InputError(f"line {reader.line_num}: {exc}") from None

    @contextlib.contextmanager
    def records(self) -> Iterator[Any]:
        """csv.reader past the header (a blank line comes out as []), with the progress bar."""
        with self._bar() as bar:
            reader = self._reader(bar)
            with self.errors(reader):
                next(row for row in reader if row)
                yield reader

    def field_blocks(self) -> Iterator[list[str]]:
        """For a `simple` file: per block, the fields of its records, record after record. Checks every line's
        field count first (numpy, on the bytes), so field `i` of a block's list belongs to column `i % width`."""
        record, line = 0, 2  # simple: the header is line 1
        with self._bar() as bar:
            for n, block in enumerate(self.blocks):
                bar.update(len(block))
                if n == 0:
                    block = block[block.find(b"\n") + 1:] if b"\n" in block else b""
                block = block.removesuffix(b"\n")
                if not block:
                    continue
                codes = np.frombuffer(block, np.uint8)
                ends = np.append(np.flatnonzero(codes == ord("\n")), codes.size)
                fields = np.diff(np.searchsorted(np.flatnonzero(codes == ord(",")), ends), prepend=0) + 1
                wrong = np.flatnonzero(fields != self.width)
                if wrong.size:
                    raise self.width_error(int(fields[wrong[0]]), record + int(wrong[0]))
                yield _decode(block, line).replace("\n", ",").split(",")
                record += ends.size
                line += ends.size

    def lines(self, records: Iterable[int]) -> dict[int, int]:
        """The first line of each given record (0 = the first after the header), by reading the file again."""
        wanted = set(records)
        found: dict[int, int] = {}
        if not wanted:
            return found
        reader = self._reader()
        index, line = -1, 1  # the header is record -1
        for row in reader:
            if row:
                if index in wanted:
                    found[index] = line
                    if len(found) == len(wanted):
                        break
                index += 1
            line = reader.line_num + 1
        return found

    def width_error(self, fields: int, index: int) -> InputError:
        line = self.lines([index])[index]
        return InputError(f"line {line}: {fields} field(s) where the header has {self.width}")


def _name(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return Path(source).name
    return str(getattr(source, "name", "input"))


def _read(source: Source) -> bytes:
    """The file's bytes, without a BOM."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            data = f.read()
    else:
        data = source.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
    return data.removeprefix(BOM)


def _split(data: bytes) -> list[bytes]:
    """Blocks of whole lines (the last may lack its newline). Cut after a newline byte, which never occurs inside
    a UTF-8 sequence, so each block decodes on its own."""
    blocks, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start + BLOCK_BYTES)
        end = len(data) if end < 0 else end + 1
        blocks.append(data[start:end])
        start = end
    return blocks


def _decode(block: bytes, line: int) -> str:
    """A block as text; `line` is the number of its first line, for the error message."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as exc:
        line += block.count(b"\n", 0, exc.start)
        raise InputError(f"line {line}: not UTF-8 text") from None


def _factorise_names(names: dict[str, int], codes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Strip whitespace from the names (done on distinct values, not per answer), merging codes that collide."""
    raw = list(names)
    stripped = [name.strip() for name in raw]
    if stripped == raw:
        return raw, codes
    merged: dict[str, int] = {}
    remap = np.fromiter((merged.setdefault(name, len(merged)) for name in stripped), np.int32, len(stripped))
    return list(merged), remap[codes]


def _empty(column: str, names: list[str], codes: np.ndarray, source: _Csv) -> None:
    if "" in names:
        index = int(np.argmax(codes == names.index("")))
        raise InputError(f"line {source.lines([index])[index]}: empty {column}")


def read_answers(source: Source, *, progress: bool = False) -> AnswerTable:
    """Read a `worker,task,label` CSV (a path or an open file). Raises InputError for a missing header column, an
    empty file, no answers, a row whose field count differs from the header's, an empty value, or a worker
    answering a task twice. `progress` shows a bar on stderr that advances by the bytes parsed."""
    answers = _Csv(source, ANSWER_COLUMNS, progress=progress)
    # Per column (worker, task, label): name -> code in order of first appearance, and the code of each answer.
    names: tuple[dict[str, int], ...] = ({}, {}, {})
    codes: tuple[list[int], ...] = ([], [], [])
    width = answers.width
    if answers.simple:
        for fields in answers.field_blocks():
            for column_names, column_codes, position in zip(names, codes, answers.positions, strict=True):
                code = column_names.setdefault
                column_codes.extend([code(value, len(column_names)) for value in fields[position::width]])
    else:
        # Bound methods and one itemgetter keep the per-row work to C calls: this loop is the reader's cost.
        (add_w, add_t, add_l), (code_w, code_t, code_l) = (c.append for c in codes), (n.setdefault for n in names)
        workers, tasks, labels = names
        pick = operator.itemgetter(*answers.positions)
        with answers.records() as records:
            for row in records:
                if len(row) != width:
                    if not row:
                        continue
                    raise answers.width_error(len(row), len(codes[0]))
                w, t, lab = pick(row)
                add_w(code_w(w, len(workers)))
                add_t(code_t(t, len(tasks)))
                add_l(code_l(lab, len(labels)))
    if not codes[0]:
        raise InputError("no answers: the file has a header but no rows")
    columns = []
    for column, column_names, column_codes in zip(ANSWER_COLUMNS, names, codes, strict=True):
        columns.append(_factorise_names(column_names, np.array(column_codes, dtype=np.int32)))
        _empty(column, *columns[-1], answers)
    (workers_, worker_codes), (tasks_, task_codes), (labels_, label_codes) = columns
    table = AnswerTable(task_codes, worker_codes, label_codes, tasks_, workers_, labels_)
    _check_repeats(table, answers)
    return table


def _check_repeats(table: AnswerTable, source: _Csv) -> None:
    """A worker answering a task twice is an input error (the methods count each answer as an independent vote)."""
    key = table.worker_codes.astype(np.int64) * table.n_tasks + table.task_codes
    ordered = np.sort(key)
    if not (ordered[1:] == ordered[:-1]).any():
        return
    order = np.argsort(key, kind="stable")  # only now: where the repeats are, in file order
    repeats = np.sort(order[1:][key[order[1:]] == key[order[:-1]]])
    shown = [int(i) for i in repeats[:SHOWN]]
    firsts = [int(np.argmax(key == key[i])) for i in shown]
    lines = source.lines(shown + firsts)
    details = "; ".join(
        f"line {lines[i]}: worker {table.workers[table.worker_codes[i]]!r} answered task "
        f"{table.tasks[table.task_codes[i]]!r} again (first on line {lines[first]})"
        for i, first in zip(shown, firsts, strict=True))
    more = f" (and {repeats.size - len(shown)} more)" if repeats.size > len(shown) else ""
    raise InputError(f"{details}{more}: each worker may answer a task once")


def read_gold(source: Source, table: AnswerTable) -> Gold:
    """Read a `task,label` CSV of known answers for the tasks in `table`. Raises InputError for tasks without
    answers, a task listed twice, empty values and the header problems `read_answers` reports. A gold label no
    one answered becomes a new class: it is appended to the labels of the returned `Gold.table`."""
    gold_csv = _Csv(source, GOLD_COLUMNS)
    pick = operator.itemgetter(*gold_csv.positions)
    rows: list[tuple[str, str]] = []
    with gold_csv.records() as records:
        for row in records:
            if len(row) != gold_csv.width:
                if not row:
                    continue
                raise gold_csv.width_error(len(row), len(rows))
            task, label = pick(row)
            rows.append((task.strip(), label.strip()))
    task_index = {name: code for code, name in enumerate(table.tasks)}
    label_index = {name: code for code, name in enumerate(table.labels)}
    empty = [i for i, (task, label) in enumerate(rows) if not task or not label]
    if empty:
        raise InputError(f"line {gold_csv.lines(empty[:1])[empty[0]]}: empty task or label")
    unknown = [i for i, (task, _) in enumerate(rows) if task not in task_index]
    if unknown:
        lines = gold_csv.lines(unknown[:SHOWN])
        shown = ", ".join(f"{rows[i][0]!r} (line {lines[i]})" for i in unknown[:SHOWN])
        more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
        raise InputError(f"{len(unknown)} gold task(s) have no answers: {shown}{more}")
    seen: dict[str, int] = {}
    for i, (task, _) in enumerate(rows):
        first = seen.setdefault(task, i)
        if first != i:
            lines = gold_csv.lines([first, i])
            raise InputError(f"line {lines[i]}: task {task!r} is listed again (first on line {lines[first]})")
    labels = list(table.labels)
    for _, label in rows:
        if label not in label_index:
            label_index[label] = len(labels)
            labels.append(label)
    extended = table if len(labels) == table.n_classes else replace(table, labels=labels)
    task_codes = np.fromiter((task_index[task] for task, _ in rows), np.int64, len(rows))
    label_codes = np.fromiter((label_index[label] for _, label in rows), np.int64, len(rows))
    return Gold(task_codes, label_codes, extended)


_CSV_SPECIAL = re.compile(r'[,"\r\n]')
_JSON_SPECIAL = re.compile(r'["\\\x00-\x1f]')


def _csv_fields(names: list[str]) -> list[str]:
    """Names as CSV fields, quoted as csv.QUOTE_MINIMAL would. One scan of all names decides the usual case."""
    if not _CSV_SPECIAL.search("\0".join(names)):
        return names
    return ['"' + n.replace('"', '""') + '"' if _CSV_SPECIAL.search(n) else n for n in names]


def _json_strings(names: list[str]) -> list[str]:
    if not _JSON_SPECIAL.search("".join(names)):
        return ['"' + n + '"' for n in names]  # nothing to escape; json.dumps per name costs ~4x more
    return [json.dumps(n, ensure_ascii=False) for n in names]


def write_results(out: str | os.PathLike[str] | IO[str], table: AnswerTable, aggregate: Aggregate, *,
                  fmt: str = "csv") -> None:
    """Write one `task,label,confidence` row (CSV) or object (JSON lines) per task, in `table.tasks` order; a task
    without a label gets an empty label (JSON: null) and confidence 0. A path is written atomically: to a
    temporary file beside it, renamed over it once complete, so a failed run leaves no partial output."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}")
    labels, confidence = aggregate.result.labels, aggregate.result.confidence
    if labels.shape != (table.n_tasks,) or confidence.shape != (table.n_tasks,):
        raise ValueError("the aggregate does not match the table: one label per task expected")
    if not np.isfinite(confidence).all():
        raise ValueError("non-finite confidence in the aggregate")
    scores = list(map("{:.6g}".format, confidence.tolist()))
    if fmt == "csv":
        # Code -1 (no label) indexes the appended empty name.
        names = np.array(_csv_fields(table.labels) + [""], dtype=object)[labels].tolist()
        body = "\n".join(map(",".join, zip(_csv_fields(table.tasks), names, scores, strict=True)))
        text = "task,label,confidence\n" + body + "\n" if body else "task,label,confidence\n"
    else:
        names = np.array(_json_strings(table.labels) + ["null"], dtype=object)[labels].tolist()
        text = "".join([f'{{"task": {t}, "label": {n}, "confidence": {c}}}\n'
                        for t, n, c in zip(_json_strings(table.tasks), names, scores, strict=True)])
    if not isinstance(out, str | os.PathLike):
        out.write(text)
        return
    path = Path(out)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain open() of the output would.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
