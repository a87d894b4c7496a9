"""The outbox benchmark in small (bench/outbox.py): both sides send every row once.

20 rows through the reference design (poller + one Temporal workflow per row) and through a
`postgres.outbox` workflow with `novu.trigger`, on a stack of the benchmark's own. Speed is
the full run's business (`make bench-outbox`); here: the benchmark works, every row ends SENT,
and the Novu stand-in saw one transaction per row on each side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# It starts a stack of its own: real PostgreSQL, Redis and Temporal.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def test_both_sides_of_the_outbox_benchmark_send_every_row_once_and_mark_it_sent():
    argv = [sys.executable, "-m", "bench.outbox", "--rows", "20", "--warmup", "1", "--json"]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout)
    assert [r["side"] for r in results["runs"]] == ["reference", "hookyard"]
    for side in results["runs"]:
        assert (side["sent"], side["failed"]) == (20, 0), side
        assert (side["novu_requests"], side["novu_distinct_transactions"]) == (20, 20), side
    assert results["summary"]["ratio"] > 0
