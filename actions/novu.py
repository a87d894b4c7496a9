"""`novu.trigger`: start a Novu workflow for one or more subscribers.

`POST {base_url}/v1/events/trigger` with the workflow's `novu` credential. Idempotency: the
body's `transactionId` defaults to the execution id and the `Idempotency-Key` header is the
execution id, the same on every attempt, so Novu drops a repeated trigger (the header
replays the first answer; the transaction id deduplicates for longer, by billing tier).
`base_url` selects the region (`https://eu.api.novu.co`) or a self-hosted API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from actions.base import ActionConfigError, ActionContext, ActionType, json_object
from actions.errors import PermanentActionError, RetryableActionError
from actions.http import parse_retry_after
from actions.ratelimit import acquire
from actions.templating import RenderBudget, TemplateError, render
from schemas.store.credentials import credential_provider

DEFAULT_BASE_URL = "https://api.novu.co"
MAX_RECIPIENTS = 100  # Novu: "Maximum number of recipients can be 100".

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workflow_id", "to"],
    "additionalProperties": False,
    "properties": {
        "workflow_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "The Novu workflow's trigger identifier (templated).",
        },
        "to": {
            "type": ["string", "object", "array"],
            "maxItems": MAX_RECIPIENTS,
            "description": "Subscriber id, subscriber object ({subscriberId, email, …}) or a list of them "
            "(templated, e.g. '{{ trigger.body.user.id }}').",
        },
        "payload": {"type": "object", "default": {}, "description": "Data for the workflow's templates (templated)."},
        "transaction_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "Deduplication id (templated); default: the execution id.",
        },
        "base_url": {
            "type": "string",
            "pattern": "^https://",
            "maxLength": 200,
            "default": DEFAULT_BASE_URL,
            "description": "https://eu.api.novu.co for the EU region, or a self-hosted Novu API.",
        },
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 60, "default": 10},
    },
}

# Trigger statuses that mean Novu will not run the workflow for this event.
_REFUSED_STATUSES = {
    "error",
    "trigger_not_active",
    "no_workflow_active_steps_defined",
    "no_workflow_steps_defined",
    "no_tenant_found",
    "invalid_recipients",
}
_DETAIL_CHARS = 300
_USER_AGENT = "hookyard/0.1"


async def run(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, Any]:
    """Trigger the workflow; the result holds Novu's transactionId and whether it acknowledged."""
    body = build_body(ctx.template_context, config, ctx.execution_id, ctx.render_budget())
    if not ctx.credential_id:
        raise PermanentActionError("novu.trigger needs a Novu credential (action.credential_id)")
    if ctx.credentials is None:
        raise PermanentActionError("novu.trigger: credentials are not available to this worker")
    credential = await ctx.credentials.load(ctx.credential_id, providers={"novu"})
    api_key = credential.secret.get("api_key")
    if not api_key:
        raise PermanentActionError("the Novu credential has no api_key")
    url = str(config.get("base_url") or DEFAULT_BASE_URL).rstrip("/") + "/v1/events/trigger"
    headers = {
        "authorization": f"ApiKey {api_key}",
        "idempotency-key": ctx.execution_id,
        "user-agent": _USER_AGENT,
    }
    await acquire(ctx.limiter, "novu", credential.id)
    host = httpx.URL(url).host
    try:
        response = await ctx.http.post(url, headers=headers, json=body, timeout=float(config.get("timeout_s", 10)))
    except httpx.TimeoutException as exc:
        raise RetryableActionError(f"timed out calling {host}") from exc
    except httpx.HTTPError as exc:
        raise RetryableActionError(f"could not reach {host}: {type(exc).__name__}") from exc
    return _result(response, body["transactionId"], api_key)


def _result(response: httpx.Response, transaction_id: str, api_key: str) -> dict[str, Any]:
    code = response.status_code
    data = json_object(response)
    if code in (409, 429) or code >= 500:
        # 409: the same idempotency key is still being processed; its answer comes soon.
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RetryableActionError(f"Novu answered {code}", retry_after_s=retry_after)
    if not response.is_success:
        detail = _detail(data.get("message") or data.get("error"), api_key)
        if code in (401, 403):
            raise PermanentActionError(f"Novu refused the API key ({code}): {detail}")
        raise PermanentActionError(f"Novu rejected the trigger ({code}): {detail}")
    inner = data.get("data")
    answer = inner if isinstance(inner, dict) else data
    acknowledged = answer.get("acknowledged") is True
    status = str(answer.get("status") or "")
    result = {
        "transaction_id": str(answer.get("transactionId") or transaction_id),
        "acknowledged": acknowledged,
        "status": status or None,
    }
    if not acknowledged or status in _REFUSED_STATUSES:
        detail = _detail(answer.get("error"), api_key)
        raise PermanentActionError(
            f"Novu did not accept the trigger ({status or 'not acknowledged'}): {detail}", result=result
        )
    return result


def build_body(
    context: Mapping[str, Any], config: Mapping[str, Any], execution_id: str, budget: RenderBudget | None = None
) -> dict[str, Any]:
    """The trigger body: name, to, payload and transactionId after templating (within `budget`)."""
    budget = RenderBudget() if budget is None else budget
    try:
        name = render(config["workflow_id"], context, field="workflow_id", budget=budget)
        to = render(config["to"], context, field="to", budget=budget)
        payload = render(config.get("payload", {}), context, field="payload", budget=budget)
        transaction_id = render(
            config.get("transaction_id", execution_id), context, field="transaction_id", budget=budget
        )
    except TemplateError as exc:
        raise PermanentActionError(f"template error: {exc}") from exc
    if not isinstance(name, str) or not name:
        raise PermanentActionError("workflow_id: expected a non-empty string after templating")
    if not isinstance(payload, dict):
        raise PermanentActionError("payload: expected an object after templating")
    if not isinstance(transaction_id, str | int) or isinstance(transaction_id, bool) or not str(transaction_id):
        raise PermanentActionError("transaction_id: expected a non-empty string after templating")
    return {"name": name, "to": _recipients(to), "payload": payload, "transactionId": str(transaction_id)}


def _recipients(value: object) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PermanentActionError("to: no subscriber after templating")
    if len(items) > MAX_RECIPIENTS:
        raise PermanentActionError(f"to: more than {MAX_RECIPIENTS} subscribers")
    return [_recipient(item) for item in items]


def _recipient(item: object) -> Any:
    # Subscriber ids are strings to Novu; ids taken from trigger data are often numbers.
    if isinstance(item, str | int) and not isinstance(item, bool) and str(item):
        return str(item)
    if isinstance(item, dict):
        if item.get("subscriberId") not in (None, ""):
            return {**item, "subscriberId": str(item["subscriberId"])}
        if item.get("topicKey"):
            return item
    raise PermanentActionError("to: each subscriber must be an id, or an object with subscriberId or topicKey")


def _detail(value: object, secret: str) -> str:
    if isinstance(value, list):
        value = "; ".join(map(str, value))
    text = str(value or "no details given")
    return text.replace(secret, "[redacted]")[:_DETAIL_CHARS] if secret else text[:_DETAIL_CHARS]


async def check_config(
    conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any], credential_id: UUID | None
) -> None:
    """The workflow names a Novu credential of the owner."""
    if credential_id is None:
        raise ActionConfigError("action.credential_id", "novu.trigger needs a Novu credential")
    if await credential_provider(conn, owner_id, credential_id) != "novu":
        raise ActionConfigError("action.credential_id", "needs a Novu credential of yours")


ACTION = ActionType(
    name="novu.trigger",
    description="Trigger a Novu workflow for subscribers from the trigger data (deduplicated per execution).",
    config_schema=CONFIG_SCHEMA,
    run=run,
    credential_providers=("novu",),
    check_config=check_config,
)
