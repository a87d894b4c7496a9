"""Subscription deliveries without the stack: strict order in a lane, the retry schedule, the
signed request and the event type registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from standardwebhooks import Webhook

from actions.base import ActionContext
from actions.deliver import envelope_body, run
from actions.errors import PermanentActionError, RetryableActionError
from actions.registry import ACTIONS, INTERNAL_ACTIONS, get_action
from ingest.api.catalog import catalog
from schemas.notification_types import EVENT_TYPES, UnknownEventType, event_type
from schemas.store.subscriptions import delivery_retry_policy
from worker.automation.contract import LaneEnqueue, LaneState, LaneWork, Retry
from worker.automation.lane import LaneWorkflow
from worker.automation.retry import next_delay
from worker.dispatch.reconciler import Bounds, stranded_reason

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_dGhpcyBpcyBhIHNlY3JldCB0aGF0IGlzIG9sZA=="
TARGET = "https://receiver.example/hooks"
ENVELOPE = {
    "id": "9b2d6c1e-9a53-4cf4-8d62-5f4bd3d43a10",
    "type": "execution.failed",
    "version": 1,
    "timestamp": "2026-12-04T11:00:00+00:00",
    "data": {"execution": {"id": "x"}, "links": {"execution": "/api/executions/x"}},
}


def _lane() -> LaneWorkflow:
    lane = LaneWorkflow()
    lane._restore(LaneState(lane=0))
    return lane


def _wait_for_retry(lane: LaneWorkflow, execution_id: str) -> None:
    workflow_id = lane._inflight.pop(execution_id)
    queue = lane._queues[workflow_id]
    queue.inflight -= 1
    queue.retries.append(Retry(execution_id, 0.0))


def test_an_ordered_workflow_holds_its_later_executions_while_one_waits_for_a_retry() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("deliveries", ["d0", "d1", "d2"], 1, ordered=True)]))
    assert lane._fill() == ["d0"]
    _wait_for_retry(lane, "d0")
    assert lane._fill() == []  # d1 waits behind d0's retry


def test_an_ordered_workflows_retry_goes_before_the_executions_it_held_back() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("deliveries", ["d0", "d1"], 1, ordered=True)]))
    lane._fill()
    _wait_for_retry(lane, "d0")
    queue = lane._queues["deliveries"]
    queue.retries = []
    lane._add_pending(queue, "d0", first=True)  # what releasing the due retry does
    assert lane._fill() == ["d0"]


def test_an_unordered_workflow_runs_its_next_execution_while_one_waits_for_a_retry() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("plain", ["p0", "p1"], 1)]))
    assert lane._fill() == ["p0"]
    _wait_for_retry(lane, "p0")
    assert lane._fill() == ["p1"]


def test_continue_as_new_keeps_a_queue_ordered() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("deliveries", ["d0", "d1"], 1, ordered=True)]))
    [carried] = lane._snapshot().queues
    assert carried.ordered is True


def test_the_delivery_schedule_waits_5s_5min_30min_2h_5h_then_10h_for_about_three_days() -> None:
    policy = delivery_retry_policy([5, 300, 1800, 7200, 18000, 36000], 3 * 24 * 3600)
    delays = [next_delay(policy, attempt, None) for attempt in range(1, policy["max_attempts"] + 1)]
    assert delays[:7] == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert delays[-1] is None
    assert sum(d for d in delays if d is not None) <= 3 * 24 * 3600


def test_a_retry_after_longer_than_the_schedule_wins() -> None:
    policy = delivery_retry_policy([5], 3600)
    assert next_delay(policy, 1, 120.0) == 120.0


def _ctx(client: httpx.AsyncClient, secrets: str = SECRET, trigger: Any = ENVELOPE) -> ActionContext:
    return ActionContext(
        http=client, execution_id="exec-1", attempt=1, template_context={"trigger": trigger}, signing_secret=secrets
    )


CONFIG = {"subscription_id": "s", "target_url": TARGET, "base_url": "https://hookyard.example"}


@respx.mock
async def test_a_delivery_is_a_standard_webhooks_post_with_the_notification_id_as_webhook_id() -> None:
    route = respx.post(TARGET).mock(return_value=httpx.Response(204))
    async with httpx.AsyncClient() as client:
        await run(_ctx(client), CONFIG)
    request = route.calls.last.request
    payload = Webhook(SECRET).verify(request.content, dict(request.headers))
    assert request.headers["webhook-id"] == ENVELOPE["id"]
    assert payload["data"]["links"]["execution"] == "https://hookyard.example/api/executions/x"


@respx.mock
async def test_during_a_rotation_each_valid_secret_signs() -> None:
    route = respx.post(TARGET).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        await run(_ctx(client, f"{SECRET} {OLD_SECRET}"), CONFIG)
    request = route.calls.last.request
    for secret in (SECRET, OLD_SECRET):
        Webhook(secret).verify(request.content, dict(request.headers))


@respx.mock
async def test_410_gone_fails_the_delivery_for_good_and_marks_it_gone() -> None:
    respx.post(TARGET).mock(return_value=httpx.Response(410))
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError) as failed:
            await run(_ctx(client), CONFIG)
    assert failed.value.result is not None and failed.value.result["gone"] is True


@respx.mock
async def test_a_503_with_retry_after_is_retried_after_it() -> None:
    respx.post(TARGET).mock(return_value=httpx.Response(503, headers={"retry-after": "90"}))
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError) as retried:
            await run(_ctx(client), CONFIG)
    assert retried.value.retry_after_s == 90.0


@respx.mock
async def test_a_huge_answer_is_read_only_as_far_as_its_excerpt() -> None:
    respx.post(TARGET).mock(return_value=httpx.Response(200, content=b"x" * 5_000_000))
    async with httpx.AsyncClient() as client:
        result = await run(_ctx(client), CONFIG)
    assert result["status_code"] == 200 and len(result["response_body"]) == 512


async def test_a_delivery_without_a_notification_fails_without_sending() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError):
            await run(_ctx(client, trigger={"no": "id"}), CONFIG)


def test_absolute_links_are_left_alone() -> None:
    envelope = {**ENVELOPE, "data": {"links": {"connect": "https://elsewhere.example/c/1"}}}
    assert json.loads(envelope_body(envelope, "https://hookyard.example"))["data"]["links"] == {
        "connect": "https://elsewhere.example/c/1"
    }


def test_the_deliver_action_is_internal_not_offered_to_owners() -> None:
    assert "hookyard.deliver" not in ACTIONS and "hookyard.deliver" in INTERNAL_ACTIONS
    assert get_action("hookyard.deliver") is INTERNAL_ACTIONS["hookyard.deliver"]
    assert "hookyard.deliver" not in [a["type"] for a in catalog()["actions"]]


def test_every_event_type_is_in_the_catalog_with_a_version_and_a_schema() -> None:
    listed = {t["type"]: t for t in catalog()["notification_types"]}
    assert set(listed) == set(EVENT_TYPES)
    assert {"execution.succeeded", "execution.failed", "execution.cancelled"} <= set(listed)
    assert all(t["version"] >= 1 and t["data_schema"]["type"] == "object" for t in listed.values())


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(UnknownEventType):
        event_type("execution.exploded")


def _queued_long_ago(held: bool) -> dict[str, Any]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "status": "queued",
        "now": now,
        "signalled_at": now - timedelta(hours=2),
        "next_attempt_at": None,
        "attempt_started_at": None,
        "held": held,
    }


def test_a_delivery_queued_behind_a_retry_is_not_handed_back_while_its_lane_runs() -> None:
    bounds = Bounds(grace=timedelta(seconds=30))
    assert stranded_reason(_queued_long_ago(held=True), True, bounds) is None
    assert stranded_reason(_queued_long_ago(held=False), True, bounds) == "queued_overdue"


def test_a_held_delivery_is_still_handed_back_when_its_lane_is_gone() -> None:
    assert stranded_reason(_queued_long_ago(held=True), False, Bounds(grace=timedelta(seconds=30))) == "workflow_gone"
