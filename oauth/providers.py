"""Providers a credential can be for: every fact about one in one declaration.

The API's credential schemas and the catalog, the OpenAPI prose, the default rate limits
(actions/ratelimit.py) and the actions' `credential_providers` (checked by a registry test)
all read `PROVIDERS`; adding a provider is one entry here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
