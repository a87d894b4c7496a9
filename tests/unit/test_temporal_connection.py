"""How the Temporal connection settings become TLS, API key and codec options."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.service import TLSConfig

from oauth.crypto import generate_key
from runtime.codec import EncryptionCodec
from runtime.temporal import TemporalSettingsError, connect, data_converter, rpc_metadata, tls_config
from settings import MasterKeysMissing, SettingsError, load_settings

KEYS = (("k1", generate_key()),)


def test_plain_local_server_needs_no_tls_and_lets_the_sdk_decide() -> None:
    assert tls_config(load_settings({})) is None


def test_tls_flag_uses_the_system_roots() -> None:
    assert tls_config(load_settings({"HOOKYARD_TEMPORAL_TLS": "true"})) is True


def test_tls_flag_rejects_a_typo_instead_of_turning_tls_off() -> None:
    with pytest.raises(SettingsError, match="HOOKYARD_TEMPORAL_TLS"):
        load_settings({"HOOKYARD_TEMPORAL_TLS": "ture"})


def test_mtls_files_and_server_name_become_a_tls_config(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_bytes(f"-- {name} --".encode())
    settings = load_settings(
        {
            "HOOKYARD_TEMPORAL_TLS_CA_FILE": str(tmp_path / "ca.pem"),
            "HOOKYARD_TEMPORAL_TLS_CERT_FILE": str(tmp_path / "client.pem"),
            "HOOKYARD_TEMPORAL_TLS_KEY_FILE": str(tmp_path / "client.key"),
            "HOOKYARD_TEMPORAL_TLS_SERVER_NAME": "temporal.internal",
        }
    )
    assert tls_config(settings) == TLSConfig(
        server_root_ca_cert=b"-- ca.pem --",
        client_cert=b"-- client.pem --",
        client_private_key=b"-- client.key --",
        domain="temporal.internal",
    )


def test_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_bytes(b"cert")
    settings = load_settings({"HOOKYARD_TEMPORAL_TLS_CERT_FILE": str(tmp_path / "client.pem")})
    with pytest.raises(TemporalSettingsError, match="must be set together"):
        tls_config(settings)


def test_unreadable_certificate_file_names_the_setting(tmp_path: Path) -> None:
    settings = load_settings({"HOOKYARD_TEMPORAL_TLS_CA_FILE": str(tmp_path / "missing.pem")})
    with pytest.raises(TemporalSettingsError, match="HOOKYARD_TEMPORAL_TLS_CA_FILE"):
        tls_config(settings)


def test_tls_off_with_certificate_files_is_a_contradiction() -> None:
    settings = load_settings({"HOOKYARD_TEMPORAL_TLS": "false", "HOOKYARD_TEMPORAL_TLS_CA_FILE": "ca.pem"})
    with pytest.raises(TemporalSettingsError, match="HOOKYARD_TEMPORAL_TLS is off"):
        tls_config(settings)


def test_api_key_is_hidden_from_repr_and_sends_the_namespace_header() -> None:
    settings = load_settings(
        {"HOOKYARD_TEMPORAL_API_KEY": "tcak_secret_marker", "HOOKYARD_TEMPORAL_NAMESPACE": "hookyard.a1b2c"}
    )
    assert "tcak_secret_marker" not in repr(settings)
    assert rpc_metadata(settings) == {"temporal-namespace": "hookyard.a1b2c"}
    assert rpc_metadata(load_settings({})) == {}


def test_codec_token_is_hidden_from_repr_and_origins_are_a_list() -> None:
    settings = load_settings(
        {
            "HOOKYARD_CODEC_AUTH_TOKEN": "codec_secret_marker",
            "HOOKYARD_CODEC_CORS_ORIGINS": "https://temporal.example.com, http://127.0.0.1:8233",
        }
    )
    assert "codec_secret_marker" not in repr(settings)
    assert settings.codec_cors_origins == ("https://temporal.example.com", "http://127.0.0.1:8233")


def test_every_client_encrypts_payloads_and_failures() -> None:
    converter = data_converter(load_settings({}, master_keys=KEYS))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes


async def test_connecting_without_master_keys_is_refused_before_any_network_call() -> None:
    with pytest.raises(MasterKeysMissing, match="HOOKYARD_MASTER_KEYS"):
        await connect(load_settings({}, temporal_address="127.0.0.1:1"))
