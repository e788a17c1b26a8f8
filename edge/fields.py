"""Marshmallow fields and schemas every blueprint shares: storable strings, bounded ids, JSON values, paging,
label schemas."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from base.labels import ANSWER_TYPES
from base.validation import MAX_ID, json_error, text_error


class Text(fields.String):
    """A string the database can store: no NUL characters or unpaired surrogates."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        result = super()._deserialize(value, attr, data, **kwargs)
        problem = text_error(result)
        if problem:
            raise self.make_error("invalid_text", problem=problem)
        return result

    default_error_messages = {"invalid_text": "{problem}."}  # noqa: RUF012


class FullMatch(validate.Regexp):
    """A pattern the whole value must match. The spec shows it as `^(?:...)$`, which JSON Schema (ECMA-262) reads
    the same way; Python's `$` alone would also accept a trailing newline, so the check is a full match."""

    def __init__(self, pattern: str, **kwargs: Any) -> None:
        super().__init__(f"^(?:{pattern})$", **kwargs)

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class _Storable(fields.Field):
    """Free-form JSON that the database can store. Bodies are checked as they are parsed (StrictParser); this
    checks the value wherever else a schema gets it from."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        error = json_error(result)
        if error is not None:
            raise ValidationError(error.messages() if error.path else error.messages()["_schema"])
        return result


class JSON(_Storable, fields.Raw):
    """Any JSON value: an answer, a known answer."""


class JSONObject(_Storable, fields.Dict):
    """A JSON object: a question's data, client metadata, evidence."""


class Fixed(fields.Decimal):
    """A decimal kept in a NUMERIC column with `places` decimal places. It is taken as given or refused, never
    rounded (0.4999 would be stored as 0.50, and 1.004 rounded into a range that ends at 1): more significant
    places than the column keeps are an error; trailing zeros are not places (0.0500 is 0.05). Bound it with
    Decimal ranges: Decimal("0.999") > 0.999 as a float."""

    default_error_messages = {"places": "at most {places} decimal places."}  # noqa: RUF012

    def __init__(self, places: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.column_places = places

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        number: Decimal = super()._deserialize(value, attr, data, **kwargs)
        _, digits, exponent = number.as_tuple()
        significant = "".join(map(str, digits)).rstrip("0")
        if significant and -(int(exponent) + len(digits) - len(significant)) > self.column_places:
            raise self.make_error("places", places=self.column_places)
        return number


def Id(**kwargs: Any) -> fields.Integer:  # noqa: N802 - reads like a field class
    """An id field: a positive 32-bit integer."""
    return fields.Integer(validate=validate.Range(1, MAX_ID), **kwargs)


class PageQuerySchema(Schema):
    after = fields.Integer(validate=validate.Range(0, 2**31 - 1),
                           metadata={"description": "Return rows with an id greater than this (keyset paging)."})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"


class CategorySchema(Schema):
    key = Text(required=True, validate=FullMatch(KEY_PATTERN, error="must be 1-64 characters of "
                                                                "letters, digits, _ . : - starting alphanumeric"))
    name = Text(required=True, validate=validate.Length(1, 200))
    description = Text(validate=validate.Length(max=2000))
    example = Text(validate=validate.Length(max=2000))


# The keys each type of label schema allows, and those it needs.
LABEL_KEYS = {
    "single_choice": {"type", "categories"},
    "multi_choice": {"type", "categories", "min_choices", "max_choices"},
    "rating": {"type", "min", "max", "min_label", "max_label"},
    "text": {"type", "max_length"},
}

LABEL_NEEDS = {"single_choice": ["categories"], "multi_choice": ["categories"], "rating": ["min", "max"], "text": []}


class LabelSchemaSchema(Schema):
    """What a worker answers: single_choice, multi_choice, rating or text."""

    class Meta:
        openapi = {"oneOf": [
            {"properties": {"type": {"enum": [kind]}}, "required": ["type", *LABEL_NEEDS[kind]],
             "not": {"anyOf": [{"required": [key]} for key in sorted(set().union(*LABEL_KEYS.values()) - keys)]}}
            for kind, keys in LABEL_KEYS.items()]}

    type = Text(required=True, validate=validate.OneOf(ANSWER_TYPES))
    categories = fields.List(fields.Nested(CategorySchema), validate=validate.Length(2, 500))
    min_choices = fields.Integer(strict=True, validate=validate.Range(0, 500))
    max_choices = fields.Integer(strict=True, validate=validate.Range(1, 500))
    min = fields.Integer(strict=True, validate=validate.Range(-1000, 1000))
    max = fields.Integer(strict=True, validate=validate.Range(-1000, 1000))
    min_label = Text(validate=validate.Length(max=200))
    max_label = Text(validate=validate.Length(max=200))
    max_length = fields.Integer(strict=True, validate=validate.Range(1, 100_000))

    @validates_schema
    def _per_type(self, data: dict[str, Any], **_: Any) -> None:
        kind = data.get("type")
        if kind not in LABEL_KEYS:
            return
        extra = sorted(set(data) - LABEL_KEYS[kind])
        if extra:
            raise ValidationError({k: [f"not allowed for type {kind}"] for k in extra})
        missing = [k for k in LABEL_NEEDS[kind] if k not in data]
        if missing:
            raise ValidationError({k: [f"required for type {kind}"] for k in missing})
        if kind in ("single_choice", "multi_choice"):
            keys = [c["key"] for c in data["categories"]]
            if len(set(keys)) != len(keys):
                raise ValidationError({"categories": ["category keys must be unique"]})
            lo, hi = data.get("min_choices", 0), data.get("max_choices", len(keys))
            if kind == "multi_choice" and not lo <= hi <= len(keys):
                raise ValidationError({"max_choices": ["need min_choices <= max_choices <= number of categories"]})
        if kind == "rating":
            if not data["min"] < data["max"] or data["max"] - data["min"] > 100:
                raise ValidationError({"max": ["need min < max and at most 100 steps"]})


class MoneySchema(Schema):
    """Every amount of money in the API: integer cents (never a float) and an ISO 4217 currency code."""

    cents = fields.Integer(required=True, strict=True, validate=validate.Range(-(10**15), 10**15),
                           metadata={"description": "Integer minor units (cents); never a float."})
    currency = Text(required=True, validate=FullMatch("[A-Z]{3}", error="an ISO 4217 code like USD"))


def money(cents: int, currency: str) -> dict[str, Any]:
    """A money field's JSON."""
    return {"cents": cents, "currency": currency}
