"""Actions that run as a workflow of their own declare it, and the worker serves each of them."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from actions import newsletter
from actions.base import ActionType, OwnWorkflow
from actions.registry import ACTIONS
from worker.automation.handoff import NoHandOff, hand_offs
from worker.newsletter.activities import NewsletterActivities


class _Capability:
    def __init__(self, action: str) -> None:
        self.action = action

    async def hand_off(self, row: asyncpg.Record) -> dict[str, Any]:
        return {"handed": self.action}


def test_the_newsletter_declares_a_workflow_of_its_own_in_its_registration() -> None:
    own = ACTIONS[newsletter.NAME].own_workflow
    assert isinstance(own, OwnWorkflow)
    assert own.cancel is newsletter.cancel


def test_actions_that_run_inline_declare_no_workflow_of_their_own() -> None:
    inline = [name for name, action in ACTIONS.items() if action.own_workflow is None]
    assert "http.request" in inline
    assert newsletter.NAME not in inline


def test_the_worker_serves_every_action_with_a_workflow_of_its_own() -> None:
    declared = {name for name, action in ACTIONS.items() if action.own_workflow is not None}
    assert declared == {NewsletterActivities.action}


def test_hand_offs_are_keyed_by_the_action_each_capability_serves() -> None:
    capability = _Capability(newsletter.NAME)
    assert hand_offs([capability]) == {newsletter.NAME: capability.hand_off}


def test_a_worker_without_a_capability_for_a_declared_action_refuses_to_start() -> None:
    with pytest.raises(NoHandOff, match=newsletter.NAME):
        hand_offs([])


def test_capabilities_for_actions_that_run_inline_are_not_handed_anything() -> None:
    inline = ACTIONS["http.request"]
    actions: dict[str, ActionType] = {inline.name: inline}
    assert hand_offs([_Capability(inline.name)], actions) == {}
