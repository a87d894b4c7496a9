"""Which worker capability takes over the executions of an action with a workflow of its own.

Actions declare `own_workflow` in their registration (actions/base.py); each capability that
serves one names it (`action`) and offers a `hand_off`. The worker process builds the batch
activity's hand-overs from its capabilities with `hand_offs`, which refuses a worker missing one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import asyncpg

from actions.base import ActionType
from actions.registry import ACTIONS
from worker.automation.activities import HandOff


class HandsOver(Protocol):
    """A worker capability serving an action that runs as a workflow of its own."""

    @property
    def action(self) -> str:
        """The name of the action type it serves (declared `own_workflow` in actions/)."""
        ...

    async def hand_off(self, row: asyncpg.Record) -> dict[str, Any]:
        """Start the action's workflow for a claimed execution; the execution's result meanwhile."""
        ...


class NoHandOff(RuntimeError):
    """An action declares a workflow of its own, but no capability of the worker serves it."""


def hand_offs(capabilities: Iterable[HandsOver], actions: Mapping[str, ActionType] = ACTIONS) -> dict[str, HandOff]:
    """The hand-over of every action declared `own_workflow`, by action name.

    Raises `NoHandOff` for such an action that none of `capabilities` serves, so a worker that
    could only fail those executions does not start.
    """
    served = {capability.action: capability.hand_off for capability in capabilities}
    missing = sorted(name for name, action in actions.items() if action.own_workflow is not None and name not in served)
    if missing:
        raise NoHandOff(f"no worker capability serves {', '.join(missing)}")
    return {name: served[name] for name, action in actions.items() if action.own_workflow is not None}
