-- Trigger lifecycle sync: some trigger types keep state outside PostgreSQL (a Temporal Schedule,
-- a Gmail watch) that must follow the workflow row. A change to what such state depends on bumps
-- `sync_version`; the dispatcher's sync loop converges the outside state and records the version
-- it reached in `synced_version`, or the reason it could not in `sync_error`.

-- Rows that exist already have nothing outside to converge: they start synced.
ALTER TABLE workflows
    ADD COLUMN sync_version          bigint NOT NULL DEFAULT 1,
    ADD COLUMN synced_version        bigint NOT NULL DEFAULT 1,
    ADD COLUMN sync_error            text,
    -- Failed attempts since the last success; the next one waits until sync_retry_at.
    ADD COLUMN sync_attempts         integer NOT NULL DEFAULT 0,
    ADD COLUMN sync_retry_at         timestamptz,
    -- A claim: one sync loop works on the row until then, without holding a row lock while it
    -- talks to Temporal (that would block dispatch and API updates of the workflow).
    ADD COLUMN sync_lease_until      timestamptz,
    -- The trigger type and config the outside state was last converged to, so a hook can undo
    -- what an earlier definition set up (another mailbox, or another trigger type altogether).
    ADD COLUMN synced_trigger_type   text,
    ADD COLUMN synced_trigger_config jsonb;
ALTER TABLE workflows ALTER COLUMN synced_version SET DEFAULT 0;

CREATE INDEX workflows_sync_pending_idx ON workflows (seq) WHERE sync_version > synced_version;

CREATE FUNCTION workflows_trigger_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Triggers whose events name the workflow itself (schedule ticks) route by its id.
    IF NEW.routing_key = '@workflow' THEN
        NEW.routing_key := NEW.id::text;
    END IF;
    -- The payload is empty so that a statement touching many rows sends one notification.
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('hookyard_trigger_sync', '');
        RETURN NEW;
    END IF;
    IF NEW.trigger_type IS DISTINCT FROM OLD.trigger_type
       OR NEW.trigger_config IS DISTINCT FROM OLD.trigger_config
       OR NEW.active IS DISTINCT FROM OLD.active
       OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
        NEW.sync_version := OLD.sync_version + 1;
        -- A new definition is worth trying at once, whatever the backoff of the old one.
        NEW.sync_attempts := 0;
        NEW.sync_retry_at := NULL;
        NEW.sync_error := NULL;
        PERFORM pg_notify('hookyard_trigger_sync', '');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workflows_trigger_sync BEFORE INSERT OR UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION workflows_trigger_sync();
