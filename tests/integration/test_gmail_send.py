"""`gmail.send-email` through hookyard's Gmail client against the fake Gmail server, with
credentials loaded from the real vault and refreshed at the stand-in Google."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from actions import gmail
from actions.base import ActionConfigError, ActionContext
from actions.egress import LOOPBACK, EgressPolicy
from actions.errors import PermanentActionError, RetryableActionError
from hookyard import services
from oauth.crypto import Keyring
from oauth.google import google_from_settings
from oauth.vault import Vault
from schemas.store.credentials import insert_api_key
from schemas.store.owners import create_owner
from settings import Settings
from tests.conftest import serve
from tests.fake_gmail import FakeGmail, FakeMailbox
from tests.fake_google import FakeGoogle
from tests.gmail_support import READ_SCOPE, connect_google, unique_email
from worker.automation.credentials import OwnerCredentials

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeGmail]:
    server = FakeGmail()
    async with serve(server.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        server.url = url
        yield server


class Sender:
    def __init__(self, owner_id: UUID, credential_id: str, box: FakeMailbox, vault: Vault, http: httpx.AsyncClient):
        self.owner_id = owner_id
        self.credential_id = credential_id
        self.box = box
        self.vault = vault
        self.http = http
        self.box_url = ""

    def context(self, trigger: dict[str, Any] | None = None, attempt: int = 1, execution_id: str = "") -> ActionContext:
        return ActionContext(
            http=self.http,
            execution_id=execution_id or str(uuid.uuid4()),
            attempt=attempt,
            template_context={"trigger": trigger or {}, "execution": {"id": execution_id, "attempt": attempt}},
            owner_id=str(self.owner_id),
            credential_id=self.credential_id,
            credentials=OwnerCredentials(self.vault, self.owner_id),
            api_bases={"gmail": self.box_url},
            egress=EgressPolicy(LOOPBACK),
        )


@pytest.fixture
async def sender(
    pool: asyncpg.Pool, keyring: Keyring, fake: FakeGmail, settings: Settings, fake_google_server: FakeGoogle
) -> AsyncIterator[Sender]:
    async with pool.acquire() as conn:
        owner_id, _ = await create_owner(conn, "sender")
    email, token = unique_email("sender"), f"tok-{uuid.uuid4().hex}"
    box = fake.mailbox(email, token)
    credential = await connect_google(pool, keyring, owner_id, email, token, mailbox=False)
    # The stand-in Google knows the account's refresh token; tokens it issues reach the mailbox.
    fake_google_server.refresh_owner["refresh-" + token] = email
    fake.accept_tokens_from(fake_google_server)
    async with httpx.AsyncClient() as http:
        vault = Vault(pool, keyring, http, google_from_settings(settings.for_google()))
        sender = Sender(owner_id, credential, box, vault, http)
        sender.box_url = fake.url
        yield sender


CONFIG = {
    "to": "{{ trigger.from }}",
    "subject": "Re: {{ trigger.subject }}",
    "text": "Thanks, {{ trigger.name }}!",
    "html": "<p>Thanks, {{ trigger.name }}!</p>",
}
TRIGGER = {
    "from": "Erin <erin@example.test>",
    "subject": "Quote",
    "name": "Erin",
    "thread_id": "thread-77",
    "message_id": "<abc@mail.example.test>",
    "references": "<root@mail.example.test>",
}


async def test_the_templated_message_is_sent_with_the_execution_header(sender) -> None:
    execution_id = str(uuid.uuid4())
    result = await gmail.run(sender.context(TRIGGER, execution_id=execution_id), CONFIG)
    [sent] = sender.box.sent
    assert sent["To"] == "Erin <erin@example.test>"
    assert sent["Subject"] == "Re: Quote"
    assert sent["X-Hookyard-Execution"] == execution_id
    assert sent.get_body(("plain",)).get_content().strip() == "Thanks, Erin!"
    assert sent.get_body(("html",)).get_content().strip() == "<p>Thanks, Erin!</p>"
    assert "In-Reply-To" not in sent
    assert result["message_id"] in sender.box.messages
    assert result["thread_id"] == result["message_id"]
    assert result["rfc822_message_id"] == sent["Message-ID"]


async def test_a_reply_in_thread_joins_the_triggering_thread(sender) -> None:
    result = await gmail.run(sender.context(TRIGGER), CONFIG | {"reply_in_thread": True})
    [sent] = sender.box.sent
    assert result["thread_id"] == "thread-77"
    assert sent["In-Reply-To"] == "<abc@mail.example.test>"
    assert sent["References"] == "<root@mail.example.test> <abc@mail.example.test>"


async def test_a_reply_in_thread_without_gmail_trigger_data_fails_for_good(sender) -> None:
    with pytest.raises(PermanentActionError, match="thread_id"):
        await gmail.run(
            sender.context({"from": "x@example.test", "subject": "s", "name": "n"}), CONFIG | {"reply_in_thread": True}
        )
    assert sender.box.sent == []


async def test_a_retried_attempt_does_not_send_what_the_first_one_already_sent(sender) -> None:
    execution_id = str(uuid.uuid4())
    first = await gmail.run(sender.context(TRIGGER, attempt=1, execution_id=execution_id), CONFIG)
    again = await gmail.run(sender.context(TRIGGER, attempt=2, execution_id=execution_id), CONFIG)
    assert len(sender.box.sent) == 1
    assert again["message_id"] == first["message_id"]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_are_retried(sender, status: int) -> None:
    sender.box.failures["/messages/send"] = [status]
    with pytest.raises(RetryableActionError, match=str(status)):
        await gmail.run(sender.context(TRIGGER), CONFIG)


@pytest.mark.parametrize(("status", "hint"), [(400, ""), (403, "gmail.send")])
async def test_refusals_fail_for_good_with_a_reason_and_never_the_token(sender, status: int, hint: str) -> None:
    sender.box.failures["/messages/send"] = [status]
    with pytest.raises(PermanentActionError) as failed:
        await gmail.run(sender.context(TRIGGER), CONFIG)
    assert str(status) in str(failed.value) and hint in str(failed.value)
    assert sender.box.token not in str(failed.value)


async def test_a_401_that_a_refresh_cures_is_retried_once_with_the_new_token(sender, fake_google_server) -> None:
    sender.box.failures["/messages/send"] = [401]  # Google rotated the token: the stored one is refused
    result = await gmail.run(sender.context(TRIGGER), CONFIG)
    assert len(sender.box.sent) == 1 and result["message_id"] in sender.box.messages
    assert len(fake_google_server.refresh_calls) == 1
    assert sender.box.calls.count("POST /messages/send") == 2


async def test_a_401_from_a_revoked_grant_fails_for_good_naming_the_reason_and_never_the_token(
    sender, fake, fake_google_server, pool
) -> None:
    fake_google_server.revoke_account(sender.box.email)
    fake.revoke(sender.box)
    with pytest.raises(PermanentActionError) as failed:
        await gmail.run(sender.context(TRIGGER), CONFIG)
    assert "needs to be reconnected (revoked" in str(failed.value) and "invalid_grant" in str(failed.value)
    assert sender.box.token not in str(failed.value) and sender.box.sent == []
    status = await pool.fetchval("SELECT status FROM credentials WHERE id = $1", UUID(sender.credential_id))
    assert status == "needs_reconnect"


async def test_a_templated_header_cannot_smuggle_in_another_header(sender) -> None:
    trigger = TRIGGER | {"subject": "hi\r\nBcc: victim@example.test"}
    with pytest.raises(PermanentActionError, match="line breaks"):
        await gmail.run(sender.context(trigger), CONFIG)
    assert sender.box.sent == []


async def test_a_credential_that_needs_reconnecting_fails_for_good(sender, pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE credentials SET status = 'needs_reconnect' WHERE id = $1", UUID(sender.credential_id)
        )
    with pytest.raises(PermanentActionError, match="reconnect"):
        await gmail.run(sender.context(TRIGGER), CONFIG)


async def test_the_config_check_wants_an_own_google_account_allowed_to_send(pool, keyring) -> None:
    async with pool.acquire() as conn:
        owner_id, _ = await create_owner(conn, "checker")
        other_id, _ = await create_owner(conn, "other")
    can_send = UUID(await connect_google(pool, keyring, owner_id, unique_email(), "t1", mailbox=False))
    read_only = UUID(
        await connect_google(
            pool,
            keyring,
            owner_id,
            unique_email(),
            "t2",
            scopes=(READ_SCOPE.replace("modify", "readonly"),),
            mailbox=False,
        )
    )
    async with pool.acquire() as conn:
        slack = (await insert_api_key(conn, keyring, owner_id, "slack", "bot", {"bot_token": "xoxb-1"})).id
        await gmail.check_config(conn, owner_id, CONFIG, can_send)
        for credential, problem in [
            (None, "needs a connected Google account"),
            (slack, "Google account of yours"),
            (read_only, "without permission to send"),
        ]:
            with pytest.raises(ActionConfigError, match=problem):
                await gmail.check_config(conn, owner_id, CONFIG, credential)
        with pytest.raises(ActionConfigError, match="of yours"):
            await gmail.check_config(conn, other_id, CONFIG, can_send)
