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

from settings.egress import AllowRule, EgressAllowError, parse_allow


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
    # Temporal connection security (docs/temporal.md). tls None: on when an API key is set.
    temporal_api_key: str = field(default="", repr=False)
    temporal_tls: bool | None = None
    temporal_tls_ca_file: str = ""
    temporal_tls_cert_file: str = ""
    temporal_tls_key_file: str = ""
    temporal_tls_server_name: str = ""
    # The codec server (decrypts payloads for operators); off while no token is set.
    codec_auth_token: str = field(default="", repr=False)
    codec_cors_origins: tuple[str, ...] = ()

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""

    max_body_bytes: int = 1024 * 1024
    # A request body must arrive within this long (408 after): slow senders cannot hold connections.
    body_read_timeout_s: float = 30.0
    # Bytes the templates of one outgoing action request may produce; more fails the execution.
    max_rendered_bytes: int = 1024 * 1024
    # Dry runs (ingest/dryrun.py): one deadline for the whole run, and the rendered output one
    # report may carry (the last request may overshoot it by max_rendered_bytes).
    dry_run_timeout_s: float = 10.0
    dry_run_max_output_bytes: int = 4 * 1024 * 1024
    # Untrusted JSON nested deeper than this is not parsed: webhook bodies reach triggers as
    # text, API bodies answer 422 (schemas/jsonlimits.py).
    max_json_depth: int = 128
    signature_tolerance_s: int = 300
    secret_rotation_grace_s: int = 24 * 3600
    # Subscriptions (/api/subscriptions): the waits between delivery attempts (the last one
    # repeating), how long a delivery is retried, and how long a subscription may keep failing
    # before it is disabled.
    subscription_retry_delays_s: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
    subscription_max_age_s: int = 3 * 24 * 3600
    subscription_disable_after_s: int = 5 * 24 * 3600
    # Owner console (/console): how long a sign-in lasts; the Temporal Web UI base URL, if any,
    # for links to an execution's run (e.g. http://127.0.0.1:8233).
    console_session_ttl_s: int = 12 * 3600
    temporal_ui_url: str = ""

    master_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    # OAuth2 (docs: README "Connecting accounts"). The redirect URI must match the one
    # registered with Google exactly; empty means `<public url>/oauth/callback`.
    google_client_id: str = ""
    google_client_secret: str = field(default="", repr=False)
    oauth_redirect_uri: str = ""
    google_authorize_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    connect_link_ttl_s: int = 72 * 3600
    oauth_state_ttl_s: int = 600

    # Gmail push (README "Gmail"). Pub/Sub pushes carry a Google-signed OIDC token for this
    # audience (empty: the push URL) from this service account; verification is turned off
    # only for the local Pub/Sub emulator, which sends no token.
    pubsub_audience: str = ""
    pubsub_service_account: str = ""
    pubsub_verify: bool = True
    # Where Google's token-signing keys are published (OIDC pushes and ticks). For testing only:
    # a local signer's JWKS lets the verified push path run end to end; production keeps Google's.
    google_certs_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    gmail_topic: str = ""
    gmail_api_base: str = "https://gmail.googleapis.com/"
    gmail_sweep_interval_s: float = 900.0
    gmail_watch_renew_s: float = 24 * 3600.0
    gmail_full_sync_max: int = 100

    db_pool_min: int = 2
    db_pool_max: int = 10
    dispatch_batch_size: int = 500
    dispatch_poll_interval_s: float = 1.0
    # /readyz reports `dispatch: stalled` once the oldest unresolved event is older than this.
    dispatch_stall_after_s: float = 60.0
    # A lost worker's batch is retried this long after its last heartbeat (docs/architecture.md,
    # "Nothing is stranded"); the worker heartbeats every second, so 5 s leaves 4 s of slack.
    activity_heartbeat_timeout_s: float = 5.0
    automation_idle_timeout_s: float = 300.0
    automation_max_batch: int = 100
    # Short histories keep a crash cheap: a worker that takes over a workflow replays its whole
    # history first (3,700 events took ~5 s under load, holding the GIL that heartbeats need).
    automation_history_limit: int = 1000
    # Unfinished executions handed to one automation workflow at most; the rest wait in PostgreSQL.
    automation_max_pending: int = 5000
    # Lane workflows per task queue (docs/architecture.md, "Execution lanes"); 0 keeps one
    # automation workflow per user workflow. A changed count moves only new workflows.
    lanes: int = 16
    # Unfinished executions handed to one lane at most (all its workflows together); the rest
    # wait in PostgreSQL. Bounds what a lane's continue-as-new carries.
    lane_max_pending: int = 10000
    # The reconciler: how often it checks, and how long a hand-over may settle before it does.
    reconcile_interval_s: float = 15.0
    reconcile_grace_s: float = 30.0
    worker_max_concurrent_activities: int = 100
    worker_graceful_shutdown_s: float = 30.0
    # Processes of `hookyard serve` and `hookyard worker` (flags --workers / --processes
    # override); 0 = one per available CPU (a container's CPU quota counts), see hookyard/copies.py.
    serve_workers: int = 1
    worker_processes: int = 1
    log_level: str = "INFO"
    log_json: bool = False
    # Observability: Prometheus listeners of dispatch/worker (0 = off) and OTLP traces (empty = off).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    temporal_metrics_port: int = 0
    otel_endpoint: str = ""
    # Per-provider request rates over the defaults in actions/ratelimit.py: (provider, per second).
    rate_limits: tuple[tuple[str, float], ...] = ()
    # Exceptions to the egress policy (actions/egress.py); none: actions reach public addresses only.
    egress_allow: tuple[AllowRule, ...] = ()
    # Targets refused even inside an allowed range (same syntax): the deployment's own listeners.
    egress_deny: tuple[AllowRule, ...] = ()
    # Owners' databases (credential type `postgres`, trigger `postgres.outbox`): connections per
    # credential at most, and the bounds every connection and statement runs under.
    owner_db_pool_max: int = 2
    owner_db_connect_timeout_s: float = 5.0
    owner_db_statement_timeout_s: float = 5.0
    # A row whose JSON is larger than this is not turned into an event: it is marked failed.
    outbox_max_row_bytes: int = 256 * 1024

    @property
    def base_url(self) -> str:
        """The URL senders reach this service at; used to build ingest URLs."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (used by the dev supervisor and tests)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def for_triggers(self) -> TriggerSettings:
        """The few settings trigger types' sync hooks read."""
        return TriggerSettings(self.task_queue, self.gmail_sweep_interval_s, self.gmail_watch_renew_s)

    def for_google(self) -> GoogleSettings:
        """The few settings the Google OAuth client is built from (oauth/google.py)."""
        return GoogleSettings(
            client_id=self.google_client_id,
            client_secret=self.google_client_secret,
            redirect_uri=self.oauth_redirect_uri or f"{self.base_url}/oauth/callback",
            authorize_url=self.google_authorize_url,
            token_url=self.google_token_url,
            revoke_url=self.google_revoke_url,
        )


# Slices of Settings for the packages that read only a few: each receives its slice, not the
# whole Settings, so what a package depends on is visible in its signatures.


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    """What trigger types (their sync hooks) read: `Settings.for_triggers()`."""

    task_queue: str
    gmail_sweep_interval_s: float
    gmail_watch_renew_s: float


@dataclass(frozen=True, slots=True)
class GoogleSettings:
    """What oauth's Google client is built from: `Settings.for_google()`. No client id: none is."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    authorize_url: str
    token_url: str
    revoke_url: str


def _flag(value: str) -> bool:
    """A strict boolean: a typo must not silently turn a security setting off."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(value)


def _bounded(setting: str, value: str, lowest: int, highest: int) -> int:
    """An integer within [lowest, highest] (lane numbers are stored with a range check)."""
    number = int(value)
    if not lowest <= number <= highest:
        raise SettingsError(f"{setting}: {number} is not between {lowest} and {highest}")
    return number


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    # environment variable -> (field, cast)
    "DATABASE_URL": ("database_url", str),
    "REDIS_URL": ("redis_url", str),
    "TEMPORAL_ADDRESS": ("temporal_address", str),
    "HOOKYARD_TEMPORAL_NAMESPACE": ("temporal_namespace", str),
    "HOOKYARD_TASK_QUEUE": ("task_queue", str),
    "HOOKYARD_TEMPORAL_API_KEY": ("temporal_api_key", str),
    "HOOKYARD_TEMPORAL_TLS": ("temporal_tls", _flag),
    "HOOKYARD_TEMPORAL_TLS_CA_FILE": ("temporal_tls_ca_file", str),
    "HOOKYARD_TEMPORAL_TLS_CERT_FILE": ("temporal_tls_cert_file", str),
    "HOOKYARD_TEMPORAL_TLS_KEY_FILE": ("temporal_tls_key_file", str),
    "HOOKYARD_TEMPORAL_TLS_SERVER_NAME": ("temporal_tls_server_name", str),
    "HOOKYARD_CODEC_AUTH_TOKEN": ("codec_auth_token", str),
    "HOOKYARD_CODEC_CORS_ORIGINS": ("codec_cors_origins", _csv),
    "HOOKYARD_GOOGLE_CLIENT_ID": ("google_client_id", str),
    "HOOKYARD_GOOGLE_CLIENT_SECRET": ("google_client_secret", str),
    "HOOKYARD_OAUTH_REDIRECT_URI": ("oauth_redirect_uri", str),
    "HOOKYARD_GOOGLE_AUTHORIZE_URL": ("google_authorize_url", str),
    "HOOKYARD_GOOGLE_TOKEN_URL": ("google_token_url", str),
    "HOOKYARD_GOOGLE_REVOKE_URL": ("google_revoke_url", str),
    "HOOKYARD_CONNECT_LINK_TTL_S": ("connect_link_ttl_s", int),
    "HOOKYARD_OAUTH_STATE_TTL_S": ("oauth_state_ttl_s", int),
    "HOOKYARD_PUBSUB_AUDIENCE": ("pubsub_audience", str),
    "HOOKYARD_PUBSUB_SERVICE_ACCOUNT": ("pubsub_service_account", str),
    "HOOKYARD_PUBSUB_VERIFY": ("pubsub_verify", _flag),
    "HOOKYARD_GOOGLE_CERTS_URL": ("google_certs_url", str),
    "HOOKYARD_GMAIL_TOPIC": ("gmail_topic", str),
    "HOOKYARD_GMAIL_API_BASE": ("gmail_api_base", str),
    "HOOKYARD_GMAIL_SWEEP_INTERVAL_S": ("gmail_sweep_interval_s", float),
    "HOOKYARD_GMAIL_WATCH_RENEW_S": ("gmail_watch_renew_s", float),
    "HOOKYARD_GMAIL_FULL_SYNC_MAX": ("gmail_full_sync_max", int),
    "HOOKYARD_HOST": ("host", str),
    "HOOKYARD_PORT": ("port", int),
    "HOOKYARD_PUBLIC_URL": ("public_url", str),
    "HOOKYARD_MAX_BODY_BYTES": ("max_body_bytes", int),
    "HOOKYARD_BODY_READ_TIMEOUT_S": ("body_read_timeout_s", float),
    "HOOKYARD_MAX_RENDERED_BYTES": ("max_rendered_bytes", int),
    "HOOKYARD_DRY_RUN_TIMEOUT_S": ("dry_run_timeout_s", float),
    "HOOKYARD_DRY_RUN_MAX_OUTPUT_BYTES": ("dry_run_max_output_bytes", int),
    "HOOKYARD_MAX_JSON_DEPTH": ("max_json_depth", int),
    "HOOKYARD_SIGNATURE_TOLERANCE_S": ("signature_tolerance_s", int),
    "HOOKYARD_SECRET_ROTATION_GRACE_S": ("secret_rotation_grace_s", int),
    "HOOKYARD_SUBSCRIPTION_RETRY_DELAYS_S": ("subscription_retry_delays_s", lambda v: tuple(float(d) for d in _csv(v))),
    "HOOKYARD_SUBSCRIPTION_MAX_AGE_S": ("subscription_max_age_s", int),
    "HOOKYARD_SUBSCRIPTION_DISABLE_AFTER_S": ("subscription_disable_after_s", int),
    "HOOKYARD_CONSOLE_SESSION_TTL_S": ("console_session_ttl_s", int),
    "HOOKYARD_TEMPORAL_UI_URL": ("temporal_ui_url", str),
    "HOOKYARD_DB_POOL_MIN": ("db_pool_min", int),
    "HOOKYARD_DB_POOL_MAX": ("db_pool_max", int),
    "HOOKYARD_DISPATCH_BATCH_SIZE": ("dispatch_batch_size", int),
    "HOOKYARD_DISPATCH_POLL_INTERVAL_S": ("dispatch_poll_interval_s", float),
    "HOOKYARD_DISPATCH_STALL_AFTER_S": ("dispatch_stall_after_s", float),
    "HOOKYARD_ACTIVITY_HEARTBEAT_TIMEOUT_S": ("activity_heartbeat_timeout_s", float),
    "HOOKYARD_AUTOMATION_IDLE_TIMEOUT_S": ("automation_idle_timeout_s", float),
    "HOOKYARD_AUTOMATION_MAX_BATCH": ("automation_max_batch", int),
    "HOOKYARD_AUTOMATION_HISTORY_LIMIT": ("automation_history_limit", int),
    "HOOKYARD_AUTOMATION_MAX_PENDING": ("automation_max_pending", int),
    "HOOKYARD_LANES": ("lanes", lambda v: _bounded("HOOKYARD_LANES", v, 0, 4096)),
    # ~40 bytes an id in a lane's continue-as-new payload: 25,000 stay near 1 MB, below Temporal's 2 MB.
    "HOOKYARD_LANE_MAX_PENDING": ("lane_max_pending", lambda v: _bounded("HOOKYARD_LANE_MAX_PENDING", v, 1, 25000)),
    "HOOKYARD_RECONCILE_INTERVAL_S": ("reconcile_interval_s", float),
    "HOOKYARD_RECONCILE_GRACE_S": ("reconcile_grace_s", float),
    "HOOKYARD_WORKER_MAX_CONCURRENT_ACTIVITIES": ("worker_max_concurrent_activities", int),
    "HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S": ("worker_graceful_shutdown_s", float),
    "HOOKYARD_SERVE_WORKERS": ("serve_workers", int),
    "HOOKYARD_WORKER_PROCESSES": ("worker_processes", int),
    "HOOKYARD_LOG_LEVEL": ("log_level", str),
    "HOOKYARD_LOG_JSON": ("log_json", lambda v: v.lower() in {"1", "true", "yes", "on"}),
    "HOOKYARD_METRICS_HOST": ("metrics_host", str),
    "HOOKYARD_METRICS_PORT": ("metrics_port", int),
    "HOOKYARD_TEMPORAL_METRICS_PORT": ("temporal_metrics_port", int),
    "HOOKYARD_OTEL_ENDPOINT": ("otel_endpoint", str),
    "HOOKYARD_RATE_LIMITS": ("rate_limits", lambda v: parse_rate_limits(v)),
    "HOOKYARD_EGRESS_ALLOW": ("egress_allow", lambda v: parse_egress_allow(v)),
    "HOOKYARD_EGRESS_DENY": ("egress_deny", lambda v: parse_egress_allow(v, "HOOKYARD_EGRESS_DENY")),
    "HOOKYARD_OWNER_DB_POOL_MAX": ("owner_db_pool_max", lambda v: _bounded("HOOKYARD_OWNER_DB_POOL_MAX", v, 1, 20)),
    "HOOKYARD_OWNER_DB_CONNECT_TIMEOUT_S": ("owner_db_connect_timeout_s", float),
    "HOOKYARD_OWNER_DB_STATEMENT_TIMEOUT_S": ("owner_db_statement_timeout_s", float),
    "HOOKYARD_OUTBOX_MAX_ROW_BYTES": ("outbox_max_row_bytes", int),
}


class MasterKeysMissing(SettingsError):
    """No master keys are configured: stored secrets and Temporal payloads could not be read."""


def require_master_keys(settings: Settings) -> tuple[tuple[str, bytes], ...]:
    """The master keys; `MasterKeysMissing` without them (the one check every process makes at start)."""
    if not settings.master_keys:
        raise MasterKeysMissing(
            "HOOKYARD_MASTER_KEYS is not set; secrets at rest and Temporal payloads are encrypted with it. "
            "Generate a key with `hookyard keys generate` and set HOOKYARD_MASTER_KEYS=<id>:<base64 key> "
            "(or HOOKYARD_MASTER_KEYS_FILE)."
        )
    return settings.master_keys


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


def parse_rate_limits(value: str) -> tuple[tuple[str, float], ...]:
    """Parse `provider=N/s[,provider=N/m...]` into (provider, requests per second); 0 is unlimited."""
    rates: list[tuple[str, float]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        provider, sep, rate = (s.strip() for s in item.partition("="))
        amount, _, unit = rate.partition("/")
        per = {"s": 1.0, "": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}.get(unit.strip())
        try:
            count = float(amount)
        except ValueError:
            count = -1.0
        if not sep or not provider or per is None or not count >= 0:
            raise SettingsError(f"HOOKYARD_RATE_LIMITS: {item!r} is not 'provider=N/s' (or N/m, N/h)")
        rates.append((provider, count / per))
    return tuple(rates)


def parse_egress_allow(value: str, setting: str = "HOOKYARD_EGRESS_ALLOW") -> tuple[AllowRule, ...]:
    """Parse `cidr`, `cidr:port`, `host`, `host:port` and `[ipv6]:port` entries, comma-separated."""
    try:
        return parse_allow(value, setting)
    except EgressAllowError as exc:
        raise SettingsError(str(exc)) from None


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
        except SettingsError:
            raise  # already names the setting and the entry
        except ValueError as exc:
            raise SettingsError(f"{name}: cannot read {raw!r}") from exc
    if env.get("HOOKYARD_MASTER_KEYS"):
        values["master_keys"] = parse_master_keys(env["HOOKYARD_MASTER_KEYS"])
    elif env.get("HOOKYARD_MASTER_KEYS_FILE"):
        text = Path(env["HOOKYARD_MASTER_KEYS_FILE"]).read_text().strip()
        values["master_keys"] = parse_master_keys(text)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
