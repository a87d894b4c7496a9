"""What a trigger type is: how it is configured, routed, turned into trigger data and matched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from triggers.filters import FilterOutcome


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


ConfigCheck = Callable[[asyncpg.Connection, UUID, Mapping[str, Any]], Awaitable[None]]


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
