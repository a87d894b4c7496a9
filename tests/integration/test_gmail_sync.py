"""The mailbox activities against the fake Gmail server and the real database: what a sync
stores, how the cursor moves, and how the watch follows the workflows reading the mailbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from hookyard import services
from oauth.crypto import Keyring
from oauth.vault import Vault
from schemas.store.gmail import MailboxRef, record_watch
from schemas.store.owners import create_owner
from settings import Settings
from tests.conftest import Stack, make_settings, serve
from tests.fake_gmail import FakeGmail, FakeMailbox
from tests.gmail_support import connect_google, gmail_events, mailbox_row, unique_email
from worker.gmail.activities import GmailActivities
from worker.gmail.contract import MailboxJob

pytestmark = pytest.mark.integration

TOPIC = "projects/hookyard-test/topics/gmail"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeGmail]:
    gmail = FakeGmail()
    async with serve(gmail.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        gmail.url = url
        yield gmail


@pytest.fixture(scope="module")
def gmail_settings(stack: Stack, fake: FakeGmail) -> Settings:
    return make_settings(stack, gmail_api_base=fake.url, gmail_topic=TOPIC, gmail_full_sync_max=50)


@pytest.fixture
async def activities(pool: asyncpg.Pool, keyring: Keyring, gmail_settings: Settings) -> AsyncIterator[GmailActivities]:
    async with httpx.AsyncClient() as http:
        yield GmailActivities(pool, http, Vault(pool, keyring, http), gmail_settings)


class Mailbox:
    def __init__(self, owner_id: UUID, credential_id: str, box: FakeMailbox) -> None:
        self.owner_id = owner_id
        self.credential_id = credential_id
        self.box = box
        self.job = MailboxJob(str(owner_id), credential_id)
        self.ref = MailboxRef(owner_id, UUID(credential_id))


async def watched_mailbox(
    pool: asyncpg.Pool, keyring: Keyring, fake: FakeGmail, labels: tuple[str, ...] = ("INBOX",)
) -> Mailbox:
    """A connected account whose watch started now (the cursor is the mailbox's history id)."""
    async with pool.acquire() as conn:
        owner_id, _ = await create_owner(conn, "mail-owner")
    email, token = unique_email(), f"tok-{uuid.uuid4().hex}"
    box = fake.mailbox(email, token)
    credential = await connect_google(pool, keyring, owner_id, email, token)
    mailbox = Mailbox(owner_id, credential, box)
    async with pool.acquire() as conn:
        await record_watch(conn, mailbox.ref, box.history_id, datetime.now(UTC) + timedelta(days=7), labels)
    return mailbox


async def sync(activities: GmailActivities, mailbox: Mailbox):  # type: ignore[no-untyped-def]
    return await ActivityEnvironment().run(activities.sync, mailbox.job)


async def add_workflow(pool: asyncpg.Pool, mailbox: Mailbox, labels: list[str] | None, active: bool = True) -> UUID:
    """A gmail.receive-email workflow row reading the mailbox (as the API would store it)."""
    config: dict[str, object] = {"mailbox": mailbox.credential_id}
    if labels is not None:
        config["label_ids"] = labels
    async with pool.acquire() as conn:
        workflow_id: UUID = await conn.fetchval(
            "INSERT INTO workflows (owner_id, name, trigger_type, trigger_config, routing_key, action_type, "
            "action_config, active, retry_policy) VALUES ($1, 'mail', 'gmail.receive-email', $2, $3, "
            "'http.request', $4, $5, '{}') RETURNING id",
            mailbox.owner_id,
            config,
            mailbox.credential_id,
            {"url": "http://127.0.0.1:9/"},
            active,
        )
    return workflow_id


async def test_a_sync_stores_every_new_message_once_across_history_pages(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    mailbox.box.page_size = 2
    delivered = [mailbox.box.deliver(subject=f"message {n}") for n in range(5)]
    result = await sync(activities, mailbox)
    assert (result.stored, result.cursor) == (5, mailbox.box.history_id)
    assert [e["id"] for e in await gmail_events(pool, mailbox.credential_id)] == delivered
    assert mailbox.box.calls.count("GET /history") == 3
    again = await sync(activities, mailbox)
    assert again.stored == 0
    assert len(await gmail_events(pool, mailbox.credential_id)) == 5


async def test_a_sync_cut_off_mid_way_resumes_without_duplicates(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    mailbox.box.page_size = 2
    for n in range(5):
        mailbox.box.deliver(subject=f"message {n}")
    mailbox.box.failures["/history"] = [0, 503, 503, 503, 503, 503]
    with pytest.raises(ApplicationError) as failed:
        for _ in range(6):  # the activity's own retries, as Temporal would run them
            await sync(activities, mailbox)
    assert failed.value.type == "GmailUnavailable" and not failed.value.non_retryable
    assert len(await gmail_events(pool, mailbox.credential_id)) == 2  # the first page is kept
    mailbox.box.failures.clear()
    await sync(activities, mailbox)
    assert [e["subject"] for e in await gmail_events(pool, mailbox.credential_id)] == [f"message {n}" for n in range(5)]


async def test_an_expired_history_id_falls_back_to_a_full_sync_of_recent_mail(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    first = mailbox.box.deliver(subject="before")
    await sync(activities, mailbox)
    later = [mailbox.box.deliver(subject=f"after {n}") for n in range(3)]
    mailbox.box.expire_history()
    result = await sync(activities, mailbox)
    assert result.full_sync and result.cursor == mailbox.box.history_id
    assert [e["id"] for e in await gmail_events(pool, mailbox.credential_id)] == [first, *later]
    assert (await mailbox_row(pool, mailbox.credential_id))["history_id"] == mailbox.box.history_id
    # The cursor works again afterwards.
    newest = mailbox.box.deliver(subject="next")
    assert (await sync(activities, mailbox)).stored == 1
    assert (await gmail_events(pool, mailbox.credential_id))[-1]["id"] == newest


async def test_only_mail_that_arrived_under_a_watched_label_is_stored(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake, labels=("INBOX", "Label_7"))
    inbox = mailbox.box.deliver(subject="inbox")
    labelled = mailbox.box.deliver(subject="labelled", labels=["Label_7"])
    mailbox.box.deliver(subject="promotion", labels=["CATEGORY_PROMOTIONS"])
    mailbox.box.deliver(subject="draft", labels=["DRAFT"])
    mailbox.box.deliver(subject="spam", labels=["SPAM", "INBOX"])
    await sync(activities, mailbox)
    assert [e["id"] for e in await gmail_events(pool, mailbox.credential_id)] == [inbox, labelled]


async def test_mail_sent_by_hookyard_or_by_the_owner_is_not_taken_for_incoming(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake, labels=("INBOX",))
    mailbox.box.deliver(subject="to myself", labels=["SENT", "INBOX"], headers={"X-Hookyard-Execution": "e1"})
    mailbox.box.deliver(subject="sent by the owner", labels=["SENT"])
    kept = mailbox.box.deliver(subject="a real one")
    await sync(activities, mailbox)
    assert [e["id"] for e in await gmail_events(pool, mailbox.credential_id)] == [kept]


async def test_a_message_deleted_before_it_is_fetched_is_skipped(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    gone = mailbox.box.deliver(subject="gone")
    kept = mailbox.box.deliver(subject="kept")
    mailbox.box.delete(gone)
    await sync(activities, mailbox)
    assert [e["id"] for e in await gmail_events(pool, mailbox.credential_id)] == [kept]


async def test_the_stored_trigger_data_describes_the_message(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    message_id = mailbox.box.deliver(
        sender="Bob <bob@example.test>",
        subject="Invoice 42",
        text="Please find the invoice attached.",
        html="<p>Please find the invoice attached.</p>",
        attachments=[("invoice.pdf", "application/pdf", 12345)],
        headers={"Cc": "carol@example.test"},
    )
    await sync(activities, mailbox)
    [data] = await gmail_events(pool, mailbox.credential_id)
    assert data["id"] == message_id and data["thread_id"] == message_id
    assert data["from"] == "Bob <bob@example.test>"
    assert data["to"] == mailbox.box.email and data["cc"] == "carol@example.test"
    assert data["subject"] == "Invoice 42"
    assert data["text"] == "Please find the invoice attached."
    assert data["html"] == "<p>Please find the invoice attached.</p>"
    assert data["labels"] == ["INBOX", "UNREAD"]
    assert data["attachments"] == [
        {
            "filename": "invoice.pdf",
            "mime_type": "application/pdf",
            "size": 12345,
            "attachment_id": f"att-{message_id}-2",
            "part_id": "2",
        }
    ]
    assert data["message_id"] == f"<{message_id}@mail.example.test>"
    assert data["mailbox"] == mailbox.credential_id and data["account"] == mailbox.box.email


async def test_the_watch_covers_the_labels_of_every_active_workflow(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    await add_workflow(pool, mailbox, None)
    await add_workflow(pool, mailbox, ["Label_1", "INBOX"])
    await add_workflow(pool, mailbox, ["Label_9"], active=False)
    result = await ActivityEnvironment().run(activities.reconcile_watch, mailbox.job)
    assert result.active
    assert mailbox.box.watches[-1] == {
        "topicName": TOPIC,
        "labelIds": ["INBOX", "Label_1"],
        "labelFilterBehavior": "include",
    }
    row = await mailbox_row(pool, mailbox.credential_id)
    assert list(row["label_ids"]) == ["INBOX", "Label_1"] and row["watch_expiration"] > datetime.now(UTC)


async def test_the_watch_stops_when_no_active_workflow_reads_the_mailbox(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    await add_workflow(pool, mailbox, None, active=False)
    result = await ActivityEnvironment().run(activities.reconcile_watch, mailbox.job)
    assert not result.active
    assert mailbox.box.stops == 1
    row = await mailbox_row(pool, mailbox.credential_id)
    assert row["status"] == "stopped" and row["watch_expiration"] is None


async def test_a_credential_that_needs_reconnecting_fails_the_sync_for_good_and_says_why(
    activities, pool, keyring, fake
) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE credentials SET status = 'needs_reconnect' WHERE id = $1", UUID(mailbox.credential_id)
        )
    with pytest.raises(ApplicationError) as failed:
        await sync(activities, mailbox)
    assert failed.value.non_retryable and failed.value.type == "CredentialUnusable"
    assert "reconnect" in (await mailbox_row(pool, mailbox.credential_id))["last_error"]


async def test_gmail_refusing_the_token_is_final_and_recorded(activities, pool, keyring, fake) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    mailbox.box.failures["/history"] = [403]
    with pytest.raises(ApplicationError) as failed:
        await sync(activities, mailbox)
    assert failed.value.non_retryable
    assert "403" in (await mailbox_row(pool, mailbox.credential_id))["last_error"]
    assert mailbox.box.token not in str(failed.value)


async def test_without_a_topic_the_mailbox_is_polled_and_says_so(pool, keyring, fake, gmail_settings) -> None:
    mailbox = await watched_mailbox(pool, keyring, fake)
    await add_workflow(pool, mailbox, ["Label_5"])
    async with httpx.AsyncClient() as http:
        unwatched = GmailActivities(pool, http, Vault(pool, keyring, http), gmail_settings.replace(gmail_topic=""))
        result = await ActivityEnvironment().run(unwatched.reconcile_watch, mailbox.job)
    assert result.active and mailbox.box.watches == []
    row = await mailbox_row(pool, mailbox.credential_id)
    assert list(row["label_ids"]) == ["Label_5"] and row["watch_expiration"] is None
    assert "HOOKYARD_GMAIL_TOPIC is not set" in row["last_error"]
