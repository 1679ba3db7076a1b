"""Marshmallow schemas: what requests must look like, and how stored rows are shown.

A broadcast's options, their rules and which views show them are declared in `shared.broadcasts.options`; the
schemas here take their fields from it. A million recipients are checked here only for type and count; normalising
each one is the fast pure function in `shared.compliance.phone_numbers`, which reports every invalid entry with its
index.
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
    validates_schema,
)

from shared.broadcasts.content import message_report
from shared.broadcasts.intake import BroadcastRequest
from shared.broadcasts.options import MAX_MESSAGE_CHARACTERS, View, filter_fields, request_fields, shown_fields
from shared.platform.models import MessageState

MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_MESSAGES_PAGE = 1_000
MAX_BROADCASTS_PAGE = 200


class BroadcastRequestSchema(Schema):
    """The JSON body of POST /v1/broadcasts: one field per option of `shared.broadcasts.options`."""

    class Meta:
        include = request_fields()

    @validates_schema
    def _message_or_media(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data.get("message") and not data.get("media_urls"):
            raise ValidationError(
                f"Must be between 1 and {MAX_MESSAGE_CHARACTERS:,} characters (may be empty only with media_urls).",
                "message",
            )

    @post_load
    def _to_request(self, data: dict[str, Any], **_kwargs: Any) -> BroadcastRequest:
        return BroadcastRequest.from_options(data)


class MessagesQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    state = fields.String(validate=validate.OneOf([state.value for state in MessageState]))
    cursor = fields.String()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_MESSAGES_PAGE))


class BroadcastsQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE
        include = filter_fields()  # the filterable options, exact match

    cursor = fields.String()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_BROADCASTS_PAGE))


class MessageInfoSchema(Schema):
    characters = fields.Integer()
    encoding = fields.String()
    segments = fields.Integer()


class BroadcastSchema(Schema):
    """A broadcast as intake reports it (202 / idempotent 200) and as lists show it."""

    class Meta:
        include = shown_fields(View.BROADCAST)  # the options every view echoes

    id = fields.UUID()
    status = fields.String()
    # Created with a test key: sent through the test account (the simulator), never to a phone.
    test = fields.Boolean()
    recipients = fields.Function(
        lambda broadcast: {
            "received": broadcast.recipients_received,
            "accepted": broadcast.recipients_accepted,
            "duplicates": broadcast.recipients_duplicates,
            "invalid": broadcast.recipients_invalid,
            "opted_out": broadcast.recipients_opted_out or 0,
            "deferred": broadcast.recipients_deferred or 0,
            "not_valid": broadcast.recipients_not_valid or 0,
            "by_country": broadcast.recipients_by_country or {},
        }
    )
    invalid = fields.List(fields.Dict(), attribute="invalid_sample")
    message = fields.Function(message_report)
    chunks = fields.Integer(attribute="chunk_count")
    created_at = fields.AwareDateTime()
    enqueued_at = fields.AwareDateTime()
    paused_at = fields.AwareDateTime()
    canceled_at = fields.AwareDateTime()
    queued_at_twilio_when_stopped = fields.Integer()
    held_reason = fields.String()
    held_until = fields.AwareDateTime()


class BroadcastDetailSchema(BroadcastSchema):
    """A broadcast with its progress; `messages` (counts per state) is added by the view."""

    class Meta:
        include = shown_fields(View.BROADCAST_DETAIL)

    body = fields.String()
    first_send_at = fields.AwareDateTime()
    last_send_at = fields.AwareDateTime()
    submitted_at = fields.AwareDateTime()
    last_receipt_at = fields.AwareDateTime()
    completed_at = fields.AwareDateTime()
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
