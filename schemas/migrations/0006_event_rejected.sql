-- An event the dispatcher could not resolve (any failure while planning or storing its
-- executions) is marked `rejected`, a terminal status, instead of staying `received` and
-- being retried forever in front of every other owner's events. `note` says why; it also
-- records unusual but successful resolutions, such as a body too deep to parse as JSON.
ALTER TABLE events DROP CONSTRAINT events_status_check;
ALTER TABLE events ADD CONSTRAINT events_status_check
    CHECK (status IN ('received', 'dispatched', 'unmatched', 'rejected'));
ALTER TABLE events ADD COLUMN note text;
