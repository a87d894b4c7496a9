"""What Temporal stores is ciphertext, and the codec server turns it back for operators only."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from hookyard import services
from ingest.app import create_app
from oauth.crypto import Keyring
from runtime.codec import ENCODING
from runtime.temporal import connect
from settings import Settings
from tests.conftest import Owner, Receiver, Stack, make_settings, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send

TOKEN = "codec-token-" + "x" * 40
QUEUE = f"codec-test-{uuid.uuid4().hex}"
UI_ORIGIN = "http://127.0.0.1:8233"


# --- a workflow whose input, activity and result all carry a marker ------------------------


@activity.defn(name="codec-test-echo")
async def echo(text: str) -> str:
    return f"echo {text}"


@activity.defn(name="codec-test-fail")
async def fail(text: str) -> str:
    raise ApplicationError(f"target refused {text}", non_retryable=True)


@workflow.defn(name="codec-test-workflow")
class MarkerWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        timeout = timedelta(seconds=10)
        if text.startswith("fail"):
            return await workflow.execute_activity(
                fail, text, start_to_close_timeout=timeout, retry_policy=RetryPolicy(maximum_attempts=1)
            )
        return await workflow.execute_activity(echo, text, start_to_close_timeout=timeout)


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A client made the way every hookyard process makes one, with a worker for MarkerWorkflow."""
    codec_client = await connect(settings)
    worker = Worker(
        codec_client,
        task_queue=QUEUE,
        workflows=[MarkerWorkflow],
        activities=[echo, fail],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with worker:
        yield codec_client


async def run_marker_workflow(client: Client, text: str) -> str:
    workflow_id = f"codec-test-{uuid.uuid4().hex}"
    await client.execute_workflow(MarkerWorkflow.run, text, id=workflow_id, task_queue=QUEUE)
    return workflow_id


def marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


# --- reading history as the Temporal server stores it ------------------------------------


async def raw_history(address: str, workflow_id: str, run_id: str | None = None) -> list[Message]:
    """Events fetched by a client without hookyard's codec: what the server holds."""
    plain = await Client.connect(address)
    history = await plain.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    return list(history.events)


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside a protobuf message."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            values = [value]
        elif field.message_type.GetOptions().map_entry:
            values = list(value.values())
        else:
            values = list(value)
        for item in values:
            if isinstance(item, Message):
                yield from payloads_in(item)


def assert_all_encrypted(events: list[Message], *secrets: str) -> None:
    payloads = [p for event in events for p in payloads_in(event)]
    assert payloads, "the history holds no payloads at all"
    assert {p.metadata.get("encoding") for p in payloads} == {ENCODING}
    wire = b"".join(event.SerializeToString() for event in events)
    for secret in secrets:
        assert secret.encode() not in wire


# --- what Temporal stores -----------------------------------------------------------------


async def test_workflow_input_activity_data_and_result_are_stored_encrypted(client: Client, stack: Stack):
    text = marker()
    workflow_id = await run_marker_workflow(client, text)
    events = await raw_history(stack.temporal_address, workflow_id)
    assert_all_encrypted(events, text)


async def test_the_codec_client_still_reads_its_own_results(client: Client):
    text = marker()
    workflow_id = await run_marker_workflow(client, text)
    assert await client.get_workflow_handle(workflow_id).result() == f"echo {text}"


async def test_failure_messages_are_stored_encrypted_and_decoded_for_the_client(client: Client, stack: Stack):
    text = "fail-" + marker()
    workflow_id = f"codec-test-{uuid.uuid4().hex}"
    with pytest.raises(WorkflowFailureError) as failed:
        await client.execute_workflow(MarkerWorkflow.run, text, id=workflow_id, task_queue=QUEUE)
    assert f"target refused {text}" in str(failed.value.cause.cause)
    events = await raw_history(stack.temporal_address, workflow_id)
    assert_all_encrypted(events, text, "target refused")
    assert any(e.HasField("activity_task_failed_event_attributes") for e in events)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("pipeline")
async def test_a_real_automation_run_leaves_only_ciphertext_in_temporal(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver, stack: Stack
):
    target = f"/codec/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    assert (await send(http, endpoint, b'{"order": {"id": "A-1"}}')).status_code == 202
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    # The run of the lane that ran it (its activity input carries the id, and so does the signal
    # unless the lane continued as new in between).
    holder = execution["temporal"]
    events = await raw_history(stack.temporal_address, holder["workflow_id"], holder["run_id"])
    # Execution ids travel in the signal and the activity input; neither is readable.
    assert_all_encrypted(events, execution["id"])


# --- the codec server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def codec_url(stack: Stack) -> AsyncIterator[str]:
    """The API app configured with a codec token and the UI's origin."""
    settings = make_settings(stack, codec_auth_token=TOKEN, codec_cors_origins=(UI_ORIGIN,))
    async with serve(create_app(settings, Keyring(settings.master_keys)), settings.port) as url:
        yield url


def as_json(payload: Payload) -> dict[str, Any]:
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


async def encrypted_payloads(client: Client, stack: Stack, text: str) -> list[dict[str, Any]]:
    events = await raw_history(stack.temporal_address, await run_marker_workflow(client, text))
    return [as_json(p) for e in events for p in payloads_in(e)]


async def test_decode_returns_the_original_payloads(client: Client, stack: Stack, codec_url: str):
    text = marker()
    payloads = await encrypted_payloads(client, stack, text)
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{codec_url}/codec/decode",
            json={"payloads": payloads},
            headers={"authorization": f"Bearer {TOKEN}", "x-namespace": "default"},
        )
    assert r.status_code == 200, r.text
    decoded = r.json()["payloads"]
    assert len(decoded) == len(payloads)
    datas = [base64.b64decode(p.get("data", "")) for p in decoded]
    assert f'"{text}"'.encode() in datas
    assert f'"echo {text}"'.encode() in datas
    assert all(base64.b64decode(p["metadata"]["encoding"]) == b"json/plain" for p in decoded)


async def test_encode_then_decode_round_trips_over_http(codec_url: str):
    original = {
        "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
        "data": base64.b64encode(b'"hi"').decode(),
    }
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=codec_url) as http:
        encoded = (await http.post("/codec/encode", json={"payloads": [original]}, headers=auth)).json()
        assert base64.b64decode(encoded["payloads"][0]["metadata"]["encoding"]) == ENCODING
        decoded = (await http.post("/codec/decode", json=encoded, headers=auth)).json()
    assert decoded == {"payloads": [original]}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", TOKEN])
async def test_decode_without_the_token_is_401(codec_url: str, authorization: str | None):
    headers = {"authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{codec_url}/codec/decode", json={"payloads": []}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


async def test_the_ui_path_form_authenticates_with_the_token_in_the_path(codec_url: str):
    async with httpx.AsyncClient() as http:
        good = await http.post(f"{codec_url}/codec/ui/{TOKEN}/decode", json={"payloads": []})
        bad = await http.post(f"{codec_url}/codec/ui/not-the-token/decode", json={"payloads": []})
    assert (good.status_code, good.json()) == (200, {"payloads": []})
    assert bad.status_code == 401


async def test_preflight_from_the_ui_origin_is_allowed_with_the_needed_headers(codec_url: str):
    async with httpx.AsyncClient() as http:
        r = await http.options(
            f"{codec_url}/codec/decode",
            headers={
                "origin": UI_ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type,x-namespace",
            },
        )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == UI_ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-namespace"} <= allowed
    assert "POST" in r.headers["access-control-allow-methods"]


async def test_preflight_from_another_origin_gets_no_cors_grant(codec_url: str):
    async with httpx.AsyncClient() as http:
        r = await http.options(
            f"{codec_url}/codec/decode",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers


async def test_answers_to_the_ui_origin_carry_cors_headers_even_when_refused(codec_url: str):
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{codec_url}/codec/decode", json={"payloads": []}, headers={"origin": UI_ORIGIN})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == UI_ORIGIN


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[]", 400),
        (b'{"items": []}', 400),
        (b'{"payloads": [{"data": 5}]}', 400),
        (b'{"payloads": [null]}', 400),
        (b'{"payloads": [{"metadata": "x"}]}', 400),
    ],
)
async def test_malformed_requests_are_rejected_with_a_json_error(codec_url: str, body: bytes, status: int):
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{codec_url}/codec/decode", content=body, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == status
    assert r.json()["error"]["message"]


async def test_payload_under_an_unknown_key_is_422_naming_the_key(codec_url: str):
    foreign = {
        "metadata": {
            "encoding": base64.b64encode(ENCODING).decode(),
            "encryption-key-id": base64.b64encode(b"retired-key").decode(),
        },
        "data": base64.b64encode(b"\0" * 40).decode(),
    }
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{codec_url}/codec/decode", json={"payloads": [foreign]}, headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert r.status_code == 422
    assert "retired-key" in r.json()["error"]["message"]


async def test_another_namespace_is_not_served(codec_url: str):
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{codec_url}/codec/decode",
            json={"payloads": []},
            headers={"authorization": f"Bearer {TOKEN}", "x-namespace": "someone-else"},
        )
    assert r.status_code == 400
    assert "someone-else" in r.json()["error"]["message"]


async def test_codec_server_does_not_exist_without_a_token(http: httpx.AsyncClient):
    r = await http.post("/codec/decode", json={"payloads": []}, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404


def payload_bytes(document: Any) -> bytes:
    """Every payload's data in the CLI's JSON history (base64 there), decoded and joined."""
    if isinstance(document, dict):
        found = b""
        if isinstance(document.get("metadata"), dict) and isinstance(document.get("data"), str):
            found += base64.b64decode(document["data"])
        return found + b"".join(payload_bytes(v) for v in document.values())
    if isinstance(document, list):
        return b"".join(payload_bytes(v) for v in document)
    return b""


async def test_the_temporal_cli_shows_decrypted_history_through_the_codec_server(
    client: Client, stack: Stack, codec_url: str
):
    text = marker()
    workflow_id = await run_marker_workflow(client, text)
    show = [services.bin_path("temporal"), "workflow", "show", "-w", workflow_id, "--address", stack.temporal_address]
    show += ["--output", "json"]

    def history(*extra: str) -> bytes:
        done = subprocess.run([*show, *extra], capture_output=True, text=True, timeout=60, check=True)
        return payload_bytes(json.loads(done.stdout))

    without_codec = await asyncio.to_thread(history)
    with_codec = await asyncio.to_thread(
        history, "--codec-endpoint", f"{codec_url}/codec", "--codec-auth", f"Bearer {TOKEN}"
    )
    assert text.encode() not in without_codec
    assert f'"echo {text}"'.encode() in with_codec


# --- `hookyard dev` wires the Temporal UI to the codec server -------------------------------


def test_dev_stack_points_the_temporal_ui_at_the_codec_server(tmp_path: Path):
    from tests.integration.test_dev_stack import _start, _stop, _wait_ready

    names = ("port", "postgres-port", "redis-port", "temporal-port", "temporal-ui-port")
    names += ("dispatcher-metrics-port", "worker-metrics-port")
    ports = {name: services.free_port() for name in names}
    api, ui = f"http://127.0.0.1:{ports['port']}", f"http://127.0.0.1:{ports['temporal-ui-port']}"
    proc = _start(tmp_path, ports)
    try:
        _wait_ready(api, proc)
        token_file = tmp_path / "codec.token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o077 == 0
        endpoint = httpx.get(f"{ui}/api/v1/settings", timeout=10).json()["Codec"]["Endpoint"]
        assert endpoint == f"{api}/codec/ui/{token}"
        # What the UI's browser code does: a preflight, then POST {endpoint}/decode from its origin.
        preflight = httpx.options(
            f"{endpoint}/decode", headers={"origin": ui, "access-control-request-method": "POST"}, timeout=10
        )
        assert preflight.headers["access-control-allow-origin"] == ui
        decoded = httpx.post(
            f"{endpoint}/decode", json={"payloads": []}, headers={"origin": ui, "x-namespace": "default"}, timeout=10
        )
        assert decoded.status_code == 200
        assert decoded.headers["access-control-allow-origin"] == ui
    finally:
        out = _stop(proc)
    assert str(token_file) in out
    assert token not in out  # the banner says where the token is, never the token itself
