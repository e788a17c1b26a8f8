"""A CSV file's bytes, header checked, read one of two ways, with errors that name the line.

`records()`: the stdlib csv.reader, for any RFC 4180 file. `simple_columns()`: for a `simple` file (no quotes, no
lone CRs, no blank lines, which is most), the wanted columns straight from the bytes with numpy: each field's bytes
become a 64-bit key, a sort groups equal keys, and the groups are numbered in order of first appearance, with no
Python object per field (a dict of a million strings was most of the reader's time). Both read alike: the tests
check it. Neither tracks line numbers: error messages re-read the file for them (`lines`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tqdm import tqdm

# The csv path is fed whole lines in blocks of about this size; the progress bar advances once per block.
BLOCK_BYTES = 1 << 22
BOM = b"\xef\xbb\xbf"
COMMA, NEWLINE = ord(","), ord("\n")
# A field of up to 7 bytes is its own key (bytes and length); a longer one is hashed, and the hash checked.
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)

Source = str | os.PathLike[str] | IO[bytes] | IO[str]


class InputError(ValueError):
    """An input file's fault, in words for its author: the message names the line(s)."""


class _NoBar:
    """The progress bar when none is shown."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        pass


class CsvFile:
    """A CSV file with a header naming (at least) `columns`: `positions` are their places in each record."""

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
        self.data = data
        self.bounds = _split(data)
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

    def _bar(self) -> tqdm | _NoBar:
        if not self.progress:
            return _NoBar()
        from tqdm import tqdm  # only here: most runs show no bar, and the import costs 40 ms of a start-up

        return tqdm(total=len(self.data), unit="B", unit_scale=True, desc=f"reading {self.name}", file=sys.stderr,
                    leave=False)

    def _reader(self, bar: tqdm | None = None) -> Any:
        """csv.reader over the blocks as StringIOs of whole lines: its lines (and quoted fields spanning them)
        are those of one big StringIO, and the bar costs nothing per line."""

        def texts() -> Iterator[io.StringIO]:
            line = 1
            for start, end in self.bounds:
                block = self.data[start:end]
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

    def simple_columns(self) -> list[tuple[list[str], np.ndarray]]:
        """For a `simple` file: per column of `positions`, its distinct values (raw: whitespace kept) in order of
        first appearance and each record's code (int32). Checks every line's field count first."""
        header_end = self.data.find(b"\n") + 1 or len(self.data)
        # A closing newline if the last line lacks one, and 8 zero bytes so a key may read past any field's end.
        tail = b"" if self.data.endswith(b"\n") or header_end == len(self.data) else b"\n"
        buffer = np.frombuffer(self.data + tail + bytes(8), np.uint8)
        seps = [np.zeros(0, np.int64)]
        with self._bar() as bar:
            for start, end in self.bounds:
                start, end = max(start, header_end), end + (len(tail) if end == len(self.data) else 0)
                part = buffer[start:end]
                seps.append(np.flatnonzero((part == COMMA) | (part == NEWLINE)) + start)
                bar.update(end - start)
        ends = np.concatenate(seps)
        line_ends = np.flatnonzero(buffer[ends] == NEWLINE)
        fields = np.diff(line_ends, prepend=-1)
        wrong = np.flatnonzero(fields != self.width)
        if wrong.size:
            raise self.width_error(int(fields[wrong[0]]), int(wrong[0]))
        starts = np.empty_like(ends)
        starts[:1] = header_end
        starts[1:] = ends[:-1] + 1
        words = np.ndarray((buffer.size - 7,), dtype="<u8", buffer=buffer, strides=(1,))
        columns = []
        for position in self.positions:
            column_starts = starts[position::self.width]
            lengths = ends[position::self.width] - column_starts
            coded = _factorise(words, column_starts, lengths)
            if coded is None:  # two different values hashed alike (not seen yet): the dict way, exact
                codes, names = _factorise_slowly(self.data, column_starts, lengths)
            else:
                codes, firsts = coded
                names = _texts(buffer, column_starts[firsts], lengths[firsts], firsts)
            columns.append((names, codes))
        return columns

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


def _factorise(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes (int32) of the fields `starts`/`lengths` numbered in order of first appearance, and the first field
    of each code. `words[i]` is the 8 bytes from offset i. None when two different fields share a hash."""
    if not lengths.size:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    longest = int(lengths.max())
    if longest <= 7:
        key, parts = (words[starts] & _MASKS[lengths]) | (lengths.astype(np.uint64) << np.uint64(56)), []
    else:
        # A word past a short field's end is masked to 0; near the buffer's end it must still be in range.
        last = words.size - 1
        parts = [words[np.minimum(starts + 8 * j, last)] & _MASKS[np.clip(lengths - 8 * j, 0, 8)]
                 for j in range((longest + 7) // 8)]
        key = lengths.astype(np.uint64) * _MIX
        for part in parts:
            key ^= part
            key *= _MIX
            key ^= key >> np.uint64(29)
    order = np.argsort(key)  # unstable is fine: the first field of a group is found by its smallest index
    ordered = key[order]
    new = np.empty(key.size, dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    group = np.cumsum(new, dtype=np.int64) - 1
    firsts = np.minimum.reduceat(order, np.flatnonzero(new))
    by_first = np.argsort(firsts)
    rank = np.empty(by_first.size, dtype=np.int32)
    rank[by_first] = np.arange(by_first.size, dtype=np.int32)
    codes = np.empty(key.size, dtype=np.int32)
    codes[order] = rank[group]
    firsts = firsts[by_first]
    if parts:
        first = firsts[codes]
        if not ((lengths[first] == lengths).all() and all((part[first] == part).all() for part in parts)):
            return None
    return codes, firsts


def _texts(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray, records: np.ndarray) -> list[str]:
    """The fields as strings, gathered into one newline-separated buffer and decoded at once. In a simple file a
    field holds no newline, and record i is on line i + 2."""
    if not starts.size:
        return []
    sizes = lengths + 1
    ends = np.cumsum(sizes)
    gathered = buffer[np.arange(ends[-1]) + np.repeat(starts - (ends - sizes), sizes)]
    gathered[ends - 1] = NEWLINE
    try:
        return gathered[:-1].tobytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        record = records[np.searchsorted(ends, exc.start, side="right")]
        raise InputError(f"line {record + 2}: not UTF-8 text") from None


def _factorise_slowly(data: bytes, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, list[str]]:
    names: dict[bytes, int] = {}
    codes = np.fromiter((names.setdefault(data[s:s + n], len(names)) for s, n in zip(starts.tolist(),
                        lengths.tolist(), strict=True)), np.int32, len(starts))
    texts = []
    for code, name in enumerate(names):
        try:
            texts.append(name.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"line {int(np.argmax(codes == code)) + 2}: not UTF-8 text") from None
    return codes, texts


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


def _split(data: bytes) -> list[tuple[int, int]]:
    """Blocks of whole lines (the last may lack its newline) as (start, end) offsets. Cut after a newline byte,
    which never occurs inside a UTF-8 sequence, so each block decodes on its own."""
    bounds, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start + BLOCK_BYTES)
        end = len(data) if end < 0 else end + 1
        bounds.append((start, end))
        start = end
    return bounds


def _decode(block: bytes, line: int) -> str:
    """A block as text; `line` is the number of its first line, for the error message."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as exc:
        line += block.count(b"\n", 0, exc.start)
        raise InputError(f"line {line}: not UTF-8 text") from None
