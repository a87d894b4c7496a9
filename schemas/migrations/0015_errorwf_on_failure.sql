-- Error workflows: a workflow may name another workflow of the same owner to run when one of its
-- executions fails for good. The API keeps the reference within one owner; a reference to a
-- soft-deleted workflow reads as none (`schemas/store/workflows.py`), and removing a workflow for
-- good clears the references to it through the foreign key.
ALTER TABLE workflows ADD COLUMN on_failure uuid REFERENCES workflows(id) ON DELETE SET NULL;
-- Removing a workflow (e.g. with its owner) finds the workflows naming it without a scan.
CREATE INDEX workflows_on_failure_idx ON workflows (on_failure) WHERE on_failure IS NOT NULL;
