-- Database outbox (trigger `postgres.outbox`): rows of an owner's own table become events.
--
-- outbox_claims is hookyard's side of each claim of an owner's row: written (with the row's
-- event) in hookyard's database while the owner-side transaction that locked the row is still
-- open, so the owner's row is marked PROCESSING only once hookyard durably holds the claim.
-- A row has at most one open claim (state 'claimed') per credential and table; a new claim of
-- the same row gets the next generation, and the event's dedup key carries it.

CREATE TABLE outbox_claims (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id         uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    workflow_id      uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    credential_id    uuid NOT NULL,
    table_name       text NOT NULL,
    row_id           text NOT NULL,
    generation       integer NOT NULL,
    event_id         uuid REFERENCES events(id) ON DELETE SET NULL,
    -- The status the row had when claimed (PENDING, FAILED for a retry, PROCESSING after a lease ran out).
    claimed_from     text NOT NULL,
    -- Set once the owner's side committed PROCESSING: polls need not skip the row (it is not due)
    -- until its lease could run out. Unset after a crash between the two commits.
    owner_marked     boolean NOT NULL DEFAULT false,
    state            text NOT NULL DEFAULT 'claimed' CHECK (state IN ('claimed', 'written_back')),
    -- What was written back: the sent or failed status value, or 'released' (the row was put back).
    outcome          text,
    result           jsonb,
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    written_back_at  timestamptz,
    -- Write-back tries that failed (owner's database down): retried with backoff until written.
    writeback_attempts integer NOT NULL DEFAULT 0,
    writeback_error  text,
    writeback_retry_at timestamptz,
    UNIQUE (credential_id, table_name, row_id, generation)
);
-- At most one open claim of a row, whatever the workflow: two pollers never both hold it.
CREATE UNIQUE INDEX outbox_claims_open_idx ON outbox_claims (credential_id, table_name, row_id)
    WHERE state = 'claimed';
CREATE INDEX outbox_claims_pending_idx ON outbox_claims (workflow_id, id) WHERE state = 'claimed';
CREATE INDEX outbox_claims_event_idx ON outbox_claims (event_id);
-- Retries counted hookyard-side: the row's failed claims and when the last one was written.
CREATE INDEX outbox_claims_failed_idx ON outbox_claims (credential_id, table_name, row_id) WHERE outcome = 'failed';

-- Poll health, one row per outbox workflow, also the poll lease: a poller holds a workflow
-- until lease_until (SKIP LOCKED claim, like trigger sync), so replicas never poll one at once.
CREATE TABLE outbox_health (
    workflow_id        uuid PRIMARY KEY REFERENCES workflows(id) ON DELETE CASCADE,
    lease_until        timestamptz,
    next_poll_at       timestamptz NOT NULL DEFAULT now(),
    last_poll_at       timestamptz,
    last_success_at    timestamptz,
    last_rows_claimed  integer NOT NULL DEFAULT 0,
    rows_claimed_total bigint NOT NULL DEFAULT 0,
    rows_written_total bigint NOT NULL DEFAULT 0,
    due_rows           integer,
    oldest_due_lag_s   double precision,
    last_error         text,
    last_error_at      timestamptz,
    failures           integer NOT NULL DEFAULT 0
);
