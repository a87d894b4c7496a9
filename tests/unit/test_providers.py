"""Every fact about a credential provider is declared once, in oauth/providers.py, and read from there."""

from __future__ import annotations

from pathlib import Path

from actions.ratelimit import DEFAULT_RATES
from oauth.providers import PROVIDERS, default_rates

ROOT = Path(__file__).resolve().parents[2]


def test_default_rate_limits_are_the_providers_declared_rates() -> None:
    assert default_rates() == DEFAULT_RATES
    assert DEFAULT_RATES == {"resend": 2.0, "postmark": 10.0, "slack": 1.0, "novu": 60.0}


def test_every_provider_has_a_display_name_and_a_description() -> None:
    for provider in PROVIDERS.values():
        assert provider.title
        assert provider.description


def test_documented_rate_limit_defaults_match_the_declarations() -> None:
    documented = ",".join(f"{name}={rate:g}/s" for name, rate in default_rates().items())
    for doc in ("README.md", "docs/operations.md"):
        assert f"`{documented}`" in (ROOT / doc).read_text(), doc
