"""Answer types of a project's label schema, and validation of one answer against it.

Kept free of marshmallow so item imports (a million gold answers) and submissions validate fast.
The schema document itself is validated at the HTTP edge (edge/blueprint.py, LabelSchemaSchema).
"""

from __future__ import annotations

from typing import Any

ANSWER_TYPES = ("single_choice", "multi_choice", "rating", "text")


class AnswerError(ValueError):
    """An answer does not fit the label schema."""


def category_keys(schema: dict[str, Any]) -> list[str]:
    return [c["key"] for c in schema.get("categories", [])]


def validate_answer(schema: dict[str, Any], value: Any) -> Any:
    """Return the normalized answer, or raise AnswerError saying why it does not fit."""
    kind = schema["type"]
    if kind == "single_choice":
        if not isinstance(value, str):
            raise AnswerError("must be one category key (a string)")
        if value not in category_keys(schema):
            raise AnswerError(f"unknown label key {value!r}; expected one of {category_keys(schema)}")
        return value
    if kind == "multi_choice":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AnswerError("must be a list of category keys")
        keys = category_keys(schema)
        unknown = [v for v in value if v not in keys]
        if unknown:
            raise AnswerError(f"unknown label keys {unknown}; expected keys from {keys}")
        if len(set(value)) != len(value):
            raise AnswerError("lists a category more than once")
        lo, hi = schema.get("min_choices", 0), schema.get("max_choices") or len(keys)
        if not lo <= len(value) <= hi:
            raise AnswerError(f"must choose between {lo} and {hi} categories")
        return sorted(value, key=keys.index)
    if kind == "rating":
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnswerError("must be a whole number")
        if not schema["min"] <= value <= schema["max"]:
            raise AnswerError(f"must be between {schema['min']} and {schema['max']}")
        return value
    if kind == "text":
        if not isinstance(value, str) or not value.strip():
            raise AnswerError("must be non-empty text")
        limit = schema.get("max_length", 1000)
        if len(value) > limit:
            raise AnswerError(f"is longer than {limit} characters")
        return value
    raise AnswerError(f"unsupported answer type {kind!r}")  # pragma: no cover - schema validated on write


def narrowing(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why `new` would refuse an answer that `old` accepts (None: it accepts every one of them). Once work is
    published, a label schema may only widen: answers in flight and stored stay valid."""
    if old["type"] != new["type"]:
        return f"changes the answer type from {old['type']} to {new['type']}"
    kind = old["type"]
    if kind in ("single_choice", "multi_choice"):
        dropped = [k for k in category_keys(old) if k not in category_keys(new)]
        if dropped:
            return f"drops the label keys {dropped}"
        if kind == "multi_choice":
            lo_old, hi_old = old.get("min_choices", 0), old.get("max_choices") or len(category_keys(old))
            lo_new, hi_new = new.get("min_choices", 0), new.get("max_choices") or len(category_keys(new))
            if lo_new > lo_old or hi_new < hi_old:
                return f"narrows the number of choices from {lo_old}-{hi_old} to {lo_new}-{hi_new}"
    if kind == "rating" and (new["min"] > old["min"] or new["max"] < old["max"]):
        return f"narrows the scale from {old['min']}-{old['max']} to {new['min']}-{new['max']}"
    if kind == "text" and new.get("max_length", 1000) < old.get("max_length", 1000):
        return "shortens the longest answer allowed"
    return None


def same_answer(schema: dict[str, Any], given: Any, known: Any) -> bool:
    """Whether a (normalized) answer matches a known one: text ignoring case and runs of whitespace."""
    if schema["type"] == "text":
        return " ".join(given.split()).casefold() == " ".join(known.split()).casefold()
    return bool(given == known)


def validate_answer_set(schema: dict[str, Any], expected: list[int], answers: list[dict[str, Any]], *,
                        key: str, stranger: str) -> tuple[dict[int, Any], dict[str, list[str]]]:
    """One answer per expected id (an assignment's items, a test's questions): (normalized answers in the order
    of `expected`, errors by id). `key` names the id field of each answer; `stranger` is the error for an id
    that is not expected."""
    errors: dict[str, list[str]] = {}
    values: dict[int, Any] = {}
    wanted = set(expected)
    for entry in answers:
        ident = entry[key]
        if ident not in wanted:
            errors[str(ident)] = [stranger]
        elif ident in values:
            errors[str(ident)] = ["answered more than once"]
        else:
            try:
                values[ident] = validate_answer(schema, entry["answer"])
            except AnswerError as exc:
                errors[str(ident)] = [f"answer {exc}"]
    for ident in expected:
        if ident not in values and str(ident) not in errors:
            errors[str(ident)] = ["missing an answer"]
    return ({ident: values[ident] for ident in expected} if not errors else {}), errors


def parse_csv_answer(schema: dict[str, Any], text: str) -> Any:
    """Turn a CSV cell into an answer value: multi-choice keys are separated by '|', ratings are integers."""
    kind = schema["type"]
    if kind == "multi_choice":
        return [part.strip() for part in text.split("|") if part.strip()]
    if kind == "rating":
        try:
            return int(text.strip())
        except ValueError as exc:
            raise AnswerError("must be a whole number") from exc
    return text


def format_csv_answer(value: Any) -> str:
    """The inverse of parse_csv_answer, for exports."""
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    return "" if value is None else str(value)
