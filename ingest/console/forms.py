"""Workflow forms generated from the catalog's JSON Schemas, and read back into API bodies.

Each trigger and action type gets a fieldset with one input per property of its config
schema: a select for an `enum`, a text box for a string, a number box for numbers, a checkbox
for a boolean, and a JSON text area for anything else (objects, lists, filters, templates that
may take several shapes). The body built from a submitted form goes through the API's own
validation, and its errors (`field` such as `action.config.url`) are shown at that input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from actions.registry import ACTIONS
from ingest.api.catalog import catalog
from schemas import jsonlimits

# Form inputs are named `<group>:<type>:<property>`; groups are "trigger" and "action".
GROUPS = ("trigger", "action")
JSON_DEPTH = 32


@dataclass
class Field:
    """One input of a generated form."""

    group: str
    type_name: str
    prop: str
    kind: str  # text | integer | number | checkbox | select | json | endpoint
    required: bool
    description: str
    choices: list[str] = field(default_factory=list)
    value: str = ""
    checked: bool = False
    error: str | None = None
    secret: bool = False

    @property
    def name(self) -> str:
        """The form input's name."""
        return f"{self.group}:{self.type_name}:{self.prop}"

    @property
    def html_id(self) -> str:
        """The input's element id (labels and error messages point at it)."""
        return "f-" + "-".join(part.replace(".", "_") for part in (self.group, self.type_name, self.prop))


@dataclass
class TypeForm:
    """The fieldset of one trigger or action type."""

    group: str
    type_name: str
    description: str
    fields: list[Field]


@dataclass
class WorkflowForm:
    """Everything a workflow form shows: chosen types, all types' fields, values and errors."""

    name: str = ""
    trigger_type: str = "webhook.received"
    action_type: str = "http.request"
    credential_id: str = ""
    concurrency_limit: str = "10"
    types: dict[str, list[TypeForm]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # top-level inputs: name, trigger_type, ...
    summary: str | None = None

    def type_form(self, group: str, type_name: str) -> TypeForm | None:
        """The fieldset of one type."""
        return next((t for t in self.types.get(group, []) if t.type_name == type_name), None)

    @property
    def has_errors(self) -> bool:
        """Whether any input carries an error."""
        return bool(self.errors) or any(f.error for ts in self.types.values() for t in ts for f in t.fields)


def _kind(prop: str, spec: Mapping[str, Any]) -> str:
    if "enum" in spec:
        return "select"
    kind = spec.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if prop == "endpoint_id" and kinds == {"string"}:
        return "endpoint"
    if kinds and kinds <= {"string", "null"}:
        return "text"
    if kinds == {"integer"}:
        return "integer"
    if kinds == {"number"}:
        return "number"
    if kinds == {"boolean"}:
        return "checkbox"
    return "json"


def _allows_string(spec: Mapping[str, Any]) -> bool:
    kind = spec.get("type")
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def blank_form() -> WorkflowForm:
    """A form with every type's fields and nothing filled in."""
    form = WorkflowForm()
    listing = catalog()
    for group in GROUPS:
        form.types[group] = []
        for entry in listing[f"{group}s"]:
            schema = entry["config_schema"]
            required = set(schema.get("required", []))
            fields = []
            for prop, spec in schema.get("properties", {}).items():
                if not isinstance(spec, dict):
                    continue
                kind = _kind(prop, spec)
                fields.append(
                    Field(
                        group,
                        entry["type"],
                        prop,
                        kind,
                        prop in required,
                        str(spec.get("description", "")),
                        choices=[str(c) for c in spec.get("enum", [])],
                        secret=bool(spec.get("writeOnly")),
                    )
                )
            form.types[group].append(TypeForm(group, entry["type"], str(entry["description"]), fields))
    return form


def _text(kind: str, value: Any) -> str:
    if kind == "json":
        return str(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
    return "" if value is None else str(value)


def form_from_workflow(view: Mapping[str, Any]) -> WorkflowForm:
    """A form filled with a workflow's API view (secret, write-only fields left empty)."""
    form = blank_form()
    form.name = view["name"]
    form.trigger_type = view["trigger"]["type"]
    form.action_type = view["action"]["type"]
    form.credential_id = str(view["action"]["credential_id"] or "")
    form.concurrency_limit = str(view["concurrency_limit"])
    for group, part in (("trigger", view["trigger"]), ("action", view["action"])):
        type_form = form.type_form(group, part["type"])
        config = part["config"] if isinstance(part["config"], dict) else {}
        for f in type_form.fields if type_form else []:
            if f.prop not in config or f.secret:
                continue
            if f.kind == "checkbox":
                f.checked = bool(config[f.prop])
            else:
                f.value = _text(f.kind, config[f.prop])
    return form


def read_form(data: Mapping[str, str]) -> tuple[WorkflowForm, dict[str, Any]]:
    """The submitted form (to show again) and the API body it stands for.

    Values that are not numbers or not JSON are passed on as text, so the API's schema check
    names the field; only JSON that cannot be parsed at all is reported here.
    """
    form = blank_form()
    form.name = data.get("name", "").strip()
    form.trigger_type = data.get("trigger_type", form.trigger_type)
    form.action_type = data.get("action_type", form.action_type)
    form.credential_id = data.get("credential_id", "").strip()
    form.concurrency_limit = data.get("concurrency_limit", "").strip()
    parts: dict[str, dict[str, Any]] = {}
    for group, type_name in (("trigger", form.trigger_type), ("action", form.action_type)):
        config: dict[str, Any] = {}
        type_form = form.type_form(group, type_name)
        schema = _schema(group, type_name)
        for f in type_form.fields if type_form else []:
            raw = data.get(f.name)
            spec = schema.get("properties", {}).get(f.prop, {})
            if f.kind == "checkbox":
                f.checked = raw is not None
                if f.checked or "default" in spec:
                    config[f.prop] = f.checked
                continue
            f.value = (raw or "").strip() if f.kind != "json" else (raw or "")
            if not f.value.strip():
                continue
            config[f.prop] = _parsed(f, spec)
        parts[group] = {"type": type_name, "config": config}
    body: dict[str, Any] = {"name": form.name, "trigger": parts["trigger"], "action": parts["action"]}
    body["action"]["credential_id"] = form.credential_id or None
    if form.concurrency_limit:
        body["concurrency_limit"] = _number(form.concurrency_limit, integer=True)
    return form, body


def _schema(group: str, type_name: str) -> Mapping[str, Any]:
    for entry in catalog()[f"{group}s"]:
        if entry["type"] == type_name:
            schema: Mapping[str, Any] = entry["config_schema"]
            return schema
    return {}


def _number(text: str, *, integer: bool) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    if integer:
        return text
    try:
        return float(text)
    except ValueError:
        return text


def _parsed(f: Field, spec: Mapping[str, Any]) -> Any:
    if f.kind in ("integer", "number"):
        return _number(f.value, integer=f.kind == "integer")
    if f.kind != "json":
        return f.value
    try:
        return jsonlimits.loads(f.value.encode(), JSON_DEPTH)
    except (orjson.JSONDecodeError, jsonlimits.JsonTooDeep):
        if _allows_string(spec):
            return f.value.strip()
        f.error = "is not valid JSON"
        return None


def place_error(form: WorkflowForm, api_field: str | None, message: str) -> None:
    """Show an API validation error at the input it names (else above the form)."""
    if api_field is None:
        form.summary = message
        return
    head, _, rest = api_field.partition(".")
    if head in ("name", "concurrency_limit"):
        form.errors[head] = message
        return
    if head in GROUPS and rest == "type":
        form.errors[f"{head}_type"] = message
        return
    if head == "action" and rest.startswith("credential_id"):
        form.errors["credential_id"] = message
        return
    if head in GROUPS and rest.startswith("config"):
        prop = rest.removeprefix("config").lstrip(".").split(".", 1)[0].split("[", 1)[0]
        chosen = form.trigger_type if head == "trigger" else form.action_type
        type_form = form.type_form(head, chosen)
        target = next((f for f in type_form.fields if f.prop == prop), None) if type_form else None
        if target is not None:
            target.error = message
            return
    form.summary = message


def keep_secrets(body: dict[str, Any], stored_type: str, stored_config: Any) -> None:
    """Write-only fields left empty on an edit keep their stored value (the form never shows it)."""
    action = body["action"]
    if action["type"] != stored_type or not isinstance(stored_config, dict):
        return
    spec = ACTIONS[action["type"]].config_schema.get("properties", {}) if action["type"] in ACTIONS else {}
    for prop, prop_spec in spec.items():
        wanted = isinstance(prop_spec, dict) and prop_spec.get("writeOnly") and prop not in action["config"]
        if wanted and prop in stored_config:
            action["config"][prop] = stored_config[prop]
