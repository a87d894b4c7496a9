"""The egress policy: where owners' outbound requests may connect.

Owners choose the URLs their actions call, so a URL is hostile: it may name the loopback
interface, the cluster network or the cloud metadata service. Every outbound request of an
action therefore goes through `EgressBackend`, an httpcore network backend that resolves the
host itself, checks every resolved address against the policy, and connects to an address it
checked (never resolving again, so DNS rebinding cannot slip between check and connect). TLS
still verifies and sends SNI for the hostname in the URL: httpcore passes it to `start_tls`.

By default only globally routable unicast addresses are allowed. `HOOKYARD_EGRESS_ALLOW`
adds exceptions: CIDRs (any port), `cidr:port`, `host` and `host:port` (IPv6 in brackets
when a port follows: `[::1]:9000`). A host entry matches the name written in the URL, so
`receiver.internal:443` allows that service wherever it resolves.

The classification follows the address registries (RFC 6890 and its successors): loopback,
private (RFC 1918, IPv6 ULA), link-local (incl. cloud metadata services), CGNAT, multicast,
unspecified, documentation, benchmarking and reserved ranges are refused. IPv6 forms that
carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by the IPv4
address inside; Teredo, whose embedded addresses are obfuscated, is refused outright.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from actions.errors import PermanentActionError, RetryableActionError
from settings.egress import SETTING, AllowRule, IPAddress, IPNetwork, parse_allow

DENY_SETTING = "HOOKYARD_EGRESS_DENY"
# Why a denied target is refused: the deployment's own listeners, whatever else is allowed.
DENIED = f"a port this deployment keeps for itself ({DENY_SETTING})"


class EgressRefused(PermanentActionError):
    """The policy refuses the target; retrying cannot help until the operator allows it."""


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# (what the range is, its networks), checked in order: the first match names the refusal.
_V4_REFUSED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("an unspecified address (0.0.0.0/8)", _nets("0.0.0.0/8")),
    ("a loopback address", _nets("127.0.0.0/8")),
    ("a private address (RFC 1918)", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("a shared address (CGNAT, RFC 6598)", _nets("100.64.0.0/10")),
    ("a link-local address (cloud metadata service)", _nets("169.254.169.254/32")),
    ("a link-local address", _nets("169.254.0.0/16")),
    ("a documentation address", _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    ("a benchmarking address (RFC 2544)", _nets("198.18.0.0/15")),
    ("a multicast address", _nets("224.0.0.0/4")),
    ("a reserved address", _nets("192.0.0.0/24", "192.88.99.0/24", "240.0.0.0/4")),
)
_V6_REFUSED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("an unspecified address (::)", _nets("::/128")),
    ("a loopback address", _nets("::1/128")),
    ("a link-local address (cloud metadata service)", _nets("fd00:ec2::254/128")),
    ("a private address (IPv6 ULA)", _nets("fc00::/7")),
    ("a link-local address", _nets("fe80::/10")),
    ("a site-local address (deprecated, RFC 3879)", _nets("fec0::/10")),
    ("a multicast address", _nets("ff00::/8")),
    ("a Teredo address (embeds an obfuscated IPv4 address)", _nets("2001::/32")),
    ("a documentation address", _nets("2001:db8::/32", "3fff::/20")),
    ("a benchmarking address (RFC 5180)", _nets("2001:2::/48")),
    ("a reserved address", _nets("64:ff9b:1::/48", "100::/64", "2001::/23")),
)
# Everything outside global unicast (2000::/3) is unassigned or special-purpose.
_V6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def classify(address: IPAddress) -> str | None:
    """Why the default policy refuses `address` (e.g. "a loopback address"), or None if allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded, form = _embedded_ipv4(address)
        if embedded is not None:
            reason = classify(embedded)
            return None if reason is None else f"{reason} in {form} form"
        return _first_match(address, _V6_REFUSED) or (None if address in _V6_GLOBAL_UNICAST else "a reserved address")
    return _first_match(address, _V4_REFUSED)


def _first_match(address: IPAddress, table: Iterable[tuple[str, tuple[IPNetwork, ...]]]) -> str | None:
    for reason, networks in table:
        if any(address in network for network in networks):
            return reason
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    """The IPv4 address an IPv6 form carries, so `::ffff:127.0.0.1` is judged as 127.0.0.1."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-compatible"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    return None, ""


LOOPBACK: tuple[AllowRule, ...] = parse_allow("127.0.0.0/8,::1")


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The default refusals plus the operator's exceptions; `deny` beats everything."""

    allow: tuple[AllowRule, ...] = ()
    # Targets refused even where `allow` admits their range (the dev stack's own ports on
    # loopback), so an owner's action cannot talk to Temporal, PostgreSQL or the metrics.
    deny: tuple[AllowRule, ...] = ()

    def allows_host(self, host: str, port: int) -> bool:
        """Whether an entry names this host (as written in the URL) on this port."""
        name = host.lower().rstrip(".")
        return any(rule.host == name and rule.port in (None, port) for rule in self.allow)

    def refusal(self, address: IPAddress, port: int) -> str | None:
        """Why a connection to `address:port` is refused, or None if it is allowed."""
        if _matches(self.deny, address, port):
            return DENIED
        reason = classify(address)
        if reason is None or _matches(self.allow, address, port):
            return None
        return reason

    async def resolve(self, host: str, port: int, timeout_s: float | None = None) -> list[IPAddress]:
        """The addresses of `host` this policy lets a connection reach, in resolver order.

        Raises `EgressRefused` naming the rule (never the resolved address, which may be
        internal) when none is allowed.
        """
        numeric = numeric_address(host)
        if numeric is not None:
            addresses = [numeric]
        else:
            addresses = await _lookup(host, port, timeout_s)
            if self.allows_host(host, port):
                addresses = [address for address in addresses if not _matches(self.deny, address, port)]
                if addresses:
                    return addresses
                raise EgressRefused(f"egress refused: {_shown(host)}:{port} is {DENIED}")
        allowed = [address for address in addresses if self.refusal(address, port) is None]
        if allowed:
            return allowed
        reason = self.refusal(addresses[0], port)
        verb = "is" if numeric is not None else "resolves to"
        hint = "" if reason == DENIED else f"; allow it with {SETTING}"
        raise EgressRefused(f"egress refused: {_shown(host)}:{port} {verb} {reason}{hint}")

    async def check_url(self, url: str, timeout_s: float | None = 10.0) -> None:
        """Check a URL's host and port, for clients that cannot connect through the backend."""
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            await self.resolve(parsed.host, port, timeout_s)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            raise RetryableActionError(str(exc)) from None


def _matches(rules: Iterable[AllowRule], address: IPAddress, port: int) -> bool:
    """Whether a network rule covers the address (or the IPv4 address inside it) on this port."""
    candidates = (address, _unwrapped(address))
    return any(
        rule.network is not None and rule.port in (None, port) and any(c in rule.network for c in candidates)
        for rule in rules
    )


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _unwrapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        embedded, _ = _embedded_ipv4(address)
        if embedded is not None:
            return embedded
    return address


def numeric_address(host: str) -> IPAddress | None:
    """The address a numeric host means, in every form the C resolver accepts.

    `2130706433`, `127.1`, `0x7f.1` and `0177.0.0.1` all mean 127.0.0.1 to `inet_aton`, which
    `getaddrinfo` uses; asking it with AI_NUMERICHOST gives the same reading without any DNS.
    """
    try:
        info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(info[0][4][0]).partition("%")[0])


async def _lookup(host: str, port: int, timeout_s: float | None) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}") from exc
    seen: dict[IPAddress, None] = {}
    for info in infos:
        # A scoped IPv6 address ("fe80::1%eth0") is link-local whatever its scope.
        seen.setdefault(ipaddress.ip_address(str(info[4][0]).partition("%")[0]), None)
    if not seen:
        raise httpcore.ConnectError(f"cannot resolve {host}")
    return list(seen)


class EgressBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, then connects to a checked address through the default backend."""

    def __init__(self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to the first reachable allowed address of `host` (TLS later uses `host`)."""
        addresses = await self.policy.resolve(host, port, timeout)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # resolve() returns at least one address
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a Unix socket is always local."""
        raise EgressRefused(f"egress refused: Unix sockets are local; {SETTING} cannot allow them")

    async def sleep(self, seconds: float) -> None:
        """As the default backend."""
        await self._inner.sleep(seconds)


# Most bytes of one response an action may read; actions keep excerpts, so this only stops a
# hostile target from filling the worker's memory.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class ResponseTooLarge(PermanentActionError):
    """A target sent more than the worker reads of one response."""


class _CappedStream(httpx.AsyncByteStream):
    """A response body that raises `ResponseTooLarge` past `limit` bytes, before holding them."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, host: str) -> None:
        self._inner, self._limit, self._host = inner, limit, host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"{self._host} sent a response larger than {self._limit} bytes; not read")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class EgressTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool built on `EgressBackend`, and no proxy.

    Responses are read up to `max_response_bytes` and never decompressed: requests ask for
    `identity`, and a `content-encoding` a target sends anyway is dropped before httpx would
    decode it, so a small compressed body cannot expand into gigabytes in the worker.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        limits: httpx.Limits | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(limits=limits, trust_env=False)
        self._max_response_bytes = max_response_bytes
        # Only the pool changes: httpx's request and error mapping stay as they are.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=EgressBackend(policy, inner),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send with `accept-encoding: identity`; cap the body and leave it undecoded."""
        request.headers["accept-encoding"] = "identity"
        response = await super().handle_async_request(request)
        if "content-encoding" in response.headers:
            del response.headers["content-encoding"]
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._max_response_bytes, request.url.host)
        return response


def guarded_client(policy: EgressPolicy, *, limits: httpx.Limits | None = None) -> httpx.AsyncClient:
    """The client actions get: every connection checked, no redirects, no proxy from the environment."""
    transport = EgressTransport(policy, limits=limits)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
