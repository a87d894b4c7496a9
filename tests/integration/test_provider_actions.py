"""Provider actions end to end: stored credentials, the real worker, providers stood in with respx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import orjson
import pytest
import respx

from actions import email, novu, slack
from actions.base import ActionConfigError
from actions.email import POSTMARK_URL, RESEND_URL
from tests.conftest import Owner, wait_for
from tests.factories import create_endpoint, executions, send
from tests.integration.api_support import create_credential as credential

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("pipeline")]

FAST_RETRY = {"max_attempts": 2, "initial_interval_s": 0.2, "backoff": 1.0, "max_interval_s": 1}
NOVU_URL = "https://api.novu.co/v1/events/trigger"


@pytest.fixture
def providers() -> Iterator[respx.MockRouter]:
    """Third-party APIs stood in; hookyard's own servers on 127.0.0.1 are reached for real."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        yield mock


async def workflow(owner: Owner, endpoint_id: str, action: dict[str, Any]) -> dict[str, Any]:
    body = {
        "name": "notify",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint_id}},
        "action": action,
        "retry_policy": FAST_RETRY,
    }
    response = await owner.client.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_email_fails_over_from_resend_to_postmark_with_stored_credentials(
    owner: Owner, http: httpx.AsyncClient, providers: respx.MockRouter
) -> None:
    resend = providers.post(RESEND_URL).respond(500, json={"name": "application_error"})
    postmark = providers.post(POSTMARK_URL).respond(200, json={"MessageID": "pm-77", "ErrorCode": 0})
    resend_id = await credential(owner, "resend", {"api_key": "re_pipeline_key"})
    postmark_id = await credential(owner, "postmark", {"server_token": "pm_pipeline_token"})
    endpoint = await create_endpoint(owner.client)
    config = {
        "providers": [
            {"provider": "resend", "credential_id": resend_id},
            {"provider": "postmark", "credential_id": postmark_id},
        ],
        "from": "shop@acme.test",
        "to": "{{ trigger.body.email }}",
        "subject": "Order {{ trigger.body.order }}",
        "text": "Thanks!",
    }
    flow = await workflow(owner, endpoint["id"], {"type": "email.send", "config": config})

    await send(http, endpoint, b'{"email": "ada@example.test", "order": "A-7"}')
    [execution] = await wait_for(lambda: executions(owner.client, flow["id"], "succeeded"))

    assert execution["result"]["provider"] == "postmark"
    assert execution["result"]["message_id"] == "pm-77"
    assert execution["result"]["failed_over_from"] == ["resend"]
    assert resend.calls.last.request.headers["authorization"] == "Bearer re_pipeline_key"
    assert resend.calls.last.request.headers["idempotency-key"] == f"{execution['id']}:resend"
    sent = postmark.calls.last.request
    assert sent.headers["x-postmark-server-token"] == "pm_pipeline_token"
    assert orjson.loads(sent.content)["To"] == "ada@example.test"


async def test_novu_trigger_uses_the_workflow_credential_and_the_execution_as_transaction(
    owner: Owner, http: httpx.AsyncClient, providers: respx.MockRouter
) -> None:
    novu = providers.post(NOVU_URL).respond(
        201, json={"data": {"acknowledged": True, "status": "processed", "transactionId": "tx-from-novu"}}
    )
    novu_id = await credential(owner, "novu", {"api_key": "novu_pipeline_key"})
    endpoint = await create_endpoint(owner.client)
    config = {"workflow_id": "welcome", "to": "{{ trigger.body.user }}", "payload": {"plan": "{{ trigger.body.plan }}"}}
    flow = await workflow(owner, endpoint["id"], {"type": "novu.trigger", "config": config, "credential_id": novu_id})

    await send(http, endpoint, b'{"user": 42, "plan": "pro"}')
    [execution] = await wait_for(lambda: executions(owner.client, flow["id"], "succeeded"))

    assert execution["result"] == {"transaction_id": "tx-from-novu", "acknowledged": True, "status": "processed"}
    request = novu.calls.last.request
    assert request.headers["authorization"] == "ApiKey novu_pipeline_key"
    assert orjson.loads(request.content) == {
        "name": "welcome",
        "to": ["42"],
        "payload": {"plan": "pro"},
        "transactionId": execution["id"],
    }


async def test_slack_invalid_auth_fails_the_execution_without_retrying(
    owner: Owner, http: httpx.AsyncClient, providers: respx.MockRouter
) -> None:
    slack = providers.post("https://slack.com/api/chat.postMessage").respond(
        200, json={"ok": False, "error": "invalid_auth"}
    )
    slack_id = await credential(owner, "slack", {"bot_token": "xoxb-pipeline"})
    endpoint = await create_endpoint(owner.client)
    config = {"channel": "C0123", "text": "new order {{ trigger.body.order }}"}
    flow = await workflow(
        owner, endpoint["id"], {"type": "slack.post-message", "config": config, "credential_id": slack_id}
    )

    await send(http, endpoint, b'{"order": "A-7"}')
    [execution] = await wait_for(lambda: executions(owner.client, flow["id"], "failed"))

    assert execution["attempts"] == 1
    assert "invalid_auth" in execution["error"]
    assert "xoxb-pipeline" not in execution["error"]
    assert slack.call_count == 1


async def test_email_config_check_refuses_a_credential_listed_under_the_wrong_provider(
    owner: Owner, pool: asyncpg.Pool
) -> None:
    postmark_id = await credential(owner, "postmark", {"server_token": "t"})
    config = {"providers": [{"provider": "resend", "credential_id": postmark_id}]}
    async with pool.acquire() as conn:
        with pytest.raises(ActionConfigError) as caught:
            await email.check_config(conn, UUID(owner.id), config, None)

    assert caught.value.field == "action.config.providers[0].credential_id"
    assert "postmark, not resend" in str(caught.value)


async def test_config_checks_never_accept_another_owners_credential(
    owner: Owner, other_owner: Owner, pool: asyncpg.Pool
) -> None:
    theirs = {p: await credential(other_owner, p, {"api_key": "k"}) for p in ("resend", "novu")}
    email_config = {"providers": [{"provider": "resend", "credential_id": theirs["resend"]}]}
    async with pool.acquire() as conn:
        with pytest.raises(ActionConfigError, match="no such credential"):
            await email.check_config(conn, UUID(owner.id), email_config, None)
        with pytest.raises(ActionConfigError, match="Novu credential of yours"):
            await novu.check_config(conn, UUID(owner.id), {}, UUID(theirs["novu"]))


async def test_slack_config_check_wants_a_webhook_or_a_slack_credential_and_channel(
    owner: Owner, pool: asyncpg.Pool
) -> None:
    slack_id = UUID(await credential(owner, "slack", {"bot_token": "xoxb-1"}))
    async with pool.acquire() as conn:
        await slack.check_config(conn, UUID(owner.id), {"webhook_url": "https://hooks.slack.com/x"}, None)
        await slack.check_config(conn, UUID(owner.id), {"channel": "C1", "text": "hi"}, slack_id)
        with pytest.raises(ActionConfigError) as no_channel:
            await slack.check_config(conn, UUID(owner.id), {"text": "hi"}, slack_id)
        with pytest.raises(ActionConfigError) as nothing:
            await slack.check_config(conn, UUID(owner.id), {"channel": "C1", "text": "hi"}, None)

    assert (no_channel.value.field, nothing.value.field) == ("action.config.channel", "action.credential_id")
