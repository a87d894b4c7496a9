"""End to end through Google's own Pub/Sub emulator: `hookyard gmail setup` creates the topic
and the push subscription, a published Gmail notification is pushed to the running service,
stored, forwarded to the mailbox workflow, synced from the fake Gmail server, and fires the
owner's workflow exactly once, even though the first push is answered 503 and redelivered.

The emulator sends no OIDC token, so the service runs with verification off here (the OIDC
check itself is covered by test_pubsub_ingest.py).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookyard import services
from hookyard.cli import main
from oauth.crypto import Keyring
from schemas import db
from settings import Settings
from tests.conftest import Receiver, Stack, make_settings, new_owner, serve, wait_for
from tests.fake_gmail import FakeGmail
from tests.gmail_support import connect_google, gmail_events, unique_email

pytestmark = pytest.mark.integration

PROJECT = "hookyard-emulator"
PUSH = "/ingest/pubsub/gmail"
GCLOUD = shutil.which("gcloud")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Google's Pub/Sub emulator on a free port, in its own process group (gcloud spawns Java)."""
    if GCLOUD is None:
        pytest.skip("the Pub/Sub emulator needs the gcloud CLI with its pubsub-emulator component")
    host = f"127.0.0.1:{services.free_port()}"
    data_dir: Path = tmp_path_factory.mktemp("pubsub")
    log = (data_dir / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [
            GCLOUD,
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={host}",
            f"--project={PROJECT}",
            f"--data-dir={data_dir}",
            "--quiet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.skip(f"the Pub/Sub emulator did not start: {(data_dir / 'emulator.log').read_text()[-500:]}")
            try:
                if httpx.get(f"http://{host}/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Pub/Sub emulator did not answer within 90 s")
            time.sleep(0.5)
        yield host
    finally:
        # Stopping gcloud alone leaves the Java server running: stop the whole group.
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


class AnswerLostOnce:
    """Lets the first push reach the service (which stores it) but answers Pub/Sub 503 instead,
    as if the answer were lost: Pub/Sub must redeliver the same message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.deliveries: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PUSH:
            await self.app(scope, receive, send)
            return
        self.deliveries.append(time.strftime("%X"))
        if len(self.deliveries) > 1:
            await self.app(scope, receive, send)
            return

        async def lose_answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "status": 503}
            await send(message)

        await self.app(scope, receive, lose_answer)


@dataclass
class Service:
    settings: Settings
    url: str
    fake: FakeGmail
    front: AnswerLostOnce


@pytest.fixture(scope="module")
async def service(stack: Stack, keyring: Keyring, emulator: str) -> AsyncIterator[Service]:
    from ingest.app import create_app
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    fake = FakeGmail()
    topic = f"gmail-{uuid.uuid4().hex[:8]}"
    async with serve(fake.app, services.free_port(), lifespan="off") as gmail_url:  # type: ignore[arg-type]
        fake.url = gmail_url
        settings = make_settings(
            stack,
            gmail_api_base=gmail_url,
            gmail_topic=f"projects/{PROJECT}/topics/{topic}",
            pubsub_verify=False,
            task_queue=f"gmail-e2e-{uuid.uuid4().hex[:8]}",
        )
        front = AnswerLostOnce(create_app(settings, keyring))
        stop = asyncio.Event()
        dpool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
        async with serve(front, settings.port) as url:
            tasks = [
                asyncio.create_task(Dispatcher(dpool, settings).run(stop)),
                asyncio.create_task(run_worker(settings, keyring, stop)),
            ]
            yield Service(settings, url, fake, front)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await dpool.close()


def publish(emulator: str, topic_path: str, payload: dict[str, Any]) -> str:
    """Publish as Gmail would (base64 JSON data) through the emulator's REST API."""
    data = base64.b64encode(orjson.dumps(payload)).decode()
    response = httpx.post(f"http://{emulator}/v1/{topic_path}:publish", json={"messages": [{"data": data}]})
    response.raise_for_status()
    message_id: str = response.json()["messageIds"][0]
    return message_id


async def test_a_gmail_notification_published_to_pubsub_runs_the_workflow_once(
    service: Service, emulator: str, pool: asyncpg.Pool, keyring: Keyring, receiver: Receiver, monkeypatch, capsys
) -> None:
    topic_path = service.settings.gmail_topic
    _, _, topic = topic_path.rpartition("/")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator)
    args = [
        "gmail",
        "setup",
        "--project",
        PROJECT,
        "--topic",
        topic,
        "--push-endpoint",
        service.url + PUSH,
        "--service-account",
        f"push@{PROJECT}.iam.gserviceaccount.com",
    ]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert f"topic {topic_path}: created" in out
    assert "IAM: skipped, the emulator has no IAM" in out
    assert f"projects/{PROJECT}/subscriptions/{topic}-hookyard-push: created" in out
    # Idempotent: a second run changes nothing and says so.
    assert await asyncio.to_thread(main, args) == 0
    assert "exists" in capsys.readouterr().out

    owner = await new_owner(pool, service.url)
    email, token = unique_email("e2e"), f"tok-{uuid.uuid4().hex}"
    box = service.fake.mailbox(email, token)
    credential = await connect_google(pool, keyring, owner.id, email, token, mailbox=False)
    path = f"/e2e/{uuid.uuid4().hex}"
    created = await owner.client.post(
        "/api/workflows",
        json={
            "name": "mail to webhook",
            "trigger": {"type": "gmail.receive-email", "config": {"mailbox": credential}},
            "action": {
                "type": "http.request",
                "config": {"url": receiver.url + path, "body": {"s": "{{ trigger.subject }}"}},
            },
        },
    )
    assert created.status_code == 201, created.text
    await wait_for(lambda: _value(box.watches), timeout=30)
    assert box.watches[0]["topicName"] == topic_path

    box.deliver(subject="Through Pub/Sub")
    message_id = publish(emulator, topic_path, {"emailAddress": email, "historyId": box.history_id})

    [request] = await wait_for(lambda: _value(receiver.to(path)), timeout=60)
    assert orjson.loads(request.body) == {"s": "Through Pub/Sub"}
    # The first answer was lost, so Pub/Sub pushes the same message again; it changes nothing.
    await wait_for(lambda: _value(len(service.front.deliveries) >= 2), timeout=90)
    await asyncio.sleep(1.5)
    assert len(receiver.to(path)) == 1
    async with pool.acquire() as conn:
        push = await conn.fetchrow(
            "SELECT dedup_key, duplicate_count, status FROM events WHERE source_type = 'gmail.push' AND source_id = $1",
            credential,
        )
    assert (push["dedup_key"], push["duplicate_count"], push["status"]) == (message_id, 1, "dispatched")
    assert [e["subject"] for e in await gmail_events(pool, credential)] == ["Through Pub/Sub"]
    await owner.client.aclose()


async def _value(value: object) -> object:
    return value
