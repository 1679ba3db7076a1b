"""Recipients from a CSV file: a header row names the phone column, other columns become template variables.

Pure apart from reading the lines it is given, one row at a time, so a million-row upload is never held as one
string. Each row becomes the recipient entry intake already takes: the number as a string, or
`{"to": number, "vars": {...}}` when the row has values for the variable columns. Line numbers are kept
compactly (only where rows and lines drift apart: blank lines, quoted line breaks) so bad rows can be reported
by the line a spreadsheet shows. Spreadsheets' habits are accepted: a byte-order mark, `;` between cells (Excel
where the decimal mark is a comma), and phone cells kept as text with a leading `'` or a formula `="+44…"`.
"""

from __future__ import annotations

import csv
import itertools
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PHONE_COLUMN = "phone"
_BYTE_ORDER_MARK = "\ufeff"
DELIMITERS = (",", ";")


class CsvRecipientsError(ValueError):
    """The CSV cannot be read as a list of recipients; nothing was stored."""


class CsvHeaderError(CsvRecipientsError):
    """No header row, or no column with the phone column's name."""

    def __init__(self, message: str, columns: list[str]) -> None:
        super().__init__(message)
        self.columns = columns


class MalformedCsvError(CsvRecipientsError):
    """The text is not CSV the parser can read (or not UTF-8), at `line`."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class LineNumbers:
    """The CSV line each recipient's row starts on, by the recipient's index in the list (0-based).

    Stores only the indexes where `line - index` changes, so a million plain rows cost two list entries.
    """

    _first_indexes: list[int] = field(default_factory=list)
    _offsets: list[int] = field(default_factory=list)

    def record(self, index: int, line: int) -> None:
        offset = line - index
        if not self._offsets or self._offsets[-1] != offset:
            self._first_indexes.append(index)
            self._offsets.append(offset)

    def line_of(self, index: int) -> int:
        position = bisect_right(self._first_indexes, index) - 1
        return index + self._offsets[max(position, 0)]

    def annotate(self, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of report entries that carry an `index`, each with its `line` added."""
        return [{**entry, "line": self.line_of(entry["index"])} for entry in entries]


def guess_delimiter(header_line: str) -> str:
    """`;` when the header row has more semicolons than commas outside quotes, else `,`."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for character in header_line:
        if character == '"':
            quoted = not quoted
        elif not quoted and character in counts:
            counts[character] += 1
    return ";" if counts[";"] > counts[","] else ","


def phone_cell(cell: str) -> str:
    """The number in a phone cell a spreadsheet wrote as text: `'+447700900123`, `="+447700900123"`, `=+44…`."""
    if cell[:1] not in ("'", "=", " "):  # most cells: nothing to undo
        return cell
    text = cell.strip()
    if text.startswith("'"):
        return text[1:]
    if text.startswith("="):
        text = text[1:].strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        return text
    return cell


class CsvRecipientReader:
    """Reads the header at once, then yields one recipient entry per data row as it is iterated.

    `variable_names`: the columns to keep as `vars` (None: every column but the phone one). Empty cells give no
    value, so a template's `{name|default}` applies; rows that are entirely empty are skipped.
    """

    def __init__(
        self,
        lines: Iterable[str],
        *,
        phone_column: str = DEFAULT_PHONE_COLUMN,
        variable_names: Collection[str] | None = None,
    ) -> None:
        lines = iter(lines)
        first_line = next(lines, None)
        if first_line is not None:
            lines = itertools.chain((first_line,), lines)
        self.delimiter = guess_delimiter(first_line or "")
        # strict: refuse a stray quote rather than guess
        self._reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        self.line_numbers = LineNumbers()
        header = self._next_row()
        if header is None:
            raise CsvHeaderError(f"The CSV is empty: it needs a header row with a `{phone_column}` column.", [])
        if header and header[0].startswith(_BYTE_ORDER_MARK):
            header[0] = header[0][1:]
        self.columns = [name.strip() for name in header]
        wanted = phone_column.strip().casefold()
        matches = [position for position, name in enumerate(self.columns) if name.casefold() == wanted]
        if not matches:
            raise CsvHeaderError(
                f"The CSV header has no `{phone_column}` column (names are compared ignoring case). "
                f"Columns found: {', '.join(repr(name) for name in self.columns) or 'none'}. "
                "Name the column holding the numbers with `phone_column`.",
                self.columns,
            )
        self.phone_position = matches[0]
        self.variable_columns = [
            (position, name)
            for position, name in enumerate(self.columns)
            if position != self.phone_position and name and (variable_names is None or name in variable_names)
        ]

    def _next_row(self) -> list[str] | None:
        try:
            return next(self._reader, None)
        except csv.Error as error:
            raise MalformedCsvError(str(error), self._reader.line_num) from None
        except UnicodeDecodeError:
            raise MalformedCsvError("the file is not UTF-8 text", self._reader.line_num + 1) from None

    def __iter__(self) -> Iterator[str | dict[str, Any]]:
        phone_position = self.phone_position
        variable_columns = self.variable_columns
        record = self.line_numbers.record
        index = 0
        while True:
            first_line = self._reader.line_num + 1
            row = self._next_row()
            if row is None:
                return
            if not any(cell.strip() for cell in row):
                continue  # a blank line, or a row of empty cells
            width = len(row)  # a short row's missing cells are empty
            number = phone_cell(row[phone_position]) if phone_position < width else ""
            values = {name: row[position] for position, name in variable_columns if position < width and row[position]}
            record(index, first_line)
            index += 1
            yield {"to": number, "vars": values} if values else number
