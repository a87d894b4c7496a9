"""`hookyard.newsletter`: one workflow per newsletter execution (id `newsletter-<execution id>`).

The workflow waits for `send_at` on a durable timer, then runs one activity per batch of
recipients (not one per recipient: Temporal round trips are what costs) with a durable pause
between batches, continuing as new before its history grows large. What the batches do is in
activities.py; names and inputs in contract.py.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from worker.newsletter.contract import NEWSLETTER_WORKFLOW, SEND_BATCH_ACTIVITY, BatchProgress, NewsletterJob


@workflow.defn(name=NEWSLETTER_WORKFLOW)
class NewsletterWorkflow:
    """Waits for send_at, then sends batch after batch until none is left or it is cancelled."""

    @workflow.run
    async def run(self, job: NewsletterJob) -> BatchProgress:
        """Returns the last batch's progress, which carries the final status."""
        if job.send_at is not None:
            wait = job.send_at - workflow.now().timestamp()
            if wait > 0:
                await workflow.sleep(wait)
        while True:
            progress: BatchProgress = await workflow.execute_activity(
                SEND_BATCH_ACTIVITY,
                job.execution_id,
                result_type=BatchProgress,
                start_to_close_timeout=timedelta(minutes=15),
                heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout_s),
                # A lost worker or a database outage: try again for as long as it takes; every
                # recipient's outcome is already recorded, so a retry repeats nothing.
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)),
            )
            if progress.done:
                return progress
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() > job.history_limit:
                workflow.continue_as_new(
                    NewsletterJob(job.execution_id, None, job.pause_s, job.heartbeat_timeout_s, job.history_limit)
                )
            if job.pause_s > 0:
                await workflow.sleep(job.pause_s)
