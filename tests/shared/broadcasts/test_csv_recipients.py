"""Reading recipients from CSV: header, phone column, variables, line numbers, and row-by-row consumption."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from shared.broadcasts.csv_recipients import CsvHeaderError, CsvRecipientReader, LineNumbers, MalformedCsvError


def read(text: str, **options: object) -> tuple[list[object], CsvRecipientReader]:
    reader = CsvRecipientReader(io.StringIO(text, newline=""), **options)  # type: ignore[arg-type]
    return list(reader), reader


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("phone\n+15550000001\n+15550000002\n", {}, ["+15550000001", "+15550000002"]),
        ("Name,PHONE\nAnn,+15550000001\n", {}, [{"to": "+15550000001", "vars": {"Name": "Ann"}}]),
        ("name,phone\nAnn,+15550000001\n", {"variable_names": ()}, ["+15550000001"]),
        ("mobile,first_name\n+15550000001,\n", {"phone_column": "Mobile"}, ["+15550000001"]),
        (
            'phone,town\n+15550000001,"Leeds, West Yorkshire"\n',
            {},
            [{"to": "+15550000001", "vars": {"town": "Leeds, West Yorkshire"}}],
        ),
        ("\ufeffphone,n\r\n+15550000001,1\r\n", {}, [{"to": "+15550000001", "vars": {"n": "1"}}]),
        ("phone,n\n+15550000001\n", {}, ["+15550000001"]),  # a short row: the missing cell has no value
        ("phone\n\n,\n+15550000001\n", {}, ["+15550000001"]),  # blank rows are skipped
        # Excel where the decimal mark is a comma separates cells with `;`, and may add a byte-order mark.
        ("\ufeffphone;name\r\n+15550000001;Ann\r\n", {}, [{"to": "+15550000001", "vars": {"name": "Ann"}}]),
        (
            'phone;town\n+15550000001;"Leeds; West Yorkshire"\n',
            {},
            [{"to": "+15550000001", "vars": {"town": "Leeds; West Yorkshire"}}],
        ),
        (
            '"phone;mobile",town\n+15550000001,Leeds\n',
            {"phone_column": "phone;mobile"},
            [{"to": "+15550000001", "vars": {"town": "Leeds"}}],
        ),
        # Phone cells kept as text by a leading apostrophe or a formula.
        ("phone\n'+15550000001\n", {}, ["+15550000001"]),
        ("phone\n'07700 900123\n", {}, ["07700 900123"]),
        ('phone\n="+15550000001"\n', {}, ["+15550000001"]),
        ('phone;n\n"=""+15550000001""";1\n', {}, [{"to": "+15550000001", "vars": {"n": "1"}}]),
        ("phone\n=+15550000001\n", {}, ["+15550000001"]),
        ("phone\n ' +15550000001\n", {}, [" +15550000001"]),
        ("phone,note\n+15550000001,'kept\n", {}, [{"to": "+15550000001", "vars": {"note": "'kept"}}]),
    ],
)
def test_rows_become_the_recipient_entries_intake_takes(
    text: str, options: dict[str, object], expected: list[object]
) -> None:
    assert read(text, **options)[0] == expected


def test_missing_phone_column_names_the_columns_found() -> None:
    with pytest.raises(CsvHeaderError) as raised:
        CsvRecipientReader(io.StringIO("name, number\nAnn,+1555\n"))
    assert raised.value.columns == ["name", "number"]
    assert "'name', 'number'" in str(raised.value)


def test_line_numbers_follow_blank_lines_and_quoted_line_breaks() -> None:
    text = 'phone,note\n+15550000001,a\n\n+15550000002,"two\nlines"\nbad,c\n'
    entries, reader = read(text)
    assert len(entries) == 3
    assert [reader.line_numbers.line_of(index) for index in range(3)] == [2, 4, 6]
    assert reader.line_numbers.annotate([{"index": 2, "value": "bad"}]) == [{"index": 2, "value": "bad", "line": 6}]


def test_line_numbers_of_a_plain_file_cost_one_entry() -> None:
    numbers = LineNumbers()
    for index in range(1000):
        numbers.record(index, index + 2)
    assert numbers.line_of(999) == 1001
    assert len(numbers._offsets) == 1


def test_a_malformed_row_is_reported_with_its_line() -> None:
    reader = CsvRecipientReader(io.StringIO('phone\n+15550000001\n"+15550000002"x\n+15550000003\n', newline=""))
    with pytest.raises(MalformedCsvError) as raised:
        list(reader)
    assert raised.value.line == 3
    with pytest.raises(MalformedCsvError):
        list(CsvRecipientReader(io.StringIO('phone\n"+15550000001\n', newline="")))  # quote never closed


def test_a_large_file_is_consumed_row_by_row() -> None:
    """200,000 rows: the first recipient comes out after a handful of lines were read, not the whole file."""
    rows = 200_000
    lines_read = 0

    def source() -> Iterator[str]:
        nonlocal lines_read
        lines_read += 1
        yield "phone,first_name\r\n"
        for index in range(rows):
            lines_read += 1
            yield f"+1555{index:07d},Name{index}\r\n"

    reader = CsvRecipientReader(source(), variable_names={"first_name"})
    iterator = iter(reader)
    first = next(iterator)
    assert first == {"to": "+15550000000", "vars": {"first_name": "Name0"}}
    assert lines_read <= 2
    rest = sum(1 for _ in iterator)
    assert rest == rows - 1
    assert lines_read == rows + 1
