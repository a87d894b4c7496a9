-- Throttles of the owner notifications other than execution.* (docs/architecture.md, "Owner
-- notifications"): each records what was last reported, in the transaction that reports it.

-- A connect link sent with credential.needs_reconnect reconnects that account only; NULL: any.
ALTER TABLE connect_links ADD COLUMN account_email text;

-- newsletter.progress: at most one per newsletter per interval; NULL: none yet.
ALTER TABLE newsletters ADD COLUMN progress_notified_at timestamptz;

-- gmail.watch_renewed_failed: once per failure episode (set by the first failed renewal after a
-- success, cleared when a watch succeeds); gmail.watch_expiring: once per watch expiration.
ALTER TABLE gmail_mailboxes
    ADD COLUMN watch_failed_at timestamptz,
    ADD COLUMN watch_expiring_notified_for timestamptz;
