"""Providers a credential can be for: every fact about one in one declaration.

The API's credential schemas and the catalog, the OpenAPI prose, the default rate limits
(actions/ratelimit.py) and the actions' `credential_providers` (checked by a registry test)
all read `PROVIDERS`; adding a provider is one entry here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

# (field, problem) for the first unusable secret field, or None; never quotes the value.
SecretCheck = Callable[[Mapping[str, str]], tuple[str, str] | None]

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
# Printable ASCII only: a line break would smuggle in a header, and httpx sends headers as ASCII.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Headers the HTTP client must own: a credential setting them would corrupt the request.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"})


@dataclass(frozen=True, slots=True)
class Provider:
    """A credential provider: `api_key` ones are pasted in; `oauth2` ones connect via a link."""

    name: str
    kind: str
    description: str
    secret_fields: tuple[str, ...] = ()
    # Further accepted sets of secret fields, for credentials that come in several shapes.
    other_shapes: tuple[tuple[str, ...], ...] = ()
    check: SecretCheck | None = None
    # How documents name it ("Resend"); the name itself when not given.
    display_name: str = ""
    # Default requests per second, per credential (Slack: per channel), shared by every worker
    # (actions/ratelimit.py; HOOKYARD_RATE_LIMITS overrides it). None: not limited by default.
    rate_per_s: float | None = None

    @property
    def title(self) -> str:
        """The name documents use."""
        return self.display_name or self.name

    @property
    def secret_shapes(self) -> tuple[tuple[str, ...], ...]:
        """Every accepted set of secret fields, the main one first."""
        return (self.secret_fields, *self.other_shapes)


def _check_http(secret: Mapping[str, str]) -> tuple[str, str] | None:
    header = secret.get("header")
    if header is not None:
        if not _HEADER_NAME.fullmatch(header):
            return "header", "must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
        if header.lower() in _RESERVED_HEADERS:
            return "header", "is set by the HTTP client and cannot come from a credential"
    for name in ("value", "bearer_token"):
        if name in secret and not _HEADER_VALUE.fullmatch(secret[name]):
            return name, "must be printable ASCII without line breaks"
    for name in ("username", "password"):
        if name in secret and _CONTROL.search(secret[name]):
            return name, "must not contain control characters or line breaks"
    if ":" in secret.get("username", ""):
        return "username", "must not contain ':' (basic auth separates it from the password with one)"
    return None


def _check_slack_webhook(secret: Mapping[str, str]) -> tuple[str, str] | None:
    url = secret["url"]
    if not url.startswith("https://hooks.slack.com/") or _CONTROL.search(url) or " " in url:
        return "url", "must be a Slack incoming-webhook URL (https://hooks.slack.com/...)"
    return None


SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
_PG_SCHEMES = ("postgres", "postgresql")


class PostgresUrlError(ValueError):
    """A `postgres` credential's URL or TLS setting is unusable; the message never quotes the secret."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """Where and as whom a `postgres` credential connects; `repr` hides the password."""

    host: str
    port: int
    user: str
    password: str = dataclasses.field(repr=False)
    database: str
    sslmode: str = "prefer"
    ssl_root_cert: str = dataclasses.field(default="", repr=False)


def postgres_target(secret: Mapping[str, str]) -> PostgresTarget:
    """Read a `postgres` credential's secret (url, optional sslmode and ssl_root_cert).

    One host, TCP only (no socket paths, no query parameters: TLS is set by its own fields),
    so the egress policy judges exactly the address that will be connected to.
    """
    url = secret.get("url", "")
    if _CONTROL.search(url) or " " in url:
        raise PostgresUrlError("url", "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:
        raise PostgresUrlError("url", "is not a URL (postgresql://user:password@host:5432/database)") from None
    if parts.scheme not in _PG_SCHEMES or not parts.hostname:
        raise PostgresUrlError("url", "must be postgresql://user:password@host[:port]/database")
    if parts.query or parts.fragment:
        raise PostgresUrlError("url", "must have no query parameters (set sslmode and ssl_root_cert as fields)")
    host = unquote(parts.hostname)
    if "/" in host or "," in host or "%" in host:
        raise PostgresUrlError("url", "must name one TCP host (no socket paths or host lists)")
    user = unquote(parts.username or "")
    if not user:
        raise PostgresUrlError("url", "must name a user (postgresql://user:password@host/database)")
    database = unquote(parts.path.lstrip("/")) or user
    if "/" in database:
        raise PostgresUrlError("url", "must name one database after the host")
    sslmode = secret.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise PostgresUrlError("sslmode", f"must be one of {', '.join(SSL_MODES)}")
    root = secret.get("ssl_root_cert", "")
    if root and "-----BEGIN CERTIFICATE-----" not in root:
        raise PostgresUrlError("ssl_root_cert", "must be PEM text (-----BEGIN CERTIFICATE-----...)")
    return PostgresTarget(host, port, user, unquote(parts.password or ""), database, sslmode, root)


def _check_postgres(secret: Mapping[str, str]) -> tuple[str, str] | None:
    try:
        postgres_target(secret)
    except PostgresUrlError as exc:
        return exc.field, str(exc)
    return None


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("google", "oauth2", "Google account (Gmail) connected through a connect link", display_name="Google"),
        # Resend: "2 requests per second per team" by default (resend.com/docs/api-reference/rate-limit;
        # some newer pages say 5). Keyed per credential; keys of one team share Resend's limit.
        Provider("resend", "api_key", "Resend API key", ("api_key",), display_name="Resend", rate_per_s=2.0),
        # Postmark publishes no numeric API limit, only that it answers 429 when pushed too hard
        # (postmarkapp.com/developer/api/overview): a conservative pace.
        Provider(
            "postmark", "api_key", "Postmark server token", ("server_token",), display_name="Postmark", rate_per_s=10.0
        ),
        # Slack: chat.postMessage "generally allows posting one message per second per channel"
        # (api.slack.com/docs/rate-limits); incoming webhooks likewise. Keyed per channel, and
        # webhook posts share this bucket.
        Provider(
            "slack", "api_key", "Slack bot token (xoxb-...)", ("bot_token",), display_name="Slack", rate_per_s=1.0
        ),
        # Novu: the Events (trigger) category allows 60 requests/s on the Free tier, more on paid
        # tiers (docs.novu.co/api-reference/rate-limiting).
        Provider("novu", "api_key", "Novu API key", ("api_key",), display_name="Novu", rate_per_s=60.0),
        Provider(
            "http",
            "api_key",
            "Credential for http.request: a header (header, value), a bearer token (bearer_token) "
            "or basic auth (username, password)",
            ("header", "value"),
            (("bearer_token",), ("username", "password")),
            _check_http,
            display_name="HTTP",
        ),
        Provider(
            "slack_webhook",
            "api_key",
            "Slack incoming-webhook URL (url: https://hooks.slack.com/...)",
            ("url",),
            check=_check_slack_webhook,
            display_name="Slack incoming webhook",
        ),
        # An owner's own database, read and written by the `postgres.outbox` trigger.
        Provider(
            "postgres",
            "api_key",
            "PostgreSQL database (url: postgresql://user:password@host:5432/database; optional sslmode: "
            "disable, prefer, require, verify-ca, verify-full; optional ssl_root_cert: PEM)",
            ("url",),
            (("url", "sslmode"), ("url", "sslmode", "ssl_root_cert"), ("url", "ssl_root_cert")),
            _check_postgres,
            display_name="PostgreSQL",
        ),
    )
}

API_KEY_PROVIDERS = sorted(name for name, p in PROVIDERS.items() if p.kind == "api_key")
OAUTH_PROVIDERS = sorted(name for name, p in PROVIDERS.items() if p.kind == "oauth2")


def default_rates() -> dict[str, float]:
    """Requests per second per provider that has a default limit, in declaration order."""
    return {name: p.rate_per_s for name, p in PROVIDERS.items() if p.rate_per_s is not None}


def secret_shapes_text(provider: Provider) -> str:
    """The accepted secret fields in words: `header + value, or bearer_token`."""
    return ", or ".join(" + ".join(shape) for shape in provider.secret_shapes)
