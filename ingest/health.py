"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest.state import app_state
from schemas.store.telemetry import oldest_waiting_age


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to accept events: PostgreSQL answers (Redis is reported, not required for ingest).

    `dispatch` reports a stalled dispatcher (the oldest unresolved event is older than
    `dispatch_stall_after_s`) without failing readiness: ingest still stores events durably,
    and taking the api out of rotation would turn a dispatch stall into lost deliveries.
    """
    state = app_state(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with state.pool.acquire() as conn:
                lag = await oldest_waiting_age(conn)
        checks["postgres"] = "ok"
        # Measured here too, so the gauge keeps growing (and alerts) when no dispatcher runs.
        state.metrics.inbox_lag.set(lag)
        limit = state.settings.dispatch_stall_after_s
        checks["dispatch"] = (
            f"stalled: the oldest unresolved event is {lag:.0f}s old (threshold {limit:g}s)" if lag > limit else "ok"
        )
    except Exception as exc:
        checks["postgres"] = f"unavailable: {type(exc).__name__}"
    try:
        async with asyncio.timeout(2):
            await state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = checks["postgres"] == "ok"
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
