"""Every trigger and action module contributes exactly one registered type."""

from __future__ import annotations

import importlib
import pkgutil

import jsonschema

import actions
import triggers
from actions.base import ActionType
from actions.registry import ACTIONS, INTERNAL_ACTIONS
from oauth.providers import PROVIDERS
from triggers.base import TriggerType
from triggers.registry import TRIGGERS


def _defined(package: object, attr: str, kind: type) -> set[str]:
    names = set()
    for info in pkgutil.iter_modules(package.__path__):  # type: ignore[attr-defined]
        module = importlib.import_module(f"{package.__name__}.{info.name}")  # type: ignore[attr-defined]
        value = getattr(module, attr, None)
        if isinstance(value, kind):
            names.add(value.name)
    return names


def test_every_trigger_module_is_registered() -> None:
    assert _defined(triggers, "TRIGGER", TriggerType) == set(TRIGGERS)


def test_every_action_module_is_registered() -> None:
    assert _defined(actions, "ACTION", ActionType) == set(ACTIONS) | set(INTERNAL_ACTIONS)


def test_config_schemas_are_valid_json_schemas() -> None:
    for kind in [*TRIGGERS.values(), *ACTIONS.values(), *INTERNAL_ACTIONS.values()]:
        jsonschema.Draft202012Validator.check_schema(kind.config_schema)


def test_every_credential_provider_an_action_names_is_declared() -> None:
    for action in ACTIONS.values():
        for provider in action.credential_providers:
            assert provider in PROVIDERS, f"{action.name} names undeclared provider {provider!r}"
