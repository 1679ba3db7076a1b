"""Marshmallow schemas for rescheduling a broadcast and for the opt-out list."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.compliance.opt_outs import MAX_REASON_LENGTH

MAX_OPT_OUTS_PER_REQUEST = 10_000
MAX_OPT_OUTS_PAGE = 1_000


class RescheduleSchema(Schema):
    send_at = fields.AwareDateTime(format="iso", required=True)


class OptOutsQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    search = fields.String(load_default=None, validate=validate.Length(max=20))
    cursor = fields.String()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_OPT_OUTS_PAGE))


class OptOutsCreateSchema(Schema):
    """`{"numbers": [...], "reason": "..."}` or `{"number": "...", "reason": "..."}`."""

    number = fields.String(load_default=None)
    numbers = fields.List(
        fields.Raw(),
        load_default=None,
        validate=validate.Length(min=1, max=MAX_OPT_OUTS_PER_REQUEST),
    )
    reason = fields.String(load_default=None, validate=validate.Length(max=MAX_REASON_LENGTH))

    @validates_schema
    def _one_of(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if (data.get("number") is None) == (data.get("numbers") is None):
            raise ValidationError("Give either `number` or `numbers`.", "numbers")


class OptOutSchema(Schema):
    phone_number = fields.String(data_key="number")
    source = fields.String()
    reason = fields.String()
    created_at = fields.AwareDateTime()
