"""`/api/openapi.json`: the OpenAPI 3.1 document, generated from the operations' declarations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ingest.api.common import json_response
from ingest.api.openapi_schemas import component_schemas
from ingest.api.operations import Operation, Reply, operation, paths


def openapi_document(operations: Iterable[Operation]) -> dict[str, Any]:
    """The whole document for these operations."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookyard",
            "version": "0.1.0",
            "description": "Verified webhooks in, durable automations out.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"apiKey": []}],
        "paths": paths(operations),
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": component_schemas(),
        },
    }


@operation(
    "GET",
    "/api/openapi.json",
    "This document",
    "catalog",
    {200: Reply("OK", {"type": "object"})},
    public=True,
    storage=False,
)
async def get_openapi(request: Request) -> Response:
    """The OpenAPI document; public."""
    # The package lists every operation, this one included, so it is read when first asked for.
    from ingest.api import document

    return json_response(document())
