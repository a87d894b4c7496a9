"""Configuration, read once at start from the environment and passed down explicitly.

Every setting has a default that suits `hookyard dev`; production sets the URLs and keys.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A setting is present but cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything a hookyard process needs to know; secrets are hidden from `repr`."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "hookyard-automations"

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""

    max_body_bytes: int = 1024 * 1024
    signature_tolerance_s: int = 300
    secret_rotation_grace_s: int = 24 * 3600

    master_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    db_pool_min: int = 2
    db_pool_max: int = 10
    dispatch_batch_size: int = 500
    dispatch_poll_interval_s: float = 1.0
    activity_heartbeat_timeout_s: float = 30.0
    automation_idle_timeout_s: float = 300.0
    automation_max_batch: int = 100
    automation_history_limit: int = 8000
    worker_max_concurrent_activities: int = 100
    worker_graceful_shutdown_s: float = 30.0
    log_level: str = "INFO"
    log_json: bool = False

    @property
    def base_url(self) -> str:
        """The URL senders reach this service at; used to build ingest URLs."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (used by the dev supervisor and tests)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    # environment variable -> (field, cast)
    "DATABASE_URL": ("database_url", str),
    "REDIS_URL": ("redis_url", str),
    "TEMPORAL_ADDRESS": ("temporal_address", str),
    "HOOKYARD_TEMPORAL_NAMESPACE": ("temporal_namespace", str),
    "HOOKYARD_TASK_QUEUE": ("task_queue", str),
    "HOOKYARD_HOST": ("host", str),
    "HOOKYARD_PORT": ("port", int),
    "HOOKYARD_PUBLIC_URL": ("public_url", str),
    "HOOKYARD_MAX_BODY_BYTES": ("max_body_bytes", int),
    "HOOKYARD_SIGNATURE_TOLERANCE_S": ("signature_tolerance_s", int),
    "HOOKYARD_SECRET_ROTATION_GRACE_S": ("secret_rotation_grace_s", int),
    "HOOKYARD_DB_POOL_MIN": ("db_pool_min", int),
    "HOOKYARD_DB_POOL_MAX": ("db_pool_max", int),
    "HOOKYARD_DISPATCH_BATCH_SIZE": ("dispatch_batch_size", int),
    "HOOKYARD_DISPATCH_POLL_INTERVAL_S": ("dispatch_poll_interval_s", float),
    "HOOKYARD_ACTIVITY_HEARTBEAT_TIMEOUT_S": ("activity_heartbeat_timeout_s", float),
    "HOOKYARD_AUTOMATION_IDLE_TIMEOUT_S": ("automation_idle_timeout_s", float),
    "HOOKYARD_AUTOMATION_MAX_BATCH": ("automation_max_batch", int),
    "HOOKYARD_AUTOMATION_HISTORY_LIMIT": ("automation_history_limit", int),
    "HOOKYARD_WORKER_MAX_CONCURRENT_ACTIVITIES": ("worker_max_concurrent_activities", int),
    "HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S": ("worker_graceful_shutdown_s", float),
    "HOOKYARD_LOG_LEVEL": ("log_level", str),
    "HOOKYARD_LOG_JSON": ("log_json", lambda v: v.lower() in {"1", "true", "yes", "on"}),
}


def parse_master_keys(value: str) -> tuple[tuple[str, bytes], ...]:
    """Parse `kid:base64key[,kid:base64key...]`; the first key is the primary (used to encrypt)."""
    keys: list[tuple[str, bytes]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        kid, sep, encoded = item.partition(":")
        if not sep or not kid:
            raise SettingsError("HOOKYARD_MASTER_KEYS: each entry must be 'key_id:base64_key'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise SettingsError(f"HOOKYARD_MASTER_KEYS: key {kid!r} is not valid base64") from exc
        if len(key) != 32:
            raise SettingsError(f"HOOKYARD_MASTER_KEYS: key {kid!r} must be 32 bytes (AES-256)")
        keys.append((kid, key))
    return tuple(keys)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from an environment mapping (defaults to `os.environ`) plus overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, (attr, cast) in _ENV.items():
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[attr] = cast(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: cannot read {raw!r}") from exc
    if env.get("HOOKYARD_MASTER_KEYS"):
        values["master_keys"] = parse_master_keys(env["HOOKYARD_MASTER_KEYS"])
    elif env.get("HOOKYARD_MASTER_KEYS_FILE"):
        text = Path(env["HOOKYARD_MASTER_KEYS_FILE"]).read_text().strip()
        values["master_keys"] = parse_master_keys(text)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
