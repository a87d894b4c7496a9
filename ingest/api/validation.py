"""JSON Schema checks answering 422 with the offending field, never echoing submitted values.

Validator messages quote the rejected value, which may be a token pasted into a header or a
URL, so messages here are rebuilt from the schema keyword and the schema's own constraint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from ingest.errors import Invalid


def compile_schema(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator that also checks `format` (uuid, uri, ...)."""
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def check(validator: Draft202012Validator, instance: Any, prefix: str = "") -> None:
    """Raise `Invalid` for the most relevant schema violation, if any."""
    error = best_match(validator.iter_errors(instance))
    if error is None:
        return
    field = join_field(prefix, [*error.absolute_path, *_offending_key(error)])
    raise Invalid(f"{field or 'body'} {describe(error)}", field=field or None)


def join_field(prefix: str, path: Iterable[str | int]) -> str:
    """`trigger.config` + ["filter", "all", 0] -> `trigger.config.filter.all[0]`."""
    field = prefix
    for part in path:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field = f"{field}.{part}" if field else str(part)
    return field


def _offending_key(error: ValidationError) -> list[str]:
    # These keywords report at the parent object; name the key itself instead.
    instance = error.instance
    if not isinstance(instance, dict):
        return []
    if error.validator == "required":
        required: Any = error.validator_value
        missing = [key for key in required if key not in instance]
        return missing[:1]
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = [key for key in instance if key not in known]
        return extra[:1]
    return []


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _types(value: Any) -> str:
    names = value if isinstance(value, list) else [value]
    words = {"object": "an object", "array": "a list", "integer": "an integer", "null": "null"}
    return " or ".join(words.get(name, f"a {name}") for name in names)


_MESSAGES: dict[str, Callable[[Any], str]] = {
    "type": lambda v: f"must be {_types(v)}",
    "enum": lambda v: f"must be one of: {', '.join(_json(item) for item in v)}",
    "const": lambda v: f"must be {_json(v)}",
    "required": lambda v: "is required",
    "additionalProperties": lambda v: "is not an allowed field",
    "unevaluatedProperties": lambda v: "is not an allowed field",
    "format": lambda v: f"must be a valid {v}",
    "minLength": lambda v: f"must be at least {v} character{'s' if v != 1 else ''} long",
    "maxLength": lambda v: f"must be at most {v} characters long",
    "minimum": lambda v: f"must be at least {v}",
    "maximum": lambda v: f"must be at most {v}",
    "exclusiveMinimum": lambda v: f"must be greater than {v}",
    "exclusiveMaximum": lambda v: f"must be less than {v}",
    "minItems": lambda v: f"must have at least {v} item{'s' if v != 1 else ''}",
    "maxItems": lambda v: f"must have at most {v} items",
    "minProperties": lambda v: f"must have at least {v} field{'s' if v != 1 else ''}",
    "pattern": lambda v: "does not have the expected format",
    "not": lambda v: "is not allowed here",
    "anyOf": lambda v: "does not match any of the allowed shapes",
    "oneOf": lambda v: "must match exactly one of the allowed shapes",
}


def describe(error: ValidationError) -> str:
    """A message for one violation, built from the schema only."""
    keyword = str(error.validator)
    render = _MESSAGES.get(keyword)
    return render(error.validator_value) if render else f"is not valid ({keyword})"
