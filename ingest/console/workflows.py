"""Workflow pages: list with health, detail, create and edit forms, toggles, run now, delete."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingest import dryrun
from ingest.api import definitions, runs
from ingest.api import workflows as api
from ingest.api.common import path_id
from ingest.api.executions import execution_json
from ingest.console import forms, web
from ingest.console.web import Session, page, render
from ingest.errors import Invalid
from schemas import jsonlimits
from schemas.store import credentials, endpoints, executions, overview
from schemas.store import workflows as store
from schemas.store.workflows import Workflow

LISTED = 200
RECENT_EXECUTIONS = 20


@page
async def list_page(request: Request, session: Session) -> Response:
    """Every workflow with its status, last run and 24-hour success rate."""
    async with session.state.pool.acquire() as conn:
        rows = (await store.list_workflows(conn, session.owner_id, limit=LISTED))[:LISTED]
        stats = await overview.workflow_stats(conn, session.owner_id, [r.id for r in rows])
        has_endpoints = bool(await endpoints.list_endpoints(conn, session.owner_id, limit=1))
    items = []
    for row in rows:
        stat = stats.get(row.id)
        finished = stat["finished"] if stat else 0
        rate = round(100 * stat["succeeded"] / finished) if stat and finished else None
        items.append({"workflow": api.workflow_json(row), "stat": stat, "rate": rate, "finished": finished})
    return render(request, "workflows.html", {"items": items, "has_endpoints": has_endpoints})


async def _choices(session: Session) -> dict[str, Any]:
    async with session.state.pool.acquire() as conn:
        owned = await endpoints.list_endpoints(conn, session.owner_id, limit=LISTED)
        creds = await credentials.list_credentials(conn, session.owner_id, limit=LISTED)
    return {"endpoints": owned[:LISTED], "credentials": creds[:LISTED]}


async def _form_page(
    request: Request, session: Session, form: forms.WorkflowForm, workflow: dict[str, Any] | None, **extra: Any
) -> Response:
    status = 422 if form.has_errors or form.summary else 200
    context = {"form": form, "workflow": workflow, "dry_run": None, "dry_run_error": None, "dry_run_limit": 20}
    context |= extra
    return render(request, "workflow_form.html", context | await _choices(session), status)


@page
async def new_form(request: Request, session: Session) -> Response:
    """An empty workflow form generated from the catalog."""
    form = forms.blank_form()
    endpoint = request.query_params.get("endpoint_id")
    webhook = form.type_form("trigger", "webhook.received")
    if endpoint and webhook is not None:
        webhook.fields[0].value = endpoint
    return await _form_page(request, session, form, None)


@page
async def create(request: Request, session: Session) -> Response:
    """Create from the form; API validation errors are shown at their inputs."""
    form, body = forms.read_form(session.form)
    if form.has_errors:
        return await _form_page(request, session, form, None)
    try:
        saved = await api.create(session.state, session.owner_id, body)
    except Invalid as exc:
        forms.place_error(form, exc.field, exc.message)
        return await _form_page(request, session, form, None)
    return web.redirect(f"/workflows/{saved['id']}?created=1")


async def _owned(session: Session, workflow_id: UUID) -> Workflow:
    async with session.state.pool.acquire() as conn:
        return await store.get_workflow(conn, session.owner_id, workflow_id)


@page
async def detail(request: Request, session: Session) -> Response:
    """One workflow: its definition, health and latest executions, and what can be done with it."""
    workflow_id = path_id(request, "workflow")
    async with session.state.pool.acquire() as conn:
        row = await store.get_workflow(conn, session.owner_id, workflow_id)
        recent = await executions.list_for_workflow(conn, session.owner_id, workflow_id, limit=RECENT_EXECUTIONS)
    view = api.workflow_json(row)
    return render(
        request,
        "workflow.html",
        {
            "workflow": view,
            "trigger_config": _pretty(view["trigger"]["config"]),
            "action_config": _pretty(view["action"]["config"]),
            "executions": [execution_json(x) for x in recent[:RECENT_EXECUTIONS]],
            "created": request.query_params.get("created") == "1",
            "run_error": None,
        },
    )


def _pretty(value: Any) -> str:
    return jsonlimits.dumps_bounded(value, option=orjson.OPT_INDENT_2).decode()


@page
async def edit_form(request: Request, session: Session) -> Response:
    """The form filled with the workflow as saved."""
    row = await _owned(session, path_id(request, "workflow"))
    view = api.workflow_json(row)
    return await _form_page(request, session, forms.form_from_workflow(view), view)


@page
async def update(request: Request, session: Session) -> Response:
    """Save an edit; the trigger and action are replaced whole, as PATCH does."""
    workflow_id = path_id(request, "workflow")
    row = await _owned(session, workflow_id)
    view = api.workflow_json(row)
    form, body = forms.read_form(session.form)
    if form.has_errors:
        return await _form_page(request, session, form, view)
    forms.keep_secrets(body, row.action_type, row.action_config)
    try:
        await api.update(session.state, session.owner_id, workflow_id, body)
    except Invalid as exc:
        forms.place_error(form, exc.field, exc.message)
        return await _form_page(request, session, form, view)
    return web.redirect(f"/workflows/{workflow_id}")


async def _toggle(request: Request, session: Session, active: bool) -> Response:
    workflow_id = path_id(request, "workflow")
    async with session.state.pool.acquire() as conn:
        await store.set_active(conn, session.owner_id, workflow_id, active)
    return web.redirect(f"/workflows/{workflow_id}")


@page
async def activate(request: Request, session: Session) -> Response:
    """Start matching events again."""
    return await _toggle(request, session, True)


@page
async def deactivate(request: Request, session: Session) -> Response:
    """Stop matching events; executions not started are cancelled."""
    return await _toggle(request, session, False)


@page
async def delete(request: Request, session: Session) -> Response:
    """Delete; past executions stay readable."""
    workflow_id = path_id(request, "workflow")
    async with session.state.pool.acquire() as conn:
        await store.delete_workflow(conn, session.owner_id, workflow_id)
    return web.redirect("/workflows")


@page
async def run_now(request: Request, session: Session) -> Response:
    """Queue a run with the given JSON, shaped as the trigger shapes its data (the filter is skipped)."""
    workflow_id = path_id(request, "workflow")
    text = session.form.get("trigger_data", "").strip() or "{}"
    try:
        data = jsonlimits.loads(text.encode(), session.state.settings.max_json_depth)
    except (orjson.JSONDecodeError, jsonlimits.JsonTooDeep):
        data = None
    if not isinstance(data, dict):
        raise Invalid('trigger data must be a JSON object, e.g. {"order": {"id": 1}}', field="trigger_data")
    execution_id, _shape = await runs.run_now(session.state.pool, session.owner_id, workflow_id, data)
    return web.redirect(f"/executions/{execution_id}")


DRY_RUN_DEFAULT = 20


def _dry_run_limit(session: Session) -> int:
    text = session.form.get("dry_run_limit", "").strip()
    limit = int(text) if text.isdigit() else DRY_RUN_DEFAULT
    return max(1, min(limit, dryrun.MAX_EVENTS))


def _dry_run_rows(report: dryrun.DryRunReport) -> dict[str, Any]:
    shown = report.to_json()
    rows = []
    for result in shown["results"]:
        action = result["action"] or {}
        rendered = action.get("request") or action.get("config")
        rows.append(
            {
                "event_id": result["event"]["id"],
                "received_at": result["event"]["received_at"],
                "matched": result["matched"],
                "reason": result["reason"],
                "trace": result["trace"],
                "error": action.get("error"),
                "request": None if rendered is None else _pretty(rendered),
            }
        )
    return {"matched": shown["matched"], "total": shown["events"], "rows": rows, "stopped": shown["stopped"]}


async def _dry_run(
    request: Request, session: Session, workflow_id: UUID | None, view: dict[str, Any] | None, stored: Workflow | None
) -> Response:
    form, body = forms.read_form(session.form)
    limit = _dry_run_limit(session)
    if form.has_errors:
        return await _form_page(request, session, form, view, dry_run_limit=limit)
    if stored is not None:
        forms.keep_secrets(body, stored.action_type, stored.action_config)
    state = session.state
    try:
        async with state.pool.acquire() as conn:
            if workflow_id is None:
                draft = await definitions.validated_create(conn, session.owner_id, body)
            else:
                draft = await definitions.validated_patch(conn, session.owner_id, workflow_id, body)
        report = await dryrun.dry_run(
            state.pool,
            session.owner_id,
            draft,
            event_ids=None,
            since=None,
            limit=limit,
            workflow_id=workflow_id,
            limits=dryrun.DryRunLimits.from_settings(state.settings),
        )
    except Invalid as exc:
        forms.place_error(form, exc.field, exc.message)
        return await _form_page(request, session, form, view, dry_run_limit=limit)
    return await _form_page(request, session, form, view, dry_run=_dry_run_rows(report), dry_run_limit=limit)


@page
async def dry_run_new(request: Request, session: Session) -> Response:
    """Try the draft of a new workflow against the latest stored events; nothing is saved or sent."""
    return await _dry_run(request, session, None, None, None)


@page
async def dry_run_edit(request: Request, session: Session) -> Response:
    """Try a changed workflow against the latest stored events before saving the change."""
    workflow_id = path_id(request, "workflow")
    row = await _owned(session, workflow_id)
    return await _dry_run(request, session, workflow_id, api.workflow_json(row), row)
