"""Metrics, end to end: what the API's `/metrics` and the worker's listener show after real deliveries.

One `Metrics` is shared by the API, dispatcher and worker run here, so the API's `/metrics`
shows every series; in production each process serves its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from hookyard.services import free_port
from oauth.crypto import Keyring
from schemas import db
from schemas.store import telemetry
from schemas.store.events import NewEvent, insert_events
from settings import Settings
from telemetry.metrics import Metrics, serve_metrics, temporal_runtime
from tests.conftest import Owner, Receiver, Stack, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send, signed


@dataclass
class Observed:
    metrics: Metrics
    http: httpx.AsyncClient  # the metered API app
    settings: Settings


@pytest.fixture(scope="module")
async def observed(settings: Settings, keyring: Keyring) -> AsyncIterator[Observed]:
    """API, dispatcher and worker recording into one registry, against the session stack."""
    from ingest.app import create_app
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    metrics = Metrics()
    app_settings = settings.replace(port=free_port())
    stop = asyncio.Event()
    dpool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    tasks = [
        asyncio.create_task(Dispatcher(dpool, settings, metrics=metrics).run(stop)),
        asyncio.create_task(run_worker(settings, keyring, stop, metrics)),
    ]
    try:
        async with (
            serve(create_app(app_settings, keyring, metrics), app_settings.port) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            await asyncio.sleep(0.5)
            for task in tasks:
                if task.done():
                    task.result()
            yield Observed(metrics, http, settings)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dpool.close()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def target() -> str:
    return f"/metered/{uuid.uuid4().hex}"


async def test_accepted_delivery_is_counted_and_its_latency_observed(observed: Observed, owner: Owner) -> None:
    endpoint = await create_endpoint(owner.client)
    before = await scrape(observed.http)
    response = await send(observed.http, endpoint, b'{"n": 1}')
    assert response.status_code == 202
    after = await scrape(observed.http)
    accepted = ("hookyard_events_received_total", {"source": "webhook", "outcome": "accepted"})
    assert value(after, accepted[0], **accepted[1]) == value(before, accepted[0], **accepted[1]) + 1
    count = "hookyard_ingest_duration_seconds_count"
    assert value(after, count, source="webhook") == value(before, count, source="webhook") + 1
    assert value(after, "hookyard_ingest_duration_seconds_sum", source="webhook") > 0
    assert value(after, "hookyard_ingest_duration_seconds_bucket", source="webhook", le="+Inf") >= 1


async def test_duplicate_delivery_is_counted_as_duplicate(observed: Observed, owner: Owner) -> None:
    endpoint = await create_endpoint(owner.client)
    msg_id = f"msg-{uuid.uuid4().hex}"
    await send(observed.http, endpoint, b"{}", msg_id=msg_id)
    before = await scrape(observed.http)
    assert (await send(observed.http, endpoint, b"{}", msg_id=msg_id)).status_code == 200
    after = await scrape(observed.http)
    name, labels = "hookyard_events_received_total", {"source": "webhook", "outcome": "duplicate"}
    assert value(after, name, **labels) == value(before, name, **labels) + 1


async def test_bad_signature_counts_a_rejection_and_a_verification_failure_by_reason(
    observed: Observed, owner: Owner
) -> None:
    endpoint = await create_endpoint(owner.client)
    headers = signed(endpoint["scheme"], endpoint["secret"], b'{"n": 1}')
    before = await scrape(observed.http)
    response = await observed.http.post(f"/hooks/{endpoint['id']}", content=b'{"n": 2}', headers=headers)
    assert response.status_code == 401
    after = await scrape(observed.http)
    rejected = {"source": "webhook", "outcome": "rejected"}
    failed = {"source": "webhook", "reason": "bad_signature"}
    assert (
        value(after, "hookyard_events_received_total", **rejected)
        == value(before, "hookyard_events_received_total", **rejected) + 1
    )
    assert (
        value(after, "hookyard_verification_failures_total", **failed)
        == value(before, "hookyard_verification_failures_total", **failed) + 1
    )


async def test_unknown_endpoint_is_rejected_without_a_verification_failure(observed: Observed) -> None:
    before = await scrape(observed.http)
    response = await observed.http.post(f"/hooks/{uuid.uuid4()}", content=b"{}")
    assert response.status_code == 404
    after = await scrape(observed.http)
    rejected = {"source": "webhook", "outcome": "rejected"}
    assert (
        value(after, "hookyard_events_received_total", **rejected)
        == value(before, "hookyard_events_received_total", **rejected) + 1
    )
    failures = "hookyard_verification_failures_total"
    assert sum(v for (n, _), v in after.items() if n == failures) == sum(
        v for (n, _), v in before.items() if n == failures
    )


async def test_successful_and_failed_executions_are_counted_by_action_with_their_latency(
    observed: Observed, owner: Owner, receiver: Receiver
) -> None:
    ok, refused = target(), target()
    receiver.script(refused, 400)
    endpoint = await create_endpoint(owner.client)
    good = await create_workflow(owner.client, endpoint["id"], receiver.url + ok)
    bad = await create_workflow(owner.client, endpoint["id"], receiver.url + refused)
    before = await scrape(observed.http)
    await send(observed.http, endpoint, b'{"order": 1}')
    await wait_for(lambda: executions(owner.client, good["id"], "succeeded"))
    await wait_for(lambda: executions(owner.client, bad["id"], "failed"))

    def grown(name: str, **labels: str) -> object:
        async def check() -> bool:
            return value(await scrape(observed.http), name, **labels) > value(before, name, **labels)

        return check

    action = {"action": "http.request"}
    await wait_for(grown("hookyard_executions_finished_total", status="succeeded", **action), timeout=5)
    await wait_for(grown("hookyard_executions_finished_total", status="failed", **action), timeout=5)
    after = await scrape(observed.http)
    assert (
        value(after, "hookyard_action_duration_seconds_count", **action)
        >= value(before, "hookyard_action_duration_seconds_count", **action) + 2
    )
    assert value(after, "hookyard_action_duration_seconds_sum", **action) > value(
        before, "hookyard_action_duration_seconds_sum", **action
    )
    assert value(after, "hookyard_dispatched_events_total", status="dispatched") > value(
        before, "hookyard_dispatched_events_total", status="dispatched"
    )
    assert value(after, "hookyard_handover_executions_total") >= value(before, "hookyard_handover_executions_total") + 2


async def test_metrics_page_lists_every_hookyard_series(observed: Observed) -> None:
    response = await observed.http.get("/metrics")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "hookyard_events_received",
        "hookyard_verification_failures",
        "hookyard_ingest_duration_seconds",
        "hookyard_inbox_backlog",
        "hookyard_inbox_lag_seconds",
        "hookyard_dispatched_events",
        "hookyard_handover_executions",
        "hookyard_handover_failures",
        "hookyard_executions_finished",
        "hookyard_action_retries",
        "hookyard_action_duration_seconds",
        "hookyard_provider_failovers",
        "hookyard_credential_refresh_failures",
    } <= names


async def test_metrics_page_speaks_openmetrics_when_asked(observed: Observed) -> None:
    response = await observed.http.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_inbox_depth_counts_waiting_events_and_the_age_of_the_oldest(pool: asyncpg.Pool, owner: Owner) -> None:
    async with pool.acquire() as conn:
        # Never committed, so no dispatcher can claim it.
        transaction = conn.transaction()
        await transaction.start()
        try:
            event = NewEvent(uuid.UUID(owner.id), "webhook", str(uuid.uuid4()), "k", {}, b"{}")
            await insert_events(conn, [event])
            await conn.execute(
                "UPDATE events SET received_at = now() - interval '1 hour' WHERE owner_id = $1", uuid.UUID(owner.id)
            )
            backlog, lag = await telemetry.inbox_depth(conn)
        finally:
            await transaction.rollback()
    assert backlog >= 1
    assert lag >= 3600


async def test_dispatcher_refreshes_the_inbox_gauges(observed: Observed, pool: asyncpg.Pool) -> None:
    from worker.dispatch.dispatcher import Dispatcher

    metrics = Metrics()
    metrics.set_inbox(-1, -1)
    stop = asyncio.Event()
    task = asyncio.create_task(Dispatcher(pool, observed.settings, metrics=metrics).run(stop))
    try:
        await wait_for(lambda: _gauge_set(metrics), timeout=5)
    finally:
        stop.set()
        await task


async def _gauge_set(metrics: Metrics) -> bool:
    backlog = metrics.registry.get_sample_value("hookyard_inbox_backlog")
    lag = metrics.registry.get_sample_value("hookyard_inbox_lag_seconds")
    return backlog is not None and backlog >= 0 and lag is not None and lag >= 0


async def test_worker_listener_serves_its_registry(observed: Observed) -> None:
    port = free_port()
    stop = serve_metrics(observed.metrics, "127.0.0.1", port)
    assert stop is not None
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop()
    assert "hookyard_action_duration_seconds_bucket" in response.text


async def test_temporal_sdk_metrics_are_served_on_their_own_port(stack: Stack) -> None:
    port = free_port()
    runtime = temporal_runtime("127.0.0.1", port)
    assert runtime is not None
    await Client.connect(stack.temporal_address, runtime=runtime)

    async def temporal_series() -> bool:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        return "temporal_request" in text

    await wait_for(temporal_series, timeout=10)


def test_temporal_metrics_port_zero_means_off() -> None:
    assert temporal_runtime("127.0.0.1", 0) is None
