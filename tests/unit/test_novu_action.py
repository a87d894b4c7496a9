"""The novu.trigger action: Novu stood in with respx, credentials from a fake source."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import httpx
import orjson
import pytest
import respx

from actions.base import ActionContext, Credential
from actions.errors import PermanentActionError, RetryableActionError
from actions.novu import run

API_KEY = "novu-secret-api-key"
NOVU = Credential("cred-novu", "novu", {"api_key": API_KEY})
TRIGGER_URL = "https://api.novu.co/v1/events/trigger"
CONFIG: dict[str, Any] = {
    "workflow_id": "order-shipped",
    "to": "{{ trigger.body.user.id }}",
    "payload": {"order": "{{ trigger.body.order }}", "note": "Order {{ trigger.body.order.id }}"},
}
DATA = {"trigger": {"body": {"user": {"id": 42, "email": "ada@example.test"}, "order": {"id": "A-7", "total": 250}}}}


class FakeCredentials:
    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        if credential_id != NOVU.id or NOVU.provider not in providers:
            raise PermanentActionError("no such credential")
        return NOVU


def ctx(client: httpx.AsyncClient) -> ActionContext:
    return ActionContext(
        http=client,
        execution_id="exec-1",
        attempt=1,
        template_context=DATA,
        credential_id="cred-novu",
        credentials=FakeCredentials(),
    )


def acknowledged(transaction_id: str = "exec-1") -> dict[str, Any]:
    return {"data": {"acknowledged": True, "status": "processed", "transactionId": transaction_id}}


@respx.mock
async def test_the_trigger_body_names_the_workflow_subscriber_payload_and_transaction() -> None:
    route = respx.post(TRIGGER_URL).respond(201, json=acknowledged())
    async with httpx.AsyncClient() as client:
        await run(ctx(client), CONFIG)

    request = route.calls.last.request
    assert request.headers["authorization"] == f"ApiKey {API_KEY}"
    assert request.headers["idempotency-key"] == "exec-1"
    assert orjson.loads(request.content) == {
        "name": "order-shipped",
        "to": ["42"],  # subscriber ids are strings to Novu
        "payload": {"order": {"id": "A-7", "total": 250}, "note": "Order A-7"},
        "transactionId": "exec-1",
    }


@respx.mock
async def test_the_result_records_novus_transaction_id_and_acknowledgement() -> None:
    respx.post(TRIGGER_URL).respond(201, json=acknowledged("novu-tx-9"))
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)

    assert result == {"transaction_id": "novu-tx-9", "acknowledged": True, "status": "processed"}


@respx.mock
async def test_retried_attempts_send_the_same_transaction_id() -> None:
    route = respx.post(TRIGGER_URL).mock(side_effect=[httpx.Response(503), httpx.Response(201, json=acknowledged())])
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError):
            await run(ctx(client), CONFIG)
        await run(ctx(client), CONFIG)

    sent = [orjson.loads(call.request.content)["transactionId"] for call in route.calls]
    assert sent == ["exec-1", "exec-1"]


@respx.mock
async def test_eu_region_subscriber_objects_and_a_templated_transaction_id() -> None:
    route = respx.post("https://eu.api.novu.co/v1/events/trigger").respond(201, json=acknowledged("order-A-7"))
    config = {
        **CONFIG,
        "base_url": "https://eu.api.novu.co/",
        "to": [{"subscriberId": "{{ trigger.body.user.id }}", "email": "{{ trigger.body.user.email }}"}],
        "transaction_id": "order-{{ trigger.body.order.id }}",
    }
    async with httpx.AsyncClient() as client:
        await run(ctx(client), config)

    body = orjson.loads(route.calls.last.request.content)
    assert body["to"] == [{"subscriberId": "42", "email": "ada@example.test"}]
    assert body["transactionId"] == "order-A-7"


@respx.mock
@pytest.mark.parametrize("status", [409, 429, 500, 503])
async def test_busy_or_failing_novu_is_retryable_honouring_retry_after(status: int) -> None:
    respx.post(TRIGGER_URL).respond(status, headers={"retry-after": "4"})
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError) as caught:
            await run(ctx(client), CONFIG)

    assert caught.value.retry_after_s == 4.0


@respx.mock
async def test_a_validation_error_is_permanent_and_never_shows_the_key() -> None:
    respx.post(TRIGGER_URL).respond(
        422, json={"statusCode": 422, "message": [f"workflow not found for key {API_KEY}"], "error": "Unprocessable"}
    )
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError) as caught:
            await run(ctx(client), CONFIG)

    assert str(caught.value).startswith("Novu rejected the trigger (422): workflow not found")
    assert API_KEY not in str(caught.value)


@respx.mock
async def test_an_inactive_workflow_is_permanent_with_its_status() -> None:
    respx.post(TRIGGER_URL).respond(
        201, json={"data": {"acknowledged": True, "status": "trigger_not_active", "transactionId": "exec-1"}}
    )
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match="trigger_not_active"):
            await run(ctx(client), CONFIG)


@respx.mock
async def test_connection_errors_are_retryable() -> None:
    respx.post(TRIGGER_URL).mock(side_effect=httpx.ConnectError("refused"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError, match=r"could not reach api\.novu\.co"):
            await run(ctx(client), CONFIG)


async def test_a_subscriber_missing_from_trigger_data_is_permanent() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match=r"template error: to: .*trigger\.body\.nobody"):
            await run(ctx(client), {**CONFIG, "to": "{{ trigger.body.nobody }}"})
