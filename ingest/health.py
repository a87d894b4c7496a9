"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest.state import app_state


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to accept events: PostgreSQL answers (Redis is reported, not required for ingest)."""
    state = app_state(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with state.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        checks["postgres"] = "ok"
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
