"""The owners' JSON API, and the list of every operation the HTTP app serves."""

from __future__ import annotations

from functools import cache
from typing import Any

from starlette.routing import Route

from ingest.api import (
    catalog,
    credentials,
    endpoints,
    events,
    executions,
    keys,
    openapi,
    runs,
    service,
    subscriptions,
    workflows,
)
from ingest.api.operations import Operation, routes


def operations() -> list[Operation]:
    """Every declared operation, in the order the document lists them."""
    return [
        *service.ingest_operations(),
        *service.oauth_operations(),
        *service.health_operations(),
        catalog.get_catalog,
        openapi.get_openapi,
        endpoints.list_endpoints,
        endpoints.create_endpoint,
        endpoints.get_endpoint,
        endpoints.delete_endpoint,
        endpoints.rotate_secret,
        credentials.list_credentials,
        credentials.create_credential,
        credentials.get_credential,
        credentials.delete_credential,
        credentials.create_connect_link,
        keys.list_keys,
        keys.create_key,
        keys.revoke_key,
        workflows.list_workflows,
        workflows.create_workflow,
        workflows.get_workflow,
        workflows.update_workflow,
        workflows.delete_workflow,
        workflows.activate_workflow,
        workflows.deactivate_workflow,
        workflows.dry_run_draft,
        workflows.dry_run_saved,
        runs.run_workflow,
        executions.list_for_workflow,
        executions.get_execution,
        executions.replay_execution,
        executions.cancel_execution,
        events.list_events,
        events.get_event,
        *subscriptions.OPERATIONS,
    ]


def all_routes() -> list[Route]:
    """The routes of every declared operation, one per path."""
    return routes(operations())


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document; built once, on first use."""
    return openapi.openapi_document(operations())
