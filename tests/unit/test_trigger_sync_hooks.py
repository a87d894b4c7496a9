"""Which trigger types keep outside state, and whose hook keeps it."""

from __future__ import annotations

from triggers.registry import TRIGGERS
from worker.dispatch.trigger_sync import WORKER_HOOKS, hooked_types, sync_hook
from worker.schedule_cron.schedule import sync_schedule


def test_schedule_cron_is_kept_by_the_worker_capability_that_runs_its_ticks() -> None:
    assert sync_hook("schedule.cron") is sync_schedule


def test_capability_hooks_serve_registered_trigger_types_that_declare_no_hook_of_their_own() -> None:
    for name in WORKER_HOOKS:
        assert name in TRIGGERS
        assert TRIGGERS[name].sync is None


def test_hooked_types_are_the_types_with_a_hook_either_way() -> None:
    declared = {name for name, trigger in TRIGGERS.items() if trigger.sync is not None}
    assert set(hooked_types()) == declared | set(WORKER_HOOKS)
    assert "schedule.cron" in hooked_types()
    assert sync_hook("webhook.received") is None
    assert sync_hook("no.such-type") is None
