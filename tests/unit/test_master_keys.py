"""One master-key check: every process and the Temporal connection refuse to start without keys, alike."""

from __future__ import annotations

import pytest

from hookyard import cli
from hookyard.processes import keyring_from
from runtime.temporal import data_converter
from settings import MasterKeysMissing, SettingsError, load_settings, require_master_keys

KEYS = (("k1", b"\x01" * 32),)


def test_without_master_keys_the_check_names_the_setting_and_how_to_make_a_key() -> None:
    with pytest.raises(MasterKeysMissing, match="HOOKYARD_MASTER_KEYS is not set") as caught:
        require_master_keys(load_settings({}))
    assert "hookyard keys generate" in str(caught.value)
    assert isinstance(caught.value, SettingsError)


def test_with_master_keys_the_check_returns_them() -> None:
    assert require_master_keys(load_settings({}, master_keys=KEYS)) == KEYS


def test_the_processes_and_the_temporal_connection_raise_the_same_error() -> None:
    settings = load_settings({})
    with pytest.raises(MasterKeysMissing):
        keyring_from(settings)
    with pytest.raises(MasterKeysMissing):
        data_converter(settings)


def test_a_process_started_without_master_keys_exits_with_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOOKYARD_MASTER_KEYS", "HOOKYARD_MASTER_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(["dispatch"])
    assert "HOOKYARD_MASTER_KEYS is not set" in str(exited.value.code)
