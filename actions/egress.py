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
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import httpcore
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

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
    """httpx's transport, every connection checked by the egress policy, and no proxy.

    Requests go through aiohttp's connection pool, whose resolver is the policy
    (`_EgressResolver`: it resolves, checks and hands aiohttp only allowed addresses to dial;
    address literals, which aiohttp dials without asking its resolver, are checked before the
    request). httpcore's pool, whose per-request housekeeping costs ~15x more CPU, is used
    only with an injected network backend (`inner`, built on `EgressBackend`), or when a test
    double (respx) has replaced httpcore's pool.

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
        ssl_context = httpx.create_ssl_context(trust_env=False)
        # Only the pool changes: httpx's request and error mapping stay as they are.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=EgressBackend(policy, inner),
        )
        self._engine = None if inner is not None else _AiohttpEngine(policy, limits, ssl_context, max_response_bytes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send with `accept-encoding: identity`; cap the body and leave it undecoded."""
        request.headers["accept-encoding"] = "identity"
        if self._engine is not None and httpcore.AsyncConnectionPool.handle_async_request is _HTTPCORE_POOL_SEND:
            return await self._engine.send(request)
        response = await super().handle_async_request(request)
        if "content-encoding" in response.headers:
            del response.headers["content-encoding"]
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._max_response_bytes, request.url.host)
        return response

    async def aclose(self) -> None:
        """Close both pools."""
        if self._engine is not None:
            await self._engine.aclose()
        await super().aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        """Close both pools (httpx's transport closes only its own on exit)."""
        if self._engine is not None:
            await self._engine.aclose()
        await super().__aexit__(exc_type, exc_value, traceback)


# httpcore's own pool method: respx replaces it on the class while it mocks.
_HTTPCORE_POOL_SEND = httpcore.AsyncConnectionPool.handle_async_request


class _EgressResolver(AbstractResolver):
    """aiohttp's resolver: the addresses of a host the policy allows (EgressRefused otherwise).

    aiohttp dials what this returns and nothing else, so a name cannot rebind between the
    check and the connection; TLS still verifies and sends SNI for the name in the URL.
    """

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve with the policy (aiohttp's connect timeout bounds the lookup)."""
        addresses = await self._policy.resolve(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to release."""


# How many checked (host, port) pairs are remembered before starting over.
_CHECKED_TARGETS = 4096


class _AiohttpEngine:
    """aiohttp's pool behind EgressTransport: one session, opened in the running event loop."""

    def __init__(self, policy: EgressPolicy, limits: httpx.Limits, ssl_context: ssl.SSLContext, cap: int) -> None:
        self._policy = policy
        self._limits = limits
        self._ssl_context = ssl_context
        self._cap = cap
        self._session: aiohttp.ClientSession | None = None
        # (host, port) pairs needing no check before aiohttp: the policy never changes.
        self._checked: set[tuple[str, int]] = set()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
                resolver=_EgressResolver(self._policy),
                ssl=self._ssl_context,
                ttl_dns_cache=10,
            )
            # No cookies kept, no proxy from the environment, bodies never decompressed.
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send one request; aiohttp's errors are raised as httpx's."""
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        target = (url.host, port)
        if target not in self._checked:
            if numeric_address(url.host) is not None:  # aiohttp dials literals without its resolver
                await self._policy.resolve(url.host, port)  # raises EgressRefused if refused
            if len(self._checked) >= _CHECKED_TARGETS:
                self._checked.clear()
            self._checked.add(target)  # an allowed literal, or a name the resolver checks
        timeout = request.extensions.get("timeout", {})
        connect, pool = timeout.get("connect"), timeout.get("pool")
        limits = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=timeout.get("read"),
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        body = await request.aread()
        try:
            response = await self._open().request(
                request.method,
                yarl.URL(str(url), encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=limits,
            )
        except (EgressRefused, ResponseTooLarge):
            raise
        except Exception as exc:
            raise _as_httpx(exc, request, connecting=True) from exc
        raw = [(k, v) for k, v in response.raw_headers if k.lower() != b"content-encoding"]
        return httpx.Response(
            response.status,
            headers=raw,
            stream=_AiohttpBody(response, request, self._cap),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()


class _AiohttpBody(httpx.AsyncByteStream):
    """An aiohttp response body: capped like `_CappedStream`, errors raised as httpx's."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request, limit: int) -> None:
        self._response, self._request, self._limit = response, request, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        try:
            async for chunk in self._response.content.iter_any():
                seen += len(chunk)
                if seen > self._limit:
                    self._response.close()  # the rest is never read: drop the connection
                    host = self._request.url.host
                    raise ResponseTooLarge(f"{host} sent a response larger than {self._limit} bytes; not read")
                yield chunk
        except ResponseTooLarge:
            raise
        except Exception as exc:
            raise _as_httpx(exc, self._request, connecting=False) from exc

    async def aclose(self) -> None:
        self._response.release()


def _as_httpx(exc: Exception, request: httpx.Request, *, connecting: bool) -> Exception:
    """The httpx error an aiohttp (or resolver) error stands for, as the httpcore pool raises them."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, httpcore.ConnectTimeout | aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, httpcore.ConnectError | aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.InvalidURL(message)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return (httpx.ConnectError if connecting else httpx.ReadError)(message, request=request)
    return exc


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing and sends nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Never keep a cookie a target sets."""

    def set_cookie_header(self, request: httpx.Request) -> None:
        """Never send a kept cookie."""


class _GuardedClient(httpx.AsyncClient):
    """httpx's client without a cookie jar: it serves every owner's actions, so a cookie one
    owner's target sets must never reach a request of another (or of the same owner, later)."""

    @property
    def cookies(self) -> httpx.Cookies:
        """Always empty."""
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        """Ignored: nothing is kept."""


def guarded_client(policy: EgressPolicy, *, limits: httpx.Limits | None = None) -> httpx.AsyncClient:
    """The client actions get: every connection checked, no redirects, no proxy from the
    environment, no cookies kept between requests."""
    transport = EgressTransport(policy, limits=limits)
    return _GuardedClient(transport=transport, follow_redirects=False, trust_env=False)
