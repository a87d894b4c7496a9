-- Error workflows: a workflow may name another workflow of the same owner to run when one of its
-- executions fails for good. The store and the API keep the reference within one owner; a
-- workflow that is soft-deleted clears the references to it (`delete_workflow`), and one that is
-- removed for good does so through the foreign key.
ALTER TABLE workflows ADD COLUMN on_failure uuid REFERENCES workflows(id) ON DELETE SET NULL;
-- Deleting a workflow finds the workflows naming it without a scan.
CREATE INDEX workflows_on_failure_idx ON workflows (on_failure) WHERE on_failure IS NOT NULL;
