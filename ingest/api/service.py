"""Operations served outside `/api` (ingest, OAuth pages, health), declared beside the API's.

Their handlers live in `ingest`; only the declarations are here, so the router and the
OpenAPI document cover every route from the same list.
"""

from __future__ import annotations

from ingest import connect, health, hooks, metrics_route, pubsub, ticks
from ingest.api.operations import UUID_SCHEMA, Body, Operation, Param, Reply, error

_STORED = Reply("Stored: `{event_id, duplicate: false}`.", {"type": "object"})
_HTML = {"type": "string"}


def _html(description: str) -> Reply:
    return Reply(description, _HTML, "text/html")


def ingest_operations() -> list[Operation]:
    """Webhooks, schedule ticks and Gmail pushes: authenticated by signature or OIDC, not API key."""
    any_body = Body({}, media_type="*/*")
    return [
        Operation(
            "POST",
            "/hooks/{endpoint_id}",
            "Deliver a webhook",
            "ingest",
            hooks.receive_webhook,
            {202: _STORED, 200: Reply("Already stored: `{event_id, duplicate: true}`.", {"type": "object"})},
            params=(Param("endpoint_id", UUID_SCHEMA, where="path"),),
            body=any_body,
            errors={401: error("Missing, wrong or stale signature.")},
            public=True,
            description="Signature headers of the endpoint's scheme (standard-webhooks, github, ...).",
        ),
        Operation(
            "POST",
            "/ingest/ticks/{trigger_id}",
            "Tick a schedule.tick workflow (from Cloud Scheduler, a CronJob, ...)",
            "ingest",
            ticks.receive_tick,
            {202: _STORED, 200: Reply("This scheduled time was already stored.", {"type": "object"})},
            params=(Param("trigger_id", UUID_SCHEMA, where="path"),),
            body=Body({}, required=False, media_type="*/*"),
            errors={
                400: error("The scheduled time given cannot be read."),
                401: error("Missing or wrong signature or OIDC token."),
            },
            public=True,
            description=(
                "Signed like a webhook of the configured endpoint, or `Authorization: Bearer <Google OIDC token>`. "
                "Deduplicated on body `scheduled_time` (HMAC and OIDC) or, with OIDC only, `X-Scheduled-Time` / "
                "`X-CloudScheduler-ScheduleTime`."
            ),
        ),
        Operation(
            "POST",
            pubsub.PUSH_PATH,
            "Gmail change notification, pushed by Google Pub/Sub",
            "ingest",
            pubsub.receive_gmail_push,
            {204: Reply("Acknowledged: stored once per watched mailbox, or nothing to do.")},
            body=Body({"type": "object"}),
            errors={
                400: error("Not a wrapped Pub/Sub push carrying a Gmail notification."),
                401: error("Missing or wrong OIDC token."),
                503: error("Storage unavailable; Pub/Sub redelivers."),
            },
            public=True,
            description=(
                "`Authorization: Bearer <Google OIDC token>` of the configured push service account and audience. "
                "Deduplicated on the Pub/Sub message id."
            ),
        ),
    ]


def oauth_operations() -> list[Operation]:
    """The browser side of connecting an OAuth2 account: HTML pages, never JSON."""
    return [
        Operation(
            "GET",
            "/oauth/connect/{token}",
            "Open a connect link: redirects to the provider's consent screen",
            "oauth",
            connect.start_connect,
            {302: Reply("To the provider's consent screen (sets a cookie binding the sign-in).")},
            params=(Param("token", {"type": "string"}, where="path"),),
            errors={
                400: _html("The link is not valid."),
                404: _html("No such link."),
                410: _html("The link was used or has expired."),
                503: _html("The service is briefly unavailable."),
            },
            public=True,
        ),
        Operation(
            "GET",
            "/oauth/callback",
            "OAuth2 callback: stores the tokens encrypted, or explains why not",
            "oauth",
            connect.oauth_callback,
            {
                200: _html("Connected."),
                303: Reply("Connected; to `redirect_after` with `credential_id` and `status`."),
            },
            errors={
                400: _html("Denied, expired or reused sign-in, another browser, or a refused code."),
                410: _html("The link was used or expired meanwhile."),
                502: _html("The provider could not be reached; open the link again."),
                503: _html("The service is briefly unavailable."),
            },
            public=True,
        ),
    ]


def health_operations() -> list[Operation]:
    """Probes and metrics: public, and never a 401."""
    return [
        Operation(
            "GET",
            "/healthz",
            "Liveness",
            "health",
            health.healthz,
            {200: Reply("OK", {"type": "object"})},
            public=True,
            storage=False,
        ),
        Operation(
            "GET",
            "/readyz",
            "Readiness",
            "health",
            health.readyz,
            {200: Reply("OK", {"type": "object"}), 503: Reply("PostgreSQL unreachable.", {"type": "object"})},
            public=True,
        ),
        Operation(
            "GET",
            "/metrics",
            "Prometheus metrics of this process",
            "health",
            metrics_route.metrics,
            {
                200: Reply(
                    "Prometheus text format, or OpenMetrics when the Accept header asks for it.",
                    {"type": "string"},
                    "text/plain",
                )
            },
            public=True,
            storage=False,
        ),
    ]
