"""Every option a broadcast request can carry, declared once in `BROADCAST_OPTIONS`.

A declaration says what the option is (its marshmallow field: type and validation), the broadcasts column(s) it is
stored in, whether the idempotency fingerprint covers it, whether it reaches Twilio, where it is shown back, how a
CSV upload gives it, an example and a description. The rest follows from the list: the request, response and list
query schemas (api/schemas.py), the CSV upload's option names (api/csv_intake.py), `BroadcastRequest`, its
fingerprint and the stored row (shared/broadcasts/intake.py), the OpenAPI examples, the messages.csv columns, the
completion callback's fields, the dashboard's rows and the request table of docs/api.md
(`python -m shared.broadcasts.options` prints it). tests/api/test_broadcast_options.py fails when a declared option
is missing from one of them.

Adding an option: declare it here, add its column to `shared.platform.models.Broadcast` and a migration, and
paste the new table into docs/api.md. Code that must act on the option (intake checks, the worker's Twilio
request) still has to be written, and `BroadcastRequest` gets an attribute for it only if intake reads it.
"""

from __future__ import annotations

import copy
import enum
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.broadcasts.media import MAX_MEDIA_URLS, MAX_VALIDITY_PERIOD_SECONDS, media_url_problem
from shared.broadcasts.templates import TemplateSyntaxError, parse_template
from shared.compliance.phone_numbers import check_default_region
from shared.compliance.quiet_hours import HH_MM_PATTERN
from shared.platform.models import BroadcastPriority
from shared.platform.urls import callback_url_problem

MAX_MESSAGE_CHARACTERS = 1_600
MAX_RECIPIENTS = 1_000_000
ON_INVALID_CHOICES = ("reject", "skip")
MAX_CLIENT_REFERENCE_CHARACTERS = 256
# What the columns hold (integer; numeric(14, 4)): larger values are refused as input, never left to the database.
MAX_SEGMENTS_LIMIT = 2**31 - 1
MAX_COST_LIMIT = Decimal("1e10")


class CsvForm(enum.Enum):
    """How a CSV upload gives an option: query string, `X-Bulksms-<Name>` header or multipart form field."""

    SCALAR = "scalar"  # one text value, parsed by the option's field
    INTEGER = "integer"  # one text value, turned into an integer first when it is one (the field is strict)
    LIST = "list"  # repeatable: every value given, in order
    START_END = "start_end"  # `<name>_start` and `<name>_end` stand for the JSON object `{"start", "end"}`
    FILE = "file"  # the CSV itself
    NOT_ACCEPTED = "not_accepted"


class View(enum.Enum):
    """Where a stored option is shown back to the client."""

    BROADCAST = "broadcast"  # every JSON view: intake's 202 / 200, GET one, GET list, control actions
    BROADCAST_DETAIL = "broadcast detail"  # GET /v1/broadcasts/{id} only
    DASHBOARD = "dashboard"  # a row of the dashboard's broadcast page
    MESSAGES_EXPORT = "messages export"  # a column of messages.csv, the same on every row
    COMPLETION_CALLBACK = "completion callback"  # a field of the completion callback's `broadcast` object


EVERY_VIEW = frozenset({View.BROADCAST, View.DASHBOARD, View.MESSAGES_EXPORT, View.COMPLETION_CALLBACK})
# Shown as the value of the option's one column (the JSON views may combine several columns).
SINGLE_COLUMN_VIEWS = frozenset({View.DASHBOARD, View.MESSAGES_EXPORT, View.COMPLETION_CALLBACK})


@dataclass(frozen=True)
class BroadcastOption:
    """One option of a broadcast request: what it is, where it is kept and shown, how it is given."""

    name: str
    field: fields.Field  # the request field: type, default and validation (copied into each schema)
    description: str  # one line; the request table of docs/api.md and the OpenAPI property description
    example: Any  # as it is written in a JSON request (and shown in responses)
    columns: tuple[str, ...] = ()  # the broadcasts columns it is stored in; () = not stored as given
    fingerprinted: bool = True  # part of the Idempotency-Key comparison when given (never when None)
    reaches_twilio: bool = False  # sent with each message (shared.broadcasts.outgoing reads it back)
    csv: CsvForm = CsvForm.SCALAR
    shown_in: frozenset[View] = frozenset()
    response_field: fields.Field | None = None  # how the JSON views (and the other views) show it
    filterable: bool = False  # `GET /v1/broadcasts?<name>=` lists only exact matches (the column needs an index)
    # Hooks for the few options whose value is reshaped: the schema's loaded value → BroadcastRequest's,
    # and BroadcastRequest's value → its columns.
    to_request: Callable[[Any], Any] | None = None
    to_columns: Callable[[Any], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.shown_in and self.response_field is None:
            raise ValueError(f"option {self.name} is shown but has no response_field")
        if (self.shown_in & SINGLE_COLUMN_VIEWS or self.filterable) and len(self.columns) != 1:
            raise ValueError(f"option {self.name} must be stored in one column to be shown or filtered on")
        if len(self.columns) > 1 and self.to_columns is None:
            raise ValueError(f"option {self.name} is stored in several columns but has no to_columns")

    def request_field(self) -> fields.Field:
        """A new copy of the request field, described and with its example (for OpenAPI)."""
        return _described(self.field, self.description, self.example)

    def query_field(self) -> fields.Field:
        """The list filter's query parameter: the request field's rules, absent meaning no filter."""
        return _described(self.field, f"Only broadcasts whose `{self.name}` is exactly this.", self.example)

    def shown_field(self) -> fields.Field:
        assert self.response_field is not None
        return _described(self.response_field, self.description, self.example)

    def request_value(self, loaded: Any) -> Any:
        """The schema's loaded value as `BroadcastRequest` holds it."""
        return loaded if self.to_request is None else self.to_request(loaded)

    def column_values(self, value: Any) -> dict[str, Any]:
        """The broadcasts columns (and their values) a request value is stored as; {} when not stored."""
        if not self.columns:
            return {}
        if self.to_columns is not None:
            return self.to_columns(value)
        return {self.columns[0]: value}

    def shown_value(self, row: Any) -> Any:
        """The option of a stored broadcast (an ORM object or a row with its columns), as the JSON views show it."""
        assert self.response_field is not None
        return self.response_field.serialize(self.columns[0] if len(self.columns) == 1 else self.name, row)

    def csv_names(self) -> tuple[str, ...]:
        if self.csv in (CsvForm.FILE, CsvForm.NOT_ACCEPTED):
            return ()
        if self.csv is CsvForm.START_END:
            return (f"{self.name}_start", f"{self.name}_end")
        return (self.name,)


def _described(original: fields.Field, description: str, example: Any) -> fields.Field:
    copied = copy.deepcopy(original)
    copied.metadata = {**copied.metadata, "description": description, "example": example}
    return copied


# ----------------------------------------------------------------------------------- fields and their rules


class RecipientList(fields.Field):
    """A JSON array of 1..MAX_RECIPIENTS entries, passed through untouched (entries are checked at intake)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValidationError("Must be a JSON array of phone numbers.")
        if not value:
            raise ValidationError("Must contain at least one phone number.")
        if len(value) > MAX_RECIPIENTS:
            raise ValidationError(f"Must contain at most {MAX_RECIPIENTS:,} phone numbers (got {len(value):,}).")
        return value


HH_MM = validate.Regexp(HH_MM_PATTERN, error="Must be a time as HH:MM, 00:00 to 23:59.")


class QuietHoursSchema(Schema):
    """`{"start": "21:00", "end": "08:00"}`: the recipient's local times between which nothing is sent."""

    start = fields.String(required=True, validate=HH_MM)
    end = fields.String(required=True, validate=HH_MM)

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("start") == data.get("end"):
            raise ValidationError("start and end must differ.", "end")


def quiet_hours_view(broadcast: Any) -> dict[str, str] | None:
    if not broadcast.quiet_hours_start:
        return None
    return {"start": broadcast.quiet_hours_start, "end": broadcast.quiet_hours_end}


def _is_a_valid_template(message: str) -> None:
    try:
        parse_template(message)
    except TemplateSyntaxError as error:
        raise ValidationError(f"Template: {error}. Write '{{{{' and '}}}}' for literal braces.") from None


def _has_no_nul_characters(text: str) -> None:
    if "\x00" in text:
        raise ValidationError("Must not contain NUL characters.")


def _has_no_control_characters(text: str) -> None:
    if any(unicodedata.category(character) == "Cc" for character in text):
        raise ValidationError("Must not contain control characters (tabs, line breaks, NUL, ...).")


def _is_a_region(region: str) -> None:
    try:
        check_default_region(region)
    except ValueError as error:
        raise ValidationError(str(error).replace("'", "`", 2) + ".") from None


def _is_a_media_url(url: str) -> None:
    problem = media_url_problem(url)
    if problem is not None:
        raise ValidationError(problem)


def _is_a_callback_url(url: str) -> None:
    problem = callback_url_problem(url)
    if problem is not None:
        raise ValidationError(problem)


# ------------------------------------------------------------------------------------------- the options

BROADCAST_OPTIONS: tuple[BroadcastOption, ...] = (
    BroadcastOption(
        "message",
        fields.String(
            load_default="",
            validate=[
                validate.Length(
                    max=MAX_MESSAGE_CHARACTERS, error=f"Must be between 1 and {MAX_MESSAGE_CHARACTERS:,} characters."
                ),
                _is_a_valid_template,
                _has_no_nul_characters,
            ],
        ),
        "String, 1 to 1,600 characters (no NUL); may be empty or absent only with `media_urls`. May be a template "
        "with `{name}` placeholders; write `{{` / `}}` for literal braces.",
        "Polling stations are open until 10pm today.",
        # Stored as `body` by intake once checked (the literal text of a plain message, a template as given).
        reaches_twilio=True,
    ),
    BroadcastOption(
        "recipients",
        RecipientList(required=True),
        'Array of 1 to 1,000,000 entries: phone-number strings, or objects `{"to": "+1…", "vars": '
        '{"first_name": "Ann"}}` (a list may mix both).',
        ["+44 7700 900123", "0044-7700-900124", "(+1) 202.555.0100"],
        # Stored as one `messages` row each by intake.
        csv=CsvForm.FILE,
    ),
    BroadcastOption(
        "on_invalid",
        fields.String(load_default="reject", validate=validate.OneOf(ON_INVALID_CHOICES)),
        "`reject` (default): an invalid recipient refuses the whole broadcast; `skip`: only the valid ones are "
        "stored and sent.",
        "reject",
    ),
    BroadcastOption(
        "callback_url",
        fields.String(load_default=None, validate=_is_a_callback_url),
        "Optional; receives one signed POST with the final summary when the broadcast completes (see Completion "
        "callback). `https://` with a host name; plain http only to `localhost`, `127.0.0.1` or `::1` (development); "
        "at most 2,000 characters.",
        "https://hooks.example.com/bulksms",
        columns=("callback_url",),
        shown_in=frozenset({View.BROADCAST_DETAIL}),
        response_field=fields.String(),
    ),
    BroadcastOption(
        "send_at",
        fields.AwareDateTime(format="iso", load_default=None),
        "Optional ISO-8601 time with an offset or `Z`, at least `SCHEDULE_MIN_LEAD_SECONDS` (default 60 s) and at "
        "most 35 days ahead. The broadcast is stored `scheduled` and released at that time (see Scheduling).",
        "2026-12-01T09:00:00+00:00",
        columns=("send_at",),
        shown_in=frozenset({View.BROADCAST}),
        response_field=fields.AwareDateTime(),
    ),
    BroadcastOption(
        "quiet_hours",
        fields.Nested(QuietHoursSchema, load_default=None),
        'Optional `{"start": "21:00", "end": "08:00"}` (HH:MM, 24 h, start ≠ end; may wrap midnight): nobody '
        "receives the message inside that window of their own local time.",
        {"start": "21:00", "end": "08:00"},
        columns=("quiet_hours_start", "quiet_hours_end"),
        csv=CsvForm.START_END,
        shown_in=frozenset({View.BROADCAST}),
        response_field=fields.Function(quiet_hours_view),
        to_request=lambda window: (window["start"], window["end"]) if window else None,
        to_columns=lambda window: {
            "quiet_hours_start": window[0] if window else None,
            "quiet_hours_end": window[1] if window else None,
        },
    ),
    BroadcastOption(
        "media_urls",
        fields.List(
            fields.String(validate=_is_a_media_url),
            load_default=None,
            validate=validate.Length(max=MAX_MEDIA_URLS, error=f"At most {MAX_MEDIA_URLS} media URLs."),
        ),
        "Optional; 1 to 10 `https://` URLs with a host name, sent as repeated `MediaUrl`: every message is an MMS.",
        ["https://example.com/poster.jpg"],
        columns=("media_urls",),
        reaches_twilio=True,
        csv=CsvForm.LIST,
        # Shown in the `message` report (shared.broadcasts.content.message_report).
        to_request=lambda urls: tuple(urls) if urls else None,
        to_columns=lambda urls: {"media_urls": list(urls) if urls else None},
    ),
    BroadcastOption(
        "validity_period",
        fields.Integer(strict=True, load_default=None, validate=validate.Range(min=1, max=MAX_VALIDITY_PERIOD_SECONDS)),
        "Optional integer, 1 to 36,000 seconds, sent as Twilio's `ValidityPeriod`: undelivered after that long.",
        3600,
        columns=("validity_period",),
        reaches_twilio=True,
        csv=CsvForm.INTEGER,
        # Shown in the `message` report.
    ),
    BroadcastOption(
        "deadline",
        fields.AwareDateTime(format="iso", load_default=None),
        "Optional ISO-8601 time with an offset or `Z`, in the future, at most 72 hours ahead and after `send_at`: "
        "nothing is sent after it. Messages not sent by then become `expired`; each message's `ValidityPeriod` "
        "is cut to the time left, so Twilio drops (30036) what it still holds then (see Deadline).",
        "2026-12-01T18:00:00+00:00",
        columns=("deadline",),
        reaches_twilio=True,
        shown_in=frozenset({View.BROADCAST, View.DASHBOARD}),
        response_field=fields.AwareDateTime(),
    ),
    BroadcastOption(
        "priority",
        fields.String(load_default=None, validate=validate.OneOf([priority.value for priority in BroadcastPriority])),
        "Optional `high`, `normal` (default) or `bulk`: the broadcast's share of the sending capacity while "
        "others send at the same time, 4:2:1 (see Fair sharing). None starves.",
        "high",
        columns=("priority",),
        shown_in=frozenset({View.BROADCAST, View.DASHBOARD}),
        response_field=fields.String(),
        to_columns=lambda priority: {"priority": priority or BroadcastPriority.NORMAL.value},
    ),
    BroadcastOption(
        "max_segments",
        fields.Integer(strict=True, load_default=None, validate=validate.Range(min=1, max=MAX_SEGMENTS_LIMIT)),
        "Optional integer, 1 to 2,147,483,647: refuse (422) if any recipient's message would take more segments.",
        2,
        columns=("max_segments",),
        csv=CsvForm.INTEGER,
        # Shown in the `cost` report (shared.broadcasts.content.cost_report).
    ),
    BroadcastOption(
        "max_cost",
        fields.Decimal(
            load_default=None,
            allow_nan=False,
            validate=validate.Range(min=0, min_inclusive=False, max=MAX_COST_LIMIT, max_inclusive=False),
        ),
        "Optional number, > 0 and < 10,000,000,000: refuse (422) if the estimated cost is higher.",
        50,
        columns=("max_cost",),
        # Shown in the `cost` report.
    ),
    BroadcastOption(
        "client_reference",
        fields.String(
            load_default=None,
            validate=[
                validate.Length(
                    min=1,
                    max=MAX_CLIENT_REFERENCE_CHARACTERS,
                    error=f"Must be 1 to {MAX_CLIENT_REFERENCE_CHARACTERS} characters.",
                ),
                _has_no_control_characters,
            ],
        ),
        f"Optional; your own id for the broadcast, 1 to {MAX_CLIENT_REFERENCE_CHARACTERS} characters, no control "
        "characters. Echoed in every view of the broadcast, on each row of messages.csv and in the completion "
        "callback; `GET /v1/broadcasts?client_reference=` lists the broadcasts that have it.",
        "crm-campaign-2026-11-29",
        columns=("client_reference",),
        shown_in=EVERY_VIEW,
        response_field=fields.String(),
        filterable=True,
    ),
    BroadcastOption(
        "default_region",
        fields.String(load_default=None, validate=_is_a_region),
        "Optional ISO 3166-1 alpha-2 country code (`GB`): recipients may be written as national numbers of that "
        "country (`07700 900123`). Without it the API key's default region applies, then the `DEFAULT_REGION` "
        "setting; without any, only international numbers (`+44…`, `0044…`). Shown back as the region used.",
        "GB",
        columns=("default_region",),
        shown_in=frozenset({View.BROADCAST}),
        response_field=fields.String(),
        to_request=check_default_region,
    ),
    BroadcastOption(
        "strict_numbers",
        fields.Boolean(load_default=None),
        "Optional boolean: also refuse numbers that have a possible length but are in no range libphonenumber "
        "knows as assigned (reason `not a valid number for …`); published fictional ranges are always accepted.",
        True,
        columns=("strict_numbers",),
        shown_in=frozenset({View.BROADCAST}),
        response_field=fields.Boolean(),
    ),
    BroadcastOption(
        "dry_run",
        fields.Boolean(load_default=False),
        "Optional boolean: validate and report only; nothing stored or sent, 200 with the same report (see Dry run).",
        False,
        fingerprinted=False,  # a dry run is never stored, so there is nothing to replay
    ),
)

OPTIONS_BY_NAME: Mapping[str, BroadcastOption] = {option.name: option for option in BROADCAST_OPTIONS}
FILTERABLE_OPTION_NAMES = tuple(option.name for option in BROADCAST_OPTIONS if option.filterable)


def request_fields() -> dict[str, fields.Field]:
    """The request schema's fields: one per option."""
    return {option.name: option.request_field() for option in BROADCAST_OPTIONS}


def shown_fields(view: View) -> dict[str, fields.Field]:
    """The response fields of the options shown in `view`."""
    return {option.name: option.shown_field() for option in BROADCAST_OPTIONS if view in option.shown_in}


def filter_fields() -> dict[str, fields.Field]:
    """The list query's filters: one per filterable option."""
    return {option.name: option.query_field() for option in BROADCAST_OPTIONS if option.filterable}


def csv_option_names(*forms: CsvForm) -> tuple[str, ...]:
    """The names a CSV upload gives the options of these forms by, in declaration order."""
    return tuple(name for option in BROADCAST_OPTIONS if option.csv in forms for name in option.csv_names())


def shown_option_names(view: View) -> tuple[str, ...]:
    return tuple(option.name for option in BROADCAST_OPTIONS if view in option.shown_in)


def shown_columns(view: View) -> tuple[str, ...]:
    """The columns to read for the options shown in a single-column view (messages.csv, completion callback...)."""
    return tuple(option.columns[0] for option in BROADCAST_OPTIONS if view in option.shown_in)


def shown_values(row: Any, view: View) -> dict[str, Any]:
    """The options shown in `view`, by name, from a stored broadcast (ORM object or a row with `shown_columns`)."""
    return {option.name: option.shown_value(row) for option in BROADCAST_OPTIONS if view in option.shown_in}


def shown_examples(view: View) -> dict[str, Any]:
    """The examples of the options shown in `view`, by name (the OpenAPI response examples)."""
    return {option.name: option.example for option in BROADCAST_OPTIONS if view in option.shown_in}


def _csv_cell(option: BroadcastOption) -> str:
    if option.csv is CsvForm.FILE:
        return "the CSV rows"
    if option.csv is CsvForm.NOT_ACCEPTED:
        return "—"
    names = ", ".join(f"`{name}`" for name in option.csv_names())
    return names + (" (repeatable)" if option.csv is CsvForm.LIST else "")


def options_markdown_table() -> str:
    """The request table of docs/api.md."""
    lines = ["| field | rule | CSV upload | Idempotency-Key |", "| --- | --- | --- | --- |"]
    for option in BROADCAST_OPTIONS:
        compared = "compared" if option.fingerprinted else "ignored"
        lines.append(f"| `{option.name}` | {option.description} | {_csv_cell(option)} | {compared} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(options_markdown_table(), end="")
