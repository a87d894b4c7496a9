"""The actions' shared HTTP client (`actions.egress.guarded_client`): what one owner's target
does cannot reach another owner's requests, and failures surface as httpx's errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actions.egress import LOOPBACK, EgressPolicy, guarded_client
from hookyard import services
from tests.conftest import serve


def _app(seen: list[str | None]) -> Starlette:
    async def set_cookie(request: Request) -> Response:
        response = Response("ok")
        response.set_cookie("session", "owner-a-secret")
        return response

    async def echo(request: Request) -> Response:
        seen.append(request.headers.get("cookie"))
        return Response("ok")

    async def slow(request: Request) -> Response:
        await asyncio.sleep(5)
        return Response("late")

    return Starlette(routes=[Route("/set", set_cookie), Route("/echo", echo), Route("/slow", slow)])


async def test_a_cookie_one_target_sets_is_never_sent_with_a_later_request() -> None:
    seen: list[str | None] = []
    async with serve(_app(seen), services.free_port()) as url, guarded_client(EgressPolicy(LOOPBACK)) as client:
        assert (await client.get(f"{url}/set")).headers["set-cookie"].startswith("session=")
        await client.get(f"{url}/echo")
    assert seen == [None]


async def test_a_target_too_slow_to_answer_raises_httpx_timeout() -> None:
    async with serve(_app([]), services.free_port()) as url, guarded_client(EgressPolicy(LOOPBACK)) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.get(f"{url}/slow", timeout=0.3)


async def test_a_refused_connection_raises_httpx_connect_error() -> None:
    async with guarded_client(EgressPolicy(LOOPBACK)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{services.free_port()}/")
