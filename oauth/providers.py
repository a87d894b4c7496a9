"""Providers a credential can be for, and the secret fields each kind of credential holds."""

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
        Provider("google", "oauth2", "Google account (Gmail) connected through a connect link"),
        Provider("resend", "api_key", "Resend API key", ("api_key",)),
        Provider("postmark", "api_key", "Postmark server token", ("server_token",)),
        Provider("slack", "api_key", "Slack bot token (xoxb-...)", ("bot_token",)),
        Provider("novu", "api_key", "Novu API key", ("api_key",)),
        Provider(
            "http",
            "api_key",
            "Credential for http.request: a header (header, value), a bearer token (bearer_token) "
            "or basic auth (username, password)",
            ("header", "value"),
            (("bearer_token",), ("username", "password")),
            _check_http,
        ),
        Provider(
            "slack_webhook",
            "api_key",
            "Slack incoming-webhook URL (url: https://hooks.slack.com/...)",
            ("url",),
            check=_check_slack_webhook,
        ),
    )
}

API_KEY_PROVIDERS = sorted(name for name, p in PROVIDERS.items() if p.kind == "api_key")
OAUTH_PROVIDERS = sorted(name for name, p in PROVIDERS.items() if p.kind == "oauth2")
