"""What an action type is; actions are plain async functions plus a config schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Everything one attempt may use. Secrets arrive here already decrypted, never in config."""

    http: httpx.AsyncClient
    execution_id: str
    attempt: int
    template_context: Mapping[str, Any]
    signing_secret: str | None = None


ActionRun = Callable[[ActionContext, Mapping[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ActionType:
    """A kind of action. Register an instance in `actions.registry.ACTIONS`."""

    name: str
    description: str
    config_schema: dict[str, Any]
    run: ActionRun
    wants_signing_secret: Callable[[Mapping[str, Any]], bool] = lambda config: False
