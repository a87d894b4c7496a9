"""The mailbox workflow on real Temporal: pushes reach it through the inbox and the
dispatcher, it syncs from the fake Gmail server, and user workflows fire once per message,
whatever order or number the pushes come in. The watch follows the workflows reading it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from hookyard import services
from oauth.crypto import Keyring
from schemas import db
from settings import Settings
from tests.conftest import Owner, Receiver, Stack, make_settings, new_owner, serve, wait_for
from tests.fake_gmail import FakeGmail, FakeMailbox
from tests.gmail_support import connect_google, gmail_events, mailbox_row, push_body, unique_email
from worker.gmail.contract import MAILBOX_WORKFLOW, MailboxInput, mailbox_workflow_id

pytestmark = pytest.mark.integration

TOPIC = "projects/hookyard-test/topics/gmail"
PUSH = "/ingest/pubsub/gmail"


@dataclass
class Env:
    settings: Settings
    url: str
    fake: FakeGmail
    temporal: Client


@pytest.fixture(scope="module")
async def env(stack: Stack, keyring: Keyring) -> AsyncIterator[Env]:
    from ingest.app import create_app
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    fake = FakeGmail()
    async with serve(fake.app, services.free_port(), lifespan="off") as gmail_url:  # type: ignore[arg-type]
        fake.url = gmail_url
        settings = make_settings(
            stack,
            gmail_api_base=gmail_url,
            gmail_topic=TOPIC,
            pubsub_verify=False,
            task_queue=f"gmail-{uuid.uuid4().hex[:8]}",
            gmail_sweep_interval_s=3600.0,
            gmail_watch_renew_s=3600.0,
        )
        stop = asyncio.Event()
        dpool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
        async with serve(create_app(settings, keyring), settings.port) as url:
            tasks = [
                asyncio.create_task(Dispatcher(dpool, settings).run(stop)),
                asyncio.create_task(run_worker(settings, keyring, stop)),
            ]
            temporal = await Client.connect(settings.temporal_address)
            yield Env(settings, url, fake, temporal)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await dpool.close()


@dataclass
class Reader:
    owner: Owner
    credential_id: str
    box: FakeMailbox
    workflow: dict[str, Any]
    path: str


async def reading_workflow(
    env: Env, pool: asyncpg.Pool, keyring: Keyring, receiver: Receiver, **trigger: Any
) -> Reader:
    """An owner with a connected mailbox and an active gmail.receive-email workflow posting to the receiver."""
    owner = await new_owner(pool, env.url)
    email, token = unique_email(), f"tok-{uuid.uuid4().hex}"
    box = env.fake.mailbox(email, token)
    credential = await connect_google(pool, keyring, owner.id, email, token, mailbox=False)
    path = f"/gmail/{uuid.uuid4().hex}"
    response = await owner.client.post(
        "/api/workflows",
        json={
            "name": "mail in",
            "trigger": {"type": "gmail.receive-email", "config": {"mailbox": credential, **trigger}},
            "action": {
                "type": "http.request",
                "config": {
                    "url": receiver.url + path,
                    "body": {"subject": "{{ trigger.subject }}", "from": "{{ trigger.from }}"},
                },
            },
        },
    )
    assert response.status_code == 201, response.text
    # Activation watches the mailbox (sync hook -> mailbox workflow -> users.watch).
    await wait_for(lambda: _true(box.watches), timeout=30)
    return Reader(owner, credential, box, response.json(), path)


async def _true(value: object) -> object:
    return value


async def push(env: Env, reader: Reader, history_id: int, message_id: str | None = None) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        response = await http.post(PUSH, json=push_body(reader.box.email, history_id, message_id))
    assert response.status_code == 204, response.text


async def test_a_push_syncs_the_mailbox_and_the_workflow_runs_once_per_message(env, pool, keyring, receiver) -> None:
    reader = await reading_workflow(env, pool, keyring, receiver)
    assert reader.box.watches[0] == {"topicName": TOPIC, "labelIds": ["INBOX"], "labelFilterBehavior": "include"}
    reader.box.deliver(sender="Dana <dana@example.test>", subject="Order 1001")
    await push(env, reader, reader.box.history_id)
    [delivered] = await wait_for(lambda: _true(receiver.to(reader.path)), timeout=30)
    assert orjson.loads(delivered.body) == {"subject": "Order 1001", "from": "Dana <dana@example.test>"}
    await asyncio.sleep(1.0)
    assert len(receiver.to(reader.path)) == 1


async def test_duplicate_and_out_of_order_pushes_sync_nothing_twice(env, pool, keyring, receiver) -> None:
    reader = await reading_workflow(env, pool, keyring, receiver)
    first = reader.box.history_id
    reader.box.deliver(subject="one")
    reader.box.deliver(subject="two")
    newest = reader.box.history_id
    await push(env, reader, newest, "p-2")
    await wait_for(lambda: _count(receiver, reader.path, 2), timeout=30)
    syncs = reader.box.calls.count("GET /history")
    # A redelivery (same Pub/Sub id), a publisher retry (new id, same mailbox id), a late older push.
    await push(env, reader, newest, "p-2")
    await push(env, reader, newest, "p-2-retry")
    await push(env, reader, first + 1, "p-1-late")
    await asyncio.sleep(2.0)
    assert reader.box.calls.count("GET /history") == syncs
    assert len(receiver.to(reader.path)) == 2
    assert [e["subject"] for e in await gmail_events(pool, reader.credential_id)] == ["one", "two"]


async def test_a_workflow_replying_to_its_own_mailbox_does_not_trigger_itself(env, pool, keyring, receiver) -> None:
    reader = await reading_workflow(env, pool, keyring, receiver)
    response = await reader.owner.client.patch(
        f"/api/workflows/{reader.workflow['id']}",
        json={
            "action": {
                "type": "gmail.send-email",
                "credential_id": reader.credential_id,
                "config": {
                    "to": "{{ trigger.account }}",
                    "subject": "Re: {{ trigger.subject }}",
                    "text": "auto-reply",
                    "reply_in_thread": True,
                },
            }
        },
    )
    assert response.status_code == 200, response.text
    reader.box.deliver(subject="ping")
    await push(env, reader, reader.box.history_id)
    await wait_for(lambda: _true(reader.box.sent), timeout=30)
    # Gmail announces the reply too (it landed in the inbox, as mail to oneself does).
    await push(env, reader, reader.box.history_id)
    await asyncio.sleep(2.0)
    assert len(reader.box.sent) == 1
    assert reader.box.sent[0]["In-Reply-To"] is not None
    assert [e["subject"] for e in await gmail_events(pool, reader.credential_id)] == ["ping"]


async def test_the_trigger_filters_decide_which_messages_fire(env, pool, keyring, receiver) -> None:
    reader = await reading_workflow(env, pool, keyring, receiver, subject="invoice", has_attachment=True)
    reader.box.deliver(subject="Invoice March", attachments=[("march.pdf", "application/pdf", 100)])
    reader.box.deliver(subject="Invoice April")  # no attachment
    reader.box.deliver(subject="Lunch?", attachments=[("menu.pdf", "application/pdf", 100)])
    await push(env, reader, reader.box.history_id)
    await wait_for(lambda: _count(receiver, reader.path, 1), timeout=30)
    await asyncio.sleep(1.0)
    assert [orjson.loads(r.body)["subject"] for r in receiver.to(reader.path)] == ["Invoice March"]


async def test_deactivating_the_last_workflow_stops_the_watch_and_the_mailbox_workflow(
    env, pool, keyring, receiver
) -> None:
    reader = await reading_workflow(env, pool, keyring, receiver)
    response = await reader.owner.client.post(f"/api/workflows/{reader.workflow['id']}/deactivate")
    assert response.status_code == 200
    await wait_for(lambda: _true(reader.box.stops), timeout=30)
    # The stop is recorded just after Gmail answers it: wait for the row, do not race it.
    await wait_for(lambda: _stopped(pool, reader.credential_id), timeout=10)
    handle = env.temporal.get_workflow_handle(mailbox_workflow_id(reader.credential_id))

    async def completed() -> bool:
        return (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

    await wait_for(completed, timeout=30)
    # Pushes for a mailbox nobody reads are acknowledged and dropped.
    reader.box.deliver(subject="ignored")
    await push(env, reader, reader.box.history_id)
    await asyncio.sleep(1.0)
    assert receiver.to(reader.path) == []


async def test_the_watch_is_renewed_on_its_timer_and_the_sweep_catches_a_dropped_push(
    env, pool, keyring, receiver
) -> None:
    reader = await reading_workflow(env, pool, keyring, receiver)
    # The same mailbox workflow id, restarted with short timers: renew every 1 s, sweep every 2 s.
    handle = env.temporal.get_workflow_handle(mailbox_workflow_id(reader.credential_id))
    await handle.terminate("restarted with short timers")
    await env.temporal.start_workflow(
        MAILBOX_WORKFLOW,
        MailboxInput(reader.owner.id, reader.credential_id, sweep_interval_s=2.0, watch_renew_s=1.0),
        id=mailbox_workflow_id(reader.credential_id),
        task_queue=env.settings.task_queue,
    )
    before = len(reader.box.watches)
    await wait_for(lambda: _true(len(reader.box.watches) >= before + 3), timeout=30)
    reader.box.deliver(subject="no push for this one")  # Google dropped its notification
    await wait_for(lambda: _count(receiver, reader.path, 1), timeout=30)
    assert (await mailbox_row(pool, reader.credential_id))["watch_renewed_at"] is not None


async def _count(receiver: Receiver, path: str, n: int) -> bool:
    return len(receiver.to(path)) >= n


async def _stopped(pool: asyncpg.Pool, credential_id: str) -> bool:
    return bool((await mailbox_row(pool, credential_id))["status"] == "stopped")
