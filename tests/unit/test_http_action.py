"""The http.request action against a stand-in target (respx)."""

from __future__ import annotations

from collections.abc import Collection

import httpx
import pytest
import respx
from standardwebhooks.webhooks import Webhook

from actions.base import ActionContext, Credential
from actions.errors import PermanentActionError, RetryableActionError
from actions.http import parse_retry_after, run

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def ctx(client: httpx.AsyncClient, secret: str | None = None) -> ActionContext:
    data = {"trigger": {"body": {"order": {"id": 7, "email": "a@b.c"}}}}
    return ActionContext(http=client, execution_id="exec-1", attempt=1, template_context=data, signing_secret=secret)


@respx.mock
async def test_templated_body_and_url_are_sent() -> None:
    route = respx.post("https://t.example/orders/7").respond(200, json={"ok": True})
    async with httpx.AsyncClient() as client:
        result = await run(
            ctx(client),
            {
                "url": "https://t.example/orders/{{ trigger.body.order.id }}",
                "body": {"id": "{{ trigger.body.order.id }}"},
            },
        )
    assert route.calls.last.request.content == b'{"id":7}'
    assert result["status_code"] == 200


@respx.mock
@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_retryable_statuses_raise_retryable(status: int) -> None:
    respx.post("https://t.example/").respond(status, headers={"retry-after": "7"})
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError) as caught:
            await run(ctx(client), {"url": "https://t.example/"})
    assert caught.value.retry_after_s == 7.0


@respx.mock
@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_are_permanent(status: int) -> None:
    respx.post("https://t.example/").respond(status)
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError):
            await run(ctx(client), {"url": "https://t.example/"})


@respx.mock
async def test_connection_errors_are_retryable_and_do_not_leak_the_path() -> None:
    respx.post("https://t.example/secret-token-path").mock(side_effect=httpx.ConnectError("boom"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError) as caught:
            await run(ctx(client), {"url": "https://t.example/secret-token-path"})
    assert "secret-token-path" not in str(caught.value)


@respx.mock
async def test_signed_request_verifies_with_the_official_library() -> None:
    route = respx.post("https://t.example/").respond(204)
    async with httpx.AsyncClient() as client:
        await run(ctx(client, SECRET), {"url": "https://t.example/", "body": {"a": 1}, "sign": True})
    request = route.calls.last.request
    Webhook(SECRET).verify(request.content, dict(request.headers))
    assert request.headers["webhook-id"] == "exec-1"


async def test_missing_template_path_is_permanent() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match=r"trigger\.body\.nope"):
            await run(ctx(client), {"url": "https://t.example/{{ trigger.body.nope }}"})


def test_retry_after_accepts_seconds_and_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


# --- rendered size cap -----------------------------------------------------------------------


@respx.mock
async def test_a_body_rendering_past_max_rendered_bytes_fails_permanently_and_sends_nothing() -> None:
    route = respx.post("https://t.example/").respond(200)
    config = {"url": "https://t.example/", "body": {"copies": ["{{ trigger.body.blob }}"] * 10}}
    async with httpx.AsyncClient() as client:
        context = ActionContext(
            http=client,
            execution_id="exec-1",
            attempt=1,
            template_context={"trigger": {"body": {"blob": "b" * 300}}},
            max_rendered_bytes=1000,
        )
        with pytest.raises(PermanentActionError, match=r"body\.copies\[3\]: rendered output exceeds 1000 bytes"):
            await run(context, config)
    assert not route.called


# --- http credentials --------------------------------------------------------------------------


class OneCredential:
    def __init__(self, credential: Credential) -> None:
        self.credential = credential

    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        if credential_id != self.credential.id or self.credential.provider not in providers:
            raise PermanentActionError("no such credential")
        return self.credential


def with_credential(client: httpx.AsyncClient, secret: dict[str, str]) -> ActionContext:
    credential = Credential("cred-http", "http", secret)
    return ActionContext(
        http=client,
        execution_id="exec-1",
        attempt=1,
        template_context={},
        credential_id=credential.id,
        credentials=OneCredential(credential),
    )


@respx.mock
async def test_a_basic_auth_credential_sends_the_encoded_pair() -> None:
    route = respx.post("https://t.example/").respond(200)
    async with httpx.AsyncClient() as client:
        await run(with_credential(client, {"username": "ada", "password": "pw"}), {"url": "https://t.example/"})

    assert route.calls.last.request.headers["authorization"] == "Basic YWRhOnB3"


@respx.mock
async def test_a_header_credential_replaces_a_plain_header_whatever_its_case() -> None:
    route = respx.post("https://t.example/").respond(200)
    config = {"url": "https://t.example/", "headers": {"X-API-KEY": "plain"}}
    async with httpx.AsyncClient() as client:
        await run(with_credential(client, {"header": "x-api-key", "value": "stored"}), config)

    assert route.calls.last.request.headers.get_list("x-api-key") == ["stored"]


@respx.mock
async def test_a_secret_echoed_across_the_excerpt_boundary_leaves_no_prefix() -> None:
    secret = "s3cret-token-value"
    echoed = "x" * 2040 + secret
    respx.post("https://t.example/").respond(200, text=echoed)
    async with httpx.AsyncClient() as client:
        result = await run(with_credential(client, {"bearer_token": secret}), {"url": "https://t.example/"})

    assert "s3cret" not in result["response_body"]
    assert len(result["response_body"]) <= 2048


@respx.mock
async def test_a_credential_of_another_provider_fails_permanently_before_sending() -> None:
    route = respx.post("https://t.example/").respond(200)
    async with httpx.AsyncClient() as client:
        wrong = ActionContext(
            http=client,
            execution_id="exec-1",
            attempt=1,
            template_context={},
            credential_id="cred-http",
            credentials=OneCredential(Credential("cred-http", "novu", {"api_key": "k"})),
        )
        with pytest.raises(PermanentActionError):
            await run(wrong, {"url": "https://t.example/"})
    assert not route.called
