"""Shared builders for the Gmail tests: connected Google accounts and Pub/Sub push bodies."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from oauth.crypto import Keyring
from schemas.store.credentials import upsert_oauth
from schemas.store.gmail import MailboxRef, activate_mailbox

READ_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"


async def connect_google(
    pool: asyncpg.Pool,
    keyring: Keyring,
    owner_id: str | UUID,
    email: str,
    token: str,
    *,
    scopes: tuple[str, ...] = ("openid", "email", READ_SCOPE, SEND_SCOPE),
    mailbox: bool = True,
) -> str:
    """A connected Google account (fresh access token, an hour to live), optionally with its mailbox row."""
    owner = UUID(str(owner_id))
    async with pool.acquire() as conn:
        row, _ = await upsert_oauth(
            conn,
            keyring,
            owner,
            "google",
            email,
            list(scopes),
            {"access_token": token, "refresh_token": "refresh-" + token, "token_type": "Bearer"},
            datetime.now(UTC) + timedelta(hours=1),
        )
        if mailbox:
            assert await activate_mailbox(conn, MailboxRef(owner, row.id))
    return str(row.id)


def push_body(
    email: str,
    history_id: int | str,
    message_id: str | None = None,
    *,
    snake_case: bool = False,
    urlsafe: bool = False,
) -> dict[str, Any]:
    """A wrapped Pub/Sub push carrying a Gmail notification, in either spelling."""
    raw = orjson.dumps({"emailAddress": email, "historyId": str(history_id)})
    data = (base64.urlsafe_b64encode(raw).rstrip(b"=") if urlsafe else base64.b64encode(raw)).decode()
    mid = message_id or str(uuid.uuid4().int)[:16]
    message: dict[str, Any] = {"data": data, "attributes": {}}
    if snake_case:
        message |= {"message_id": mid, "publish_time": "2026-11-23T10:00:00.123Z"}
    else:
        message |= {"messageId": mid, "publishTime": "2026-11-23T10:00:00.123Z"}
    return {"message": message, "subscription": "projects/test/subscriptions/gmail-push"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.test"


async def gmail_events(pool: asyncpg.Pool, credential_id: str) -> list[dict[str, Any]]:
    """The trigger data of the `gmail` events stored for a mailbox, oldest first."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT body FROM events WHERE source_type = 'gmail' AND source_id = $1 ORDER BY seq", credential_id
        )
    return [orjson.loads(r["body"]) for r in rows]


async def mailbox_row(pool: asyncpg.Pool, credential_id: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT * FROM gmail_mailboxes WHERE credential_id = $1", UUID(credential_id)
        )
    return row
