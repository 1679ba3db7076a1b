"""POST /v1/broadcasts with a CSV body (`text/csv`) or upload (`multipart/form-data`, file part `file`).

The options the JSON body carries come from the query string, `X-Bulksms-*` headers or (multipart) form fields;
the CSV is read from the request stream (or werkzeug's spooled file part) row by row and turned into the same
recipient list the JSON body gives, so intake (`shared.broadcasts.intake.create_broadcast`) is the same for both.
"""

from __future__ import annotations

import io
import re
from typing import IO, Any

from flask import request
from marshmallow import fields, post_load, validate

from api.errors import ApiProblem
from api.schemas import BroadcastRequestSchema
from shared.broadcasts.csv_recipients import (
    DEFAULT_PHONE_COLUMN,
    CsvHeaderError,
    CsvRecipientReader,
    LineNumbers,
    MalformedCsvError,
)
from shared.broadcasts.intake import BroadcastRequest
from shared.broadcasts.options import BROADCAST_OPTIONS, MAX_RECIPIENTS, CsvForm, csv_option_names
from shared.broadcasts.templates import parse_template

CSV_MIMETYPE = "text/csv"
MULTIPART_MIMETYPE = "multipart/form-data"
FILE_PART = "file"
HEADER_PREFIX = "X-Bulksms-"
# The names options are given by (shared.broadcasts.options says each one's form), plus the upload's own
# `phone_column`: given once each, or repeatable.
SCALAR_OPTIONS = (
    *csv_option_names(CsvForm.SCALAR, CsvForm.INTEGER, CsvForm.START_END),
    "phone_column",
)
LIST_OPTIONS = csv_option_names(CsvForm.LIST)
INTEGER_OPTIONS = csv_option_names(CsvForm.INTEGER)
START_END_OPTIONS = tuple(option.name for option in BROADCAST_OPTIONS if option.csv is CsvForm.START_END)
# Options the upload cannot give: the recipients are the file's rows.
NOT_FROM_OPTIONS = tuple(
    option.name for option in BROADCAST_OPTIONS if option.csv in (CsvForm.FILE, CsvForm.NOT_ACCEPTED)
)
_INTEGER = re.compile(r"[+-]?\d{1,18}")


class BroadcastOptionsSchema(BroadcastRequestSchema):
    """The JSON body's fields without `recipients` (they come from the CSV), plus the phone column's name."""

    phone_column = fields.String(load_default=DEFAULT_PHONE_COLUMN, validate=validate.Length(min=1, max=200))

    @post_load
    def _to_request(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        # Overrides the parent's hook: the request is built by `to_request` once the recipients are read.
        return data

    def to_request(self, options: dict[str, Any], recipients: list[Any]) -> BroadcastRequest:
        return BroadcastRequest.from_options({**options, "recipients": recipients})


options_schema = BroadcastOptionsSchema(exclude=NOT_FROM_OPTIONS)


def is_csv_upload() -> bool:
    return request.mimetype in (CSV_MIMETYPE, MULTIPART_MIMETYPE)


def _header_value(value: str) -> str:
    """Header values arrive as Latin-1; clients such as curl send UTF-8 bytes as they are."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _raw_options() -> dict[str, Any]:
    """The options from the query string, form fields and headers; 422 for unknown or repeated ones."""
    given: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    sources = [request.args]
    if request.mimetype == MULTIPART_MIMETYPE:
        sources.append(request.form)
    for source in sources:
        for name, values in source.lists():
            if name in SCALAR_OPTIONS or name in LIST_OPTIONS:
                given.setdefault(name, []).extend(values)
            else:
                unknown[name] = ["Unknown option."]
    for name in (*SCALAR_OPTIONS, *LIST_OPTIONS):
        header = request.headers.getlist(HEADER_PREFIX + name.replace("_", "-"))
        given.setdefault(name, []).extend(_header_value(value) for value in header)
    repeated = {name: ["Given more than once."] for name in SCALAR_OPTIONS if len(set(given.get(name, ()))) > 1}
    if unknown or repeated:
        raise ApiProblem(
            422,
            "The broadcast options failed validation; see `errors`.",
            problem="validation",
            errors={**unknown, **repeated},
        )
    options: dict[str, Any] = {name: values[0] for name, values in given.items() if values and name in SCALAR_OPTIONS}
    for name in INTEGER_OPTIONS:
        if name in options and _INTEGER.fullmatch(options[name].strip()):
            options[name] = int(options[name])
    for name in LIST_OPTIONS:
        if given.get(name):
            options[name] = given[name]
    for name in START_END_OPTIONS:
        start, end = options.pop(f"{name}_start", None), options.pop(f"{name}_end", None)
        if start is not None or end is not None:
            options[name] = {key: value for key, value in (("start", start), ("end", end)) if value is not None}
    return options


def _csv_source() -> IO[bytes]:
    if request.mimetype == CSV_MIMETYPE:
        return request.stream  # 413 past MAX_CONTENT_LENGTH
    upload = request.files.get(FILE_PART)  # spooled to a temporary file above 500 KB
    if upload is None:
        raise ApiProblem(
            422,
            f"The upload has no file part named `{FILE_PART}`.",
            problem="validation",
            errors={FILE_PART: ["Missing CSV file part."]},
        )
    return upload.stream


def csv_broadcast_request() -> tuple[BroadcastRequest, LineNumbers]:
    """The broadcast a CSV request asks for, and the CSV line of each recipient (for reports by line)."""
    options = options_schema.load(_raw_options())
    template = parse_template(options["message"])  # valid: the schema checked it
    variable_names = template.names if template.has_placeholders else ()
    text = io.TextIOWrapper(_csv_source(), encoding="utf-8-sig", newline="")
    recipients: list[Any] = []
    try:
        reader = CsvRecipientReader(text, phone_column=options["phone_column"], variable_names=variable_names)
        for entry in reader:
            recipients.append(entry)
            if len(recipients) > MAX_RECIPIENTS:
                raise ApiProblem(
                    422,
                    f"The CSV has more than {MAX_RECIPIENTS:,} recipients; nothing was stored.",
                    problem="validation",
                    errors={"recipients": [f"Must contain at most {MAX_RECIPIENTS:,} phone numbers."]},
                )
    except CsvHeaderError as error:
        raise ApiProblem(
            422, str(error), problem="validation", errors={"phone_column": [str(error)]}, columns=error.columns
        ) from None
    except MalformedCsvError as error:
        raise ApiProblem(400, f"The CSV cannot be read: {error}", problem="malformed-csv", line=error.line) from None
    finally:
        text.detach()  # the request owns the stream
    if not recipients:
        raise ApiProblem(
            422,
            "The CSV has a header but no rows; nothing was stored.",
            problem="validation",
            errors={"recipients": ["Must contain at least one phone number."]},
        )
    return options_schema.to_request(options, recipients), reader.line_numbers


def with_line_numbers(entries: list[dict[str, Any]], line_numbers: LineNumbers | None) -> list[dict[str, Any]]:
    """Report entries (`index` in the recipient list) with the CSV `line` added, when the request was a CSV."""
    return entries if line_numbers is None else line_numbers.annotate(entries)
