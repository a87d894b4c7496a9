"""Specification of log output: JSON lines carry the ids of the work at hand and never secrets."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import pytest

from telemetry.logs import REDACTED, JsonFormatter, RedactingFilter, configure, log_context, redact


@contextmanager
def capture(formatter: logging.Formatter | None = None) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the production filter and (by default) the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or JsonFormatter("worker"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("hookyard.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def _emitted(emit: Callable[[logging.Logger], object]) -> list[dict[str, object]]:
    with capture() as (logger, stream):
        emit(logger)
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_level_logger_message_and_process() -> None:
    [line] = _emitted(lambda log: log.info("hello %s", "world"))
    assert line["level"] == "info"
    assert line["logger"] == "hookyard.test-logs"
    assert line["message"] == "hello world"
    assert line["process"] == "worker"


def test_ids_bound_with_log_context_appear_on_every_line_inside_the_block() -> None:
    def emit(log: logging.Logger) -> None:
        with log_context(execution_id="x-1", workflow_id="w-1", event_id="e-1"):
            log.info("attempt started")
            log.warning("attempt failed")
        log.info("outside")

    inside, failed, outside = _emitted(emit)
    for line in (inside, failed):
        assert (line["execution_id"], line["workflow_id"], line["event_id"]) == ("x-1", "w-1", "e-1")
    assert "execution_id" not in outside


def test_nested_log_context_adds_fields_and_none_values_are_left_out() -> None:
    def emit(log: logging.Logger) -> None:
        with log_context(workflow_id="w-1"), log_context(execution_id="x-2", event_id=None):
            log.info("inner")

    [line] = _emitted(emit)
    assert line["workflow_id"] == "w-1"
    assert line["execution_id"] == "x-2"
    assert "event_id" not in line


def test_extra_ids_override_the_context() -> None:
    def emit(log: logging.Logger) -> None:
        with log_context(event_id="from-context"):
            log.info("stored", extra={"event_id": "from-extra"})

    [line] = _emitted(emit)
    assert line["event_id"] == "from-extra"


async def test_concurrent_tasks_keep_their_own_ids() -> None:
    async def attempt(log: logging.Logger, execution_id: str) -> None:
        with log_context(execution_id=execution_id):
            await asyncio.sleep(0)
            log.info("done %s", execution_id)

    with capture() as (logger, stream):
        await asyncio.gather(attempt(logger, "a"), attempt(logger, "b"))
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert {(line["message"], line["execution_id"]) for line in lines} == {("done a", "a"), ("done b", "b")}


def test_dict_argument_with_secret_token_and_authorization_keys_is_redacted() -> None:
    config = {
        "url": "https://example.test/hook",
        "secret": "whsec_supersecret",
        "access_token": "ya29.token-value",
        "headers": {"Authorization": "Bearer hy_apikey", "X-Trace": "keep-me"},
    }
    [line] = _emitted(lambda log: log.info("action config %s", config))
    message = str(line["message"])
    for leaked in ("whsec_supersecret", "ya29.token-value", "hy_apikey"):
        assert leaked not in message
    assert "https://example.test/hook" in message
    assert "keep-me" in message
    assert message.count(REDACTED) == 3


def test_mapping_passed_as_the_sole_argument_is_redacted() -> None:
    args = {"provider": "google", "refresh_token": "1//r"}
    [line] = _emitted(lambda log: log.info("refresh for %(provider)s with %(refresh_token)s", args))
    assert line["message"] == f"refresh for google with {REDACTED}"


def test_mapping_logged_as_the_message_is_redacted() -> None:
    [line] = _emitted(lambda log: log.info({"password": "hunter2", "user": "ann"}))
    assert "hunter2" not in str(line["message"])
    assert "ann" in str(line["message"])


def test_the_callers_dict_is_not_modified() -> None:
    config = {"secret": "s3cr3t"}
    _emitted(lambda log: log.info("config %s", config))
    assert config == {"secret": "s3cr3t"}


def test_redaction_reaches_dicts_inside_lists_and_leaves_other_values_alone() -> None:
    value = {"items": [{"api_key": "k", "n": 1}], "cookie": "c", "count": 3}
    assert redact(value) == {"items": [{"api_key": REDACTED, "n": 1}], "cookie": REDACTED, "count": 3}
    assert redact("plain text") == "plain text"


def test_redaction_applies_to_the_human_readable_format_too() -> None:
    with capture(logging.Formatter("%(message)s")) as (logger, stream):
        logger.warning("headers %s", {"authorization": "Bearer abc"})
    assert "abc" not in stream.getvalue()
    assert REDACTED in stream.getvalue()


def test_named_tuples_and_other_values_pass_through_unchanged() -> None:
    from collections import namedtuple

    Point = namedtuple("Point", "x y")
    [line] = _emitted(lambda log: log.info("at %s with %s", Point(1, 2), [{"token": "t"}]))
    assert line["message"] == f"at Point(x=1, y=2) with [{{'token': '{REDACTED}'}}]"


def test_outbound_request_urls_are_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure("INFO")
    secret_url = "https://hooks.slack.com/services/T0001/B0001/SUPERSECRETTOKEN"
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=transport) as client:
        client.post(secret_url, json={"text": "hi"})
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    assert "SUPERSECRETTOKEN" not in capsys.readouterr().err
