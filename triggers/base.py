"""What a trigger type is: how it is configured, routed, turned into trigger data and matched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from schemas.errors import NotFound
from schemas.jsonlimits import DEFAULT_MAX_DEPTH
from schemas.store.endpoints import get_endpoint
from settings import TriggerSettings
from triggers.filters import FilterOutcome, evaluate, validate_filter

if TYPE_CHECKING:
    from temporalio.client import Client


WORKFLOW_ROUTE = "@workflow"
"""A routing key meaning "the workflow's own id": for triggers whose events name the workflow
they are for (schedule ticks). The database substitutes the id when the row is written."""


class TriggerConfigError(ValueError):
    """A trigger config is valid JSON Schema-wise but refers to something unusable."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """A stored event as the dispatcher sees it."""

    id: UUID
    owner_id: UUID
    source_type: str
    source_id: str
    headers: Mapping[str, str]
    body: bytes
    received_at: str
    # How deep a trigger may parse `body` (the `max_json_depth` setting); a deeper body is
    # not JSON to its trigger, so nothing downstream walks or stores an unbounded tree.
    max_json_depth: int = DEFAULT_MAX_DEPTH


ConfigCheck = Callable[[asyncpg.Connection, UUID, Mapping[str, Any]], Awaitable[None]]


class TriggerSyncError(RuntimeError):
    """A sync hook could not converge; the message is shown to the owner, so no secrets in it."""


@dataclass(frozen=True, slots=True)
class TriggerSyncContext:
    """What a sync hook may use to converge outside state."""

    temporal: Client
    settings: TriggerSettings
    pool: asyncpg.Pool


@dataclass(frozen=True, slots=True)
class WorkflowSyncState:
    """The workflow as a sync hook must make the outside world reflect it.

    `deleted` means the workflow is gone or no longer uses this trigger type: remove whatever
    the hook set up. `previous_config` is the config last synced for this trigger type (None
    if nothing was), so a hook can undo what an earlier definition set up.
    """

    id: UUID
    owner_id: UUID
    trigger_type: str
    trigger_config: Mapping[str, Any]
    active: bool
    deleted: bool
    previous_config: Mapping[str, Any] | None = None


SyncHook = Callable[[TriggerSyncContext, WorkflowSyncState], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ManualRun:
    """What `POST /api/workflows/{id}/run` gives a trigger to build its data from."""

    workflow_id: str
    # The workflow's routing key (its endpoint, mailbox or own id): where a real event would come from.
    source_id: str
    config: Mapping[str, Any]
    # The request body: the part of a real event the owner writes (a webhook's body, a message's fields).
    given: dict[str, Any]
    now: str


ManualData = Callable[[ManualRun], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TriggerType:
    """A kind of trigger. Register an instance in `triggers.registry.TRIGGERS`.

    `source_type` names the inbox source that feeds it; `routing_key(config)` must equal the
    `source_id` of the events it wants, which makes resolution one index lookup.
    """

    name: str
    source_type: str
    description: str
    config_schema: dict[str, Any]
    routing_key: Callable[[Mapping[str, Any]], str]
    trigger_data: Callable[[InboxEvent], dict[str, Any]]
    match: Callable[[Mapping[str, Any], Mapping[str, Any]], FilterOutcome]
    check_config: ConfigCheck | None = None
    # Keeps outside state (a Temporal Schedule, a mailbox watch) in step with the workflow row.
    # Called by the dispatcher's sync loop after every change of trigger, config, active or
    # deletion, and retried until it succeeds; it must be idempotent.
    sync: SyncHook | None = None
    # A manual run's trigger data, in the shape real events give (so templates work on both),
    # and what the request body stands for, as the catalog documents it.
    manual_data: ManualData | None = None
    manual_doc: str = ""
    # An inbox source that feeds hookyard's own workflow behind this trigger rather than owners'
    # workflows (Gmail pushes wake the mailbox workflow, whose sync stores `source_type`
    # events). The dispatcher forwards its events (worker/dispatch/forwarding.py), never
    # matches them, and refuses to start without a forwarder for it.
    internal_source: str | None = None
    # A JSON Schema of the trigger data, shown in the catalog, for types whose data is hookyard's
    # own shape rather than a sender's (so templates can be written against it).
    data_schema: dict[str, Any] | None = None


def match_filter(config: Mapping[str, Any], data: Mapping[str, Any]) -> FilterOutcome:
    """Whether trigger data passes the config's optional `filter` (no filter: it does)."""
    return evaluate(config.get("filter"), data)


def check_filter(config: Mapping[str, Any]) -> None:
    """A trigger config's optional `filter` must be a valid condition."""
    if config.get("filter") is not None:
        try:
            validate_filter(config["filter"])
        except ValueError as exc:
            raise TriggerConfigError("trigger.config.filter", str(exc)) from None


async def check_endpoint(conn: asyncpg.Connection, owner_id: UUID, endpoint_id: str) -> None:
    """The config's `endpoint_id` must name one of the owner's live endpoints."""
    try:
        await get_endpoint(conn, owner_id, UUID(str(endpoint_id)))
    except NotFound:
        raise TriggerConfigError("trigger.config.endpoint_id", "no such endpoint") from None
