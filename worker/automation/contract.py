"""Inputs and outputs of the automation workflow and its activity: ids and numbers, never data.

Trigger data, configs and secrets stay in PostgreSQL; Temporal history carries execution ids.
`execute_batch` is the one way a workflow holding executions (a lane, an automation) calls the
batch activity, so both run it with the same timeouts and retry policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

WORKFLOW_NAME = "hookyard.automation"
ENQUEUE_SIGNAL = "enqueue"
RUN_BATCH_ACTIVITY = "hookyard.run_batch"
# The batch activity's start-to-close; schemas/store/executions.py ATTEMPT_IN_FLIGHT_S matches it.
BATCH_START_TO_CLOSE_S = 15 * 60.0
# A workflow task a lost worker held is given to another after this long (Temporal's default
# is 10 s, which alone would break the 10 s resume bound). Histories stay short (continue as
# new at `history_limit`), so a replay fits well inside it.
WORKFLOW_TASK_TIMEOUT_S = 4.0


def automation_id(workflow_id: str) -> str:
    """Temporal workflow id of a user workflow's automation (no names or data in it)."""
    return f"automation-{workflow_id}"


@dataclass
class Enqueue:
    """Signal: run these executions. Carries the latest concurrency limit of the workflow.

    `redrive`: those of `execution_ids` the reconciler handed back (PostgreSQL has them open
    though the automation may have counted them done); run them again unless they are pending,
    in flight or waiting for a retry. `claim_for_run` decides whether an attempt may start.
    """

    execution_ids: list[str]
    concurrency_limit: int = 10
    redrive: list[str] = field(default_factory=list)


@dataclass
class Retry:
    """An execution waiting for its next attempt."""

    execution_id: str
    due: float


@dataclass
class AutomationState:
    """Workflow input; also what continue-as-new carries over."""

    workflow_id: str
    concurrency_limit: int = 10
    max_batch: int = 100
    idle_timeout_s: float = 300.0
    heartbeat_timeout_s: float = 5.0
    # Continue-as-new past this many history events (Temporal's hard limit is 51,200).
    history_limit: int = 8000
    pending: list[str] = field(default_factory=list)
    retries: list[Retry] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)


@dataclass
class BatchInput:
    """Activity input: attempt each of these executions once."""

    workflow_id: str
    execution_ids: list[str]


@dataclass
class Outcome:
    """What happened to one execution in a batch.

    status: succeeded | failed | cancelled | retry | skipped (already finished or unknown) |
    handed_off (a workflow of its own, e.g. a newsletter's, now runs it and records its outcome;
    the automation is done with it).
    """

    execution_id: str
    status: str
    retry_in_s: float | None = None


# Execution lanes (worker/automation/lane.py): a fixed number of workflows per task queue, each running the
# executions of many user workflows.
LANE_WORKFLOW_NAME = "hookyard.lane"
LANE_ENQUEUE_SIGNAL = "enqueue"
LANE_PREFIX = "lane-"


def lane_prefix(task_queue: str) -> str:
    """What the Temporal workflow ids of a task queue's lanes begin with (ids are unique per
    namespace, and deployments or tests may share one with task queues of their own)."""
    return f"{LANE_PREFIX}{task_queue}-"


def lane_id(task_queue: str, lane: int) -> str:
    """Temporal workflow id of a lane of a task queue."""
    return f"{lane_prefix(task_queue)}{lane}"


@dataclass
class LaneWork:
    """One user workflow's part of a lane hand-over (see `Enqueue` for `redrive`)."""

    workflow_id: str
    execution_ids: list[str]
    concurrency_limit: int = 10
    redrive: list[str] = field(default_factory=list)
    # Strict FIFO through retries (subscription deliveries): while one execution waits for its
    # retry, the workflow's later executions wait too, and the retry goes first.
    ordered: bool = False


@dataclass
class LaneEnqueue:
    """Signal: run these executions, grouped by user workflow."""

    work: list[LaneWork]


@dataclass
class LaneQueue:
    """A user workflow's queue inside a lane, as continue-as-new carries it."""

    workflow_id: str
    concurrency_limit: int
    pending: list[str] = field(default_factory=list)
    retries: list[Retry] = field(default_factory=list)
    ordered: bool = False


@dataclass
class LaneState:
    """Lane workflow input; also what continue-as-new carries over (bounded by the pending caps)."""

    lane: int
    max_batch: int = 100
    idle_timeout_s: float = 300.0
    heartbeat_timeout_s: float = 5.0
    history_limit: int = 1000
    queues: list[LaneQueue] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)


async def execute_batch(holder_id: str, batch: list[str], heartbeat_timeout_s: float) -> list[Outcome]:
    """Run one batch of executions in the batch activity, from inside a workflow."""
    outcomes: list[Outcome] = await workflow.execute_activity(
        RUN_BATCH_ACTIVITY,
        BatchInput(holder_id, batch),
        result_type=list[Outcome],
        start_to_close_timeout=timedelta(seconds=BATCH_START_TO_CLOSE_S),
        heartbeat_timeout=timedelta(seconds=heartbeat_timeout_s),
        # Infrastructure failures (database down, worker lost) retry forever; action
        # failures are decided per execution inside the activity and come back as outcomes.
        # A lost worker's batch is retried half a second after its heartbeat times out, and
        # an outage costs at most 5 s after it ends: a crash costs seconds, not minutes.
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=0.5), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=5)
        ),
    )
    return outcomes
