"""Hostile text reaching notifications: providers' error messages (NUL characters, megabytes)
are stored and notified bounded, and a credential's reason never breaks the mark."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest

from oauth.crypto import Keyring
from schemas.store import credentials as credential_store
from schemas.store import notification_events
from tests.conftest import Owner, Receiver
from tests.gmail_support import connect_google, unique_email
from tests.integration.test_notification_events import notified, subscribe

pytestmark = pytest.mark.integration

HOSTILE = "Gmail answered: \x00" + "\ud800" + "x" * 100_000


async def test_a_watch_error_with_nul_and_megabytes_is_stored_and_notified_bounded(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "gmail.watch_renewed_failed")
    credential = UUID(await connect_google(pool, keyring, owner.id, unique_email("hostile"), "tok-hostile"))
    await pool.execute(
        "UPDATE gmail_mailboxes SET watch_expiration = now() + interval '6 days', watch_renewed_at = now() "
        "WHERE credential_id = $1",
        credential,
    )
    async with pool.acquire() as conn:
        await notification_events.watch_failed(conn, UUID(owner.id), credential, HOSTILE)
    [failed] = await notified(pool, owner, "gmail.watch_renewed_failed")
    assert len(failed["data"]["error"]) == 500 and "\x00" not in failed["data"]["error"]
    stored = await pool.fetchval("SELECT last_error FROM gmail_mailboxes WHERE credential_id = $1", credential)
    assert len(stored) == 500


async def test_a_reason_with_nul_still_marks_and_notifies(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "credential.needs_reconnect")
    credential = UUID(await connect_google(pool, keyring, owner.id, unique_email("nul"), "tok-nul"))
    async with pool.acquire() as conn:
        await credential_store.mark_needs_reconnect(conn, UUID(owner.id), credential, "revoked: bad\x00grant")
    [notice] = await notified(pool, owner, "credential.needs_reconnect")
    assert notice["data"]["reason"] == "revoked" and "\x00" not in notice["data"]["detail"]
