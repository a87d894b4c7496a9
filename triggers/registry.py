"""Every trigger type, by name. A new type is a module plus one line here."""

from __future__ import annotations

from collections.abc import Mapping

from triggers import failure, gmail, outbox, schedule, tick, webhook
from triggers.base import TriggerType

TRIGGERS: Mapping[str, TriggerType] = {
    t.name: t
    for t in (
        webhook.TRIGGER,
        schedule.TRIGGER,
        tick.TRIGGER,
        gmail.TRIGGER,
        failure.TRIGGER,
        outbox.TRIGGER,
    )
}


class UnknownTrigger(LookupError):
    """No trigger type has this name."""


def get_trigger(name: str) -> TriggerType:
    """The trigger type called `name`."""
    try:
        return TRIGGERS[name]
    except KeyError:
        raise UnknownTrigger(f"unknown trigger type {name!r}; known: {', '.join(sorted(TRIGGERS))}") from None


def for_source(source_type: str) -> list[TriggerType]:
    """Trigger types fed by one inbox source."""
    return [t for t in TRIGGERS.values() if t.source_type == source_type]


def internal_sources() -> set[str]:
    """Inbox sources that feed hookyard's own workflows, as trigger types declare them."""
    return {t.internal_source for t in TRIGGERS.values() if t.internal_source is not None}
