"""Operation declarations: the router, the query checks and the document come from one place."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest.api.operations import ID, PAGING, Body, Param, Reply, declared_query, operation, routes
from ingest.errors import EXCEPTION_HANDLERS


@operation("GET", "/things", "List things", "things", {200: Reply("OK", {"type": "object"})}, params=PAGING)
async def list_things(request: Request) -> Response:
    return JSONResponse({"query": declared_query(request)})


@operation(
    "POST", "/things", "Make a thing", "things", {201: Reply("Created.")}, body=Body({"type": "object"}), public=True
)
async def make_thing(request: Request) -> Response:
    return Response(status_code=201)


@operation("DELETE", "/things/{id}", "Drop a thing", "things", {204: Reply("Deleted.")}, params=[ID], storage=False)
async def drop_thing(request: Request) -> Response:
    return Response(status_code=204)


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=routes([list_things, make_thing, drop_thing]), exception_handlers=EXCEPTION_HANDLERS)
    async with _client(app) as c:
        yield c


def test_errors_implied_by_the_shape_are_documented() -> None:
    assert set(list_things.document()["responses"]) == {"200", "400", "401", "503"}
    assert set(make_thing.document()["responses"]) == {"201", "400", "408", "413", "422", "503"}
    assert set(drop_thing.document()["responses"]) == {"204", "401", "404"}


def test_a_public_operation_needs_no_security() -> None:
    assert make_thing.document()["security"] == []
    assert "security" not in list_things.document()


async def test_query_values_reach_the_handler_converted_and_parsed(client: httpx.AsyncClient) -> None:
    response = await client.get("/things", params={"limit": "7"})

    assert response.json() == {"query": {"limit": 7}}


@pytest.mark.parametrize(
    ("value", "message"),
    [("201", "limit must be at most 200"), ("0", "limit must be at least 1"), ("x", "limit must be an integer")],
)
async def test_a_query_value_outside_its_schema_is_400_naming_it(
    client: httpx.AsyncClient, value: str, message: str
) -> None:
    response = await client.get("/things", params={"limit": value})

    assert response.status_code == 400
    assert response.json()["error"] == {"code": "bad_request", "message": message, "field": "limit"}


async def test_a_value_the_parser_refuses_is_400_with_its_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/things", params={"cursor": "not-a-cursor"})

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"
    assert "next_cursor" in response.json()["error"]["message"]


async def test_a_method_no_operation_declares_is_405_listing_the_path_s_methods(client: httpx.AsyncClient) -> None:
    response = await client.request("TRACE", "/things")

    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


def test_an_operation_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="GET /things is declared twice"):
        routes([list_things, list_things])


async def test_a_status_the_declaration_omits_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    @operation("GET", "/odd", "Odd", "things", {200: Reply("OK")}, public=True, storage=False)
    async def odd(request: Request) -> Response:
        return Response(status_code=418)

    app = Starlette(routes=routes([odd]), exception_handlers=EXCEPTION_HANDLERS)
    async with _client(app) as odd_client:
        await odd_client.get("/odd")

    assert "GET /odd answered 418, which its declaration does not list" in caplog.text


def test_path_parameters_are_required_and_query_parameters_optional() -> None:
    assert Param("id", {"type": "string"}, where="path").document()["required"] is True
    assert PAGING[0].document()["required"] is False


def test_every_declared_operation_has_a_unique_id_and_declares_its_path_parameters() -> None:
    from ingest import api

    declared = api.operations()
    ids = [op.document()["operationId"] for op in declared]

    assert len(ids) == len(set(ids))
    for op in declared:
        in_path = {part[1:-1] for part in op.path.split("/") if part.startswith("{")}
        assert in_path == {p.name for p in op.params if p.where == "path"}, op.path
