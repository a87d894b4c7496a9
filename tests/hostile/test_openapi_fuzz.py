"""Schemathesis over `/api/openapi.json` against the real app: the document and the handlers agree.

A short, derandomised run (a few examples per operation): no 5xx, no status code the document
does not list, responses in the documented media type and shape. The ingest, OAuth and probe
routes are left out: they are authenticated by signatures and OIDC, not by the API key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Owner

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 4
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(document: dict[str, Any], base_url: str, key: str, mode: GenerationMode) -> list[str]:
    """Run every /api operation with generated requests; the failures, one line each.

    Valid requests (POSITIVE) must get a documented answer in the documented shape; invalid
    ones (NEGATIVE) a documented status, never a 5xx.
    """
    checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error, status_code_conformance]
    schema = schemathesis.openapi.from_dict(document)
    headers = {"authorization": f"Bearer {key}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if not operation.path.startswith("/api/"):
            continue

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, checks=checks)

        try:
            run()
        except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
            continue
        except Exception as exc:  # one line per failing operation, so one run shows them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
async def test_no_operation_answers_5xx_or_an_undocumented_status(
    http: httpx.AsyncClient, owner: Owner, mode: GenerationMode
) -> None:
    document = (await http.get("/api/openapi.json")).json()

    # The server runs in this event loop; schemathesis calls it synchronously from a thread.
    failures = await asyncio.to_thread(_fuzz, document, str(http.base_url), owner.key, mode)

    assert failures == []


@pytest.mark.parametrize("method", ["TRACE", "PUT", "OPTIONS"])
async def test_an_unsupported_method_answers_405_with_allow(http: httpx.AsyncClient, method: str) -> None:
    response = await http.request(method, "/api/endpoints")

    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_the_405_of_a_path_with_several_routes_lists_all_their_methods(http: httpx.AsyncClient) -> None:
    response = await http.request("TRACE", "/api/workflows/00000000-0000-0000-0000-000000000000")

    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH", "DELETE"}


async def test_a_limit_beyond_the_maximum_is_a_documented_400_naming_the_parameter(
    http: httpx.AsyncClient, owner: Owner
) -> None:
    document = (await http.get("/api/openapi.json")).json()

    response = await owner.client.get("/api/credentials", params={"limit": "201"})

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "limit"
    assert "at most 200" in response.json()["error"]["message"]
    assert "400" in document["paths"]["/api/credentials"]["get"]["responses"]


@pytest.mark.parametrize(
    ("path", "operation"), [("/api/executions/{id}/replay", "post"), ("/api/executions/{id}/cancel", "post")]
)
async def test_conflicts_of_replay_and_cancel_are_documented(
    http: httpx.AsyncClient, path: str, operation: str
) -> None:
    document = (await http.get("/api/openapi.json")).json()

    assert "409" in document["paths"][path][operation]["responses"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "nope"}, "cursor"),
        ({"status": "x"}, "status"),
    ],
)
async def test_a_bad_query_parameter_is_a_400_naming_it(owner: Owner, query: dict[str, str], field: str) -> None:
    response = await owner.client.get("/api/events", params=query)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
