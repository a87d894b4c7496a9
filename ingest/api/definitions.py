"""Validation of workflow bodies: the envelope, then trigger and action types and their configs.

Checks run cheapest first so the answer names the first problem a person would fix: the
envelope's JSON Schema, the types exist, each config against its type's schema, and last the
trigger's own check (which may look at the database, e.g. that the endpoint is the caller's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
from jsonschema import Draft202012Validator

from actions.base import ActionConfigError
from actions.registry import ACTIONS
from actions.templating import TemplateError, check_templates
from ingest.api.validation import check, compile_schema
from ingest.errors import Invalid
from schemas.store.credentials import credential_provider
from schemas.store.failure_events import SOURCE_TYPE as FAILURE_TRIGGER
from schemas.store.workflows import Workflow, get_workflow, live_trigger_type
from triggers.base import TriggerConfigError
from triggers.registry import TRIGGERS

RETRY_POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
        "initial_interval_s": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 1},
        "backoff": {"type": "number", "minimum": 1, "maximum": 10, "default": 2},
        "max_interval_s": {"type": "number", "minimum": 1, "maximum": 86400, "default": 300},
    },
}


def _part(kind: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "description": f"A {kind} type from /api/catalog."},
            "config": {"type": "object", "default": {}},
            **extra,
        },
    }


WORKFLOW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "trigger", "action"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "trigger": _part("trigger", {}),
        "action": _part("action", {"credential_id": {"type": ["string", "null"], "format": "uuid", "default": None}}),
        "active": {"type": "boolean", "default": True},
        "concurrency_limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "retry_policy": RETRY_POLICY_SCHEMA,
        "on_failure": {
            "type": ["string", "null"],
            "format": "uuid",
            "default": None,
            "description": f"One of your `{FAILURE_TRIGGER}` workflows, run once for each execution of this "
            "one that fails for good; null for none.",
        },
    },
}
PATCH_SCHEMA: dict[str, Any] = {**WORKFLOW_SCHEMA, "required": []}

_CREATE = compile_schema(WORKFLOW_SCHEMA)
_PATCH = compile_schema(PATCH_SCHEMA)


def defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The `default` of every property of an object schema that declares one."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    return {name: prop["default"] for name, prop in properties.items() if "default" in prop}


def retry_policy(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """A complete retry policy: what was given over the schema's defaults."""
    return {**defaults(RETRY_POLICY_SCHEMA), **(given or {})}


@dataclass(frozen=True, slots=True)
class Definition:
    """A validated workflow, ready to store."""

    name: str
    trigger_type: str
    trigger_config: dict[str, Any]
    routing_key: str
    action_type: str
    action_config: dict[str, Any]
    credential_id: UUID | None
    active: bool
    concurrency_limit: int
    retry_policy: dict[str, Any]
    on_failure: UUID | None

    @classmethod
    def from_row(cls, row: Workflow) -> Definition:
        """The stored definition of a workflow row."""
        return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})

    @property
    def wants_signing_secret(self) -> bool:
        """Whether the action signs its requests and so needs a per-workflow secret."""
        action = ACTIONS.get(self.action_type)
        return action is not None and action.wants_signing_secret(self.action_config)

    def values(self) -> dict[str, Any]:
        """Column values for the store."""
        return dataclasses.asdict(self)


def _registry(kind: str) -> Mapping[str, Any]:
    return TRIGGERS if kind == "trigger" else ACTIONS


@cache
def _config_validator(kind: str, type_name: str) -> Draft202012Validator:
    return compile_schema(_registry(kind)[type_name].config_schema)


def _checked_config(kind: str, part: Mapping[str, Any]) -> dict[str, Any]:
    registry = _registry(kind)
    type_name = part["type"]
    if type_name not in registry:
        known = ", ".join(sorted(registry))
        raise Invalid(f"unknown {kind} type {type_name!r}; known: {known}", field=f"{kind}.type")
    config = dict(part.get("config", {}))
    check(_config_validator(kind, type_name), config, f"{kind}.config")
    return config


async def _checked_trigger(conn: asyncpg.Connection, owner_id: UUID, part: Mapping[str, Any]) -> dict[str, Any]:
    config = _checked_config("trigger", part)
    trigger = TRIGGERS[part["type"]]
    if trigger.check_config is not None:
        try:
            await trigger.check_config(conn, owner_id, config)
        except TriggerConfigError as exc:
            raise Invalid(str(exc), field=exc.field) from None
    return {
        "trigger_type": part["type"],
        "trigger_config": config,
        "routing_key": trigger.routing_key(config),
    }


async def _checked_action(conn: asyncpg.Connection, owner_id: UUID, part: Mapping[str, Any]) -> dict[str, Any]:
    config = _checked_config("action", part)
    # Templates are parsed now, so a malformed one is refused here rather than on every event.
    try:
        check_templates(config, field="action.config")
    except TemplateError as exc:
        raise Invalid(str(exc), field=exc.field or "action.config") from None
    action = ACTIONS[part["type"]]
    credential = UUID(part["credential_id"]) if part.get("credential_id") else None
    if credential is not None:
        provider = await credential_provider(conn, owner_id, credential)
        if provider is None:
            raise Invalid("no such credential", field="action.credential_id")
        if action.credential_providers and provider not in action.credential_providers:
            wanted = " or ".join(action.credential_providers)
            raise Invalid(f"credential is for {provider}; this action needs {wanted}", field="action.credential_id")
    if action.check_config is not None:
        try:
            await action.check_config(conn, owner_id, config, credential)
        except ActionConfigError as exc:
            raise Invalid(str(exc), field=exc.field) from None
    return {"action_type": part["type"], "action_config": config, "credential_id": credential}


def _scalars(body: Mapping[str, Any]) -> dict[str, Any]:
    # The schema accepts 10.0 as an integer; the column does not.
    out: dict[str, Any] = {}
    for key in ("name", "active"):
        if key in body:
            out[key] = body[key]
    if "concurrency_limit" in body:
        out["concurrency_limit"] = int(body["concurrency_limit"])
    if "retry_policy" in body:
        policy = retry_policy(body["retry_policy"])
        policy["max_attempts"] = int(policy["max_attempts"])
        out["retry_policy"] = policy
    return out


async def _checked_on_failure(
    conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID | None, given: str | None
) -> dict[str, Any]:
    """`on_failure` must name another live workflow of the owner with the failure trigger.

    Another owner's id reads exactly as an unknown one, so the answer reveals nothing about it.
    """
    if given is None:
        return {"on_failure": None}
    target = UUID(given)
    if target == workflow_id:
        raise Invalid("a workflow cannot be its own on_failure workflow", field="on_failure")
    trigger_type = await live_trigger_type(conn, owner_id, target)
    if trigger_type is None:
        raise Invalid("no such workflow", field="on_failure")
    if trigger_type != FAILURE_TRIGGER:
        raise Invalid(f"must be a workflow with the {FAILURE_TRIGGER} trigger", field="on_failure")
    return {"on_failure": target}


def check_create(body: Mapping[str, Any]) -> None:
    """The envelope of a new workflow (no database needed)."""
    check(_CREATE, body)


def check_patch(body: Mapping[str, Any]) -> None:
    """The envelope of a partial update (no database needed)."""
    check(_PATCH, body)


async def definition_for_create(conn: asyncpg.Connection, owner_id: UUID, body: Mapping[str, Any]) -> Definition:
    """A full definition from a create body that passed `check_create`."""
    values = {**defaults(WORKFLOW_SCHEMA), "retry_policy": retry_policy(None)}
    values |= _scalars(body)
    values |= await _checked_trigger(conn, owner_id, body["trigger"])
    values |= await _checked_action(conn, owner_id, body["action"])
    values |= await _checked_on_failure(conn, owner_id, None, body.get("on_failure"))
    return Definition(**values)


async def definition_for_patch(
    conn: asyncpg.Connection, owner_id: UUID, current: Definition, body: Mapping[str, Any], workflow_id: UUID
) -> Definition:
    """`current` (the stored definition of `workflow_id`) with a patch that passed `check_patch` applied.

    Top-level fields replace the stored ones; a given `trigger` or `action` replaces that part
    whole and is validated again, while the parts left alone are kept as stored.
    """
    values = _scalars(body)
    if "trigger" in body:
        values |= await _checked_trigger(conn, owner_id, body["trigger"])
    if "action" in body:
        values |= await _checked_action(conn, owner_id, body["action"])
    if "on_failure" in body:
        values |= await _checked_on_failure(conn, owner_id, workflow_id, body["on_failure"])
    return dataclasses.replace(current, **values)


async def validated_create(conn: asyncpg.Connection, owner_id: UUID, body: Mapping[str, Any]) -> Definition:
    """A create body checked whole, as `POST /api/workflows` checks it (`Invalid` names the field)."""
    check_create(body)
    return await definition_for_create(conn, owner_id, body)


async def validated_patch(
    conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID, patch: Mapping[str, Any]
) -> Definition:
    """A saved workflow with `patch` applied as `PATCH` applies it, without saving anything.

    Raises `schemas.errors.NotFound` for a workflow that is not the owner's (404 in the API),
    `Invalid` for a bad patch.
    """
    check_patch(patch)
    row = await get_workflow(conn, owner_id, workflow_id)
    return await definition_for_patch(conn, owner_id, Definition.from_row(row), patch, workflow_id)
