"""Triggers and oauth receive small slices of the settings, built from the whole once."""

from __future__ import annotations

import dataclasses

from oauth.google import google_from_settings
from settings import GoogleSettings, Settings, TriggerSettings


def test_the_trigger_slice_holds_only_what_sync_hooks_read() -> None:
    settings = Settings(task_queue="q", gmail_sweep_interval_s=60.0, gmail_watch_renew_s=3600.0)
    assert settings.for_triggers() == TriggerSettings("q", 60.0, 3600.0)
    assert [f.name for f in dataclasses.fields(TriggerSettings)] == [
        "task_queue",
        "gmail_sweep_interval_s",
        "gmail_watch_renew_s",
    ]


def test_the_google_slice_defaults_the_redirect_to_this_service_callback() -> None:
    settings = Settings(google_client_id="id", google_client_secret="s3cret", public_url="https://hooks.example/")
    google = settings.for_google()
    assert google.redirect_uri == "https://hooks.example/oauth/callback"
    assert "s3cret" not in repr(google)


def test_an_explicit_redirect_uri_wins() -> None:
    settings = Settings(google_client_id="id", oauth_redirect_uri="https://elsewhere.example/cb")
    assert settings.for_google().redirect_uri == "https://elsewhere.example/cb"


def test_the_google_client_is_built_from_its_slice() -> None:
    settings = Settings(google_client_id="id", google_client_secret="s3cret", google_token_url="http://t.example/")
    client = google_from_settings(settings.for_google())
    assert client is not None
    assert (client.client_id, client.client_secret, client.token_url) == ("id", "s3cret", "http://t.example/")


def test_no_client_id_means_no_google_client() -> None:
    assert google_from_settings(Settings().for_google()) is None
    assert isinstance(Settings().for_google(), GoogleSettings)
