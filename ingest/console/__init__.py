"""The owner console: server-rendered pages at `/console` over the same store functions as the API."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ingest.console import executions, inbox, setup, workflows
from ingest.console.web import PREFIX

_GET, _POST = ["GET"], ["POST"]


def routes() -> list[BaseRoute]:
    """The console's routes, mounted under `/console`."""
    pages: list[BaseRoute] = [
        Route("/", inbox.home, methods=_GET),
        Route("/sign-in", inbox.signin_form, methods=_GET),
        Route("/sign-in", inbox.signin, methods=_POST),
        Route("/sign-out", inbox.signout, methods=_POST),
        Route("/inbox", inbox.inbox, methods=_GET),
        Route("/inbox/rows", inbox.inbox_rows, methods=_GET),
        Route("/events/{id}", inbox.event_page, methods=_GET),
        Route("/workflows", workflows.list_page, methods=_GET),
        Route("/workflows/new", workflows.new_form, methods=_GET),
        Route("/workflows/new", workflows.create, methods=_POST),
        Route("/workflows/new/dry-run", workflows.dry_run_new, methods=_POST),
        Route("/workflows/{id}", workflows.detail, methods=_GET),
        Route("/workflows/{id}/edit", workflows.edit_form, methods=_GET),
        Route("/workflows/{id}/edit", workflows.update, methods=_POST),
        Route("/workflows/{id}/edit/dry-run", workflows.dry_run_edit, methods=_POST),
        Route("/workflows/{id}/activate", workflows.activate, methods=_POST),
        Route("/workflows/{id}/deactivate", workflows.deactivate, methods=_POST),
        Route("/workflows/{id}/delete", workflows.delete, methods=_POST),
        Route("/workflows/{id}/run", workflows.run_now, methods=_POST),
        Route("/executions", executions.list_page, methods=_GET),
        Route("/executions/{id}", executions.detail, methods=_GET),
        Route("/executions/{id}/replay", executions.replay, methods=_POST),
        Route("/executions/{id}/cancel", executions.cancel, methods=_POST),
        Route("/endpoints", setup.endpoints_page, methods=_GET),
        Route("/endpoints", setup.create_endpoint, methods=_POST),
        Route("/endpoints/{id}/rotate", setup.rotate_endpoint, methods=_POST),
        Route("/endpoints/{id}/delete", setup.delete_endpoint, methods=_POST),
        Route("/credentials", setup.credentials_page, methods=_GET),
        Route("/credentials/connect-link", setup.connect_link, methods=_POST),
        Route("/credentials/{id}/reconnect", setup.reconnect, methods=_POST),
        Route("/credentials/{id}/delete", setup.delete_credential, methods=_POST),
        Mount("/static", StaticFiles(packages=[("ingest.console", "static")]), name="console-static"),
        Route("/{rest:path}", inbox.not_found, methods=["GET", "POST"]),
    ]
    return [Route(PREFIX, inbox.home, methods=_GET), Mount(PREFIX, routes=pages)]
