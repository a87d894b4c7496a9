"""The Grafana dashboard only charts series hookyard exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from telemetry.metrics import Metrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "hookyard-dashboard.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def expressions() -> list[str]:
    return [t["expr"] for p in load()["panels"] for t in p.get("targets", [])]


def exported_sample_names() -> set[str]:
    metrics = Metrics()
    # Labelled series appear in the exposition once they have a child.
    metrics.record_attempt("http.request", "succeeded", 0.1)
    metrics.webhook.verification_failed("bad_signature")
    metrics.provider_failovers.labels("a", "b")
    metrics.credential_refresh_failures.labels("google")
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def test_every_hookyard_series_on_the_dashboard_is_exported() -> None:
    used = {name for expr in expressions() for name in re.findall(r"\bhookyard_[a-z_]+", expr)}
    assert used, "the dashboard charts no hookyard series"
    assert used <= exported_sample_names()


def test_every_exported_hookyard_metric_is_charted() -> None:
    used = " ".join(expressions())
    families = {f.name for f in Metrics().registry.collect()}
    assert {name for name in families if name not in used} == set()


def test_panels_have_unique_ids_fit_the_grid_and_use_the_datasource_variable() -> None:
    panels = load()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"]
