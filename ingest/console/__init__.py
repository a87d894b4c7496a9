"""The owner console: server-rendered pages at `/console` over the same store functions as the API."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ingest.console import inbox
from ingest.console.web import PREFIX


def routes() -> list[BaseRoute]:
    """The console's routes, mounted under `/console`."""
    pages: list[BaseRoute] = [
        Route("/", inbox.home, methods=["GET"]),
        Route("/sign-in", inbox.signin_form, methods=["GET"]),
        Route("/sign-in", inbox.signin, methods=["POST"]),
        Route("/sign-out", inbox.signout, methods=["POST"]),
        Route("/inbox", inbox.inbox, methods=["GET"]),
        Route("/inbox/rows", inbox.inbox_rows, methods=["GET"]),
        Route("/events/{id}", inbox.event_page, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("ingest.console", "static")]), name="console-static"),
        Route("/{rest:path}", inbox.not_found, methods=["GET", "POST"]),
    ]
    return [Route(PREFIX, inbox.home, methods=["GET"]), Mount(PREFIX, routes=pages)]
