"""CSV cells that spreadsheets open as data, never as formulas (OWASP, "CSV Injection").

Excel, LibreOffice and Google Sheets run a cell that starts with `=`, `+`, `-` or `@` as a formula (tab and carriage
return lead some of them there too), and a formula can fetch URLs or start programs. Text from workers and
requesters (a text answer, an external id) that starts so is written with a single quote before it, as OWASP
advises: a spreadsheet shows the text, and a program reading the file sees the quote. A cell that is a plain number
(`-0.5`, `+3`) is left alone: it is a number to the spreadsheet, not a formula.
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def cell(value: Any) -> Any:
    """`value` as a CSV cell: text a spreadsheet would run, behind a single quote; anything else as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
