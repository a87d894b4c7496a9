"""`/api/workflows`: an owner's trigger + action definitions."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from starlette.requests import Request
from starlette.responses import Response

from actions.registry import ACTIONS
from ingest import dryrun
from ingest.api import definitions
from ingest.api.auth import require_owner
from ingest.api.common import json_response, no_content, page_query, page_response, path_id, read_json
from ingest.api.operations import ID, PAGING, Body, Reply, operation, page_of
from ingest.api.validation import check, compile_schema
from ingest.errors import Invalid
from ingest.signatures import generate_secret
from ingest.state import AppState, app_state
from oauth.crypto import Keyring
from schemas.store import workflows as store
from schemas.store.signing import signing_aad
from schemas.store.workflows import Workflow


def workflow_json(row: Workflow) -> dict[str, Any]:
    """The API view of a workflow row (never its signing secret)."""
    return {
        "id": row.id,
        "name": row.name,
        "trigger": {"type": row.trigger_type, "config": row.trigger_config},
        "action": {
            "type": row.action_type,
            "config": _masked(row.action_type, row.action_config),
            "credential_id": row.credential_id,
        },
        "active": row.active,
        # Set while hookyard holds the workflow paused (e.g. `credential_needs_reconnect`);
        # `active` stays the owner's choice, and curing the cause resumes it.
        "paused_reason": row.paused_reason,
        "concurrency_limit": row.concurrency_limit,
        "retry_policy": row.retry_policy,
        # Run when an execution of this workflow fails for good; null when none (or it was deleted).
        "on_failure": row.on_failure,
        "signing": row.signing,
        "trigger_sync": trigger_sync_json(row),
        "warnings": _warnings(row.action_type, row.action_config),
        "outbox": row.outbox,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def trigger_sync_json(row: Workflow) -> dict[str, Any]:
    """Whether outside state the trigger keeps (a Temporal Schedule, a mailbox watch) reflects
    the row yet; for a Gmail trigger, also the mailbox's watch (`watch`)."""
    error = row.sync_error
    mailbox = row.mailbox
    if error is None and mailbox is not None and mailbox.get("state") == "refused" and row.active:
        # The watch is converged by the mailbox workflow after the hook ran: its refusal is
        # this trigger's sync error all the same (mail only arrives by the sweep meanwhile).
        error = str(mailbox.get("error"))
    outbox = row.outbox
    if error is None and outbox is not None and outbox.get("failures") and row.active:
        # An outbox that cannot be polled (table or column missing, database down) is this
        # trigger's sync error: nothing is claimed until it is fixed.
        error = str(outbox.get("last_error"))
    state = "error" if error is not None else "pending" if row.sync_pending else "synced"
    sync: dict[str, Any] = {"state": state, "error": error}
    if mailbox is not None:
        sync["watch"] = mailbox
    return sync


_MASK = "********"
_TAG = "workflows"
_TOGGLED = {200: Reply("OK", "WorkflowToggled")}


def _masked(action_type: str, config: Any) -> Any:
    """The config with `writeOnly` fields (e.g. a Slack incoming-webhook URL) hidden."""
    action = ACTIONS.get(action_type)
    if action is None or not isinstance(config, dict):
        return config
    properties = action.config_schema.get("properties", {})
    hidden = {name for name, spec in properties.items() if isinstance(spec, dict) and spec.get("writeOnly")}
    return {key: (_MASK if key in hidden else value) for key, value in config.items()}


def _warnings(action_type: str, config: Any) -> list[str]:
    """What the owner should fix, e.g. a secret kept in plain config instead of a credential."""
    action = ACTIONS.get(action_type)
    if action is None or not isinstance(config, dict):
        return []
    return action.plain_secrets(config)


def _new_signing_secret(keyring: Keyring, owner_id: UUID, workflow_id: UUID) -> tuple[str, str]:
    """A fresh secret and its ciphertext, bound to the workflow row."""
    secret = generate_secret()
    return secret, keyring.encrypt(secret.encode(), signing_aad(owner_id, workflow_id))


def _shown(row: Workflow, secret: str | None, **extra: Any) -> dict[str, Any]:
    view = workflow_json(row) | extra
    if secret is not None:
        view["signing_secret"] = secret
    return view


@operation(
    "POST",
    "/api/workflows",
    "Create a workflow",
    _TAG,
    {201: Reply("Created.", "WorkflowSaved")},
    body=Body("WorkflowCreate"),
)
async def create_workflow(request: Request) -> Response:
    """Create a workflow; a signing secret, if the action needs one, is shown only here."""
    owner_id = await require_owner(request)
    body = await read_json(request)
    return json_response(await create(app_state(request), owner_id, body), 201)


async def create(state: AppState, owner_id: UUID, body: dict[str, Any]) -> dict[str, Any]:
    """Validate and store a create body (422 `Invalid` naming the field); the saved view."""
    definitions.check_create(body)
    # The id is chosen before the insert because the secret's ciphertext is bound to it.
    workflow_id = uuid4()
    async with state.pool.acquire() as conn:
        definition = await definitions.definition_for_create(conn, owner_id, body)
        secret = token = None
        if definition.wants_signing_secret:
            secret, token = _new_signing_secret(state.keyring, owner_id, workflow_id)
        values = definition.values() | {"id": workflow_id, "signing_secret": token}
        row = await store.insert_workflow(conn, owner_id, values, state.settings.lanes)
    return _shown(row, secret)


@operation("GET", "/api/workflows", "List workflows", _TAG, {200: Reply("OK", page_of("Workflow"))}, params=PAGING)
async def list_workflows(request: Request) -> Response:
    """A page of the caller's workflows, newest first."""
    owner_id = await require_owner(request)
    query = page_query(request)
    async with app_state(request).pool.acquire() as conn:
        rows = await store.list_workflows(conn, owner_id, limit=query.limit, after_seq=query.after_seq)
    return page_response(rows, query, workflow_json)


@operation("GET", "/api/workflows/{id}", "Get a workflow", _TAG, {200: Reply("OK", "Workflow")}, params=[ID])
async def get_workflow(request: Request) -> Response:
    """One workflow."""
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    async with app_state(request).pool.acquire() as conn:
        row = await store.get_workflow(conn, owner_id, workflow_id)
    return json_response(workflow_json(row))


@operation(
    "PATCH",
    "/api/workflows/{id}",
    "Change a workflow",
    _TAG,
    {200: Reply("OK", "WorkflowSaved")},
    params=[ID],
    body=Body("WorkflowPatch"),
)
async def update_workflow(request: Request) -> Response:
    """Change some fields; `active` changes cancel queued executions like /deactivate does."""
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    body = await read_json(request)
    return json_response(await update(app_state(request), owner_id, workflow_id, body))


async def update(state: AppState, owner_id: UUID, workflow_id: UUID, body: dict[str, Any]) -> dict[str, Any]:
    """Validate and apply a patch (422 `Invalid` naming the field, 404 `NotFound`); the saved view."""
    definitions.check_patch(body)
    async with state.pool.acquire() as conn, conn.transaction():
        row = await store.get_workflow(conn, owner_id, workflow_id, for_update=True)
        current = definitions.Definition.from_row(row)
        updated = await definitions.definition_for_patch(conn, owner_id, current, body, workflow_id)
        secret = token = None
        if updated.wants_signing_secret and not row.signing:
            secret, token = _new_signing_secret(state.keyring, owner_id, workflow_id)
        row = await store.update_workflow(conn, owner_id, workflow_id, updated.values() | {"signing_secret": token})
        if "active" not in body:
            return _shown(row, secret)
        cancelled = 0
        if body["active"] != current.active:
            row, cancelled = await store.set_active(conn, owner_id, workflow_id, body["active"])
    return _shown(row, secret, cancelled_executions=cancelled)


@operation("DELETE", "/api/workflows/{id}", "Delete a workflow", _TAG, {204: Reply("Deleted.")}, params=[ID])
async def delete_workflow(request: Request) -> Response:
    """Delete a workflow; queued executions are cancelled, past ones stay readable."""
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    async with app_state(request).pool.acquire() as conn:
        await store.delete_workflow(conn, owner_id, workflow_id)
    return no_content()


async def _set_active(request: Request, active: bool) -> Response:
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    async with app_state(request).pool.acquire() as conn:
        row, cancelled = await store.set_active(conn, owner_id, workflow_id, active)
    return json_response(workflow_json(row) | {"cancelled_executions": cancelled})


@operation("POST", "/api/workflows/{id}/activate", "Activate", _TAG, _TOGGLED, params=[ID])
async def activate_workflow(request: Request) -> Response:
    """Start matching events again."""
    return await _set_active(request, True)


@operation(
    "POST", "/api/workflows/{id}/deactivate", "Deactivate and cancel queued executions", _TAG, _TOGGLED, params=[ID]
)
async def deactivate_workflow(request: Request) -> Response:
    """Stop matching events and cancel executions that have not started."""
    return await _set_active(request, False)


# --- dry runs ----------------------------------------------------------------------------

_EVENT_CHOICE: dict[str, Any] = {
    "event_ids": {
        "type": "array",
        "items": {"type": "string", "format": "uuid"},
        "minItems": 1,
        "maxItems": dryrun.MAX_EVENTS,
        "description": "These events, in this order; ids that are not yours are listed in `missing_event_ids`.",
    },
    "since": {
        "type": "string",
        "format": "date-time",
        "description": "Without `event_ids`: the newest `limit` events received at or after this time.",
    },
    "limit": {"type": "integer", "minimum": 1, "maximum": dryrun.MAX_EVENTS, "default": dryrun.DEFAULT_EVENTS},
}
DRY_RUN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["workflow"],
    "properties": {"workflow": definitions.WORKFLOW_SCHEMA, **_EVENT_CHOICE},
}
DRY_RUN_PATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"patch": {**definitions.PATCH_SCHEMA, "default": {}}, **_EVENT_CHOICE},
}
_DRY_RUN = compile_schema(DRY_RUN_SCHEMA)
_DRY_RUN_PATCH = compile_schema(DRY_RUN_PATCH_SCHEMA)
_DRY_RUN_REPLY = {200: Reply("What the workflow would have done with each event; nothing was sent.", "DryRunReport")}


def _located(prefix: str, exc: Invalid) -> Invalid:
    """A workflow error placed inside the dry-run body (`trigger.x` -> `workflow.trigger.x`)."""
    if exc.field is None:
        return Invalid(exc.message, field=prefix)
    message = exc.message
    if message.startswith(exc.field):
        message = f"{prefix}.{message}"
    return Invalid(message, field=f"{prefix}.{exc.field}")


def _event_choice(body: dict[str, Any]) -> dict[str, Any]:
    ids = body.get("event_ids")
    since = body.get("since")
    event_ids = None if ids is None else [UUID(i) for i in ids]
    when = None if since is None else _timestamp(since)
    limit = int(body.get("limit", dryrun.DEFAULT_EVENTS))
    dryrun.check_event_choice(event_ids, when, limit)
    return {"event_ids": event_ids, "since": when, "limit": limit}


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid("since must be a valid date-time", field="since") from None
    if value.tzinfo is None:
        raise Invalid("since must carry a time zone (e.g. Z)", field="since")
    return value


@operation(
    "POST",
    "/api/workflows/dry-run",
    "Try a workflow against stored events without saving it",
    _TAG,
    _DRY_RUN_REPLY,
    body=Body("DryRunRequest"),
    description="Validates `workflow` as create does, then shows for each of your stored events whether it "
    "would match (with the filter trace) and the request each match would send, secrets masked. Nothing is "
    "saved or sent.",
)
async def dry_run_draft(request: Request) -> Response:
    """A dry run of an unsaved workflow."""
    owner_id = await require_owner(request)
    body = await read_json(request)
    check(_DRY_RUN, body)
    choice = _event_choice(body)
    state = app_state(request)
    async with state.pool.acquire() as conn:
        try:
            draft = await definitions.validated_create(conn, owner_id, body["workflow"])
        except Invalid as exc:
            raise _located("workflow", exc) from None
    limits = dryrun.DryRunLimits.from_settings(state.settings)
    report = await dryrun.dry_run(state.pool, owner_id, draft, limits=limits, **choice)
    return json_response(report.to_json())


@operation(
    "POST",
    "/api/workflows/{id}/dry-run",
    "Try a change to a saved workflow against stored events without saving it",
    _TAG,
    _DRY_RUN_REPLY,
    params=[ID],
    body=Body("DryRunPatchRequest"),
    description="`patch` is merged into the saved workflow as PATCH would merge it (and validated the same "
    "way); the result is dry-run like `POST /api/workflows/dry-run`. The saved workflow is not changed.",
)
async def dry_run_saved(request: Request) -> Response:
    """A dry run of a saved workflow with a proposed patch."""
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    body = await read_json(request)
    check(_DRY_RUN_PATCH, body)
    choice = _event_choice(body)
    state = app_state(request)
    async with state.pool.acquire() as conn:
        try:
            draft = await definitions.validated_patch(conn, owner_id, workflow_id, body.get("patch", {}))
        except Invalid as exc:
            raise _located("patch", exc) from None
    limits = dryrun.DryRunLimits.from_settings(state.settings)
    report = await dryrun.dry_run(state.pool, owner_id, draft, workflow_id=workflow_id, limits=limits, **choice)
    return json_response(report.to_json())
