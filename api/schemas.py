"""Marshmallow schemas: what requests must look like, and how stored rows are shown.

A million recipients are checked here only for type and count; normalising each one is the fast
pure function in `shared.compliance.phone_numbers`, which reports every invalid entry with its index.
"""

from __future__ import annotations

from typing import Any

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates,
    validates_schema,
)

from api.control_schemas import QuietHoursSchema, quiet_hours_view
from shared.broadcasts.content import message_report
from shared.broadcasts.intake import MAX_MESSAGE_CHARACTERS, MAX_RECIPIENTS, ON_INVALID_CHOICES, BroadcastRequest
from shared.broadcasts.media import MAX_MEDIA_URLS, MAX_VALIDITY_PERIOD_SECONDS, media_url_problem
from shared.broadcasts.templates import TemplateSyntaxError, parse_template
from shared.platform.models import MessageState
from shared.receipts.completion import callback_url_problem

MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_MESSAGES_PAGE = 1_000
MAX_BROADCASTS_PAGE = 200


class RecipientList(fields.Field):
    """A JSON array of 1..MAX_RECIPIENTS entries, passed through untouched (entries are checked later)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValidationError("Must be a JSON array of phone numbers.")
        if not value:
            raise ValidationError("Must contain at least one phone number.")
        if len(value) > MAX_RECIPIENTS:
            raise ValidationError(f"Must contain at most {MAX_RECIPIENTS:,} phone numbers (got {len(value):,}).")
        return value


class BroadcastRequestSchema(Schema):
    # May be empty (or absent) only when `media_urls` is given: an MMS without text.
    message = fields.String(
        load_default="",
        validate=validate.Length(
            max=MAX_MESSAGE_CHARACTERS, error=f"Must be between 1 and {MAX_MESSAGE_CHARACTERS:,} characters."
        ),
    )
    recipients = RecipientList(required=True)
    on_invalid = fields.String(load_default="reject", validate=validate.OneOf(ON_INVALID_CHOICES))
    callback_url = fields.String(load_default=None)
    # Scheduling and quiet hours (api.control_schemas); send_at's lead time is checked by the view.
    send_at = fields.AwareDateTime(format="iso", load_default=None)
    quiet_hours = fields.Nested(QuietHoursSchema, load_default=None)
    media_urls = fields.List(
        fields.String(),
        load_default=None,
        validate=validate.Length(max=MAX_MEDIA_URLS, error=f"At most {MAX_MEDIA_URLS} media URLs."),
    )
    validity_period = fields.Integer(
        strict=True,
        load_default=None,
        validate=validate.Range(min=1, max=MAX_VALIDITY_PERIOD_SECONDS),
    )
    max_segments = fields.Integer(strict=True, load_default=None, validate=validate.Range(min=1))
    max_cost = fields.Decimal(load_default=None, allow_nan=False, validate=validate.Range(min=0, min_inclusive=False))
    dry_run = fields.Boolean(load_default=False)

    @validates("media_urls")
    def _media_urls_are_https(self, value: list[str] | None, **_kwargs: Any) -> None:
        problems = {}
        for index, url in enumerate(value or []):
            problem = media_url_problem(url)
            if problem is not None:
                problems[index] = [problem]
        if problems:
            raise ValidationError(problems)

    @validates_schema
    def _message_or_media(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data.get("message") and not data.get("media_urls"):
            raise ValidationError(
                f"Must be between 1 and {MAX_MESSAGE_CHARACTERS:,} characters (may be empty only with media_urls).",
                "message",
            )

    @validates("message")
    def _message_is_a_valid_template(self, value: str, **_kwargs: Any) -> None:
        try:
            parse_template(value)
        except TemplateSyntaxError as error:
            raise ValidationError(f"Template: {error}. Write '{{{{' and '}}}}' for literal braces.") from None

    @validates("callback_url")
    def _callback_url_is_https(self, value: str | None, **_kwargs: Any) -> None:
        problem = callback_url_problem(value) if value is not None else None
        if problem is not None:
            raise ValidationError(problem)

    @validates("message")
    def _no_nul_characters(self, value: str, **_kwargs: Any) -> None:
        if "\x00" in value:
            raise ValidationError("Must not contain NUL characters.")

    @post_load
    def _to_request(self, data: dict[str, Any], **_kwargs: Any) -> BroadcastRequest:
        return BroadcastRequest(
            data["message"],
            data["recipients"],
            data["on_invalid"],
            data["callback_url"],
            media_urls=tuple(data["media_urls"]) if data["media_urls"] else None,
            validity_period=data["validity_period"],
            max_segments=data["max_segments"],
            max_cost=data["max_cost"],
            dry_run=data["dry_run"],
            send_at=data["send_at"],
            quiet_hours=(data["quiet_hours"]["start"], data["quiet_hours"]["end"]) if data["quiet_hours"] else None,
        )


class MessagesQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    state = fields.String(validate=validate.OneOf([state.value for state in MessageState]))
    cursor = fields.String()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_MESSAGES_PAGE))


class BroadcastsQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    cursor = fields.String()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_BROADCASTS_PAGE))


class MessageInfoSchema(Schema):
    characters = fields.Integer()
    encoding = fields.String()
    segments = fields.Integer()


class BroadcastSchema(Schema):
    """A broadcast as intake reports it (202 / idempotent 200) and as lists show it."""

    id = fields.UUID()
    status = fields.String()
    recipients = fields.Function(
        lambda broadcast: {
            "received": broadcast.recipients_received,
            "accepted": broadcast.recipients_accepted,
            "duplicates": broadcast.recipients_duplicates,
            "invalid": broadcast.recipients_invalid,
            "opted_out": broadcast.recipients_opted_out or 0,
            "deferred": broadcast.recipients_deferred or 0,
        }
    )
    invalid = fields.List(fields.Dict(), attribute="invalid_sample")
    message = fields.Function(message_report)
    chunks = fields.Integer(attribute="chunk_count")
    created_at = fields.AwareDateTime()
    enqueued_at = fields.AwareDateTime()
    send_at = fields.AwareDateTime()
    quiet_hours = fields.Function(quiet_hours_view)
    paused_at = fields.AwareDateTime()
    canceled_at = fields.AwareDateTime()


class BroadcastDetailSchema(BroadcastSchema):
    """A broadcast with its progress; `messages` (counts per state) is added by the view."""

    body = fields.String()
    first_send_at = fields.AwareDateTime()
    last_send_at = fields.AwareDateTime()
    submitted_at = fields.AwareDateTime()
    last_receipt_at = fields.AwareDateTime()
    completed_at = fields.AwareDateTime()
    callback_url = fields.String()
    callback_sent_at = fields.AwareDateTime()
    callback_attempts = fields.Integer()


class MessageSchema(Schema):
    id = fields.Integer()
    to = fields.String(attribute="to_number")
    state = fields.String()
    attempts = fields.Integer()
    chunk_number = fields.Integer()
    twilio_sid = fields.String()
    twilio_status = fields.String()
    error_code = fields.Integer()
    error_message = fields.String()
    created_at = fields.AwareDateTime()
    sent_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
