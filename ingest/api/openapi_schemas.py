"""Component schemas of the OpenAPI document: request bodies reuse the validators' schemas."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from actions.registry import ACTIONS
from ingest.api import credentials, definitions, endpoints, events, executions, keys, subscriptions, workflows
from ingest.api.operations import ref
from triggers.registry import TRIGGERS

_STR = {"type": "string"}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_ANY: dict[str, Any] = {}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], required: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An object schema; every property is required unless `required` says otherwise."""
    names = list(properties) if required is None else list(required)
    return {"type": "object", "properties": properties, "required": names}


def _config_name(kind: str, type_name: str) -> str:
    return f"{kind}.{type_name}.config"


def _typed_part(kind: str, registry: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`{"type", "config"}` as one branch per registered type, each config by its own schema."""
    branches = []
    for name in sorted(registry):
        part = copy.deepcopy(base)
        part["properties"]["type"] = {"const": name}
        part["properties"]["config"] = ref(_config_name(kind, name))
        branches.append(part)
    return {"oneOf": branches}


def _workflow_body(schema: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(schema)
    props = body["properties"]
    props["trigger"] = _typed_part("trigger", TRIGGERS, props["trigger"])
    props["action"] = _typed_part("action", ACTIONS, props["action"])
    return body


def _config_schemas() -> dict[str, Any]:
    # Each config schema appears once in the document, so anchors inside them stay unique.
    out = {_config_name("trigger", n): copy.deepcopy(t.config_schema) for n, t in TRIGGERS.items()}
    out |= {_config_name("action", n): copy.deepcopy(a.config_schema) for n, a in ACTIONS.items()}
    return out


def _endpoint_schemas() -> dict[str, Any]:
    endpoint = _obj(
        {
            "id": _UUID,
            "name": _STR,
            "scheme": _STR,
            "ingest_url": _STR,
            "created_at": _TIME,
            "active_secrets": {"type": "integer"},
        },
        ("id", "name", "scheme", "ingest_url", "created_at"),
    )
    return {
        "Endpoint": endpoint,
        "EndpointCreate": endpoints.CREATE_SCHEMA,
        "EndpointCreated": {"allOf": [ref("Endpoint"), _obj({"secret": _STR})]},
        "SecretRotate": endpoints.ROTATE_SCHEMA,
        "SecretRotated": _obj({"secret": _STR, "previous_valid_until": _TIME}),
    }


# The watch of a Gmail mailbox, as the owner sees it on a workflow reading it and on its credential.
MAILBOX_WATCH = _obj(
    {
        "state": {
            "enum": ["watching", "expiring", "refused", "polled", "pending", "stopped"],
            "description": "refused: Gmail refused users.watch (see `error`); mail arrives only by the sweep. "
            "polled: no Pub/Sub topic is configured. stopped: no active workflow reads it, or its "
            "credential needs reconnecting.",
        },
        "error": _nullable(_STR),
        "expires_at": _nullable(_TIME),
        "last_watched_at": _nullable(_TIME),
        "last_push_at": _nullable(_TIME),
        "last_sync_at": _nullable(_TIME),
        "last_error": _nullable(_STR),
    }
)


# Poll health of a postgres.outbox trigger, as the owner sees it on the workflow.
OUTBOX_HEALTH = _obj(
    {
        "last_poll_at": _nullable(_TIME),
        "last_success_at": _nullable(_TIME),
        "next_poll_at": _TIME,
        "rows_claimed": {"type": "integer", "description": "Rows the last poll claimed."},
        "rows_claimed_total": {"type": "integer"},
        "rows_written_total": {"type": "integer", "description": "Outcomes written back into rows."},
        "due_rows": {**_nullable({"type": "integer"}), "description": "Rows due at the last poll (up to 10,000)."},
        "oldest_due_lag_s": {
            **_nullable({"type": "number"}),
            "description": "How late the oldest due row is, by its due (else updated) column.",
        },
        "last_error": {**_nullable(_STR), "description": "Why the last poll failed (null once one succeeds)."},
        "last_error_at": _nullable(_TIME),
        "failures": {"type": "integer", "description": "Failed polls in a row."},
        "open_claims": {"type": "integer", "description": "Rows claimed whose outcome is not written back yet."},
    }
)
OUTBOX_ROW = _obj(
    {
        "table": _STR,
        "row_id": _STR,
        "generation": {"type": "integer", "description": "The claim's generation (1 for the row's first claim)."},
        "claimed_from": _STR,
        "state": {"enum": ["claimed", "written_back"]},
        "outcome": {**_nullable({"enum": ["sent", "failed", "released"]})},
        "claimed_at": _TIME,
        "written_back_at": _nullable(_TIME),
    }
)


def _workflow_schemas() -> dict[str, Any]:
    part = _obj({"type": _STR, "config": {"type": "object"}})
    workflow = _obj(
        {
            "id": _UUID,
            "name": _STR,
            "trigger": part,
            "action": _obj({"type": _STR, "config": {"type": "object"}, "credential_id": _nullable(_UUID)}),
            "active": {"type": "boolean", "description": "The owner's choice."},
            "paused_reason": {
                **_nullable({"enum": ["credential_needs_reconnect"]}),
                "description": "Set while hookyard holds an active workflow paused; reconnecting resumes it.",
            },
            "concurrency_limit": {"type": "integer"},
            "retry_policy": definitions.RETRY_POLICY_SCHEMA,
            "on_failure": {
                **_nullable(_UUID),
                "description": "The workflow run when an execution of this one fails for good.",
            },
            "signing": {"type": "boolean"},
            "trigger_sync": _obj(
                {"state": {"enum": ["pending", "synced", "error"]}, "error": _nullable(_STR), "watch": MAILBOX_WATCH},
                ("state", "error"),
            ),
            "warnings": {"type": "array", "items": _STR, "description": "E.g. a secret kept in plain config."},
            "outbox": {
                **_nullable(OUTBOX_HEALTH),
                "description": "Poll health of a postgres.outbox trigger (null for other triggers and before "
                "the first poll).",
            },
            "created_at": _TIME,
            "updated_at": _TIME,
        }
    )
    shown_once = {
        "signing_secret": {**_STR, "description": "Only when the secret is first created."},
        "cancelled_executions": {"type": "integer", "description": "Only when `active` was given."},
    }
    return {
        "Workflow": workflow,
        **_dry_run_schemas(),
        "WorkflowCreate": _workflow_body(definitions.WORKFLOW_SCHEMA),
        "WorkflowPatch": _workflow_body(definitions.PATCH_SCHEMA),
        "WorkflowSaved": {"allOf": [ref("Workflow"), _obj(shown_once, ())]},
        "WorkflowToggled": {"allOf": [ref("Workflow"), _obj({"cancelled_executions": {"type": "integer"}})]},
    }


def _trace_step_schema() -> dict[str, Any]:
    shown = {"description": "Shortened: scalars as they are (long strings cut), objects and lists as a short preview."}
    return _obj(
        {
            "at": {**_STR, "description": "Where in the trigger config: `filter.all[1]`, `from`, `route`."},
            "kind": {"enum": ["all", "any", "not", "condition", "route"]},
            "matched": {"type": "boolean"},
            "path": {**_STR, "description": "Conditions: the path looked up in the trigger data."},
            "op": _STR,
            "expected": shown,
            "seen": {**shown, "description": "The value found at `path` (null when missing)."},
            "missing": {"type": "boolean", "description": "Present (true) when `path` was not in the data."},
            "skipped": {"type": "integer", "description": "Groups: children not evaluated, the outcome being decided."},
        },
        ("at", "kind", "matched"),
    )


def _dry_run_schemas() -> dict[str, Any]:
    request = copy.deepcopy(workflows.DRY_RUN_SCHEMA)
    request["properties"]["workflow"] = ref("WorkflowCreate")
    patch_request = copy.deepcopy(workflows.DRY_RUN_PATCH_SCHEMA)
    patch_request["properties"]["patch"] = ref("WorkflowPatch")
    action = _obj(
        {
            "type": _STR,
            "request": _nullable(
                _obj(
                    {
                        "method": _STR,
                        "url": _STR,
                        "headers": {"type": "object", "additionalProperties": _STR},
                        "body": {"description": "The JSON value or the text that would be sent; null for none."},
                        "notes": {"type": "array", "items": _STR},
                    }
                )
            ),
            "config": {**_nullable({"type": "object"}), "description": "Actions without a plain HTTP request."},
            "error": {**_nullable(_STR), "description": "The error the attempt would fail with (templates)."},
        }
    )
    result = _obj(
        {
            "event": _obj({"id": _UUID, "source_type": _STR, "source_id": _STR, "received_at": _TIME, "status": _STR}),
            "evaluated": {"type": "boolean"},
            "matched": {"type": "boolean"},
            "reason": _STR,
            "trace": {"type": "array", "items": ref("TraceStep")},
            "trace_truncated": {"type": "boolean"},
            "action": {**_nullable(action), "description": "Matches only."},
        }
    )
    report = _obj(
        {
            "workflow": _obj({"name": _STR, "trigger_type": _STR, "action_type": _STR}),
            "events": {"type": "integer"},
            "evaluated": {"type": "integer"},
            "matched": {"type": "integer"},
            "results": {"type": "array", "items": result},
            "missing_event_ids": {"type": "array", "items": _UUID},
            "stopped": {"enum": [None, "deadline", "output_limit"]},
            "limits": _obj(
                {
                    "max_events": {"type": "integer"},
                    "deadline_s": {"type": "number"},
                    "max_rendered_bytes": {"type": "integer"},
                    "max_output_bytes": {"type": "integer"},
                }
            ),
        }
    )
    return {
        "DryRunRequest": request,
        "DryRunPatchRequest": patch_request,
        "DryRunReport": report,
        "TraceStep": _trace_step_schema(),
    }


def _execution_schema() -> dict[str, Any]:
    progress = {
        "type": "object",
        "description": "Newsletters only (email.send-newsletter): recipients per state, while it runs and after.",
    }
    properties = {
        "id": _UUID,
        "workflow_id": _UUID,
        "event_id": _nullable(_UUID),
        "replay_of": _nullable(_UUID),
        "status": {"enum": list(executions.STATUSES)},
        "trigger_data": {"type": "object"},
        "result": _ANY,
        "error": _nullable(_STR),
        "attempts": {"type": "integer"},
        "created_at": _TIME,
        "started_at": _nullable(_TIME),
        "finished_at": _nullable(_TIME),
        "next_attempt_at": _nullable(_TIME),
        "temporal": _obj({"workflow_id": _nullable(_STR), "run_id": _nullable(_STR)}),
    }
    return _obj({**properties, "progress": progress}, tuple(properties))


def _event_schemas() -> dict[str, Any]:
    resolution = {
        "type": "array",
        "items": _obj(
            {
                "workflow_id": _UUID,
                "matched": {"type": "boolean"},
                "reason": _STR,
                "trace": {
                    "type": "array",
                    "items": ref("TraceStep"),
                    "description": "The conditions evaluated (absent on events resolved before traces were kept).",
                },
                "execution_id": _nullable(_UUID),
            },
            ("workflow_id", "matched", "reason"),
        ),
    }
    event = _obj(
        {
            "id": _UUID,
            "source_type": _STR,
            "source_id": _STR,
            "received_at": _TIME,
            "status": {"enum": list(events.STATUSES)},
            "verification": {"type": "object"},
            "dedup": _obj({"key": _STR, "duplicate_count": {"type": "integer"}, "last_duplicate_at": _nullable(_TIME)}),
            "resolution": {**_nullable(resolution), "description": "Null while status is 'received'."},
            "note": {**_nullable(_STR), "description": "Why the event was rejected, or what was unusual."},
            "dispatched_at": _nullable(_TIME),
            "headers": {"type": "object"},
            "body_size": {"type": "integer"},
        }
    )
    detail = _obj(
        {
            "body": {"description": "Parsed JSON if the body is JSON, else its text."},
            "executions": {"type": "array", "items": ref("Execution")},
            "outbox_row": {
                **_nullable(OUTBOX_ROW),
                "description": "For an event made from a postgres.outbox row: the row and its claim.",
            },
        }
    )
    return {"Event": event, "EventDetail": {"allOf": [ref("Event"), detail]}}


def _catalog_schema() -> dict[str, Any]:
    entry = _obj({"type": _STR, "description": _STR, "config_schema": {"type": "object"}})
    entries = {"type": "array", "items": entry}
    trigger = _obj(
        {
            "type": _STR,
            "description": _STR,
            "config_schema": {"type": "object"},
            "manual_run": {**_STR, "description": "What a manual run's body stands for, and the data it builds."},
            "data_schema": {"type": "object", "description": "The trigger data's JSON Schema (hookyard's own shapes)."},
        },
        ("type", "description", "config_schema", "manual_run"),
    )
    provider = _obj(
        {
            "name": _STR,
            "display_name": _STR,
            "kind": {"enum": ["oauth2", "api_key"]},
            "description": _STR,
            "secret_shapes": {
                "type": "array",
                "items": {"type": "array", "items": _STR},
                "description": "Accepted sets of secret fields (api_key providers; oauth2 ones connect via a link).",
            },
            "rate_per_s": {
                **_nullable({"type": "number"}),
                "description": "Default requests per second per credential (HOOKYARD_RATE_LIMITS overrides it).",
            },
        }
    )
    return _obj(
        {
            "triggers": {"type": "array", "items": trigger},
            "actions": entries,
            "providers": {"type": "array", "items": provider},
            "notification_types": {
                "type": "array",
                "items": _obj(
                    {
                        "type": _STR,
                        "version": {"type": "integer"},
                        "description": _STR,
                        "data_schema": {"type": "object"},
                    }
                ),
                "description": "What subscriptions may ask for; each delivery's body is `notification_envelope`.",
            },
            "notification_envelope": {"type": "object"},
        },
        ("triggers", "actions", "providers"),
    )


def _credential_schemas() -> dict[str, Any]:
    credential = _obj(
        {
            "id": _UUID,
            "provider": _STR,
            "kind": {"enum": ["oauth2", "api_key"]},
            "name": _STR,
            "account_email": _nullable(_STR),
            "scopes": {"type": "array", "items": _STR},
            "status": {"enum": ["active", "needs_reconnect", "revoked"]},
            "status_reason": _nullable(_STR),
            "expires_at": _nullable(_TIME),
            "last_refreshed_at": _nullable(_TIME),
            "created_at": _TIME,
            "updated_at": _TIME,
            "mailbox": {**MAILBOX_WATCH, "description": "Google accounts whose mailbox a workflow reads (GET only)."},
        },
        (
            "id",
            "provider",
            "kind",
            "name",
            "account_email",
            "scopes",
            "status",
            "status_reason",
            "expires_at",
            "last_refreshed_at",
            "created_at",
            "updated_at",
        ),
    )
    link = _obj(
        {
            "id": _UUID,
            "provider": _STR,
            "scopes": {"type": "array", "items": _STR},
            "url": {**_STR, "description": "Signed, expiring, single use; open it in a browser."},
            "expires_at": _TIME,
            "redirect_after": _nullable(_STR),
        }
    )
    return {
        "Credential": credential,
        "CredentialCreate": credentials.CREATE_SCHEMA,
        "ConnectLinkCreate": credentials.LINK_SCHEMA,
        "ConnectLink": link,
    }


def _key_schemas() -> dict[str, Any]:
    key = _obj(
        {
            "id": _UUID,
            "name": _STR,
            "prefix": {**_STR, "description": "The key's first characters, to recognise it."},
            "created_at": _TIME,
            "revoked_at": _nullable(_TIME),
        }
    )
    created = _obj({"key": {**_STR, "description": "Send as `Authorization: Bearer <key>`; shown once."}})
    return {"ApiKey": key, "ApiKeyCreate": keys.CREATE_SCHEMA, "ApiKeyCreated": {"allOf": [ref("ApiKey"), created]}}


def _subscription_schemas() -> dict[str, Any]:
    filters = _obj(
        {
            "workflow_ids": _nullable({"type": "array", "items": _UUID}),
            "action_types": _nullable({"type": "array", "items": _STR}),
        }
    )
    subscription = _obj(
        {
            "id": _UUID,
            "target_url": _STR,
            "event_types": {"type": "array", "items": _STR},
            "filters": filters,
            "active": {"type": "boolean"},
            "status": {
                "enum": ["healthy", "failing", "disabled"],
                "description": "failing: the latest attempt failed; disabled: see `status_reason` (410 Gone, "
                "failing too long, or deactivated by its owner).",
            },
            "status_reason": _nullable(_STR),
            "failing_since": _nullable(_TIME),
            "created_at": _TIME,
            "updated_at": _TIME,
        }
    )
    secret = {**_STR, "description": "Standard Webhooks signing secret (`whsec_…`); shown once."}
    delivery = _obj(
        {
            "id": _UUID,
            "notification": _obj({"id": _nullable(_STR), "type": _nullable(_STR)}),
            "status": {"enum": list(executions.STATUSES)},
            "attempts": {"type": "integer"},
            "response_status": _nullable({"type": "integer"}),
            "error": _nullable(_STR),
            "created_at": _TIME,
            "finished_at": _nullable(_TIME),
            "next_attempt_at": _nullable(_TIME),
            "replay_of": _nullable(_UUID),
        }
    )
    return {
        "Subscription": subscription,
        "SubscriptionCreate": subscriptions.CREATE_SCHEMA,
        "SubscriptionPatch": subscriptions.PATCH_SCHEMA,
        "SubscriptionCreated": {"allOf": [ref("Subscription"), _obj({"secret": secret})]},
        "Delivery": delivery,
    }


def component_schemas() -> dict[str, Any]:
    """Every named schema the paths refer to."""
    error = _obj({"error": _obj({"code": _STR, "message": _STR, "field": _STR}, ("code", "message"))})
    return {
        "Error": error,
        **_endpoint_schemas(),
        **_credential_schemas(),
        **_key_schemas(),
        **_workflow_schemas(),
        "Execution": _execution_schema(),
        **_event_schemas(),
        **_subscription_schemas(),
        "Catalog": _catalog_schema(),
        **_config_schemas(),
    }
