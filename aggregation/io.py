"""Answer and gold CSV files in, aggregated labels out: the file side of `crowdmarket aggregate`.

Answers (`worker,task,label`) are factorised to int32 codes in first-appearance order, so the engine gets the same
arrays the service builds and results map back to names by code. Files are UTF-8 (a BOM is allowed), RFC 4180 CSV
read by the stdlib `csv` module (files without quotes straight from the bytes: `aggregation.csvfile`); the header is
required, its columns may come in any order and extra columns are ignored. Whitespace around a value is not part of
it. Blank lines are skipped. Errors are `InputError`s naming the line.
"""

from __future__ import annotations

import json
import operator
import os
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

import numpy as np

from aggregation.csvfile import CsvFile, InputError, Source

if TYPE_CHECKING:
    from aggregation.engine import Aggregate

ANSWER_COLUMNS = ("worker", "task", "label")
GOLD_COLUMNS = ("task", "label")
FORMATS = ("csv", "jsonl")
# What to do with a worker's repeated answers to one task: refuse the file, keep the first or the last one, or
# count every one as a vote.
DUPLICATES = ("error", "first", "last", "all")
# How many offending lines an error message lists.
SHOWN = 5
# Whitespace at the start or end of a line (of names joined by newlines): a name that strip() would change.
_EDGE_SPACE = re.compile(r"(?m)^[^\S\n]|[^\S\n]$")


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
    repeats: int = 0  # answers that repeated a worker's earlier answer to the task (kept or not: `duplicates`)

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


def _factorise_names(raw: list[str], codes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Strip whitespace from the names (done on distinct values, not per answer), merging codes that collide."""
    if not _EDGE_SPACE.search("\n".join(raw)):  # one scan decides the usual case
        return raw, codes
    stripped = [name.strip() for name in raw]
    if stripped == raw:
        return raw, codes
    merged: dict[str, int] = {}
    remap = np.fromiter((merged.setdefault(name, len(merged)) for name in stripped), np.int32, len(stripped))
    return list(merged), remap[codes]


def _empty(column: str, names: list[str], codes: np.ndarray, source: CsvFile) -> None:
    if "" in names:
        index = int(np.argmax(codes == names.index("")))
        raise InputError(f"line {source.lines([index])[index]}: empty {column}")


def read_answers(source: Source, *, progress: bool = False, duplicates: str = "error") -> AnswerTable:
    """Read a `worker,task,label` CSV (a path or an open file). Raises InputError for a missing header column, an
    empty file, no answers, a row whose field count differs from the header's or an empty value. A worker's
    repeated answers to a task are refused (`duplicates="error"`, naming how many), or only the first or the last
    is kept, or all count (`"all"`). `progress` shows a bar on stderr that advances by the bytes parsed."""
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {', '.join(DUPLICATES)}")
    answers = CsvFile(source, ANSWER_COLUMNS, progress=progress)
    if answers.simple:
        raw = answers.simple_columns()
    else:
        raw = _csv_columns(answers)
    if not raw[0][1].size:
        raise InputError("no answers: the file has a header but no rows")
    columns = []
    for column, (names, codes) in zip(ANSWER_COLUMNS, raw, strict=True):
        columns.append(_factorise_names(names, codes))
        _empty(column, *columns[-1], answers)
    (workers_, worker_codes), (tasks_, task_codes), (labels_, label_codes) = columns
    table = AnswerTable(task_codes, worker_codes, label_codes, tasks_, workers_, labels_)
    return _repeats(table, answers, duplicates)


def _csv_columns(answers: CsvFile) -> list[tuple[list[str], np.ndarray]]:
    """Per column (worker, task, label): the names in order of first appearance and each answer's code."""
    names: tuple[dict[str, int], ...] = ({}, {}, {})
    codes: tuple[list[int], ...] = ([], [], [])
    # Bound methods and one itemgetter keep the per-row work to C calls: this loop is the reader's cost.
    (add_w, add_t, add_l), (code_w, code_t, code_l) = (c.append for c in codes), (n.setdefault for n in names)
    workers, tasks, labels = names
    pick = operator.itemgetter(*answers.positions)
    with answers.records() as records:
        for row in records:
            if len(row) != answers.width:
                if not row:
                    continue
                raise answers.width_error(len(row), len(codes[0]))
            w, t, lab = pick(row)
            add_w(code_w(w, len(workers)))
            add_t(code_t(t, len(tasks)))
            add_l(code_l(lab, len(labels)))
    return [(list(n), np.array(c, dtype=np.int32)) for n, c in zip(names, codes, strict=True)]


def _repeats(table: AnswerTable, source: CsvFile, duplicates: str) -> AnswerTable:
    """Find answers that repeat a (worker, task) pair and refuse them, drop them, or keep them, by `duplicates`.
    The methods count every answer as an independent vote, so `all` lets a worker vote twice."""
    key = table.worker_codes.astype(np.int64) * table.n_tasks + table.task_codes
    ordered = np.sort(key)
    if not (ordered[1:] == ordered[:-1]).any():
        return table
    order = np.argsort(key, kind="stable")  # only now: where the repeats are, within a pair in file order
    again = key[order[1:]] == key[order[:-1]]
    later = np.sort(order[1:][again])  # every answer after a pair's first, in file order
    if duplicates == "error":
        raise InputError(_repeats_message(table, source, key, later))
    if duplicates == "all":
        return replace(table, repeats=int(later.size))
    drop = later if duplicates == "first" else order[:-1][again]  # last: drop every answer a later one repeats
    keep = np.ones(key.size, dtype=bool)
    keep[drop] = False
    return replace(table, task_codes=table.task_codes[keep], worker_codes=table.worker_codes[keep],
                   label_codes=table.label_codes[keep], repeats=int(later.size))


def _repeats_message(table: AnswerTable, source: CsvFile, key: np.ndarray, later: np.ndarray) -> str:
    shown = [int(i) for i in later[:SHOWN]]
    firsts = [int(np.argmax(key == key[i])) for i in shown]
    lines = source.lines(shown + firsts)
    details = "; ".join(
        f"line {lines[i]}: worker {table.workers[table.worker_codes[i]]!r} answered task "
        f"{table.tasks[table.task_codes[i]]!r} again (first on line {lines[first]})"
        for i, first in zip(shown, firsts, strict=True))
    more = f" (and {later.size - len(shown)} more)" if later.size > len(shown) else ""
    return (f"{details}{more}: {later.size} repeated answer{'s' if later.size != 1 else ''} of {key.size} "
            f"({100 * later.size / key.size:.2g}%); each worker may answer a task once (--duplicates first or "
            "last keeps one of them, all counts every one)")


def read_gold(source: Source, table: AnswerTable) -> Gold:
    """Read a `task,label` CSV of known answers for the tasks in `table`. Raises InputError for tasks without
    answers, a task listed twice, empty values and the header problems `read_answers` reports. A gold label no
    one answered becomes a new class: it is appended to the labels of the returned `Gold.table`."""
    gold_csv = CsvFile(source, GOLD_COLUMNS)
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
