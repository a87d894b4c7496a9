-- A pause made by hookyard is its own state, separate from the owner's choice.
--
-- `active` stays what the routing index, the dispatcher and the sync hooks read: whether the
-- workflow runs. When hookyard pauses a workflow (its Google grant needs reconnecting) it sets
-- `paused_reason` and clears `active` together; the owner's own choice is then
-- `active OR paused_reason IS NOT NULL`, which the API shows as `active`. Resuming touches only
-- rows with a `paused_reason`, so a workflow the owner deactivated stays deactivated.
ALTER TABLE workflows ADD COLUMN paused_reason text;
ALTER TABLE workflows ADD CONSTRAINT workflows_paused_not_active CHECK (paused_reason IS NULL OR NOT active);

-- The state of a mailbox's Pub/Sub watch, for the owner to see: the last push received, and
-- why Gmail refused the watch (cleared by the next successful watch, not by a sync).
ALTER TABLE gmail_mailboxes ADD COLUMN last_push_at timestamptz;
ALTER TABLE gmail_mailboxes ADD COLUMN watch_error text;
