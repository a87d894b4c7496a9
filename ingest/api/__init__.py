"""The owners' JSON API."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from ingest.api import catalog, credentials, endpoints, events, executions, openapi, runs, workflows

ROUTES: list[BaseRoute] = [
    Route("/api/catalog", catalog.get_catalog, methods=["GET"]),
    Route("/api/openapi.json", openapi.get_openapi, methods=["GET"]),
    Route("/api/endpoints", endpoints.list_endpoints, methods=["GET"]),
    Route("/api/endpoints", endpoints.create_endpoint, methods=["POST"]),
    Route("/api/endpoints/{id}", endpoints.get_endpoint, methods=["GET"]),
    Route("/api/endpoints/{id}", endpoints.delete_endpoint, methods=["DELETE"]),
    Route("/api/endpoints/{id}/rotate-secret", endpoints.rotate_secret, methods=["POST"]),
    Route("/api/workflows", workflows.list_workflows, methods=["GET"]),
    Route("/api/workflows", workflows.create_workflow, methods=["POST"]),
    Route("/api/workflows/{id}", workflows.get_workflow, methods=["GET"]),
    Route("/api/workflows/{id}", workflows.update_workflow, methods=["PATCH"]),
    Route("/api/workflows/{id}", workflows.delete_workflow, methods=["DELETE"]),
    Route("/api/workflows/{id}/activate", workflows.activate_workflow, methods=["POST"]),
    Route("/api/workflows/{id}/deactivate", workflows.deactivate_workflow, methods=["POST"]),
    Route("/api/workflows/{id}/executions", executions.list_for_workflow, methods=["GET"]),
    Route("/api/workflows/{id}/run", runs.run_workflow, methods=["POST"]),
    Route("/api/executions/{id}", executions.get_execution, methods=["GET"]),
    Route("/api/executions/{id}/replay", executions.replay_execution, methods=["POST"]),
    Route("/api/executions/{id}/cancel", executions.cancel_execution, methods=["POST"]),
    Route("/api/credentials", credentials.list_credentials, methods=["GET"]),
    Route("/api/credentials", credentials.create_credential, methods=["POST"]),
    Route("/api/credentials/{id}", credentials.get_credential, methods=["GET"]),
    Route("/api/credentials/{id}", credentials.delete_credential, methods=["DELETE"]),
    Route("/api/connect-links", credentials.create_connect_link, methods=["POST"]),
    Route("/api/events", events.list_events, methods=["GET"]),
    Route("/api/events/{id}", events.get_event, methods=["GET"]),
]
