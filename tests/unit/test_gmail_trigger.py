"""The Gmail trigger's pure parts: push bodies, message -> trigger data, and matching."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.gmail_client import sent_by_hookyard
from ingest.pubsub import PushFormatError, parse_notification, parse_push
from schemas.sanitize import strip_nul
from triggers.base import InboxEvent
from triggers.gmail import TRIGGER, message_data


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("latin-1")).decode().rstrip("=")


MESSAGE: dict[str, Any] = {
    "id": "18c1",
    "threadId": "18c0",
    "labelIds": ["INBOX", "UNREAD"],
    "snippet": "Café at noon?",
    "historyId": "9001",
    "internalDate": "1700000000000",
    "payload": {
        "mimeType": "multipart/mixed",
        "headers": [
            {"name": "From", "value": "Fay <fay@example.test>"},
            {"name": "To", "value": "me@example.test"},
            {"name": "Subject", "value": "Lunch"},
            {"name": "Message-ID", "value": "<m1@example.test>"},
        ],
        "parts": [
            {
                "mimeType": "multipart/alternative",
                "parts": [
                    {
                        "mimeType": "text/plain",
                        "headers": [{"name": "Content-Type", "value": "text/plain; charset=ISO-8859-1"}],
                        "body": {"data": b64url("Café at noon?")},
                    },
                    {"mimeType": "text/html", "body": {"data": b64url("<b>Cafe</b>")}},
                ],
            },
            {"mimeType": "image/png", "filename": "map.png", "partId": "1", "body": {"attachmentId": "a1", "size": 9}},
        ],
    },
}


def test_message_data_reads_nested_parts_charsets_and_attachments() -> None:
    data = message_data(MESSAGE, mailbox="cred", account="me@example.test")
    assert data["text"] == "Café at noon?"
    assert data["html"] == "<b>Cafe</b>"
    assert data["attachments"] == [
        {"filename": "map.png", "mime_type": "image/png", "size": 9, "attachment_id": "a1", "part_id": "1"}
    ]
    assert data["has_attachment"] is True
    assert data["received_at"] == "2023-11-14T22:13:20+00:00"
    assert (data["from"], data["subject"], data["message_id"]) == (
        "Fay <fay@example.test>",
        "Lunch",
        "<m1@example.test>",
    )


def test_only_messages_with_the_execution_header_count_as_sent_by_hookyard() -> None:
    assert not sent_by_hookyard(MESSAGE)
    tagged = {**MESSAGE, "payload": {**MESSAGE["payload"], "headers": [{"name": "x-hookyard-execution", "value": "e"}]}}
    assert sent_by_hookyard(tagged)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
_parts = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "mimeType": st.sampled_from(["text/plain", "text/html", "image/png", 3]),
            "filename": st.text(max_size=5) | st.none(),
            "headers": st.lists(st.fixed_dictionaries({"name": st.text(max_size=20), "value": st.text(max_size=30)}))
            | _json,
            "body": st.fixed_dictionaries(
                {}, optional={"data": st.text(max_size=30), "attachmentId": _json, "size": _json}
            )
            | _json,
        },
    ),
    lambda inner: st.fixed_dictionaries({"parts": st.lists(inner, max_size=4)}),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    message=st.fixed_dictionaries(
        {}, optional={"payload": _parts | _json, "labelIds": _json, "internalDate": _json, "id": _json}
    )
)
def test_message_data_accepts_any_message_shape(message: dict[str, Any]) -> None:
    data = message_data(message, mailbox="m", account=None)
    orjson.dumps(data)
    assert isinstance(data["text"], str) and isinstance(data["attachments"], list)


def event(data: dict[str, Any]) -> InboxEvent:
    return InboxEvent(uuid.uuid4(), uuid.uuid4(), "gmail", "cred", {}, orjson.dumps(data), "2026-11-23T10:00:00Z")


DATA = message_data(MESSAGE, mailbox="cred", account="me@example.test")


@pytest.mark.parametrize(
    ("config", "matched"),
    [
        ({}, True),
        ({"label_ids": ["Label_1"]}, False),
        ({"label_ids": ["Label_1", "UNREAD"]}, True),
        ({"from": "FAY@example"}, True),
        ({"from": "gus"}, False),
        ({"to": "me@"}, True),
        ({"subject": "lunch"}, True),
        ({"subject": "dinner"}, False),
        ({"text": "café"}, True),
        ({"has_attachment": True}, True),
        ({"has_attachment": False}, False),
        ({"filter": {"path": "labels", "op": "contains", "value": "UNREAD"}}, True),
        ({"subject": "lunch", "filter": {"path": "from", "op": "starts_with", "value": "Gus"}}, False),
    ],
)
def test_matching_by_labels_convenience_fields_and_filter(config: dict[str, Any], matched: bool) -> None:
    data = TRIGGER.trigger_data(event(DATA))
    outcome = TRIGGER.match({"mailbox": "cred", **config}, data)
    assert outcome.matched is matched, outcome.reason


def test_trigger_data_is_the_stored_message_data_with_the_event_id() -> None:
    stored = event(DATA)
    data = TRIGGER.trigger_data(stored)
    assert data["subject"] == "Lunch" and data["event_id"] == str(stored.id) and data["mailbox"] == "cred"


def test_routing_is_by_the_canonical_credential_id() -> None:
    credential = uuid.uuid4()
    assert TRIGGER.routing_key({"mailbox": str(credential).upper()}) == str(credential)


def test_push_bodies_in_either_spelling_decode_to_the_notification() -> None:
    data = base64.urlsafe_b64encode(b'{"emailAddress":"a@b.test","historyId":"12"}').decode().rstrip("=")
    for message in ({"messageId": "1", "data": data}, {"message_id": "1", "data": data}):
        push = parse_push(orjson.dumps({"message": message}))
        assert push.message_id == "1"
        notification = parse_notification(push.data)
        assert (notification.email_address, notification.history_id) == ("a@b.test", 12)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200)
    | _json.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda mid, data: json.dumps({"message": {"messageId": mid, "data": data}}).encode(),
        _json,
        st.text(max_size=40),
    )
)
def test_push_parsing_raises_nothing_but_push_format_error(body: bytes) -> None:
    with contextlib.suppress(PushFormatError):
        parse_notification(parse_push(body).data)


@pytest.mark.parametrize(("charset", "body"), [("idna", "x" * 70), ("undefined", "hi"), ("utf-7", "+2AA-")])
def test_a_hostile_charset_still_gives_storable_trigger_data(charset: str, body: str) -> None:
    part = {
        "mimeType": "text/plain",
        "headers": [{"name": "Content-Type", "value": f"text/plain; charset={charset}"}],
        "body": {"data": b64url(body)},
    }
    message = {**MESSAGE, "payload": {**MESSAGE["payload"], "parts": [part]}}
    data = strip_nul(message_data(message, mailbox="cred", account=None))
    assert isinstance(orjson.dumps(data), bytes)


def test_lone_surrogates_and_nul_become_replacement_characters() -> None:
    assert strip_nul({"a\x00": ["x\ud800y"]}) == {"a\ufffd": ["x\ufffdy"]}


def test_a_strangers_mail_carrying_the_execution_header_still_counts() -> None:
    from worker.gmail.activities import _wanted

    headers = [*MESSAGE["payload"]["headers"], {"name": "X-Hookyard-Execution", "value": "forged"}]
    message = {**MESSAGE, "payload": {**MESSAGE["payload"], "headers": headers}}
    assert _wanted(message, ["INBOX"], ["INBOX"])
    assert not _wanted(message, ["INBOX", "SENT"], ["INBOX"]), "our own reply to ourselves is skipped"


def test_a_match_by_sender_and_subject_explains_those_checks_not_no_filter() -> None:
    data = TRIGGER.trigger_data(event(DATA))

    outcome = TRIGGER.match({"mailbox": "cred", "from": "fay@", "subject": "lunch"}, data)

    assert outcome.matched is True
    assert outcome.reason == "labels include INBOX; from contains 'fay@'; subject contains 'lunch'"
    assert [(s["at"], s["op"], s["matched"]) for s in outcome.trace_json()] == [
        ("label_ids", "includes_any", True),
        ("from", "contains", True),
        ("subject", "contains", True),
    ]


def test_a_failed_check_is_the_last_step_with_the_value_seen() -> None:
    data = TRIGGER.trigger_data(event(DATA))

    outcome = TRIGGER.match({"mailbox": "cred", "subject": "dinner", "filter": {"path": "id", "op": "exists"}}, data)

    last = outcome.trace_json()[-1]
    assert (outcome.matched, last["at"], last["seen"], last["expected"]) == (False, "subject", "Lunch", "dinner")


def test_the_filter_follows_the_checks_in_the_trace() -> None:
    data = TRIGGER.trigger_data(event(DATA))

    outcome = TRIGGER.match(
        {"mailbox": "cred", "from": "fay", "filter": {"path": "labels", "op": "contains", "value": "UNREAD"}}, data
    )

    assert [s.at for s in outcome.trace] == ["label_ids", "from", "filter"]
    assert outcome.reason == "labels include INBOX; from contains 'fay'; labels contains 'UNREAD'"
