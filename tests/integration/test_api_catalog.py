"""`/api/catalog` and `/api/openapi.json`: public descriptions of what the service offers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Route

from actions.registry import ACTIONS
from ingest.app import ROUTES
from oauth.providers import PROVIDERS
from triggers.registry import TRIGGERS

pytestmark = pytest.mark.integration


async def test_catalog_lists_every_trigger_and_action_with_its_schema(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/catalog")

    assert response.status_code == 200
    catalog = response.json()
    assert {t["type"] for t in catalog["triggers"]} == set(TRIGGERS)
    assert {a["type"] for a in catalog["actions"]} == set(ACTIONS)
    webhook = next(t for t in catalog["triggers"] if t["type"] == "webhook.received")
    assert webhook["description"]
    assert webhook["config_schema"]["required"] == ["endpoint_id"]


async def test_catalog_lists_every_credential_provider_as_declared(http: httpx.AsyncClient) -> None:
    providers = {p["name"]: p for p in (await http.get("/api/catalog")).json()["providers"]}

    assert set(providers) == set(PROVIDERS)
    assert providers["resend"] == {
        "name": "resend",
        "display_name": "Resend",
        "kind": "api_key",
        "description": "Resend API key",
        "secret_shapes": [["api_key"]],
        "rate_per_s": 2.0,
    }
    assert providers["google"]["kind"] == "oauth2"
    assert providers["google"]["secret_shapes"] == []
    assert providers["http"]["rate_per_s"] is None


async def test_openapi_names_every_api_key_provider_and_its_secret_fields(http: httpx.AsyncClient) -> None:
    document = (await http.get("/api/openapi.json")).json()
    operation = document["paths"]["/api/credentials"]["post"]
    secret = document["components"]["schemas"]["CredentialCreate"]["properties"]["secret"]

    for name, provider in PROVIDERS.items():
        if provider.kind == "api_key":
            assert provider.title in operation["summary"]
            assert f"{name}: {' + '.join(provider.secret_fields)}" in secret["description"]


async def test_openapi_document_is_public_and_version_3_1(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/openapi.json")

    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")


async def test_openapi_describes_every_route_and_method(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/api/openapi.json")).json()["paths"]

    for route in ROUTES:
        assert isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}:
            assert method.lower() in paths.get(route.path, {}), f"{method} {route.path} is undocumented"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


async def test_openapi_schemas_are_valid_and_every_reference_resolves(http: httpx.AsyncClient) -> None:
    document = (await http.get("/api/openapi.json")).json()
    schemas = document["components"]["schemas"]

    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    for ref in _refs(document):
        if ref.startswith("#/components/schemas/"):
            assert ref.removeprefix("#/components/schemas/") in schemas, ref
