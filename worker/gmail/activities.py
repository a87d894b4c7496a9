"""The mailbox activities: reconcile the push watch, and sync new messages into the inbox.

Sync reads `users.history` (messageAdded) from the stored cursor, fetches each new message,
and stores one inbox event per message (deduplicated on the Gmail message id) together with
the advanced cursor, in one transaction per history page: a crash or retry re-reads at most
one page, and its messages are stored once. An expired cursor (404) falls back to a bounded
full sync of the newest messages since the last sync, and the cursor restarts from the
mailbox's current history id.

Failures become Temporal errors once, here: the owner must act (credential gone or needs a
reconnect, Gmail refused) -> non-retryable, recorded on the mailbox; Gmail or the token
endpoint unavailable -> retryable, honouring Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import httpx
import orjson
from temporalio import activity
from temporalio.exceptions import ApplicationError

from actions.gmail_client import GmailClient, GmailRefused, GmailUnavailable, HistoryGone, sent_by_hookyard
from oauth.vault import CredentialNotFound, CredentialUnusable, Grant, Loaded, RefreshUnavailable, Vault
from schemas import db
from schemas.sanitize import strip_nul
from schemas.store import gmail as store
from schemas.store import notification_events
from schemas.store.events import NewEvent, insert_events
from schemas.store.gmail import MailboxRef
from settings import Settings
from triggers.gmail import SOURCE_TYPE, message_data
from worker.gmail.contract import (
    DEAD_CREDENTIAL,
    RECONCILE_ACTIVITY,
    SYNC_ACTIVITY,
    MailboxJob,
    SyncResult,
    WatchResult,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Messages fetched at once per mailbox (Gmail allows 15,000 quota units/min per user; a get is 5).
_FETCH_PARALLEL = 8
_SKIPPED_LABELS = frozenset({"DRAFT", "SPAM", "TRASH"})


class GmailActivities:
    """Holds the clients the mailbox activities use; one instance per worker process."""

    def __init__(self, pool: asyncpg.Pool, http: httpx.AsyncClient, vault: Vault, settings: Settings) -> None:
        self._pool = pool
        self._http = http
        self._vault = vault
        self._settings = settings

    @activity.defn(name=RECONCILE_ACTIVITY)
    async def reconcile_watch(self, job: MailboxJob) -> WatchResult:
        """Watch the labels the mailbox's active workflows want, or stop watching if none wants it."""
        ref = _ref(job)
        async with self._pool.acquire() as conn:
            row = await store.get_mailbox(conn, ref)
            labels = await store.wanted_labels(conn, ref)
        if row is None:
            return WatchResult(active=False)  # the credential was deleted, and its mailbox with it
        if labels is None:
            return await self._stop(ref)
        try:
            return await self._watch(ref, labels)
        except ApplicationError as exc:
            await self._record_error(ref, str(exc), exc.type, watching=True)
            raise

    @activity.defn(name=SYNC_ACTIVITY)
    async def sync(self, job: MailboxJob) -> SyncResult:
        """Store every message added since the cursor; returns the new cursor."""
        ref = _ref(job)
        async with self._pool.acquire() as conn:
            row = await store.get_mailbox(conn, ref)
        if row is None or row["status"] != "active":
            return SyncResult(cursor=0, stored=0)
        try:
            client = await self._client(ref)
            if row["history_id"] is None:
                # Never watched (no topic configured yet): new mail counts from now on.
                return await self._start_cursor(client, ref)
            try:
                return await self._incremental(client, ref, row)
            except HistoryGone:
                log.info("mailbox %s: history id %s expired; full sync", ref.credential_id, row["history_id"])
                return await self._full_sync(client, ref, row, self._settings.gmail_full_sync_max)
        except ApplicationError as exc:
            await self._record_error(ref, str(exc), exc.type)
            raise

    # --- watch --------------------------------------------------------------------------

    async def _watch(self, ref: MailboxRef, labels: list[str]) -> WatchResult:
        client = await self._client(ref)
        async with self._pool.acquire() as conn:
            await store.activate_mailbox(conn, ref)
        topic = self._settings.gmail_topic
        if not topic:
            # No push without a topic: the mailbox is read on the sweep timer only.
            history_id = _history_id(await client(lambda c: c.profile()))
            async with self._pool.acquire() as conn:
                await store.record_watch(conn, ref, history_id, None, labels)
            await self._record_error(ref, "HOOKYARD_GMAIL_TOPIC is not set: no push, the mailbox is polled")
            return WatchResult(active=True, history_id=history_id)
        try:
            answer = await client(lambda c: c.watch(topic, labels))
        except ApplicationError as exc:
            if exc.type == "GmailRefused":
                # Shown on the workflow and credential until a watch succeeds; mail still
                # arrives through the sweep meanwhile.
                async with self._pool.acquire() as conn:
                    await store.record_watch_error(conn, ref, f"Gmail refused the watch: {exc}")
            raise
        try:
            history_id = int(answer["historyId"])
            expiration = datetime.fromtimestamp(int(answer["expiration"]) / 1000, UTC)
        except (KeyError, TypeError, ValueError):
            raise ApplicationError(
                "Gmail watch answered without historyId/expiration", type="GmailRefused", non_retryable=True
            ) from None
        async with self._pool.acquire() as conn:
            await store.record_watch(conn, ref, history_id, expiration, labels)
        log.info("mailbox %s watched (labels %s) until %s", ref.credential_id, labels, expiration.isoformat())
        return WatchResult(active=True, history_id=history_id)

    async def _stop(self, ref: MailboxRef) -> WatchResult:
        try:
            client = await self._client(ref)
            await client(lambda c: c.stop())
        except ApplicationError as exc:
            if exc.non_retryable is False:
                raise
            # A dead credential cannot stop its watch; Google ends it within 7 days anyway.
            log.info("mailbox %s: watch not stopped (%s); it lapses by itself", ref.credential_id, exc)
        async with self._pool.acquire() as conn:
            stopped = await store.record_stopped(conn, ref)
        if not stopped:
            # A workflow was activated meanwhile: watch for it instead.
            async with self._pool.acquire() as conn:
                labels = await store.wanted_labels(conn, ref)
            if labels is not None:
                return await self._watch(ref, labels)
        log.info("mailbox %s: no active workflow reads it; watch stopped", ref.credential_id)
        return WatchResult(active=False)

    # --- sync ---------------------------------------------------------------------------

    async def _start_cursor(self, client: GmailCalls, ref: MailboxRef) -> SyncResult:
        profile = await client(lambda c: c.profile())
        history_id = _history_id(profile)
        async with self._pool.acquire() as conn:
            await store.advance_cursor(conn, ref, history_id)
        return SyncResult(cursor=history_id, stored=0)

    async def _incremental(self, client: GmailCalls, ref: MailboxRef, row: asyncpg.Record) -> SyncResult:
        wanted = list(row["label_ids"])
        start: int = row["history_id"]
        # history.list filters by one label only; with several, filter the records here.
        label_id = wanted[0] if len(wanted) == 1 else None
        page_token: str | None = None
        stored = 0
        while True:
            page = await client(
                partial(GmailClient.history, start_history_id=start, label_id=label_id, page_token=page_token)
            )
            added = list(_added(page.get("history"), wanted))
            events = await self._fetch(client, ref, row["email"], added, wanted)
            page_token = page.get("nextPageToken") or None
            # Mid-way, a retry resumes after this page's last record (re-reading it is harmless);
            # at the end, the cursor is the mailbox's history id the last page reported.
            ids = _record_ids(page.get("history"))
            cursor = max([start, *ids]) if page_token else max(start, _history_id(page))
            async with self._pool.acquire() as conn, conn.transaction():
                stored += await _store(conn, events)
                await store.advance_cursor(conn, ref, cursor)
            activity.heartbeat(cursor)
            if not page_token:
                return SyncResult(cursor=cursor, stored=stored)

    async def _full_sync(self, client: GmailCalls, ref: MailboxRef, row: asyncpg.Record, limit: int) -> SyncResult:
        # The new cursor is read first, so mail arriving during the listing is seen by the next sync.
        cursor = _history_id(await client(lambda c: c.profile()))
        wanted = list(row["label_ids"])
        since = row["last_sync_at"] or datetime.now(UTC) - timedelta(days=1)
        query = f"after:{int(since.timestamp()) - 60}"
        ids: dict[str, None] = {}
        for label in wanted:  # messages.list ANDs its labels; the mailbox wants any of them
            found = await client(partial(GmailClient.list_messages, label_ids=[label], query=query, max_results=limit))
            for message_id in found:
                ids.setdefault(message_id)
        newest = list(ids)[:limit]
        events = await self._fetch(client, ref, row["email"], [(m, []) for m in reversed(newest)], wanted)
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await _store(conn, events)
            await store.advance_cursor(conn, ref, cursor, reset=True)
        return SyncResult(cursor=cursor, stored=stored, full_sync=True)

    async def _fetch(
        self,
        client: GmailCalls,
        ref: MailboxRef,
        account: str,
        added: Sequence[tuple[str, list[str]]],
        wanted: Sequence[str],
    ) -> list[NewEvent]:
        limit = asyncio.Semaphore(_FETCH_PARALLEL)

        async def get(message_id: str) -> dict[str, Any] | None:
            async with limit:
                return await client(lambda c: c.message(message_id))

        messages = await asyncio.gather(*(get(message_id) for message_id, _ in added))
        events = []
        for (message_id, labels_at_add), message in zip(added, messages, strict=True):
            if message is None:
                continue  # deleted since
            labels = sorted({*labels_at_add, *(message.get("labelIds") or [])})
            if not _wanted(message, labels, wanted):
                continue
            try:
                # Mail is written by strangers: whatever it holds must not stop the mailbox.
                data = strip_nul(
                    message_data({**message, "labelIds": labels}, mailbox=str(ref.credential_id), account=account)
                )
                body = orjson.dumps(data)
            except Exception as exc:
                log.warning(
                    "mailbox %s: message %s cannot be read (%s); skipped",
                    ref.credential_id,
                    message_id,
                    type(exc).__name__,
                )
                continue
            events.append(
                NewEvent(
                    owner_id=ref.owner_id,
                    source_type=SOURCE_TYPE,
                    source_id=str(ref.credential_id),
                    dedup_key=message_id,
                    headers={},
                    body=body,
                    verification={"verified": True, "source": "gmail-api", "history_id": message.get("historyId")},
                )
            )
        return events

    # --- plumbing -----------------------------------------------------------------------

    async def _client(self, ref: MailboxRef) -> GmailCalls:
        return GmailCalls(self._vault.grant(ref.owner_id, ref.credential_id, {"google"}), self._http, self._settings)

    async def _record_error(
        self, ref: MailboxRef, message: str, kind: str | None = None, *, watching: bool = False
    ) -> None:
        try:
            async with self._pool.acquire() as conn:
                if kind in DEAD_CREDENTIAL:
                    # No sync, watch or push for this mailbox until the account is reconnected.
                    await store.record_credential_dead(conn, ref, message)
                elif watching:
                    # Its owner hears of it once per failure episode (and when the watch nears expiry).
                    await notification_events.watch_failed(conn, ref.owner_id, ref.credential_id, message)
                else:
                    await store.record_error(conn, ref, message)
        except (*db.STORAGE_ERRORS, asyncpg.PostgresError):
            log.warning("mailbox %s: could not record its error", ref.credential_id)


class GmailCalls:
    """One mailbox's Gmail calls, each made under OAuth's 401 rule (`oauth.vault.Grant`), with
    their errors turned into Temporal's retryable or final ones once, here."""

    def __init__(self, grant: Grant, http: httpx.AsyncClient, settings: Settings) -> None:
        self._grant = grant
        self._http = http
        self._base = settings.gmail_api_base

    async def __call__(self, call: Callable[[GmailClient], Awaitable[T]]) -> T:
        """Make one call; a dead grant is a non-retryable `CredentialUnusable`."""

        async def use(loaded: Loaded) -> T:
            token = loaded.secret.get("access_token")
            if not isinstance(token, str) or not token:
                raise ApplicationError(
                    "the Google credential holds no access token", type="CredentialUnusable", non_retryable=True
                )
            return await call(GmailClient(self._http, self._base, token))

        try:
            return await _gmail(self._grant.call(use))
        except CredentialNotFound as exc:
            raise ApplicationError(str(exc), type="CredentialNotFound", non_retryable=True) from None
        except CredentialUnusable as exc:
            raise ApplicationError(str(exc), type="CredentialUnusable", non_retryable=True) from None
        except RefreshUnavailable as exc:
            raise ApplicationError(str(exc), type="RefreshUnavailable") from None


async def _gmail(call: Awaitable[T]) -> T:
    """Await one Gmail call, turning its errors into Temporal's retryable or final ones."""
    try:
        return await call
    except GmailUnavailable as exc:
        delay = timedelta(seconds=exc.retry_after_s) if exc.retry_after_s else None
        raise ApplicationError(str(exc), type="GmailUnavailable", next_retry_delay=delay) from None
    except GmailRefused as exc:
        raise ApplicationError(str(exc), type="GmailRefused", non_retryable=True) from None


async def _store(conn: asyncpg.Connection, events: list[NewEvent]) -> int:
    """Insert the events (a message seen before counts as a duplicate); returns how many were new."""
    if not events:
        return 0
    stored = await insert_events(conn, events)
    return sum(not s.duplicate for s in stored.values())


def _ref(job: MailboxJob) -> MailboxRef:
    return MailboxRef(UUID(job.owner_id), UUID(job.credential_id))


def _history_id(answer: dict[str, Any]) -> int:
    try:
        return int(answer["historyId"])
    except (KeyError, TypeError, ValueError):
        raise ApplicationError("Gmail answered without a historyId", type="GmailRefused", non_retryable=True) from None


def _record_ids(records: object) -> Iterable[int]:
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and str(record.get("id", "")).isdigit():
            yield int(record["id"])


def _added(records: object, wanted: Sequence[str]) -> Iterable[tuple[str, list[str]]]:
    """(message id, labels when added) of messages added with a wanted label, first seen first."""
    seen: set[str] = set()
    for record in records if isinstance(records, list) else []:
        added = record.get("messagesAdded") if isinstance(record, dict) else None
        for item in added if isinstance(added, list) else []:
            message = item.get("message") if isinstance(item, dict) else None
            if not isinstance(message, dict) or not isinstance(message.get("id"), str):
                continue
            labels = [str(label) for label in message.get("labelIds") or []]
            if message["id"] in seen or (labels and not set(labels) & set(wanted)):
                continue
            seen.add(message["id"])
            yield message["id"], labels


def _wanted(message: dict[str, Any], labels: list[str], wanted: Sequence[str]) -> bool:
    """Messages a receive trigger is about: wanted labels, not drafts, not sent by us or by the owner."""
    if not set(labels) & set(wanted) or set(labels) & (_SKIPPED_LABELS - set(wanted)):
        return False
    # Anyone can write the header; only mail this account sent (SENT) is our own.
    if sent_by_hookyard(message) and "SENT" in labels:
        return False
    # Mail the owner sent (SENT without INBOX) did not arrive, unless SENT is what is watched.
    return not ("SENT" in labels and "INBOX" not in labels and "SENT" not in wanted)
