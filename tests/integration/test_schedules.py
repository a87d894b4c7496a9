"""`schedule.cron` end to end: the workflow row drives a real Temporal Schedule, whose ticks run the action.

The first tests drive the sync loop by hand (no dispatcher runs yet in this module); the rest
run the whole pipeline, whose dispatcher process carries the sync loop.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy, ScheduleRange
from temporalio.service import RPCError, RPCStatusCode

from hookyard import services
from schemas.store import trigger_sync as sync_store
from settings import Settings
from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, executions
from tests.integration.api_support import create_workflow_from as create
from triggers.registry import TRIGGERS
from worker.dispatch.trigger_sync import TriggerSyncer, hooked_types
from worker.schedule_cron.activities import TickActivities
from worker.schedule_cron.contract import Tick

pytestmark = pytest.mark.integration

YEARLY = "0 0 1 1 *"  # never fires during a test unless triggered


@pytest.fixture
async def temporal(settings: Settings) -> AsyncIterator[Client]:
    yield await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)


def schedule_body(url: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "every so often",
        "trigger": {"type": "schedule.cron", "config": config or {"cron": YEARLY}},
        "action": {"type": "http.request", "config": {"url": url}},
    }


async def synced(pool: asyncpg.Pool, workflow_id: str) -> None:
    """Wait until the sync loop has converged the workflow's current version."""

    async def done() -> bool:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT synced_version >= sync_version AS done FROM workflows WHERE id = $1", UUID(workflow_id)
            )
        return bool(row["done"])

    await wait_for(done, timeout=30)


async def describe_or_none(temporal: Client, workflow_id: str) -> Any:
    try:
        return await temporal.get_schedule_handle(f"schedule-{workflow_id}").describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return None


# --- the sync loop, driven by hand ------------------------------------------------------------


async def test_the_api_shows_sync_pending_then_error_while_temporal_is_unreachable_then_synced(
    owner: Owner, pool: asyncpg.Pool, settings: Settings, temporal: Client
) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x"))
    assert workflow["trigger_sync"] == {"state": "pending", "error": None}

    unreachable = settings.replace(temporal_address=f"127.0.0.1:{services.free_port()}")
    await TriggerSyncer(pool, unreachable).sync_once()
    shown = (await owner.client.get(f"/api/workflows/{workflow['id']}")).json()
    assert shown["trigger_sync"]["state"] == "error"
    assert "cannot reach Temporal" in shown["trigger_sync"]["error"]

    await asyncio.sleep(1.1)  # the first retry waits a second
    await TriggerSyncer(pool, settings).sync_once()
    shown = (await owner.client.get(f"/api/workflows/{workflow['id']}")).json()
    assert shown["trigger_sync"] == {"state": "synced", "error": None}
    assert await describe_or_none(temporal, workflow["id"]) is not None

    await owner.client.delete(f"/api/workflows/{workflow['id']}")
    await TriggerSyncer(pool, settings).sync_once()
    assert await describe_or_none(temporal, workflow["id"]) is None


async def test_a_leased_workflow_is_not_taken_by_a_second_sync_loop(owner: Owner, pool: asyncpg.Pool) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x"))
    hooked = hooked_types()
    async with pool.acquire() as conn:
        _, first, _ = await sync_store.claim(conn, hooked, 1000, 60)
        _, second, _ = await sync_store.claim(conn, hooked, 1000, 60)
        assert workflow["id"] in {str(r["id"]) for r in first}
        assert workflow["id"] not in {str(r["id"]) for r in second}
        # Give them back, as finished hooks would, so the rest of the suite is not held up.
        leased = [r["id"] for r in first]
        await conn.execute("UPDATE workflows SET sync_lease_until = NULL WHERE id = ANY($1::uuid[])", leased)


async def test_workflows_whose_trigger_keeps_no_outside_state_are_settled_without_a_hook(
    owner: Owner, pool: asyncpg.Pool, settings: Settings
) -> None:
    assert TRIGGERS["webhook.received"].sync is None
    endpoint = await create_endpoint(owner.client)
    body = {
        "name": "plain",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
        "action": {"type": "http.request", "config": {"url": "http://127.0.0.1:9/x"}},
    }
    workflow = await create(owner, body)
    assert workflow["trigger_sync"]["state"] == "pending"
    # Temporal is not even needed for these.
    unreachable = settings.replace(temporal_address=f"127.0.0.1:{services.free_port()}")
    await TriggerSyncer(pool, unreachable).sync_once()
    shown = (await owner.client.get(f"/api/workflows/{workflow['id']}")).json()
    assert shown["trigger_sync"] == {"state": "synced", "error": None}


# --- with the dispatcher (and its sync loop) and the worker running -----------------------


@pytest.mark.usefixtures("pipeline")
async def test_creating_a_schedule_workflow_creates_a_temporal_schedule_matching_its_config(
    owner: Owner, pool: asyncpg.Pool, settings: Settings, temporal: Client
) -> None:
    config = {"cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris", "overlap": "buffer_one", "jitter_s": 30}
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x", **config))
    await synced(pool, workflow["id"])

    described = await describe_or_none(temporal, workflow["id"])
    schedule = described.schedule
    [calendar] = schedule.spec.calendars
    assert list(calendar.hour) == [ScheduleRange(9)]
    assert list(calendar.day_of_week) == [ScheduleRange(1, 5)]
    assert schedule.spec.time_zone_name == "Europe/Paris"
    assert schedule.spec.jitter == timedelta(seconds=30)
    assert schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE
    assert schedule.policy.catchup_window == timedelta(seconds=60)
    assert schedule.state.paused is False
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.id, action.task_queue) == (
        "hookyard.tick",
        f"tick-{workflow['id']}",
        settings.task_queue,
    )
    shown = (await owner.client.get(f"/api/workflows/{workflow['id']}")).json()
    assert shown["trigger_sync"] == {"state": "synced", "error": None}


@pytest.mark.usefixtures("pipeline")
async def test_deactivating_pauses_the_schedule_and_activating_resumes_it(
    owner: Owner, pool: asyncpg.Pool, temporal: Client
) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x"))
    await synced(pool, workflow["id"])

    await owner.client.post(f"/api/workflows/{workflow['id']}/deactivate")
    await synced(pool, workflow["id"])
    assert (await describe_or_none(temporal, workflow["id"])).schedule.state.paused is True

    await owner.client.post(f"/api/workflows/{workflow['id']}/activate")
    await synced(pool, workflow["id"])
    assert (await describe_or_none(temporal, workflow["id"])).schedule.state.paused is False


@pytest.mark.usefixtures("pipeline")
async def test_a_workflow_created_inactive_gets_a_paused_schedule(
    owner: Owner, pool: asyncpg.Pool, temporal: Client
) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x") | {"active": False})
    await synced(pool, workflow["id"])
    assert (await describe_or_none(temporal, workflow["id"])).schedule.state.paused is True


@pytest.mark.usefixtures("pipeline")
async def test_changing_the_trigger_config_updates_the_schedule(
    owner: Owner, pool: asyncpg.Pool, temporal: Client
) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x"))
    await synced(pool, workflow["id"])

    patch = {"trigger": {"type": "schedule.cron", "config": {"interval_s": 3600, "catchup_window_s": 300}}}
    response = await owner.client.patch(f"/api/workflows/{workflow['id']}", json=patch)
    assert response.status_code == 200, response.text
    await synced(pool, workflow["id"])

    schedule = (await describe_or_none(temporal, workflow["id"])).schedule
    assert [i.every for i in schedule.spec.intervals] == [timedelta(hours=1)]
    assert schedule.spec.calendars == []
    assert schedule.policy.catchup_window == timedelta(seconds=300)


@pytest.mark.usefixtures("pipeline")
async def test_deleting_the_workflow_deletes_its_schedule(owner: Owner, pool: asyncpg.Pool, temporal: Client) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x"))
    await synced(pool, workflow["id"])
    assert await describe_or_none(temporal, workflow["id"]) is not None

    assert (await owner.client.delete(f"/api/workflows/{workflow['id']}")).status_code == 204
    await synced(pool, workflow["id"])
    assert await describe_or_none(temporal, workflow["id"]) is None


@pytest.mark.usefixtures("pipeline")
async def test_switching_to_another_trigger_type_removes_the_schedule(
    owner: Owner, pool: asyncpg.Pool, temporal: Client
) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x"))
    await synced(pool, workflow["id"])
    endpoint = await create_endpoint(owner.client)

    patch = {"trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}}}
    assert (await owner.client.patch(f"/api/workflows/{workflow['id']}", json=patch)).status_code == 200
    await synced(pool, workflow["id"])
    assert await describe_or_none(temporal, workflow["id"]) is None


@pytest.mark.usefixtures("pipeline")
async def test_the_temporal_cli_describes_the_schedule(owner: Owner, pool: asyncpg.Pool, settings: Settings) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x", cron="30 6 * * *", timezone="Asia/Tokyo"))
    await synced(pool, workflow["id"])

    argv = [services.bin_path("temporal"), "schedule", "describe", "--schedule-id", f"schedule-{workflow['id']}"]
    argv += ["--address", settings.temporal_address, "--namespace", settings.temporal_namespace, "--output", "json"]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["schedule"]["spec"]["timezoneName"] == "Asia/Tokyo"
    assert described["schedule"]["action"]["startWorkflow"]["workflowType"]["name"] == "hookyard.tick"


async def _events(owner: Owner, workflow_id: str) -> list[dict[str, Any]]:
    response = await owner.client.get("/api/events", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [e for e in response.json()["items"] if e["source_id"] == workflow_id]


@pytest.mark.usefixtures("pipeline")
async def test_a_triggered_tick_runs_the_action_exactly_once_with_the_payload(
    owner: Owner, pool: asyncpg.Pool, temporal: Client, receiver: Receiver
) -> None:
    target = f"/tick/{uuid.uuid4().hex}"
    body = schedule_body(receiver.url + target, cron=YEARLY, payload={"report": "weekly"})
    body["action"]["config"]["body"] = {"report": "{{ trigger.payload.report }}", "at": "{{ trigger.scheduled_at }}"}
    workflow = await create(owner, body)
    await synced(pool, workflow["id"])

    await temporal.get_schedule_handle(f"schedule-{workflow['id']}").trigger()

    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"), timeout=30)
    [event] = await _events(owner, workflow["id"])
    assert event["source_type"] == "schedule"
    assert event["dedup"]["key"].startswith("scheduled:")
    assert execution["event_id"] == event["id"]
    assert execution["trigger_data"]["payload"] == {"report": "weekly"}
    sent = json.loads(receiver.to(target)[0].body)
    assert sent == {"report": "weekly", "at": execution["trigger_data"]["scheduled_at"]}

    # The same firing stored again (a retried activity or tick workflow) is a duplicate.
    scheduled_at = execution["trigger_data"]["scheduled_at"]
    again = Tick(workflow["id"], scheduled_at, execution["trigger_data"]["fired_at"], "tick-retry")
    assert await TickActivities(pool).record_tick(again) is True
    await asyncio.sleep(1.0)
    [event] = await _events(owner, workflow["id"])
    assert event["dedup"]["duplicate_count"] == 1
    assert len(await executions(owner.client, workflow["id"])) == 1
    assert len(receiver.to(target)) == 1


@pytest.mark.usefixtures("pipeline")
async def test_a_one_second_interval_fires_once_per_scheduled_time_until_deactivated(
    owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    target = f"/tick/{uuid.uuid4().hex}"
    workflow = await create(owner, schedule_body(receiver.url + target, interval_s=1))

    await wait_for(lambda: _at_least(owner, workflow["id"], 3), timeout=45)
    await owner.client.post(f"/api/workflows/{workflow['id']}/deactivate")
    await synced(pool, workflow["id"])
    await asyncio.sleep(2.5)  # anything already under way lands

    done = await executions(owner.client, workflow["id"])
    events = await _events(owner, workflow["id"])
    scheduled = [x["trigger_data"]["scheduled_at"] for x in done]
    assert len(set(scheduled)) == len(scheduled)  # one execution per scheduled time
    assert len({e["dedup"]["key"] for e in events}) == len(events)
    fired = len([x for x in done if x["status"] == "succeeded"])
    await asyncio.sleep(2.0)
    assert len([x for x in await executions(owner.client, workflow["id"]) if x["status"] == "succeeded"]) == fired
    assert len(receiver.to(target)) == fired


async def _at_least(owner: Owner, workflow_id: str, count: int) -> bool:
    return len(await executions(owner.client, workflow_id, "succeeded")) >= count


@pytest.mark.usefixtures("pipeline")
async def test_a_tick_for_a_deactivated_workflow_stores_nothing(owner: Owner, pool: asyncpg.Pool) -> None:
    workflow = await create(owner, schedule_body("http://127.0.0.1:9/x") | {"active": False})
    tick = Tick(workflow["id"], "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "tick-late")
    assert await TickActivities(pool).record_tick(tick) is False
    assert await _events(owner, workflow["id"]) == []
