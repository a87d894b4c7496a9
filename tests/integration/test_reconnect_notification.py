"""credential.needs_reconnect end to end (PostgreSQL, Temporal, dispatcher, worker, ingest): a
grant found dead reaches the owner's subscriber, signed, with a connect link that reconnects the
account once; the link is nowhere but in the body sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from actions.errors import PermanentActionError
from oauth.crypto import Keyring
from oauth.google import google_from_settings
from oauth.vault import Vault
from settings import Settings
from tests.conftest import Owner, Receiver, wait_for
from tests.fake_google import FakeGoogle
from tests.gmail_support import connect_google
from tests.integration.test_connect import consent
from worker.automation.credentials import OwnerCredentials

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("pipeline")]


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as client:
        yield client


async def subscribe(owner: Owner, url: str) -> dict[str, Any]:
    body = {"target_url": url, "event_types": ["credential.needs_reconnect"]}
    response = await owner.client.post("/api/subscriptions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def kill_grant(pool: asyncpg.Pool, keyring: Keyring, settings: Settings, owner: Owner, token: str) -> None:
    """Use a credential whose refresh token Google no longer honours: the vault marks it."""
    credential = UUID(await connect_google(pool, keyring, owner.id, FakeGoogle.email, token))
    await pool.execute("UPDATE credentials SET expires_at = now() WHERE id = $1", credential)
    async with httpx.AsyncClient() as http:
        vault = Vault(pool, keyring, http, google_from_settings(settings.for_google()))
        with pytest.raises(PermanentActionError, match="needs to be reconnected"):
            await OwnerCredentials(vault, UUID(owner.id)).load(str(credential), {"google"})


async def _requests(receiver: Receiver, path: str) -> Any:
    return receiver.to(path)


async def test_a_dead_grant_reaches_the_subscriber_with_a_link_that_reconnects_once(
    owner: Owner,
    other_owner: Owner,
    pool: asyncpg.Pool,
    keyring: Keyring,
    settings: Settings,
    receiver: Receiver,
    browser: httpx.AsyncClient,
    fake_google_server: FakeGoogle,
) -> None:
    hook, elsewhere = f"/reconnect/{uuid4().hex}", f"/reconnect/{uuid4().hex}"
    subscription = await subscribe(owner, receiver.url + hook)
    await subscribe(other_owner, receiver.url + elsewhere)
    token = f"tok-{uuid4().hex}"
    fake_google_server.dead_refresh_tokens.add("refresh-" + token)

    await kill_grant(pool, keyring, settings, owner, token)

    [request] = await wait_for(lambda: _requests(receiver, hook), timeout=30)
    payload = Webhook(subscription["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "credential.needs_reconnect" and payload["data"]["reason"] == "revoked"
    link = payload["data"]["connect_link"]["url"]
    secret = link.rsplit("/", 1)[-1]
    stored = await pool.fetchval(
        "SELECT count(*) FROM executions WHERE owner_id = $1 AND (trigger_data::text LIKE '%' || $2 || '%' "
        "OR coalesce(result::text, '') LIKE '%' || $2 || '%')",
        UUID(owner.id),
        secret,
    )
    assert stored == 0, "the link is in the body sent only"

    fake_google_server.email = "someone-else@example.com"
    elsewhere_account = await consent(browser, link)
    assert elsewhere_account.status_code == 400 and "reconnects boss@example.com" in elsewhere_account.text
    fake_google_server.email = FakeGoogle.email
    done = await consent(browser, link)
    assert done.status_code == 200 and "is connected" in done.text
    credential = payload["data"]["credential"]["id"]
    assert await pool.fetchval("SELECT status FROM credentials WHERE id = $1", UUID(credential)) == "active"
    again = await browser.get(link)
    assert again.status_code == 410 and "already used" in again.text
    assert receiver.to(elsewhere) == [], "another owner's subscription never sees it"
