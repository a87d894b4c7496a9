"""Every Temporal capability of the worker has one layout: contract, workflow, activities side by side."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "worker"
PROJECT = {
    *("actions", "hookyard", "ingest", "oauth", "runtime"),
    *("schemas", "settings", "telemetry", "triggers", "worker"),
}
# Folders laid out as capabilities (gmail/ joins when its contract moves next to its workflow).
CAPABILITIES = sorted(p.parent.name for p in WORKER.glob("*/contract.py"))


def _project_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PROJECT}
    return found


def test_the_automation_newsletter_and_schedule_cron_capabilities_are_laid_out() -> None:
    assert {"automation", "newsletter", "schedule_cron"} <= set(CAPABILITIES)


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_a_capability_has_its_contract_workflow_and_activities(capability: str) -> None:
    for part in ("contract.py", "workflow.py", "activities.py"):
        assert (WORKER / capability / part).is_file(), f"worker/{capability}/{part}"


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_a_workflow_imports_nothing_of_the_project_but_its_own_contract(capability: str) -> None:
    # What the sandbox passes through stays small and deterministic: names and dataclasses.
    assert _project_imports(WORKER / capability / "workflow.py") == {f"worker.{capability}.contract"}
