"""Notifications other than execution.*, against the real PostgreSQL: each state change writes
exactly one notification of its type, with schema-valid data, to its owner only, in the same
transaction (rolled back together), throttled where the type says so."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from actions.newsletter import finalise
from oauth.crypto import Keyring
from schemas.notification_types import event_type
from schemas.store import credentials as credential_store
from schemas.store import newsletter as newsletter_store
from schemas.store import notification_events
from schemas.store import trigger_sync as sync_store
from schemas.store.gmail import MailboxRef, record_watch
from tests.conftest import Owner, Receiver
from tests.gmail_support import connect_google, unique_email

pytestmark = pytest.mark.integration


class Rollback(Exception):
    """Raised inside a transaction to undo it."""


async def subscribe(owner: Owner, receiver: Receiver, *event_types: str, **filters: list[str]) -> None:
    body: dict[str, Any] = {"target_url": f"{receiver.url}/events/{uuid4().hex}", "event_types": list(event_types)}
    if filters:
        body["filters"] = filters
    response = await owner.client.post("/api/subscriptions", json=body)
    assert response.status_code == 201, response.text


async def notified(pool: asyncpg.Pool, owner: Owner | str, kind: str) -> list[dict[str, Any]]:
    """The owner's notifications of one type, oldest first, their data checked against its schema."""
    owner_id = UUID(owner.id if isinstance(owner, Owner) else owner)
    rows = await pool.fetch(
        "SELECT data, workflow_id, subject_id FROM notifications WHERE owner_id = $1 AND event_type = $2 "
        "ORDER BY created_at, id",
        owner_id,
        kind,
    )
    validator = Draft202012Validator(dict(event_type(kind).data_schema), format_checker=FormatChecker())
    for row in rows:
        validator.validate(row["data"])
    return [dict(r) for r in rows]


async def workflow_row(pool: asyncpg.Pool, owner: Owner, action_type: str, trigger_type: str = "webhook") -> UUID:
    workflow_id: UUID = await pool.fetchval(
        "INSERT INTO workflows (owner_id, name, trigger_type, trigger_config, routing_key, action_type, "
        "action_config, retry_policy) VALUES ($1, 'news', $2, '{}', $3, $4, '{}', '{}') RETURNING id",
        UUID(owner.id),
        trigger_type,
        uuid4().hex,
        action_type,
    )
    return workflow_id


# --- newsletters -----------------------------------------------------------------------------


async def sending_newsletter(pool: asyncpg.Pool, owner: Owner, recipients: int) -> UUID:
    """A newsletter execution that started sending more than the progress interval ago."""
    workflow_id = await workflow_row(pool, owner, "email.send-newsletter")
    execution_id: UUID = await pool.fetchval(
        "INSERT INTO executions (owner_id, workflow_id, trigger_data, status) VALUES ($1, $2, '{}', 'running') "
        "RETURNING id",
        UUID(owner.id),
        workflow_id,
    )
    listed = [newsletter_store.NewRecipient(i, f"r{i}@example.com", {}) for i in range(recipients)]
    async with pool.acquire() as conn:
        assert await newsletter_store.create(conn, execution_id, {}, None, None, listed, 0) == "running"
        decision, _ = await newsletter_store.claim_batch(conn, execution_id, recipients)
        assert decision == "send"
    await pool.execute(
        "UPDATE newsletters SET started_at = now() - interval '11 seconds' WHERE execution_id = $1", execution_id
    )
    return execution_id


async def record(pool: asyncpg.Pool, execution_id: UUID, index: int, state: str = "sent") -> None:
    async with pool.acquire() as conn:
        await newsletter_store.record(conn, execution_id, index, state, "resend", None, None)


async def test_a_finished_newsletter_notifies_newsletter_completed_once_with_its_counts(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "newsletter.completed")
    execution_id = await sending_newsletter(pool, owner, 3)
    await record(pool, execution_id, 0)
    await record(pool, execution_id, 1)
    await record(pool, execution_id, 2, "failed")
    async with pool.acquire() as conn:
        assert await finalise(conn, execution_id, cancel=False) is not None
        assert await finalise(conn, execution_id, cancel=False) is None  # finished already: nothing more
    [completed] = await notified(pool, owner, "newsletter.completed")
    assert completed["data"]["status"] == "partially_sent"
    assert completed["data"]["newsletter"] == {
        "execution_id": str(execution_id),
        "total": 3,
        "sent": 2,
        "failed": 1,
        "unknown": 0,
        "cancelled": 0,
        "remaining": 0,
    }
    assert completed["subject_id"] == str(execution_id) and completed["workflow_id"] is not None


async def test_newsletter_completed_is_rolled_back_with_the_final_status(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "newsletter.completed")
    execution_id = await sending_newsletter(pool, owner, 1)
    await record(pool, execution_id, 0)
    async with pool.acquire() as conn:
        with pytest.raises(Rollback):
            async with conn.transaction():
                assert await finalise(conn, execution_id, cancel=False) is not None
                raise Rollback
    assert await notified(pool, owner, "newsletter.completed") == []
    assert await pool.fetchval("SELECT status FROM executions WHERE id = $1", execution_id) == "running"


async def test_newsletter_progress_is_sent_at_most_once_per_interval(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "newsletter.progress")
    execution_id = await sending_newsletter(pool, owner, 4)
    await record(pool, execution_id, 0)
    await record(pool, execution_id, 1, "failed")
    [first] = await notified(pool, owner, "newsletter.progress")
    assert first["data"]["newsletter"]["sent"] == 1 and first["data"]["newsletter"]["remaining"] == 3
    await pool.execute(
        "UPDATE newsletters SET progress_notified_at = now() - interval '11 seconds' WHERE execution_id = $1",
        execution_id,
    )
    await record(pool, execution_id, 2)
    progress = await notified(pool, owner, "newsletter.progress")
    assert len(progress) == 2
    assert progress[1]["data"]["newsletter"] | {"execution_id": None} == {
        "execution_id": None,
        "total": 4,
        "sent": 2,
        "failed": 1,
        "unknown": 0,
        "cancelled": 0,
        "remaining": 1,
    }


async def test_no_progress_is_sent_in_a_newsletters_first_interval(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "newsletter.progress")
    execution_id = await sending_newsletter(pool, owner, 2)
    await pool.execute("UPDATE newsletters SET started_at = now() WHERE execution_id = $1", execution_id)
    await record(pool, execution_id, 0)
    assert await notified(pool, owner, "newsletter.progress") == []


async def test_concurrent_recipients_claim_one_progress_slot(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "newsletter.progress")
    execution_id = await sending_newsletter(pool, owner, 8)
    await asyncio.gather(*(record(pool, execution_id, i) for i in range(8)))
    assert len(await notified(pool, owner, "newsletter.progress")) == 1


async def test_another_owners_subscription_never_sees_a_newsletter(
    pool: asyncpg.Pool, owner: Owner, other_owner: Owner, receiver: Receiver
) -> None:
    await subscribe(other_owner, receiver, "newsletter.progress", "newsletter.completed")
    execution_id = await sending_newsletter(pool, owner, 1)
    await record(pool, execution_id, 0)
    async with pool.acquire() as conn:
        await finalise(conn, execution_id, cancel=False)
    for kind in ("newsletter.progress", "newsletter.completed"):
        assert await notified(pool, other_owner, kind) == []
        assert await notified(pool, owner, kind) == []  # not subscribed: nothing written


async def test_a_subscription_filtered_by_workflow_hears_only_of_that_workflows_newsletters(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    wanted = await sending_newsletter(pool, owner, 1)
    other = await sending_newsletter(pool, owner, 1)
    wanted_workflow = await pool.fetchval("SELECT workflow_id FROM executions WHERE id = $1", wanted)
    await subscribe(owner, receiver, "newsletter.completed", workflow_ids=[str(wanted_workflow)])
    for execution_id in (wanted, other):
        await record(pool, execution_id, 0)
        async with pool.acquire() as conn:
            await finalise(conn, execution_id, cancel=False)
    [completed] = await notified(pool, owner, "newsletter.completed")
    assert completed["subject_id"] == str(wanted) and completed["data"]["status"] == "sent"


# --- credentials -----------------------------------------------------------------------------


async def test_needs_reconnect_notifies_once_with_a_fresh_connect_link_for_the_account(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "credential.needs_reconnect")
    email = unique_email("dead")
    credential = UUID(await connect_google(pool, keyring, owner.id, email, "tok-dead"))
    async with pool.acquire() as conn:
        for _ in range(2):  # a second caller finding out changes nothing
            await credential_store.mark_needs_reconnect(conn, UUID(owner.id), credential, "revoked: invalid_grant")
    [notice] = await notified(pool, owner, "credential.needs_reconnect")
    data = notice["data"]
    assert data["reason"] == "revoked" and data["credential"] == {
        "id": str(credential),
        "provider": "google",
        "account": email,
    }
    link = await pool.fetchrow("SELECT * FROM connect_links WHERE id = $1", UUID(data["connect_link"]["id"]))
    assert link["owner_id"] == UUID(owner.id) and link["provider"] == "google" and link["used_at"] is None
    assert link["account_email"] == email, "the link reconnects that account only"
    assert {"openid", "email", "https://www.googleapis.com/auth/gmail.modify"} <= set(link["scopes"])
    assert "url" not in data["connect_link"], "the bearer link is made when sent, never stored"
    assert notice["subject_id"] == str(credential)


async def test_needs_reconnect_is_rolled_back_with_the_mark(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "credential.needs_reconnect")
    credential = UUID(await connect_google(pool, keyring, owner.id, unique_email(), "tok-rollback"))
    async with pool.acquire() as conn:
        with pytest.raises(Rollback):
            async with conn.transaction():
                await credential_store.mark_needs_reconnect(conn, UUID(owner.id), credential, "revoked: gone")
                raise Rollback
    assert await notified(pool, owner, "credential.needs_reconnect") == []
    assert await pool.fetchval("SELECT count(*) FROM connect_links WHERE owner_id = $1", UUID(owner.id)) == 0
    assert await pool.fetchval("SELECT status FROM credentials WHERE id = $1", credential) == "active"


async def test_without_a_subscription_no_connect_link_is_made(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner
) -> None:
    credential = UUID(await connect_google(pool, keyring, owner.id, unique_email(), "tok-unsubscribed"))
    async with pool.acquire() as conn:
        await credential_store.mark_needs_reconnect(conn, UUID(owner.id), credential, "scopes_missing: gmail")
    assert await pool.fetchval("SELECT count(*) FROM connect_links WHERE owner_id = $1", UUID(owner.id)) == 0
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE owner_id = $1", UUID(owner.id)) == 0


async def test_an_api_key_credential_needing_reconnect_is_notified_without_a_link(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "credential.needs_reconnect")
    async with pool.acquire() as conn:
        row = await credential_store.insert_api_key(
            conn, keyring, UUID(owner.id), "resend", "mail", {"api_key": "re_x"}
        )
        await credential_store.mark_needs_reconnect(conn, UUID(owner.id), row.id, "scopes_missing: sending")
    [notice] = await notified(pool, owner, "credential.needs_reconnect")
    assert notice["data"]["reason"] == "scopes_missing" and "connect_link" not in notice["data"]
    assert await pool.fetchval("SELECT count(*) FROM connect_links WHERE owner_id = $1", UUID(owner.id)) == 0


# --- trigger sync ----------------------------------------------------------------------------


async def fail_sync(pool: asyncpg.Pool, workflow_id: UUID, error: str) -> None:
    version = await pool.fetchval("SELECT sync_version FROM workflows WHERE id = $1", workflow_id)
    async with pool.acquire() as conn:
        await sync_store.record_failed(conn, workflow_id, version, error, 1.0)


async def test_a_sync_error_is_notified_once_per_episode_and_again_when_it_changes(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "trigger.sync_failed")
    workflow_id = await workflow_row(pool, owner, "http.request", "schedule.cron")
    for _ in range(3):  # retry passes meeting the same error
        await fail_sync(pool, workflow_id, "Temporal error (UNAVAILABLE): down")
    [first] = await notified(pool, owner, "trigger.sync_failed")
    assert first["data"]["error"] == "Temporal error (UNAVAILABLE): down"
    assert first["data"]["workflow"]["id"] == str(workflow_id) and first["workflow_id"] == workflow_id
    await fail_sync(pool, workflow_id, "invalid cron expression")
    assert [n["data"]["error"] for n in await notified(pool, owner, "trigger.sync_failed")][1:] == [
        "invalid cron expression"
    ]
    version = await pool.fetchval("SELECT sync_version FROM workflows WHERE id = $1", workflow_id)
    async with pool.acquire() as conn:  # synced: the episode ends
        await sync_store.record_synced(conn, workflow_id, version, None, None)
    await fail_sync(pool, workflow_id, "invalid cron expression")
    assert len(await notified(pool, owner, "trigger.sync_failed")) == 3


async def test_a_sync_error_notification_is_rolled_back_with_the_error(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "trigger.sync_failed")
    workflow_id = await workflow_row(pool, owner, "http.request", "schedule.cron")
    async with pool.acquire() as conn:
        with pytest.raises(Rollback):
            async with conn.transaction():
                await sync_store.record_failed(conn, workflow_id, 1, "boom", 1.0)
                raise Rollback
    assert await notified(pool, owner, "trigger.sync_failed") == []
    assert await pool.fetchval("SELECT sync_error FROM workflows WHERE id = $1", workflow_id) is None


# --- Gmail watches ---------------------------------------------------------------------------


async def watched_mailbox(pool: asyncpg.Pool, keyring: Keyring, owner: Owner, days_left: int) -> MailboxRef:
    credential = UUID(await connect_google(pool, keyring, owner.id, unique_email("watch"), "tok-watch"))
    await pool.execute(
        "UPDATE gmail_mailboxes SET watch_expiration = now() + make_interval(days => $2), "
        "watch_renewed_at = now() - interval '1 day' WHERE credential_id = $1",
        credential,
        days_left,
    )
    return MailboxRef(UUID(owner.id), credential)


async def fail_watch(pool: asyncpg.Pool, ref: MailboxRef, message: str = "Gmail answered 503") -> None:
    async with pool.acquire() as conn:
        await notification_events.watch_failed(conn, ref.owner_id, ref.credential_id, message)


async def test_a_failed_renewal_is_notified_once_until_a_watch_succeeds(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "gmail.watch_renewed_failed", "gmail.watch_expiring")
    ref = await watched_mailbox(pool, keyring, owner, days_left=6)
    await fail_watch(pool, ref)
    await fail_watch(pool, ref, "timed out")
    [failed] = await notified(pool, owner, "gmail.watch_renewed_failed")
    assert failed["data"]["error"] == "Gmail answered 503"
    assert failed["data"]["mailbox"]["credential_id"] == str(ref.credential_id)
    assert await notified(pool, owner, "gmail.watch_expiring") == []  # six days left
    assert await pool.fetchval(
        "SELECT last_error FROM gmail_mailboxes WHERE credential_id = $1", ref.credential_id
    ) == ("timed out")
    async with pool.acquire() as conn:
        await record_watch(conn, ref, 1, None, ["INBOX"])
    await fail_watch(pool, ref)
    assert len(await notified(pool, owner, "gmail.watch_renewed_failed")) == 2


async def test_a_watch_near_its_expiry_is_notified_once_per_expiration(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "gmail.watch_expiring")
    ref = await watched_mailbox(pool, keyring, owner, days_left=2)
    await fail_watch(pool, ref)
    await fail_watch(pool, ref)
    [expiring] = await notified(pool, owner, "gmail.watch_expiring")
    assert expiring["data"]["expires_at"] and expiring["data"]["last_error"] == "Gmail answered 503"


async def test_a_watch_that_could_not_be_set_up_is_a_sync_failure_of_each_reading_workflow(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    await subscribe(owner, receiver, "trigger.sync_failed", "gmail.watch_renewed_failed")
    credential = UUID(await connect_google(pool, keyring, owner.id, unique_email("new"), "tok-new"))
    reader = await pool.fetchval(
        "INSERT INTO workflows (owner_id, name, trigger_type, trigger_config, routing_key, action_type, "
        "action_config, retry_policy) VALUES ($1, 'mail', 'gmail.receive-email', $2, $3, 'http.request', '{}', '{}') "
        "RETURNING id",
        UUID(owner.id),
        {"mailbox": str(credential)},
        str(credential),
    )
    await fail_watch(pool, MailboxRef(UUID(owner.id), credential), "Gmail refused the watch: topic not found")
    [failed] = await notified(pool, owner, "trigger.sync_failed")
    assert failed["workflow_id"] == reader and "topic not found" in failed["data"]["error"]
    assert await notified(pool, owner, "gmail.watch_renewed_failed") == []


async def test_a_notification_that_cannot_be_written_never_undoes_the_change_it_reports(
    pool: asyncpg.Pool, owner: Owner, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    await subscribe(owner, receiver, "trigger.sync_failed")
    workflow_id = await workflow_row(pool, owner, "http.request", "schedule.cron")

    async def defect(*args: object) -> int:
        raise RuntimeError("a defect while writing the notification")

    monkeypatch.setattr(notification_events, "emit_many", defect)
    await fail_sync(pool, workflow_id, "boom")
    assert await pool.fetchval("SELECT sync_error FROM workflows WHERE id = $1", workflow_id) == "boom"
    assert await notified(pool, owner, "trigger.sync_failed") == []
