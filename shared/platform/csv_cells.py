"""Every CSV we write goes through `safe_row`, so no cell is read as a formula by a spreadsheet (CSV injection).

A cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, which spreadsheets show
as text and do not evaluate. One exception: a phone number in E.164 (`+` and 2 to 15 digits, no other character) is
written as is, so the numbers a reader expects stay the numbers they are; made of digits only, such a cell can
hold no function, reference or command, whatever a spreadsheet makes of it. `+1 555...` with a space, `+cmd|...`
or `+15551234567=HYPERLINK(...)` are not E.164 and are neutralised like any other cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}", re.ASCII)


def safe_cell(value: Any) -> Any:
    """`value` as a CSV cell that cannot start a formula: None becomes "", numbers stay numbers."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_PREFIXES) and not _E164.fullmatch(value):
        return "'" + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """A row for `csv.writer.writerow`, every cell through `safe_cell`."""
    return [safe_cell(value) for value in values]
