"""`email.send-newsletter` end to end: the real API, dispatcher, worker, Temporal and PostgreSQL;
Resend and Postmark stood in with respx (inside the worker's process, also when it is a
subprocess that gets killed)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import respx

from actions.email import POSTMARK_URL, RESEND_URL
from oauth.crypto import Keyring
from schemas import db
from settings import Settings
from tests.conftest import Owner, wait_for
from tests.factories import create_endpoint
from tests.integration.api_support import create_credential as credential

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NO_RATE_LIMITS = (("resend", 0.0), ("postmark", 0.0))


# --- stand-ins for the providers -------------------------------------------------------------


@dataclass
class Sent:
    to: str
    key: str | None
    body: dict[str, Any]
    at: float  # wall clock


class FakeProvider:
    """Answers Resend and Postmark like they do; 422 for the addresses in `failing`."""

    def __init__(self, failing: set[str] | None = None, delay_s: float = 0.0) -> None:
        self.requests: list[Sent] = []
        self.failing = failing or set()
        self.delay_s = delay_s

    async def resend(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        to = body["to"][0]
        self.requests.append(Sent(to, request.headers.get("idempotency-key"), body, time.time()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if to in self.failing:
            return httpx.Response(422, json={"name": "validation_error", "message": "Invalid `to` field."})
        return httpx.Response(200, json={"id": f"re-{len(self.requests)}"})

    def to(self) -> list[str]:
        return [s.to for s in self.requests]


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()  # hookyard's own API
        mock.post(RESEND_URL).mock(side_effect=fake.resend)
        yield fake


# --- a dispatcher and worker of this test's own ----------------------------------------------


def local_settings(settings: Settings) -> Settings:
    """Its own task queue (nothing else runs its executions) and no provider rate limits."""
    return settings.replace(task_queue=f"newsletter-{uuid.uuid4().hex[:8]}", rate_limits=NO_RATE_LIMITS)


@contextlib.asynccontextmanager
async def running(settings: Settings, keyring: Keyring, *, worker: bool = True) -> AsyncIterator[None]:
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    stop = asyncio.Event()
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    tasks = [asyncio.create_task(Dispatcher(pool, settings).run(stop))]
    if worker:
        tasks.append(asyncio.create_task(run_worker(settings, keyring, stop)))
    try:
        await asyncio.sleep(0.3)
        for task in tasks:
            if task.done():
                task.result()
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()


@pytest.fixture
async def pipeline(settings: Settings, keyring: Keyring) -> AsyncIterator[None]:
    async with running(local_settings(settings), keyring):
        yield


# --- helpers ---------------------------------------------------------------------------------


def readers(n: int) -> list[dict[str, Any]]:
    return [{"email": f"reader{i}@example.test", "name": f"Reader {i}"} for i in range(n)]


async def newsletter_workflow(owner: Owner, **config: Any) -> dict[str, Any]:
    """A newsletter workflow sending through Resend unless `providers` says otherwise."""
    if "providers" not in config:
        resend = await credential(owner, "resend", {"api_key": "re_newsletter_key"})
        config["providers"] = [{"provider": "resend", "credential_id": resend}]
    endpoint = await create_endpoint(owner.client)
    body = {
        "name": "newsletter",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
        "action": {
            "type": "email.send-newsletter",
            "config": {
                "from": "News <news@acme.test>",
                "subject": "News for {{ recipient.name }}",
                "text": "Hello {{ recipient.name }}, this is issue {{ trigger.issue }}.",
                "recipients_path": "subscribers",
                "pause_s": 0,
                **config,
            },
        },
    }
    response = await owner.client.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def run_now(owner: Owner, workflow: dict[str, Any], trigger: dict[str, Any]) -> str:
    # The trigger data exactly as written (these templates read it at the top level).
    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run?shape=raw", json=trigger)
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def execution(owner: Owner, execution_id: str) -> dict[str, Any]:
    response = await owner.client.get(f"/api/executions/{execution_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def finished(owner: Owner, execution_id: str, timeout: float = 60.0) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        found = await execution(owner, execution_id)
        return found if found["status"] not in ("queued", "running") else None

    result: dict[str, Any] = await wait_for(done, timeout=timeout)
    return result


async def recipient_states(pool: asyncpg.Pool, execution_id: str) -> dict[str, str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT address, state FROM newsletter_recipients WHERE execution_id = $1", uuid.UUID(execution_id)
        )
    return {r["address"]: r["state"] for r in rows}


# --- sending ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("pipeline")
async def test_a_thousand_recipients_with_three_percent_refused_end_partially_sent_with_exact_counts(
    owner: Owner, provider: FakeProvider
) -> None:
    subscribers = readers(1000)
    provider.failing = {s["email"] for i, s in enumerate(subscribers) if i % 100 < 3}
    workflow = await newsletter_workflow(owner, batch_size=100, concurrency=20)

    execution_id = await run_now(owner, workflow, {"issue": 42, "subscribers": subscribers})
    done = await finished(owner, execution_id, timeout=120)

    assert done["status"] == "succeeded"
    result = done["result"]
    assert result["status"] == "partially_sent"
    assert (result["total"], result["sent"], result["failed"], result["unknown"]) == (1000, 970, 30, 0)
    assert result["provider_counts"] == {"resend": 970}
    assert result["errors"][0]["email"] == "reader0@example.test"
    assert "resend rejected the e-mail" in result["errors"][0]["error"]
    assert done["progress"]["remaining"] == 0
    assert len(provider.requests) == 1000
    keys = {s.to: s.key for s in provider.requests}
    assert keys["reader7@example.test"] == f"{execution_id}:7:resend"
    assert len(set(keys.values())) == 1000
    seventh = next(s.body for s in provider.requests if s.to == "reader7@example.test")
    assert seventh["subject"] == "News for Reader 7"
    assert seventh["text"] == "Hello Reader 7, this is issue 42."


@pytest.mark.usefixtures("pipeline")
async def test_progress_is_visible_on_the_execution_while_it_sends(owner: Owner, provider: FakeProvider) -> None:
    provider.delay_s = 0.01
    workflow = await newsletter_workflow(owner, batch_size=20, concurrency=5, pause_s=0.2)
    execution_id = await run_now(owner, workflow, {"issue": 1, "subscribers": readers(120)})

    async def mid_send() -> dict[str, Any] | None:
        found = await execution(owner, execution_id)
        progress = found.get("progress") or {}
        return found if progress.get("sent", 0) > 0 and progress.get("remaining", 0) > 0 else None

    snapshot = await wait_for(mid_send, timeout=30, interval=0.05)
    assert snapshot["status"] == "running"
    assert snapshot["result"]["status"] == "sending"
    assert snapshot["temporal"]["workflow_id"] == f"newsletter-{execution_id}"
    progress = snapshot["progress"]
    assert progress["total"] == 120
    assert progress["sent"] + progress["failed"] + progress["remaining"] == 120
    done = await finished(owner, execution_id)
    assert done["result"]["status"] == "sent"
    assert done["progress"]["sent"] == 120


@pytest.mark.usefixtures("pipeline")
async def test_cancel_mid_send_stops_between_batches_and_never_requests_the_rest(
    owner: Owner, provider: FakeProvider, pool: asyncpg.Pool
) -> None:
    provider.delay_s = 0.01
    workflow = await newsletter_workflow(owner, batch_size=25, concurrency=5, pause_s=0.5)
    execution_id = await run_now(owner, workflow, {"issue": 1, "subscribers": readers(500)})

    async def first_batch_sent() -> bool:
        return len(provider.requests) >= 25

    await wait_for(first_batch_sent, timeout=30, interval=0.02)
    response = await owner.client.post(f"/api/executions/{execution_id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["progress"]["cancel_requested_at"] is not None
    done = await finished(owner, execution_id)
    await asyncio.sleep(1.0)  # longer than a pause: a batch started after the cancel would show now

    assert done["status"] == "cancelled"
    result = done["result"]
    assert result["status"] == "cancelled"
    assert result["sent"] + result["cancelled"] == 500
    assert result["cancelled"] >= 400
    assert "cancelled by the owner" in done["error"]
    states = await recipient_states(pool, execution_id)
    requested = provider.to()
    assert len(requested) == result["sent"] == len(set(requested))
    assert {a for a, s in states.items() if s == "sent"} == set(requested)
    assert not {a for a, s in states.items() if s == "cancelled"} & set(requested)
    again = await owner.client.post(f"/api/executions/{execution_id}/cancel")
    assert again.status_code == 409


@pytest.mark.usefixtures("pipeline")
async def test_send_at_delays_the_whole_send_on_a_durable_timer(owner: Owner, provider: FakeProvider) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=2.5)
    workflow = await newsletter_workflow(owner, send_at="{{ trigger.send_at }}")
    execution_id = await run_now(
        owner, workflow, {"issue": 3, "send_at": send_at.isoformat(), "subscribers": readers(20)}
    )

    async def scheduled() -> dict[str, Any] | None:
        found = await execution(owner, execution_id)
        return found if (found["result"] or {}).get("status") == "scheduled" else None

    waiting = await wait_for(scheduled, timeout=20)
    assert waiting["progress"]["remaining"] == 20
    assert provider.requests == []
    done = await finished(owner, execution_id)

    assert done["result"]["status"] == "sent"
    assert len(provider.requests) == 20
    assert min(s.at for s in provider.requests) >= send_at.timestamp() - 0.05


@pytest.mark.usefixtures("pipeline")
async def test_cancel_while_waiting_for_send_at_cancels_at_once_and_sends_nothing(
    owner: Owner, provider: FakeProvider
) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    workflow = await newsletter_workflow(owner, send_at=send_at.isoformat())
    execution_id = await run_now(owner, workflow, {"issue": 4, "subscribers": readers(30)})

    async def scheduled() -> bool:
        return ((await execution(owner, execution_id))["result"] or {}).get("status") == "scheduled"

    await wait_for(scheduled, timeout=20)
    response = await owner.client.post(f"/api/executions/{execution_id}/cancel")

    assert response.status_code == 202
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["result"]["cancelled"] == 30
    assert cancelled["progress"]["remaining"] == 0
    await asyncio.sleep(max(0.0, send_at.timestamp() - time.time()) + 1.5)
    assert provider.requests == []
    assert (await execution(owner, execution_id))["status"] == "cancelled"


@pytest.mark.usefixtures("pipeline")
async def test_repeated_and_unusable_addresses_are_skipped_or_failed_without_stopping_the_rest(
    owner: Owner, provider: FakeProvider
) -> None:
    subscribers: list[Any] = ["ada@example.test", "ADA@example.test", "not-an-address", "a@x.test, b@x.test", 7]
    subscribers.append({"email": "bob@example.test", "name": "Bob"})
    workflow = await newsletter_workflow(owner, subject='Hi {{ recipient.name | default("there") }}', text="News.")
    execution_id = await run_now(owner, workflow, {"issue": 5, "subscribers": subscribers})
    done = await finished(owner, execution_id)

    result = done["result"]
    assert (result["status"], result["total"], result["sent"], result["failed"]) == ("partially_sent", 5, 2, 3)
    assert result["duplicates_skipped"] == 1
    assert sorted(provider.to()) == ["ada@example.test", "bob@example.test"]
    assert {s.body["subject"] for s in provider.requests} == {"Hi there", "Hi Bob"}
    reasons = {e["index"]: e["error"] for e in result["errors"]}
    assert "no @" in reasons[2] and "comma" in reasons[3] and "a number" in reasons[4]


@pytest.mark.usefixtures("pipeline")
async def test_a_recipient_path_missing_from_the_trigger_data_fails_the_execution_clearly(
    owner: Owner, provider: FakeProvider
) -> None:
    workflow = await newsletter_workflow(owner)
    execution_id = await run_now(owner, workflow, {"issue": 6, "readers": []})
    done = await finished(owner, execution_id)

    assert done["status"] == "failed"
    assert "recipients_path" in done["error"] and "subscribers" in done["error"]
    assert done["attempts"] == 1
    assert provider.requests == []


async def test_a_literal_send_at_that_is_not_a_time_is_refused_when_saving(owner: Owner) -> None:
    resend = await credential(owner, "resend", {"api_key": "re_k"})
    endpoint = await create_endpoint(owner.client)
    config = {
        "providers": [{"provider": "resend", "credential_id": resend}],
        "from": "news@acme.test",
        "subject": "s",
        "text": "t",
        "recipients": ["a@example.test"],
        "send_at": "next tuesday",
    }
    body = {
        "name": "n",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
        "action": {"type": "email.send-newsletter", "config": config},
    }
    response = await owner.client.post("/api/workflows", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "action.config.send_at"


# --- the cancel endpoint for any execution ---------------------------------------------------


async def test_cancelling_a_queued_execution_cancels_it_and_a_second_cancel_conflicts(
    owner: Owner, other_owner: Owner
) -> None:
    endpoint = await create_endpoint(owner.client)
    body = {
        "name": "hook",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
        "action": {"type": "http.request", "config": {"url": "https://example.com/hook"}},
    }
    workflow = (await owner.client.post("/api/workflows", json=body)).json()
    execution_id = await run_now(owner, workflow, {})  # no dispatcher runs here: it stays queued

    assert (await other_owner.client.post(f"/api/executions/{execution_id}/cancel")).status_code == 404
    response = await owner.client.post(f"/api/executions/{execution_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"] == "cancelled by the owner"
    again = await owner.client.post(f"/api/executions/{execution_id}/cancel")
    assert again.status_code == 409
    assert "already finished (cancelled)" in again.json()["error"]["message"]
    assert (await owner.client.post(f"/api/executions/{uuid.uuid4()}/cancel")).status_code == 404


# --- a worker killed mid-send ----------------------------------------------------------------


def fake_provider_worker() -> None:
    """A worker subprocess's entry: the real `hookyard worker`, with Resend and Postmark answered
    inside it. Each request is logged (address, idempotency key) before it is answered, as a
    provider that accepted it would; then the answer takes a moment, so a kill lands mid-send."""
    from hookyard.processes import worker
    from settings import load_settings

    log_path = os.environ["FAKE_PROVIDER_LOG"]

    async def answer(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        to = body["to"][0] if "to" in body else body["To"]
        with open(log_path, "a") as log:
            log.write(f"{to}\t{request.headers.get('idempotency-key', '')}\n")
        await asyncio.sleep(0.05)
        if "to" in body:
            return httpx.Response(200, json={"id": "re-1"})
        return httpx.Response(200, json={"MessageID": "pm-1", "ErrorCode": 0})

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(RESEND_URL).mock(side_effect=answer)
        mock.post(POSTMARK_URL).mock(side_effect=answer)
        worker(load_settings())


class WorkerProcess:
    """`fake_provider_worker` in a process of its own, killed like a crashed pod."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        keys = ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in self.settings.master_keys)
        env = {
            **os.environ,
            "DATABASE_URL": self.settings.database_url,
            "REDIS_URL": self.settings.redis_url,
            "TEMPORAL_ADDRESS": self.settings.temporal_address,
            "HOOKYARD_TASK_QUEUE": self.settings.task_queue,
            "HOOKYARD_MASTER_KEYS": keys,
            "HOOKYARD_ACTIVITY_HEARTBEAT_TIMEOUT_S": str(self.settings.activity_heartbeat_timeout_s),
            "HOOKYARD_RATE_LIMITS": "resend=0/s,postmark=0/s",
            "HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S": "1",
            "HOOKYARD_LOG_LEVEL": "WARNING",
            "FAKE_PROVIDER_LOG": str(self.log_path),
        }
        code = "from tests.integration.test_newsletter import fake_provider_worker; fake_provider_worker()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, start_new_session=True)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def requests(self) -> list[tuple[str, str]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [(to, key) for to, _, key in (line.partition("\t") for line in lines)]


@pytest.fixture
async def killable_worker(settings: Settings, keyring: Keyring, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    local = local_settings(settings)
    process = WorkerProcess(local, tmp_path / "provider.log")
    async with running(local, keyring, worker=False):
        process.start()
        try:
            yield process
        finally:
            process.stop()


async def kill_mid_send(process: WorkerProcess, at_least: int) -> None:
    async def sending() -> bool:
        return len(process.requests()) >= at_least

    await wait_for(sending, timeout=60, interval=0.02)
    process.kill()
    process.start()


async def test_worker_killed_mid_send_through_resend_resumes_and_nobody_is_delivered_twice(
    owner: Owner, killable_worker: WorkerProcess, pool: asyncpg.Pool
) -> None:
    workflow = await newsletter_workflow(owner, batch_size=50, concurrency=10)
    execution_id = await run_now(owner, workflow, {"issue": 7, "subscribers": readers(400)})

    await kill_mid_send(killable_worker, at_least=120)
    done = await finished(owner, execution_id, timeout=90)

    assert done["result"]["status"] == "sent"
    assert done["result"]["sent"] == 400
    keys: dict[str, set[str]] = defaultdict(set)
    requests: dict[str, int] = defaultdict(int)
    for to, key in killable_worker.requests():
        keys[to].add(key)
        requests[to] += 1
    assert len(keys) == 400
    # Only requests cut off by the kill were repeated, each with its first key: Resend drops
    # the repeat, so every reader gets one e-mail.
    assert all(len(k) == 1 for k in keys.values())
    assert keys["reader3@example.test"] == {f"{execution_id}:3:resend"}
    assert sum(n - 1 for n in requests.values()) <= 10
    assert set((await recipient_states(pool, execution_id)).values()) == {"sent"}


async def test_worker_killed_mid_send_through_postmark_never_sends_anyone_a_second_request(
    owner: Owner, killable_worker: WorkerProcess, pool: asyncpg.Pool
) -> None:
    postmark = await credential(owner, "postmark", {"server_token": "pm_newsletter_token"})
    workflow = await newsletter_workflow(
        owner, providers=[{"provider": "postmark", "credential_id": postmark}], batch_size=50, concurrency=10
    )
    execution_id = await run_now(owner, workflow, {"issue": 8, "subscribers": readers(400)})

    await kill_mid_send(killable_worker, at_least=120)
    done = await finished(owner, execution_id, timeout=90)

    requested = [to for to, _ in killable_worker.requests()]
    assert len(requested) == len(set(requested))
    states = await recipient_states(pool, execution_id)
    sent = {a for a, s in states.items() if s == "sent"}
    unknown = {a for a, s in states.items() if s == "unknown"}
    assert len(sent) + len(unknown) == 400
    assert unknown, "the kill should have cut off requests in flight"
    assert sent <= set(requested) and set(requested) <= sent | unknown
    result = done["result"]
    assert (result["sent"], result["unknown"], result["failed"]) == (len(sent), len(unknown), 0)
    assert result["status"] == ("sent" if not unknown else "partially_sent")
    for error in result["errors"]:
        assert error["state"] == "unknown"
        assert "not sent again" in error["error"]


# --- one recipient's delivery decisions (the real vault, providers stood in) -----------------


async def owner_credentials(pool: asyncpg.Pool, keyring: Keyring, owner: Owner, http: httpx.AsyncClient) -> Any:
    from oauth.vault import Vault
    from worker.automation.credentials import OwnerCredentials

    return OwnerCredentials(Vault(pool, keyring, http), uuid.UUID(owner.id))


async def test_a_recipient_is_tried_again_while_resend_is_down_always_with_the_same_key(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    from actions import newsletter
    from actions.email import EmailMessage, EmailRoute

    resend = await credential(owner, "resend", {"api_key": "re_retry_key"})
    message = EmailMessage(sender="news@acme.test", to=("ada@example.test",), subject="s", text="t")
    unsafe: list[str] = []

    async def before_unsafe(provider: str) -> None:
        unsafe.append(provider)

    async def no_wait(seconds: float) -> None:
        return None

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.post(RESEND_URL)
        route.side_effect = [httpx.Response(503), httpx.Response(503), httpx.Response(200, json={"id": "re-ok"})]
        async with httpx.AsyncClient() as http:
            outcome = await newsletter.deliver(
                http,
                await owner_credentials(pool, keyring, owner, http),
                [EmailRoute("resend", resend)],
                message,
                idempotency_key="x:4",
                limiter=None,
                timeout_s=5,
                max_attempts=2,
                before_unsafe_request=before_unsafe,
                sleep=no_wait,
            )

    assert outcome == newsletter.RecipientOutcome("sent", "resend", "re-ok")
    assert [c.request.headers["idempotency-key"] for c in route.calls] == ["x:4:resend"] * 3
    assert unsafe == []


async def test_a_postmark_5xx_leaves_the_recipient_unknown_and_it_is_not_tried_again(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    from actions import newsletter
    from actions.email import EmailMessage, EmailRoute

    postmark = await credential(owner, "postmark", {"server_token": "pm_unknown_token"})
    message = EmailMessage(sender="news@acme.test", to=("ada@example.test",), subject="s", text="t")
    unsafe: list[str] = []

    async def before_unsafe(provider: str) -> None:
        unsafe.append(provider)

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.post(POSTMARK_URL).respond(500, json={"ErrorCode": 0, "Message": "oops"})
        async with httpx.AsyncClient() as http:
            outcome = await newsletter.deliver(
                http,
                await owner_credentials(pool, keyring, owner, http),
                [EmailRoute("postmark", postmark)],
                message,
                idempotency_key="x:5",
                limiter=None,
                timeout_s=5,
                max_attempts=3,
                before_unsafe_request=before_unsafe,
            )

    assert outcome.state == "unknown"
    assert outcome.provider == "postmark"
    assert "cannot recognise a repeat" in (outcome.error or "")
    assert route.call_count == 1
    assert unsafe == ["postmark"]
