"""The email.send action: Resend and Postmark stood in with respx, credentials from a fake source."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from actions import email
from actions.base import ActionContext, Credential
from actions.email import POSTMARK_URL, RESEND_URL, EmailRoute, run, send_with_failover
from actions.errors import PermanentActionError, RetryableActionError

RESEND_KEY = "re_test_secret_key"
POSTMARK_TOKEN = "pm-server-token-secret"
RESEND = Credential("cred-resend", "resend", {"api_key": RESEND_KEY})
POSTMARK = Credential("cred-postmark", "postmark", {"server_token": POSTMARK_TOKEN})
BOTH = [
    {"provider": "resend", "credential_id": "cred-resend"},
    {"provider": "postmark", "credential_id": "cred-postmark"},
]
CONFIG: dict[str, Any] = {
    "providers": BOTH,
    "from": "Acme <orders@acme.test>",
    "to": "{{ trigger.body.customer.email }}",
    "subject": "Order {{ trigger.body.order.id }} shipped",
    "text": "Hi {{ trigger.body.customer.name }}, order {{ trigger.body.order.id }} is on its way.",
}
DATA = {"trigger": {"body": {"order": {"id": "A-7"}, "customer": {"email": "ada@example.test", "name": "Ada"}}}}


class FakeCredentials:
    """Stands in for the credential store: loads by id, refuses other providers like the real one."""

    def __init__(self, *credentials: Credential) -> None:
        self._by_id = {c.id: c for c in credentials}
        self.loaded: list[str] = []

    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        self.loaded.append(credential_id)
        found = self._by_id.get(credential_id)
        if found is None or found.provider not in providers:
            raise PermanentActionError(f"credential {credential_id} cannot be used here")
        return found


class RecordingLimiter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def acquire(self, provider: str, key: str) -> None:
        self.calls.append((provider, key))


@pytest.fixture(autouse=True)
def fast_quick_retry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(email, "_QUICK_RETRY_DEFAULT_S", 0.01)
    yield


def ctx(
    client: httpx.AsyncClient,
    *,
    credential_id: str | None = None,
    limiter: RecordingLimiter | None = None,
    credentials: FakeCredentials | None = None,
) -> ActionContext:
    return ActionContext(
        http=client,
        execution_id="exec-1",
        attempt=1,
        template_context=DATA,
        owner_id="owner-1",
        credential_id=credential_id,
        credentials=credentials or FakeCredentials(RESEND, POSTMARK),
        limiter=limiter,
    )


def resend_ok(message_id: str = "re-msg-1") -> httpx.Response:
    return httpx.Response(200, json={"id": message_id})


def postmark_ok(message_id: str = "pm-msg-1") -> httpx.Response:
    return httpx.Response(
        200, json={"To": "ada@example.test", "MessageID": message_id, "ErrorCode": 0, "Message": "OK"}
    )


def sent_json(route: respx.Route, index: int = -1) -> Any:
    return orjson.loads(route.calls[index].request.content)


@respx.mock
async def test_resend_is_tried_first_and_its_id_is_the_result() -> None:
    resend = respx.post(RESEND_URL).mock(return_value=resend_ok())
    postmark = respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)

    assert result == {"provider": "resend", "message_id": "re-msg-1", "failed_over_from": [], "failover_errors": []}
    assert not postmark.called
    request = resend.calls.last.request
    assert request.headers["authorization"] == f"Bearer {RESEND_KEY}"
    assert sent_json(resend) == {
        "from": "Acme <orders@acme.test>",
        "to": ["ada@example.test"],
        "subject": "Order A-7 shipped",
        "text": "Hi Ada, order A-7 is on its way.",
    }


@respx.mock
async def test_resend_500_fails_over_to_postmark_which_delivers() -> None:
    resend = respx.post(RESEND_URL).mock(return_value=httpx.Response(500, json={"name": "application_error"}))
    respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)

    assert result["provider"] == "postmark"
    assert result["message_id"] == "pm-msg-1"
    assert result["failed_over_from"] == ["resend"]
    assert "500" in result["failover_errors"][0]
    assert resend.call_count == 2  # one quick retry inside the attempt, then the next provider


@respx.mock
async def test_resend_connection_error_fails_over_to_postmark() -> None:
    respx.post(RESEND_URL).mock(side_effect=httpx.ConnectError("refused"))
    respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)

    assert (result["provider"], result["failed_over_from"]) == ("postmark", ["resend"])


@respx.mock
async def test_a_quick_retry_that_succeeds_stays_with_resend() -> None:
    respx.post(RESEND_URL).mock(side_effect=[httpx.Response(503), resend_ok("re-2")])
    postmark = respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)

    assert (result["provider"], result["message_id"]) == ("resend", "re-2")
    assert not postmark.called


@respx.mock
async def test_resend_429_with_a_long_retry_after_fails_over_without_waiting() -> None:
    resend = respx.post(RESEND_URL).mock(
        return_value=httpx.Response(429, headers={"retry-after": "30"}, json={"name": "rate_limit_exceeded"})
    )
    respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)

    assert result["provider"] == "postmark"
    assert resend.call_count == 1


@respx.mock
async def test_resend_422_is_permanent_names_resend_and_does_not_fail_over() -> None:
    respx.post(RESEND_URL).mock(
        return_value=httpx.Response(
            422, json={"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field."}
        )
    )
    postmark = respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError) as caught:
            await run(ctx(client), CONFIG)

    assert str(caught.value) == "resend rejected the e-mail: answered 422 validation_error: Invalid `to` field."
    assert not postmark.called


@respx.mock
async def test_resend_400_validation_error_is_permanent_too() -> None:
    respx.post(RESEND_URL).mock(return_value=httpx.Response(400, json={"name": "validation_error", "message": "x"}))
    postmark = respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match=r"^resend rejected"):
            await run(ctx(client), CONFIG)
    assert not postmark.called


@respx.mock
@pytest.mark.parametrize(
    ("error_code", "message"),
    [(300, "Invalid 'To' address: 'nope'."), (400, "The 'From' address you supplied is not a Sender Signature.")],
)
async def test_postmark_validation_errors_are_permanent_and_name_postmark(error_code: int, message: str) -> None:
    respx.post(POSTMARK_URL).mock(return_value=httpx.Response(422, json={"ErrorCode": error_code, "Message": message}))
    resend = respx.post(RESEND_URL).mock(return_value=resend_ok())
    config = {**CONFIG, "providers": list(reversed(BOTH))}
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError) as caught:
            await run(ctx(client), config)

    assert str(caught.value) == f"postmark rejected the e-mail: answered 422 ErrorCode {error_code}: {message}"
    assert not resend.called


@respx.mock
async def test_every_provider_down_is_retryable_and_lists_each_failure() -> None:
    respx.post(RESEND_URL).mock(return_value=httpx.Response(503))
    respx.post(POSTMARK_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError) as caught:
            await run(ctx(client), CONFIG)

    message = str(caught.value)
    assert message.startswith("no e-mail provider could send: ")
    assert "resend: answered 503" in message
    assert "postmark: timed out" in message
    assert caught.value.result is not None
    assert caught.value.result["failed_over_from"] == ["resend", "postmark"]


@respx.mock
async def test_an_ambiguous_postmark_failure_is_not_repeated_inside_the_attempt() -> None:
    # Postmark has no idempotency key: after a timeout it may already have sent the message.
    postmark = respx.post(POSTMARK_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    respx.post(RESEND_URL).mock(return_value=resend_ok())
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), {**CONFIG, "providers": list(reversed(BOTH))})

    assert postmark.call_count == 1
    assert (result["provider"], result["failed_over_from"]) == ("resend", ["postmark"])


@respx.mock
async def test_postmark_429_is_retried_once_inside_the_attempt() -> None:
    postmark = respx.post(POSTMARK_URL).mock(
        side_effect=[httpx.Response(429, json={"ErrorCode": 429, "Message": "Rate limit exceeded"}), postmark_ok()]
    )
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), {**CONFIG, "providers": [BOTH[1]]})

    assert (result["provider"], postmark.call_count) == ("postmark", 2)


@respx.mock
async def test_resend_idempotency_key_is_the_execution_and_provider_on_every_try_and_attempt() -> None:
    resend = respx.post(RESEND_URL).mock(side_effect=[httpx.Response(500), httpx.Response(500), resend_ok()])
    respx.post(POSTMARK_URL).mock(return_value=httpx.Response(503))
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError):
            await run(ctx(client), CONFIG)  # attempt 1: resend twice, postmark down
        await run(ctx(client), CONFIG)  # attempt 2 (the workflow's retry)

    keys = [call.request.headers.get("idempotency-key") for call in resend.calls]
    assert keys == ["exec-1:resend"] * 3


@respx.mock
async def test_a_refused_resend_key_fails_over_and_alone_is_permanent() -> None:
    respx.post(RESEND_URL).mock(
        return_value=httpx.Response(403, json={"name": "invalid_api_key", "message": "API key is invalid"})
    )
    respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)
        with pytest.raises(PermanentActionError, match="no e-mail provider accepted its credential"):
            await run(ctx(client), {**CONFIG, "providers": [BOTH[0]]})

    assert result["failed_over_from"] == ["resend"]


@respx.mock
async def test_provider_messages_never_echo_the_credential() -> None:
    respx.post(RESEND_URL).mock(
        return_value=httpx.Response(422, json={"name": "validation_error", "message": f"bad request from {RESEND_KEY}"})
    )
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError) as caught:
            await run(ctx(client), CONFIG)

    assert RESEND_KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)


@respx.mock
async def test_postmark_receives_its_own_field_names() -> None:
    postmark = respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    config = {
        **CONFIG,
        "providers": [BOTH[1]],
        "to": ["ada@example.test", "bob@example.test"],
        "cc": "carol@example.test",
        "bcc": ["audit@acme.test"],
        "reply_to": "support@acme.test",
        "html": "<p>Order {{ trigger.body.order.id }}</p>",
        "tags": {"category": "shipping", "order": "{{ trigger.body.order.id }}"},
    }
    async with httpx.AsyncClient() as client:
        await run(ctx(client), config)

    request = postmark.calls.last.request
    assert request.headers["x-postmark-server-token"] == POSTMARK_TOKEN
    assert sent_json(postmark) == {
        "From": "Acme <orders@acme.test>",
        "To": "ada@example.test, bob@example.test",
        "Cc": "carol@example.test",
        "Bcc": "audit@acme.test",
        "ReplyTo": "support@acme.test",
        "Subject": "Order A-7 shipped",
        "TextBody": "Hi Ada, order A-7 is on its way.",
        "HtmlBody": "<p>Order A-7</p>",
        "Metadata": {"category": "shipping", "order": "A-7"},
        "Tag": "shipping",
    }


@respx.mock
async def test_resend_tags_are_name_value_pairs_with_unsafe_characters_replaced() -> None:
    resend = respx.post(RESEND_URL).mock(return_value=resend_ok())
    async with httpx.AsyncClient() as client:
        await run(ctx(client), {**CONFIG, "tags": {"customer": "{{ trigger.body.customer.email }}"}})

    assert sent_json(resend)["tags"] == [{"name": "customer", "value": "ada_example_test"}]


@respx.mock
async def test_the_workflow_credential_alone_is_used_when_no_providers_are_listed() -> None:
    postmark = respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    config = {k: v for k, v in CONFIG.items() if k != "providers"}
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client, credential_id="cred-postmark"), config)

    assert (result["provider"], postmark.call_count) == ("postmark", 1)


@respx.mock
async def test_every_request_waits_for_the_limiter_under_its_provider_and_credential() -> None:
    respx.post(RESEND_URL).mock(return_value=httpx.Response(500))
    respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    limiter = RecordingLimiter()
    async with httpx.AsyncClient() as client:
        await run(ctx(client, limiter=limiter), CONFIG)

    assert limiter.calls == [("resend", "cred-resend"), ("resend", "cred-resend"), ("postmark", "cred-postmark")]


@respx.mock
async def test_the_secondary_credential_is_loaded_only_when_needed() -> None:
    respx.post(RESEND_URL).mock(return_value=resend_ok())
    credentials = FakeCredentials(RESEND, POSTMARK)
    async with httpx.AsyncClient() as client:
        await run(ctx(client, credentials=credentials), CONFIG)

    assert credentials.loaded == ["cred-resend"]


@respx.mock
async def test_an_unusable_credential_is_skipped_like_a_refused_one() -> None:
    respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    config = {**CONFIG, "providers": [{"provider": "resend", "credential_id": "cred-postmark"}, BOTH[1]]}
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), config)

    assert (result["provider"], result["failed_over_from"]) == ("postmark", ["resend"])


@respx.mock
async def test_failovers_are_reported_from_one_provider_to_the_next() -> None:
    respx.post(RESEND_URL).mock(return_value=httpx.Response(502))
    respx.post(POSTMARK_URL).mock(return_value=postmark_ok())
    seen: list[tuple[str, str]] = []
    message = email.build_message(DATA, CONFIG)
    routes = [EmailRoute("resend", "cred-resend"), EmailRoute("postmark", "cred-postmark")]
    async with httpx.AsyncClient() as client:
        delivery = await send_with_failover(
            client,
            FakeCredentials(RESEND, POSTMARK),
            routes,
            message,
            idempotency_key="newsletter-1",
            on_failover=lambda a, b: seen.append((a, b)),
        )

    assert (delivery.provider, seen) == ("postmark", [("resend", "postmark")])


async def test_a_missing_template_path_is_permanent_and_names_the_field() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match=r"^template error: to: .*trigger\.body\.nobody"):
            await run(ctx(client), {**CONFIG, "to": "{{ trigger.body.nobody }}"})


async def test_a_line_break_in_the_subject_is_refused_before_sending() -> None:
    body = {**DATA["trigger"]["body"], "order": {"id": "1\r\nBcc: victim@example.test"}}
    async with httpx.AsyncClient() as client:
        context = dataclasses.replace(ctx(client), template_context={"trigger": {"body": body}})
        with pytest.raises(PermanentActionError, match="subject: must not contain line breaks"):
            await run(context, CONFIG)


async def test_without_any_credential_the_attempt_is_permanent() -> None:
    config = {k: v for k, v in CONFIG.items() if k != "providers"}
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match="needs a Resend or Postmark credential"):
            await run(ctx(client), config)
