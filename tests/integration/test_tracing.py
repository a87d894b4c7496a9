"""Tracing, end to end: one trace from the sender's `traceparent` to the action's attempt.

Runs only with the `otel` extra installed; spans are collected in memory, not exported.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from hookyard.services import free_port
from oauth.crypto import Keyring
from schemas import db
from settings import Settings
from telemetry.tracing import setup_tracing
from tests.conftest import Owner, Receiver, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions, signed

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"


@dataclass
class Traced:
    exporter: InMemorySpanExporter
    http: httpx.AsyncClient  # the traced API app


@pytest.fixture(scope="module")
async def traced(settings: Settings, keyring: Keyring) -> AsyncIterator[Traced]:
    """API, dispatcher and worker each tracing as its own service into one in-memory exporter."""
    from ingest.app import create_app
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    exporter = InMemorySpanExporter()
    api, dispatcher, worker = (setup_tracing("", f"hookyard-{p}", exporter) for p in ("api", "dispatcher", "worker"))
    app_settings = settings.replace(port=free_port())
    stop = asyncio.Event()
    dpool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    tasks = [
        asyncio.create_task(Dispatcher(dpool, settings, tracing=dispatcher).run(stop)),
        asyncio.create_task(run_worker(settings, keyring, stop, tracing=worker)),
    ]
    try:
        async with (
            serve(create_app(app_settings, keyring, tracing=api), app_settings.port) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            await asyncio.sleep(0.5)
            for task in tasks:
                if task.done():
                    task.result()
            yield Traced(exporter, http)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dpool.close()
        for tracing in (api, dispatcher, worker):
            tracing.shutdown()


def in_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context and format(s.context.trace_id, "032x") == trace_id]


def named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


async def test_one_trace_runs_from_the_senders_traceparent_to_the_action(
    traced: Traced, owner: Owner, receiver: Receiver
) -> None:
    path = f"/traced/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + path)
    body = b'{"traced": true}'
    headers = {
        **signed(endpoint["scheme"], endpoint["secret"], body),
        "traceparent": f"00-{SENDER_TRACE}-{SENDER_SPAN}-01",
    }
    response = await traced.http.post(f"/hooks/{endpoint['id']}", content=body, headers=headers)
    assert response.status_code == 202
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))

    async def action_span() -> list[ReadableSpan]:
        return [s for s in in_trace(traced.exporter, SENDER_TRACE) if s.name == "hookyard.action"]

    await wait_for(action_span, timeout=10)
    spans = in_trace(traced.exporter, SENDER_TRACE)

    ingest = named(spans, "POST /hooks/{endpoint_id}")
    assert format(ingest.parent.span_id, "016x") == SENDER_SPAN  # type: ignore[union-attr]
    assert ingest.resource.attributes["service.name"] == "hookyard-api"
    assert ingest.attributes is not None and ingest.attributes["http.response.status_code"] == 202

    handover = named(spans, "hookyard.handover")
    assert handover.parent is not None and handover.parent.span_id == ingest.context.span_id  # type: ignore[union-attr]
    assert handover.resource.attributes["service.name"] == "hookyard-dispatcher"

    signal = named(spans, "SignalWithStartWorkflow:hookyard.lane")
    assert signal.parent is not None and signal.parent.span_id == handover.context.span_id  # type: ignore[union-attr]

    [action] = [s for s in spans if s.name == "hookyard.action"]
    assert action.resource.attributes["service.name"] == "hookyard-worker"
    assert action.attributes is not None and action.attributes["hookyard.execution_id"] == execution["id"]
    # A lane's batch mixes events: the attempt continues its own event's trace and links to the
    # batch activity that ran it (in the lane's trace, which another event may have started).
    assert action.parent is not None and action.parent.span_id == ingest.context.span_id  # type: ignore[union-attr]
    linked = {link.context.span_id for link in action.links}

    async def linked_activity() -> list[ReadableSpan]:
        finished = traced.exporter.get_finished_spans()
        return [s for s in finished if s.name.startswith("RunActivity:") and s.context.span_id in linked]

    await wait_for(linked_activity, timeout=10)


async def test_the_ingest_span_context_is_stored_with_the_event(traced: Traced, owner: Owner) -> None:
    endpoint = await create_endpoint(owner.client)
    body = b"{}"
    response = await traced.http.post(
        f"/hooks/{endpoint['id']}", content=body, headers=signed(endpoint["scheme"], endpoint["secret"], body)
    )
    event = (await owner.client.get(f"/api/events/{response.json()['event_id']}")).json()
    traceparent = event["verification"]["traceparent"]
    ingest = [s for s in traced.exporter.get_finished_spans() if s.name == "POST /hooks/{endpoint_id}"][-1]
    assert ingest.context is not None
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert (version, trace_id, span_id) == ("00", f"{ingest.context.trace_id:032x}", f"{ingest.context.span_id:016x}")
    assert ingest.parent is None


async def test_a_refused_delivery_is_traced_with_its_status(traced: Traced) -> None:
    response = await traced.http.post(f"/hooks/{uuid.uuid4()}", content=b"{}")
    assert response.status_code == 404
    span = [s for s in traced.exporter.get_finished_spans() if s.name == "POST /hooks/{endpoint_id}"][-1]
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["error.type"] == "NotFound"
