"""Workflow forms generated from the catalog's schemas, read back into API bodies; cookie and CSRF rules."""

from __future__ import annotations

from types import SimpleNamespace

from starlette.requests import Request

from ingest.console import forms, web
from ingest.console.executions import temporal_link


def field(form: forms.WorkflowForm, group: str, type_name: str, prop: str) -> forms.Field:
    type_form = form.type_form(group, type_name)
    assert type_form is not None
    return next(f for f in type_form.fields if f.prop == prop)


def test_each_property_gets_an_input_of_its_schema_kind() -> None:
    form = forms.blank_form()

    assert field(form, "trigger", "webhook.received", "endpoint_id").kind == "endpoint"
    assert field(form, "trigger", "webhook.received", "filter").kind == "json"
    assert field(form, "action", "http.request", "method").kind == "select"
    assert "POST" in field(form, "action", "http.request", "method").choices
    assert field(form, "action", "http.request", "url").kind == "text"
    assert field(form, "action", "http.request", "timeout_s").kind == "number"
    assert field(form, "action", "http.request", "sign").kind == "checkbox"
    assert field(form, "action", "slack.post-message", "webhook_url").secret


def test_a_submitted_form_becomes_the_api_body_of_the_chosen_types_only() -> None:
    data = {
        "name": "big orders",
        "trigger_type": "webhook.received",
        "action_type": "http.request",
        "trigger:webhook.received:endpoint_id": "7d1f0c8e-0000-4000-8000-000000000001",
        "trigger:webhook.received:filter": '{"path": "body.total", "op": "gt", "value": 100}',
        "action:http.request:url": "https://example.com/hook",
        "action:http.request:timeout_s": "2.5",
        "action:http.request:sign": "on",
        "action:slack.post-message:text": "ignored: another type",
        "concurrency_limit": "3",
    }

    form, body = forms.read_form(data)

    assert not form.has_errors
    assert body == {
        "name": "big orders",
        "trigger": {
            "type": "webhook.received",
            "config": {
                "endpoint_id": "7d1f0c8e-0000-4000-8000-000000000001",
                "filter": {"path": "body.total", "op": "gt", "value": 100},
            },
        },
        "action": {
            "type": "http.request",
            "config": {"url": "https://example.com/hook", "timeout_s": 2.5, "sign": True},
            "credential_id": None,
        },
        "concurrency_limit": 3,
    }


def test_a_value_that_is_not_a_number_is_passed_on_for_the_api_to_name() -> None:
    _, body = forms.read_form({"action_type": "http.request", "action:http.request:timeout_s": "soon"})

    assert body["action"]["config"]["timeout_s"] == "soon"


def test_unparseable_json_is_reported_at_its_field() -> None:
    form, _ = forms.read_form({"trigger_type": "webhook.received", "trigger:webhook.received:filter": "{nope"})

    assert field(form, "trigger", "webhook.received", "filter").error == "is not valid JSON"
    assert form.has_errors


def test_json_fields_that_accept_a_string_take_plain_text() -> None:
    _, body = forms.read_form({"action_type": "novu.trigger", "action:novu.trigger:to": "subscriber-1"})

    assert body["action"]["config"]["to"] == "subscriber-1"


def test_api_errors_land_on_the_input_they_name() -> None:
    form = forms.blank_form()

    forms.place_error(form, "trigger.config.filter.all[0].op", "trigger.config.filter.all[0].op must be one of")
    forms.place_error(form, "action.credential_id", "no such credential")
    forms.place_error(form, "name", "name must be at least 1 character long")
    forms.place_error(form, None, "something else")

    assert field(form, "trigger", "webhook.received", "filter").error is not None
    assert form.errors == {"credential_id": "no such credential", "name": "name must be at least 1 character long"}
    assert form.summary == "something else"


def test_an_edit_keeps_write_only_values_left_empty() -> None:
    _, body = forms.read_form({"action_type": "slack.post-message", "action:slack.post-message:text": "hi"})
    forms.keep_secrets(body, "slack.post-message", {"webhook_url": "https://hooks.slack.com/x"})

    assert body["action"]["config"] == {"text": "hi", "webhook_url": "https://hooks.slack.com/x"}


def test_a_stored_workflow_fills_the_form_but_never_its_secrets() -> None:
    view = {
        "name": "ping",
        "trigger": {"type": "schedule.cron", "config": {"cron": "@daily", "payload": {"a": 1}}},
        "action": {
            "type": "slack.post-message",
            "config": {"text": "hi", "webhook_url": "********"},
            "credential_id": None,
        },
        "concurrency_limit": 4,
    }

    form = forms.form_from_workflow(view)

    assert field(form, "trigger", "schedule.cron", "cron").value == "@daily"
    assert field(form, "trigger", "schedule.cron", "payload").value == '{\n  "a": 1\n}'
    assert field(form, "action", "slack.post-message", "webhook_url").value == ""
    assert form.concurrency_limit == "4"


def test_the_temporal_ui_link_needs_a_configured_url_and_a_handed_over_execution() -> None:
    handed = {"temporal": {"workflow_id": "automation-abc", "run_id": "r/1"}}

    assert temporal_link("", "default", handed) is None
    assert temporal_link("http://ui", "default", {"temporal": {"workflow_id": None, "run_id": None}}) is None
    assert temporal_link("http://ui/", "default", handed) == (
        "http://ui/namespaces/default/workflows/automation-abc/r%2F1/history"
    )


def _request(scheme: str, public_url: str) -> Request:
    settings = SimpleNamespace(public_url=public_url)
    app = SimpleNamespace(settings=settings)
    scope = {
        "type": "http",
        "scheme": scheme,
        "path": "/",
        "query_string": b"",
        "server": ("h", 443),
        "headers": [],
        "state": {"app": app},
    }
    return Request(scope)


def test_session_cookies_are_secure_whenever_the_console_is_reached_over_https() -> None:
    assert web.secure_cookies(_request("https", ""))
    assert web.secure_cookies(_request("http", "https://hooks.example.com"))  # behind a TLS proxy
    assert not web.secure_cookies(_request("http", "http://127.0.0.1:8000"))


def test_the_csrf_token_is_bound_to_the_session_token() -> None:
    assert web.csrf_for("a") == web.csrf_for("a")
    assert web.csrf_for("a") != web.csrf_for("b")


def test_a_filter_trace_renders_whatever_keys_its_steps_carry() -> None:
    # Regression: a group step has no `skipped` key when nothing was skipped, and broke the page.
    macros = web._environment().get_template("_macros.html").module
    steps = [
        {"at": "filter", "kind": "all", "matched": False},
        {
            "at": "filter.all[0]",
            "kind": "condition",
            "matched": True,
            "path": "body.n",
            "op": "gt",
            "expected": 1,
            "seen": 2,
        },
        {
            "at": "filter.all[1]",
            "kind": "condition",
            "matched": False,
            "path": "body.x",
            "op": "exists",
            "expected": None,
            "seen": None,
            "missing": True,
        },
    ]

    html = str(macros.trace(steps))  # type: ignore[attr-defined]

    assert "all → no" in html and "body.n gt 1" in html and 'saw <span class="mono">2</span>' in html
    assert "missing" in html
