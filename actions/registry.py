"""Every action type, by name. A new action is a module plus one line here."""

from __future__ import annotations

from collections.abc import Mapping

from actions import deliver, email, gmail, http, newsletter, novu, slack
from actions.base import ActionType

ACTIONS: Mapping[str, ActionType] = {
    a.name: a
    for a in (
        http.ACTION,
        email.ACTION,
        newsletter.ACTION,
        slack.ACTION,
        novu.ACTION,
        gmail.ACTION,
    )
}

# Actions of hookyard's internal workflows: run by the worker, never offered to owners (not in
# the catalog, refused in workflow definitions).
INTERNAL_ACTIONS: Mapping[str, ActionType] = {a.name: a for a in (deliver.ACTION,)}


class UnknownAction(LookupError):
    """No action type has this name."""


def get_action(name: str) -> ActionType:
    """The action type called `name`."""
    try:
        return ACTIONS[name] if name in ACTIONS else INTERNAL_ACTIONS[name]
    except KeyError:
        raise UnknownAction(f"unknown action type {name!r}; known: {', '.join(sorted(ACTIONS))}") from None
