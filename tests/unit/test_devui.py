"""The dev Temporal UI's settings, as the read-only proxy rewrites them."""

from __future__ import annotations

from hookyard.devui import read_only_settings

UI_SETTINGS = {
    "Codec": {"Endpoint": "", "PassAccessToken": False},
    "DisableWriteActions": False,
    "WorkflowTerminateDisabled": False,
    "WorkflowResetDisabled": False,
    "BatchActionsDisabled": False,
    "StartWorkflowDisabled": False,
    "RefreshWorkflowCountsDisabled": False,
    "Version": "2.54.1",
}


def test_every_write_action_is_reported_disabled():
    settings = read_only_settings(UI_SETTINGS, None)
    assert settings["DisableWriteActions"] is True
    assert all(settings[k] is True for k in settings if k.endswith("Disabled") and "Refresh" not in k)


def test_reads_stay_enabled():
    assert read_only_settings(UI_SETTINGS, None)["RefreshWorkflowCountsDisabled"] is False


def test_the_codec_endpoint_is_filled_in_and_its_other_options_kept():
    settings = read_only_settings(UI_SETTINGS, "http://127.0.0.1:8000/codec/ui/t")
    assert settings["Codec"] == {"Endpoint": "http://127.0.0.1:8000/codec/ui/t", "PassAccessToken": False}
    assert UI_SETTINGS["Codec"]["Endpoint"] == ""  # type: ignore[index]
