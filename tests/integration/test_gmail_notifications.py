"""Gmail watch trouble reaches the owner's subscriber (real stack, stand-in Gmail): a watch
Gmail refuses is a trigger.sync_failed of the workflow reading the mailbox, sent once."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from standardwebhooks import Webhook

from tests.conftest import Receiver, wait_for
from tests.fake_google import FakeGoogle
from tests.integration.test_gmail_grants import Env, account, env, reading

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the stack with stand-in Gmail, shared with the grant tests


async def _requests(receiver: Receiver, path: str) -> Any:
    return receiver.to(path)


async def test_a_refused_watch_reaches_the_subscriber_once_as_trigger_sync_failed(
    env: Env, pool: asyncpg.Pool, fake_google_server: FakeGoogle, receiver: Receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    hook = f"/sync-failed/{uuid4().hex}"
    body = {"target_url": receiver.url + hook, "event_types": ["trigger.sync_failed", "gmail.watch_renewed_failed"]}
    response = await acct.owner.client.post("/api/subscriptions", json=body)
    assert response.status_code == 201, response.text
    acct.box.watch_refused = True
    reader = await reading(acct, receiver, f"/refused-{uuid4().hex}")

    [request] = await wait_for(lambda: _requests(receiver, hook), timeout=30)
    payload = Webhook(response.json()["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "trigger.sync_failed"
    assert payload["data"]["workflow"]["id"] == reader["id"] and "User not authorized" in payload["data"]["error"]
    await asyncio.sleep(2)
    assert len(receiver.to(hook)) == 1
