-- Nothing is stranded: the dispatcher's reconciler (worker/reconciler.py) re-drives executions,
-- mailboxes and newsletters whose Temporal workflow is gone or overdue.

-- When the current attempt was claimed: an attempt claimed by another run of the automation less
-- than the batch activity's start-to-close ago may still be in flight, so it is not taken again.
ALTER TABLE executions ADD COLUMN attempt_started_at timestamptz;

-- Hand-over also takes `running` rows (waiting for a retry) that the reconciler handed back, and
-- takes them per automation (each has its own cap of what Temporal holds), so by workflow.
DROP INDEX executions_handover_idx;
CREATE INDEX executions_handover_idx ON executions (workflow_id, seq)
    WHERE signalled_at IS NULL AND status IN ('queued', 'running');
-- What Temporal holds per automation: the hand-over's pending cap counts these, the reconciler
-- walks them.
CREATE INDEX executions_outstanding_idx ON executions (workflow_id, signalled_at)
    WHERE signalled_at IS NOT NULL AND status IN ('queued', 'running');

-- One reconciler replica at a time per Temporal workflow it checks (automation-<id>,
-- newsletter-<id>, gmail-mailbox-<id>); the lease also spaces the checks of one workflow.
CREATE TABLE reconcile_leases (
    temporal_workflow_id text PRIMARY KEY,
    lease_until          timestamptz NOT NULL
);
