-- Owner notifications and subscriptions (docs/architecture.md, "Execution lanes", "What rides
-- on it next"). A notification is written in the transaction of the state change it reports;
-- in the same transaction each matching subscription gets one delivery: an execution of the
-- subscription's internal workflow (trigger `hookyard.notification`, action `hookyard.deliver`),
-- which runs in a lane like any execution, so delivery is durable and exactly once.

-- Internal workflows back hookyard's own features (subscription deliveries); owners never see
-- them in workflow listings and notifications are never emitted about their executions.
ALTER TABLE workflows ADD COLUMN internal boolean NOT NULL DEFAULT false;

CREATE TABLE subscriptions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    owner_id      uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    -- The internal workflow whose executions are this subscription's deliveries.
    workflow_id   uuid NOT NULL UNIQUE REFERENCES workflows(id) ON DELETE CASCADE,
    target_url    text NOT NULL CHECK (length(target_url) <= 2048),
    event_types   text[] NOT NULL,
    -- NULL: every workflow / action type.
    workflow_ids  uuid[],
    action_types  text[],
    -- `active` is what matching reads. `status` says how deliveries fare: `healthy`, `failing`
    -- since `failing_since`, or `disabled` (by a 410 Gone, by failing too long, or by the owner),
    -- with `status_reason` telling the owner why.
    active        boolean NOT NULL DEFAULT true,
    status        text NOT NULL DEFAULT 'healthy' CHECK (status IN ('healthy', 'failing', 'disabled')),
    status_reason text,
    failing_since timestamptz,
    -- Failing this long disables it (HOOKYARD_SUBSCRIPTION_DISABLE_AFTER_S when it was saved).
    disable_after_s integer NOT NULL CHECK (disable_after_s > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX subscriptions_owner_idx ON subscriptions (owner_id, seq DESC) WHERE deleted_at IS NULL;
-- Matching at emit time: the owner's active subscriptions (usually none, a single probe).
CREATE INDEX subscriptions_matching_idx ON subscriptions (owner_id) WHERE active AND deleted_at IS NULL;

-- Several rows per subscription while a rotation's grace period runs (as endpoint_secrets);
-- every valid one signs each delivery.
CREATE TABLE subscription_secrets (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id uuid NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    ciphertext      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at      timestamptz
);
CREATE INDEX subscription_secrets_sub_idx ON subscription_secrets (subscription_id, created_at DESC);

-- What happened, once per state change that some subscription wanted; its id is the
-- `webhook-id` of every delivery of it.
CREATE TABLE notifications (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    owner_id    uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    event_type  text NOT NULL,
    version     integer NOT NULL,
    data        jsonb NOT NULL,
    workflow_id uuid,
    action_type text,
    subject_id  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_owner_idx ON notifications (owner_id, seq DESC);
