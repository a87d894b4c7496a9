"""Connecting to Temporal: securely (TLS, mTLS or an API key; every payload encrypted) and
patiently (a process may start before the server does).

Every hookyard process that talks to Temporal connects through `connect`, so none can write a
plaintext payload by accident. docs/temporal.md describes the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from runtime.codec import encrypted_data_converter
from settings import Settings, SettingsError, require_master_keys

log = logging.getLogger(__name__)


class TemporalSettingsError(SettingsError):
    """The Temporal connection settings cannot work; retrying would not help. Names the setting."""


async def connect(settings: Settings) -> Client:
    """One connection attempt to the configured Temporal server and namespace.

    Raises a SettingsError (TemporalSettingsError, MasterKeysMissing) when the settings cannot
    work (retrying would not help).
    """
    try:
        converter = data_converter(settings)
        tls = tls_config(settings)
    except SettingsError as exc:
        log.error("temporal connection settings: %s", exc)
        raise
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key or None,
        tls=tls,
        rpc_metadata=rpc_metadata(settings),
        data_converter=converter,
    )


def data_converter(settings: Settings) -> DataConverter:
    """The converter every client uses: payloads and failures encrypted with the master keys."""
    return encrypted_data_converter(require_master_keys(settings))


def tls_config(settings: Settings) -> bool | TLSConfig | None:
    """TLS for the connection: None lets the SDK decide (on when an API key is set)."""
    ca, cert, key = settings.temporal_tls_ca_file, settings.temporal_tls_cert_file, settings.temporal_tls_key_file
    custom = bool(ca or cert or key or settings.temporal_tls_server_name)
    if settings.temporal_tls is False:
        if custom:
            raise TemporalSettingsError(
                "HOOKYARD_TEMPORAL_TLS is off but HOOKYARD_TEMPORAL_TLS_* files or name are set"
            )
        return False
    if bool(cert) != bool(key):
        raise TemporalSettingsError(
            "HOOKYARD_TEMPORAL_TLS_CERT_FILE and HOOKYARD_TEMPORAL_TLS_KEY_FILE must be set together (mTLS)"
        )
    if custom:
        # Read at every connect, so renewed certificates are picked up on reconnection.
        return TLSConfig(
            server_root_ca_cert=_read(ca, "HOOKYARD_TEMPORAL_TLS_CA_FILE"),
            client_cert=_read(cert, "HOOKYARD_TEMPORAL_TLS_CERT_FILE"),
            client_private_key=_read(key, "HOOKYARD_TEMPORAL_TLS_KEY_FILE"),
            domain=settings.temporal_tls_server_name or None,
        )
    return True if settings.temporal_tls else None


def rpc_metadata(settings: Settings) -> dict[str, str]:
    """Extra gRPC headers: Temporal Cloud routes API-key calls by the namespace header."""
    return {"temporal-namespace": settings.temporal_namespace} if settings.temporal_api_key else {}


def _read(path: str, variable: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TemporalSettingsError(f"{variable}: cannot read {path!r} ({exc.strerror or type(exc).__name__})") from exc


async def connect_with_retry(settings: Settings, stop: asyncio.Event | None = None) -> Client | None:
    """Keep trying (backing off to 10 s) until connected; None if `stop` is set first."""
    delay = 0.5
    while stop is None or not stop.is_set():
        try:
            return await connect(settings)
        except SettingsError:
            raise
        except Exception as exc:  # the SDK raises RuntimeError for transport failures
            log.warning(
                "temporal at %s unreachable (%s); retrying in %.1fs",
                settings.temporal_address,
                type(exc).__name__,
                delay,
            )
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None
