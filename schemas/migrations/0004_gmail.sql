-- Gmail mailboxes read by gmail.* triggers: one per connected Google credential, with the
-- history cursor the sync advances and the state of the mailbox's Pub/Sub watch.

CREATE TABLE gmail_mailboxes (
    credential_id       uuid PRIMARY KEY REFERENCES credentials(id) ON DELETE CASCADE,
    owner_id            uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    email               text NOT NULL,
    -- active: some workflow reads it (pushes are taken); stopped: none does (pushes are ignored).
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'stopped')),
    -- Sync cursor: every message added up to this history id is in the inbox.
    history_id          bigint,
    -- The highest history id a push announced (pushes arrive out of order and twice).
    notified_history_id bigint,
    -- Bumped per accepted push; the dispatcher signals the mailbox workflow while it is ahead
    -- of signalled_seq, so a push is never lost between the inbox and Temporal.
    notify_seq          bigint NOT NULL DEFAULT 0,
    signalled_seq       bigint NOT NULL DEFAULT 0,
    label_ids           text[] NOT NULL DEFAULT '{INBOX}',
    watch_expiration    timestamptz,
    watch_renewed_at    timestamptz,
    last_sync_at        timestamptz,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- Pub/Sub pushes name a mailbox by address only.
CREATE INDEX gmail_mailboxes_email_idx ON gmail_mailboxes (lower(email)) WHERE status = 'active';
CREATE INDEX gmail_mailboxes_owner_idx ON gmail_mailboxes (owner_id);
CREATE INDEX gmail_mailboxes_unsignalled_idx ON gmail_mailboxes (credential_id) WHERE notify_seq > signalled_seq;
