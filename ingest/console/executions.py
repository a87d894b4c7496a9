"""Execution pages: across workflows or for one, an execution's detail, replay and cancel."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from uuid import UUID

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingest.api import executions as api
from ingest.api.common import path_id
from ingest.console import web
from ingest.console.web import Session, page, render
from schemas import jsonlimits
from schemas.store import executions as store
from schemas.store import newsletter, workflows
from schemas.store.pagination import BadCursor, decode_cursor
from schemas.store.pagination import page as paged

PAGE = 50


def _uuid(text: str | None) -> UUID | None:
    try:
        return UUID(text) if text else None
    except ValueError:
        return None


@page
async def list_page(request: Request, session: Session) -> Response:
    """Executions newest first, across workflows or for one (`?workflow=`), by status."""
    status = request.query_params.get("status") or None
    if status not in (None, *api.STATUSES):
        status = None
    workflow_id = _uuid(request.query_params.get("workflow"))
    try:
        after = decode_cursor(request.query_params.get("cursor"))
    except BadCursor:
        after = None
    async with session.state.pool.acquire() as conn:
        workflow = None
        if workflow_id is not None:
            workflow = await workflows.get_workflow(conn, session.owner_id, workflow_id, include_deleted=True)
            rows = await store.list_for_workflow(
                conn, session.owner_id, workflow_id, limit=PAGE, after_seq=after, status=status
            )
        else:
            rows = await store.list_for_owner(conn, session.owner_id, limit=PAGE, after_seq=after, status=status)
    items, cursor = paged(rows, PAGE)
    return render(
        request,
        "executions.html",
        {
            "executions": [api.execution_json(x) for x in items],
            "cursor": cursor,
            "status": status,
            "statuses": api.STATUSES,
            "workflow": workflow,
        },
    )


def _pretty(value: Any) -> str:
    return jsonlimits.dumps_bounded(value, option=orjson.OPT_INDENT_2).decode()


def temporal_link(ui_url: str, namespace: str, view: dict[str, Any]) -> str | None:
    """The run in the Temporal Web UI, when its URL is configured and the execution was handed over."""
    temporal = view["temporal"]
    if not ui_url or not temporal["workflow_id"]:
        return None
    parts = [ui_url.rstrip("/"), "namespaces", quote(namespace, safe=""), "workflows"]
    link = "/".join([*parts, quote(temporal["workflow_id"], safe="")])
    if temporal["run_id"]:
        link += f"/{quote(temporal['run_id'], safe='')}"
    return link + "/history"


@page
async def detail(request: Request, session: Session) -> Response:
    """One execution: status, attempts, result or error, trigger data, newsletter progress."""
    execution_id = path_id(request, "execution")
    async with session.state.pool.acquire() as conn:
        row = await store.get_execution(conn, session.owner_id, execution_id)
        progress = await newsletter.progress(conn, execution_id)
        workflow = await workflows.get_workflow(conn, session.owner_id, row.workflow_id, include_deleted=True)
    view = api.execution_json(row, progress)
    settings = session.state.settings
    done = 0
    if progress:
        done = progress["sent"] + progress["failed"] + progress["unknown"] + progress["cancelled"]
    return render(
        request,
        "execution.html",
        {
            "x": view,
            "workflow": workflow,
            "trigger_data": _pretty(view["trigger_data"]),
            "result": None if view["result"] is None else _pretty(view["result"]),
            "progress": progress,
            "progress_done": done,
            "temporal_url": temporal_link(settings.temporal_ui_url, settings.temporal_namespace, view),
            "cancellable": view["status"] not in store.TERMINAL,
            "notice": request.query_params.get("notice"),
        },
    )


@page
async def replay(request: Request, session: Session) -> Response:
    """Queue a new run with the same trigger data, and open it."""
    row = await api.replay(session.state.pool, session.owner_id, path_id(request, "execution"))
    return web.redirect(f"/executions/{row.id}?notice=replayed")


@page
async def cancel(request: Request, session: Session) -> Response:
    """Cancel, or ask a newsletter to stop between batches."""
    execution_id = path_id(request, "execution")
    await api.cancel(session.state.pool, session.owner_id, execution_id)
    return web.redirect(f"/executions/{execution_id}?notice=cancelled")
