"""The store's NotFound is answered once, by ingest, as the API's 404."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.errors import EXCEPTION_HANDLERS
from schemas.errors import NotFound


async def _missing(request: Request) -> Response:
    raise NotFound("endpoint")


async def test_a_missing_row_is_a_404_naming_what_is_missing() -> None:
    app = Starlette(routes=[Route("/thing", _missing)], exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/thing")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "no such endpoint"}}
