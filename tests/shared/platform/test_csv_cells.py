"""CSV cells a spreadsheet would run as formulas are neutralised; E.164 numbers stay numbers."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from shared.platform.csv_cells import safe_cell, safe_row


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("https://evil.example","click")', '\'=HYPERLINK("https://evil.example","click")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        # E.164: only "+" and digits, so nothing a spreadsheet could run; kept as the number it is.
        ("+447700900123", "+447700900123"),
        ("+15551234567", "+15551234567"),
        # Looks like a number but is not E.164: neutralised like any other text.
        ("+1 555 123 4567", "'+1 555 123 4567"),
        ("+15551234567=1+1", "'+15551234567=1+1"),
        ("+0123", "'+0123"),
        ("+1234567890123456", "'+1234567890123456"),  # 16 digits: longer than E.164 allows
        ("replied STOP", "replied STOP"),
        ("2026-12-02T10:00:00+00:00", "2026-12-02T10:00:00+00:00"),
        ("", ""),
        (None, ""),
        (30003, 30003),
        (-1, -1),  # a number, not text: csv writes it as a number
    ],
)
def test_safe_cell(value: Any, written: Any) -> None:
    assert safe_cell(value) == written


def test_a_row_reads_back_as_text_a_spreadsheet_will_not_evaluate() -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(safe_row(["+447700900123", "api", "=1+1", None]))
    assert next(csv.reader(io.StringIO(buffer.getvalue()))) == ["+447700900123", "api", "'=1+1", ""]
