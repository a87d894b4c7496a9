"""Providers a credential can be for, and the secret fields each kind of credential holds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Provider:
    """A credential provider: `api_key` ones are pasted in; `oauth2` ones connect via a link."""

    name: str
    kind: str
    description: str
    secret_fields: tuple[str, ...] = ()


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("google", "oauth2", "Google account (Gmail) connected through a connect link"),
        Provider("resend", "api_key", "Resend API key", ("api_key",)),
        Provider("postmark", "api_key", "Postmark server token", ("server_token",)),
        Provider("slack", "api_key", "Slack bot token (xoxb-...)", ("bot_token",)),
        Provider("novu", "api_key", "Novu API key", ("api_key",)),
    )
}

API_KEY_PROVIDERS = sorted(name for name, p in PROVIDERS.items() if p.kind == "api_key")
OAUTH_PROVIDERS = sorted(name for name, p in PROVIDERS.items() if p.kind == "oauth2")
