-- Execution lanes (docs/architecture.md, "Execution lanes"): a fixed number of lane workflows
-- per task queue run the executions of many user workflows. A workflow gets its lane once, at
-- creation, from a hash of its id, and keeps it: all its executions meet in one lane, where its
-- concurrency limit, retries and order are enforced. Existing workflows get the default count's
-- lane; inserts that name no lane (bulk loaders) get one the same way.
ALTER TABLE workflows ADD COLUMN lane integer;
UPDATE workflows SET lane = mod(abs(hashtext(id::text)::bigint), 16);
ALTER TABLE workflows ALTER COLUMN lane SET NOT NULL;
ALTER TABLE workflows ADD CONSTRAINT workflows_lane_range CHECK (lane >= 0 AND lane < 4096);

CREATE FUNCTION workflows_default_lane() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.lane := mod(abs(hashtext(NEW.id::text)::bigint), 16);
    RETURN NEW;
END $$;
CREATE TRIGGER workflows_default_lane BEFORE INSERT ON workflows
    FOR EACH ROW WHEN (NEW.lane IS NULL) EXECUTE FUNCTION workflows_default_lane();

-- Which lane the hand-over gave an execution to (NULL: the workflow's own automation, as
-- before lanes, or not handed over). The reconciler checks the Temporal workflow that holds it;
-- the hand-over's lane cap counts what each lane holds.
ALTER TABLE executions ADD COLUMN lane integer;
CREATE INDEX executions_lane_outstanding_idx ON executions (lane, signalled_at)
    WHERE signalled_at IS NOT NULL AND status IN ('queued', 'running') AND lane IS NOT NULL;
