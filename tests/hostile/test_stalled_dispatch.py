"""A stalled dispatcher is visible in /readyz without taking ingest out of rotation."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from telemetry.metrics import Metrics
from tests.conftest import Owner


async def test_readyz_reports_a_stalled_dispatcher_but_stays_ready(
    owner: Owner, http: httpx.AsyncClient, pool: Any
) -> None:
    async with pool.acquire() as conn:
        # An event no dispatcher has resolved for an hour (no dispatcher runs in this module).
        event_id = await conn.fetchval(
            "INSERT INTO events (owner_id, source_type, source_id, dedup_key, body, received_at) "
            "VALUES ($1, 'webhook', 'stalled', $2, '\\x7b7d', now() - interval '1 hour') RETURNING id",
            uuid.UUID(owner.id),
            uuid.uuid4().hex,
        )
    try:
        response = await http.get("/readyz")
        metrics = (await http.get("/metrics")).text
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM events WHERE id = $1", event_id)

    assert response.status_code == 200  # ingest still stores events: routing webhooks away would lose them
    assert response.json()["status"] == "ready"
    assert response.json()["checks"]["dispatch"].startswith("stalled: the oldest unresolved event is 36")
    # The api measures the lag itself, so the stall alert fires even when no dispatcher runs.
    [lag] = [line for line in metrics.splitlines() if line.startswith("hookyard_inbox_lag_seconds ")]
    assert float(lag.split()[1]) >= 3600


async def test_readyz_reports_dispatch_ok_when_nothing_waits_long(http: httpx.AsyncClient, pool: Any) -> None:
    async with pool.acquire() as conn:
        # Rows other modules left waiting would be a real stall; only judge a clean inbox.
        await conn.execute("DELETE FROM events WHERE status = 'received' AND received_at < now() - interval '30 s'")
    response = await http.get("/readyz")
    assert response.json()["checks"]["dispatch"] == "ok"


def test_alert_rules_use_only_series_hookyard_exports() -> None:
    rules_file = Path(__file__).parents[2] / "deploy" / "prometheus" / "hookyard-alerts.yaml"
    rules = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"HookyardDispatchStalled", "HookyardEventsRejected"}
    exported = {s.name for family in Metrics().registry.collect() for s in family.samples}
    for rule in rules:
        assert set(re.findall(r"\bhookyard_[a-z_]+", rule["expr"])) <= exported, rule["alert"]
