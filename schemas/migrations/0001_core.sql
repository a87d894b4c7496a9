-- Core tables: owners and their API keys, webhook endpoints with encrypted secrets, workflows,
-- the event inbox and execution records.

CREATE TABLE owners (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are high-entropy random tokens, so a plain SHA-256 is a sufficient hash.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE endpoints (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    owner_id    uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    name        text NOT NULL,
    scheme      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX endpoints_owner_idx ON endpoints (owner_id, seq DESC) WHERE deleted_at IS NULL;

-- Several rows per endpoint while a rotation's grace period runs; ciphertext is AES-GCM
-- envelope-encrypted with the row bound in the associated data.
CREATE TABLE endpoint_secrets (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id uuid NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    ciphertext  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz
);
CREATE INDEX endpoint_secrets_endpoint_idx ON endpoint_secrets (endpoint_id, created_at DESC);

CREATE TABLE workflows (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq               bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    owner_id          uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    name              text NOT NULL,
    trigger_type      text NOT NULL,
    trigger_config    jsonb NOT NULL,
    routing_key       text NOT NULL,
    action_type       text NOT NULL,
    action_config     jsonb NOT NULL,
    credential_id     uuid,
    active            boolean NOT NULL DEFAULT true,
    concurrency_limit integer NOT NULL DEFAULT 10 CHECK (concurrency_limit BETWEEN 1 AND 1000),
    retry_policy      jsonb NOT NULL,
    -- Standard Webhooks secret for signing outgoing requests; encrypted like endpoint secrets.
    signing_secret    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
-- Trigger resolution: (type, routing key) -> active workflows, independent of how many exist.
CREATE INDEX workflows_routing_idx ON workflows (trigger_type, routing_key)
    WHERE active AND deleted_at IS NULL;
CREATE INDEX workflows_owner_idx ON workflows (owner_id, seq DESC) WHERE deleted_at IS NULL;

-- Processes cache resolution data; they compare this counter inside the claiming transaction,
-- so a change is seen by every replica before its next claim.
CREATE TABLE cache_versions (
    name     text PRIMARY KEY,
    version  bigint NOT NULL
);
INSERT INTO cache_versions (name, version) VALUES ('workflows', 1);

CREATE FUNCTION bump_workflows_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cache_versions SET version = version + 1 WHERE name = 'workflows';
    RETURN NULL;
END $$;
CREATE TRIGGER workflows_changed AFTER INSERT OR UPDATE OR DELETE ON workflows
    FOR EACH STATEMENT EXECUTE FUNCTION bump_workflows_version();

-- The inbox. A row exists only for an accepted (verified) request.
CREATE TABLE events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    owner_id         uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    source_type      text NOT NULL,
    source_id        text NOT NULL,
    dedup_key        text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    headers          jsonb NOT NULL DEFAULT '{}',
    body             bytea NOT NULL,
    verification     jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'received'
                     CHECK (status IN ('received', 'dispatched', 'unmatched')),
    duplicate_count  integer NOT NULL DEFAULT 0,
    last_duplicate_at timestamptz,
    resolution       jsonb,
    dispatched_at    timestamptz,
    UNIQUE (source_type, source_id, dedup_key)
);
CREATE INDEX events_pending_idx ON events (seq) WHERE status = 'received';
CREATE INDEX events_owner_idx ON events (owner_id, seq DESC);
CREATE INDEX events_source_idx ON events (source_type, source_id, seq DESC);

CREATE TABLE executions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq                  bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    owner_id             uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    workflow_id          uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    event_id             uuid REFERENCES events(id) ON DELETE SET NULL,
    replay_of            uuid REFERENCES executions(id) ON DELETE SET NULL,
    status               text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    trigger_data         jsonb NOT NULL,
    result               jsonb,
    error                text,
    attempts             integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    next_attempt_at      timestamptz,
    signalled_at         timestamptz,
    temporal_workflow_id text,
    temporal_run_id      text
);
-- Exactly once per (workflow, event); replays are separate rows that point at what they replay.
CREATE UNIQUE INDEX executions_once_idx ON executions (workflow_id, event_id)
    WHERE replay_of IS NULL AND event_id IS NOT NULL;
CREATE INDEX executions_workflow_idx ON executions (workflow_id, seq DESC);
CREATE INDEX executions_workflow_status_idx ON executions (workflow_id, status, seq DESC);
CREATE INDEX executions_event_idx ON executions (event_id);
-- Without it, deleting an execution scans the table to clear replay_of references.
CREATE INDEX executions_replay_of_idx ON executions (replay_of) WHERE replay_of IS NOT NULL;
CREATE INDEX executions_handover_idx ON executions (seq) WHERE signalled_at IS NULL AND status = 'queued';
