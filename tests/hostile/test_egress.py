"""An owner cannot reach inside the deployment through an action's outbound request.

Unit tests pin the address classification and the allow list; the integration tests run
`http.request` workflows through the real dispatcher and worker with the allow list set to
one loopback port, and a guard that fails any connection to a non-loopback address, so no
test ever sends traffic beyond this machine.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpcore
import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from actions import gmail, novu
from actions.base import ActionContext, Credential
from actions.egress import (
    DENIED,
    DENY_SETTING,
    LOOPBACK,
    EgressBackend,
    EgressPolicy,
    EgressRefused,
    EgressTransport,
    ResponseTooLarge,
    classify,
    guarded_client,
    numeric_address,
)
from actions.errors import RetryableActionError
from hookyard import services
from hookyard.dev import dev_egress_allow, dev_egress_deny, egress_summary
from oauth.crypto import Keyring
from schemas import db
from settings import Settings, SettingsError, load_settings
from settings.egress import parse_allow
from tests.conftest import Owner, Receiver, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send

# --- the classification ---------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("10.0.0.1", "private address (RFC 1918)"),
    ("172.16.5.4", "private address (RFC 1918)"),
    ("192.168.1.1", "private address (RFC 1918)"),
    ("fc00::1", "private address (IPv6 ULA)"),
    ("fd12:3456::1", "private address (IPv6 ULA)"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("192.0.2.1", "documentation"),
    ("2001:db8::1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("100::1", "reserved"),
    ("::ffff:127.0.0.1", "loopback address in IPv4-mapped form"),
    ("::ffff:169.254.169.254", "cloud metadata service) in IPv4-mapped form"),
    ("::127.0.0.1", "loopback address in IPv4-compatible form"),
    ("64:ff9b::a00:1", "private address (RFC 1918) in NAT64 form"),
    ("2002:7f00:1::", "loopback address in 6to4 form"),
    ("2002:a9fe:a9fe::", "cloud metadata service) in 6to4 form"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_internal_addresses_are_refused_by_default_and_named(address: str, reason: str) -> None:
    refusal = classify(ipaddress.ip_address(address))
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"])
def test_public_addresses_are_allowed_by_default(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.1", "0177.0.0.1", "0x7f000001", "127.0.1"])
def test_numeric_host_forms_are_read_as_the_loopback_address(host: str) -> None:
    address = numeric_address(host)
    assert address is not None
    assert address.is_loopback
    assert classify(address) == "a loopback address"


@given(st.ip_addresses(v=4))
def test_every_numeric_spelling_of_an_address_is_judged_as_that_address(address: ipaddress.IPv4Address) -> None:
    value = int(address)
    a, b, c, d = address.packed
    spellings = [
        str(value),  # 2130706433
        hex(value),  # 0x7f000001
        f"{a}.{(b << 16) | (c << 8) | d}",  # 127.1
        f"{a}.{b}.{(c << 8) | d}",  # 127.0.1
        f"{a:#x}.{b}.{c}.{d}",  # 0x7f.0.0.1
        f"0{a:o}.{b}.{c}.{d}",  # 0177.0.0.1
    ]
    for spelling in spellings:
        assert numeric_address(spelling) == address, spelling
        assert classify(numeric_address(spelling)) == classify(address)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["example.com", "localhost", "127.0.0.1.nip.io", "08.0.0.1"])
def test_names_are_not_numeric_hosts(host: str) -> None:
    assert numeric_address(host) is None


@given(st.ip_addresses(v=4))
def test_ipv4_classification_agrees_with_the_registry(address: ipaddress.IPv4Address) -> None:
    # Everything allowed is globally routable unicast; nothing the registry calls non-global passes.
    if classify(address) is None:
        assert address.is_global and not address.is_multicast
    if not address.is_global:
        assert classify(address) is not None


def _embeds_ipv4(address: ipaddress.IPv6Address) -> bool:
    return (
        address.ipv4_mapped is not None
        or address.sixtofour is not None
        or address in ipaddress.ip_network("64:ff9b::/96")
        or (address in ipaddress.ip_network("::/96") and int(address) > 1)
    )


@given(st.ip_addresses(v=6).filter(lambda a: not _embeds_ipv4(a)))
def test_ipv6_classification_agrees_with_the_registry(address: ipaddress.IPv6Address) -> None:
    if classify(address) is None:
        assert address.is_global and not address.is_multicast
        assert address in ipaddress.ip_network("2000::/3")
    if not address.is_global:
        assert classify(address) is not None


@given(st.ip_addresses(v=4))
def test_ipv6_forms_carrying_an_ipv4_address_are_judged_by_it(address: ipaddress.IPv4Address) -> None:
    refused = classify(address) is not None
    value = int(address)
    forms = [
        ipaddress.IPv6Address((0xFFFF << 32) | value),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address((0x64FF9B << 96) | value),  # 64:ff9b::a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),  # 2002:aabb:ccdd::
    ]
    if value > 1:
        forms.append(ipaddress.IPv6Address(value))  # ::a.b.c.d
    for form in forms:
        assert (classify(form) is not None) == refused, form


# --- the allow list ------------------------------------------------------------------------


def test_no_exceptions_are_allowed_unless_configured() -> None:
    settings = load_settings({})
    assert settings.egress_allow == ()
    assert Settings().egress_allow == ()
    assert EgressPolicy(settings.egress_allow).refusal(ipaddress.ip_address("127.0.0.1"), 80) is not None


def test_allow_list_reads_cidrs_hosts_and_ports() -> None:
    rules = load_settings(
        {"HOOKYARD_EGRESS_ALLOW": "10.0.0.0/8, 127.0.0.1:9000,receiver.internal:8443,[::1]:9001,fd00::/8,ci.local"}
    ).egress_allow
    assert [str(rule) for rule in rules] == [
        "10.0.0.0/8",
        "127.0.0.1/32:9000",
        "receiver.internal:8443",
        "[::1/128]:9001",
        "fd00::/8",
        "ci.local",
    ]
    policy = EgressPolicy(rules)
    assert policy.refusal(ipaddress.ip_address("10.1.2.3"), 5432) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 9000) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 9002) is not None
    assert policy.refusal(ipaddress.ip_address("::1"), 9001) is None
    assert policy.refusal(ipaddress.ip_address("::1"), 9000) is not None
    assert policy.allows_host("Receiver.Internal.", 8443)
    assert not policy.allows_host("receiver.internal", 443)
    assert policy.allows_host("ci.local", 1)


@pytest.mark.parametrize(
    "entry",
    ["10.0.0.0/33", "127.0.0.1:0", "127.0.0.1:99999", "host:", "[::1", "[::1]9000", "bad_host!", "127.1", "a..b"],
)
def test_unreadable_allow_entry_is_a_settings_error_naming_it(entry: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HOOKYARD_EGRESS_ALLOW": f"127.0.0.1:9000,{entry}"})
    assert "HOOKYARD_EGRESS_ALLOW" in str(caught.value)
    assert repr(entry) in str(caught.value)


@given(st.text(max_size=40))
def test_allow_list_parser_either_reads_or_names_the_problem(value: str) -> None:
    try:
        rules = parse_allow(value)
    except ValueError as exc:
        assert "HOOKYARD_EGRESS_ALLOW" in str(exc)
    else:
        assert all(rule.network is not None or rule.host for rule in rules)


# --- the backend: check after resolving, connect to what was checked -----------------------


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records connection attempts and makes none."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []
        self.server_hostnames: list[str | None] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, **_: Any) -> Any:
        self.connects.append((host, port))
        return _FakeStream(self)

    async def sleep(self, seconds: float) -> None:
        return None


class _FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, backend: RecordingBackend) -> None:
        self._backend = backend

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        self._backend.server_hostnames.append(server_hostname)
        raise httpcore.ConnectError("stop here")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise httpcore.ReadError("nothing here")

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise httpcore.WriteError("nothing here")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "169.254.169.254", "[fd00:ec2::254]", "[::ffff:10.0.0.1]", "100.64.0.1", "0.0.0.0", "127.1"]
)
async def test_refused_address_is_never_connected_to(host: str) -> None:
    inner = RecordingBackend()
    backend = EgressBackend(EgressPolicy(LOOPBACK[1:]), inner)  # ::1 only
    with pytest.raises(EgressRefused, match="egress refused"):
        await backend.connect_tcp(host.strip("[]"), 80)
    assert inner.connects == []


async def test_connection_goes_to_the_checked_address_and_tls_names_the_host() -> None:
    inner = RecordingBackend()
    backend = EgressBackend(EgressPolicy(parse_allow("127.0.0.1:8443")), inner)
    pool = httpcore.AsyncConnectionPool(network_backend=backend)
    with pytest.raises(httpcore.ConnectError, match="stop here"):
        await pool.request("GET", "https://localhost:8443/")
    # The resolved, checked address is dialled (never the name again); SNI and certificate
    # verification use the name from the URL.
    assert inner.connects == [("127.0.0.1", 8443)]
    assert inner.server_hostnames == ["localhost"]


async def test_refusal_names_the_rule_and_not_the_resolved_address() -> None:
    with pytest.raises(EgressRefused) as caught:
        await EgressBackend(EgressPolicy(), RecordingBackend()).connect_tcp("localhost", 9)
    message = str(caught.value)
    assert message == (
        "egress refused: localhost:9 resolves to a loopback address; allow it with HOOKYARD_EGRESS_ALLOW"
    )


async def test_unix_sockets_are_refused() -> None:
    with pytest.raises(EgressRefused):
        await EgressBackend(EgressPolicy(LOOPBACK)).connect_unix_socket("/run/docker.sock")


async def test_respx_mocks_the_pool_so_respx_tests_never_reach_the_backend() -> None:
    # Unit tests of provider actions use respx; they exercise the actions, not this guard.
    async with guarded_client(EgressPolicy()) as client, respx.mock:
        respx.get("http://127.0.0.1/").respond(204)
        assert (await client.get("http://127.0.0.1/")).status_code == 204


async def test_guarded_client_ignores_proxy_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://203.0.113.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://203.0.113.1:3128")
    async with guarded_client(EgressPolicy()) as client:
        with pytest.raises(EgressRefused, match=r"127\.0\.0\.1:9 is a loopback address"):
            await client.get("http://127.0.0.1:9/")
        assert client.follow_redirects is False


# --- end to end: http.request workflows through the real dispatcher and worker -------------


class LoopbackOnly:
    """Stands under the guard in this module: any non-loopback dial is recorded and refused."""

    def __init__(self) -> None:
        self.attempts: list[str] = []


@pytest.fixture(scope="module")
def loopback_only() -> Iterator[LoopbackOnly]:
    guard = LoopbackOnly()
    original = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self: httpcore.AnyIOBackend, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if not ipaddress.ip_address(host).is_loopback:
            guard.attempts.append(host)
            raise httpcore.ConnectError("tests never leave this machine")
        return await original(self, host, port, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
        yield guard


@pytest.fixture(scope="module")
async def trap() -> AsyncIterator[Receiver]:
    """A loopback server no refused request may reach."""
    r = Receiver()
    async with serve(r.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        r.url = url
        yield r


@pytest.fixture(scope="module")
async def guarded_pipeline(
    settings: Settings, keyring: Keyring, base_url: str, receiver: Receiver, loopback_only: LoopbackOnly
) -> AsyncIterator[Settings]:
    """Dispatcher and worker whose egress allows only the receiver's port on 127.0.0.1."""
    import asyncio

    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    port = httpx.URL(receiver.url).port
    guarded = settings.replace(egress_allow=parse_allow(f"127.0.0.1:{port}"))
    stop = asyncio.Event()
    dpool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    tasks = [
        asyncio.create_task(Dispatcher(dpool, guarded).run(stop)),
        asyncio.create_task(run_worker(guarded, keyring, stop)),
    ]
    await asyncio.sleep(0.5)
    for task in tasks:
        if task.done():
            task.result()
    yield guarded
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await dpool.close()


async def _run_once(owner: Owner, http: httpx.AsyncClient, url: str, **action: Any) -> dict[str, Any]:
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], url, action=action or None)
    response = await send(http, endpoint, b'{"p": "x"}')
    assert response.status_code == 202, response.text
    [execution] = await wait_for(
        lambda: _finished(owner.client, workflow["id"]),
    )
    return execution


async def _finished(client: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    return [e for e in await executions(client, workflow_id) if e["status"] in {"succeeded", "failed"}]


def _path() -> str:
    return f"/t/{uuid.uuid4().hex}"


SSRF_HOSTS = [
    ("127.0.0.1:{trap}", "is a loopback address"),
    ("localhost:{trap}", "resolves to a loopback address"),
    ("[::1]:{trap}", "is a loopback address"),
    ("0.0.0.0:{trap}", "is an unspecified address"),
    ("2130706433:{trap}", "is a loopback address"),
    ("127.1:{trap}", "is a loopback address"),
    ("0x7f.1:{trap}", "is a loopback address"),
    ("[::ffff:127.0.0.1]:{trap}", "is a loopback address in IPv4-mapped form"),
    ("127.0.0.1:{other}", "is a loopback address"),
    ("169.254.169.254", "is a link-local address (cloud metadata service)"),
    ("10.0.0.1", "is a private address (RFC 1918)"),
]


@pytest.mark.usefixtures("guarded_pipeline")
@pytest.mark.parametrize(("host", "reason"), SSRF_HOSTS)
async def test_request_to_an_internal_address_fails_clearly_and_nothing_leaves(
    owner: Owner, http: httpx.AsyncClient, trap: Receiver, loopback_only: LoopbackOnly, host: str, reason: str
) -> None:
    trap_port = httpx.URL(trap.url).port
    target = "http://" + host.format(trap=trap_port, other=services.free_port()) + _path()
    execution = await _run_once(owner, http, target)
    assert execution["status"] == "failed"
    assert execution["attempts"] == 1  # not retried
    assert execution["error"].startswith("egress refused: ")
    assert reason in execution["error"]
    assert execution["error"].endswith("allow it with HOOKYARD_EGRESS_ALLOW")
    assert trap.requests == []
    assert loopback_only.attempts == []  # refused before any connection was tried


@pytest.mark.usefixtures("guarded_pipeline")
async def test_octal_host_form_fails_clearly(owner: Owner, http: httpx.AsyncClient, trap: Receiver) -> None:
    port = httpx.URL(trap.url).port
    execution = await _run_once(owner, http, f"http://0177.0.0.1:{port}/x")
    assert execution["status"] == "failed"
    assert execution["attempts"] == 1
    assert "not a valid URL" in execution["error"]
    assert trap.requests == []


@pytest.mark.usefixtures("guarded_pipeline")
async def test_the_allowed_loopback_port_is_reached(owner: Owner, http: httpx.AsyncClient, receiver: Receiver) -> None:
    target = _path()
    execution = await _run_once(owner, http, receiver.url + target)
    assert execution["status"] == "succeeded", execution
    assert len(receiver.to(target)) == 1


@pytest.mark.usefixtures("guarded_pipeline")
async def test_a_name_is_reached_only_at_its_allowed_address(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    # localhost is 127.0.0.1 and ::1; only 127.0.0.1 on this port is allowed, so that is dialled.
    target = _path()
    port = httpx.URL(receiver.url).port
    execution = await _run_once(owner, http, f"http://localhost:{port}{target}")
    assert execution["status"] == "succeeded", execution
    assert len(receiver.to(target)) == 1


@pytest.mark.usefixtures("guarded_pipeline")
async def test_redirect_to_a_private_address_is_recorded_not_followed(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver, loopback_only: LoopbackOnly
) -> None:
    target, followed = _path(), _path()
    # Even a redirect to an allowed place is not followed; to 169.254.169.254 nothing is tried.
    receiver.script(target, (302, {"location": "http://169.254.169.254/latest/meta-data/"}))
    execution = await _run_once(owner, http, receiver.url + target)
    assert execution["status"] == "failed"
    assert execution["result"]["status_code"] == 302
    assert execution["attempts"] == 1
    receiver.script(target, (302, {"location": receiver.url + followed}))
    execution = await _run_once(owner, http, receiver.url + target)
    assert execution["result"]["status_code"] == 302
    assert receiver.to(followed) == []
    assert loopback_only.attempts == []


@pytest.mark.usefixtures("guarded_pipeline")
async def test_response_excerpt_is_capped_and_holds_no_headers(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    target = _path()
    receiver.bodies[target] = b"y" * 10_000
    receiver.script(target, (200, {"x-internal-token": "hdr-secret-value"}))
    execution = await _run_once(owner, http, receiver.url + target)
    assert execution["status"] == "succeeded"
    assert set(execution["result"]) == {"status_code", "duration_ms", "response_body"}
    assert execution["result"]["response_body"] == "y" * 2048
    assert "hdr-secret-value" not in str(execution)


@pytest.mark.usefixtures("guarded_pipeline")
@pytest.mark.parametrize("injected", ["a\r\nHost: evil", "a\nb", "a\x1bb", "a\x7fb"])
async def test_control_character_in_a_templated_url_fails_clearly(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver, injected: str
) -> None:
    endpoint = await create_endpoint(owner.client)
    url = receiver.url + "/crlf/{{ trigger.body.p }}"
    workflow = await create_workflow(owner.client, endpoint["id"], url)
    body = httpx.Request("POST", "http://x", json={"p": injected}).content
    assert (await send(http, endpoint, body)).status_code == 202
    [execution] = await wait_for(lambda: _finished(owner.client, workflow["id"]))
    assert execution["status"] == "failed"
    assert execution["attempts"] == 1
    assert execution["error"] == "url contains a control character after templating"


@pytest.mark.usefixtures("guarded_pipeline")
@pytest.mark.parametrize("injected", ["v\r\nX-Injected: 1", "v\nw", "v\x1b"])
async def test_control_character_in_a_templated_header_fails_clearly(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver, injected: str
) -> None:
    endpoint = await create_endpoint(owner.client)
    target = _path()
    workflow = await create_workflow(
        owner.client, endpoint["id"], receiver.url + target, action={"headers": {"x-note": "{{ trigger.body.p }}"}}
    )
    body = httpx.Request("POST", "http://x", json={"p": injected}).content
    assert (await send(http, endpoint, body)).status_code == 202
    [execution] = await wait_for(lambda: _finished(owner.client, workflow["id"]))
    assert execution["status"] == "failed"
    assert execution["attempts"] == 1
    assert execution["error"] == "header 'x-note' contains a control character after templating"
    assert receiver.to(target) == []


# --- provider actions and clients that cannot take the backend ------------------------------


class _Account:
    def __init__(self, provider: str, secret: dict[str, str]) -> None:
        self.provider, self.secret = provider, secret

    async def load(self, credential_id: str, providers: Any) -> Credential:
        return Credential(credential_id, self.provider, self.secret, "me@example.com")

    async def call(self, credential_id: str, providers: Any, use: Any) -> Any:
        return await use(await self.load(credential_id, providers))


def _context(client: httpx.AsyncClient, account: _Account, **extra: Any) -> ActionContext:
    return ActionContext(
        http=client,
        execution_id=str(uuid.uuid4()),
        attempt=1,
        template_context={},
        credential_id=str(uuid.uuid4()),
        credentials=account,
        **extra,
    )


@pytest.mark.parametrize("base_url", ["http://169.254.169.254", "http://[fd00:ec2::254]", "http://10.0.0.1:8080"])
async def test_novu_base_url_goes_through_the_guard(base_url: str) -> None:
    inner = RecordingBackend()
    async with httpx.AsyncClient(transport=EgressTransport(EgressPolicy(), inner=inner)) as client:
        ctx = _context(client, _Account("novu", {"api_key": "nv-test"}))
        with pytest.raises(EgressRefused, match="egress refused"):
            await novu.run(ctx, {"workflow_id": "w", "to": "subscriber-1", "base_url": base_url})
    assert inner.connects == []


async def test_unresolvable_api_base_is_retried_not_refused() -> None:
    with pytest.raises(RetryableActionError, match="cannot resolve"):
        await EgressPolicy().check_url("https://no-such-host.invalid/")


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9/", "http://169.254.169.254/", "http://10.0.0.1:8080/"])
async def test_gmail_send_goes_through_the_guard(base_url: str) -> None:
    inner = RecordingBackend()
    async with httpx.AsyncClient(transport=EgressTransport(EgressPolicy(), inner=inner)) as client:
        account = _Account("google", {"access_token": "ya29.test"})
        ctx = _context(client, account, api_bases={"gmail": base_url})
        with pytest.raises(EgressRefused, match="egress refused"):
            await gmail.run(ctx, {"to": "a@example.com", "subject": "s", "text": "t"})
    assert inner.connects == []


# --- hookyard dev --------------------------------------------------------------------------


def test_dev_stack_allows_loopback_when_the_environment_sets_nothing() -> None:
    allow = dev_egress_allow({})
    policy = EgressPolicy(load_settings({"HOOKYARD_EGRESS_ALLOW": allow}).egress_allow)
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 9000) is None
    assert policy.refusal(ipaddress.ip_address("::1"), 9000) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1"), 9000) is not None
    assert egress_summary(allow) == "public addresses + 127.0.0.0/8,::1"


def test_dev_stack_keeps_the_allow_list_of_its_environment() -> None:
    allow = dev_egress_allow({"HOOKYARD_EGRESS_ALLOW": "127.0.0.1:9000"})
    assert allow == "127.0.0.1:9000"
    policy = EgressPolicy(load_settings({"HOOKYARD_EGRESS_ALLOW": allow}).egress_allow)
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 9000) is None
    for port in (8000, 8233, 7233, 9001, 9100):
        assert policy.refusal(ipaddress.ip_address("127.0.0.1"), port) is not None
    assert policy.refusal(ipaddress.ip_address("::1"), 9000) is not None
    assert egress_summary(dev_egress_allow({"HOOKYARD_EGRESS_ALLOW": ""})) == "public addresses only"


def test_a_denied_port_is_refused_even_inside_an_allowed_range() -> None:
    policy = EgressPolicy(parse_allow("127.0.0.0/8"), parse_allow("127.0.0.0/8:7233", DENY_SETTING))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 9000) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 7233) == DENIED
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1"), 7233) == DENIED


async def test_a_denied_target_is_refused_by_name_too_and_says_which_setting() -> None:
    policy = EgressPolicy(parse_allow("localhost"), parse_allow("127.0.0.0/8:7233,[::1]:7233", DENY_SETTING))
    with pytest.raises(EgressRefused, match="HOOKYARD_EGRESS_DENY") as refused:
        await policy.resolve("localhost", 7233)
    assert "allow it" not in str(refused.value)
    assert await policy.resolve("localhost", 9000)


def test_dev_stack_denies_its_own_ports_on_both_loopbacks_and_keeps_the_environments_list() -> None:
    deny = dev_egress_deny([8000, 7233], {"HOOKYARD_EGRESS_DENY": "127.0.0.1:9999"})
    policy = EgressPolicy(
        load_settings({"HOOKYARD_EGRESS_ALLOW": dev_egress_allow({})}).egress_allow,
        load_settings({"HOOKYARD_EGRESS_DENY": deny}).egress_deny,
    )
    for port in (8000, 7233, 9999):
        assert policy.refusal(ipaddress.ip_address("127.0.0.1"), port) == DENIED
    for port in (8000, 7233):
        assert policy.refusal(ipaddress.ip_address("::1"), port) == DENIED
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 9000) is None


def test_a_bad_deny_entry_names_the_deny_setting() -> None:
    with pytest.raises(SettingsError, match="HOOKYARD_EGRESS_DENY: entry 'no such'"):
        load_settings({"HOOKYARD_EGRESS_DENY": "no such"})


# --- response size -------------------------------------------------------------------------


def _bulky_app() -> Any:
    import gzip

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # ~64 KiB on the wire, 64 MiB decoded
    seen: dict[str, str] = {}

    async def endless(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(1024):  # 64 MiB in all, if anyone read it
                yield b"x" * 65536

        return StreamingResponse(chunks())

    async def zipped(request: Request) -> Response:
        seen["accept-encoding"] = request.headers.get("accept-encoding", "")
        return Response(bomb, headers={"content-encoding": "gzip"})

    app = Starlette(routes=[Route("/endless", endless), Route("/zipped", zipped)])
    app.state.seen, app.state.bomb = seen, bomb
    return app


async def test_a_response_larger_than_the_cap_fails_without_being_read_whole() -> None:
    app, port = _bulky_app(), services.free_port()
    transport = EgressTransport(EgressPolicy(LOOPBACK), max_response_bytes=1024 * 1024)
    async with serve(app, port) as url, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ResponseTooLarge, match="larger than 1048576 bytes"):
            await client.get(f"{url}/endless")


async def test_a_compressed_response_is_neither_asked_for_nor_expanded() -> None:
    app, port = _bulky_app(), services.free_port()
    async with serve(app, port) as url, guarded_client(EgressPolicy(LOOPBACK)) as client:
        response = await client.get(f"{url}/zipped")
    assert app.state.seen["accept-encoding"] == "identity"
    assert response.content == app.state.bomb  # the raw bytes, not 64 MiB of zeros
