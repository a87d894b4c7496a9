"""What an action type is; actions are plain async functions plus a config schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable
from uuid import UUID

import asyncpg
import httpx

from actions.egress import EgressPolicy
from actions.templating import DEFAULT_MAX_RENDERED_BYTES, RenderBudget

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Credential:
    """A decrypted credential, loaded inside the activity by id; never logged or returned."""

    id: str
    provider: str
    secret: Mapping[str, str] = field(repr=False)
    account: str | None = None


class CredentialSource(Protocol):
    """Loads the owner's credentials by id (refreshing OAuth2 tokens when they are due).

    Raises `PermanentActionError` when the id is unknown, belongs to another owner, is for a
    provider not in `providers`, or needs the owner to reconnect it.
    """

    async def load(self, credential_id: str, providers: Collection[str]) -> Credential: ...


@runtime_checkable
class OAuthCredentialSource(CredentialSource, Protocol):
    """A credential source that can also make provider calls under OAuth's 401 rule."""

    async def call(
        self, credential_id: str, providers: Collection[str], use: Callable[[Credential], Awaitable[T]]
    ) -> T:
        """Run one provider call with the credential under OAuth's 401 rule (oauth/vault.py):
        `use` raises `oauth.vault.TokenRejected` on a 401 and is retried once with a refreshed
        token; a dead grant becomes a `PermanentActionError` naming the reason."""
        ...


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Everything one attempt may use. Secrets arrive here already decrypted, never in config."""

    http: httpx.AsyncClient
    execution_id: str
    attempt: int
    template_context: Mapping[str, Any]
    # The workflow's Standard Webhooks secret; for a subscription's delivery, each valid secret
    # (newest first) space-separated.
    signing_secret: str | None = None
    owner_id: str = ""
    # The workflow's own credential (`action.credential_id`); configs may name further ones.
    credential_id: str | None = None
    credentials: CredentialSource | None = None
    # Shared per-provider rate limiting; None means unlimited.
    limiter: RateLimiter | None = None
    # Provider API base URLs that differ from the public ones (regional endpoints, stand-ins).
    api_bases: Mapping[str, str] = field(default_factory=dict)
    # The egress policy, for a check a client cannot make itself; `http` applies it on every request.
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    # Counts a failover between providers (the worker's metrics); a no-op by default.
    record_failover: Callable[[str, str], None] = lambda from_provider, to_provider: None
    # Bytes the templates of one outgoing request may produce (HOOKYARD_MAX_RENDERED_BYTES).
    max_rendered_bytes: int = DEFAULT_MAX_RENDERED_BYTES
    # Signs a connect link id into its URL token (the worker's keyring); for deliveries only.
    sign_connect_link: Callable[[UUID], str] | None = None

    def render_budget(self) -> RenderBudget:
        """A fresh output budget for the templates of one request."""
        return RenderBudget(self.max_rendered_bytes)


class RateLimiter(Protocol):
    """Waits until a request to `provider` (for one credential) fits the shared limit."""

    async def acquire(self, provider: str, key: str) -> None: ...


MASK = "********"
"""What a preview shows instead of a secret."""


@dataclass(frozen=True, slots=True)
class PreviewContext:
    """What a preview may use: the template context and budget of a real attempt, and which
    credential the workflow names (its id and provider only; nothing is decrypted)."""

    template_context: Mapping[str, Any]
    budget: RenderBudget
    execution_id: str
    credential_id: str | None = None
    credential_provider: str | None = None


@dataclass(frozen=True, slots=True)
class RequestPreview:
    """The HTTP request an action would send, built without sending it; secrets masked.

    `body` is the JSON value sent, the text sent, or None; `notes` say what is added only
    at send time (a credential's headers, a signature).
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: object = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON shape shown by dry runs."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": self.body,
            "notes": list(self.notes),
        }


# Renders what one attempt would send; raises `TemplateError` or `PermanentActionError` as the
# attempt would. Must not send, decrypt or call any provider.
ActionPreview = Callable[[PreviewContext, Mapping[str, Any]], RequestPreview]

ActionRun = Callable[[ActionContext, Mapping[str, Any]], Awaitable[dict[str, Any]]]
# Checks a config against the owner's data (e.g. that named credentials are theirs);
# raise `ActionConfigError` to answer 422.
ActionConfigCheck = Callable[[asyncpg.Connection, UUID, Mapping[str, Any], UUID | None], Awaitable[None]]


# Asks a running execution of an action with a workflow of its own to stop, inside the API's
# transaction holding the execution's row lock; `reason` is the error kept if it ends at once.
CancelOwnWorkflow = Callable[[asyncpg.Connection, UUID, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class OwnWorkflow:
    """Declares an action that outlives one attempt and runs as a Temporal workflow of its own.

    The worker's batch activity never calls such an action's `run`: it hands the claimed
    execution to the worker capability that serves the action (worker/<capability>/), which
    starts the workflow; the workflow records the execution's outcome. The worker refuses to
    start while a registered action of this kind has no capability serving it.
    """

    # What the API's cancel does once the execution is running (queued ones are just cancelled).
    cancel: CancelOwnWorkflow


class ActionConfigError(ValueError):
    """An action config is schema-valid but refers to something unusable."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class ActionType:
    """A kind of action. Register an instance in `actions.registry.ACTIONS`."""

    name: str
    description: str
    config_schema: dict[str, Any]
    run: ActionRun
    wants_signing_secret: Callable[[Mapping[str, Any]], bool] = lambda config: False
    # Providers whose credential may be given as the workflow's `action.credential_id`.
    credential_providers: tuple[str, ...] = ()
    check_config: ActionConfigCheck | None = None
    # Warnings for secrets kept in plain config that belong in a credential (shown by the API).
    plain_secrets: Callable[[Mapping[str, Any]], list[str]] = lambda config: []
    # Set for an action handed over to a workflow of its own (a newsletter); None runs inline.
    own_workflow: OwnWorkflow | None = None
    # The request an attempt would send, for dry runs; None: dry runs show the rendered config.
    preview: ActionPreview | None = None


def json_object(response: httpx.Response) -> dict[str, Any]:
    """A provider's JSON object answer, or {} when the body is not one (error pages, empty bodies)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
