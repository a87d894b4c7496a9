-- Newsletters (`email.send-newsletter`): one e-mail to many recipients, sent in batches by its
-- own Temporal workflow (worker/newsletter.py). Each recipient's state is a row, so a worker
-- lost mid-send resumes without sending to anyone twice, and the API shows progress.

-- The owner asked to stop this execution; long-running actions read it between steps.
ALTER TABLE executions ADD COLUMN cancel_requested_at timestamptz;

-- What the newsletter was handed over with: the action config as it was when it started (a
-- later edit of the workflow does not change a send under way) and when to start sending.
CREATE TABLE newsletters (
    execution_id  uuid PRIMARY KEY REFERENCES executions(id) ON DELETE CASCADE,
    config        jsonb NOT NULL,
    credential_id uuid,
    send_at       timestamptz,
    total         integer NOT NULL,
    duplicates    integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set by the first batch; before it, cancelling needs no worker (nothing was sent yet).
    started_at    timestamptz
);

-- pending -> sending (only before a provider that cannot deduplicate a repeat) -> sent | failed;
-- unknown: a provider without idempotency keys may have accepted it, so it is never re-sent;
-- cancelled: the owner cancelled before it was sent.
CREATE TABLE newsletter_recipients (
    execution_id uuid NOT NULL REFERENCES newsletters(execution_id) ON DELETE CASCADE,
    idx          integer NOT NULL,
    address      text NOT NULL,
    vars         jsonb NOT NULL DEFAULT '{}',
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'unknown', 'cancelled')),
    provider     text,
    message_id   text,
    error        text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, idx)
);
-- The next batch: open recipients in list order. Shrinks as recipients finish.
CREATE INDEX newsletter_recipients_open_idx ON newsletter_recipients (execution_id, idx)
    WHERE state IN ('pending', 'sending');
