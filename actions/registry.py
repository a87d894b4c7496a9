"""Every action type, by name. A new action is a module plus one line here."""

from __future__ import annotations

from collections.abc import Mapping

from actions import email, gmail, http, newsletter, novu, slack
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


class UnknownAction(LookupError):
    """No action type has this name."""


def get_action(name: str) -> ActionType:
    """The action type called `name`."""
    try:
        return ACTIONS[name]
    except KeyError:
        raise UnknownAction(f"unknown action type {name!r}; known: {', '.join(sorted(ACTIONS))}") from None
